using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Blocks;

/// <summary>
/// Kimi Delta Attention (Kimi Linear's KDA): the gated delta rule with a per-channel forget gate. q/k/v projections with
/// short convs (<see cref="QkvShortConv"/>), a low-rank forget gate g = -exp(A_log_h)·softplus(f_b(f_a(x)) + dt_bias) per
/// key channel, β = sigmoid(b_proj(x)), q and k L2-normalized (q also / sqrt(D)); per token, for S <c>[H, Dk, Dv]</c>:
/// <code>S = diag(exp(g))·S;   S += k ⊗ β(v - Sᵀk);   o = Sᵀq</code>
/// then a sigmoid-gated RMSNorm norm(o)·w·sigmoid(g_b(g_a(x))) per head and o_proj. The rule is the composition
/// <see cref="KdaRule.Composed"/> (token by token) or the backend's fused form (chunked for prefill).
/// x <c>[N, C]</c> → <c>[N, C]</c>.
/// </summary>
public sealed class KimiDeltaAttention : IRecurrentBlock
{
    public QkvShortConv Qkv { get; }
    public int ChunkSize { get; init; } = 64;
    private readonly Linear _fa, _fb, _ga, _gb, _b, _o;
    private readonly Tensor _negExpALog, _dtBias;
    private readonly RmsNorm _norm;

    public KimiDeltaAttention(WeightSource w, string prefix, int hidden, int heads, int headDim, int kernel, float eps)
    {
        Qkv = new QkvShortConv(w, prefix, hidden, heads, headDim, heads, headDim, kernel);
        int total = heads * headDim;
        _fa = Linear.Load(w, $"{prefix}.f_a_proj", hidden, headDim, false);
        _fb = Linear.Load(w, $"{prefix}.f_b_proj", headDim, total, false);
        _ga = Linear.Load(w, $"{prefix}.g_a_proj", hidden, headDim, false);
        _gb = Linear.Load(w, $"{prefix}.g_b_proj", headDim, total, false);
        _b = Linear.Load(w, $"{prefix}.b_proj", hidden, heads, false);
        _o = Linear.Load(w, $"{prefix}.o_proj", total, hidden, false);
        // A_log is stored [1, 1, H, 1] (the reference broadcasts it); a flat [H] is accepted too.
        bool flat = w is CheckpointWeights cw && cw.Contains($"{prefix}.A_log") && cw.Info($"{prefix}.A_log").Shape.Length == 1;
        var aLog = flat ? w.GetF32Host($"{prefix}.A_log", heads) : w.GetF32Host($"{prefix}.A_log", 1, 1, heads, 1);
        _negExpALog = w.Place(HybridWeightTransforms.Map(aLog, a => -MathF.Exp(a)).Reshape(new Shape(heads, 1)));
        _dtBias = w.GetF32($"{prefix}.dt_bias", total);
        _norm = RmsNorm.Load(w, $"{prefix}.o_norm.weight", headDim, eps);
    }

    public long StateValues => Qkv.ConvStateValues + (long)Qkv.ValueHeads * Qkv.KeyDim * Qkv.ValueDim;

    public RecurrentState CreateState(IBackend b, int slots) =>
        new(b, slots, Qkv.StatePart, ("recurrent_state", new Shape(Qkv.ValueHeads, Qkv.KeyDim, Qkv.ValueDim)));

    public Tensor Forward(IBackend b, Tensor x, RecurrentState state, StepBatch batch)
    {
        int N = x.Shape[0], H = Qkv.ValueHeads, D = Qkv.KeyDim;
        var (q, k, v) = Qkv.Forward(b, x, state.Parts[0], batch);
        var f = b.View(b.Unary(b.Binary(_fb.Forward(b, _fa.Forward(b, x)), _dtBias, BinaryOp.Add), UnaryOp.Softplus), new Shape(N, H, D));
        var g = b.Binary(f, _negExpALog, BinaryOp.Mul);                                   // [N, H, Dk] log decay
        var beta = b.Unary(_b.Forward(b, x), UnaryOp.Sigmoid);                             // [N, H]
        var o = b.Fused<IFusedKda>() is { } fk
            ? fk.KdaRule(q, k, v, g, beta, state.Parts[1], batch, ChunkSize)
            : KdaRule.Composed(b, q, k, v, g, beta, state.Parts[1], batch);
        var normed = _norm.Forward(b, b.View(o, new Shape(N * H, Qkv.ValueDim)));
        var gate = b.Unary(b.View(_gb.Forward(b, _ga.Forward(b, x)), normed.Shape), UnaryOp.Sigmoid);
        return _o.Forward(b, b.View(b.Binary(normed, gate, BinaryOp.Mul), new Shape(N, H * Qkv.ValueDim)));
    }
}

/// <summary>
/// KDA's delta rule with per-channel decay as a composition of generic ops, token by token per sequence (the reference
/// form and the fallback of a backend without <see cref="IFusedKda"/>).
/// </summary>
public static class KdaRule
{
    /// <summary>
    /// q, k <c>[N, H, Dk]</c> (L2-normalized inside, q also / sqrt(Dk)), v <c>[N, H, Dv]</c>, g <c>[N, H, Dk]</c> log decays,
    /// beta <c>[N, H]</c>, state <c>[Slots, H, Dk, Dv]</c> updated in place: y <c>[N, H, Dv]</c>.
    /// </summary>
    public static Tensor Composed(IBackend b, Tensor q, Tensor k, Tensor v, Tensor g, Tensor beta, Tensor state, StepBatch batch)
    {
        int N = q.Shape[0], H = q.Shape[1], Dk = q.Shape[2], Dv = v.Shape[2];
        var qn = DeltaRule.L2Norm(b, q, 1f / MathF.Sqrt(Dk));
        var kn = DeltaRule.L2Norm(b, k);
        var decay = b.Unary(g, UnaryOp.Exp);
        var y = b.Empty(new Shape(N, H, Dv));
        long per = (long)H * Dk * Dv;
        for (int s = 0; s < batch.Sequences; s++)
        {
            var S = b.View(state, new Shape(H, Dk, Dv), batch.Slot[s] * per);
            for (int t = 0; t < batch.Count[s]; t++)
            {
                int n = batch.Offset[s] + t;
                var kt = b.View(kn, new Shape(H, 1, Dk), (long)n * H * Dk);
                var qt = b.View(qn, new Shape(H, 1, Dk), (long)n * H * Dk);
                var vt = b.View(v, new Shape(H, 1, Dv), (long)n * H * Dv);
                var S1 = b.Binary(S, b.View(decay, new Shape(H, Dk, 1), (long)n * H * Dk), BinaryOp.Mul);
                var mem = b.BatchMatMul(kt, S1, transposeB: false);                                      // Sᵀk [H, 1, Dv]
                var delta = b.Binary(b.Binary(vt, mem, BinaryOp.Sub), b.View(beta, new Shape(H, 1, 1), (long)n * H), BinaryOp.Mul);
                b.BinaryInPlace(S1, b.BatchMatMul(b.View(kt, new Shape(H, Dk, 1)), delta, transposeB: false), BinaryOp.Add);
                b.Copy(S1, S);
                b.Copy(b.BatchMatMul(qt, S, transposeB: false), b.View(y, new Shape(H, 1, Dv), (long)n * H * Dv));
            }
        }
        return y;
    }
}
