using LlmArch.Compute.Cpu;

namespace LlmArch.Compute.Cuda;

// Element-wise, row and data-movement ops: validation as the CPU backend does it, then one kernel each.
public sealed unsafe partial class CudaBackend
{
    /// <summary>Start of an op that reads device data: bind the context, run any deferred (fusable) work.</summary>
    private void Begin()
    {
        Bind();
        Flush();
    }

    private static void RequireF32(Tensor? t, string what)
    {
        if (t is not null && t.DType != DType.F32)
            throw new LlmArchInputException($"tensor '{t.Name}' used as {what} is {t.DType}; expected F32");
    }

    private static void RequireI32(Tensor t, string what)
    {
        if (t.DType != DType.I32) throw new ArgumentException($"{what} must be I32 (got {t.DType}{t.Shape})");
    }

    public Tensor Unary(Tensor x, UnaryOp op, float a = 0f, float b = 0f)
    {
        RequireF32(x, "unary input");
        Begin();
        var y = Empty(x.Shape);
        long n = x.Count;
        if (n == 0) return y;
        nint px = x.Ptr, py = y.Ptr;
        int o = (int)op;
        void** args = stackalloc void*[] { &px, &py, &n, &o, &a, &b };
        Launch(_k.Unary, Blocks(n), 1, 1, 256, 0, args, "k_unary");
        return y;
    }

    public Tensor Binary(Tensor a, Tensor b, BinaryOp op)
    {
        RequireF32(a, "binary input"); RequireF32(b, "binary input");
        Begin();
        var shape = TensorKernels.BroadcastShape(a.Shape, b.Shape);
        var y = Empty(shape);
        LaunchBinary(a, b, y, shape, op);
        return y;
    }

    public void BinaryInPlace(Tensor a, Tensor b, BinaryOp op)
    {
        RequireF32(a, "binary input"); RequireF32(b, "binary input");
        var shape = TensorKernels.BroadcastShape(a.Shape, b.Shape);
        if (shape.Count != a.Count) throw new ArgumentException($"cannot broadcast {b.Shape} into {a.Shape} in place");
        Bind();
        if (op == BinaryOp.Add && TryFuseResidual(a, b)) return;
        Flush();
        LaunchBinary(a, b, a, a.Shape, op);
    }

    private void LaunchBinary(Tensor a, Tensor b, Tensor y, Shape shape, BinaryOp op)
    {
        long n = shape.Count;
        if (n == 0) return;
        var p = new BinaryArgs { A = (ulong)a.Ptr, B = (ulong)b.Ptr, Y = (ulong)y.Ptr, N = n, Op = (int)op };
        Span<int> da = stackalloc int[4], db = stackalloc int[4], dy = stackalloc int[4];
        TensorKernels.Dims4(a.Shape, da); TensorKernels.Dims4(b.Shape, db); TensorKernels.Dims4(shape, dy);
        long st = 1, sbt = 1;
        for (int i = 3; i >= 0; i--)
        {
            p.Sa[i] = da[i] == 1 ? 0 : st; st *= da[i];
            p.Sb[i] = db[i] == 1 ? 0 : sbt; sbt *= db[i];
            p.Dy[i] = dy[i];
        }
        p.Mode = a.Count == n && b.Count == n ? 1 : a.Count == n && b.Count == shape.Last && b.Shape.Last == shape.Last ? 2 : 0;
        void* pp = &p;
        Launch(_k.Binary, Blocks(n), 1, 1, 256, 0, &pp, "k_binary");
    }

