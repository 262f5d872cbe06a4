using System.Text.Json.Nodes;
using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;
using LlmArch.Models;

namespace LlmArch.Tests;

/// <summary>
/// Tiny configurations of the frontier families (every block and cache kind, with windows, chunks, blocks, compress
/// rates and top-k small enough to be crossed within a few tokens) and random checkpoints written from them, so the
/// property tests run on a fresh clone without the fixture folder.
/// </summary>
public static class FrontierModels
{
    public static readonly Dictionary<string, string> Configs = new()
    {
        ["lfm2"] = """
            {"model_type":"lfm2","hidden_size":32,"intermediate_size":96,"num_hidden_layers":4,"num_attention_heads":4,"num_key_value_heads":2,
             "vocab_size":64,"max_position_embeddings":128,"layer_types":["conv","full_attention","conv","conv"],"conv_L_cache":3,"norm_eps":1e-5,
             "block_auto_adjust_ff_dim":true,"block_ffn_dim_multiplier":1.0,"block_multiple_of":16,"rope_parameters":{"rope_theta":10000.0,"rope_type":"default"},
             "tie_word_embeddings":true}
            """,
        ["qwen3_5"] = """
            {"model_type":"qwen3_5_text","hidden_size":32,"intermediate_size":64,"num_hidden_layers":4,"num_attention_heads":4,"num_key_value_heads":2,
             "head_dim":8,"vocab_size":64,"max_position_embeddings":128,"layer_types":["linear_attention","linear_attention","full_attention","linear_attention"],
             "linear_conv_kernel_dim":4,"linear_key_head_dim":8,"linear_num_key_heads":2,"linear_num_value_heads":4,"linear_value_head_dim":8,
             "rope_parameters":{"partial_rotary_factor":0.5,"rope_theta":10000.0,"rope_type":"default"}}
            """,
        ["qwen3_5_moe"] = """
            {"model_type":"qwen3_5_moe_text","hidden_size":32,"num_hidden_layers":4,"num_attention_heads":4,"num_key_value_heads":2,
             "head_dim":8,"vocab_size":64,"max_position_embeddings":128,"full_attention_interval":2,
             "linear_conv_kernel_dim":4,"linear_key_head_dim":8,"linear_num_key_heads":2,"linear_num_value_heads":4,"linear_value_head_dim":8,
             "num_experts":4,"num_experts_per_tok":2,"moe_intermediate_size":16,"shared_expert_intermediate_size":16,
             "rope_parameters":{"partial_rotary_factor":0.5,"rope_theta":10000.0,"rope_type":"default"}}
            """,
        ["olmo_hybrid"] = """
            {"model_type":"olmo_hybrid","hidden_size":32,"intermediate_size":64,"num_hidden_layers":4,"num_attention_heads":4,"vocab_size":64,
             "max_position_embeddings":128,"linear_num_key_heads":2,"linear_num_value_heads":4,"linear_key_head_dim":8,"linear_value_head_dim":16,
             "linear_conv_kernel_dim":4,"rope_parameters":{"rope_theta":10000.0,"rope_type":"default"}}
            """,
        ["nemotron_h"] = """
            {"model_type":"nemotron_h","hidden_size":32,"vocab_size":64,"max_position_embeddings":128,
             "layers_block_type":["linear_attention","moe","full_attention","mlp","linear_attention"],"num_attention_heads":4,"num_key_value_heads":2,
             "head_dim":8,"intermediate_size":48,"mamba_num_heads":4,"mamba_head_dim":8,"ssm_state_size":8,"n_groups":2,"conv_kernel":4,"chunk_size":4,
             "n_routed_experts":4,"num_experts_per_tok":2,"moe_intermediate_size":16,"moe_shared_expert_intermediate_size":16,"n_group":1,"topk_group":1,
             "norm_topk_prob":true,"routed_scaling_factor":2.5,"layer_norm_epsilon":1e-5,"mlp_hidden_act":"relu2","time_step_min":0.001}
            """,
        ["minimax"] = """
            {"model_type":"minimax","hidden_size":32,"intermediate_size":16,"num_hidden_layers":4,"num_attention_heads":4,"num_key_value_heads":2,
             "head_dim":8,"vocab_size":64,"max_position_embeddings":128,"layer_types":["linear_attention","full_attention","linear_attention","linear_attention"],
             "block_size":4,"num_local_experts":4,"num_experts_per_tok":2,"full_attn_alpha_factor":1.5,"linear_attn_alpha_factor":1.2,"mlp_alpha_factor":1.3,
             "rope_parameters":{"rope_theta":10000.0,"rope_type":"default"}}
            """,
        ["kimi_linear"] = """
            {"model_type":"kimi_linear","hidden_size":32,"intermediate_size":64,"num_hidden_layers":4,"num_attention_heads":4,"num_key_value_heads":4,
             "vocab_size":64,"model_max_length":128,"layer_types":["linear_attention","linear_attention","full_attention","linear_attention"],
             "linear_num_heads":2,"linear_head_dim":8,"linear_conv_kernel_dim":4,"kv_lora_rank":8,"q_lora_rank":null,"qk_nope_head_dim":8,"qk_rope_head_dim":4,
             "v_head_dim":8,"num_experts":4,"num_experts_per_token":2,"num_shared_experts":1,"moe_intermediate_size":16,"first_k_dense_replace":1,
             "routed_scaling_factor":2.0,"moe_renormalize":true}
            """,
        ["gemma4"] = """
            {"model_type":"gemma4_text","hidden_size":32,"intermediate_size":64,"num_hidden_layers":6,"num_attention_heads":4,"num_key_value_heads":2,
             "head_dim":8,"vocab_size":64,"max_position_embeddings":128,
             "layer_types":["sliding_attention","sliding_attention","full_attention","sliding_attention","sliding_attention","full_attention"],
             "sliding_window":4,"num_kv_shared_layers":2,"hidden_size_per_layer_input":4,"vocab_size_per_layer_input":64,"attention_k_eq_v":true,
             "use_double_wide_mlp":true,"final_logit_softcapping":30.0,
             "per_layer_config":{"2":{"head_dim":16,"num_key_value_heads":1},"5":{"head_dim":16,"num_key_value_heads":1}},
             "rope_parameters":{"full_attention":{"partial_rotary_factor":0.25,"rope_theta":1000000.0,"rope_type":"proportional"},
                                "sliding_attention":{"rope_theta":10000.0,"rope_type":"default"}}}
            """,
        ["deepseek_v32"] = """
            {"model_type":"deepseek_v32","hidden_size":32,"intermediate_size":64,"num_hidden_layers":3,"num_attention_heads":4,"num_key_value_heads":4,
             "vocab_size":64,"max_position_embeddings":128,"q_lora_rank":16,"kv_lora_rank":8,"qk_nope_head_dim":8,"qk_rope_head_dim":4,"v_head_dim":8,
             "index_n_heads":4,"index_head_dim":8,"index_topk":4,"first_k_dense_replace":1,"n_routed_experts":4,"num_experts_per_tok":2,"n_shared_experts":1,
             "moe_intermediate_size":16,"n_group":2,"topk_group":1,"routed_scaling_factor":2.5,"rope_parameters":{"rope_theta":10000.0,"rope_type":"default"}}
            """,
        ["glm_moe_dsa"] = """
            {"model_type":"glm_moe_dsa","hidden_size":32,"intermediate_size":64,"num_hidden_layers":3,"num_attention_heads":4,"num_key_value_heads":4,
             "vocab_size":64,"max_position_embeddings":128,"q_lora_rank":16,"kv_lora_rank":8,"qk_nope_head_dim":8,"qk_rope_head_dim":4,"v_head_dim":8,
             "index_n_heads":4,"index_head_dim":8,"index_topk":4,"indexer_types":["full","shared","full"],"first_k_dense_replace":1,"n_routed_experts":4,
             "num_experts_per_tok":2,"n_shared_experts":1,"moe_intermediate_size":16,"n_group":1,"topk_group":1,"routed_scaling_factor":2.5,
             "rope_parameters":{"rope_theta":1000000.0,"rope_type":"default"}}
            """,
        ["deepseek_v4"] = """
            {"model_type":"deepseek_v4","hidden_size":32,"num_hidden_layers":4,"num_attention_heads":4,"num_key_value_heads":1,"head_dim":16,"q_lora_rank":16,
             "vocab_size":64,"max_position_embeddings":128,
             "layer_types":["sliding_attention","compressed_sparse_attention","heavily_compressed_attention","compressed_sparse_attention"],
             "mlp_layer_types":["hash_moe","moe","moe","moe"],"compress_rates":{"compressed_sparse_attention":2,"heavily_compressed_attention":4},
             "sliding_window":4,"o_groups":2,"o_lora_rank":8,"index_n_heads":2,"index_head_dim":8,"index_topk":2,"hc_mult":2,"hc_sinkhorn_iters":5,
             "n_routed_experts":4,"num_experts_per_tok":2,"n_shared_experts":1,"moe_intermediate_size":16,"scoring_func":"sqrtsoftplus",
             "routed_scaling_factor":1.5,"swiglu_limit":1.5,"partial_rotary_factor":0.25,
             "rope_parameters":{"main":{"rope_type":"default","rope_theta":10000.0,"partial_rotary_factor":0.25},
                                "compress":{"rope_type":"yarn","rope_theta":160000.0,"factor":4.0,"original_max_position_embeddings":16,
                                            "partial_rotary_factor":0.25,"attention_factor":1.0,"beta_fast":32.0,"beta_slow":1.0}}}
            """,
    };

