using LlmArch.Analysis;
using LlmArch.Cli.Commands;
using LlmArch.Models;
using Xunit.Abstractions;

namespace LlmArch.Tests;

/// <summary>
/// The frontier presets against their published totals (Analysis/Presets/README.md lists the sources and each
/// vendor's counting convention) and their caches counted by hand. Our "active" rule counts every non-expert tensor
/// (embeddings and LM head included) plus routed experts × top-k / experts; where a vendor counts without the
/// embeddings the test says so. Totals count the text stack the model constructor requests: MTP layers and vision /
/// audio towers are left out (noted per preset).
/// </summary>
public class FrontierAtlasTests(ITestOutputHelper output)
{
    private enum Rule { All, NoEmbedding, NonEmbedding }

    private ModelAnalysis Preset(string name)
    {
        var a = ModelAnalysis.ForPreset(name);
        output.WriteLine($"{name}: total {a.TotalParams:N0}, active {a.ActiveParams:N0} (no embedding {a.ActiveParamsNoEmbedding:N0}, non-embedding {a.ActiveParamsNonEmbedding:N0}), KV values/token {a.KvValuesPerToken:N0}, state {a.StateValues:N0}");
        return a;
    }

    private static void Near(double published, double computed, string what, double tolerance = 0.02)
    {
        double rel = Math.Abs(computed - published) / published;
        Assert.True(rel <= tolerance, $"{what}: computed {computed:N0} is {rel:P2} from the published {published:N0} (tolerance {tolerance:P0})");
    }

    private ModelAnalysis Check(string preset, double total, double active, Rule rule = Rule.All, double activeTolerance = 0.02)
    {
        var a = Preset(preset);
        Near(total, a.TotalParams, $"{preset} total");
        long act = rule switch { Rule.NoEmbedding => a.ActiveParamsNoEmbedding, Rule.NonEmbedding => a.ActiveParamsNonEmbedding, _ => a.ActiveParams };
        Near(active, act, $"{preset} active ({rule})", activeTolerance);
        return a;
    }

    // ---- published totals ----

    /// <summary>MiniMax-M1 / Text-01: 456B total, 45.9B activated (the model card's figure leaves embedding and head out).</summary>
    [Fact] public void MiniMaxM1() => Check("minimax-m1", 456e9, 45.9e9, Rule.NonEmbedding);

    /// <summary>DeepSeek-V3.2: the V3 shape plus a lightning indexer per layer (~0.85B); DeepSeek keeps quoting 671B / 37B.</summary>
    [Fact] public void DeepSeekV32() => Check("deepseek-v3.2", 671e9, 37e9, Rule.NonEmbedding);

    /// <summary>DeepSeek-V4-Flash: 284B total, 13B activated (rounded; 12.7B without, 13.3B with the input embedding).</summary>
    [Fact] public void DeepSeekV4Flash() => Check("deepseek-v4-flash", 284e9, 13e9, Rule.NoEmbedding, 0.03);

    /// <summary>DeepSeek-V4-Pro: 1.6T total (the MTP layer would add ~25B), 49B activated.</summary>
    [Fact] public void DeepSeekV4Pro() => Check("deepseek-v4-pro", 1.6e12, 49e9, Rule.NoEmbedding);

    /// <summary>GLM-5: 744B total, 40B activated (without embedding and head, as for GLM-4.5).</summary>
    [Fact] public void Glm5() => Check("glm-5", 744e9, 40e9, Rule.NonEmbedding);

    /// <summary>
    /// Kimi Linear: the model card's "48B total / 3B activated" are the name's round figures; the checkpoint holds
    /// 49.1B (its 256 x 26 routed experts alone are 47.1B), 2.3% above the rounded figure: the one preset outside 2%.
    /// Active without embeddings: 2.7B; with the head 3.1B.
    /// </summary>
    [Fact]
    public void KimiLinear()
    {
        var a = Preset("kimi-linear-48b-a3b");
        Near(48e9, a.TotalParams, "kimi-linear total (the card's rounded 48B)", 0.025);
        Near(3e9, a.ActiveParamsNoEmbedding, "kimi-linear active without the input embedding", 0.05);
        Assert.Equal(256L * 26 * 3 * 2304 * 1024, a.Groups.Single(g => g.Name == "routed experts").Params);
    }

    [Fact] public void Qwen35Dense() => Check("qwen3.5-27b", 27e9, 27e9);

    /// <summary>Qwen3.5-35B-A3B: "A3B" is rounded: 3.45B with embeddings, 2.95B without the input embedding.</summary>
    [Fact] public void Qwen35Moe35B() => Check("qwen3.5-35b-a3b", 35e9, 3e9, Rule.NoEmbedding, 0.02);

    /// <summary>Qwen3.5-397B-A17B: "A17B" is rounded: 17.35B with embeddings, 16.3B without the input embedding.</summary>
    [Fact] public void Qwen35Moe397B() => Check("qwen3.5-397b-a17b", 397e9, 17e9, Rule.All, 0.025);