    public Tensor Glu(Tensor gate, Tensor? up, in ExpertActivation act, bool interleaved = false)
    {
        RequireF32(gate, "gate");
        Bind();
        if (up is not null && TryFuseGlu(gate, up, act, out var fused)) return fused;
        Flush();
        int kind = (int)act.Kind;
        float limit = act.Limit, alpha = act.Alpha;
        if (up is not null)
        {
            RequireF32(up, "up");
            if (gate.Count != up.Count) throw new ArgumentException($"gate {gate.Shape} and up {up.Shape} differ");
            var y = Empty(gate.Shape);
            LaunchGlu(gate.Ptr, 1, up.Ptr, 1, y, gate.Shape.Rows, gate.Shape.Last, gate.Shape.Last, kind, limit, alpha);
            return y;
        }
        int two = gate.Shape.Last;
        if (two % 2 != 0) throw new ArgumentException($"fused gate_up {gate.Shape} has an odd last dim");
        int I = two / 2;
        var r = Empty(CpuBackend.WithLast(gate.Shape, I));
        LaunchGlu(gate.Ptr, interleaved ? 2 : 1, interleaved ? gate.Ptr + 4 : gate.Ptr + I * 4, interleaved ? 2 : 1, r, gate.Shape.Rows, I, two, kind, limit, alpha);
        return r;
    }

    private void LaunchGlu(nint g, long gStep, nint u, long uStep, Tensor y, long rows, int I, long rowStride, int kind, float limit, float alpha)
    {
        long n = rows * I;
        if (n == 0) return;
        nint py = y.Ptr;
        void** args = stackalloc void*[] { &g, &gStep, &u, &uStep, &py, &rows, &I, &rowStride, &kind, &limit, &alpha };
        Launch(_k.Glu, Blocks(n), 1, 1, 256, 0, args, "k_glu");
    }

    public Tensor Cast(Tensor x, DType dtype)
    {
        Begin();
        var y = Empty(x.Shape, dtype);
        long n = x.Count;
        if (n == 0) return y;
        if (x.DType == dtype)
        {
            Native.CudaDriver.Check(Native.CudaDriver.cuMemcpyDtoDAsync((ulong)y.Ptr, (ulong)x.Ptr, (nuint)x.ByteCount, Stream), "cuMemcpyDtoDAsync");
            return y;
        }
        bool ok = dtype switch
        {
            DType.F32 => x.DType is DType.BF16 or DType.F16 or DType.F64 or DType.I8 or DType.I16 or DType.I32 or DType.I64 or DType.U8 or DType.Bool or DType.F8E4M3,
            DType.I32 or DType.BF16 or DType.F16 => x.DType == DType.F32,
            _ => false,
        };
        if (!ok) throw new ArgumentException($"cast {x.DType} to {dtype} is not supported");
        nint px = x.Ptr, py = y.Ptr;
        int from = (int)x.DType, to = (int)dtype;
        void** args = stackalloc void*[] { &px, &py, &n, &from, &to };
        Launch(_k.Cast, Blocks(n), 1, 1, 256, 0, args, "k_cast");
        return y;
    }

    // ---------------- rows ----------------

    private static uint RowThreads(int dim) => dim >= 1024 ? 1024u : dim >= 256 ? 256u : 128u;

    public Tensor RmsNorm(Tensor x, Tensor? w, float eps, float offset = 0f)
    {
        RequireF32(x, "norm input"); RequireF32(w, "norm weight");
        if (w is not null && w.Count != x.Shape.Last) throw new ArgumentException($"norm weight {w.Shape} for {x.Shape}");
        Bind();
        var y = Empty(x.Shape);
        if (Options.Fuse && x.Count > 0 && x.Shape.Last <= 8192)
        {
            // Deferred: a GEMV reading y normalizes x in its prologue (and writes y); a RoPE of y joins it (QK-norm +
            // RoPE); anything else runs it (with the other pending row program, in one launch).
            QueueRow(new RowEntry { X = x, Y = y, W = w, Eps = eps, Offset = offset, Norm = true, Rows = checked((int)x.Shape.Rows), Dim = x.Shape.Last });
            return y;
        }
        Flush();
        LaunchRmsNorm(x, w, y, eps, offset);
        return y;
    }

