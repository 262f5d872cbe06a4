using System.Runtime.CompilerServices;

namespace LlmArch.Compute.Cpu;

/// <summary>
/// The CPU implementation of the op set: SIMD kernels on a fork-join thread pool, scratch from an arena, weights used
/// in place from the memory map. Fused forms (Gated DeltaNet, AltUp, row statistics) are on unless disabled
/// (the conformance harness and tests turn them off to run the compositions).
/// </summary>
public sealed unsafe partial class CpuBackend : IBackend
{
    private readonly ScratchArena _arena = new();
    private readonly bool _fused;
    public CpuThreadPool Pool { get; }
    public DeviceKind Device => DeviceKind.Cpu;
    public string Name => $"cpu ({Threads} threads, {(System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated ? "avx512" : System.Runtime.Intrinsics.X86.Avx2.IsSupported ? "avx2" : "scalar")})";
    public int Threads => Pool.Threads;
    public long ScratchBytes => _arena.BytesReserved;

    /// <param name="pool">the thread pool (the process-wide one by default).</param>
    /// <param name="fused">offer the fused forms of family ops (true), or make Blocks use their compositions.</param>
    public CpuBackend(CpuThreadPool? pool = null, bool fused = true) { Pool = pool ?? CpuThreadPool.Shared; _fused = fused; }

    public T? Fused<T>() where T : class => _fused ? this as T : null;

    // ---------------- memory ----------------

    public Tensor Allocate(DType dtype, Shape shape, string name) => Tensor.Zeros(dtype, shape, name);
    public void Free(Tensor t) { }
    public Tensor PlaceWeight(Tensor host) => host;
    public void ResetScratch() => _arena.Reset();
    public Tensor Empty(Shape shape, DType dtype = DType.F32) => _arena.Alloc(shape, dtype);

    public Tensor View(Tensor x, Shape shape, long offset = 0)
    {
        if (offset < 0 || offset + shape.Count > x.Count) throw new ArgumentException($"cannot view {x.Shape} at {offset} as {shape}");
        return _arena.View(x, shape, offset);
    }

    public void Upload<T>(ReadOnlySpan<T> values, Tensor x, long offset = 0) where T : unmanaged
    {
        if (offset < 0 || offset + values.Length > x.Count) throw new ArgumentException($"upload of {values.Length} at {offset} into {x.Shape}");
        if (sizeof(T) != DTypes.ElementSize(x.DType) || DTypes.IsQuantized(x.DType))
            throw new ArgumentException($"cannot upload {typeof(T).Name} into a {x.DType} tensor");
        values.CopyTo(new Span<T>((T*)x.Ptr + offset, values.Length));
    }

    public void Download<T>(Tensor x, Span<T> dst, long offset = 0) where T : unmanaged
    {
        if (offset < 0 || offset + dst.Length > x.Count) throw new ArgumentException($"download of {dst.Length} at {offset} from {x.Shape}");
        if (typeof(T) == typeof(float)) { Convert.ToF32(x, offset, System.Runtime.InteropServices.MemoryMarshal.Cast<T, float>(dst)); return; }
        if (sizeof(T) != DTypes.ElementSize(x.DType)) throw new ArgumentException($"cannot download a {x.DType} tensor as {typeof(T).Name}");
        new ReadOnlySpan<T>((T*)x.Ptr + offset, dst.Length).CopyTo(dst);
    }

    public void Copy(Tensor src, Tensor dst)
    {
        if (src.DType != dst.DType || src.Count != dst.Count) throw new ArgumentException($"copy {src.DType}{src.Shape} into {dst.DType}{dst.Shape}");
        long bytes = src.ByteCount;
        Buffer.MemoryCopy((void*)src.Ptr, (void*)dst.Ptr, bytes, bytes);
    }

    public void Fill(Tensor x, float value)
    {
        switch (x.DType)
        {
            case DType.F32: new Span<float>((void*)x.Ptr, checked((int)x.Count)).Fill(value); break;
            case DType.I32: new Span<int>((void*)x.Ptr, checked((int)x.Count)).Fill((int)value); break;
            case DType.BF16: new Span<ushort>((void*)x.Ptr, checked((int)x.Count)).Fill(Convert.F32ToBF16(value)); break;
            case DType.F16: new Span<Half>((void*)x.Ptr, checked((int)x.Count)).Fill((Half)value); break;
            default: throw new ArgumentException($"cannot fill a {x.DType} tensor");
        }
    }

