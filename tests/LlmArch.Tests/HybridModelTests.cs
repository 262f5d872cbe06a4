using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;
using LlmArch.Generation;
using LlmArch.Models;
using Xunit.Abstractions;

namespace LlmArch.Tests;

/// <summary>Properties of Qwen3-Next that need no oracle: chunked prefill vs recurrence, split prefill, layer info.</summary>
public class Qwen3NextTests
{
    private static float[] Logits(CausalLM m, int[] ids, ModelCache cache)
    {
        var l = m.Forward(ids, 1, cache);
        var r = new float[ids.Length * m.VocabSize];
        m.Backend.Download(l, r);
        return r;
    }

    private static int[] Prompt(int n, int vocab, int seed)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => r.Next(vocab)).ToArray();
    }

    [Fact]
    public void ChunkedPrefillEqualsTokenByTokenRecurrence()
    {
        var m = ModelLoader.Load(HybridFixtures.Dir("qwen3_next"));
        var ids = Prompt(150, m.VocabSize, 1); // three 64-token chunks, the last one partial
        var full = Logits(m, ids, m.CreateCache(1, ids.Length));
        var cache = m.CreateCache(1, ids.Length);
        double max = 0;
        for (int t = 0; t < ids.Length; t++)
        {
            var step = Logits(m, [ids[t]], cache);
            for (int v = 0; v < m.VocabSize; v++) max = Math.Max(max, Math.Abs(step[v] - full[t * m.VocabSize + v]));
        }
        Assert.True(max < 1e-3, $"token-by-token decode differs from chunked prefill by {max}");
    }

    [Fact]
    public void SplitPrefillEqualsOnePrefill()
    {
        var m = ModelLoader.Load(HybridFixtures.Dir("qwen3_next"));
        var ids = Prompt(90, m.VocabSize, 2);
        var full = Logits(m, ids, m.CreateCache(1, ids.Length));
        var cache = m.CreateCache(1, ids.Length);
        var a = Logits(m, ids[..37], cache);
        var b = Logits(m, ids[37..], cache);
        var joined = a.Concat(b).ToArray();
        double max = 0;
        for (int i = 0; i < full.Length; i++) max = Math.Max(max, Math.Abs(full[i] - joined[i]));
        Assert.True(max < 1e-3, $"prefill in two parts differs by {max}");
    }

    [Fact]
    public void LayerInfoDescribesLinearAndAttentionLayers()
    {
        var m = ModelLoader.Load(HybridFixtures.Dir("qwen3_next"));
        var layers = m.Info.Layers;
        Assert.Equal(4, layers.Count);
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(MixerKind.Linear, layers[i].Mixer);
            Assert.Equal(0, layers[i].KvValuesPerToken);
            Assert.Equal(3L * (2 * 2 * 16 + 4 * 16) + 4L * 16 * 16, layers[i].StateValues); // conv (K-1)·ConvDim + Hv·Dk·Dv
        }
        Assert.Equal(MixerKind.Full, layers[3].Mixer);
        Assert.Equal(2L * 2 * 16, layers[3].KvValuesPerToken);
        Assert.All(layers, l => { Assert.Equal(FfnKind.Moe, l.Ffn); Assert.Equal(8, l.Experts); Assert.Equal(2, l.ActiveExperts); Assert.Equal(1, l.SharedExperts); Assert.Equal(32, l.FfnWidth); });
        var cache = m.CreateCache(1, 16);
        Assert.All(Enumerable.Range(0, 3), i => { Assert.Null(cache.Kv[i]); Assert.IsType<RecurrentState>(cache.State[i]); });
        Assert.NotNull(cache.Kv[3]);
        // The linear state is constant in sequence length.
        long small = m.CreateCache(1, 16).State.Sum(s => s?.Bytes ?? 0), big = m.CreateCache(1, 256).State.Sum(s => s?.Bytes ?? 0);
        Assert.Equal(small, big);
    }

    [Fact]
    public void ShapeOnlyDescribeCountsTheSameParameters()
    {
        var m = ModelLoader.Load(HybridFixtures.Dir("qwen3_next"));
        var d = ModelLoader.Describe(m.Config);
        Assert.Equal(m.Weights.TotalParameters, d.Weights.TotalParameters);
        using var f = new SafeTensorsFile(Path.Combine(HybridFixtures.Dir("qwen3_next"), "model.safetensors"));
        Assert.Equal(f.Tensors.Values.Sum(t => t.Shape.Aggregate(1L, (a, b) => a * b)), m.Weights.TotalParameters);
    }
}

