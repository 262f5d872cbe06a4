using System.Runtime.Intrinsics;

namespace LlmArch.Compute.Cpu;

/// <summary>
/// Kernels of the generic element-wise, reduction and layout ops. The plain loops here are their own references
/// (the conformance harness compares them with the scalar reference backend); the hot cases (same-shape and
/// row-broadcast binary ops, the common activations) take vectorized paths.
/// </summary>
public static unsafe class TensorKernels
{
    public static float UnaryOne(UnaryOp op, float x, float a, float b) => op switch
    {
        UnaryOp.Affine => a * x + b,
        UnaryOp.Neg => -x,
        UnaryOp.Abs => MathF.Abs(x),
        UnaryOp.Exp => MathF.Exp(x),
        UnaryOp.Log => MathF.Log(x),
        UnaryOp.Log1p => (float)Math.Log(1.0 + x),
        UnaryOp.Sqrt => MathF.Sqrt(x),
        UnaryOp.Rsqrt => 1f / MathF.Sqrt(x),
        UnaryOp.Square => x * x,
        UnaryOp.Floor => MathF.Floor(x),
        UnaryOp.Tanh => MathF.Tanh(x),
        UnaryOp.Sigmoid => 1f / (1f + MathF.Exp(-x)),
        UnaryOp.Silu => Elementwise.Apply(Activation.Silu, x),
        UnaryOp.Gelu => Elementwise.Apply(Activation.Gelu, x),
        UnaryOp.GeluTanh => Elementwise.Apply(Activation.GeluTanh, x),
        UnaryOp.Relu => MathF.Max(0f, x),
        UnaryOp.Softplus => x > 20f ? x : (float)Math.Log(1.0 + Math.Exp(x)),
        UnaryOp.Softcap => a * MathF.Tanh(x / a),
        UnaryOp.Clamp => MathF.Min(MathF.Max(x, a), b),
        _ => throw new ArgumentOutOfRangeException(nameof(op)),
    };

    public static void Unary(float* x, float* y, long n, UnaryOp op, float a, float b)
    {
        switch (op)
        {
            case UnaryOp.Silu: Elementwise.Activate(x, y, n, Activation.Silu); return;
            case UnaryOp.Sigmoid: Elementwise.Activate(x, y, n, Activation.Sigmoid); return;
            case UnaryOp.Affine when b == 0f: Elementwise.Scale(x, a, y, n); return;
        }
        for (long i = 0; i < n; i++) y[i] = UnaryOne(op, x[i], a, b);
    }

    public static float BinaryOne(BinaryOp op, float a, float b) => op switch
    {
        BinaryOp.Add => a + b,
        BinaryOp.Sub => a - b,
        BinaryOp.Mul => a * b,
        BinaryOp.Div => a / b,
        BinaryOp.Max => MathF.Max(a, b),
        BinaryOp.Min => MathF.Min(a, b),
        BinaryOp.GreaterEqual => a >= b ? 1f : 0f,
        _ => throw new ArgumentOutOfRangeException(nameof(op)),
    };

    /// <summary>Dims of s right-aligned to rank 4 (missing leading dims are 1).</summary>
    public static void Dims4(Shape s, Span<int> d)
    {
        for (int i = 0; i < 4; i++) d[i] = 1;
        for (int i = 0; i < s.Rank; i++) d[4 - s.Rank + i] = s[i];
    }

    public static Shape BroadcastShape(Shape a, Shape b)
    {
        Span<int> da = stackalloc int[4], db = stackalloc int[4], r = stackalloc int[4];
        Dims4(a, da); Dims4(b, db);
        for (int i = 0; i < 4; i++)
        {
            if (da[i] != db[i] && da[i] != 1 && db[i] != 1) throw new ArgumentException($"shapes {a} and {b} do not broadcast");
            r[i] = da[i] == 1 ? db[i] : da[i];
        }
        int rank = Math.Max(a.Rank, b.Rank);
        return rank switch
        {
            1 => new Shape(r[3]),
            2 => new Shape(r[2], r[3]),
            3 => new Shape(r[1], r[2], r[3]),
            _ => new Shape(r[0], r[1], r[2], r[3]),
        };
    }

