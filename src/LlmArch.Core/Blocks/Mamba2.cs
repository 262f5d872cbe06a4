using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Blocks;

/// <summary>Shape of one Mamba2 mixer (Nemotron-H <c>mamba_*</c>, <c>ssm_state_size</c>, <c>n_groups</c> keys).</summary>
public sealed record Mamba2Spec
{
    public required int Hidden { get; init; }
    /// <summary>mamba_num_heads H.</summary>
    public required int Heads { get; init; }
    /// <summary>mamba_head_dim P.</summary>
    public required int HeadDim { get; init; }
    /// <summary>ssm_state_size N.</summary>
    public required int StateSize { get; init; }
    /// <summary>n_groups G: B and C are shared by H/G heads each.</summary>
    public required int Groups { get; init; }
    public required int ConvKernel { get; init; }
    public bool ConvBias { get; init; } = true;
    public bool ProjBias { get; init; }
    public float NormEps { get; init; } = 1e-5f;
    /// <summary>dt is clamped below at this (the reference's time_step_min); 0 = no clamp.</summary>
    public float TimeStepMin { get; init; }
    /// <summary>Tokens per chunk of the chunked scan (the config's chunk_size).</summary>
    public int ChunkSize { get; init; } = 256;

    public int Inner => Heads * HeadDim;
    /// <summary>Channels of the conv: x, B and C.</summary>
    public int ConvDim => Inner + 2 * Groups * StateSize;
    /// <summary>Per slot: K-1 conv inputs plus the <c>[H, P, N]</c> SSM state.</summary>
    public long StateValues => (long)(ConvKernel - 1) * ConvDim + (long)Heads * HeadDim * StateSize;
}

/// <summary>
/// The Mamba2 mixer (SSD) of Nemotron-H: in_proj → [gate (H·P) | x, B, C (conv channels) | dt (H)], a causal depthwise
/// conv (+ bias) and SiLU over [x | B | C], dt = max(softplus(dt + dt_bias), time_step_min), A = -exp(A_log), the
/// selective scan per head h (B and C shared by the heads of a group)
/// <code>S = exp(dt·A)·S + dt·x ⊗ B;   y = S·C + D·x</code>
/// with S <c>[H, P, N]</c> per slot, then a grouped gated RMSNorm norm(y·silu(gate)) (groups of H·P/G channels) and
/// out_proj. Prefill runs the chunked (SSD) form, decode the recurrence (<see cref="Mamba2Scan"/>); both are
/// compositions of generic ops, or the backend's fused form. x <c>[N, C]</c> → <c>[N, C]</c>.
/// </summary>
public sealed class Mamba2Mixer : IRecurrentBlock
{
    public Mamba2Spec Spec { get; }
    private readonly Linear _in, _out;
    private readonly Tensor _conv, _negExpALog, _dtBias, _d, _normWeight;
    private readonly Tensor? _convBias;
    private readonly Mamba2Scan.Tables _tables;
    /// <summary>Forces the token-by-token recurrence for prefill too (tests compare it with the chunked form).</summary>
    public bool AlwaysRecurrent { get; set; }

    public Mamba2Mixer(WeightSource w, string prefix, Mamba2Spec s, Mamba2Scan.Tables tables)
    {
        Spec = s; _tables = tables;
        if (s.Heads <= 0 || s.HeadDim <= 0 || s.StateSize <= 0 || s.Groups <= 0 || s.Heads % s.Groups != 0)
            throw new ConfigException($"{w.Location}: Mamba2 at {prefix} needs positive heads/head dim/state size and n_groups dividing mamba_num_heads (got {s.Heads}/{s.HeadDim}/{s.StateSize}/{s.Groups})");
        if (s.ConvKernel < 2) throw new ConfigException($"{w.Location}: conv_kernel must be at least 2 (got {s.ConvKernel})");
        _in = Linear.Load(w, $"{prefix}.in_proj", s.Hidden, s.Inner + s.ConvDim + s.Heads, s.ProjBias);
        _out = Linear.Load(w, $"{prefix}.out_proj", s.Inner, s.Hidden, s.ProjBias);
        _conv = w.Place(w.GetF32Host($"{prefix}.conv1d.weight", s.ConvDim, 1, s.ConvKernel).Reshape(new Shape(s.ConvDim, s.ConvKernel)));
        _convBias = s.ConvBias ? w.GetF32($"{prefix}.conv1d.bias", s.ConvDim) : null;
        _negExpALog = w.Place(HybridWeightTransforms.Map(w.GetF32Host($"{prefix}.A_log", s.Heads), a => -MathF.Exp(a)));
        _dtBias = w.GetF32($"{prefix}.dt_bias", s.Heads);
        _d = w.GetF32($"{prefix}.D", s.Heads);
        _normWeight = w.GetF32($"{prefix}.norm.weight", s.Inner);
    }