    private void LaunchRmsNorm(Tensor x, Tensor? w, Tensor y, float eps, float offset)
    {
        int rows = checked((int)x.Shape.Rows), dim = x.Shape.Last;
        if (rows == 0 || dim == 0) return;
        nint px = x.Ptr, pw = w?.Ptr ?? 0, py = y.Ptr;
        void** args = stackalloc void*[] { &px, &pw, &py, &rows, &dim, &eps, &offset };
        Launch(_k.RmsNorm, (uint)rows, 1, 1, RowThreads(dim), 0, args, "k_rmsnorm");
    }

    public Tensor LayerNorm(Tensor x, Tensor? w, Tensor? b, float eps)
    {
        RequireF32(x, "norm input"); RequireF32(w, "norm weight"); RequireF32(b, "norm bias");
        Begin();
        var y = Empty(x.Shape);
        int rows = checked((int)x.Shape.Rows), dim = x.Shape.Last;
        if (rows == 0 || dim == 0) return y;
        nint px = x.Ptr, pw = w?.Ptr ?? 0, pb = b?.Ptr ?? 0, py = y.Ptr;
        void** args = stackalloc void*[] { &px, &pw, &pb, &py, &rows, &dim, &eps };
        Launch(_k.LayerNorm, (uint)rows, 1, 1, RowThreads(dim), 0, args, "k_layernorm");
        return y;
    }

    public Tensor Softmax(Tensor x)
    {
        RequireF32(x, "softmax input");
        Begin();
        var y = Empty(x.Shape);
        long rows = x.Shape.Rows; int c = x.Shape.Last;
        if (rows == 0 || c == 0) return y;
        nint px = x.Ptr, py = y.Ptr;
        void** args = stackalloc void*[] { &px, &py, &rows, &c };
        Launch(_k.Softmax, (uint)rows, 1, 1, RowThreads(c), 0, args, "k_softmax");
        return y;
    }

    public (Tensor Values, Tensor Indices) TopK(Tensor x, int k)
    {
        RequireF32(x, "top-k input");
        int c = x.Shape.Last;
        if (k <= 0 || k > c) throw new ArgumentException($"top-{k} of {x.Shape}");
        Begin();
        var v = Empty(CpuBackend.WithLast(x.Shape, k));
        var i = Empty(CpuBackend.WithLast(x.Shape, k), DType.I32);
        long rows = x.Shape.Rows;
        if (rows == 0) return (v, i);
        nint px = x.Ptr, pv = v.Ptr, pi = i.Ptr;
        void** args = stackalloc void*[] { &px, &rows, &c, &k, &pv, &pi };
        Launch(_k.TopK, (uint)((rows + 7) / 8), 1, 1, 256, 0, args, "k_topk");
        return (v, i);
    }

    public Tensor Reduce(Tensor x, ReduceOp op, int axis = -1)
    {
        RequireF32(x, "reduce input");
        Begin();
        var (outer, n, inner) = TensorKernels.Split(x.Shape, axis);
        var y = Empty(TensorKernels.WithDim(x.Shape, axis, 1));
        long total = outer * inner;
        if (total == 0) return y;
        nint px = x.Ptr, py = y.Ptr;
        int o = (int)op;
        if (inner == 1 && n >= 256 && total < 65536)
        {
            void** a1 = stackalloc void*[] { &px, &py, &outer, &n, &o };
            Launch(_k.ReduceRows, (uint)((outer + 7) / 8), 1, 1, 256, 0, a1, "k_reduce_rows");
            return y;
        }
        void** args = stackalloc void*[] { &px, &py, &outer, &n, &inner, &o };
        Launch(_k.Reduce, Blocks(total), 1, 1, 256, 0, args, "k_reduce");
        return y;
    }

    // ---------------- data movement ----------------

