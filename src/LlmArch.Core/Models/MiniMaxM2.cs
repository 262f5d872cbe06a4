using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>
/// MiniMax-M2 (<c>model_type</c> "minimax_m2"): full attention on every layer with RMSNorm over all heads of q and
/// of k together (<c>qk_norm_type</c> "per_layer"), partial RoPE (<c>rotary_dim</c>, or <c>partial_rotary_factor</c>),
/// and a MoE on every layer with Mixtral-style names (<c>block_sparse_moe.experts.N.w1/w3/w2</c>, experts of
/// <c>intermediate_size</c>): sigmoid router, <c>e_score_correction_bias</c> for selection, renormalized top-k weights,
/// no shared expert.
/// </summary>
[ModelType("minimax_m2", "MiniMaxM2ForCausalLM")]
public sealed class MiniMaxM2 : DecoderModel
{
    private readonly RouterSpec _router;
    private readonly int _expertWidth;
    private readonly RopeTable _rope;

    public MiniMaxM2(ModelConfig c, WeightSource w, IBackend b) : base(c, w, b)
    {
        var (experts, key) = MoeLayers.RoutedExperts(c);
        _router = new RouterSpec
        {
            Experts = experts, TopK = c.Require(c.NumExpertsPerTok, "num_experts_per_tok"),
            Scoring = (c.ScoringFunc ?? "sigmoid") == "sigmoid" ? RouterScoring.Sigmoid
                : throw c.Invalid("scoring_func", $"'{c.ScoringFunc}' is not supported (sigmoid)"),
            NormalizeTopK = true, CorrectionBias = true,
        };
        _router.Validate(c, key);
        var sizes = c.IntermediateSize ?? throw c.Missing("intermediate_size");
        _expertWidth = sizes.Length == 1 && sizes[0] > 0 ? sizes[0] : throw c.Invalid("intermediate_size", "must be one positive integer (the expert width)");
        int? rotary = c.Get<int?>("rotary_dim");
        _rope = RotaryEmbedding.Create(c, c.RopeFor(null), HeadDim, rotary);
        Build();
    }

    protected override RopeTable? RopeFor(int layer, string? layerType) => _rope;

    protected override AttentionSpec AttentionSpecFor(int i) => base.AttentionSpecFor(i) with
    {
        QkvBias = false, OutBias = false,
        QkNorm = (Config.Get<string>("qk_norm_type") ?? "per_layer") == "per_layer" ? QkNormKind.Whole : QkNormKind.PerHead,
    };

    protected override IModule BuildFeedForward(int i, string prefix)
    {
        string p = $"{prefix}.block_sparse_moe";
        var router = Linear.Load(Weights, $"{p}.gate", Hidden, _router.Experts, false);
        var bias = Weights.GetF32($"{p}.e_score_correction_bias", _router.Experts);
        var experts = ExpertSet.LoadPerExpert(Weights, $"{p}.experts", _router.Experts, _router.TopK, Hidden, _expertWidth,
            ExpertActivation.SwiGlu, gate: "w1", up: "w3", down: "w2");
        return new Moe(_router, router, bias, experts) { Width = _expertWidth };
    }

    protected override ArchitectureInfo Describe() => base.Describe().WithFfns(Stack);
}
