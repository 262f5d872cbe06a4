using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Blocks;

/// <summary>
/// MiniMax's lightning attention (MiniMax-01 / M1): linear attention with a fixed per-head exponential decay.
/// q, k, v = silu(qkv_proj(x)) split per head ([q | k | v] of each head); with r = exp(-slope) per head and a
/// <c>[H, D, D]</c> state per slot, token by token
/// <code>KV = r·KV + kᵀv;   o = q·KV</code>
/// (no softmax, no 1/sqrt(D) scale). Prefill runs the block form of the reference (blocks of <c>block_size</c>: intra-block
/// (QKᵀ ⊙ decay) V plus the decayed inter-block state, then the state carried with block decays); decode runs the
/// recurrence; both are compositions of generic ops. Then RMSNorm over all heads (eps 1e-6), times
/// sigmoid(output_gate(x)), and out_proj. The slopes are derived from the config, not learned:
/// slope_h = 2^(-8(h+1)/H) · (1 - layer/(layers - 1 + 1e-5) + 1e-5).
/// </summary>
public sealed class LightningAttention : IRecurrentBlock
{
    public int Heads { get; }
    public int HeadDim { get; }
    public int BlockSize { get; }
    /// <summary>Forces the token-by-token recurrence for prefill too (tests compare it with the block form).</summary>
    public bool AlwaysRecurrent { get; set; }
    private readonly Linear _qkv, _gate, _out;
    private readonly RmsNorm _norm;
    // Decay tables for blocks of up to BlockSize tokens: exp(-s(i+1)) [H, B], exp(-s(B-1-j)) [H, B], the intra-block
    // decay exp(-s(i-j)) masked to i >= j [H, B, B], and the one-step decay exp(-s) [H].
    private readonly Tensor _queryDecay, _keyDecay, _diagonalDecay, _stepDecay;
    public float[] Slopes { get; }

    public LightningAttention(WeightSource w, string prefix, int hidden, int heads, int headDim, int blockSize, int layer, int layers)
    {
        if (heads <= 0 || headDim <= 0 || blockSize <= 0) throw new ConfigException($"{w.Location}: lightning attention at {prefix} needs positive heads, head_dim and block_size (got {heads}/{headDim}/{blockSize})");
        Heads = heads; HeadDim = headDim; BlockSize = blockSize;
        _qkv = Linear.Load(w, $"{prefix}.qkv_proj", hidden, 3 * heads * headDim, false);
        _gate = Linear.Load(w, $"{prefix}.output_gate", hidden, heads * headDim, false);
        _out = Linear.Load(w, $"{prefix}.out_proj", heads * headDim, hidden, false);
        _norm = RmsNorm.Load(w, $"{prefix}.norm.weight", heads * headDim, 1e-6f);
        Slopes = SlopeRates(heads, layer, layers);
        int B = blockSize;
        var q = new float[heads * B]; var k = new float[heads * B]; var d = new float[heads * B * B]; var step = new float[heads];
        for (int h = 0; h < heads; h++)
        {
            float s = Slopes[h];
            step[h] = MathF.Exp(-s);
            for (int i = 0; i < B; i++)
            {
                q[h * B + i] = MathF.Exp(-s * (i + 1));
                k[h * B + i] = MathF.Exp(-s * (B - 1 - i));
                for (int j = 0; j < B; j++) d[(h * B + i) * B + j] = i >= j ? MathF.Exp(-(s * (i - j))) : 0f;
            }
        }
        _queryDecay = w.Place(FrontierWeightTransforms.FromValues($"{prefix}.query_decay", q, new Shape(heads, B)));
        _keyDecay = w.Place(FrontierWeightTransforms.FromValues($"{prefix}.key_decay", k, new Shape(heads, B)));
        _diagonalDecay = w.Place(FrontierWeightTransforms.FromValues($"{prefix}.diagonal_decay", d, new Shape(heads, B, B)));
        _stepDecay = w.Place(FrontierWeightTransforms.FromValues($"{prefix}.step_decay", step, new Shape(heads)));
    }

    /// <summary>The reference's per-head slopes for layer <paramref name="layer"/> of <paramref name="layers"/> (float32 as torch computes them).</summary>
    public static float[] SlopeRates(int heads, int layer, int layers)
    {
        double baseRate = 1.0 / Math.Pow(2, 8.0 / heads);
        float factor = (float)(1 - layer / (layers - 1 + 1e-5) + 1e-5);
        var r = new float[heads];
        for (int h = 0; h < heads; h++) r[h] = (float)Math.Pow(baseRate, h + 1) * factor;
        return r;
    }

    public long StateValues => (long)Heads * HeadDim * HeadDim;

    public RecurrentState CreateState(IBackend b, int slots) => new(b, slots, ("kv_state", new Shape(Heads, HeadDim, HeadDim)));