    public RecurrentState CreateState(IBackend b, int slots) =>
        new(b, slots, ("conv_state", new Shape(Spec.ConvKernel - 1, Spec.ConvDim)), ("ssm_state", new Shape(Spec.Heads, Spec.HeadDim, Spec.StateSize)));

    public Tensor Forward(IBackend b, Tensor x, RecurrentState state, StepBatch batch)
    {
        var s = Spec;
        int N = x.Shape[0], H = s.Heads, P = s.HeadDim, G = s.Groups, Ns = s.StateSize;
        var proj = _in.Forward(b, x);
        var gate = b.Slice(proj, 0, s.Inner);
        var xbc = b.CausalConv1d(b.Slice(proj, s.Inner, s.ConvDim), _conv, state.Parts[0], batch, silu: false);
        if (_convBias is not null) xbc = b.Binary(xbc, _convBias, BinaryOp.Add);
        xbc = b.Unary(xbc, UnaryOp.Silu);
        var xs = b.View(b.Slice(xbc, 0, s.Inner), new Shape(N, H, P));
        var bs = Mamba2Scan.PerHead(b, b.Slice(xbc, s.Inner, G * Ns), N, G, H, Ns);
        var cs = Mamba2Scan.PerHead(b, b.Slice(xbc, s.Inner + G * Ns, G * Ns), N, G, H, Ns);
        var dt = b.Unary(b.Binary(b.Slice(proj, s.Inner + s.ConvDim, H), _dtBias, BinaryOp.Add), UnaryOp.Softplus);
        if (s.TimeStepMin > 0) dt = b.Unary(dt, UnaryOp.Clamp, s.TimeStepMin, float.PositiveInfinity);
        var y = Mamba2Scan.Run(b, xs, dt, _negExpALog, bs, cs, state.Parts[1], batch, AlwaysRecurrent ? 0 : s.ChunkSize, _tables);
        y = b.Binary(y, b.Binary(xs, b.View(_d, new Shape(H, 1)), BinaryOp.Mul), BinaryOp.Add);    // D skip
        // Grouped gated RMSNorm: norm over groups of Inner/G channels of y·silu(gate), times the weight.
        var gated = b.Glu(gate, b.View(y, new Shape(N, s.Inner)), ExpertActivation.SwiGlu);
        var normed = b.View(b.RmsNorm(b.View(gated, new Shape(N * G, s.Inner / G)), null, s.NormEps), new Shape(N, s.Inner));
        return _out.Forward(b, b.Binary(normed, _normWeight, BinaryOp.Mul));
    }
}

/// <summary>
/// The Mamba2 selective scan as compositions of generic ops, per sequence of a ragged batch: the token-by-token
/// recurrence (decode, and the reference) and the chunked SSD form (prefill: within a chunk the scan is a masked
/// matrix product with segment decays, across chunks the state carries). A backend may replace both with
/// <see cref="IFusedMamba2Scan"/>.
/// </summary>
public static class Mamba2Scan
{
    /// <summary>Constant tables of the chunked form for chunks of up to <see cref="Chunk"/> tokens: a lower-triangular ones
    /// matrix (cumulative sums as a matmul) and the additive causal mask (0 on and below the diagonal, -inf above).</summary>
    public sealed class Tables
    {
        public int Chunk { get; }
        public Tensor LowerOnes { get; }
        public Tensor CausalMask { get; }