/// <summary>Gemma 3n: KV sharing, per-layer widths, decode vs recompute past the window, PLE residency.</summary>
public class Gemma3nTests(ITestOutputHelper output)
{
    [Fact]
    public void KvSharingConsumersOwnNoBuffer()
    {
        var m = (Gemma3n)ModelLoader.Load(HybridFixtures.Dir("gemma3n"));
        var info = m.Info.Layers;
        Assert.Null(info[0].SharesKvOf); Assert.Null(info[1].SharesKvOf);
        Assert.Equal(0, info[2].SharesKvOf); Assert.Equal(1, info[3].SharesKvOf);
        Assert.Equal(0, info[2].KvValuesPerToken); Assert.Equal(0, info[3].KvValuesPerToken);
        Assert.Equal([128, 96, 128, 96], info.Select(l => l.FfnWidth));
        Assert.Equal([MixerKind.Sliding, MixerKind.Full, MixerKind.Sliding, MixerKind.Full], info.Select(l => l.Mixer));
        var cache = m.CreateCache(1, 64);
        Assert.Same(cache.Kv[0], cache.Kv[2]);
        Assert.Same(cache.Kv[1], cache.Kv[3]);
        Assert.False(cache.Kv[0]!.Ring); // a shared sliding source keeps full length for its consumers
        Assert.Equal(cache.Kv[0]!.Bytes + cache.Kv[1]!.Bytes, cache.Bytes);
    }

    [Fact]
    public void CachedDecodeEqualsFullRecomputePastTheWindow()
    {
        var m = ModelLoader.Load(HybridFixtures.Dir("gemma3n"));
        var r = new Random(9);
        var ids = Enumerable.Range(0, 40).Select(_ => r.Next(m.VocabSize)).ToArray();
        int V = m.VocabSize;
        var full = new float[ids.Length * V];
        m.Backend.Download(m.Forward(ids, 1, m.CreateCache(1, ids.Length)), full);
        var cache = m.CreateCache(1, ids.Length);
        var chunk = new float[16 * V];
        double max = 0;
        int t0 = 0;
        foreach (int n in new[] { 7, 1, 1, 16, 1, 14 }) // mixed prefill chunks and single steps
        {
            m.Backend.Download(m.Forward(ids.AsSpan(t0, n), 1, cache), chunk.AsSpan(0, n * V));
            for (int i = 0; i < n * V; i++) max = Math.Max(max, Math.Abs(chunk[i] - full[t0 * V + i]));
            t0 += n;
        }
        Assert.True(max < 1e-4, $"cached decode differs from recompute by {max}");
    }

    [Fact]
    public void TextConfigWrapperLoads()
    {
        string dir = HybridFixtures.Copy("gemma3n", cfg =>
        {
            var text = cfg.DeepClone().AsObject();
            foreach (var k in cfg.Select(kv => kv.Key).ToList()) cfg.Remove(k);
            cfg["model_type"] = "gemma3n";
            cfg["architectures"] = new System.Text.Json.Nodes.JsonArray("Gemma3nForConditionalGeneration");
            cfg["text_config"] = text;
        });
        Assert.True(FixtureVerifier.Verify(dir).Pass);
    }

    /// <summary>Resident KiB of this process's mappings of <paramref name="file"/> (other tests' files do not count).</summary>
    private static long MappedRssKb(string file)
    {
        long kb = 0;
        bool inside = false;
        foreach (var line in File.ReadLines("/proc/self/smaps"))
        {
            if (line.Length > 0 && char.IsAsciiHexDigit(line[0]) && line.Contains('-') && line.IndexOf(' ') > 0)
                inside = line.EndsWith(file, StringComparison.Ordinal);
            else if (inside && line.StartsWith("Rss:", StringComparison.Ordinal))
                kb += long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
        }
        return kb;
    }