    public Tensor Forward(IBackend b, Tensor x, RecurrentState state, StepBatch batch)
    {
        int N = x.Shape[0], H = Heads, D = HeadDim;
        var qkv = b.View(b.Unary(_qkv.Forward(b, x), UnaryOp.Silu), new Shape(N, H, 3 * D));
        var q = b.Slice(qkv, 0, D); var k = b.Slice(qkv, D, D); var v = b.Slice(qkv, 2 * D, D);   // [N, H, D]
        var o = b.Fused<IFusedLightning>() is { } f
            ? f.LightningAttention(q, k, v, _stepDecay, state.Parts[0], batch, AlwaysRecurrent ? 0 : BlockSize)
            : Composed(b, q, k, v, state.Parts[0], batch);
        var normed = _norm.Forward(b, b.View(o, new Shape(N, H * D)));
        return _out.Forward(b, b.Binary(normed, b.Unary(_gate.Forward(b, x), UnaryOp.Sigmoid), BinaryOp.Mul));
    }

    /// <summary>The composition: per sequence, the block form for prompts, the recurrence for single tokens (or always, with <see cref="AlwaysRecurrent"/>).</summary>
    public Tensor Composed(IBackend b, Tensor q, Tensor k, Tensor v, Tensor state, StepBatch batch)
    {
        int N = q.Shape[0], H = Heads, D = HeadDim;
        var y = b.Empty(new Shape(N, H, D));
        long per = (long)H * D * D;
        for (int s = 0; s < batch.Sequences; s++)
        {
            var S = b.View(state, new Shape(H, D, D), batch.Slot[s] * per);
            int o = batch.Offset[s], T = batch.Count[s];
            if (AlwaysRecurrent || T == 1)
                for (int t = o; t < o + T; t++)
                {
                    var kt = b.View(k, new Shape(H, D, 1), (long)t * H * D);
                    var vt = b.View(v, new Shape(H, 1, D), (long)t * H * D);
                    var S1 = b.Binary(S, b.View(_stepDecay, new Shape(H, 1, 1)), BinaryOp.Mul);
                    b.BinaryInPlace(S1, b.BatchMatMul(kt, vt, transposeB: false), BinaryOp.Add);
                    b.Copy(S1, S);
                    b.Copy(b.BatchMatMul(b.View(q, new Shape(H, 1, D), (long)t * H * D), S, transposeB: false), b.View(y, new Shape(H, 1, D), (long)t * H * D));
                }
            else Blocks(b, q, k, v, S, y, o, T);
        }
        return y;
    }

    private void Blocks(IBackend b, Tensor q, Tensor k, Tensor v, Tensor S, Tensor y, int o, int T)
    {
        int H = Heads, D = HeadDim, B = BlockSize;
        var Q = b.Transpose(b.View(q, new Shape(T, H, D), (long)o * H * D), 0, 1);   // [H, T, D]
        var K = b.Transpose(b.View(k, new Shape(T, H, D), (long)o * H * D), 0, 1);
        var V = b.Transpose(b.View(v, new Shape(T, H, D), (long)o * H * D), 0, 1);
        for (int t0 = 0; t0 < T; t0 += B)
        {
            int L = Math.Min(B, T - t0);
            var Qc = b.Slice(Q, t0, L, 1); var Kc = b.Slice(K, t0, L, 1); var Vc = b.Slice(V, t0, L, 1);
            var qd = b.View(b.Slice(_queryDecay, 0, L), new Shape(H, L, 1));                      // exp(-s(i+1))
            var kd = b.View(b.Slice(_keyDecay, B - L, L), new Shape(H, L, 1));                  // exp(-s(L-1-j))
            var diag = L == B ? _diagonalDecay : b.Slice(b.Slice(_diagonalDecay, 0, L, 1), 0, L, 2);
            var intra = b.BatchMatMul(b.Binary(b.BatchMatMul(Qc, Kc, transposeB: true), diag, BinaryOp.Mul), Vc, transposeB: false);
            var inter = b.BatchMatMul(b.Binary(Qc, qd, BinaryOp.Mul), S, transposeB: false);
            b.BinaryInPlace(intra, inter, BinaryOp.Add);
            b.Copy(b.Transpose(intra, 0, 1), b.View(y, new Shape(L, H, D), (long)(o + t0) * H * D));
            var blockDecay = b.View(b.Slice(_queryDecay, L - 1, 1), new Shape(H, 1, 1));       // exp(-sL)
            var S1 = b.Binary(S, blockDecay, BinaryOp.Mul);
            b.BinaryInPlace(S1, b.BatchMatMul(b.Transpose(b.Binary(Kc, kd, BinaryOp.Mul), 1, 2), Vc, transposeB: false), BinaryOp.Add);
            b.Copy(S1, S);
        }
    }
}
