using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>
/// Kimi Linear (<c>model_type</c> "kimi_linear", Moonshot): Kimi Delta Attention layers (<see cref="KimiDeltaAttention"/>,
/// per-channel forget gate, constant state) 3:1 with NoPE MLA layers (DeepSeek's latent attention with the rope part of
/// the key shared but never rotated), pre-norm RMSNorms, and DeepSeek-V3's MoE (sigmoid router with correction bias,
/// groups, renormalized weights times <c>routed_scaling_factor</c>, shared experts) after <c>first_k_dense_replace</c>
/// dense layers. Reads both the transformers keys (<c>layer_types</c>, <c>linear_num_heads</c>, ...) and the released
/// config's <c>linear_attn_config</c> (1-based <c>kda_layers</c> / <c>full_attn_layers</c>, <c>num_heads</c>,
/// <c>head_dim</c>, <c>short_conv_kernel_size</c>).
/// </summary>
[ModelType("kimi_linear", "KimiLinearForCausalLM")]
public sealed class KimiLinear : StackModel
{
    private readonly MlaSpec _mla;
    private readonly int _kdaHeads, _kdaDim, _kernel;

    public KimiLinear(ModelConfig c, WeightSource w, IBackend b) : base(c, w, b)
    {
        float eps = (float)(c.RmsNormEps ?? 1e-5);
        int heads = c.RequirePositive(c.NumAttentionHeads, "num_attention_heads");
        var lac = c.Raw["linear_attn_config"] as System.Text.Json.Nodes.JsonObject;
        int? FromLac(string k) => lac?[k] is { } n ? (int)n : null;
        _kdaHeads = c.RequirePositive(c.Get<int?>("linear_num_heads") ?? FromLac("num_heads") ?? heads, "linear_num_heads");
        _kdaDim = c.RequirePositive(c.Get<int?>("linear_head_dim") ?? c.Get<int?>("linear_key_head_dim") ?? FromLac("head_dim"), "linear_head_dim");
        _kernel = c.RequirePositive(c.LinearConvKernelDim ?? FromLac("short_conv_kernel_size") ?? 4, "linear_conv_kernel_dim");
        var full = lac?["full_attn_layers"]?.AsArray().Select(n => (int)n! - 1).ToHashSet();
        var types = Types(full is not null ? i => full.Contains(i) ? "full_attention" : "linear_attention" : i => i > 0 && i % 4 == 0 ? "full_attention" : "linear_attention",
            "linear_attention", "kda_attention", "full_attention");

        int nope = c.RequirePositive(c.Get<int?>("qk_nope_head_dim"), "qk_nope_head_dim");
        int rope = c.RequirePositive(c.Get<int?>("qk_rope_head_dim"), "qk_rope_head_dim");
        int? qRank = c.Get<int?>("q_lora_rank");
        if (qRank is <= 0) throw c.Invalid("q_lora_rank", $"must be positive or null (got {qRank})");
        _mla = new MlaSpec
        {
            Hidden = Hidden, Heads = heads, QLoraRank = qRank, KvLoraRank = c.RequirePositive(c.Get<int?>("kv_lora_rank"), "kv_lora_rank"),
            NopeDim = nope, RopeDim = rope, ValueDim = c.RequirePositive(c.Get<int?>("v_head_dim"), "v_head_dim"),
            NormEps = eps, Rope = null, Scale = 1f / MathF.Sqrt(nope + rope),
        };
        var mlpTypes = c.Get<string[]>("mlp_layer_types");
        int dense = c.FirstKDenseReplace ?? 1;
        if (mlpTypes is not null && mlpTypes.Length != NumLayersConfigured) throw c.Invalid("mlp_layer_types", $"has {mlpTypes.Length} entries for {NumLayersConfigured} layers");

        Embed = w.Get("model.embed_tokens.weight", [Vocab, Hidden], WeightUse.Embed);
        Stack = new IStackLayer[NumLayersConfigured];
        for (int i = 0; i < Stack.Length; i++)
        {
            string p = $"model.layers.{i}";
            IMixer mixer = types[i] == "full_attention"
                ? new AttentionMixer(new MlaAttention(w, $"{p}.self_attn", _mla))
                : new RecurrentMixer(new KimiDeltaAttention(w, $"{p}.self_attn", Hidden, _kdaHeads, _kdaDim, _kernel, eps));
            bool sparse = mlpTypes is not null ? mlpTypes[i] == "sparse" : i >= dense;
            Stack[i] = new MixerLayer
            {
                PreMixerNorm = RmsNorm.Load(w, $"{p}.input_layernorm.weight", Hidden, eps),
                Mixer = mixer,
                PreFeedForwardNorm = RmsNorm.Load(w, $"{p}.post_attention_layernorm.weight", Hidden, eps),
                FeedForward = sparse ? LoadMoe(c, w, $"{p}.block_sparse_moe")
                    : GatedMlp.Load(w, $"{p}.block_sparse_moe", Hidden, c.RequirePositive(c.IntermediateSize?[0], "intermediate_size"), UnaryOp.Silu),
            };
        }
        FinalNorm = RmsNorm.Load(w, "model.norm.weight", Hidden, eps);
        LmHeadWeight = c.TieWordEmbeddings ?? false ? Embed : w.Get("lm_head.weight", Vocab, Hidden);
    }