    /// <summary>y = a op b with broadcasting; y may alias a when a has the result's shape.</summary>
    public static void Binary(float* a, Shape sa, float* b, Shape sb, float* y, Shape sy, BinaryOp op)
    {
        long n = sy.Count;
        if (n == 0) return;
        if (sa.Count == n && sb.Count == n) { Same(a, b, y, n, op); return; }
        if (sa.Count == n && sb.Count == sy.Last && sb.Last == sy.Last)
        {
            // Row vector repeated over every row (biases, per-channel scales).
            int c = sy.Last;
            for (long r = 0; r < n / c; r++) Same(a + r * c, b, y + r * c, c, op);
            return;
        }
        Span<int> da = stackalloc int[4], db = stackalloc int[4], dy = stackalloc int[4];
        Dims4(sa, da); Dims4(sb, db); Dims4(sy, dy);
        if (sa.Count == n && db[3] == 1 && sb.Count * dy[3] == n)
        {
            // Column broadcast: one value per row (per-row scales).
            int c = dy[3];
            for (long r = 0; r < n / c; r++)
            {
                float v = b[r];
                float* ar = a + r * c, yr = y + r * c;
                for (int i = 0; i < c; i++) yr[i] = BinaryOne(op, ar[i], v);
            }
            return;
        }
        // General: strides of 0 on broadcast dims.
        Span<long> ta = stackalloc long[4], tb = stackalloc long[4];
        long st = 1, sbt = 1;
        for (int i = 3; i >= 0; i--)
        {
            ta[i] = da[i] == 1 ? 0 : st; st *= da[i];
            tb[i] = db[i] == 1 ? 0 : sbt; sbt *= db[i];
        }
        long idx = 0;
        for (int i0 = 0; i0 < dy[0]; i0++)
            for (int i1 = 0; i1 < dy[1]; i1++)
                for (int i2 = 0; i2 < dy[2]; i2++)
                {
                    long oa = i0 * ta[0] + i1 * ta[1] + i2 * ta[2], ob = i0 * tb[0] + i1 * tb[1] + i2 * tb[2];
                    for (int i3 = 0; i3 < dy[3]; i3++, idx++)
                        y[idx] = BinaryOne(op, a[oa + i3 * ta[3]], b[ob + i3 * tb[3]]);
                }
    }

    private static void Same(float* a, float* b, float* y, long n, BinaryOp op)
    {
        switch (op)
        {
            case BinaryOp.Add: Elementwise.Add(a, b, y, n); return;
            case BinaryOp.Mul: Elementwise.Mul(a, b, y, n); return;
            case BinaryOp.Sub:
            {
                long i = 0;
                if (Vector256.IsHardwareAccelerated)
                    for (; i + 8 <= n; i += 8) (Vector256.Load(a + i) - Vector256.Load(b + i)).Store(y + i);
                for (; i < n; i++) y[i] = a[i] - b[i];
                return;
            }
        }
        for (long i = 0; i < n; i++) y[i] = BinaryOne(op, a[i], b[i]);
    }

    /// <summary>(product of dims before axis, the axis, product of dims after it).</summary>
    public static (long Outer, int N, long Inner) Split(Shape s, int axis)
    {
        if (axis < 0) axis += s.Rank;
        if ((uint)axis >= (uint)s.Rank) throw new ArgumentException($"axis {axis} of {s}");
        long outer = 1, inner = 1;
        for (int i = 0; i < axis; i++) outer *= s[i];
        for (int i = axis + 1; i < s.Rank; i++) inner *= s[i];
        return (outer, s[axis], inner);
    }

    public static Shape WithDim(Shape s, int axis, int size)
    {
        if (axis < 0) axis += s.Rank;
        var d = s.ToArray();
        d[axis] = size;
        return d.Length switch
        {
            1 => new Shape(d[0]),
            2 => new Shape(d[0], d[1]),
            3 => new Shape(d[0], d[1], d[2]),
            _ => new Shape(d[0], d[1], d[2], d[3]),
        };
    }

    public static void Reduce(float* x, float* y, long outer, int n, long inner, ReduceOp op)
    {
        for (long o = 0; o < outer; o++)
            for (long i = 0; i < inner; i++)
            {
                float* p = x + o * n * inner + i;
                double acc = op switch { ReduceOp.Max => double.NegativeInfinity, ReduceOp.Min => double.PositiveInfinity, _ => 0 };
                for (int k = 0; k < n; k++)
                {
                    float v = p[k * inner];
                    acc = op switch
                    {
                        ReduceOp.Max => Math.Max(acc, v),
                        ReduceOp.Min => Math.Min(acc, v),
                        ReduceOp.MeanSquare => acc + (double)v * v,
                        _ => acc + v,
                    };
                }
                if (op is ReduceOp.Mean or ReduceOp.MeanSquare) acc /= n;
                y[o * inner + i] = (float)acc;
            }
    }