    private static readonly Dictionary<string, string> Written = new();
    private static readonly object Gate = new();

    public static ModelConfig Config(string family, Action<JsonObject>? edit = null)
    {
        var root = JsonNode.Parse(Configs[family])!.AsObject();
        edit?.Invoke(root);
        return ModelConfig.Parse(root.ToJsonString(), $"{family}/config.json");
    }

    /// <summary>A directory with the family's tiny config and random weights (std 0.2, so activations are O(1)), written once per run.</summary>
    public static string Dir(string family)
    {
        lock (Gate)
        {
            if (Written.TryGetValue(family, out var d)) return d;
            d = Path.Combine(Path.GetTempPath(), $"llmarch-frontier-{family}-{Environment.ProcessId}");
            if (Directory.Exists(d)) Directory.Delete(d, true);
            var cfg = Config(family);
            RandomCheckpoint.Write(cfg, d, DType.F32, 1234, std: 0.2);
            if (family == "deepseek_v4") AddHashTables(d, cfg);
            Written[family] = d;
            return d;
        }
    }

    /// <summary>DeepSeek-V4's frozen token → experts tables (not learned, so not in the random checkpoint's weight list).</summary>
    private static void AddHashTables(string dir, ModelConfig cfg)
    {
        var path = Path.Combine(dir, "model.safetensors");
        List<(string, Tensor)> tensors;
        using (var f = new SafeTensorsFile(path))
            tensors = f.Tensors.Keys.Select(n => (n, Copy(f.Get(n)))).ToList();
        int V = cfg.VocabSize!.Value, K = cfg.NumExpertsPerTok!.Value, E = cfg.NRoutedExperts!.Value;
        var types = cfg.Get<string[]>("mlp_layer_types")!;
        for (int i = 0; i < types.Length; i++)
        {
            if (types[i] != "hash_moe") continue;
            var t = Tensor.Zeros(DType.I64, new Shape(V, K), $"model.layers.{i}.ffn.gate.tid2eid");
            var s = t.AsSpan<long>();
            for (int v = 0; v < V; v++) for (int k = 0; k < K; k++) s[v * K + k] = (v + k * (1 + v % (E - 1))) % E;   // distinct for K = 2
            tensors.Add((t.Name, t));
        }
        SafeTensorsFile.Write(path, tensors);
    }

    private static Tensor Copy(Tensor t)
    {
        var c = Tensor.Zeros(t.DType, t.Shape, t.Name);
        t.AsBytes().CopyTo(c.AsBytes());
        return c;
    }

    public static CausalLM Load(string family, IBackend? backend = null) => ModelLoader.Load(Dir(family), backend);

    public static readonly string[] Families = ["lfm2", "qwen3_5", "qwen3_5_moe", "olmo_hybrid", "nemotron_h", "minimax", "kimi_linear", "gemma4", "deepseek_v32", "glm_moe_dsa", "deepseek_v4"];
}