    public void Prepare(StepBatch batch)
    {
        int N = batch.Tokens, S = batch.Sequences;
        var ids = Empty(new Shape(Math.Max(N, 1)), DType.I32);
        var pos = Empty(new Shape(Math.Max(N, 1)), DType.I32);
        var seq = Empty(new Shape(Math.Max(N, 1)), DType.I32);
        var table = Empty(new Shape(Math.Max(S, 1), 4), DType.I32);
        var last = Empty(new Shape(Math.Max(S, 1)), DType.I32);
        batch.TokenIds.CopyTo(new Span<int>((void*)ids.Ptr, N));
        batch.TokenPositions.CopyTo(new Span<int>((void*)pos.Ptr, N));
        batch.TokenSequence.CopyTo(new Span<int>((void*)seq.Ptr, N));
        batch.WriteSequenceTable(new Span<int>((void*)table.Ptr, 4 * S));
        batch.WriteLastRows(new Span<int>((void*)last.Ptr, S));
        batch.Ids = View(ids, new Shape(N)); batch.Positions = View(pos, new Shape(N)); batch.TokenSequences = View(seq, new Shape(N));
        batch.SequenceTable = View(table, new Shape(S, 4)); batch.LastRows = View(last, new Shape(S));
    }

    private static float* P(Tensor? t) => t is null ? null : (float*)t.Ptr;
    private static int* I(Tensor t) => (int*)t.Ptr;

    internal static Shape WithLast(Shape s, int last) => s.Rank switch
    {
        1 => new Shape(last),
        2 => new Shape(s[0], last),
        3 => new Shape(s[0], s[1], last),
        _ => new Shape(s[0], s[1], s[2], last),
    };

    private static void RequireF32(Tensor? t, string what)
    {
        if (t is not null && t.DType != DType.F32)
            throw new LlmArchInputException($"tensor '{t.Name}' used as {what} is {t.DType}; expected F32");
    }

    private static void RequireI32(Tensor t, string what)
    {
        if (t.DType != DType.I32) throw new ArgumentException($"{what} must be I32 (got {t.DType}{t.Shape})");
    }

    // ---------------- matmul ----------------

    public Tensor MatMul(Tensor x, Tensor w, Tensor? bias = null)
    {
        int K = x.Shape.Last;
        if (w.Shape.Rank != 2 || w.Shape[1] != K)
            throw new LlmArchInputException($"weight '{w.Name}' has shape {w.Shape}; expected [*, {K}]");
        RequireF32(x, "matmul input"); RequireF32(bias, "bias");
        var y = Empty(WithLast(x.Shape, w.Shape[0]));
        Cpu.MatMul.Run(Pool, P(x), checked((int)x.Shape.Rows), K, w, P(bias), P(y));
        return y;
    }

    public Tensor BatchMatMul(Tensor a, Tensor b, bool transposeB)
    {
        if (a.Shape.Rank != 3 || b.Shape.Rank != 3) throw new ArgumentException($"batch matmul needs rank-3 operands (got {a.Shape}, {b.Shape})");
        int Bt = a.Shape[0], M = a.Shape[1], K = a.Shape[2];
        int bb = b.Shape[0];
        int N = transposeB ? b.Shape[1] : b.Shape[2];
        if ((bb != Bt && bb != 1) || (transposeB ? b.Shape[2] : b.Shape[1]) != K)
            throw new ArgumentException($"batch matmul {a.Shape} x {b.Shape}{(transposeB ? "ᵀ" : "")}");
        RequireF32(a, "batch matmul input");
        var y = Empty(new Shape(Bt, M, N));
        if (transposeB)
        {
            for (int i = 0; i < Bt; i++)
                Cpu.MatMul.Run(Pool, P(a) + (long)i * M * K, M, K, b.Shape[0] == 1 ? b.Index0(0) : b.Index0(i), null, P(y) + (long)i * M * N);
            return y;
        }
        if (b.DType != DType.F32) throw new ArgumentException($"batch matmul without transpose needs an F32 b (got {b.DType})");
        TensorKernels.BatchMatMulNN(P(a), P(b), P(y), Bt, bb, M, K, N);
        return y;
    }

    // ---------------- element-wise ----------------

    public Tensor Unary(Tensor x, UnaryOp op, float a = 0f, float b = 0f)
    {
        RequireF32(x, "unary input");
        var y = Empty(x.Shape);
        TensorKernels.Unary(P(x), P(y), x.Count, op, a, b);
        return y;
    }

    public Tensor Binary(Tensor a, Tensor b, BinaryOp op)
    {
        RequireF32(a, "binary input"); RequireF32(b, "binary input");
        var shape = TensorKernels.BroadcastShape(a.Shape, b.Shape);
        var y = Empty(shape);
        TensorKernels.Binary(P(a), a.Shape, P(b), b.Shape, P(y), shape, op);
        return y;
    }