    /// <summary>The kernels' view of a weight (or table): logical rows x cols, stored dtype, block scales.</summary>
    internal static WeightDesc Desc(Tensor w, int rows, int cols)
    {
        var d = new WeightDesc
        {
            Data = (ulong)w.Ptr, Scales = (ulong)(w.Scales?.Ptr ?? 0), DType = (int)Kind(w), Rows = rows, Cols = cols,
            Br = Math.Max(1, w.ScaleBlock.Rows), Bc = Math.Max(1, w.ScaleBlock.Cols), ColMajor = w.ColumnMajor ? 1 : 0,
        };
        d.ScaleCols = (cols + d.Bc - 1) / d.Bc;
        if (DTypes.IsQuantized(w.DType) && w.DType != DType.F8E4M3 && w.Scales is null)
            throw new LlmArchInputException($"tensor '{w.Name}' is {w.DType} without block scales");
        if (w.DType == DType.MXFP4 && cols % 2 != 0) throw new LlmArchInputException($"MXFP4 tensor '{w.Name}' has an odd row length {cols}");
        return d;
    }

    public Tensor Gather(Tensor table, Tensor ids)
    {
        RequireI32(ids, "gather ids");
        Begin();
        int V = table.Shape[0], C = checked((int)(table.Count / Math.Max(1, V)));
        int N = checked((int)ids.Count);
        var y = Empty(new Shape(N, C));
        if ((long)N * C == 0) return y;
        if (DTypes.IsQuantized(table.DType) && table.Shape.Rank != 2) throw new ArgumentException($"quantized table '{table.Name}' {table.Shape} must be 2-D");
        if (table.ColumnMajor) throw new ArgumentException($"table '{table.Name}' is stored column-major");
        var d = Desc(table, V, C);
        nint pi = ids.Ptr, py = y.Ptr;
        void** args = stackalloc void*[] { &d, &pi, &N, &C, &py };
        Launch(_k.Gather, Blocks((long)N * C), 1, 1, 256, 0, args, "k_gather");
        return y;
    }

    public Tensor TakeAlong(Tensor x, Tensor idx)
    {
        RequireF32(x, "take-along input"); RequireI32(idx, "take-along indices");
        long rows = x.Shape.Rows; int c = x.Shape.Last, k = idx.Shape.Last;
        if (idx.Shape.Rows != rows) throw new ArgumentException($"take-along {idx.Shape} from {x.Shape}");
        Begin();
        var y = Empty(CpuBackend.WithLast(x.Shape, k));
        if (rows * k == 0) return y;
        nint px = x.Ptr, pi = idx.Ptr, py = y.Ptr;
        void** args = stackalloc void*[] { &px, &pi, &py, &rows, &c, &k };
        Launch(_k.TakeAlong, Blocks(rows * k), 1, 1, 256, 0, args, "k_take_along");
        return y;
    }

    public void ScatterAdd(Tensor dst, Tensor ids, Tensor src)
    {
        RequireF32(dst, "scatter destination"); RequireF32(src, "scatter source"); RequireI32(ids, "scatter ids");
        int c = dst.Shape.Last; long rows = dst.Shape.Rows;
        if (src.Shape.Last != c || src.Shape.Rows != ids.Count) throw new ArgumentException($"scatter {src.Shape} by {ids.Shape} into {dst.Shape}");
        Begin();
        long n = ids.Count;
        if (n == 0 || c == 0) return;
        nint pd = dst.Ptr, pi = ids.Ptr, ps = src.Ptr;
        void** args = stackalloc void*[] { &pd, &pi, &ps, &n, &c, &rows };
        Launch(_k.ScatterAdd, Blocks(c), 1, 1, 256, 0, args, "k_scatter_add");
    }

    /// <summary>y[i0,i1,i2,i3] = x[...] over dims with element strides on both sides (slice, concat, transpose).</summary>
    private void CopyNd(nint src, nint dst, int esize, ReadOnlySpan<int> dims, ReadOnlySpan<long> srcStride, ReadOnlySpan<long> dstStride)
    {
        var p = new CopyArgs { Src = (ulong)src, Dst = (ulong)dst, Esize = esize };
        long n = 1;
        for (int i = 0; i < 4; i++) { p.Dims[i] = dims[i]; p.SrcStride[i] = srcStride[i]; p.DstStride[i] = dstStride[i]; n *= dims[i]; }
        p.N = n;
        if (n == 0) return;
        void* pp = &p;
        Launch(_k.CopyNd, Blocks(n), 1, 1, 256, 0, &pp, "k_copy_nd");
    }

