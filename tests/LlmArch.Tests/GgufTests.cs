using System.Text;
using LlmArch.Checkpoints;
using LlmArch.Compute;
using LlmArch.Generation;
using LlmArch.Models;
using LlmArch.Tokenization;

namespace LlmArch.Tests;

/// <summary>GGUF in and out: export -> load reproduces the Hugging Face fixtures; quantized files equal load-time quantization.</summary>
public class GgufTests
{
    internal static string TempDir()
    {
        string d = Path.Combine(Path.GetTempPath(), "llmarch-gguf-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(d);
        return d;
    }

    public static IEnumerable<object[]> Families() => new[] { "llama3", "mistral", "qwen3", "qwen3_moe", "gemma3" }.Select(f => new object[] { f });

    /// <summary>F32 export then GGUF load passes the fixture exactly as the safetensors model does (logits and greedy tokens).</summary>
    [Theory]
    [MemberData(nameof(Families))]
    public void F32RoundTripReproducesTheFixture(string family)
    {
        string gguf = Path.Combine(TempDir(), family + ".gguf");
        GgufExport.Export(TestPaths.Fixture(family), gguf, DType.F32);
        var r = FixtureVerifier.Verify(TestPaths.Fixture(family), _ => ModelLoader.Load(gguf));
        Assert.True(r.Pass, $"{family}: {r.Error} max_abs={r.MaxAbs} tokens={r.TokensMatched}/{r.TokensTotal}");
        var direct = FixtureVerifier.Verify(TestPaths.Fixture(family));
        Assert.Equal(direct.MaxAbs, r.MaxAbs, 9);
    }

    /// <summary>Small random models whose rows are whole 256-blocks, so Q4_K and Q6_K are really used.</summary>
    internal static readonly Dictionary<string, string> Wide = new()
    {
        ["llama"] = """
            { "model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 512, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
              "tie_word_embeddings": false, "rope_parameters": { "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
              "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64 } }
            """,
        ["qwen3"] = """
            { "model_type": "qwen3", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 512, "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
              "rope_theta": 1000000.0, "tie_word_embeddings": true }
            """,
        ["qwen3_moe"] = """
            { "model_type": "qwen3_moe", "hidden_size": 256, "intermediate_size": 512, "moe_intermediate_size": 256, "num_experts": 4,
              "num_experts_per_tok": 2, "norm_topk_prob": true, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "head_dim": 64, "vocab_size": 512, "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
              "tie_word_embeddings": false }
            """,
        ["gemma3"] = """
            { "model_type": "gemma3_text", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 3, "num_attention_heads": 4,
              "num_key_value_heads": 1, "head_dim": 64, "query_pre_attn_scalar": 64, "vocab_size": 512, "max_position_embeddings": 256,
              "rms_norm_eps": 1e-6, "sliding_window": 4, "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
              "rope_parameters": { "full_attention": { "rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0 },
                                   "sliding_attention": { "rope_type": "default", "rope_theta": 10000.0 } },
              "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": true }
            """,
    };

    internal static string WideModel(string family)
    {
        string d = Path.Combine(TempDir(), family);
        RandomCheckpoint.Write(ModelConfig.Parse(Wide[family], family), d, DType.F32, 7, std: 0.05);
        return d;
    }

    public static IEnumerable<object[]> QuantCases() =>
        new[] { "llama", "qwen3", "qwen3_moe", "gemma3" }.SelectMany(f => new[] { DType.Q8_0, DType.Q4_0, DType.Q4_K }.Select(q => new object[] { f, q }));

    /// <summary>
    /// A quantized export holds exactly the blocks that load-time quantization makes (same quantizer, same per-tensor
    /// choices, q/k rows permuted and back), so its logits equal those of the safetensors model quantized at load; and
    /// an F32 export reproduces the safetensors model exactly.
    /// </summary>
    [Theory]
    [MemberData(nameof(QuantCases))]
    public void QuantizedExportEqualsLoadTimeQuantization(string family, DType q)
    {
        string dir = WideModel(family);
        string gguf = Path.Combine(dir, $"{q}.gguf"), f32 = Path.Combine(dir, "f32.gguf");
        GgufExport.Export(dir, gguf, q);
        GgufExport.Export(dir, f32, DType.F32);
        var ids = Enumerable.Range(0, 12).Select(i => (i * 37 + 5) % 500).ToArray();
        var a = Logits(ModelLoader.Load(dir, null, new LoadOptions { Quantize = q }), ids);
        var b = Logits(ModelLoader.Load(gguf), ids);
        Assert.Equal(a.Length, b.Length);
        for (int i = 0; i < a.Length; i++) Assert.True(a[i] == b[i], $"{family} {q} logit {i}: {a[i]} vs {b[i]}");
        var e = Logits(ModelLoader.Load(dir), ids);
        var c = Logits(ModelLoader.Load(f32), ids);
        for (int i = 0; i < e.Length; i++) Assert.True(Math.Abs(e[i] - c[i]) <= 1e-5f * (1 + Math.Abs(e[i])), $"{family} f32 logit {i}: {e[i]} vs {c[i]}");
        // every weight tensor has the type llama.cpp's recipe gives it, and Q4_K files really hold Q4_K
        using var f = new GgufFile(gguf);
        foreach (var t in f.Tensors.Values.Where(t => t.Ne.Length >= 2))
        {
            bool head = t.Name == "output.weight" || (t.Name == "token_embd.weight" && !f.Tensors.ContainsKey("output.weight"));
            var want = LlmArch.Compute.Cpu.WeightQuantizer.TypeFor(q, DType.F32, 2, (int)t.Ne[0], head) ?? DType.F16;
            Assert.Equal(GgmlType.FromDType(want), t.Type);
        }
        Assert.Contains(f.Tensors.Values, t => t.Type == GgmlType.FromDType(q));
    }

    private static float[] Logits(CausalLM m, int[] ids)
    {
        var cache = m.CreateCache(1, ids.Length);
        var logits = m.Forward(ids, 1, cache);
        var r = new float[logits.Count];
        m.Backend.Download<float>(logits, r);
        return r;
    }

    [Fact]
    public void GgufToGgufExportKeepsTheModel()
    {
        string d = TempDir();
        string f32 = Path.Combine(d, "a.gguf"), again = Path.Combine(d, "b.gguf");
        GgufExport.Export(TestPaths.Fixture("llama3"), f32, DType.F32);
        GgufExport.Export(f32, again, DType.F32);
        var r = FixtureVerifier.Verify(TestPaths.Fixture("llama3"), _ => ModelLoader.Load(again));
        Assert.True(r.Pass, r.Error);
        using var a = new GgufFile(f32);
        using var b = new GgufFile(again);
        Assert.Equal(a.Tensors.Keys.Order(), b.Tensors.Keys.Order());
        Assert.Equal(File.ReadAllBytes(f32), File.ReadAllBytes(again)); // the same file, byte for byte
    }

    [Fact]
    public void Llama3RopeFactorsComeBackAsRopeParameters()
    {
        string gguf = Path.Combine(TempDir(), "l.gguf");
        GgufExport.Export(TestPaths.Fixture("llama3"), gguf, DType.F32);
        var (cfg, w) = GgufModel.Open(gguf);
        using (w)
        {
            var rp = cfg.RopeFor(null);
            Assert.Equal("llama3", rp.Kind);
            Assert.Equal(32.0, rp.Factor!.Value, 4);
            // The fixture's ramp (low 1, high 4, original 64) is found again up to the scale the divisors leave free.
            var want = ModelConfig.Load(Path.Combine(TestPaths.Fixture("llama3"), "config.json")).RopeFor(null);
            Assert.Equal(want.HighFreqFactor!.Value / want.LowFreqFactor!.Value, rp.HighFreqFactor!.Value / rp.LowFreqFactor!.Value, 3);
        }
    }

    // ---------------- tokenizers ----------------

    public static IEnumerable<object[]> TokenizerFixtures() => new[] { "qwen3", "llama3", "gptoss", "llama2", "gemma3" }.Select(t => new object[] { t });

    /// <summary>tokenizer.json -> GGUF metadata -> tokenizer: the same ids as Hugging Face tokenizers on the fixture texts.</summary>
    [Theory]
    [MemberData(nameof(TokenizerFixtures))]
    public void TokenizerSurvivesGguf(string name)
    {
        string src = Path.Combine(TestPaths.Root, "tests", "fixtures", "tokenizers", name);
        var original = Tokenizer.Load(src);
        string gguf = Path.Combine(TempDir(), name + ".gguf");
        var kv = new List<(string, object)> { ("general.architecture", "llama") };
        GgufTokenizerExport.Add(kv, src, ModelConfig.Parse("{}"), original.VocabSize, GgufArch.For("llama")!);
        WriteGguf(gguf, kv);
        var tok = GgufTokenizer.Load(gguf);
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(src, "expected.json")));
        int n = 0;
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            string text = c.GetProperty("text").GetString()!;
            var want = c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            Assert.Equal(want, tok.Encode(text, addSpecialTokens: false));
            var withSpecial = c.GetProperty("ids_with_special").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            Assert.Equal(withSpecial, tok.Encode(text, addSpecialTokens: true));
            Assert.Equal(original.Decode(want, skipSpecialTokens: false), tok.Decode(want, skipSpecialTokens: false));
            n++;
        }
        Assert.True(n > 3);
    }

    /// <summary>A GGUF with metadata only (no tensors).</summary>
    internal static void WriteGguf(string path, List<(string Key, object Value)> kv, Action<BinaryWriter>? tensors = null, ulong tensorCount = 0)
    {
        using var fs = File.Create(path);
        using var bw = new BinaryWriter(fs, Encoding.UTF8);
        bw.Write(GgufFile.Magic); bw.Write(3u); bw.Write(tensorCount); bw.Write((ulong)kv.Count);
        foreach (var (k, v) in kv) { GgufExport.WriteString(bw, k); GgufExport.WriteValue(bw, v); }
        tensors?.Invoke(bw);
    }

    [Fact]
    public void RunAndBenchAcceptAGgufFile()
    {
        string gguf = Path.Combine(TempDir(), "q.gguf");
        var (code, _, err) = CliTests.Run("export", "--model", WideModel("qwen3"), "--quant", "q4_k", "--out", gguf);
        Assert.True(code == 0, err);
        (code, var stdout, err) = CliTests.Run("run", "--model", gguf, "--prompt-ids", "1,2,3,4", "--max-new-tokens", "4", "--greedy");
        Assert.True(code == 0, err);
        Assert.Equal(4, stdout.Trim().Split(' ').Length);
        (code, stdout, err) = CliTests.Run("bench", "--model", gguf, "--prompt-tokens", "16", "--gen-tokens", "4", "--repeat", "1", "--threads", "2", "--json");
        Assert.True(code == 0, err);
        Assert.Contains("Q4_K", stdout);
    }

    [Fact]
    public void ChatTemplateMissingFromAGgufIsOneClearError()
    {
        // a fixture without tokenizer files exports a synthetic vocabulary and no chat template
        string gguf = Path.Combine(TempDir(), "nochat.gguf");
        var (code, _, err) = CliTests.Run("export", "--model", TestPaths.Fixture("qwen3"), "--quant", "f32", "--out", gguf);
        Assert.True(code == 0, err);
        foreach (var args in new[] { new[] { "run", "--model", gguf, "--prompt", "hi", "--chat", "--max-new-tokens", "1" }, new[] { "chat", "--model", gguf } })
        {
            (code, _, err) = CliTests.Run(args);
            Assert.Equal(2, code);
            Assert.Single(err.Trim().Split('\n'));
            Assert.Contains("tokenizer.chat_template", err);
        }
    }
}
