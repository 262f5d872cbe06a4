using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>
/// Qwen3-MoE (<c>model_type</c> "qwen3_moe", Qwen3-30B-A3B / 235B-A22B): Qwen3's attention (per-head QK-norm, GQA)
/// with a MoE feed-forward: softmax router over all experts, top-k, renormalized when <c>norm_topk_prob</c>,
/// no shared expert. Layer i is sparse unless it is in <c>mlp_only_layers</c> or (i + 1) is not a multiple of
/// <c>decoder_sparse_step</c>; dense layers use <c>intermediate_size</c>.
/// </summary>
[ModelType("qwen3_moe", "Qwen3MoeForCausalLM")]
public sealed class Qwen3Moe : DecoderModel
{
    private readonly RouterSpec _router;
    private readonly int _expertWidth;

    public Qwen3Moe(ModelConfig c, WeightSource w, IBackend b) : base(c, w, b)
    {
        var (experts, key) = MoeLayers.RoutedExperts(c);
        _router = new RouterSpec
        {
            Experts = experts, TopK = c.Require(c.NumExpertsPerTok, "num_experts_per_tok"),
            Scoring = RouterScoring.Softmax, NormalizeTopK = c.NormTopkProb ?? false,
        };
        _router.Validate(c, key);
        _expertWidth = c.RequirePositive(c.MoeIntermediateSize, "moe_intermediate_size");
        Build();
    }

    private bool IsSparse(int i)
    {
        int step = Config.DecoderSparseStep ?? 1;
        if (step <= 0) throw Config.Invalid("decoder_sparse_step", $"must be positive (got {step})");
        return !(Config.MlpOnlyLayers ?? []).Contains(i) && (i + 1) % step == 0;
    }

    protected override AttentionSpec AttentionSpecFor(int i) => base.AttentionSpecFor(i) with { QkNorm = QkNormKind.PerHead };

    protected override IModule BuildFeedForward(int i, string prefix)
    {
        if (!IsSparse(i)) return base.BuildFeedForward(i, prefix);
        string p = $"{prefix}.mlp";
        var router = Linear.Load(Weights, $"{p}.gate", Hidden, _router.Experts, false);
        var experts = ExpertSet.LoadPerExpert(Weights, $"{p}.experts", _router.Experts, _router.TopK, Hidden, _expertWidth, ExpertActivation.SwiGlu);
        return new Moe(_router, router, null, experts) { Width = _expertWidth };
    }

    protected override ArchitectureInfo Describe() => base.Describe().WithFfns(Stack);
}