    /// <summary>Per row, the k largest values in descending order (ties: lower index first) and their indices.</summary>
    public static void TopK(float* x, long rows, int c, int k, float* values, int* indices)
    {
        for (long r = 0; r < rows; r++)
        {
            float* xr = x + r * c;
            float* vr = values + r * k;
            int* ir = indices + r * k;
            int n = 0;
            for (int i = 0; i < c; i++)
            {
                float v = xr[i];
                if (float.IsNaN(v)) v = float.NegativeInfinity;
                if (n == k && !(v > vr[k - 1])) continue;
                int j = n < k ? n++ : k - 1;
                while (j > 0 && v > vr[j - 1]) { vr[j] = vr[j - 1]; ir[j] = ir[j - 1]; j--; }
                vr[j] = v; ir[j] = i;
            }
        }
    }

    public static void Cast(Tensor x, Tensor y)
    {
        long n = x.Count;
        if (x.DType == y.DType) { Buffer.MemoryCopy((void*)x.Ptr, (void*)y.Ptr, x.ByteCount, x.ByteCount); return; }
        switch (y.DType)
        {
            case DType.F32: Convert.ToF32Raw(x, 0, new Span<float>((void*)y.Ptr, checked((int)n))); return;
            case DType.I32:
            {
                int* d = (int*)y.Ptr;
                if (x.DType != DType.F32) throw new ArgumentException($"cast {x.DType} to I32");
                float* s = (float*)x.Ptr;
                for (long i = 0; i < n; i++) d[i] = (int)s[i];
                return;
            }
            case DType.BF16:
            {
                if (x.DType != DType.F32) throw new ArgumentException($"cast {x.DType} to BF16");
                ushort* d = (ushort*)y.Ptr; float* s = (float*)x.Ptr;
                for (long i = 0; i < n; i++) d[i] = Convert.F32ToBF16(s[i]);
                return;
            }
            case DType.F16:
            {
                if (x.DType != DType.F32) throw new ArgumentException($"cast {x.DType} to F16");
                Half* d = (Half*)y.Ptr; float* s = (float*)x.Ptr;
                for (long i = 0; i < n; i++) d[i] = (Half)s[i];
                return;
            }
            default: throw new ArgumentException($"cast to {y.DType} is not supported");
        }
    }

    /// <summary>y = x with dims d0 and d1 swapped (any element size).</summary>
    public static void Transpose(Tensor x, Tensor y, int d0, int d1)
    {
        Span<int> d = stackalloc int[4];
        int rank = x.Shape.Rank, pad = 4 - rank;
        Dims4(x.Shape, d);
        int a0 = d0 + pad, a1 = d1 + pad;
        Span<long> sx = stackalloc long[4];
        long st = 1;
        for (int i = 3; i >= 0; i--) { sx[i] = st; st *= d[i]; }
        // Output dims are x's with a0/a1 swapped; walk the output in order and read the matching input element.
        Span<int> od = stackalloc int[4];
        d.CopyTo(od);
        (od[a0], od[a1]) = (od[a1], od[a0]);
        Span<long> rs = stackalloc long[4]; // input stride for each output dim
        for (int i = 0; i < 4; i++) rs[i] = sx[i];
        (rs[a0], rs[a1]) = (rs[a1], rs[a0]);
        int es = DTypes.ElementSize(x.DType);
        byte* src = (byte*)x.Ptr, dst = (byte*)y.Ptr;
        long o = 0;
        for (int i0 = 0; i0 < od[0]; i0++)
            for (int i1 = 0; i1 < od[1]; i1++)
                for (int i2 = 0; i2 < od[2]; i2++)
                {
                    long baseIn = i0 * rs[0] + i1 * rs[1] + i2 * rs[2];
                    if (rs[3] == 1)
                    {
                        long bytes = (long)od[3] * es;
                        Buffer.MemoryCopy(src + baseIn * es, dst + o * es, bytes, bytes);
                        o += od[3];
                        continue;
                    }
                    for (int i3 = 0; i3 < od[3]; i3++, o++)
                        Buffer.MemoryCopy(src + (baseIn + i3 * rs[3]) * es, dst + o * es, es, es);
                }
    }

    /// <summary>y[i] = a[i] · b[i or 0]: a <c>[Bt, M, K]</c>, b <c>[Bb, K, N]</c> (Bb = Bt or 1), y <c>[Bt, M, N]</c>.</summary>
    public static void BatchMatMulNN(float* a, float* b, float* y, int Bt, int Bb, int M, int K, int N)
    {
        for (int i = 0; i < Bt; i++)
        {
            float* ai = a + (long)i * M * K, bi = b + (Bb == 1 ? 0 : (long)i * K * N), yi = y + (long)i * M * N;
            for (int m = 0; m < M; m++)
            {
                float* yr = yi + (long)m * N;
                new Span<float>(yr, N).Clear();
                for (int k = 0; k < K; k++)
                {
                    float av = ai[(long)m * K + k];
                    float* br = bi + (long)k * N;
                    Elementwise.Axpby(br, av, yr, 1f, yr, N);
                }
            }
        }
    }
}
