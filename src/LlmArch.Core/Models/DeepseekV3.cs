using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>
/// DeepSeek-V3 / R1 (<c>model_type</c> "deepseek_v3") and Kimi K2 (its config says <c>model_type</c> "kimi_k2",
/// <c>architectures</c> ["DeepseekV3ForCausalLM"]; same architecture, 384 experts, one group).
/// <list type="bullet">
/// <item>Attention is MLA (<see cref="MlaAttention"/>): optional q LoRA, latent KV of kv_lora_rank plus a shared
/// decoupled RoPE key (rope_interleave), YaRN with mscale_all_dim folded into the softmax scale; the cache stores only
/// the latent and the rope key.</item>
/// <item>FFN: dense SwiGLU for the first <c>first_k_dense_replace</c> layers, then MoE: sigmoid router with
/// <c>e_score_correction_bias</c> (selection only), group-limited top-k (n_group, topk_group), renormalized weights
/// times <c>routed_scaling_factor</c>, plus <c>n_shared_experts</c> always-on experts (stored fused as one MLP).</item>
/// </list>
/// FP8 checkpoints (e4m3 with 128x128 <c>weight_scale_inv</c>) stay 8-bit; matmuls dequantize per row.
/// Checkpoints that carry the multi-token-prediction layer (<c>model.layers.{num_hidden_layers}.eh_proj</c>, ...) load
/// it as a draft head for self-speculative decoding (DeepseekV3.Mtp.cs); it is not counted in the model's parameters.
/// </summary>
[ModelType("deepseek_v3", "kimi_k2", "DeepseekV3ForCausalLM")]
public sealed partial class DeepseekV3 : DecoderModel
{
    private readonly MlaSpec _mla;
    private readonly RouterSpec _router;
    private readonly int _expertWidth, _shared, _denseLayers;

    public DeepseekV3(ModelConfig c, WeightSource w, IBackend b) : base(c, w, b)
    {
        int nope = c.RequirePositive(c.Get<int?>("qk_nope_head_dim"), "qk_nope_head_dim");
        int rope = c.RequirePositive(c.Get<int?>("qk_rope_head_dim"), "qk_rope_head_dim");
        int? qRank = c.Get<int?>("q_lora_rank");
        if (qRank is <= 0) throw c.Invalid("q_lora_rank", $"must be positive or null (got {qRank})");
        var rp = c.RopeFor(null);
        double scale = 1.0 / Math.Sqrt(nope + rope) * RotaryEmbedding.YarnSoftmaxScale(rp);
        _mla = new MlaSpec
        {
            Hidden = Hidden, Heads = Heads, QLoraRank = qRank,
            KvLoraRank = c.RequirePositive(c.Get<int?>("kv_lora_rank"), "kv_lora_rank"),
            NopeDim = nope, RopeDim = rope, ValueDim = c.RequirePositive(c.Get<int?>("v_head_dim"), "v_head_dim"),
            Bias = c.AttentionBias ?? false, NormEps = Eps,
            Rope = RotaryEmbedding.Create(c, rp, rope, rope),
            RopeInterleaved = c.Get<bool?>("rope_interleave") ?? true,
            Scale = (float)scale,
        };
        var (experts, key) = MoeLayers.RoutedExperts(c);
        string method = c.TopkMethod ?? "noaux_tc";
        _router = new RouterSpec
        {
            Experts = experts, TopK = c.Require(c.NumExpertsPerTok, "num_experts_per_tok"),
            Scoring = (c.ScoringFunc ?? "sigmoid") switch
            {
                "sigmoid" => RouterScoring.Sigmoid, "softmax" => RouterScoring.Softmax,
                var f => throw c.Invalid("scoring_func", $"'{f}' is not supported (sigmoid, softmax)"),
            },
            NormalizeTopK = c.NormTopkProb ?? true,
            Groups = c.NGroup ?? 1, TopKGroups = c.TopkGroup ?? 1,
            CorrectionBias = method == "noaux_tc",
            RoutedScaling = (float)(c.RoutedScalingFactor ?? 1.0),
        };
        if (method is not ("noaux_tc" or "greedy")) throw c.Invalid("topk_method", $"'{method}' is not supported (noaux_tc, greedy)");
        _router.Validate(c, key);
        _expertWidth = c.RequirePositive(c.MoeIntermediateSize, "moe_intermediate_size");
        _shared = c.NSharedExperts ?? 0;
        _denseLayers = c.FirstKDenseReplace ?? 0;
        Build();
        _mtp = LoadMtp(w);
    }