    [Fact]
    public unsafe void PerLayerEmbeddingTableStaysMappedAndIsReadByRow()
    {
        if (!File.Exists("/proc/self/smaps")) return;
        // The fixture with a 32768 x (4 layers x 256) BF16 per-layer table (64 MiB).
        const int Vpl = 32768, P = 256, L = 4, C = 64;
        var rng = new Random(4);
        Tensor Bf16(int rows, int cols, float scale)
        {
            var t = Tensor.Zeros(DType.BF16, new Shape(rows, cols));
            var s = t.AsSpan<ushort>();
            for (int i = 0; i < s.Length; i++) s[i] = (ushort)(BitConverter.SingleToInt32Bits((float)(rng.NextDouble() * 2 - 1) * scale) >> 16);
            return t;
        }
        var extra = new Dictionary<string, Tensor>
        {
            ["model.embed_tokens_per_layer.weight"] = Bf16(Vpl, L * P, 0.5f),
            ["model.per_layer_model_projection.weight"] = HybridFixtures.Random(rng, 0.1f, L * P, C),
            ["model.per_layer_projection_norm.weight"] = HybridFixtures.Random(rng, 1f, P),
        };
        for (int i = 0; i < L; i++)
        {
            extra[$"model.layers.{i}.per_layer_input_gate.weight"] = HybridFixtures.Random(rng, 0.1f, P, C);
            extra[$"model.layers.{i}.per_layer_projection.weight"] = HybridFixtures.Random(rng, 0.1f, C, P);
        }
        string dir = HybridFixtures.Copy("gemma3n", cfg => { cfg["hidden_size_per_layer_input"] = P; cfg["vocab_size_per_layer_input"] = Vpl; }, extra, keepExpected: false);
        extra.Clear();
        GC.Collect();

        string weights = Path.Combine(dir, "model.safetensors");
        long before = MappedRssKb(weights);
        var m = ModelLoader.Load(dir);
        var ids = Enumerable.Range(0, 24).Select(i => (i * 37) % m.VocabSize).ToArray();
        var (outs, _) = Generator.Generate(m, [ids], 8, SamplingOptions.Greedy);
        long afterForward = MappedRssKb(weights);
        Assert.Equal(32, outs[0].Length);

        // Touch the whole table, as a load-time conversion would (that would also allocate it again as F32).
        var table = ((CheckpointWeights)m.Weights).Raw("model.embed_tokens_per_layer.weight");
        long sum = 0;
        byte* p = (byte*)table.Ptr;
        for (long i = 0; i < table.ByteCount; i += 4096) sum += p[i];
        long afterTouch = MappedRssKb(weights);
        long tableKb = table.ByteCount / 1024;
        output.WriteLine($"PLE table {tableKb / 1024} MiB BF16 (F32 copy would be {tableKb / 512} MiB): file-backed RSS +{(afterForward - before) / 1024.0:F1} MiB after load + prefill + 8 decode steps (read by row), +{(afterTouch - before) / 1024.0:F1} MiB with the whole table resident ({sum % 2})");
        try { Directory.Delete(dir, recursive: true); } catch (IOException) { } // the 64 MiB copy; the mapping stays valid on Linux
        Assert.True(afterForward - before < tableKb / 4, $"forward made {afterForward - before} KiB of the {tableKb} KiB table resident");
        Assert.True(afterTouch - before > tableKb * 3 / 4, $"touching the table only added {afterTouch - before} KiB");
    }
}