    /// <summary>
    /// Gemma 4 E2B / E4B: Google's "5.1B / 8B with embeddings" include the vision (~0.15B / ~0.15B) and audio
    /// (~0.3B) towers left out here; the "effective" 2.3B / 4.5B leave out the token and per-layer embedding tables
    /// (2.75B / 3.49B) but include the towers. So text total + towers and text non-embedding + towers.
    /// </summary>
    [Fact]
    public void Gemma4EdgeModels()
    {
        var e2 = Preset("gemma-4-e2b");
        Near(5.1e9, e2.TotalParams + 0.45e9, "gemma-4-e2b total with ~0.45B of towers");
        Near(2.3e9, e2.NonEmbeddingParams + 0.45e9, "gemma-4-e2b effective with ~0.45B of towers", 0.03);
        var e4 = Preset("gemma-4-e4b");
        Near(8.0e9, e4.TotalParams + 0.45e9, "gemma-4-e4b total with ~0.45B of towers", 0.03);
        Near(4.5e9, e4.NonEmbeddingParams + 0.45e9, "gemma-4-e4b effective with ~0.45B of towers", 0.03);
        Assert.True(e2.TiedEmbeddings);
    }

    /// <summary>Gemma 4 26B-A4B: 25.2B total, 3.8B active; 31B: 30.7B (vision towers left out: within rounding).</summary>
    [Fact]
    public void Gemma4LargeModels()
    {
        Check("gemma-4-26b-a4b", 25.2e9, 3.8e9);
        Near(30.7e9, Preset("gemma-4-31b").TotalParams, "gemma-4-31b total");
    }

    /// <summary>OLMo Hybrid 7B: no exact published total (the "7B" is nominal; OLMo 3 7B of the same width has 7.30B).</summary>
    [Fact] public void OlmoHybrid() => Near(7.3e9, Preset("olmo-hybrid-7b").TotalParams, "olmo-hybrid-7b total (OLMo 3 7B's 7.30B)");

    [Fact] public void Lfm2() => Check("lfm2-1.2b", 1.17e9, 1.17e9);

    /// <summary>Nemotron 3 Nano: 31.6B total, 3.2B active without embeddings (3.6B with them).</summary>
    [Fact]
    public void NemotronNano()
    {
        var a = Check("nemotron-3-nano-30b-a3b", 31.6e9, 3.2e9, Rule.NoEmbedding);
        Near(3.6e9, a.ActiveParams, "nemotron-3-nano active with embeddings");
    }

    // ---- caches and states by hand ----

    /// <summary>
    /// DeepSeek-V4-Flash: every layer keeps a 128-token window of the shared 512-wide K=V head; the 21 CSA layers add one
    /// 512-wide entry plus a 128-wide indexer key per 4 tokens, the 20 HCA layers one 512-wide entry per 128 tokens.
    /// </summary>
    [Fact]
    public void DeepSeekV4CompressedCaches()
    {
        var a = Preset("deepseek-v4-flash");
        Assert.Equal("2S 20(AH) A", a.AttentionPattern);
        Assert.Equal(43L * 512, a.KvValuesPerToken);
        long growth = a.KvCacheBytes(1 << 17) - a.KvCacheBytes(1 << 16);
        Assert.Equal(2L * (21 * (512 + 128) * ((1 << 16) / 4) + 20 * 512 * ((1 << 16) / 128)), growth);
        // Windows are bounded: 43 x 128 x 512 values plus the compressors' constant state.
        long fixedPart = a.KvCacheBytes(1 << 17) - 2L * (21 * 640L * ((1 << 17) / 4) + 20 * 512L * ((1 << 17) / 128));
        Assert.Equal(2L * (43 * 128 * 512 + a.StateValues), fixedPart);
        Assert.Contains("CSA 4/top-512", a.AttentionKind);
        // A 32x smaller cache than DeepSeek-V3.2's at 128K, with the indexer counted in both.
        Assert.True(Preset("deepseek-v3.2").KvCacheBytes(1 << 17) > 10 * a.KvCacheBytes(1 << 17));
    }

    /// <summary>DSA: MLA's 576 latent values plus the indexer's 128-wide key per layer and token; GLM-5 the same with 78 layers.</summary>
    [Fact]
    public void DsaCaches()
    {
        var v32 = Preset("deepseek-v3.2");
        Assert.Equal(61L * (512 + 64 + 128), v32.KvValuesPerToken);
        Assert.Equal("61X", v32.AttentionPattern);
        var glm = Preset("glm-5");
        Assert.Equal(78L * (512 + 64 + 128), glm.KvValuesPerToken);
        // The indexer scores every cached token, attention reads only the top 2048: FLOPs grow slowly past 2048.
        double slope = v32.FlopsPerToken(1 << 17) - v32.FlopsPerToken(1 << 16);
        var v3 = Preset("deepseek-v3");
        Assert.True(slope < 0.5 * (v3.FlopsPerToken(1 << 17) - v3.FlopsPerToken(1 << 16)));
    }