    /// <summary>Runs the absorbed MLA form for prefill too (tests compare it with the expanded form).</summary>
    public bool AlwaysAbsorbed
    {
        set
        {
            foreach (var l in Stack) ((MlaAttention)l.Attention).AlwaysAbsorbed = value;
            if (_mtp is not null) ((MlaAttention)_mtp.Layer.Attention).AlwaysAbsorbed = value;
        }
    }

    protected override DecoderLayer BuildLayer(int i, string prefix) => LayerFrom(Weights, i, prefix);

    /// <summary>Decoder layer i from a weight source (the model's own, or the uncounted one of the MTP layer).</summary>
    private DecoderLayer LayerFrom(WeightSource w, int i, string prefix) => new()
    {
        Placement = NormPlacement.Pre,
        InputNorm = RmsNorm.Load(w, $"{prefix}.input_layernorm.weight", Hidden, Eps),
        Attention = new MlaAttention(w, $"{prefix}.self_attn", _mla),
        PreFeedForwardNorm = RmsNorm.Load(w, $"{prefix}.post_attention_layernorm.weight", Hidden, Eps),
        FeedForward = FeedForwardFrom(w, i, prefix),
    };

    protected override IModule BuildFeedForward(int i, string prefix) => FeedForwardFrom(Weights, i, prefix);

    private IModule FeedForwardFrom(WeightSource w, int i, string prefix)
    {
        if (i < _denseLayers)
            return ReferenceEquals(w, Weights) ? base.BuildFeedForward(i, prefix)
                : GatedMlp.Load(w, $"{prefix}.mlp", Hidden, IntermediateFor(0), Activations.Parse(Config, Config.HiddenAct ?? "silu", "hidden_act"), Config.MlpBias ?? false);
        string p = $"{prefix}.mlp";
        var router = Linear.Load(w, $"{p}.gate", Hidden, _router.Experts, false);
        var bias = _router.CorrectionBias ? w.GetF32($"{p}.gate.e_score_correction_bias", _router.Experts) : null;
        var experts = ExpertSet.LoadPerExpert(w, $"{p}.experts", _router.Experts, _router.TopK, Hidden, _expertWidth, ExpertActivation.SwiGlu);
        var shared = _shared > 0 ? MoeLayers.SharedExperts(w, $"{p}.shared_experts", Hidden, _expertWidth * _shared) : null;
        return new Moe(_router, router, bias, experts, shared) { Width = _expertWidth, SharedWidth = _expertWidth * _shared, SharedCount = _shared };
    }

    protected override ArchitectureInfo Describe()
    {
        var info = base.Describe().WithFfns(Stack);
        var rp = Config.RopeFor(null);
        return info with
        {
            Layers = info.Layers.Select(l => l with
            {
                Mixer = MixerKind.Mla, KvHeads = 1, HeadDim = _mla.QkHeadDim, ValueDim = _mla.ValueDim,
                KvValuesPerToken = _mla.CacheDim,
            }).ToList(),
            Positions = $"decoupled RoPE on {_mla.RopeDim} of {_mla.QkHeadDim} q/k dims ({rp.Kind}, theta {rp.RopeTheta ?? Config.RopeTheta ?? 10000:G})",
            Notes = $"MLA: latent KV {_mla.KvLoraRank} + rope key {_mla.RopeDim} cached per token" + (_mla.QLoraRank is int q ? $", q LoRA {q}" : "")
                + (_mtp is not null ? $", MTP head ({_mtp.Parameters / 1e6:F1}M params, not counted)" : ""),
        };
    }
}
