using LlmArch.Compute.Cpu;

namespace LlmArch.Compute.Conformance;

/// <summary>
/// The op set written as plainly as possible: scalar loops with double accumulation on host memory, no threads, no
/// SIMD, no fused forms. It is the oracle of the conformance harness (every backend's every op is compared with it)
/// and is slow on purpose. Each op reads its inputs with the dtype-generic converters, so any weight dtype works.
/// </summary>
public sealed unsafe class ReferenceBackend : IBackend
{
    private readonly List<Tensor> _scratch = new();

    public DeviceKind Device => DeviceKind.Cpu;
    public string Name => "reference (scalar)";
    public int Threads => 1;

    public T? Fused<T>() where T : class => null;

    // ---------------- memory ----------------

    public Tensor Allocate(DType dtype, Shape shape, string name) => Tensor.Zeros(dtype, shape, name);
    public void Free(Tensor t) { }
    public Tensor PlaceWeight(Tensor host) => host;
    public void ResetScratch() => _scratch.Clear();

    public Tensor Empty(Shape shape, DType dtype = DType.F32)
    {
        var t = Tensor.Zeros(dtype, shape);
        _scratch.Add(t); // kept alive until the step ends
        return t;
    }

    public Tensor View(Tensor x, Shape shape, long offset = 0)
    {
        if (offset < 0 || offset + shape.Count > x.Count) throw new ArgumentException($"cannot view {x.Shape} at {offset} as {shape}");
        var t = new Tensor(x.DType, shape, x.Ptr + (nint)DTypes.StorageBytes(x.DType, offset), x.Owner, x.Name);
        if (offset == 0 && x.Scales is not null) BlockScales.Attach(t, x.Scales, x.ScaleBlock.Rows, x.ScaleBlock.Cols);
        return t;
    }

    public void Upload<T>(ReadOnlySpan<T> values, Tensor x, long offset = 0) where T : unmanaged =>
        values.CopyTo(new Span<T>((T*)x.Ptr + offset, values.Length));

