using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Blocks;

/// <summary>Shape of one Gated DeltaNet layer (Qwen3-Next <c>linear_*</c> keys).</summary>
public sealed record DeltaNetSpec
{
    public required int Hidden { get; init; }
    public required int KeyHeads { get; init; }
    public required int ValueHeads { get; init; }
    public required int KeyDim { get; init; }
    public required int ValueDim { get; init; }
    public required int ConvKernel { get; init; }
    public float NormEps { get; init; } = 1e-6f;
    /// <summary>Tokens per chunk of the parallel prefill form (the reference's 64).</summary>
    public int ChunkSize { get; init; } = 64;
    /// <summary>Qwen3.5's layout: separate in_proj_qkv ([q | k | v] rows), in_proj_z, in_proj_b, in_proj_a instead of the
    /// head-grouped in_proj_qkvz / in_proj_ba of Qwen3-Next.</summary>
    public bool SeparateProjections { get; init; }

    public int KeyTotal => KeyHeads * KeyDim;
    public int ValueTotal => ValueHeads * ValueDim;
    /// <summary>Channels of the convolution: q, k and v concatenated.</summary>
    public int ConvDim => 2 * KeyTotal + ValueTotal;
    /// <summary>Constant per-sequence state: K-1 conv inputs plus the [Hv, Dk, Dv] recurrent state.</summary>
    public long StateValues => (long)(ConvKernel - 1) * ConvDim + (long)ValueHeads * KeyDim * ValueDim;
}

/// <summary>
/// Per-slot tensors of a recurrent layer, each <c>[Slots, ...]</c> (Gated DeltaNet: the conv window and the delta-rule
/// state), allocated by the backend; constant in sequence length.
/// </summary>
public sealed class RecurrentState : IRecurrentState
{
    public IReadOnlyList<Tensor> Parts { get; }
    public int Slots { get; }

    public RecurrentState(IBackend b, int slots, params (string Name, Shape PerSlot)[] parts)
    {
        Slots = slots;
        Parts = parts.Select(p => b.Allocate(DType.F32, WithSlots(slots, p.PerSlot), p.Name)).ToArray();
    }

    private RecurrentState(IReadOnlyList<Tensor> parts, int slots) { Parts = parts; Slots = slots; }

    private static Shape WithSlots(int slots, Shape s) => s.Rank switch
    {
        1 => new Shape(slots, s[0]),
        2 => new Shape(slots, s[0], s[1]),
        3 => new Shape(slots, s[0], s[1], s[2]),
        _ => throw new ArgumentException($"per-slot state {s} has rank > 3"),
    };

    public long Bytes => Parts.Sum(p => p.ByteCount);

    private static Tensor SlotView(IBackend b, Tensor t, int slot)
    {
        long per = t.Count / t.Shape[0];
        return b.View(t, new Shape(checked((int)per)), slot * per);
    }

    public void CopySlot(IBackend b, int src, IRecurrentState dst, int dstSlot)
    {
        var d = (RecurrentState)dst;
        for (int i = 0; i < Parts.Count; i++) b.Copy(SlotView(b, Parts[i], src), SlotView(b, d.Parts[i], dstSlot));
    }

    public void Reset(IBackend b, int slot)
    {
        foreach (var p in Parts) b.Fill(SlotView(b, p, slot), 0f);
    }

    public IRecurrentState CreateLike(IBackend b, int slots) =>
        new RecurrentState(Parts.Select(p => b.Allocate(p.DType, WithSlots(slots, PerSlot(p.Shape)), p.Name)).ToArray(), slots);

    private static Shape PerSlot(Shape s) => s.Rank switch
    {
        2 => new Shape(s[1]),
        3 => new Shape(s[1], s[2]),
        _ => new Shape(s[1], s[2], s[3]),
    };

    public void Free(IBackend b) { foreach (var p in Parts) b.Free(p); }
}