        public Tables(WeightSource w, int chunk)
        {
            Chunk = chunk;
            var ones = new float[chunk * chunk];
            var mask = new float[chunk * chunk];
            for (int i = 0; i < chunk; i++)
                for (int j = 0; j < chunk; j++) { ones[i * chunk + j] = j <= i ? 1f : 0f; mask[i * chunk + j] = j <= i ? 0f : float.NegativeInfinity; }
            LowerOnes = w.Place(FrontierWeightTransforms.FromValues("tril", ones, new Shape(chunk, chunk)));
            CausalMask = w.Place(FrontierWeightTransforms.FromValues("causal_mask", mask, new Shape(chunk, chunk)));
        }

        /// <summary>The leading <c>[L, L]</c> block of a table.</summary>
        public static Tensor Block(IBackend b, Tensor t, int L) => t.Shape[0] == L ? t : b.Slice(b.Slice(t, 0, L, 0), 0, L, 1);
    }

    /// <summary>Group rows <c>[N, G·Ns]</c> repeated for the H/G heads of each group: <c>[N, H, Ns]</c>.</summary>
    public static Tensor PerHead(IBackend b, Tensor grouped, int N, int G, int H, int Ns)
    {
        var g = b.View(grouped, new Shape(N, G, 1, Ns));
        if (H == G) return b.View(grouped, new Shape(N, H, Ns));
        var zeros = b.Empty(new Shape(N, G, H / G, Ns));
        b.Fill(zeros, 0f);
        return b.View(b.Binary(zeros, g, BinaryOp.Add), new Shape(N, H, Ns));
    }

    /// <summary>
    /// x <c>[N, H, P]</c>, dt <c>[N, H]</c>, a = -exp(A_log) <c>[H]</c>, B and C <c>[N, H, Ns]</c>, state <c>[Slots, H, P, Ns]</c>
    /// (updated in place per sequence): y <c>[N, H, P]</c> without the D skip. chunk 0 runs the recurrence.
    /// </summary>
    public static Tensor Run(IBackend b, Tensor x, Tensor dt, Tensor a, Tensor bs, Tensor cs, Tensor state, StepBatch batch, int chunk, Tables tables)
    {
        if (b.Fused<IFusedMamba2Scan>() is { } f) return f.Mamba2Scan(x, dt, a, bs, cs, state, batch, chunk);
        int N = x.Shape[0], H = x.Shape[1], P = x.Shape[2], Ns = bs.Shape[2];
        var y = b.Empty(new Shape(N, H, P));
        var xdt = b.Binary(x, b.View(dt, new Shape(N, H, 1)), BinaryOp.Mul);      // dt·x
        var adt = b.Binary(dt, a, BinaryOp.Mul);                                   // dt·A (log decay)
        var decay = chunk <= 0 || batch.MaxCount == 1 ? b.Unary(adt, UnaryOp.Exp) : null;
        long per = (long)H * P * Ns;
        for (int s = 0; s < batch.Sequences; s++)
        {
            var S = b.View(state, new Shape(H, P, Ns), batch.Slot[s] * per);
            int o = batch.Offset[s], T = batch.Count[s];
            if (chunk <= 0 || T == 1) Recurrent(b, xdt, decay ??= b.Unary(adt, UnaryOp.Exp), bs, cs, S, y, o, T);
            else Chunked(b, xdt, adt, bs, cs, S, y, o, T, Math.Min(chunk, tables.Chunk), tables);
        }
        return y;
    }

