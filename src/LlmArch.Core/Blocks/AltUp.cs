using LlmArch.Compute;

namespace LlmArch.Blocks;

/// <summary>
/// Gemma 3n's AltUp stream mixing and row statistics as compositions of generic ops (the reference and the fallback),
/// or the backend's fused forms (<see cref="IFusedAltUp"/>, <see cref="IFusedRowStats"/>) when it offers them.
/// The N streams of the residual are packed per row as <c>[rows, N*C]</c>.
/// </summary>
public static class AltUp
{
    /// <summary>out[r, j] = s[r, j] + Σ_i coefs[r, j*N + i] · s[r, i]; coefs <c>[rows, N*N]</c>.</summary>
    public static Tensor Predict(IBackend b, Tensor streams, Tensor coefs, int n)
    {
        if (b.Fused<IFusedAltUp>() is { } f) return f.AltUpPredict(streams, coefs, n);
        int rows = checked((int)streams.Shape.Rows), C = streams.Shape.Last / n;
        var s3 = b.View(streams, new Shape(rows, n, C));
        var mix = b.BatchMatMul(b.View(coefs, new Shape(rows, n, n)), s3, transposeB: false);
        return b.View(b.Binary(mix, s3, BinaryOp.Add), new Shape(rows, n * C));
    }

    /// <summary>out[r, i] = pred[r, i] + (activated[r] - pred[r, active]) · (coefs[r, i] + 1); coefs <c>[rows, N]</c>.</summary>
    public static Tensor Correct(IBackend b, Tensor predictions, Tensor activated, Tensor coefs, int n, int active)
    {
        if (b.Fused<IFusedAltUp>() is { } f) return f.AltUpCorrect(predictions, activated, coefs, n, active);
        int rows = checked((int)predictions.Shape.Rows), C = predictions.Shape.Last / n;
        var innovation = b.Binary(activated, b.Slice(predictions, active * C, C), BinaryOp.Sub);
        var scale = b.View(b.Unary(coefs, UnaryOp.Affine, 1f, 1f), new Shape(rows, n, 1));
        var delta = b.Binary(b.View(innovation, new Shape(rows, 1, C)), scale, BinaryOp.Mul);
        return b.View(b.Binary(delta, b.View(predictions, new Shape(rows, n, C)), BinaryOp.Add), new Shape(rows, n * C));
    }

    /// <summary>streams[r, i] + x[r] for streams i in [first, N) (the others unchanged); x <c>[rows, C]</c>.</summary>
    public static Tensor AddToStreams(IBackend b, Tensor streams, Tensor x, int n, int first)
    {
        int rows = checked((int)streams.Shape.Rows), C = streams.Shape.Last / n;
        var tail = b.View(b.Slice(streams, first * C, (n - first) * C), new Shape(rows, n - first, C));
        var added = b.View(b.Binary(tail, b.View(x, new Shape(rows, 1, C)), BinaryOp.Add), new Shape(rows, (n - first) * C));
        return first == 0 ? added : b.Concat(b.Slice(streams, 0, first * C), added);
    }

    /// <summary>Per row: x · rms(reference) / sqrt(max(mean(x²), eps)).</summary>
    public static Tensor MatchMagnitude(IBackend b, Tensor x, Tensor reference, float eps)
    {
        if (b.Fused<IFusedRowStats>() is { } f) return f.MatchMagnitude(x, reference, eps);
        var target = b.Unary(b.Reduce(reference, ReduceOp.MeanSquare), UnaryOp.Sqrt);
        var mag = b.Unary(b.Unary(b.Reduce(x, ReduceOp.MeanSquare), UnaryOp.Clamp, eps, float.PositiveInfinity), UnaryOp.Sqrt);
        return b.Binary(b.Binary(x, target, BinaryOp.Mul), mag, BinaryOp.Div);
    }

    /// <summary>Per row: relu(x - (mean(x) + std(x) · stdMultiplier)), population std.</summary>
    public static Tensor GaussianTopK(IBackend b, Tensor x, float stdMultiplier)
    {
        if (b.Fused<IFusedRowStats>() is { } f) return f.GaussianTopK(x, stdMultiplier);
        var mean = b.Reduce(x, ReduceOp.Mean);
        var std = b.Unary(b.Reduce(b.Binary(x, mean, BinaryOp.Sub), ReduceOp.MeanSquare), UnaryOp.Sqrt);
        var cutoff = b.Binary(mean, b.Unary(std, UnaryOp.Affine, stdMultiplier), BinaryOp.Add);
        return b.Unary(b.Binary(x, cutoff, BinaryOp.Sub), UnaryOp.Relu);
    }
}