/// <summary>
/// Gated DeltaNet (Qwen3-Next <c>linear_attn</c>): fused in_proj_qkvz / in_proj_ba (stored head-grouped: per key
/// head q, k, then its value heads' v and z; regrouped into [q | k | v | z] rows once at load), a causal depthwise
/// conv1d + SiLU over [q | k | v] with a rolling state, L2-normalized q/k, the gated delta rule with decay
/// g = -exp(A_log)·softplus(a + dt_bias) and β = sigmoid(b), a gated RMSNorm norm(o)·w·silu(z) per value head,
/// and out_proj. Prefill (T &gt; 1) runs the chunked form; decode runs the recurrence. x <c>[B, T, C]</c>.
/// </summary>
public sealed class GatedDeltaNet
{
    public DeltaNetSpec Spec { get; }
    private readonly Linear? _qkvz, _ba, _qkv, _z, _b, _a;
    private readonly Linear _out;
    private readonly Tensor _conv, _negExpALog, _dtBias;
    private readonly RmsNorm _norm;

    public GatedDeltaNet(WeightSource w, string prefix, DeltaNetSpec s)
    {
        Spec = s;
        int nk = s.KeyHeads, nv = s.ValueHeads, dk = s.KeyDim, dv = s.ValueDim, r = nv / nk;
        string loc = w.Location;
        if (nk <= 0 || nv <= 0 || dk <= 0 || dv <= 0)
            throw new ConfigException($"{loc}: linear attention at {prefix} needs positive linear_num_key_heads/linear_num_value_heads/linear_key_head_dim/linear_value_head_dim (got {nk}/{nv}/{dk}/{dv})");
        if (nv % nk != 0)
            throw new ConfigException($"{loc}: linear_num_value_heads {nv} is not a multiple of linear_num_key_heads {nk}");
        if (s.ConvKernel < 1) throw new ConfigException($"{loc}: linear_conv_kernel_dim must be positive (got {s.ConvKernel})");
        string convName = $"{prefix}.conv1d.weight";
        if (w.HasData && w is CheckpointWeights cw && cw.Contains(convName))
        {
            var shape = cw.Info(convName).Shape;
            if (shape.Length == 3 && shape[0] == s.ConvDim && shape[1] == 1 && shape[2] != s.ConvKernel)
                throw new CheckpointFormatException($"{loc}: tensor '{convName}' has kernel size {shape[2]} but linear_conv_kernel_dim is {s.ConvKernel}");
        }
        if (s.SeparateProjections)
        {
            _qkv = Linear.Load(w, $"{prefix}.in_proj_qkv", s.Hidden, s.ConvDim, false);
            _z = Linear.Load(w, $"{prefix}.in_proj_z", s.Hidden, s.ValueTotal, false);
            _b = Linear.Load(w, $"{prefix}.in_proj_b", s.Hidden, nv, false);
            _a = Linear.Load(w, $"{prefix}.in_proj_a", s.Hidden, nv, false);
        }
        else (_qkvz, _ba) = LoadFused(w, prefix, s);
        _conv = w.Place(w.GetF32Host(convName, s.ConvDim, 1, s.ConvKernel).Reshape(new Shape(s.ConvDim, s.ConvKernel)));
        // The decay's -exp(A_log), derived once at load.
        _negExpALog = w.Place(HybridWeightTransforms.Map(w.GetF32Host($"{prefix}.A_log", nv), a => -MathF.Exp(a)));
        _dtBias = w.GetF32($"{prefix}.dt_bias", nv);
        _norm = RmsNorm.Load(w, $"{prefix}.norm.weight", dv, s.NormEps);
        _out = Linear.Load(w, $"{prefix}.out_proj", nv * dv, s.Hidden, false);
    }

