namespace LlmArch.Compute.Cpu;

public sealed unsafe partial class CpuBackend : IFusedAltUp, IFusedRowStats
{
    public Tensor AltUpPredict(Tensor streams, Tensor coefs, int n)
    {
        int c = StreamWidth(streams, n);
        long rows = streams.Shape.Rows;
        if (coefs.Shape.Last != n * n || coefs.Shape.Rows != rows) throw new ArgumentException($"AltUp coefs {coefs.Shape} for {rows} rows of {n} streams");
        var y = Empty(streams.Shape);
        AltUpKernels.Predict(P(streams), P(coefs), P(y), rows, n, c);
        return y;
    }

    public Tensor AltUpCorrect(Tensor predictions, Tensor activated, Tensor coefs, int n, int active)
    {
        int c = StreamWidth(predictions, n);
        long rows = predictions.Shape.Rows;
        if (activated.Shape.Last != c || activated.Shape.Rows != rows || coefs.Shape.Last != n || coefs.Shape.Rows != rows || (uint)active >= (uint)n)
            throw new ArgumentException($"AltUp correct: predictions {predictions.Shape}, activated {activated.Shape}, coefs {coefs.Shape}, active {active}");
        var y = Empty(predictions.Shape);
        AltUpKernels.Correct(P(predictions), P(activated), P(coefs), P(y), rows, n, c, active);
        return y;
    }

    public Tensor MatchMagnitude(Tensor x, Tensor reference, float eps)
    {
        if (x.Shape.Last != reference.Shape.Last || x.Shape.Rows != reference.Shape.Rows) throw new ArgumentException($"magnitude of {x.Shape} vs {reference.Shape}");
        var y = Empty(x.Shape);
        AltUpKernels.MatchMagnitude(P(x), P(reference), P(y), x.Shape.Rows, x.Shape.Last, eps);
        return y;
    }

    public Tensor GaussianTopK(Tensor x, float stdMultiplier)
    {
        var y = Empty(x.Shape);
        AltUpKernels.GaussianTopK(P(x), P(y), x.Shape.Rows, x.Shape.Last, stdMultiplier);
        return y;
    }

    private static int StreamWidth(Tensor streams, int n)
    {
        if (n <= 0 || streams.Shape.Last % n != 0) throw new ArgumentException($"{streams.Shape} does not hold {n} streams");
        return streams.Shape.Last / n;
    }
}

/// <summary>AltUp and Gaussian top-k kernels, each with a plain scalar reference of the same signature.</summary>
public static unsafe class AltUpKernels
{
    public static void PredictReference(float* s, float* coefs, float* y, long rows, int n, int c)
    {
        for (long r = 0; r < rows; r++)
            for (int j = 0; j < n; j++)
                for (int d = 0; d < c; d++)
                {
                    float acc = 0;
                    for (int i = 0; i < n; i++) acc += coefs[r * n * n + j * n + i] * s[(r * n + i) * c + d];
                    y[(r * n + j) * c + d] = s[(r * n + j) * c + d] + acc;
                }
    }

    public static void Predict(float* s, float* coefs, float* y, long rows, int n, int c)
    {
        for (long r = 0; r < rows; r++)
            for (int j = 0; j < n; j++)
            {
                float* yr = y + (r * n + j) * c;
                new Span<float>(yr, c).Clear();
                for (int i = 0; i < n; i++) Elementwise.Axpby(s + (r * n + i) * c, coefs[r * n * n + j * n + i], yr, 1f, yr, c);
                Elementwise.Add(yr, s + (r * n + j) * c, yr, c);
            }
    }

    public static void CorrectReference(float* pred, float* act, float* coefs, float* y, long rows, int n, int c, int active)
    {
        for (long r = 0; r < rows; r++)
            for (int i = 0; i < n; i++)
                for (int d = 0; d < c; d++)
                {
                    float innovation = act[r * c + d] - pred[(r * n + active) * c + d];
                    y[(r * n + i) * c + d] = innovation * (coefs[r * n + i] + 1f) + pred[(r * n + i) * c + d];
                }
    }

    public static void Correct(float* pred, float* act, float* coefs, float* y, long rows, int n, int c, int active)
    {
        Span<float> innovation = c <= 8192 ? stackalloc float[c] : new float[c];
        fixed (float* inn = innovation)
            for (long r = 0; r < rows; r++)
            {
                Elementwise.Axpby(act + r * c, 1f, pred + (r * n + active) * c, -1f, inn, c);
                for (int i = 0; i < n; i++)
                    Elementwise.Axpby(inn, coefs[r * n + i] + 1f, pred + (r * n + i) * c, 1f, y + (r * n + i) * c, c);
            }
    }

    public static void MatchMagnitudeReference(float* x, float* reference, float* y, long rows, int c, float eps)
    {
        for (long r = 0; r < rows; r++)
        {
            double st = 0, sx = 0;
            for (int d = 0; d < c; d++) { st += (double)reference[r * c + d] * reference[r * c + d]; sx += (double)x[r * c + d] * x[r * c + d]; }
            float target = MathF.Sqrt((float)(st / c)), mag = MathF.Sqrt(MathF.Max((float)(sx / c), eps));
            for (int d = 0; d < c; d++) y[r * c + d] = x[r * c + d] * target / mag;
        }
    }

    public static void MatchMagnitude(float* x, float* reference, float* y, long rows, int c, float eps)
    {
        for (long r = 0; r < rows; r++)
        {
            float target = MathF.Sqrt(Elementwise.SumSquares(reference + r * c, c) / c);
            float mag = MathF.Sqrt(MathF.Max(Elementwise.SumSquares(x + r * c, c) / c, eps));
            for (int d = 0; d < c; d++) y[r * c + d] = x[r * c + d] * target / mag;
        }
    }

    public static void GaussianTopKReference(float* x, float* y, long rows, int c, float mult)
    {
        for (long r = 0; r < rows; r++)
        {
            double mean = 0; for (int d = 0; d < c; d++) mean += x[r * c + d]; mean /= c;
            double v = 0; for (int d = 0; d < c; d++) { double e = x[r * c + d] - mean; v += e * e; }
            float cutoff = (float)mean + (float)Math.Sqrt(v / c) * mult;
            for (int d = 0; d < c; d++) y[r * c + d] = MathF.Max(0f, x[r * c + d] - cutoff);
        }
    }

    public static void GaussianTopK(float* x, float* y, long rows, int c, float mult)
    {
        for (long r = 0; r < rows; r++)
        {
            float* xr = x + r * c;
            float mean = Elementwise.Sum(xr, c) / c;
            float v = 0;
            for (int d = 0; d < c; d++) { float e = xr[d] - mean; v += e * e; }
            float cutoff = mean + MathF.Sqrt(v / c) * mult;
            for (int d = 0; d < c; d++) y[r * c + d] = MathF.Max(0f, xr[d] - cutoff);
        }
    }
}
