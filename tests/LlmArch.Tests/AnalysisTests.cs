using System.Text.Json;
using LlmArch.Analysis;
using LlmArch.Checkpoints;
using LlmArch.Cli.Commands;
using Xunit.Abstractions;

namespace LlmArch.Tests;

/// <summary>
/// The atlas against published numbers. Our "active" rule counts every non-expert tensor (embeddings and LM head
/// included) plus routed experts × top-k / experts. Where a vendor's published figure follows another convention
/// the test compares the figure computed under that convention and says so:
/// <list type="bullet">
/// <item><see cref="Rule.NoEmbedding"/>: input embedding left out, LM head kept (OpenAI, stated in the gpt-oss card).</item>
/// <item><see cref="Rule.NonEmbedding"/>: embeddings and LM head left out (Qwen3-Next, MiniMax-M2: stated; GLM: inferred).</item>
/// </list>
/// Totals count the text stack the model constructor requests: MTP modules and vision/audio towers are not in it.
/// </summary>
public class AnalysisTests(ITestOutputHelper output)
{
    public enum Rule { All, NoEmbedding, NonEmbedding }

    private ModelAnalysis Preset(string name)
    {
        var a = ModelAnalysis.ForPreset(name);
        output.WriteLine($"{name}: total {a.TotalParams:N0}, active {a.ActiveParams:N0} (no embedding {a.ActiveParamsNoEmbedding:N0}, non-embedding {a.ActiveParamsNonEmbedding:N0})");
        return a;
    }

    private static long Active(ModelAnalysis a, Rule rule) => rule switch
    {
        Rule.NoEmbedding => a.ActiveParamsNoEmbedding,
        Rule.NonEmbedding => a.ActiveParamsNonEmbedding,
        _ => a.ActiveParams,
    };

    private static void Near(double published, long computed, string what, double tolerance = 0.02)
    {
        double rel = Math.Abs(computed - published) / published;
        Assert.True(rel <= tolerance, $"{what}: computed {computed:N0} is {rel:P2} from the published {published:N0} (tolerance {tolerance:P0})");
    }

    private void Check(string preset, double total, double active, Rule rule = Rule.All)
    {
        var a = Preset(preset);
        Near(total, a.TotalParams, $"{preset} total");
        Near(active, Active(a, rule), $"{preset} active ({rule})");
    }

    // ---- MoE flagships (families merged from other branches) ----

    /// <summary>671B main model (the 14B MTP module of the 685B checkpoint is not requested); 37B active, our rule.</summary>
    [SkippableFact] public void DeepSeekV3() => Check("deepseek-v3", 671e9, 37e9);

    /// <summary>Moonshot's 32B matches the count without the input embedding (inferred; with it ~32.9B, +2.8%).</summary>
    [SkippableFact] public void KimiK2() => Check("kimi-k2", 1.04e12, 32e9, Rule.NoEmbedding);

    [SkippableFact] public void Qwen3_235B_A22B() => Check("qwen3-235b-a22b", 235e9, 22e9);

    [SkippableFact] public void Qwen3_30B_A3B() => Check("qwen3-30b-a3b", 30.5e9, 3.3e9);

    /// <summary>Meta's 400B includes the vision encoder; the text stack alone is within 2% of it.</summary>
    [SkippableFact] public void Llama4Maverick() => Check("llama-4-maverick", 400e9, 17e9);

    /// <summary>OpenAI: "active" includes the unembedding but not the embedding (gpt-oss model card).</summary>
    [SkippableFact] public void GptOss120b() => Check("gpt-oss-120b", 116.83e9, 5.13e9, Rule.NoEmbedding);

    [SkippableFact] public void GptOss20b() => Check("gpt-oss-20b", 20.91e9, 3.61e9, Rule.NoEmbedding);

    /// <summary>355B: our text stack leaves out the MTP layer. Zhipu's 32B active matches the count without embeddings and head (inferred).</summary>
    [SkippableFact] public void Glm45() => Check("glm-4.5", 355e9, 32e9, Rule.NonEmbedding);