    /// <summary>Qwen3-Next's head-grouped in_proj_qkvz / in_proj_ba, regrouped into [q | k | v | z] and [b | a] rows at load.</summary>
    private static (Linear Qkvz, Linear Ba) LoadFused(WeightSource w, string prefix, DeltaNetSpec s)
    {
        int nk = s.KeyHeads, nv = s.ValueHeads, dk = s.KeyDim, dv = s.ValueDim, r = nv / nk;
        // Rows of in_proj_qkvz per key head g: [q_g (dk) | k_g (dk) | v_g (r·dv) | z_g (r·dv)] → [q | k | v | z].
        int group = 2 * dk + 2 * r * dv;
        var order = new List<int>(nk * group);
        for (int part = 0; part < 4; part++)
            for (int g = 0; g < nk; g++)
            {
                int off = part switch { 0 => 0, 1 => dk, 2 => 2 * dk, _ => 2 * dk + r * dv };
                int len = part < 2 ? dk : r * dv;
                for (int i = 0; i < len; i++) order.Add(g * group + off + i);
            }
        var qkvz = w.GetHost($"{prefix}.in_proj_qkvz.weight", [nk * group, s.Hidden]);
        var fused = new Linear(w.Place(HybridWeightTransforms.PermuteRows(qkvz, order.ToArray())), null);
        // Rows of in_proj_ba per key head g: [b_g (r) | a_g (r)] → [b | a].
        var baOrder = new int[2 * nv];
        for (int g = 0; g < nk; g++)
            for (int i = 0; i < r; i++) { baOrder[g * r + i] = g * 2 * r + i; baOrder[nv + g * r + i] = g * 2 * r + r + i; }
        var ba = new Linear(w.Place(HybridWeightTransforms.PermuteRows(w.GetHost($"{prefix}.in_proj_ba.weight", [2 * nv, s.Hidden]), baOrder)), null);
        return (fused, ba);
    }

    public RecurrentState CreateState(IBackend b, int slots) =>
        new(b, slots, ("conv_state", new Shape(Spec.ConvKernel - 1, Spec.ConvDim)), ("recurrent_state", new Shape(Spec.ValueHeads, Spec.KeyDim, Spec.ValueDim)));

    /// <summary>x <c>[N, C]</c> → <c>[N, C]</c>, advancing each sequence's state.</summary>
    public Tensor Forward(IBackend b, Tensor x, RecurrentState state, StepBatch batch)
    {
        var s = Spec;
        int N = x.Shape[0];
        Tensor qkv, z, bRaw, aRaw;
        if (_qkvz is not null)
        {
            var proj = _qkvz.Forward(b, x); // [N, 2Kt + 2Vt]
            var ba = _ba!.Forward(b, x);    // [N, 2Hv]
            (qkv, z) = (b.Slice(proj, 0, s.ConvDim), b.Slice(proj, s.ConvDim, s.ValueTotal));
            (bRaw, aRaw) = (b.Slice(ba, 0, s.ValueHeads), b.Slice(ba, s.ValueHeads, s.ValueHeads));
        }
        else (qkv, z, bRaw, aRaw) = (_qkv!.Forward(b, x), _z!.Forward(b, x), _b!.Forward(b, x), _a!.Forward(b, x));
        var mixed = b.CausalConv1d(qkv, _conv, state.Parts[0], batch, silu: true);
        var q = b.View(b.Slice(mixed, 0, s.KeyTotal), new Shape(N, s.KeyHeads, s.KeyDim));
        var k = b.View(b.Slice(mixed, s.KeyTotal, s.KeyTotal), new Shape(N, s.KeyHeads, s.KeyDim));
        var v = b.View(b.Slice(mixed, 2 * s.KeyTotal, s.ValueTotal), new Shape(N, s.ValueHeads, s.ValueDim));
        var beta = b.Unary(bRaw, UnaryOp.Sigmoid);
        // g = -exp(A_log) · softplus(a + dt_bias)
        var g = b.Binary(b.Unary(b.Binary(aRaw, _dtBias, BinaryOp.Add), UnaryOp.Softplus), _negExpALog, BinaryOp.Mul);
        var o = b.Fused<IFusedDeltaRule>() is { } f
            ? f.GatedDeltaRule(q, k, v, g, beta, state.Parts[1], batch, s.ChunkSize)
            : DeltaRule.Composed(b, q, k, v, g, beta, state.Parts[1], batch);
        // Gated RMSNorm per value head: norm(o)·w·silu(z).
        var normed = _norm.Forward(b, b.View(o, new Shape(N * s.ValueHeads, s.ValueDim)));
        var gated = b.Glu(b.View(z, normed.Shape), normed, ExpertActivation.SwiGlu);
        return _out.Forward(b, b.View(gated, new Shape(N, s.ValueTotal)));
    }
}

