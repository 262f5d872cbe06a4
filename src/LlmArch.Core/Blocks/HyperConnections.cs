using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Blocks;

/// <summary>
/// DeepSeek-V4's manifold-constrained hyper-connections (mHC) at one sublayer site. The residual is hc parallel streams
/// packed per token as <c>[N, hc·C]</c>. From the weight-free RMS-normalized streams, one linear map gives hc pre
/// weights, hc post weights and an hc×hc mixing matrix:
/// <code>pre = σ(m·s₀ + b) + ε;   post = 2σ(m·s₁ + b);   comb = Sinkhorn(softmax(m·s₂ + b) + ε)</code>
/// (Sinkhorn: column then <c>iters</c>-1 row/column normalizations, so comb is doubly stochastic). The sublayer reads
/// Σᵢ preᵢ·Xᵢ; the streams become postⱼ·y + Σᵢ combᵢⱼ·Xᵢ. Weights <c>{prefix}_fn</c> <c>[(2+hc)·hc, hc·C]</c>,
/// <c>{prefix}_base</c>, <c>{prefix}_scale</c> <c>[3]</c>.
/// </summary>
public sealed class HyperConnection
{
    public int Streams { get; }
    private readonly int _iters;
    private readonly float _eps, _normEps;
    private readonly Linear _fn;
    private readonly Tensor _base, _scale;

    public HyperConnection(WeightSource w, string prefix, int hidden, int streams, int iters, float eps, float normEps)
    {
        if (streams < 1 || iters < 1) throw new ConfigException($"{w.Location}: hc_mult and hc_sinkhorn_iters must be positive (got {streams}, {iters})");
        Streams = streams; _iters = iters; _eps = eps; _normEps = normEps;
        int mix = (2 + streams) * streams;
        _fn = new Linear(w.Get($"{prefix}_fn", mix, (long)streams * hidden), null);
        _base = w.GetF32($"{prefix}_base", mix);
        _scale = w.GetF32($"{prefix}_scale", 3);
    }

    /// <summary>streams <c>[N, hc·C]</c> → (the sublayer input <c>[N, C]</c>, post <c>[N, hc]</c>, comb <c>[N, hc, hc]</c>).</summary>
    public (Tensor Collapsed, Tensor Post, Tensor Comb) Pre(IBackend b, Tensor streams)
    {
        int N = streams.Shape[0], hc = Streams, C = streams.Shape[1] / hc;
        var mix = _fn.Forward(b, b.RmsNorm(streams, null, _normEps));                                   // [N, (2+hc)·hc]
        Tensor Part(int start, int len, int scale) =>
            b.Binary(b.Binary(b.Slice(mix, start, len), b.View(_scale, new Shape(1), scale), BinaryOp.Mul), b.View(_base, new Shape(len), start), BinaryOp.Add);
        var pre = b.Unary(b.Unary(Part(0, hc, 0), UnaryOp.Sigmoid), UnaryOp.Affine, 1f, _eps);
        var post = b.Unary(b.Unary(Part(hc, hc, 1), UnaryOp.Sigmoid), UnaryOp.Affine, 2f);
        var comb = b.Unary(b.Softmax(b.View(Part(2 * hc, hc * hc, 2), new Shape(N, hc, hc))), UnaryOp.Affine, 1f, _eps);
        comb = Normalize(b, comb, 1);
        for (int i = 1; i < _iters; i++) comb = Normalize(b, Normalize(b, comb, 2), 1);
        var collapsed = b.BatchMatMul(b.View(pre, new Shape(N, 1, hc)), b.View(streams, new Shape(N, hc, C)), transposeB: false);
        return (b.View(collapsed, new Shape(N, C)), post, comb);
    }

    /// <summary>The new streams postⱼ·y + Σᵢ combᵢⱼ·Xᵢ, <c>[N, hc·C]</c>.</summary>
    public Tensor Post(IBackend b, Tensor streams, Tensor y, Tensor post, Tensor comb)
    {
        int N = streams.Shape[0], hc = Streams, C = streams.Shape[1] / hc;
        var mixed = b.BatchMatMul(b.Transpose(comb, 1, 2), b.View(streams, new Shape(N, hc, C)), transposeB: false);   // combᵀ·X
        b.BinaryInPlace(mixed, b.Binary(b.View(post, new Shape(N, hc, 1)), b.View(y, new Shape(N, 1, C)), BinaryOp.Mul), BinaryOp.Add);
        return b.View(mixed, new Shape(N, hc * C));
    }

    /// <summary>x / (Σ over <paramref name="axis"/> + ε): axis 1 normalizes columns (sums over rows), axis 2 rows.</summary>
    private Tensor Normalize(IBackend b, Tensor x, int axis) =>
        b.Binary(x, b.Unary(b.Reduce(x, ReduceOp.Sum, axis), UnaryOp.Affine, 1f, _eps), BinaryOp.Div);
}

/// <summary>DeepSeek-V4's final stream collapse before the last norm: Σᵢ (σ(m·s + b) + ε)ᵢ·Xᵢ with m from the RMS-normalized streams.</summary>
public sealed class HyperHead
{
    private readonly int _streams;
    private readonly float _eps, _normEps;
    private readonly Linear _fn;
    private readonly Tensor _base, _scale;

    public HyperHead(WeightSource w, string prefix, int hidden, int streams, float eps, float normEps)
    {
        _streams = streams; _eps = eps; _normEps = normEps;
        _fn = new Linear(w.Get($"{prefix}.hc_fn", streams, (long)streams * hidden), null);
        _base = w.GetF32($"{prefix}.hc_base", streams);
        _scale = w.GetF32($"{prefix}.hc_scale", 1);
    }

    public Tensor Forward(IBackend b, Tensor streams)
    {
        int N = streams.Shape[0], C = streams.Shape[1] / _streams;
        var m = b.Binary(b.Binary(_fn.Forward(b, b.RmsNorm(streams, null, _normEps)), _scale, BinaryOp.Mul), _base, BinaryOp.Add);
        var pre = b.Unary(b.Unary(m, UnaryOp.Sigmoid), UnaryOp.Affine, 1f, _eps);
        return b.View(b.BatchMatMul(b.View(pre, new Shape(N, 1, _streams)), b.View(streams, new Shape(N, _streams, C)), transposeB: false), new Shape(N, C));
    }
}