    /// <summary>Hybrids: KV only in the attention layers, a constant state in the others.</summary>
    [Fact]
    public void HybridStates()
    {
        var kimi = Preset("kimi-linear-48b-a3b");
        Assert.Equal(7L * (512 + 64), kimi.KvValuesPerToken);
        // KDA: per head a 128 x 128 state plus three short-conv windows (q, k, v) of 3 steps x 4096 channels.
        Assert.Equal(20L * (32 * 128 * 128 + 3 * 3 * 4096), kimi.StateValues);

        var minimax = Preset("minimax-m1");
        Assert.Equal(10L * 8 * 128 * 2, minimax.KvValuesPerToken);
        Assert.Equal(70L * 64 * 128 * 128, minimax.StateValues);

        var qwen = Preset("qwen3.5-27b");
        Assert.Equal(16L * 4 * 256 * 2, qwen.KvValuesPerToken);

        var nemotron = Preset("nemotron-3-nano-30b-a3b");
        Assert.Equal(6L * 2 * 128 * 2, nemotron.KvValuesPerToken);
        // Mamba2: 64 heads x 64 x 128 state plus a conv window of 3 steps over x, B and C (4096 + 2 x 8 x 128).
        Assert.Equal(23L * (64 * 64 * 128 + 3 * (4096 + 2 * 8 * 128)), nemotron.StateValues);

        var lfm = Preset("lfm2-1.2b");
        Assert.Equal(6L * 8 * 64 * 2, lfm.KvValuesPerToken);
        Assert.Equal(10L * 2 * 2048, lfm.StateValues); // a 2-step window (L = 3) of 2048 channels per conv layer
        Assert.Equal("3(VVG) 3(VG) V", lfm.AttentionPattern);

        var olmo = Preset("olmo-hybrid-7b");
        Assert.Equal("8(LLLG)", olmo.AttentionPattern);
        Assert.Equal(8L * 30 * 128 * 2, olmo.KvValuesPerToken);
    }

    /// <summary>Gemma 4 31B: 50 sliding layers (16 KV x 256, window 1024) and 10 global layers storing one K=V (4 heads x 512).</summary>
    [Fact]
    public void Gemma4Caches()
    {
        var a = Preset("gemma-4-31b");
        Assert.Equal("10(SSSSSG)", a.AttentionPattern);
        long growth = a.KvCacheBytes(1 << 17) - a.KvCacheBytes(1 << 16);
        output.WriteLine($"global growth per token {growth / (1 << 16) / 2} values");
        Assert.Equal(2L * (1 << 16) * 10 * 4 * 512 * (a.Layers.First(l => l.Mixer == MixerKind.Full).KvValuesPerToken / (4 * 512)), growth);
        var e2 = Preset("gemma-4-e2b");
        Assert.Equal(20, e2.KvSharedLayers);
    }

    [Fact]
    public void InfoDescribesEveryFrontierLayerKind()
    {
        var kinds = new[] { "deepseek-v4-flash", "deepseek-v3.2", "kimi-linear-48b-a3b", "minimax-m1", "nemotron-3-nano-30b-a3b", "lfm2-1.2b", "qwen3.5-27b" }
            .SelectMany(p => ModelAnalysis.ForPreset(p).LayerKinds()).ToList();
        foreach (var k in kinds) output.WriteLine(k.ToString());
        string all = string.Join("\n", kinds);
        foreach (var word in new[] { "compressed sparse attention", "heavily compressed attention", "DeepSeek Sparse Attention", "Mamba2", "short convolution", "linear attention" })
            Assert.Contains(word, all, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void FrontierPresetsAreListed()
    {
        foreach (var n in new[] { "deepseek-v3.2", "deepseek-v4-flash", "deepseek-v4-pro", "kimi-linear-48b-a3b", "minimax-m1", "qwen3.5-27b", "qwen3.5-35b-a3b",
                     "qwen3.5-397b-a17b", "gemma-4-e2b", "gemma-4-e4b", "gemma-4-26b-a4b", "gemma-4-31b", "glm-5", "olmo-hybrid-7b", "lfm2-1.2b", "nemotron-3-nano-30b-a3b" })
            Assert.Contains(n, Presets.Names);
    }

    /// <summary>compare prints the frontier rows with their patterns, caches and FLOPs (the README sample).</summary>
    [Fact]
    public void CompareRunsOnTheFrontierPresets()
    {
        var (code, stdout, stderr) = CliTests.Run("compare", "deepseek-v4-flash", "kimi-linear-48b-a3b", "nemotron-3-nano-30b-a3b", "--context", "131072");
        output.WriteLine(stdout + stderr);
        Assert.Equal(0, code);
        Assert.Contains("2S 20(AH) A", stdout);
        Assert.Contains("GQA + Mamba2", stdout);
    }
}