/// <summary>Self-speculative decoding with an MTP head: identical to plain greedy, acceptance reported.</summary>
public class SpeculativeDecodingTests(ITestOutputHelper output)
{
    /// <summary>A temp copy of the qwen3_next fixture with randomly drawn mtp.* weights.</summary>
    public static string WithMtp(int seed, Func<string, int[], int[]>? reshape = null)
    {
        var r = new Random(seed);
        var t = new Dictionary<string, Tensor>();
        void Add(string name, float scale, params int[] shape) => t[name] = HybridFixtures.Random(r, scale, (reshape?.Invoke(name, shape)) ?? shape);
        Add("mtp.fc.weight", 0.1f, 64, 128);
        foreach (var n in new[] { "mtp.pre_fc_norm_embedding", "mtp.pre_fc_norm_hidden", "mtp.norm", "mtp.layers.0.input_layernorm", "mtp.layers.0.post_attention_layernorm" })
            Add($"{n}.weight", 0.2f, 64);
        string a = "mtp.layers.0.self_attn";
        Add($"{a}.q_proj.weight", 0.15f, 128, 64); Add($"{a}.k_proj.weight", 0.15f, 32, 64); Add($"{a}.v_proj.weight", 0.15f, 32, 64);
        Add($"{a}.o_proj.weight", 0.15f, 64, 64); Add($"{a}.q_norm.weight", 0.2f, 16); Add($"{a}.k_norm.weight", 0.2f, 16);
        string mlp = "mtp.layers.0.mlp";
        Add($"{mlp}.gate.weight", 0.2f, 8, 64);
        for (int e = 0; e < 8; e++) { Add($"{mlp}.experts.{e}.gate_proj.weight", 0.15f, 32, 64); Add($"{mlp}.experts.{e}.up_proj.weight", 0.15f, 32, 64); Add($"{mlp}.experts.{e}.down_proj.weight", 0.15f, 64, 32); }
        Add($"{mlp}.shared_expert.gate_proj.weight", 0.15f, 32, 64); Add($"{mlp}.shared_expert.up_proj.weight", 0.15f, 32, 64);
        Add($"{mlp}.shared_expert.down_proj.weight", 0.15f, 64, 32); Add($"{mlp}.shared_expert_gate.weight", 0.2f, 1, 64);
        return HybridFixtures.Copy("qwen3_next", extra: t);
    }

    private static int[] Greedy(CausalLM m, int[] prompt, int n) => OracleDraft.Greedy(m, prompt, n);

    [Theory]
    [InlineData(11, 1)]
    [InlineData(12, 2)]
    [InlineData(13, 3)]
    public void MtpSpeculativeEqualsGreedy(int seed, int draftTokens)
    {
        var m = ModelLoader.Load(WithMtp(seed));
        Assert.True(((IMtpDraft)m).HasDraftHead);
        var r = new Random(seed);
        var prompt = Enumerable.Range(0, 10).Select(_ => r.Next(m.VocabSize)).ToArray();
        var want = Greedy(m, prompt, 40);
        var (got, rate, stats) = SpeculativeDecoder.Generate(m, prompt, 40, draftTokens: draftTokens);
        output.WriteLine($"draft {draftTokens}: acceptance {rate:P1} ({stats.AcceptedTokens}/{stats.DraftedTokens}), {stats.VerifySteps} verify steps, {stats.Rollbacks} rollbacks");
        Assert.Equal(want, got);
        Assert.InRange(rate, 0, 1);
        Assert.Equal(40, stats.GeneratedTokens);
    }

    /// <summary>A draft that proposes the known greedy continuation, wrong at chosen positions: exercises acceptance,
    /// partial acceptance and rollback of the DeltaNet state.</summary>
    [Theory]
    [InlineData(1, 3)]
    [InlineData(3, 5)]
    [InlineData(4, 1000)]
    public void OracleDraftsAreAcceptedAndWrongOnesRolledBack(int draftTokens, int wrongEvery)
    {
        var m = (Qwen3Next)ModelLoader.Load(HybridFixtures.Dir("qwen3_next"));
        var prompt = Enumerable.Range(0, 12).Select(i => (i * 41 + 7) % m.VocabSize).ToArray();
        OracleDraft.CheckAcceptanceAndRollback(m, prompt, draftTokens, wrongEvery, output);
    }

    [Fact]
    public void StopsAtEos()
    {
        var m = ModelLoader.Load(WithMtp(21));
        var prompt = new[] { 5, 9, 33, 2 };
        var want = Greedy(m, prompt, 20);
        int eos = want[prompt.Length + 3];
        var (got, _, _) = SpeculativeDecoder.Generate(m, prompt, 20, eos: [eos]);
        int stop = Array.IndexOf(want, eos, prompt.Length);
        Assert.Equal(want[..(stop + 1)], got);
    }

    [Fact]
    public void ModelWithoutMtpIsAClearError()
    {
        var m = ModelLoader.Load(HybridFixtures.Dir("qwen3_next"));
        Assert.False(((IMtpDraft)m).HasDraftHead);
        var e = Assert.Throws<LlmArchInputException>(() => SpeculativeDecoder.Generate(m, [1, 2, 3], 4));
        Assert.Contains("mtp", e.Message);
    }
}