    [SkippableFact] public void Glm45Air() => Check("glm-4.5-air", 106e9, 12e9, Rule.NonEmbedding);

    /// <summary>
    /// Total within 2% of 80B. The published "3B activated" (embeddings excluded) has one significant digit, so it
    /// is checked against its rounding interval [2.5B, 3.5B): our non-embedding count is ~3.26B, which no counting
    /// convention brings within 2% of 3.0B.
    /// </summary>
    [SkippableFact]
    public void Qwen3Next()
    {
        var a = Preset("qwen3-next-80b-a3b");
        Near(80e9, a.TotalParams, "qwen3-next total");
        Assert.InRange(a.ActiveParamsNonEmbedding, 2_500_000_000L, 3_499_999_999L);
    }

    /// <summary>230B total; "10B active" excludes embeddings (MiniMax) and has one significant digit: checked against [9.5B, 10.5B) (~9.80B).</summary>
    [SkippableFact]
    public void MiniMaxM2()
    {
        var a = Preset("minimax-m2");
        Near(230e9, a.TotalParams, "minimax-m2 total");
        Assert.InRange(a.ActiveParamsNonEmbedding, 9_500_000_000L, 10_499_999_999L);
    }

    /// <summary>MLA caches the 512-value latent plus the 64-value shared rope key per layer: (512 + 64) x 61.</summary>
    [SkippableFact]
    public void DeepSeekV3MlaCache()
    {
        var a = Preset("deepseek-v3");
        Assert.Equal(35_136, a.KvValuesPerToken);
        Assert.Equal(35_136L * 2 * 32768, a.KvCacheBytes(32768));
        Assert.StartsWith("MLA", a.AttentionKind);
        Assert.Equal("61M", a.AttentionPattern);
        Assert.Equal("3D 58E", a.FfnPattern);
        Assert.Equal((256, 8, 1), (a.Experts, a.ActiveExperts, a.SharedExperts));
    }

    /// <summary>Gemma 3 27B: 52 sliding (1024) + 10 global layers, 16 KV heads x 128: the cache stops growing on sliding layers.</summary>
    [SkippableFact]
    public void Gemma3SlidingWindowCache()
    {
        var a = Preset("gemma-3-27b");
        Assert.Equal("10(SSSSSG) 2S", a.AttentionPattern);
        Assert.Equal(2L * 4096 * (10 * 32768 + 52 * 1024), a.KvCacheBytes(32768));
        Assert.Equal(2L * 4096 * 62 * 32768, a.KvCacheBytes(32768, windows: false));
        Near(27.0e9, a.TotalParams, "gemma-3-27b text stack (27.4B published incl. ~0.42B SigLIP)", 0.03);
    }

    /// <summary>gpt-oss-120b: 18 sliding (128) + 18 full layers, 8 KV heads x 64.</summary>
    [SkippableFact]
    public void GptOssAlternatingWindows()
    {
        var a = Preset("gpt-oss-120b");
        Assert.Equal("18(SG)", a.AttentionPattern);
        Assert.Equal(2L * 1024 * (18 * 32768 + 18 * 128), a.KvCacheBytes(32768));
    }

    /// <summary>Llama 4 Maverick: chunked (8192) RoPE layers, every 4th layer global NoPE; dense and MoE layers alternate.</summary>
    [SkippableFact]
    public void Llama4ChunkedCache()
    {
        var a = Preset("llama-4-maverick");
        Assert.Equal("12(CCCg)", a.AttentionPattern);
        Assert.Equal("24(DE)", a.FfnPattern);
        Assert.Equal(2L * 2048 * (12 * 32768 + 36 * 8192), a.KvCacheBytes(32768));
    }

    /// <summary>Qwen3-Next: 36 Gated DeltaNet layers (constant state) + 12 gated full-attention layers (2 KV heads x 256).</summary>
    [SkippableFact]
    public void Qwen3NextLinearState()
    {
        var a = Preset("qwen3-next-80b-a3b");
        Assert.Equal("12(LLLG)", a.AttentionPattern);
        Assert.Equal(12L * 2 * 256 * 2, a.KvValuesPerToken);
        Assert.True(a.StateValues > 0);
        Assert.Equal(a.KvValuesPerToken * 2 * (131072 - 8192), a.KvCacheBytes(131072) - a.KvCacheBytes(8192));
    }

