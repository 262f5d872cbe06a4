using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Blocks;

/// <summary>
/// OLMo hybrid's Gated DeltaNet (the flash-linear-attention layout): separate q/k/v projections with short convs
/// (<see cref="QkvShortConv"/>), decay g = -exp(A_log)·softplus(a_proj(x) + dt_bias), β = sigmoid(b_proj(x)) scaled
/// by 2 when negative eigenvalues are allowed (β in [0, 2]: the state can reflect, not only forget), the gated delta
/// rule (<see cref="DeltaRule"/>, fused when the backend has it), a gated RMSNorm norm(o)·w·silu(g_proj(x)) per value
/// head (eps 1e-5 as FLA's fused norm) and o_proj. x <c>[N, C]</c> → <c>[N, C]</c>.
/// </summary>
public sealed class OlmoDeltaNet : IRecurrentBlock
{
    public QkvShortConv Qkv { get; }
    public bool NegativeEigenvalues { get; }
    public int ChunkSize { get; init; } = 64;
    private readonly Linear _a, _b, _g, _o;
    private readonly Tensor _negExpALog, _dtBias;
    private readonly RmsNorm _norm;

    public OlmoDeltaNet(WeightSource w, string prefix, int hidden, int keyHeads, int keyDim, int valueHeads, int valueDim, int kernel, bool negativeEigenvalues)
    {
        Qkv = new QkvShortConv(w, prefix, hidden, keyHeads, keyDim, valueHeads, valueDim, kernel);
        NegativeEigenvalues = negativeEigenvalues;
        _a = Linear.Load(w, $"{prefix}.a_proj", hidden, valueHeads, false);
        _b = Linear.Load(w, $"{prefix}.b_proj", hidden, valueHeads, false);
        _g = Linear.Load(w, $"{prefix}.g_proj", hidden, Qkv.ValueTotal, false);
        _o = Linear.Load(w, $"{prefix}.o_proj", Qkv.ValueTotal, hidden, false);
        _negExpALog = w.Place(HybridWeightTransforms.Map(w.GetF32Host($"{prefix}.A_log", valueHeads), a => -MathF.Exp(a)));
        _dtBias = w.GetF32($"{prefix}.dt_bias", valueHeads);
        _norm = RmsNorm.Load(w, $"{prefix}.o_norm.weight", valueDim, 1e-5f);
    }

    /// <summary>Per slot: the conv window and the <c>[Hv, Dk, Dv]</c> delta-rule state.</summary>
    public long StateValues => Qkv.ConvStateValues + (long)Qkv.ValueHeads * Qkv.KeyDim * Qkv.ValueDim;

    public RecurrentState CreateState(IBackend b, int slots) =>
        new(b, slots, Qkv.StatePart, ("recurrent_state", new Shape(Qkv.ValueHeads, Qkv.KeyDim, Qkv.ValueDim)));

    public Tensor Forward(IBackend b, Tensor x, RecurrentState state, StepBatch batch)
    {
        int N = x.Shape[0], Hv = Qkv.ValueHeads, Dv = Qkv.ValueDim;
        var (q, k, v) = Qkv.Forward(b, x, state.Parts[0], batch);
        var beta = b.Unary(_b.Forward(b, x), UnaryOp.Sigmoid);
        if (NegativeEigenvalues) beta = b.Unary(beta, UnaryOp.Affine, 2f);
        var g = b.Binary(b.Unary(b.Binary(_a.Forward(b, x), _dtBias, BinaryOp.Add), UnaryOp.Softplus), _negExpALog, BinaryOp.Mul);
        var o = b.Fused<IFusedDeltaRule>() is { } f
            ? f.GatedDeltaRule(q, k, v, g, beta, state.Parts[1], batch, ChunkSize)
            : DeltaRule.Composed(b, q, k, v, g, beta, state.Parts[1], batch);
        var normed = _norm.Forward(b, b.View(o, new Shape(N * Hv, Dv)));
        var gated = b.Glu(b.View(_g.Forward(b, x), normed.Shape), normed, ExpertActivation.SwiGlu);
        return _o.Forward(b, b.View(gated, new Shape(N, Hv * Dv)));
    }
}
