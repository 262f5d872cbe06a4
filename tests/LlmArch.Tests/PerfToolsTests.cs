using System.Text;
using System.Text.Json;
using LlmArch.Analysis;
using LlmArch.Checkpoints;
using LlmArch.Compute;
using LlmArch.Generation;
using LlmArch.Models;

namespace LlmArch.Tests;

/// <summary>init --random, bench, export gguf, presets, load-time Q8_0: on tiny configs (no 1 GB files in tests).</summary>
public class PerfToolsTests
{
    internal const string TinyQwen3 = """
        { "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "hidden_size": 64, "intermediate_size": 96,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 300,
          "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "rope_theta": 10000, "tie_word_embeddings": true,
          "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2 }
        """;

    private const string TinyLlama = """
        { "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1, "vocab_size": 320,
          "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "hidden_act": "silu",
          "rope_scaling": { "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                            "original_max_position_embeddings": 8192 }, "rope_theta": 500000.0 }
        """;

    private static string TempDir()
    {
        string d = Path.Combine(Path.GetTempPath(), "llmarch-perf-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(d);
        return d;
    }

    internal static string Tiny(string json, DType dtype = DType.BF16)
    {
        string d = TempDir();
        RandomCheckpoint.Write(ModelConfig.Parse(json, "tiny"), d, dtype, 42);
        return d;
    }

    [Fact]
    public void PresetsListAndLoad()
    {
        Assert.Contains("qwen3-0.6b", Presets.Names);
        Assert.Contains("llama-3.2-1b", Presets.Names);
        var cfg = Presets.Load("qwen3-0.6b");
        Assert.Equal("qwen3", cfg.ModelType);
        Assert.Equal(1024, cfg.HiddenSize);
        var e = Assert.Throws<LlmArchInputException>(() => Presets.Load("no-such-model"));
        Assert.Contains("qwen3-0.6b", e.Message);
    }

    [Theory]
    [InlineData("qwen3-0.6b", 596049920L)]
    [InlineData("llama-3.2-1b", 1235814400L)]
    public void PresetTensorListIsTheRealModel(string preset, long parameters)
    {
        // What init --random writes: every tensor the model asks for, at the preset's shapes.
        var m = ModelLoader.Describe(Presets.Load(preset));
        Assert.Equal(parameters, m.Weights.Records.GroupBy(r => r.Name).Sum(g => g.First().Count));
    }

    [Fact]
    public void RandomModelLoadsRunsAndIsDeterministic()
    {
        string a = Tiny(TinyQwen3), b = Tiny(TinyQwen3);
        Assert.Equal(File.ReadAllBytes(Path.Combine(a, "model.safetensors")), File.ReadAllBytes(Path.Combine(b, "model.safetensors")));
        var m = ModelLoader.Load(a);
        var (toks, _) = Generator.Generate(m, [[1, 2, 3, 4]], 5, SamplingOptions.Greedy);
        Assert.Equal(9, toks[0].Length);
        using var st = new SafeTensorsFile(Path.Combine(a, "model.safetensors"));
        var norm = st.Get("model.layers.0.input_layernorm.weight").ToFloatArray();
        Assert.All(norm, v => Assert.Equal(1f, v));
        var q = st.Get("model.layers.0.self_attn.q_proj.weight").ToFloatArray();
        double std = Math.Sqrt(q.Average(v => (double)v * v));
        Assert.InRange(std, 0.018, 0.022);
    }

    [Fact]
    public void InitCliRejectsBadInput()
    {
        Assert.Equal(2, CliTests.Run("init", "--preset", "nope", "--random", "--out", TempDir()).Code);
        var (code, _, err) = CliTests.Run("init", "--preset", "qwen3-0.6b", "--out", TempDir());
        Assert.Equal(2, code); Assert.Contains("--random", err);
        (code, _, err) = CliTests.Run("init", "--preset", "qwen3-0.6b", "--random", "--dtype", "int4", "--out", TempDir());
        Assert.Equal(2, code); Assert.Contains("--dtype", err);
        (code, _, err) = CliTests.Run("init", "--preset", "qwen3-0.6b", "--random");
        Assert.Equal(2, code); Assert.Contains("--out", err);
    }

    [Fact]
    public void BenchCliReportsJson()
    {
        string d = Tiny(TinyQwen3);
        var (code, output, err) = CliTests.Run("bench", "--model", d, "--prompt-tokens", "8", "--gen-tokens", "4", "--threads", "2", "--repeat", "1", "--json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        foreach (var key in new[] { "prefill_tokens_per_s", "decode_tokens_per_s", "decode_gb_per_s", "peak_rss_bytes", "alloc_bytes_per_token" })
            Assert.True(doc.RootElement.TryGetProperty(key, out _), key);
        Assert.True(doc.RootElement.GetProperty("decode_tokens_per_s").GetDouble() > 0);
        (code, output, err) = CliTests.Run("bench", "--model", d, "--prompt-tokens", "8", "--gen-tokens", "4", "--repeat", "1", "--quant", "q8_0");
        Assert.True(code == 0, err);
        Assert.Contains("Q8_0", output);
        Assert.Equal(2, CliTests.Run("bench", "--model", d, "--quant", "q4").Code);
        Assert.Equal(2, CliTests.Run("bench", "--model", d, "--prompt-tokens", "0").Code);
        Assert.Equal(2, CliTests.Run("bench", "--model", Path.Combine(d, "missing")).Code);
        (code, output, _) = CliTests.Run("bench", "--memory", "--memory-mb", "32", "--threads", "2");
        Assert.Equal(0, code); Assert.Contains("GB/s", output);
    }

    [Fact]
    public void Q8LoadStaysCloseToTheStoredModel()
    {
        string d = Tiny(TinyQwen3, DType.F32);
        var ids = new[] { 5, 9, 200, 17, 3 };
        float[] Logits(LoadOptions? o)
        {
            var m = ModelLoader.Load(d, null, o);
            var l = m.Forward(ids, 1, m.CreateCache(1, 8));
            var r = new float[l.Count]; m.Backend.Download(l, r);
            return r;
        }
        var f = Logits(null);
        Assert.Equal(f, Logits(new LoadOptions { Copy = true })); // copied out of the map: same bytes, same logits
        var q = Logits(new LoadOptions { Quantize = DType.Q8_0 });
        double max = f.Zip(q).Max(p => Math.Abs(p.First - p.Second));
        double scale = f.Max(Math.Abs);
        Assert.True(max < 0.05 * scale + 1e-4, $"max |diff| {max}, logit scale {scale}");
        Assert.Throws<LlmArchInputException>(() => ModelLoader.Load(d, null, new LoadOptions { Quantize = DType.MXFP4 }));
    }

    private static string Fixture(string name) => TestPaths.Fixture(name);

    /// <summary>Measured max |logit diff| of load-time Q8_0 against the F32 references: 0.07 (gpt2) to 0.19 (smollm3).</summary>
    [Theory]
    [InlineData("qwen3")]
    [InlineData("llama3")]
    [InlineData("gpt2")]
    [InlineData("mistral")]
    [InlineData("olmo2")]
    [InlineData("smollm3")]
    public void Q8FixturesStayWithinTheStatedTolerance(string name)
    {
        var r = FixtureVerifier.Verify(Fixture(name), d => ModelLoader.Load(d, null, new LoadOptions { Quantize = DType.Q8_0 }));
        Assert.True(r.MaxAbs <= 0.25, $"{name}: q8_0 max |logit diff| {r.MaxAbs}");
    }

    [Theory]
    [InlineData(TinyQwen3, "qwen3", "bf16")]
    [InlineData(TinyQwen3, "qwen3", "q8_0")]
    [InlineData(TinyLlama, "llama", "f32")]
    [InlineData(TinyLlama, "llama", "q8_0")]
    public void ExportWritesAValidGguf(string json, string arch, string quant)
    {
        string d = Tiny(json);
        string outPath = Path.Combine(d, "m.gguf");
        var (code, _, err) = CliTests.Run("export", "--model", d, "--format", "gguf", "--quant", quant, "--out", outPath);
        Assert.True(code == 0, err);
        var g = GgufReader.Read(outPath);
        Assert.Equal(arch, g.Kv["general.architecture"]);
        Assert.Equal(2u, g.Kv[$"{arch}.block_count"]);
        Assert.Equal("gpt2", g.Kv["tokenizer.ggml.model"]);
        var cfg = ModelConfig.Parse(json);
        Assert.Equal(cfg.VocabSize, ((string[])g.Kv["tokenizer.ggml.tokens"]).Length);
        Assert.Contains("blk.1.ffn_down.weight", g.Tensors.Keys);
        Assert.Equal(arch == "qwen3", g.Tensors.ContainsKey("blk.0.attn_q_norm.weight"));
        Assert.Equal(cfg.TieWordEmbeddings != true, g.Tensors.ContainsKey("output.weight"));
        Assert.Equal(arch == "llama", g.Tensors.ContainsKey("rope_freqs.weight"));
        var (dims, type, _) = g.Tensors["blk.0.ffn_up.weight"];
        Assert.Equal(new ulong[] { 64, (ulong)cfg.IntermediateSize![0] }, dims); // ggml order: columns first
        Assert.Equal(quant switch { "q8_0" => 8u, "bf16" => 30u, _ => 0u }, type);
        Assert.Equal(0u, g.Tensors["output_norm.weight"].Type);
        Assert.Equal(g.DataEnd, new FileInfo(outPath).Length);
    }

    [Fact]
    public void ExportPermutesLlamaQueryRowsAndQuantizesLikeLlamaCpp()
    {
        string d = Tiny(TinyLlama, DType.F32);
        string f32 = Path.Combine(d, "f.gguf"), q8 = Path.Combine(d, "q.gguf");
        Assert.Equal(0, CliTests.Run("export", "--model", d, "--quant", "f32", "--out", f32).Code);
        Assert.Equal(0, CliTests.Run("export", "--model", d, "--quant", "q8_0", "--out", q8).Code);
        using var st = new SafeTensorsFile(Path.Combine(d, "model.safetensors"));
        var q = st.Get("model.layers.0.self_attn.q_proj.weight").ToFloatArray(); // [64, 64]: 4 heads of 16 rows
        var g = GgufReader.Read(f32);
        var bytes = File.ReadAllBytes(f32);
        long off = g.DataStart + (long)g.Tensors["blk.0.attn_q.weight"].Offset;
        int D = 16, K = 64;
        for (int h = 0; h < 4; h++)
            for (int i = 0; i < D / 2; i++)
                for (int j = 0; j < 2; j++)
                {
                    int newRow = h * D + 2 * i + j, oldRow = h * D + j * (D / 2) + i;
                    Assert.Equal(q[oldRow * K + 7], BitConverter.ToSingle(bytes, (int)(off + ((long)newRow * K + 7) * 4)));
                }
        // Q8_0 blocks: f16 scale then 32 int8, scale = max|v| / 127.
        var gq = GgufReader.Read(q8);
        var qb = File.ReadAllBytes(q8);
        long vo = gq.DataStart + (long)gq.Tensors["blk.0.attn_v.weight"].Offset;
        var v = st.Get("model.layers.0.self_attn.v_proj.weight").ToFloatArray();
        float amax = v.Take(32).Max(Math.Abs);
        Assert.Equal((float)(Half)(amax / 127f), (float)BitConverter.ToHalf(qb, (int)vo));
        Assert.Equal(127, Math.Abs((sbyte)qb[vo + 2 + Array.IndexOf(v.Take(32).Select(Math.Abs).ToArray(), amax)]));
    }

    [Fact]
    public void ExportRejectsUnsupportedInput()
    {
        string d = Tiny(TinyQwen3);
        Assert.Equal(2, CliTests.Run("export", "--model", d, "--format", "onnx", "--out", Path.Combine(d, "x")).Code);
        Assert.Equal(2, CliTests.Run("export", "--model", d, "--quant", "q3_k", "--out", Path.Combine(d, "x")).Code);
        Assert.Equal(2, CliTests.Run("export", "--model", Path.Combine(d, "nope"), "--out", Path.Combine(d, "x")).Code);
        string g = Tiny("""{ "model_type": "gpt2", "n_embd": 64, "n_head": 4, "n_layer": 1, "vocab_size": 100, "n_positions": 32 }""");
        var (code, _, err) = CliTests.Run("export", "--model", g, "--out", Path.Combine(g, "x.gguf"));
        Assert.Equal(2, code); Assert.Contains("model_type", err);
    }

    [Fact]
    public void ExportReadsTokenizerJson()
    {
        string d = Tiny(TinyQwen3);
        var vocab = string.Join(",", Enumerable.Range(0, 290).Select(i => $"\"t{i}\": {i}"));
        File.WriteAllText(Path.Combine(d, "tokenizer.json"), $$"""
            { "model": { "type": "BPE", "vocab": { {{vocab}} }, "merges": ["t1 t2", ["t3", "t4"]] },
              "added_tokens": [ { "id": 295, "content": "<|im_end|>", "special": true } ] }
            """);
        string outPath = Path.Combine(d, "t.gguf");
        Assert.Equal(0, CliTests.Run("export", "--model", d, "--out", outPath).Code);
        var g = GgufReader.Read(outPath);
        var toks = (string[])g.Kv["tokenizer.ggml.tokens"];
        Assert.Equal("t7", toks[7]); Assert.Equal("<|im_end|>", toks[295]); Assert.Equal("[PAD291]", toks[291]);
        Assert.Equal(new[] { "t1 t2", "t3 t4" }, (string[])g.Kv["tokenizer.ggml.merges"]);
        Assert.Equal(3, ((int[])g.Kv["tokenizer.ggml.token_type"])[295]);
        Assert.Equal("default", g.Kv["tokenizer.ggml.pre"]); // named from the tokenizer.json's split regex; this one has none
    }

    /// <summary>Just enough of a GGUF v3 reader to check what export wrote.</summary>
    private sealed class GgufReader
    {
        public Dictionary<string, object> Kv { get; } = new();
        public Dictionary<string, (ulong[] Dims, uint Type, ulong Offset)> Tensors { get; } = new();
        public long DataStart { get; private set; }
        public long DataEnd { get; private set; }

        public static GgufReader Read(string path)
        {
            var g = new GgufReader();
            using var br = new BinaryReader(File.OpenRead(path));
            Assert.Equal(0x46554747u, br.ReadUInt32());
            Assert.Equal(3u, br.ReadUInt32());
            ulong nt = br.ReadUInt64(), nkv = br.ReadUInt64();
            for (ulong i = 0; i < nkv; i++) { string k = Str(br); g.Kv[k] = Val(br, br.ReadUInt32()); }
            long end = 0;
            var sizes = new List<(ulong Off, long Bytes)>();
            for (ulong i = 0; i < nt; i++)
            {
                string name = Str(br);
                var dims = new ulong[br.ReadUInt32()];
                for (int d = 0; d < dims.Length; d++) dims[d] = br.ReadUInt64();
                uint type = br.ReadUInt32(); ulong off = br.ReadUInt64();
                g.Tensors[name] = (dims, type, off);
                long count = (long)dims.Aggregate(1UL, (a, b) => a * b);
                sizes.Add((off, type switch { 0 => count * 4, 1 or 30 => count * 2, 8 => count / 32 * 34, _ => 0 }));
            }
            g.DataStart = (br.BaseStream.Position + 31) / 32 * 32;
            foreach (var (off, bytes) in sizes) end = Math.Max(end, (long)off + (bytes + 31) / 32 * 32);
            g.DataEnd = g.DataStart + end;
            return g;
        }

        private static string Str(BinaryReader br) => Encoding.UTF8.GetString(br.ReadBytes((int)br.ReadUInt64()));

        private static object Val(BinaryReader br, uint t) => t switch
        {
            4 => br.ReadUInt32(), 5 => br.ReadInt32(), 6 => br.ReadSingle(), 7 => br.ReadByte() != 0, 8 => Str(br),
            9 => Arr(br),
            _ => throw new InvalidDataException($"type {t}"),
        };

        private static object Arr(BinaryReader br)
        {
            uint et = br.ReadUInt32(); ulong n = br.ReadUInt64();
            if (et == 8) { var a = new string[n]; for (ulong i = 0; i < n; i++) a[i] = Str(br); return a; }
            if (et == 5) { var a = new int[n]; for (ulong i = 0; i < n; i++) a[i] = br.ReadInt32(); return a; }
            throw new InvalidDataException($"array of {et}");
        }
    }
}

/// <summary>
/// Zero managed allocation per decoded token. Runs alone: while other tests hold the shared thread pool, kernels run
/// inline on the calling thread and lazily size that thread's scratch buffers, which is allocation the property is
/// not about.
/// </summary>
[Collection(SerialTests.Name)]
public class DecodeAllocationTests
{
    [Fact]
    public void DecodeAllocatesNothingPerToken()
    {
        string d = PerfToolsTests.Tiny(PerfToolsTests.TinyQwen3);
        var m = ModelLoader.Load(d);
        var at = new long[40];
        int n = 0;
        Generator.Generate(m, [[1, 2, 3]], 40, SamplingOptions.Greedy, null, (_, _) => { });
        Generator.Generate(m, [[1, 2, 3]], 40, SamplingOptions.Greedy, null, (_, _) => at[n++] = GC.GetAllocatedBytesForCurrentThread());
        Assert.Equal(0, at[39] - at[10]);
        n = 0;
        Generator.Generate(m, [[1, 2, 3]], 40, new SamplingOptions { Temperature = 0.7, TopK = 20, TopP = 0.9, Seed = 3 }, null,
            (_, _) => at[n++] = GC.GetAllocatedBytesForCurrentThread());
        Assert.Equal(0, at[39] - at[10]);
    }

}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SerialTests
{
    public const string Name = "serial";
}