    /// <summary>Gemma 3n E2B: the last 10 layers reuse earlier layers' KV and store none.</summary>
    [SkippableFact]
    public void Gemma3nKvSharing()
    {
        var a = Preset("gemma-3n-e2b");
        Assert.Equal(10, a.KvSharedLayers);
        Assert.Equal(a.Layers.Where(l => l.SharesKvOf is null).Sum(l => l.KvValuesPerToken), a.KvValuesPerToken);
        // Consumers store nothing: without sharing every layer would hold its own K and V.
        Assert.True(a.KvValuesPerToken < a.Layers.Sum(l => (long)l.KvHeads * (l.HeadDim + l.ValueDim)));
    }

    // ---- dense models (registered on this branch) ----

    [SkippableFact]
    public void Qwen3_0_6B()
    {
        var a = Preset("qwen3-0.6b");
        Near(0.6e9, a.TotalParams, "qwen3-0.6b total");
        Near(0.44e9, a.NonEmbeddingParams, "qwen3-0.6b non-embedding (Qwen's convention: tied table left out)");
        Assert.True(a.TiedEmbeddings);
        Assert.Equal(a.TotalParams, a.ActiveParams);
    }

    /// <summary>The safetensors totals of the dense checkpoints are reproduced exactly (norms included, tied head once).</summary>
    [SkippableFact]
    public void DenseExactCounts()
    {
        Assert.Equal(1_235_814_400, Preset("llama-3.2-1b").TotalParams);
        Assert.Equal(3_212_749_824, Preset("llama-3.2-3b").TotalParams);
        Assert.Equal(8_030_261_248, Preset("llama-3.1-8b").TotalParams);
        Assert.Equal(124_439_808, Preset("gpt2").TotalParams);
        Assert.Equal(1_557_611_200, Preset("gpt2-xl").TotalParams);
    }

    [SkippableFact] public void Llama32_1B() => Check("llama-3.2-1b", 1.24e9, 1.24e9);

    [SkippableFact] public void SmolLM3() => Check("smollm3-3b", 3.08e9, 3.08e9);

    /// <summary>Text stack only; Mistral's 24B includes the ~0.4B Pixtral encoder, which still leaves it within 2%.</summary>
    [SkippableFact]
    public void MistralSmall31TextStack()
    {
        var a = Preset("mistral-small-3.1-24b");
        Near(24e9, a.TotalParams, "mistral-small-3.1 text stack");
        Assert.Equal("mistral3", a.OuterModelType);
    }

    [SkippableFact]
    public void Qwen3AndOlmoDense()
    {
        Near(8.2e9, Preset("qwen3-8b").TotalParams, "qwen3-8b");
        Near(6.95e9, Preset("qwen3-8b").NonEmbeddingParams, "qwen3-8b non-embedding");
        Near(32.8e9, Preset("qwen3-32b").TotalParams, "qwen3-32b");
        Near(7.30e9, Preset("olmo-2-7b").TotalParams, "olmo-2-7b");
        Near(32.2e9, Preset("olmo-2-32b").TotalParams, "olmo-2-32b");
    }

    /// <summary>KV cache and FLOPs of Llama 3.2 1B by hand: 16 layers x 8 KV heads x (64 + 64); matmul params = total - norms.</summary>
    [SkippableFact]
    public void LlamaKvAndFlopsByHand()
    {
        var a = Preset("llama-3.2-1b");
        Assert.Equal(16L * 8 * 128, a.KvValuesPerToken);
        Assert.Equal(16L * 8 * 128 * 2 * 8192, a.KvCacheBytes(8192));
        Assert.Equal(16L * 8 * 128 * 1 * 8192, a.KvCacheBytes(8192, KvCacheDType.FP8));
        Assert.Equal(16L * 8 * 128 * 4 * 8192, a.KvCacheBytes(8192, KvCacheDType.F32));
        Assert.Equal(32768.0, a.KvCacheBytesPerToken(1000));
        long norms = 16 * 2 * 2048 + 2048;
        Assert.Equal(1_235_814_400 - norms, a.ActiveMatmulParams); // embedding excluded as a lookup, counted again as the tied head
        Assert.Equal(2.0 * (1_235_814_400 - norms) + 16.0 * 2 * 32 * (64 + 64) * 1024, a.FlopsPerToken(1024));
        Assert.Equal("GQA", a.AttentionKind);
        Assert.Equal((32, 8, 64), (a.Heads, a.KvHeads, a.HeadDim));
    }

