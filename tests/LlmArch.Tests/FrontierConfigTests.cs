using System.Text.Json.Nodes;
using LlmArch.Analysis;
using LlmArch.Checkpoints;
using LlmArch.Generation;
using LlmArch.Models;

namespace LlmArch.Tests;

/// <summary>
/// The frontier families read the released checkpoints' own config spellings as well as transformers' (the spellings
/// must build the same model), and reject inconsistent configs with a <see cref="ConfigException"/> naming the key.
/// </summary>
public class FrontierConfigTests
{
    private static long Total(ModelConfig c) => ModelAnalysis.Of(ModelLoader.Describe(c), "x").TotalParams;

    /// <summary>MiniMax-M1's remote-code config (minimax_m1, attn_type_list, layernorm_*_alpha/beta, rotary_dim) on the minimax fixture's weights.</summary>
    [Fact]
    public void MiniMaxRemoteCodeConfigVerifiesAgainstTheFixture()
    {
        string src = FrontierFixtures.RepoDir("minimax");
        string dir = Path.Combine(Path.GetTempPath(), $"llmarch-minimax-m1-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        try
        {
            foreach (var f in new[] { "model.safetensors", "expected.safetensors", "generation_config.json", "manifest.json" })
                File.Copy(Path.Combine(src, f), Path.Combine(dir, f), true);
            var c = JsonNode.Parse(File.ReadAllText(Path.Combine(src, "config.json")))!.AsObject();
            var types = c["layer_types"]!.AsArray().Select(t => (string)t! == "full_attention" ? 1 : 0).ToArray();
            c.Remove("layer_types");
            c["attn_type_list"] = new JsonArray(types.Select(t => (JsonNode)t).ToArray());
            c["model_type"] = "minimax_m1";
            c["architectures"] = new JsonArray("MiniMaxM1ForCausalLM");
            foreach (var (hf, remote) in new[] { ("full_attn_alpha_factor", "layernorm_full_attention_alpha"), ("full_attn_beta_factor", "layernorm_full_attention_beta"),
                         ("linear_attn_alpha_factor", "layernorm_linear_attention_alpha"), ("linear_attn_beta_factor", "layernorm_linear_attention_beta"),
                         ("mlp_alpha_factor", "layernorm_mlp_alpha"), ("mlp_beta_factor", "layernorm_mlp_beta") })
            {
                c[remote] = c[hf]!.DeepClone();
                c.Remove(hf);
            }
            c["rotary_dim"] = c["head_dim"]!.DeepClone();
            c["postnorm"] = true;
            File.WriteAllText(Path.Combine(dir, "config.json"), c.ToJsonString());
            var r = FixtureVerifier.Verify(dir);
            Assert.True(r.Pass, $"{r.Error} (max_abs {r.MaxAbs})");

            c["postnorm"] = false;
            File.WriteAllText(Path.Combine(dir, "config.json"), c.ToJsonString());
            var e = Assert.Throws<ConfigException>(() => ModelLoader.Describe(ModelConfig.Load(Path.Combine(dir, "config.json"))));
            Assert.Contains("postnorm", e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>LFM2's released keys block_ff_dim and tie_embedding override transformers' names, as in transformers.</summary>
    [Fact]
    public void Lfm2ReleasedKeys()
    {
        long reference = Total(FrontierModels.Config("lfm2"));
        var released = FrontierModels.Config("lfm2", o =>
        {
            o["block_ff_dim"] = o["intermediate_size"]!.DeepClone();
            o["intermediate_size"] = 1;             // overridden, as transformers pops block_ff_dim over it
            o.Remove("tie_word_embeddings");
            o["tie_embedding"] = true;
        });
        Assert.Equal(reference, Total(released));
        var untied = FrontierModels.Config("lfm2", o => o["tie_embedding"] = false);
        Assert.Equal(reference + 64 * 32, Total(untied));
    }

    /// <summary>DeepSeek-V4's released compress_ratios (0 sliding, 4 CSA, 128 HCA; one extra entry for the MTP layer) build the transformers layer_types.</summary>
    [Fact]
    public void DeepSeekV4CompressRatios()
    {
        var reference = ModelAnalysis.Of(ModelLoader.Describe(FrontierModels.Config("deepseek_v4")), "x");
        var released = ModelAnalysis.Of(ModelLoader.Describe(FrontierModels.Config("deepseek_v4", o =>
        {
            o.Remove("layer_types");
            o.Remove("compress_rates");
            o["compress_rate_csa"] = 2; o["compress_rate_hca"] = 4;
            o["compress_ratios"] = new JsonArray(0, 2, 4, 2, 0);
        })), "x");
        Assert.Equal(reference.AttentionLayers, released.AttentionLayers);
        Assert.Equal(reference.TotalParams, released.TotalParams);
    }

    public static TheoryData<string, string, string> BadConfigs => new()
    {
        { "nemotron_h", """{"layers_block_type":null,"hybrid_override_pattern":"M*X-E"}""", "hybrid_override_pattern" },
        { "deepseek_v4", """{"layer_types":null,"compress_ratios":[0,2,7,2]}""", "compress_ratios" },
        { "deepseek_v4", """{"compress_ratios":null,"layer_types":null,"num_key_value_heads":2}""", "num_key_value_heads" },
        { "deepseek_v4", """{"scoring_func":"tanh"}""", "scoring_func" },
        { "kimi_linear", """{"moe_router_activation_func":"tanh"}""", "moe_router_activation_func" },
        { "lfm2", """{"layer_types":["conv","mamba","conv","conv"]}""", "layer_types" },
        { "minimax", """{"num_key_value_heads":3}""", "num_key_value_heads" },
        { "glm_moe_dsa", """{"indexer_types":["shared","full","full"]}""", "indexer_types" },
        { "qwen3_5", """{"layer_types":["linear_attention","sliding_attention","full_attention","linear_attention"]}""", "layer_types" },
    };

    [Theory]
    [MemberData(nameof(BadConfigs))]
    public void InconsistentConfigsNameTheKey(string family, string patch, string key)
    {
        var edits = JsonNode.Parse(patch)!.AsObject();
        // The config validator catches some (unknown layer types, heads), the family's constructor the rest.
        var e = Assert.Throws<ConfigException>(() => ModelLoader.Describe(FrontierModels.Config(family, o =>
        {
            foreach (var (k, v) in edits)
                if (v is null) o.Remove(k); else o[k] = v.DeepClone();
        })));
        Assert.Contains(key, e.Message);
    }
}
