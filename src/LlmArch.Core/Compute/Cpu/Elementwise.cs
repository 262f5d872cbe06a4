using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LlmArch.Compute.Cpu;

/// <summary>Activation functions as the references define them.</summary>
public enum Activation { Silu, Gelu, GeluTanh, Relu, Identity, Sigmoid }

/// <summary>
/// Row and element kernels (norms, activations, softmax, arithmetic). Each fast kernel has a scalar twin
/// named <c>*Reference</c> with the same signature; the op-parity tests compare the two.
/// </summary>
public static unsafe class Elementwise
{
    // ---------- RMSNorm: y = x / sqrt(mean(x^2) + eps) * (offset + w) ----------

    public static void RmsNormReference(float* x, float* w, float* y, int rows, int dim, float eps, float offset)
    {
        for (int r = 0; r < rows; r++)
        {
            float* xr = x + (long)r * dim, yr = y + (long)r * dim;
            double ss = 0;
            for (int i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
            float inv = (float)(1.0 / Math.Sqrt(ss / dim + eps));
            for (int i = 0; i < dim; i++) yr[i] = xr[i] * inv * (w is null ? 1f : offset + w[i]);
        }
    }

    public static void RmsNorm(float* x, float* w, float* y, int rows, int dim, float eps, float offset)
    {
        for (int r = 0; r < rows; r++)
        {
            float* xr = x + (long)r * dim, yr = y + (long)r * dim;
            float inv = 1f / MathF.Sqrt(SumSquares(xr, dim) / dim + eps);
            int i = 0;
            if (Vector512.IsHardwareAccelerated)
            {
                var vi = Vector512.Create(inv); var vo = Vector512.Create(offset);
                for (; i + 16 <= dim; i += 16)
                {
                    var v = Vector512.Load(xr + i) * vi;
                    if (w is not null) v *= vo + Vector512.Load(w + i);
                    v.Store(yr + i);
                }
            }
            for (; i < dim; i++) yr[i] = xr[i] * inv * (w is null ? 1f : offset + w[i]);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float SumSquares(float* x, int n)
    {
        int i = 0; float s = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<float> a = default;
            for (; i + 16 <= n; i += 16) { var v = Vector512.Load(x + i); a = Vector512.FusedMultiplyAdd(v, v, a); }
            s = Vector512.Sum(a);
        }
        for (; i < n; i++) s += x[i] * x[i];
        return s;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Dot(float* a, float* b, int n) => MatMul.Dot<F32Loader>((byte*)a, b, n);

    // ---------- LayerNorm: y = (x - mean) / sqrt(var + eps) * w + b ----------

    public static void LayerNormReference(float* x, float* w, float* b, float* y, int rows, int dim, float eps)
    {
        for (int r = 0; r < rows; r++)
        {
            float* xr = x + (long)r * dim, yr = y + (long)r * dim;
            double mean = 0; for (int i = 0; i < dim; i++) mean += xr[i]; mean /= dim;
            double var = 0; for (int i = 0; i < dim; i++) { double d = xr[i] - mean; var += d * d; } var /= dim;
            double inv = 1.0 / Math.Sqrt(var + eps);
            for (int i = 0; i < dim; i++) yr[i] = (float)((xr[i] - mean) * inv) * (w is null ? 1f : w[i]) + (b is null ? 0f : b[i]);
        }
    }

    public static void LayerNorm(float* x, float* w, float* b, float* y, int rows, int dim, float eps)
    {
        for (int r = 0; r < rows; r++)
        {
            float* xr = x + (long)r * dim, yr = y + (long)r * dim;
            float mean = Sum(xr, dim) / dim;
            float var = 0;
            for (int i = 0; i < dim; i++) { float d = xr[i] - mean; var += d * d; }
            float inv = 1f / MathF.Sqrt(var / dim + eps);
            for (int i = 0; i < dim; i++) yr[i] = (xr[i] - mean) * inv * (w is null ? 1f : w[i]) + (b is null ? 0f : b[i]);
        }
    }

    public static float Sum(float* x, int n)
    {
        int i = 0; float s = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<float> a = default;
            for (; i + 16 <= n; i += 16) a += Vector512.Load(x + i);
            s = Vector512.Sum(a);
        }
        for (; i < n; i++) s += x[i];
        return s;
    }

    // ---------- activations ----------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Apply(Activation a, float x) => a switch
    {
        Activation.Silu => x / (1f + MathF.Exp(-x)),
        Activation.Gelu => (float)(0.5 * x * (1.0 + Erf(x / Math.Sqrt(2.0)))),
        Activation.GeluTanh => 0.5f * x * (1f + MathF.Tanh(0.7978845608028654f * (x + 0.044715f * x * x * x))),
        Activation.Relu => MathF.Max(0, x),
        Activation.Sigmoid => 1f / (1f + MathF.Exp(-x)),
        _ => x,
    };

    public static double Erf(double x) => SpecialFunctions.Erf(x);

    public static void ActivateReference(float* x, float* y, long n, Activation a)
    {
        for (long i = 0; i < n; i++) y[i] = Apply(a, x[i]);
    }

    public static void Activate(float* x, float* y, long n, Activation a)
    {
        long i = 0;
        if (Vector512.IsHardwareAccelerated && a is Activation.Silu or Activation.Sigmoid)
        {
            var one = Vector512<float>.One;
            for (; i + 16 <= n; i += 16)
            {
                var v = Vector512.Load(x + i);
                var s = one / (one + Vector512.Exp(-v));
                (a == Activation.Silu ? v * s : s).Store(y + i);
            }
        }
        for (; i < n; i++) y[i] = Apply(a, x[i]);
    }

    /// <summary>y = act(gate) * up (SwiGLU, GeGLU).</summary>
    public static void GatedReference(float* gate, float* up, float* y, long n, Activation a)
    {
        for (long i = 0; i < n; i++) y[i] = Apply(a, gate[i]) * up[i];
    }

    public static void Gated(float* gate, float* up, float* y, long n, Activation a)
    {
        long i = 0;
        if (Vector512.IsHardwareAccelerated && a == Activation.Silu)
        {
            var one = Vector512<float>.One;
            for (; i + 16 <= n; i += 16)
            {
                var g = Vector512.Load(gate + i);
                (g / (one + Vector512.Exp(-g)) * Vector512.Load(up + i)).Store(y + i);
            }
        }
        for (; i < n; i++) y[i] = Apply(a, gate[i]) * up[i];
    }

    // ---------- arithmetic ----------

    public static void Add(float* a, float* b, float* y, long n)
    {
        long i = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; i + 16 <= n; i += 16) (Vector512.Load(a + i) + Vector512.Load(b + i)).Store(y + i);
        for (; i < n; i++) y[i] = a[i] + b[i];
    }

    public static void Mul(float* a, float* b, float* y, long n)
    {
        long i = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; i + 16 <= n; i += 16) (Vector512.Load(a + i) * Vector512.Load(b + i)).Store(y + i);
        for (; i < n; i++) y[i] = a[i] * b[i];
    }

