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

    public static void RmsNorm(float* x, float* w, float* y, int rows, int dim, float eps, float offset) =>
        RmsNorm(x, w, y, rows, dim, eps, offset, CpuIsa.Current);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RmsNorm(float* x, float* w, float* y, int rows, int dim, float eps, float offset, Isa isa)
    {
        for (int r = 0; r < rows; r++)
        {
            float* xr = x + (long)r * dim, yr = y + (long)r * dim;
            float inv = 1f / MathF.Sqrt(SumSquares(xr, dim, isa) / dim + eps);
            int i = 0;
            if (isa == Isa.Avx512)
            {
                var vi = Vector512.Create(inv); var vo = Vector512.Create(offset);
                for (; i + 16 <= dim; i += 16)
                {
                    var v = Vector512.Load(xr + i) * vi;
                    if (w is not null) v *= vo + Vector512.Load(w + i);
                    v.Store(yr + i);
                }
            }
            else if (isa >= Isa.Avx2)
            {
                var vi = Vector256.Create(inv); var vo = Vector256.Create(offset);
                for (; i + 8 <= dim; i += 8)
                {
                    var v = Vector256.Load(xr + i) * vi;
                    if (w is not null) v *= vo + Vector256.Load(w + i);
                    v.Store(yr + i);
                }
            }
            for (; i < dim; i++) yr[i] = xr[i] * inv * (w is null ? 1f : offset + w[i]);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float SumSquares(float* x, int n) => SumSquares(x, n, CpuIsa.Current);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float SumSquares(float* x, int n, Isa isa)
    {
        int i = 0; float s = 0;
        if (isa == Isa.Avx512)
        {
            Vector512<float> a = default, b = default;
            for (; i + 32 <= n; i += 32)
            {
                var v = Vector512.Load(x + i); a = Vector512.FusedMultiplyAdd(v, v, a);
                var u = Vector512.Load(x + i + 16); b = Vector512.FusedMultiplyAdd(u, u, b);
            }
            for (; i + 16 <= n; i += 16) { var v = Vector512.Load(x + i); a = Vector512.FusedMultiplyAdd(v, v, a); }
            s = Vector512.Sum(a + b);
        }
        else if (isa >= Isa.Avx2)
        {
            Vector256<float> a = default, b = default;
            for (; i + 16 <= n; i += 16)
            {
                var v = Vector256.Load(x + i); a = Vector256.FusedMultiplyAdd(v, v, a);
                var u = Vector256.Load(x + i + 8); b = Vector256.FusedMultiplyAdd(u, u, b);
            }
            for (; i + 8 <= n; i += 8) { var v = Vector256.Load(x + i); a = Vector256.FusedMultiplyAdd(v, v, a); }
            s = Vector256.Sum(a + b);
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

    public static void LayerNorm(float* x, float* w, float* b, float* y, int rows, int dim, float eps) =>
        LayerNorm(x, w, b, y, rows, dim, eps, CpuIsa.Current);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void LayerNorm(float* x, float* w, float* b, float* y, int rows, int dim, float eps, Isa isa)
    {
        for (int r = 0; r < rows; r++)
        {
            float* xr = x + (long)r * dim, yr = y + (long)r * dim;
            float mean = Sum(xr, dim, isa) / dim;
            // Two passes (mean, then centred squares) as the reference, for accuracy.
            int i = 0; float var = 0;
            if (isa >= Isa.Avx2)
            {
                var vm = Vector256.Create(mean); Vector256<float> acc = default;
                for (; i + 8 <= dim; i += 8) { var d = Vector256.Load(xr + i) - vm; acc = Vector256.FusedMultiplyAdd(d, d, acc); }
                var = Vector256.Sum(acc);
            }
            for (; i < dim; i++) { float d = xr[i] - mean; var += d * d; }
            float inv = 1f / MathF.Sqrt(var / dim + eps);
            i = 0;
            if (isa >= Isa.Avx2)
            {
                var vm = Vector256.Create(mean); var vi = Vector256.Create(inv);
                for (; i + 8 <= dim; i += 8)
                {
                    var v = (Vector256.Load(xr + i) - vm) * vi;
                    if (w is not null) v *= Vector256.Load(w + i);
                    if (b is not null) v += Vector256.Load(b + i);
                    v.Store(yr + i);
                }
            }
            for (; i < dim; i++) yr[i] = (xr[i] - mean) * inv * (w is null ? 1f : w[i]) + (b is null ? 0f : b[i]);
        }
    }

    public static float Sum(float* x, int n) => Sum(x, n, CpuIsa.Current);

    public static float Sum(float* x, int n, Isa isa)
    {
        int i = 0; float s = 0;
        if (isa == Isa.Avx512)
        {
            Vector512<float> a = default;
            for (; i + 16 <= n; i += 16) a += Vector512.Load(x + i);
            s = Vector512.Sum(a);
        }
        else if (isa >= Isa.Avx2)
        {
            Vector256<float> a = default;
            for (; i + 8 <= n; i += 8) a += Vector256.Load(x + i);
            s = Vector256.Sum(a);
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

    public static void Activate(float* x, float* y, long n, Activation a) => Activate(x, y, n, a, CpuIsa.Current);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Activate(float* x, float* y, long n, Activation a, Isa isa)
    {
        long i = 0;
        bool vec = a is Activation.Silu or Activation.Sigmoid or Activation.GeluTanh or Activation.Relu or Activation.Identity;
        if (vec && isa == Isa.Avx512)
            for (; i + 16 <= n; i += 16) Act(Vector512.Load(x + i), a).Store(y + i);
        else if (vec && isa >= Isa.Avx2)
            for (; i + 8 <= n; i += 8) Act(Vector256.Load(x + i), a).Store(y + i);
        for (; i < n; i++) y[i] = Apply(a, x[i]);
    }

    // gelu_tanh(x) = 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3): no cancellation near -inf.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Act(Vector512<float> v, Activation a)
    {
        var one = Vector512<float>.One;
        switch (a)
        {
            case Activation.Silu: return v / (one + Vector512.Exp(-v));
            case Activation.Sigmoid: return one / (one + Vector512.Exp(-v));
            case Activation.Relu: return Vector512.ConditionalSelect(Vector512.LessThan(v, Vector512<float>.Zero), Vector512<float>.Zero, v); // NaN stays NaN
            case Activation.GeluTanh:
            {
                var u = Vector512.Create(2 * 0.7978845608028654f) * (v + Vector512.Create(0.044715f) * v * v * v);
                return v / (one + Vector512.Exp(-u));
            }
            default: return v;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Act(Vector256<float> v, Activation a)
    {
        var one = Vector256<float>.One;
        switch (a)
        {
            case Activation.Silu: return v / (one + Vector256.Exp(-v));
            case Activation.Sigmoid: return one / (one + Vector256.Exp(-v));
            case Activation.Relu: return Vector256.ConditionalSelect(Vector256.LessThan(v, Vector256<float>.Zero), Vector256<float>.Zero, v);
            case Activation.GeluTanh:
            {
                var u = Vector256.Create(2 * 0.7978845608028654f) * (v + Vector256.Create(0.044715f) * v * v * v);
                return v / (one + Vector256.Exp(-u));
            }
            default: return v;
        }
    }

    /// <summary>y = act(gate) * up (SwiGLU, GeGLU).</summary>
    public static void GatedReference(float* gate, float* up, float* y, long n, Activation a)
    {
        for (long i = 0; i < n; i++) y[i] = Apply(a, gate[i]) * up[i];
    }

    public static void Gated(float* gate, float* up, float* y, long n, Activation a) => Gated(gate, up, y, n, a, CpuIsa.Current);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Gated(float* gate, float* up, float* y, long n, Activation a, Isa isa)
    {
        long i = 0;
        bool vec = a is Activation.Silu or Activation.Sigmoid or Activation.GeluTanh or Activation.Relu or Activation.Identity;
        if (vec && isa == Isa.Avx512)
            for (; i + 16 <= n; i += 16) (Act(Vector512.Load(gate + i), a) * Vector512.Load(up + i)).Store(y + i);
        else if (vec && isa >= Isa.Avx2)
            for (; i + 8 <= n; i += 8) (Act(Vector256.Load(gate + i), a) * Vector256.Load(up + i)).Store(y + i);
        for (; i < n; i++) y[i] = Apply(a, gate[i]) * up[i];
    }

    // ---------- arithmetic (the Isa.Scalar path is each op's reference) ----------

    public static void Add(float* a, float* b, float* y, long n) => Add(a, b, y, n, CpuIsa.Current);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Add(float* a, float* b, float* y, long n, Isa isa)
    {
        long i = 0;
        if (isa == Isa.Avx512) for (; i + 16 <= n; i += 16) (Vector512.Load(a + i) + Vector512.Load(b + i)).Store(y + i);
        else if (isa >= Isa.Avx2) for (; i + 8 <= n; i += 8) (Vector256.Load(a + i) + Vector256.Load(b + i)).Store(y + i);
        for (; i < n; i++) y[i] = a[i] + b[i];
    }

    public static void Mul(float* a, float* b, float* y, long n) => Mul(a, b, y, n, CpuIsa.Current);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Mul(float* a, float* b, float* y, long n, Isa isa)
    {
        long i = 0;
        if (isa == Isa.Avx512) for (; i + 16 <= n; i += 16) (Vector512.Load(a + i) * Vector512.Load(b + i)).Store(y + i);
        else if (isa >= Isa.Avx2) for (; i + 8 <= n; i += 8) (Vector256.Load(a + i) * Vector256.Load(b + i)).Store(y + i);
        for (; i < n; i++) y[i] = a[i] * b[i];
    }

    /// <summary>y = a * s + b * t (scaled residual adds, weighted sums).</summary>
    public static void Axpby(float* a, float s, float* b, float t, float* y, long n) => Axpby(a, s, b, t, y, n, CpuIsa.Current);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Axpby(float* a, float s, float* b, float t, float* y, long n, Isa isa)
    {
        long i = 0;
        if (isa == Isa.Avx512)
        {
            var vs = Vector512.Create(s); var vt = Vector512.Create(t);
            for (; i + 16 <= n; i += 16) (Vector512.Load(a + i) * vs + Vector512.Load(b + i) * vt).Store(y + i);
        }
        else if (isa >= Isa.Avx2)
        {
            var vs = Vector256.Create(s); var vt = Vector256.Create(t);
            for (; i + 8 <= n; i += 8) (Vector256.Load(a + i) * vs + Vector256.Load(b + i) * vt).Store(y + i);
        }
        for (; i < n; i++) y[i] = a[i] * s + b[i] * t;
    }

    public static void Scale(float* x, float s, float* y, long n) => Scale(x, s, y, n, CpuIsa.Current);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Scale(float* x, float s, float* y, long n, Isa isa)
    {
        long i = 0;
        if (isa == Isa.Avx512)
        {
            var vs = Vector512.Create(s);
            for (; i + 16 <= n; i += 16) (Vector512.Load(x + i) * vs).Store(y + i);
        }
        else if (isa >= Isa.Avx2)
        {
            var vs = Vector256.Create(s);
            for (; i + 8 <= n; i += 8) (Vector256.Load(x + i) * vs).Store(y + i);
        }
        for (; i < n; i++) y[i] = x[i] * s;
    }

    /// <summary>Largest of n values (NaN if any is NaN, -inf for n = 0).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float Max(float* x, int n, Isa isa)
    {
        int i = 0; float m = float.NegativeInfinity;
        if (isa >= Isa.Avx2 && n >= 8)
        {
            var a = Vector256.Create(float.NegativeInfinity);
            var nan = Vector256<float>.Zero;
            for (; i + 8 <= n; i += 8) { var v = Vector256.Load(x + i); a = Vector256.Max(a, v); nan |= ~Vector256.Equals(v, v); }
            if (nan != Vector256<float>.Zero) return float.NaN;
            var h = Vector128.Max(a.GetLower(), a.GetUpper());
            m = MathF.Max(MathF.Max(h[0], h[1]), MathF.Max(h[2], h[3]));
        }
        for (; i < n; i++) m = MathF.Max(m, x[i]);
        return m;
    }

    /// <summary>x[i] = exp(x[i] - m) in place; returns their sum (the softmax numerators and denominator).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float ExpSub(float* x, int n, float m, Isa isa)
    {
        int i = 0; float s = 0;
        if (isa == Isa.Avx512)
        {
            var vm = Vector512.Create(m); Vector512<float> acc = default;
            for (; i + 16 <= n; i += 16) { var e = Vector512.Exp(Vector512.Load(x + i) - vm); e.Store(x + i); acc += e; }
            s = Vector512.Sum(acc);
        }
        else if (isa >= Isa.Avx2)
        {
            var vm = Vector256.Create(m); Vector256<float> acc = default;
            for (; i + 8 <= n; i += 8) { var e = Vector256.Exp(Vector256.Load(x + i) - vm); e.Store(x + i); acc += e; }
            s = Vector256.Sum(acc);
        }
        for (; i < n; i++) { float e = MathF.Exp(x[i] - m); x[i] = e; s += e; }
        return s;
    }

    /// <summary>y += a * x over n values (attention's weighted sum of value rows).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void AddScaled(float* y, float a, float* x, int n, Isa isa)
    {
        int i = 0;
        if (isa == Isa.Avx512)
        {
            var va = Vector512.Create(a);
            for (; i + 16 <= n; i += 16) Vector512.FusedMultiplyAdd(va, Vector512.Load(x + i), Vector512.Load(y + i)).Store(y + i);
        }
        else if (isa >= Isa.Avx2)
        {
            var va = Vector256.Create(a);
            for (; i + 8 <= n; i += 8) Vector256.FusedMultiplyAdd(va, Vector256.Load(x + i), Vector256.Load(y + i)).Store(y + i);
        }
        for (; i < n; i++) y[i] += a * x[i];
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