    public void BinaryInPlace(Tensor a, Tensor b, BinaryOp op)
    {
        RequireF32(a, "binary input"); RequireF32(b, "binary input");
        var shape = TensorKernels.BroadcastShape(a.Shape, b.Shape);
        if (shape.Count != a.Count) throw new ArgumentException($"cannot broadcast {b.Shape} into {a.Shape} in place");
        TensorKernels.Binary(P(a), a.Shape, P(b), b.Shape, P(a), a.Shape, op);
    }

    public Tensor Glu(Tensor gate, Tensor? up, in ExpertActivation act, bool interleaved = false)
    {
        RequireF32(gate, "gate");
        if (up is not null)
        {
            if (gate.Count != up.Count) throw new ArgumentException($"gate {gate.Shape} and up {up.Shape} differ");
            var y = Empty(gate.Shape);
            MoeKernels.Glu(P(gate), 1, P(up), 1, P(y), gate.Shape.Rows, gate.Shape.Last, gate.Shape.Last, act);
            return y;
        }
        int two = gate.Shape.Last;
        if (two % 2 != 0) throw new ArgumentException($"fused gate_up {gate.Shape} has an odd last dim");
        int I = two / 2;
        var r = Empty(WithLast(gate.Shape, I));
        float* g = P(gate), u = interleaved ? P(gate) + 1 : P(gate) + I;
        MoeKernels.Glu(g, interleaved ? 2 : 1, u, interleaved ? 2 : 1, P(r), gate.Shape.Rows, I, two, act);
        return r;
    }

    public Tensor Cast(Tensor x, DType dtype)
    {
        var y = Empty(x.Shape, dtype);
        TensorKernels.Cast(x, y);
        return y;
    }

    // ---------------- rows ----------------

    public Tensor RmsNorm(Tensor x, Tensor? w, float eps, float offset = 0f)
    {
        RequireF32(x, "norm input"); RequireF32(w, "norm weight");
        if (w is not null && w.Count != x.Shape.Last) throw new ArgumentException($"norm weight {w.Shape} for {x.Shape}");
        var y = Empty(x.Shape);
        Elementwise.RmsNorm(P(x), P(w), P(y), checked((int)x.Shape.Rows), x.Shape.Last, eps, offset);
        return y;
    }

    public Tensor LayerNorm(Tensor x, Tensor? w, Tensor? b, float eps)
    {
        RequireF32(x, "norm input"); RequireF32(w, "norm weight"); RequireF32(b, "norm bias");
        var y = Empty(x.Shape);
        Elementwise.LayerNorm(P(x), P(w), P(b), P(y), checked((int)x.Shape.Rows), x.Shape.Last, eps);
        return y;
    }

    public Tensor Softmax(Tensor x)
    {
        RequireF32(x, "softmax input");
        var y = Empty(x.Shape);
        long rows = x.Shape.Rows; int c = x.Shape.Last;
        Buffer.MemoryCopy(P(x), P(y), x.Count * 4, x.Count * 4);
        for (long r = 0; r < rows; r++) Elementwise.Softmax(P(y) + r * c, c);
        return y;
    }

    public (Tensor Values, Tensor Indices) TopK(Tensor x, int k)
    {
        RequireF32(x, "top-k input");
        int c = x.Shape.Last;
        if (k <= 0 || k > c) throw new ArgumentException($"top-{k} of {x.Shape}");
        var v = Empty(WithLast(x.Shape, k));
        var i = Empty(WithLast(x.Shape, k), DType.I32);
        TensorKernels.TopK(P(x), x.Shape.Rows, c, k, P(v), I(i));
        return (v, i);
    }

    public Tensor Reduce(Tensor x, ReduceOp op, int axis = -1)
    {
        RequireF32(x, "reduce input");
        var (outer, n, inner) = TensorKernels.Split(x.Shape, axis);
        var y = Empty(TensorKernels.WithDim(x.Shape, axis, 1));
        TensorKernels.Reduce(P(x), P(y), outer, n, inner, op);
        return y;
    }

    // ---------------- data movement ----------------

    public Tensor Gather(Tensor table, Tensor ids)
    {
        RequireI32(ids, "gather ids");
        int V = table.Shape[0], C = checked((int)(table.Count / Math.Max(1, V)));
        int N = checked((int)ids.Count);
        var y = Empty(new Shape(N, C));
        int* id = I(ids);
        for (int i = 0; i < N; i++)
        {
            if (id[i] == -1) { new Span<float>(P(y) + (long)i * C, C).Clear(); continue; }
            if ((uint)id[i] >= (uint)V) throw new LlmArchInputException($"token id {id[i]} is outside the vocabulary of {V} ({table.Name})");
            Convert.ToF32(table, (long)id[i] * C, new Span<float>(P(y) + (long)i * C, C));
        }
        return y;
    }