    private static int ElementBytes(DType t)
    {
        if (t == DType.MXFP4) throw new ArgumentException("MXFP4 tensors cannot be sliced element-wise");
        return DTypes.ElementSize(t);
    }

    public Tensor Slice(Tensor x, int start, int len, int axis = -1)
    {
        var (outer, n, inner) = TensorKernels.Split(x.Shape, axis);
        if (start < 0 || len < 0 || start + len > n) throw new ArgumentException($"slice [{start}, {start + len}) of axis {axis} of {x.Shape}");
        Begin();
        var y = Empty(TensorKernels.WithDim(x.Shape, axis, len), x.DType);
        int es = ElementBytes(x.DType);
        CopyNd(x.Ptr + (nint)((long)start * inner * es), y.Ptr, es, [1, checked((int)outer), len, checked((int)inner)],
            [0, (long)n * inner, inner, 1], [0, (long)len * inner, inner, 1]);
        return y;
    }

    public Tensor Concat(Tensor a, Tensor b, int axis = -1)
    {
        if (a.DType != b.DType) throw new ArgumentException($"concat {a.DType} with {b.DType}");
        var (outer, na, inner) = TensorKernels.Split(a.Shape, axis);
        var (outerB, nb, innerB) = TensorKernels.Split(b.Shape, axis);
        if (outer != outerB || inner != innerB) throw new ArgumentException($"cannot concat {a.Shape} and {b.Shape} on axis {axis}");
        Begin();
        var y = Empty(TensorKernels.WithDim(a.Shape, axis, na + nb), a.DType);
        int es = ElementBytes(a.DType);
        int o = checked((int)outer), inn = checked((int)inner);
        long row = (long)(na + nb) * inner;
        CopyNd(a.Ptr, y.Ptr, es, [1, o, na, inn], [0, (long)na * inner, inner, 1], [0, row, inner, 1]);
        CopyNd(b.Ptr, y.Ptr + (nint)((long)na * inner * es), es, [1, o, nb, inn], [0, (long)nb * inner, inner, 1], [0, row, inner, 1]);
        return y;
    }

    public Tensor Transpose(Tensor x, int d0, int d1)
    {
        var s = x.Shape;
        if (d0 < 0) d0 += s.Rank;
        if (d1 < 0) d1 += s.Rank;
        if ((uint)d0 >= (uint)s.Rank || (uint)d1 >= (uint)s.Rank) throw new ArgumentException($"transpose dims {d0}, {d1} of {s}");
        Begin();
        var dims = s.ToArray();
        (dims[d0], dims[d1]) = (dims[d1], dims[d0]);
        var y = Empty(Shape.Of(dims.Select(d => (long)d).ToArray()), x.DType);
        int es = ElementBytes(x.DType);
        Span<int> xd = stackalloc int[4];
        TensorKernels.Dims4(s, xd);
        int pad = 4 - s.Rank, a0 = d0 + pad, a1 = d1 + pad;
        Span<long> xs = stackalloc long[4];
        long st = 1;
        for (int i = 3; i >= 0; i--) { xs[i] = st; st *= xd[i]; }
        Span<int> od = stackalloc int[4];
        xd.CopyTo(od);
        (od[a0], od[a1]) = (od[a1], od[a0]);
        Span<long> rs = stackalloc long[4];
        xs.CopyTo(rs);
        (rs[a0], rs[a1]) = (rs[a1], rs[a0]);
        Span<long> ys = stackalloc long[4];
        st = 1;
        for (int i = 3; i >= 0; i--) { ys[i] = st; st *= od[i]; }
        CopyNd(x.Ptr, y.Ptr, es, od, rs, ys);
        return y;
    }
}
