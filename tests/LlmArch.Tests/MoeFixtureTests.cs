using System.Text.Json.Nodes;
using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;
using LlmArch.Generation;
using LlmArch.Models;

namespace LlmArch.Tests;

/// <summary>The MoE / MLA family against its reference fixtures, MLA cache properties, analysis info, and bad input.</summary>
public class MoeFixtureTests
{
    public static string Fixture(string name) => TestPaths.Fixture(name);

    [Theory]
    [InlineData("qwen3_moe")]
    [InlineData("deepseek_v3")]
    [InlineData("deepseek_v3_fp8")]
    [InlineData("glm4_moe")]
    [InlineData("minimax_m2")]
    [InlineData("minimax_m2_fp8")]
    [InlineData("grok2")]
    public void FixturePasses(string name)
    {
        var r = FixtureVerifier.Verify(Fixture(name));
        Assert.True(r.Pass, $"{name}: max_abs={r.MaxAbs} tokens={r.TokensMatched}/{r.TokensTotal} {r.Error}");
    }

    /// <summary>A temp copy of a fixture, with config and tensors edited.</summary>
    private static string Copy(string name, Action<JsonObject>? config = null, Func<string, Tensor, Tensor?>? tensors = null)
    {
        string src = Fixture(name);
        string dst = Path.Combine(Path.GetTempPath(), $"llmarch-moe-{name}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dst);
        foreach (var f in Directory.GetFiles(src)) File.Copy(f, Path.Combine(dst, Path.GetFileName(f)));
        if (config is not null)
        {
            var root = JsonNode.Parse(File.ReadAllText(Path.Combine(src, "config.json")))!.AsObject();
            config(root);
            File.WriteAllText(Path.Combine(dst, "config.json"), root.ToJsonString());
        }
        if (tensors is not null)
        {
            using var f = new SafeTensorsFile(Path.Combine(src, "model.safetensors"));
            var list = new List<(string, Tensor)>();
            foreach (var n in f.Tensors.Keys)
                if (tensors(n, f.Get(n)) is { } t) list.Add((n, t));
            SafeTensorsFile.Write(Path.Combine(dst, "model.safetensors"), list);
        }
        return dst;
    }

    [Fact]
    public void KimiK2ConfigLoadsThroughDeepseekV3()
    {
        // Kimi K2's config.json: model_type "kimi_k2", architectures ["DeepseekV3ForCausalLM"].
        var dir = Copy("deepseek_v3", c => c["model_type"] = "kimi_k2");
        try
        {
            var r = FixtureVerifier.Verify(dir);
            Assert.True(r.Pass, r.Error);
            Assert.IsType<DeepseekV3>(ModelLoader.Load(dir));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Theory]
    [InlineData("deepseek_v3")]
    [InlineData("deepseek_v3_fp8")]
    public void MlaAbsorbedDecodeEqualsFullRecompute(string name)
    {
        var model = ModelLoader.Load(Fixture(name));
        int[] ids = [5, 17, 99, 3, 250, 42, 7, 300, 11, 64, 128, 9];
        int T = ids.Length, V = model.VocabSize;
        var full = new float[T * V];
        model.Backend.Download(model.Forward(ids, 1, model.CreateCache(1, T)), full);

        var cache = model.CreateCache(1, T);
        var step = new float[4 * V];
        model.Backend.Download(model.Forward(ids.AsSpan(0, 4), 1, cache), step);   // expanded prefill
        AssertClose(full.AsSpan(0, 4 * V), step, 1e-4f);
        for (int t = 4; t < T; t++)                                               // absorbed decode
        {
            var one = new float[V];
            model.Backend.Download(model.Forward(ids.AsSpan(t, 1), 1, cache), one);
            AssertClose(full.AsSpan(t * V, V), one, 1e-4f);
        }

        // The absorbed form used for the prefill too gives the same logits.
        ((DeepseekV3)model).AlwaysAbsorbed = true;
        var abs = new float[T * V];
        model.Backend.Download(model.Forward(ids, 1, model.CreateCache(1, T)), abs);
        AssertClose(full, abs, 1e-4f);
    }

    private static void AssertClose(ReadOnlySpan<float> want, ReadOnlySpan<float> got, float tol)
    {
        float max = 0;
        for (int i = 0; i < want.Length; i++) max = MathF.Max(max, MathF.Abs(want[i] - got[i]));
        Assert.True(max <= tol, $"max |diff| {max} > {tol}");
    }

    [Fact]
    public void MlaCacheHoldsOnlyLatentAndRopeKey()
    {
        var model = ModelLoader.Load(Fixture("deepseek_v3"));
        var cache = model.CreateCache(1, 100);
        // (kv_lora_rank 16 + qk_rope_head_dim 8) F32 values per token per layer, 3 layers.
        Assert.Equal(100L * (16 + 8) * 3 * 4, cache.Bytes);
        var info = model.Info;
        Assert.All(info.Layers, l => { Assert.Equal(MixerKind.Mla, l.Mixer); Assert.Equal(24, l.KvValuesPerToken); });
        Assert.Equal(FfnKind.Dense, info.Layers[0].Ffn);
        Assert.Equal(128, info.Layers[0].FfnWidth);
        Assert.Equal(FfnKind.Moe, info.Layers[1].Ffn);
        Assert.Equal((8, 2, 1, 32), (info.Layers[1].Experts, info.Layers[1].ActiveExperts, info.Layers[1].SharedExperts, info.Layers[1].FfnWidth));
    }

    [Fact]
    public void ExpertWeightsCountAsActiveFraction()
    {
        var model = ModelLoader.Load(Fixture("qwen3_moe"));
        var experts = model.Weights.Records.Where(r => r.Name.Contains(".experts.")).ToList();
        Assert.Equal(2 * 8 * 3, experts.Count);
        Assert.All(experts, r => Assert.Equal(0.25, r.Use.ActiveFraction));
        var grok = ModelLoader.Load(Fixture("grok2"));
        Assert.Equal(FfnKind.DenseAndMoe, grok.Info.Layers[0].Ffn);
        Assert.Equal((4, 2), (grok.Info.Layers[0].Experts, grok.Info.Layers[0].ActiveExperts));
    }

    [Theory]
    [InlineData("qwen3_moe")]
    [InlineData("deepseek_v3")]
    [InlineData("deepseek_v3_fp8")]
    [InlineData("glm4_moe")]
    [InlineData("minimax_m2")]
    [InlineData("grok2")]
    public void ShapeOnlyBuildMatchesCheckpointRecords(string name)
    {
        var cfg = ModelConfig.Load(Path.Combine(Fixture(name), "config.json"));
        var shapes = ModelLoader.Describe(cfg);
        var real = ModelLoader.Load(Fixture(name));
        Assert.Equal(real.Weights.TotalParameters, shapes.Weights.TotalParameters);
        Assert.Equal(real.Info.Layers.Select(l => (l.Mixer, l.Ffn, l.KvValuesPerToken)), shapes.Info.Layers.Select(l => (l.Mixer, l.Ffn, l.KvValuesPerToken)));
    }

    // ---- bad input: one line naming the key or tensor, exit 2 ----

    private static void AssertBad(string dir, params string[] mentions)
    {
        try
        {
            var (code, _, err) = CliTests.Run("verify", dir);
            Assert.Equal(2, code);
            var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Single(lines);
            foreach (var m in mentions) Assert.Contains(m, err);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void MissingExpertTensor() =>
        AssertBad(Copy("qwen3_moe", tensors: (n, t) => n == "model.layers.1.mlp.experts.3.up_proj.weight" ? null : t),
            "model.layers.1.mlp.experts.3.up_proj.weight", "missing");

    [Fact]
    public void ExpertTensorWrongShape() =>
        AssertBad(Copy("minimax_m2", tensors: (n, t) => n == "model.layers.0.block_sparse_moe.experts.2.w2.weight" ? Tensor.Zeros(DType.F32, new Shape(64, 16), n) : t),
            "model.layers.0.block_sparse_moe.experts.2.w2.weight", "[64, 32]");

    [Fact]
    public void TopKAboveExpertCount() =>
        AssertBad(Copy("glm4_moe", c => c["num_experts_per_tok"] = 9), "num_experts_per_tok", "8");

    [Fact]
    public void KvLoraRankInconsistentWithTensors() =>
        AssertBad(Copy("deepseek_v3", c => c["kv_lora_rank"] = 12), "kv_a_proj_with_mqa");

    [Fact]
    public void Fp8ScalesOfWrongBlockShape() =>
        AssertBad(Copy("deepseek_v3_fp8", tensors: (n, t) => n == "model.layers.0.self_attn.o_proj.weight_scale_inv" ? Tensor.FromFloats([1f, 1f, 1f, 1f], new Shape(2, 2), n) : t),
            "model.layers.0.self_attn.o_proj.weight_scale_inv");

    [Fact]
    public void Fp8BlockSizeDisagreesWithScales() =>
        AssertBad(Copy("minimax_m2_fp8", c => c["quantization_config"]!["weight_block_size"] = new JsonArray(16, 16)), "weight_scale_inv", "16x16");

    [Fact]
    public void NGroupNotDividingExperts() =>
        AssertBad(Copy("deepseek_v3", c => c["n_group"] = 3), "n_group");
}