    [SkippableFact]
    public void SmolLM3NoPePattern()
    {
        var a = Preset("smollm3-3b");
        Assert.Equal("9(GGGg)", a.AttentionPattern);
        Assert.Equal("GGGg", a.AttentionLayers[..4]);
    }

    [Fact]
    public void ParameterGroupsPartitionTheTotal()
    {
        var a = ModelAnalysis.ForPreset("qwen3-0.6b");
        Assert.Equal(a.TotalParams, a.Groups.Sum(g => g.Params));
        Assert.Equal(["embeddings", "attention", "mlp", "norms"], a.Groups.Select(g => g.Name).ToArray());
        Assert.Equal(151936L * 1024, a.Groups.Single(g => g.Name == "embeddings").Params);
    }

    [Fact]
    public void PatternCompression()
    {
        Assert.Equal("10(SSSSSG) 2S", Patterns.Compress(string.Concat(Enumerable.Repeat("SSSSSG", 10)) + "SS"));
        Assert.Equal("3D 58E", Patterns.Compress("DDD" + new string('E', 58)));
        Assert.Equal("18(SG)", Patterns.Compress(string.Concat(Enumerable.Repeat("SG", 18))));
        Assert.Equal("12(LLLG)", Patterns.Compress(string.Concat(Enumerable.Repeat("LLLG", 12))));
        Assert.Equal("G", Patterns.Compress("G"));
        Assert.Equal("GS", Patterns.Compress("GS"));
        Assert.Equal("", Patterns.Compress(""));
    }

    [Fact]
    public void PresetsLoadAndUnknownNameListsThem()
    {
        Assert.Contains("deepseek-v3", Presets.Names);
        Assert.Equal(48, Presets.Names.Count);
        foreach (var n in Presets.Names)
        {
            var cfg = Presets.Load(n);
            Assert.False(string.IsNullOrEmpty(cfg.ModelType), n);
            Assert.NotEqual("", Presets.Source(n));
        }
        Assert.Equal("Qwen3 0.6B", Presets.DisplayName("qwen3-0.6b"));
        var e = Assert.Throws<LlmArchInputException>(() => Presets.Load("qwen9"));
        Assert.Contains("qwen9", e.Message);
        Assert.Contains("llama-3.2-1b", e.Message);
    }

    [Fact]
    public void FixtureDirectoryUsesHeaderDTypes()
    {
        var a = ModelAnalysis.ForDirectory(FixtureDir("qwen3"));
        Assert.Equal("F32", a.StoredDType);
        Assert.True(a.FileBytes > 0);
        var loaded = InfoCommand.LoadDirectory(FixtureDir("qwen3"));
        Assert.Equal(a.TotalParams, loaded.TotalParams);
        Assert.Equal(a.TotalParams, loaded.ParamsByDType["F32"]);
    }

    internal static string FixtureDir(string name) => TestPaths.Fixture(name);
}

/// <summary>The compare and info verbs through the CLI entry point.</summary>
public class CompareCliTests
{
    private static (int Code, string Out, string Err) Run(params string[] args) => CliTests.Run(args);