    public Tensor TakeAlong(Tensor x, Tensor idx)
    {
        RequireF32(x, "take-along input"); RequireI32(idx, "take-along indices");
        long rows = x.Shape.Rows; int c = x.Shape.Last, k = idx.Shape.Last;
        if (idx.Shape.Rows != rows) throw new ArgumentException($"take-along {idx.Shape} from {x.Shape}");
        var y = Empty(WithLast(x.Shape, k));
        for (long r = 0; r < rows; r++)
            for (int j = 0; j < k; j++)
            {
                int i = I(idx)[r * k + j];
                if ((uint)i >= (uint)c) throw new ArgumentException($"index {i} outside {c}");
                P(y)[r * k + j] = P(x)[r * c + i];
            }
        return y;
    }

    public void ScatterAdd(Tensor dst, Tensor ids, Tensor src)
    {
        RequireF32(dst, "scatter destination"); RequireF32(src, "scatter source"); RequireI32(ids, "scatter ids");
        int c = dst.Shape.Last; long rows = dst.Shape.Rows;
        if (src.Shape.Last != c || src.Shape.Rows != ids.Count) throw new ArgumentException($"scatter {src.Shape} by {ids.Shape} into {dst.Shape}");
        for (long i = 0; i < ids.Count; i++)
        {
            int r = I(ids)[i];
            if ((uint)r >= (ulong)rows) throw new ArgumentException($"row {r} outside {rows}");
            float* d = P(dst) + (long)r * c;
            Elementwise.Add(d, P(src) + i * c, d, c);
        }
    }

    public Tensor Slice(Tensor x, int start, int len, int axis = -1)
    {
        var (outer, n, inner) = TensorKernels.Split(x.Shape, axis);
        if (start < 0 || len < 0 || start + len > n) throw new ArgumentException($"slice [{start}, {start + len}) of axis {axis} of {x.Shape}");
        var y = Empty(TensorKernels.WithDim(x.Shape, axis, len), x.DType);
        int es = DTypes.ElementSize(x.DType);
        long chunk = (long)len * inner * es, srcStride = (long)n * inner * es;
        byte* s = (byte*)x.Ptr + (long)start * inner * es, d = (byte*)y.Ptr;
        for (long o = 0; o < outer; o++) Buffer.MemoryCopy(s + o * srcStride, d + o * chunk, chunk, chunk);
        return y;
    }

    public Tensor Concat(Tensor a, Tensor b, int axis = -1)
    {
        if (a.DType != b.DType) throw new ArgumentException($"concat {a.DType} with {b.DType}");
        var (outer, na, inner) = TensorKernels.Split(a.Shape, axis);
        var (outerB, nb, innerB) = TensorKernels.Split(b.Shape, axis);
        if (outer != outerB || inner != innerB) throw new ArgumentException($"cannot concat {a.Shape} and {b.Shape} on axis {axis}");
        var y = Empty(TensorKernels.WithDim(a.Shape, axis, na + nb), a.DType);
        int es = DTypes.ElementSize(a.DType);
        long ca = (long)na * inner * es, cb = (long)nb * inner * es;
        byte* pa = (byte*)a.Ptr, pb = (byte*)b.Ptr, d = (byte*)y.Ptr;
        for (long o = 0; o < outer; o++)
        {
            Buffer.MemoryCopy(pa + o * ca, d + o * (ca + cb), ca, ca);
            Buffer.MemoryCopy(pb + o * cb, d + o * (ca + cb) + ca, cb, cb);
        }
        return y;
    }

    public Tensor Transpose(Tensor x, int d0, int d1)
    {
        var s = x.Shape;
        if (d0 < 0) d0 += s.Rank;
        if (d1 < 0) d1 += s.Rank;
        if ((uint)d0 >= (uint)s.Rank || (uint)d1 >= (uint)s.Rank) throw new ArgumentException($"transpose dims {d0}, {d1} of {s}");
        var dims = s.ToArray();
        (dims[d0], dims[d1]) = (dims[d1], dims[d0]);
        var y = Empty(Shape.Of(dims.Select(d => (long)d).ToArray()), x.DType);
        TensorKernels.Transpose(x, y, d0, d1);
        return y;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void SameCount(Tensor a, Tensor b)
    {
        if (a.Count != b.Count) throw new ArgumentException($"shape mismatch {a.Shape} vs {b.Shape}");
    }
}