    private Moe LoadMoe(ModelConfig c, WeightSource w, string p)
    {
        var (E, key) = c.NumExperts is int ne ? (ne, "num_experts") : MoeLayers.RoutedExperts(c);
        int K = c.RequirePositive(c.NumExpertsPerTok ?? c.Get<int?>("num_experts_per_token"), "num_experts_per_token");
        int width = c.RequirePositive(c.MoeIntermediateSize, "moe_intermediate_size");
        string act = c.Get<string>("moe_router_activation_func") ?? c.ScoringFunc ?? "sigmoid";
        var spec = new RouterSpec
        {
            Experts = E, TopK = K,
            Scoring = act switch { "sigmoid" => RouterScoring.Sigmoid, "softmax" => RouterScoring.Softmax, _ => throw c.Invalid("moe_router_activation_func", $"'{act}' is not supported (sigmoid, softmax)") },
            NormalizeTopK = c.NormTopkProb ?? c.Get<bool?>("moe_renormalize") ?? true,
            Groups = c.NGroup ?? c.Get<int?>("num_expert_group") ?? 1, TopKGroups = c.TopkGroup ?? 1,
            CorrectionBias = true, RoutedScaling = (float)(c.RoutedScalingFactor ?? 1.0),
        };
        spec.Validate(c, key);
        int shared = c.NSharedExperts ?? c.Get<int?>("num_shared_experts") ?? 0;
        return new Moe(spec, Linear.Load(w, $"{p}.gate", Hidden, E, false), w.GetF32($"{p}.gate.e_score_correction_bias", E),
            ExpertSet.LoadPerExpert(w, $"{p}.experts", E, K, Hidden, width, ExpertActivation.SwiGlu, gate: "w1", up: "w3", down: "w2"),
            shared > 0 ? MoeLayers.SharedExperts(w, $"{p}.shared_experts", Hidden, width * shared) : null)
        { Width = width, SharedWidth = width * shared, SharedCount = shared };
    }

    protected override ArchitectureInfo Describe()
    {
        long state = (long)(_kernel - 1) * 3 * _kdaHeads * _kdaDim + (long)_kdaHeads * _kdaDim * _kdaDim;
        var layers = Stack.Select(l => (((MixerLayer)l).Mixer is AttentionMixer
            ? new LayerInfo { Mixer = MixerKind.Mla, Heads = _mla.Heads, KvHeads = 1, HeadDim = _mla.QkHeadDim, ValueDim = _mla.ValueDim, Rope = false, KvValuesPerToken = _mla.CacheDim }
            : new LayerInfo { Mixer = MixerKind.Linear, Heads = _kdaHeads, KvHeads = _kdaHeads, HeadDim = _kdaDim, ValueDim = _kdaDim, Rope = false, StateValues = state })
            .WithFfn(((MixerLayer)l).FeedForward!)).ToList();
        int linear = layers.Count(l => l.Mixer == MixerKind.Linear);
        return new ArchitectureInfo
        {
            Layers = layers, Norm = "pre-norm RMSNorm", QkNorm = "L2 in KDA; none in MLA",
            Positions = "NoPE (MLA without rotation; order from the KDA layers)",
            Notes = $"Kimi Delta Attention {linear} : MLA {layers.Count - linear}; MLA latent {_mla.KvLoraRank} + key {_mla.RopeDim} cached per token",
        };
    }
}