    public void Download<T>(Tensor x, Span<T> dst, long offset = 0) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) { Cpu.Convert.ToF32(x, offset, System.Runtime.InteropServices.MemoryMarshal.Cast<T, float>(dst)); return; }
        new ReadOnlySpan<T>((T*)x.Ptr + offset, dst.Length).CopyTo(dst);
    }

    public void Copy(Tensor src, Tensor dst)
    {
        if (src.DType != dst.DType || src.Count != dst.Count) throw new ArgumentException($"copy {src.DType}{src.Shape} into {dst.DType}{dst.Shape}");
        for (long i = 0; i < src.ByteCount; i++) ((byte*)dst.Ptr)[i] = ((byte*)src.Ptr)[i];
    }

    public void Fill(Tensor x, float value)
    {
        for (long i = 0; i < x.Count; i++)
        {
            if (x.DType == DType.I32) ((int*)x.Ptr)[i] = (int)value;
            else if (x.DType == DType.F32) ((float*)x.Ptr)[i] = value;
            else throw new ArgumentException($"cannot fill {x.DType}");
        }
    }

    public void Prepare(StepBatch batch)
    {
        int N = batch.Tokens, S = batch.Sequences;
        var ids = Empty(new Shape(N), DType.I32); var pos = Empty(new Shape(N), DType.I32); var seq = Empty(new Shape(N), DType.I32);
        var table = Empty(new Shape(Math.Max(S, 1), 4), DType.I32); var last = Empty(new Shape(Math.Max(S, 1)), DType.I32);
        Upload(batch.TokenIds, ids); Upload(batch.TokenPositions, pos); Upload(batch.TokenSequence, seq);
        batch.WriteSequenceTable(new Span<int>((void*)table.Ptr, 4 * S));
        batch.WriteLastRows(new Span<int>((void*)last.Ptr, S));
        batch.Ids = ids; batch.Positions = pos; batch.TokenSequences = seq; batch.SequenceTable = View(table, new Shape(S, 4)); batch.LastRows = View(last, new Shape(S));
    }

    private static float[] F(Tensor t) => t.ToFloatArray();
    private static float* P(Tensor t) => (float*)t.Ptr;
    private static int* I(Tensor t) => (int*)t.Ptr;

    // ---------------- matmul ----------------

    public Tensor MatMul(Tensor x, Tensor w, Tensor? bias = null)
    {
        int K = x.Shape.Last, O = w.Shape[0];
        if (w.Shape.Rank != 2 || w.Shape[1] != K) throw new LlmArchInputException($"weight '{w.Name}' has shape {w.Shape}; expected [*, {K}]");
        var y = Empty(CpuBackend.WithLast(x.Shape, O));
        Cpu.MatMul.Reference(P(x), checked((int)x.Shape.Rows), K, w, bias is null ? null : P(bias), P(y));
        return y;
    }

    public Tensor BatchMatMul(Tensor a, Tensor b, bool transposeB)
    {
        int Bt = a.Shape[0], M = a.Shape[1], K = a.Shape[2], N = transposeB ? b.Shape[1] : b.Shape[2];
        if ((b.Shape[0] != Bt && b.Shape[0] != 1) || (transposeB ? b.Shape[2] : b.Shape[1]) != K) throw new ArgumentException($"batch matmul {a.Shape} x {b.Shape}");
        var y = Empty(new Shape(Bt, M, N));
        var bf = F(b);
        for (int i = 0; i < Bt; i++)
        {
            long bo = b.Shape[0] == 1 ? 0 : (long)i * K * N;
            for (int m = 0; m < M; m++)
                for (int n = 0; n < N; n++)
                {
                    double acc = 0;
                    for (int k = 0; k < K; k++)
                        acc += (double)P(a)[((long)i * M + m) * K + k] * bf[bo + (transposeB ? (long)n * K + k : (long)k * N + n)];
                    P(y)[((long)i * M + m) * N + n] = (float)acc;
                }
        }
        return y;
    }

    public Tensor MatMulById(Tensor x, ExpertWeights w, Tensor ids, Tensor? bias = null)
    {
        int N = ids.Shape[0], S = ids.Shape[1], K = w.In, O = w.Out;
        if (x.Shape.Rank != 3 || x.Shape[0] != N || (x.Shape[1] != 1 && x.Shape[1] != S) || x.Shape[2] != K) throw new ArgumentException($"expert matmul x {x.Shape}");
        var y = Empty(new Shape(N, S, O));
        for (int n = 0; n < N; n++)
            for (int s = 0; s < S; s++)
            {
                int e = I(ids)[n * S + s];
                if (e == -1) { new Span<float>(P(y) + ((long)n * S + s) * O, O).Clear(); continue; }
                if ((uint)e >= (uint)w.Count) throw new ArgumentException($"expert id {e} outside {w.Count}");
                float* xr = P(x) + ((long)n * x.Shape[1] + (x.Shape[1] == 1 ? 0 : s)) * K;
                Cpu.MatMul.Reference(xr, 1, K, w.Experts[e], bias is null ? null : P(bias) + (long)e * O, P(y) + ((long)n * S + s) * O);
            }
        return y;
    }

    // ---------------- element-wise ----------------

    public Tensor Unary(Tensor x, UnaryOp op, float a = 0f, float b = 0f)
    {
        var y = Empty(x.Shape);
        for (long i = 0; i < x.Count; i++) P(y)[i] = TensorKernels.UnaryOne(op, P(x)[i], a, b);
        return y;
    }

    public Tensor Binary(Tensor a, Tensor b, BinaryOp op)
    {
        var shape = TensorKernels.BroadcastShape(a.Shape, b.Shape);
        var y = Empty(shape);
        BinaryInto(a, b, y, op);
        return y;
    }

    public void BinaryInPlace(Tensor a, Tensor b, BinaryOp op)
    {
        if (TensorKernels.BroadcastShape(a.Shape, b.Shape).Count != a.Count) throw new ArgumentException($"cannot broadcast {b.Shape} into {a.Shape}");
        var t = Binary(a, b, op);
        Copy(t, a);
    }

    /// <summary>Plain index arithmetic: every output element maps back to one element of a and of b.</summary>
    private static void BinaryInto(Tensor a, Tensor b, Tensor y, BinaryOp op)
    {
        Span<int> da = stackalloc int[4], db = stackalloc int[4], dy = stackalloc int[4];
        TensorKernels.Dims4(a.Shape, da); TensorKernels.Dims4(b.Shape, db); TensorKernels.Dims4(y.Shape, dy);
        for (long idx = 0; idx < y.Count; idx++)
        {
            long rem = idx, ia = 0, ib = 0, sa = 1, sb = 1;
            for (int d = 3; d >= 0; d--)
            {
                long c = rem % dy[d]; rem /= dy[d];
                ia += (da[d] == 1 ? 0 : c) * sa; sa *= da[d];
                ib += (db[d] == 1 ? 0 : c) * sb; sb *= db[d];
            }
            P(y)[idx] = TensorKernels.BinaryOne(op, P(a)[ia], P(b)[ib]);
        }
    }

    public Tensor Glu(Tensor gate, Tensor? up, in ExpertActivation act, bool interleaved = false)
    {
        if (up is not null)
        {
            var y = Empty(gate.Shape);
            MoeKernels.GluReference(P(gate), 1, P(up), 1, P(y), gate.Shape.Rows, gate.Shape.Last, gate.Shape.Last, act);
            return y;
        }
        int I = gate.Shape.Last / 2;
        var r = Empty(CpuBackend.WithLast(gate.Shape, I));
        MoeKernels.GluReference(P(gate), interleaved ? 2 : 1, interleaved ? P(gate) + 1 : P(gate) + I, interleaved ? 2 : 1, P(r), gate.Shape.Rows, I, 2 * I, act);
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
        var y = Empty(x.Shape);
        Elementwise.RmsNormReference(P(x), w is null ? null : P(w), P(y), checked((int)x.Shape.Rows), x.Shape.Last, eps, offset);
        return y;
    }

    public Tensor LayerNorm(Tensor x, Tensor? w, Tensor? b, float eps)
    {
        var y = Empty(x.Shape);
        Elementwise.LayerNormReference(P(x), w is null ? null : P(w), b is null ? null : P(b), P(y), checked((int)x.Shape.Rows), x.Shape.Last, eps);
        return y;
    }

    public Tensor Softmax(Tensor x)
    {
        var y = Empty(x.Shape);
        int c = x.Shape.Last;
        for (long r = 0; r < x.Shape.Rows; r++)
        {
            double m = double.NegativeInfinity, s = 0;
            for (int i = 0; i < c; i++) m = Math.Max(m, P(x)[r * c + i]);
            for (int i = 0; i < c; i++) s += Math.Exp(P(x)[r * c + i] - m);
            for (int i = 0; i < c; i++) P(y)[r * c + i] = (float)(Math.Exp(P(x)[r * c + i] - m) / s);
        }
        return y;
    }

    public (Tensor Values, Tensor Indices) TopK(Tensor x, int k)
    {
        int c = x.Shape.Last;
        if (k <= 0 || k > c) throw new ArgumentException($"top-{k} of {x.Shape}");
        var v = Empty(CpuBackend.WithLast(x.Shape, k)); var ix = Empty(CpuBackend.WithLast(x.Shape, k), DType.I32);
        for (long r = 0; r < x.Shape.Rows; r++)
        {
            // Stable sort by descending value (NaN lowest): ties keep the lower index first.
            var order = Enumerable.Range(0, c).OrderByDescending(i => float.IsNaN(P(x)[r * c + i]) ? float.NegativeInfinity : P(x)[r * c + i]).ThenBy(i => i).ToArray();
            for (int j = 0; j < k; j++)
            {
                float val = P(x)[r * c + order[j]];
                P(v)[r * k + j] = float.IsNaN(val) ? float.NegativeInfinity : val;
                I(ix)[r * k + j] = order[j];
            }
        }
        return (v, ix);
    }

    public Tensor Reduce(Tensor x, ReduceOp op, int axis = -1)
    {
        var (outer, n, inner) = TensorKernels.Split(x.Shape, axis);
        var y = Empty(TensorKernels.WithDim(x.Shape, axis, 1));
        TensorKernels.Reduce(P(x), P(y), outer, n, inner, op);
        return y;
    }

    // ---------------- data movement ----------------

    public Tensor Gather(Tensor table, Tensor ids)
    {
        int V = table.Shape[0], C = checked((int)(table.Count / V)), N = checked((int)ids.Count);
        var y = Empty(new Shape(N, C));
        for (int i = 0; i < N; i++)
        {
            int id = I(ids)[i];
            if (id == -1) { new Span<float>(P(y) + (long)i * C, C).Clear(); continue; }
            if ((uint)id >= (uint)V) throw new LlmArchInputException($"token id {id} is outside the vocabulary of {V} ({table.Name})");
            Cpu.Convert.ToF32(table, (long)id * C, new Span<float>(P(y) + (long)i * C, C));
        }
        return y;
    }

    public Tensor TakeAlong(Tensor x, Tensor idx)
    {
        int c = x.Shape.Last, k = idx.Shape.Last;
        var y = Empty(CpuBackend.WithLast(x.Shape, k));
        for (long r = 0; r < x.Shape.Rows; r++)
            for (int j = 0; j < k; j++) P(y)[r * k + j] = P(x)[r * c + I(idx)[r * k + j]];
        return y;
    }

    public void ScatterAdd(Tensor dst, Tensor ids, Tensor src)
    {
        int c = dst.Shape.Last;
        for (long i = 0; i < ids.Count; i++)
            for (int j = 0; j < c; j++) P(dst)[(long)I(ids)[i] * c + j] += P(src)[i * c + j];
    }

    public Tensor Slice(Tensor x, int start, int len, int axis = -1)
    {
        var (outer, n, inner) = TensorKernels.Split(x.Shape, axis);
        if (start < 0 || len < 0 || start + len > n) throw new ArgumentException($"slice [{start}, {start + len}) of {x.Shape}");
        var y = Empty(TensorKernels.WithDim(x.Shape, axis, len), x.DType);
        int es = DTypes.ElementSize(x.DType);
        for (long o = 0; o < outer; o++)
            for (long i = 0; i < len * inner * es; i++)
                ((byte*)y.Ptr)[o * len * inner * es + i] = ((byte*)x.Ptr)[(o * n + start) * inner * es + i];
        return y;
    }

    public Tensor Concat(Tensor a, Tensor b, int axis = -1)
    {
        var (outer, na, inner) = TensorKernels.Split(a.Shape, axis);
        var (_, nb, _) = TensorKernels.Split(b.Shape, axis);
        var y = Empty(TensorKernels.WithDim(a.Shape, axis, na + nb), a.DType);
        int es = DTypes.ElementSize(a.DType);
        long ca = na * inner * es, cb = nb * inner * es;
        for (long o = 0; o < outer; o++)
        {
            for (long i = 0; i < ca; i++) ((byte*)y.Ptr)[o * (ca + cb) + i] = ((byte*)a.Ptr)[o * ca + i];
            for (long i = 0; i < cb; i++) ((byte*)y.Ptr)[o * (ca + cb) + ca + i] = ((byte*)b.Ptr)[o * cb + i];
        }
        return y;
    }

    public Tensor Transpose(Tensor x, int d0, int d1)
    {
        var dims = x.Shape.ToArray();
        if (d0 < 0) d0 += dims.Length;
        if (d1 < 0) d1 += dims.Length;
        (dims[d0], dims[d1]) = (dims[d1], dims[d0]);
        var y = Empty(Shape.Of(dims.Select(d => (long)d).ToArray()), x.DType);
        var src = x.Shape.ToArray();
        int rank = src.Length, es = DTypes.ElementSize(x.DType);
        var idx = new int[rank];
        for (long o = 0; o < y.Count; o++)
        {
            long rem = o;
            for (int d = rank - 1; d >= 0; d--) { idx[d] = (int)(rem % dims[d]); rem /= dims[d]; }
            (idx[d0], idx[d1]) = (idx[d1], idx[d0]);
            long i = 0;
            for (int d = 0; d < rank; d++) i = i * src[d] + idx[d];
            for (int bt = 0; bt < es; bt++) ((byte*)y.Ptr)[o * es + bt] = ((byte*)x.Ptr)[i * es + bt];
        }
        return y;
    }

    // ---------------- sequence ----------------

    public void Rope(Tensor x, StepBatch batch, RopeTable table, bool interleaved)
    {
        int N = x.Shape[0], H = x.Shape[1], D = x.Shape[2], half = table.RotaryDim / 2;
        var inv = table.InverseFrequencies;
        for (int n = 0; n < N; n++)
        {
            int p = batch.TokenPositions[n];
            for (int h = 0; h < H; h++)
            {
                float* v = P(x) + ((long)n * H + h) * D;
                for (int i = 0; i < half; i++)
                {
                    float f = p * inv[i];
                    double c = (float)Math.Cos(f) * table.AttentionScaling, s = (float)Math.Sin(f) * table.AttentionScaling;
                    int i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + half;
                    double a = v[i0], b = v[i1];
                    v[i0] = (float)(a * c - b * s);
                    v[i1] = (float)(b * c + a * s);
                }
            }
        }
    }

    public Tensor Attention(Tensor q, Tensor k, Tensor? v, KvCache? cache, StepBatch batch, in AttentionParams p)
    {
        int dv = p.ValueIsKeyPrefix ? p.ValueDim : v?.Shape[2] ?? 0;
        var y = Empty(new Shape(q.Shape[0], q.Shape[1], dv));
        AttentionKernel.Reference(q, k, v, y, cache, batch, p);
        return y;
    }

    public void CacheWrite(KvCache cache, Tensor k, Tensor? v, StepBatch batch)
    {
        foreach (var (dst, src) in new[] { (cache.K, k), (cache.V, v) })
        {
            if (dst is null) continue;
            if (src is null) throw new ArgumentException("this cache stores values: v is required");
            int row = src.Shape[1] * src.Shape[2];
            for (int n = 0; n < batch.Tokens; n++)
            {
                int s = batch.TokenSequence[n], pos = batch.TokenPositions[n], slot = batch.Slot[s];
                // A ring keeps only positions in its last Capacity of this step's sequence.
                if (cache.Ring && pos < batch.Start[s] + batch.Count[s] - cache.Capacity) continue;
                if (!cache.Ring && pos >= cache.Capacity) throw new LlmArchInputException($"sequence of {pos + 1} tokens exceeds the KV cache capacity of {cache.Capacity}");
                int r = cache.Ring ? pos % cache.Capacity : pos;
                for (int i = 0; i < row; i++) P(dst)[((long)slot * cache.Capacity + r) * row + i] = P(src)[(long)n * row + i];
            }
        }
    }

    public Tensor CausalConv1d(Tensor x, Tensor weight, Tensor state, StepBatch batch, bool silu)
    {
        int ch = x.Shape.Last, K = weight.Shape.Last;
        var y = Empty(x.Shape);
        for (int s = 0; s < batch.Sequences; s++)
        {
            int slot = batch.Slot[s], off = batch.Offset[s], T = batch.Count[s];
            float* st = P(state) + (long)slot * (K - 1) * ch;
            // in[j] for j < 0 comes from the state (its last K-1 inputs), else from x.
            float In(int t, int c) => t < 0 ? st[(K - 1 + t) * ch + c] : P(x)[((long)off + t) * ch + c];
            for (int t = 0; t < T; t++)
                for (int c = 0; c < ch; c++)
                {
                    double acc = 0;
                    for (int j = 0; j < K; j++) acc += (double)P(weight)[c * K + j] * In(t - (K - 1) + j, c);
                    float a = (float)acc;
                    P(y)[((long)off + t) * ch + c] = silu ? a / (1f + MathF.Exp(-a)) : a;
                }
            var next = new float[(K - 1) * ch];
            for (int j = 0; j < K - 1; j++)
                for (int c = 0; c < ch; c++) next[j * ch + c] = In(T - (K - 1) + j, c);
            next.CopyTo(new Span<float>(st, next.Length));
        }
        return y;
    }
}