    [Fact]
    public void JsonHasTheFields()
    {
        var (code, o, _) = Run("compare", "qwen3-0.6b", "llama-3.2-1b", "--format", "json");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(o);
        Assert.Equal(2, doc.RootElement.GetArrayLength());
        var m = doc.RootElement[0];
        foreach (var f in new[] { "name", "model_type", "total_params", "active_params", "embedding_params", "layers", "layer_pattern",
                     "attention", "experts", "active_experts", "shared_experts", "kv_cache_bytes_per_token", "kv_cache_bytes", "flops_per_token" })
            Assert.True(m.TryGetProperty(f, out _), f);
        Assert.Equal("qwen3-0.6b", m.GetProperty("name").GetString());
        var kv = m.GetProperty("kv_cache_bytes");
        foreach (var c in new[] { "8192", "32768", "131072" }) Assert.True(kv.TryGetProperty(c, out _), c);
        Assert.Equal(28L * 8 * 256 * 2 * 8192, kv.GetProperty("8192").GetInt64());
        Assert.Equal(28.0 * 8 * 256 * 2, m.GetProperty("kv_cache_bytes_per_token").GetDouble());
    }

    [Fact]
    public void KvDtypeAndContextOptions()
    {
        var (_, o, _) = Run("compare", "llama-3.2-1b", "--format", "json", "--kv-dtype", "fp8", "--context", "4096");
        using var doc = JsonDocument.Parse(o);
        var m = doc.RootElement[0];
        Assert.Equal(16.0 * 8 * 128, m.GetProperty("kv_cache_bytes_per_token").GetDouble());
        Assert.Equal(16L * 8 * 128 * 4096, m.GetProperty("kv_cache_bytes").GetProperty("4096").GetInt64());
        Assert.Equal(4096, m.GetProperty("context").GetInt64());
    }

    [Fact]
    public void CsvHeaderAndRows()
    {
        var (code, o, _) = Run("compare", "gpt2", "qwen3-0.6b", "--format", "csv");
        Assert.Equal(0, code);
        var lines = o.TrimEnd().Split('\n');
        Assert.Equal(3, lines.Length);
        Assert.StartsWith("name,display_name,source,model_type,", lines[0]);
        Assert.Contains("total_params", lines[0]);
        Assert.Contains("kv_cache_bytes_32768", lines[0]);
        Assert.StartsWith("gpt2,", lines[1]);
        Assert.Contains(",124439808,", lines[1]);
    }

    [Fact]
    public void MarkdownAndTextTables()
    {
        var (code, md, _) = Run("compare", "qwen3-0.6b", "smollm3-3b", "--format", "markdown");
        Assert.Equal(0, code);
        var lines = md.Split('\n');
        Assert.StartsWith("| model | type | total | active |", lines[0]);
        Assert.StartsWith("| --- | --- | ---: |", lines[1]);
        Assert.StartsWith("| qwen3-0.6b | qwen3 | 596.0M |", lines[2]);
        Assert.Contains("9(GGGg)", md);

        var (code2, text, _) = Run("compare", "qwen3-0.6b", "smollm3-3b");
        Assert.Equal(0, code2);
        var t = text.Split('\n');
        Assert.StartsWith("model ", t[0]);
        Assert.Matches("^-+  -+", t[1]);
        Assert.Equal(t[0].IndexOf("total", StringComparison.Ordinal) + "total".Length, t[2].IndexOf("596.0M", StringComparison.Ordinal) + "596.0M".Length);
    }