    private static void Recurrent(IBackend b, Tensor xdt, Tensor decay, Tensor bs, Tensor cs, Tensor S, Tensor y, int o, int T)
    {
        int H = xdt.Shape[1], P = xdt.Shape[2], Ns = bs.Shape[2];
        for (int t = o; t < o + T; t++)
        {
            var xt = b.View(xdt, new Shape(H, P, 1), (long)t * H * P);
            var bt = b.View(bs, new Shape(H, 1, Ns), (long)t * H * Ns);
            var ct = b.View(cs, new Shape(H, Ns, 1), (long)t * H * Ns);
            var S1 = b.Binary(S, b.View(decay, new Shape(H, 1, 1), (long)t * H), BinaryOp.Mul);
            b.BinaryInPlace(S1, b.BatchMatMul(xt, bt, transposeB: false), BinaryOp.Add);          // + dt·x ⊗ B
            b.Copy(S1, S);
            b.Copy(b.BatchMatMul(S, ct, transposeB: false), b.View(y, new Shape(H, P, 1), (long)t * H * P)); // S·C
        }
    }

    private static void Chunked(IBackend b, Tensor xdt, Tensor adt, Tensor bs, Tensor cs, Tensor S, Tensor y, int o, int T, int chunk, Tables tables)
    {
        int H = xdt.Shape[1], P = xdt.Shape[2], Ns = bs.Shape[2];
        // Head-major views of this sequence: [H, T, ...].
        var X = b.Transpose(b.View(xdt, new Shape(T, H, P), (long)o * H * P), 0, 1);
        var Bh = b.Transpose(b.View(bs, new Shape(T, H, Ns), (long)o * H * Ns), 0, 1);
        var Ch = b.Transpose(b.View(cs, new Shape(T, H, Ns), (long)o * H * Ns), 0, 1);
        var A = b.Transpose(b.View(adt, new Shape(T, H), (long)o * H), 0, 1);                           // [H, T]
        for (int t0 = 0; t0 < T; t0 += chunk)
        {
            int L = Math.Min(chunk, T - t0);
            var Xc = b.Slice(X, t0, L, 1); var Bc = b.Slice(Bh, t0, L, 1); var Cc = b.Slice(Ch, t0, L, 1);
            var cum = b.MatMul(b.Slice(A, t0, L, 1), Tables.Block(b, tables.LowerOnes, L));             // [H, L] inclusive cumsum
            var cum3 = b.View(cum, new Shape(H, L, 1));
            // Segment decays exp(cum_t - cum_s) for s <= t, 0 above the diagonal.
            var seg = b.Unary(b.Binary(b.Binary(cum3, b.View(cum, new Shape(H, 1, L)), BinaryOp.Sub), Tables.Block(b, tables.CausalMask, L), BinaryOp.Add), UnaryOp.Exp);
            var M = b.Binary(b.BatchMatMul(Cc, Bc, transposeB: true), seg, BinaryOp.Mul);              // [H, L, L]
            var yc = b.BatchMatMul(M, Xc, transposeB: false);                                          // intra-chunk [H, L, P]
            var fromState = b.BatchMatMul(Cc, S, transposeB: true);                                    // C·Sᵀ [H, L, P]
            b.BinaryInPlace(yc, b.Binary(fromState, b.Unary(cum3, UnaryOp.Exp), BinaryOp.Mul), BinaryOp.Add);
            b.Copy(b.Transpose(yc, 0, 1), b.View(y, new Shape(L, H, P), (long)(o + t0) * H * P));
            // Carry: S = exp(cum_end)·S + Σ_s exp(cum_end - cum_s)·x_s ⊗ B_s.
            var last = b.Slice(cum, L - 1, 1, 1);                                                       // [H, 1]
            var toEnd = b.Unary(b.Binary(last, cum, BinaryOp.Sub), UnaryOp.Exp);                       // [H, L]
            var xw = b.Binary(Xc, b.View(toEnd, new Shape(H, L, 1)), BinaryOp.Mul);
            var S1 = b.Binary(S, b.View(b.Unary(last, UnaryOp.Exp), new Shape(H, 1, 1)), BinaryOp.Mul);
            b.BinaryInPlace(S1, b.BatchMatMul(b.Transpose(xw, 1, 2), Bc, transposeB: false), BinaryOp.Add);
            b.Copy(S1, S);
        }
    }
}