/// <summary>
/// The gated delta rule as a composition of generic ops, token by token per sequence (the reference form and the
/// fallback for a backend without <see cref="IFusedDeltaRule"/>): with q, k L2-normalized (q also / sqrt(Dk)),
/// S = e^g S; S += k ⊗ β(v - Sᵀk); o = Sᵀq, for S <c>[Hv, Dk, Dv]</c> of the sequence's slot.
/// </summary>
public static class DeltaRule
{
    /// <summary>x / sqrt(Σx² + 1e-6) over the last dim (the FLA l2norm), as an RMSNorm with eps scaled by the width.</summary>
    public static Tensor L2Norm(IBackend b, Tensor x, float scale = 1f)
    {
        int d = x.Shape.Last;
        return b.Unary(b.RmsNorm(x, null, 1e-6f / d), UnaryOp.Affine, scale / MathF.Sqrt(d));
    }

    public static Tensor Composed(IBackend b, Tensor q, Tensor k, Tensor v, Tensor g, Tensor beta, Tensor state, StepBatch batch)
    {
        int N = q.Shape[0], Hk = q.Shape[1], Dk = q.Shape[2], Hv = v.Shape[1], Dv = v.Shape[2], r = Hv / Hk;
        var qn = L2Norm(b, q, 1f / MathF.Sqrt(Dk));
        var kn = L2Norm(b, k);
        if (r > 1)
        {
            // Value head h reads key head h / r: repeat each key head r times.
            var zeros = b.Empty(new Shape(N, Hk, r, Dk));
            b.Fill(zeros, 0f);
            qn = b.View(b.Binary(zeros, b.View(qn, new Shape(N, Hk, 1, Dk)), BinaryOp.Add), new Shape(N, Hv, Dk));
            kn = b.View(b.Binary(zeros, b.View(kn, new Shape(N, Hk, 1, Dk)), BinaryOp.Add), new Shape(N, Hv, Dk));
        }
        var decay = b.Unary(g, UnaryOp.Exp);       // [N, Hv]
        var y = b.Empty(new Shape(N, Hv, Dv));
        long per = (long)Hv * Dk * Dv;
        for (int s = 0; s < batch.Sequences; s++)
        {
            var S = b.View(state, new Shape(Hv, Dk, Dv), batch.Slot[s] * per);
            for (int t = 0; t < batch.Count[s]; t++)
            {
                int n = batch.Offset[s] + t;
                var kt = b.View(kn, new Shape(Hv, 1, Dk), (long)n * Hv * Dk);
                var qt = b.View(qn, new Shape(Hv, 1, Dk), (long)n * Hv * Dk);
                var vt = b.View(v, new Shape(Hv, 1, Dv), (long)n * Hv * Dv);
                var S1 = b.Binary(S, b.View(decay, new Shape(Hv, 1, 1), (long)n * Hv), BinaryOp.Mul);
                var mem = b.BatchMatMul(kt, S1, transposeB: false);                                   // Sᵀk [Hv, 1, Dv]
                var delta = b.Binary(b.Binary(vt, mem, BinaryOp.Sub), b.View(beta, new Shape(Hv, 1, 1), (long)n * Hv), BinaryOp.Mul);
                var S2 = b.Binary(S1, b.BatchMatMul(b.View(kt, new Shape(Hv, Dk, 1)), delta, transposeB: false), BinaryOp.Add);
                b.Copy(S2, S);
                b.Copy(b.BatchMatMul(qt, S, transposeB: false), b.View(y, new Shape(Hv, 1, Dv), (long)n * Hv * Dv));
            }
        }
        return y;
    }
}