    /// <summary>y = a * s + b * t (scaled residual adds, weighted sums).</summary>
    public static void Axpby(float* a, float s, float* b, float t, float* y, long n)
    {
        long i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var vs = Vector512.Create(s); var vt = Vector512.Create(t);
            for (; i + 16 <= n; i += 16) (Vector512.Load(a + i) * vs + Vector512.Load(b + i) * vt).Store(y + i);
        }
        for (; i < n; i++) y[i] = a[i] * s + b[i] * t;
    }

    public static void Scale(float* x, float s, float* y, long n)
    {
        long i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var vs = Vector512.Create(s);
            for (; i + 16 <= n; i += 16) (Vector512.Load(x + i) * vs).Store(y + i);
        }
        for (; i < n; i++) y[i] = x[i] * s;
    }

    /// <summary>In-place softmax of one row (max-subtracted).</summary>
    public static void Softmax(float* x, int n)
    {
        if (n == 0) return;
        float m = float.NegativeInfinity;
        for (int i = 0; i < n; i++) m = MathF.Max(m, x[i]);
        float s = 0;
        for (int i = 0; i < n; i++) { float e = MathF.Exp(x[i] - m); x[i] = e; s += e; }
        float inv = 1f / s;
        for (int i = 0; i < n; i++) x[i] *= inv;
    }
}
