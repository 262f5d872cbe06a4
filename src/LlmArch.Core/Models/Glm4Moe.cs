using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>
/// GLM-4.5 / 4.6 (<c>model_type</c> "glm4_moe"): GQA with q/k/v biases (o_proj has none), optional per-head QK-norm
/// (<c>use_qk_norm</c>), partial RoPE (<c>partial_rotary_factor</c>, half-split), dense SwiGLU for the first
/// <c>first_k_dense_replace</c> layers, then DeepSeek-V3's MoE: sigmoid router with correction bias, group-limited
/// top-k, renormalized weights times <c>routed_scaling_factor</c>, shared experts summed in.
/// </summary>
[ModelType("glm4_moe", "Glm4MoeForCausalLM")]
public sealed class Glm4Moe : DecoderModel
{
    private readonly RouterSpec _router;
    private readonly int _expertWidth, _shared, _denseLayers;

    public Glm4Moe(ModelConfig c, WeightSource w, IBackend b) : base(c, w, b)
    {
        var (experts, key) = MoeLayers.RoutedExperts(c);
        _router = new RouterSpec
        {
            Experts = experts, TopK = c.Require(c.NumExpertsPerTok, "num_experts_per_tok"),
            Scoring = RouterScoring.Sigmoid, NormalizeTopK = c.NormTopkProb ?? true,
            Groups = c.NGroup ?? 1, TopKGroups = c.TopkGroup ?? 1, CorrectionBias = true,
            RoutedScaling = (float)(c.RoutedScalingFactor ?? 1.0),
        };
        _router.Validate(c, key);
        _expertWidth = c.RequirePositive(c.MoeIntermediateSize, "moe_intermediate_size");
        _shared = c.NSharedExperts ?? 0;
        _denseLayers = c.FirstKDenseReplace ?? 0;
        Build();
    }

    protected override AttentionSpec AttentionSpecFor(int i) => base.AttentionSpecFor(i) with
    {
        OutBias = false,
        QkNorm = Config.UseQkNorm == true ? QkNormKind.PerHead : QkNormKind.None,
    };

    protected override IModule BuildFeedForward(int i, string prefix)
    {
        if (i < _denseLayers) return base.BuildFeedForward(i, prefix);
        string p = $"{prefix}.mlp";
        var router = Linear.Load(Weights, $"{p}.gate", Hidden, _router.Experts, false);
        var bias = Weights.GetF32($"{p}.gate.e_score_correction_bias", _router.Experts);
        var experts = ExpertSet.LoadPerExpert(Weights, $"{p}.experts", _router.Experts, _router.TopK, Hidden, _expertWidth, ExpertActivation.SwiGlu);
        var shared = _shared > 0 ? MoeLayers.SharedExperts(Weights, $"{p}.shared_experts", Hidden, _expertWidth * _shared) : null;
        return new Moe(_router, router, bias, experts, shared) { Width = _expertWidth, SharedWidth = _expertWidth * _shared, SharedCount = _shared };
    }

    protected override ArchitectureInfo Describe() => base.Describe().WithFfns(Stack);
}