    [Fact]
    public void HtmlIsSelfContainedWithSvg()
    {
        string path = Path.Combine(Path.GetTempPath(), $"llmarch-compare-{Guid.NewGuid():N}.html");
        try
        {
            var (code, _, err) = Run("compare", "qwen3-0.6b", "llama-3.2-1b", "gpt2", "--html", path);
            Assert.Equal(0, code);
            Assert.Contains("wrote", err);
            string html = File.ReadAllText(path);
            Assert.StartsWith("<!DOCTYPE html>", html);
            Assert.Contains("<table>", html);
            Assert.Equal(2, System.Text.RegularExpressions.Regex.Matches(html, "<svg ").Count);
            Assert.Contains("<polyline", html);
            Assert.DoesNotContain("<script", html);
            Assert.DoesNotContain("http://", html.Replace("http://www.w3.org/2000/svg", ""));
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void NoArgumentsComparesEveryImplementedPreset()
    {
        var (code, o, err) = Run("compare", "--format", "json");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(o);
        int implemented = Presets.Names.Count(n => CompareCommand.IsImplemented(Presets.Load(n)));
        Assert.Equal(implemented, doc.RootElement.GetArrayLength());
        if (implemented < Presets.Names.Count) Assert.Contains("skipped", err);
    }

    [Fact]
    public void ListShowsPresets()
    {
        var (code, o, _) = Run("compare", "--list");
        Assert.Equal(0, code);
        foreach (var n in Presets.Names) Assert.Contains(n, o);
        Assert.Contains("deepseek-ai/DeepSeek-V3", o);
        Assert.Contains("Kimi K2", o);
    }

    [Fact]
    public void ModelDirectoryArgument()
    {
        var (code, o, _) = Run("compare", AnalysisTests.FixtureDir("llama3"), "--format", "json");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(o);
        Assert.Equal("llama3", doc.RootElement[0].GetProperty("name").GetString());
        Assert.Equal("llama", doc.RootElement[0].GetProperty("model_type").GetString());
        Assert.Equal("F32", doc.RootElement[0].GetProperty("stored_dtype").GetString());
    }

    [Fact]
    public void UnknownPresetListsNamesExitTwo()
    {
        var (code, o, err) = Run("compare", "qwen3-0.6b", "no-such-model");
        Assert.Equal(2, code);
        Assert.Equal("", o);
        Assert.Single(err.TrimEnd().Split('\n'));
        Assert.Contains("unknown preset 'no-such-model'", err);
        Assert.Contains("deepseek-v3", err);
    }

    [Fact]
    public void DirectoryWithoutConfigExitTwo()
    {
        string dir = Directory.CreateTempSubdirectory("llmarch-noconfig").FullName;
        try
        {
            foreach (var verb in new[] { new[] { "compare", dir }, new[] { "info", "--model", dir } })
            {
                var (code, _, err) = Run(verb);
                Assert.Equal(2, code);
                Assert.Single(err.TrimEnd().Split('\n'));
                Assert.Contains("config.json", err);
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void ConfigMissingRequiredFieldExitTwo()
    {
        string dir = Directory.CreateTempSubdirectory("llmarch-badconfig").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, "config.json"),
                """{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "vocab_size": 100, "max_position_embeddings": 64}""");
            var (code, _, err) = Run("compare", dir);
            Assert.Equal(2, code);
            Assert.Single(err.TrimEnd().Split('\n'));
            Assert.Contains("num_attention_heads", err);
            Assert.Contains("config.json", err);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void BadOptionsExitTwo()
    {
        Assert.Equal(2, Run("compare", "gpt2", "--format", "yaml").Code);
        Assert.Equal(2, Run("compare", "gpt2", "--kv-dtype", "int3").Code);
        Assert.Equal(2, Run("compare", "gpt2", "--context", "0").Code);
        Assert.Equal(2, Run("compare", "gpt2", "--contxt", "5").Code);
        Assert.Equal(2, Run("info").Code);
        Assert.Equal(2, Run("info", "--preset", "nope").Code);
        Assert.Equal(2, Run("info", "--model", "/no/such/dir").Code);
    }

    [Fact]
    public void InfoFromCheckpointAndPreset()
    {
        var (code, o, _) = Run("info", "--model", AnalysisTests.FixtureDir("qwen3"));
        Assert.Equal(0, code);
        Assert.Contains("parameters", o);
        Assert.Contains("embeddings", o);
        Assert.Contains("F32", o);
        Assert.Contains("QK-norm: per-head RMSNorm", o);

        var (code2, json, _) = Run("info", "--preset", "qwen3-0.6b", "--json");
        Assert.Equal(0, code2);
        using var doc = JsonDocument.Parse(json);
        Assert.Equal(596_049_920, doc.RootElement.GetProperty("total_params").GetInt64());
        Assert.Equal(151936L * 1024, doc.RootElement.GetProperty("param_groups").GetProperty("embeddings").GetProperty("params").GetInt64());
    }
}
