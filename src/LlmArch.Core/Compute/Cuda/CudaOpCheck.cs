using LlmArch.Compute.Conformance;
using LlmArch.Compute.Cpu;

namespace LlmArch.Compute.Cuda;

/// <summary>One checked case: the candidate's largest error relative to the tolerance (≤ 1 passes).</summary>
public sealed record OpCheckResult(string Op, string Case, double MaxError, double Tolerance, bool Passed, string? Error);

/// <summary>
/// Op-by-op conformance of a backend against the scalar <see cref="ReferenceBackend"/>: every op of the op set on odd
/// sizes, every weight dtype and layout, broadcasting, ragged steps over a cache (windows, chunks, sinks, softcap,
/// rings, values in keys, long contexts that take the split-KV path), the fused family forms against their
/// compositions, and the GPU's deferred fusions against the plain ops. Inputs are identical host tensors placed on
/// each backend; errors are |candidate - reference| / (atol + rtol·|reference|), so 1 is the tolerance; NaN must
/// match NaN. Used by <c>llmarch gpu-check</c> on a GPU machine (until the conformance harness covers the CUDA backend).
/// </summary>
public static unsafe class CudaOpCheck
{
    private sealed record Case(string Op, string Name, Func<IBackend, Func<Tensor, Tensor>, Tensor> Run, double Atol, double Rtol);

    public static List<OpCheckResult> Run(IBackend candidate, string? only = null)
    {
        var results = new List<OpCheckResult>();
        var reference = new ReferenceBackend();
        foreach (var c in Cases())
        {
            if (only is not null && !c.Op.Equals(only, StringComparison.OrdinalIgnoreCase)) continue;
            try
            {
                reference.ResetScratch();
                candidate.ResetScratch();
                var want = Read(c.Run(reference, t => Clone(t)));
                var got = Read(c.Run(candidate, t => candidate.PlaceWeight(t)));
                results.Add(Compare(c, want, got));
            }
            catch (Exception e)
            {
                results.Add(new OpCheckResult(c.Op, c.Name, double.NaN, 1, false, $"{e.GetType().Name}: {e.Message}"));
            }
        }
        return results;
    }

    private static OpCheckResult Compare(Case c, (float[] F, int[]? I) want, (float[] F, int[]? I) got)
    {
        if (want.F.Length != got.F.Length) return new OpCheckResult(c.Op, c.Name, double.NaN, 1, false, $"{got.F.Length} values, expected {want.F.Length}");
        double worst = 0;
        for (int i = 0; i < want.F.Length; i++)
        {
            double w = want.F[i], g = got.F[i];
            if (double.IsNaN(w) || double.IsNaN(g))
            {
                if (double.IsNaN(w) != double.IsNaN(g)) return new OpCheckResult(c.Op, c.Name, double.PositiveInfinity, 1, false, $"element {i}: {g} vs {w}");
                continue;
            }
            if (double.IsInfinity(w) || double.IsInfinity(g))
            {
                if (w != g) return new OpCheckResult(c.Op, c.Name, double.PositiveInfinity, 1, false, $"element {i}: {g} vs {w}");
                continue;
            }
            double tol = c.Atol + c.Rtol * Math.Abs(w);
            double e = tol > 0 ? Math.Abs(g - w) / tol : g == w ? 0 : double.PositiveInfinity;
            worst = Math.Max(worst, e);
        }
        if (want.I is not null && got.I is not null)
            for (int i = 0; i < want.I.Length; i++)
                if (want.I[i] != got.I[i]) return new OpCheckResult(c.Op, c.Name, double.PositiveInfinity, 1, false, $"index {i}: {got.I[i]} vs {want.I[i]}");
        return new OpCheckResult(c.Op, c.Name, worst, 1, worst <= 1, null);
    }

    private static (float[], int[]?) Read(Tensor t)
    {
        var b = t.Device == DeviceKind.Cuda ? (IBackend?)CurrentGpu : null;
        if (t.DType == DType.I32)
        {
            var ints = new int[t.Count];
            if (b is not null) b.Download<int>(t, ints); else t.AsSpan<int>()[..ints.Length].CopyTo(ints);
            return (ints.Select(x => (float)x).ToArray(), ints);
        }
        if (t.DType is DType.BF16 or DType.F16)
        {
            var f16 = new float[t.Count];
            if (b is not null) b.Download<float>(t, f16); else Cpu.Convert.ToF32(t, 0, f16);
            return (f16, null);
        }
        var f = new float[t.Count];
        if (b is not null) b.Download<float>(t, f); else Cpu.Convert.ToF32(t, 0, f);
        return (f, null);
    }

    [ThreadStatic] private static IBackend? CurrentGpu;

    /// <summary>Runs <see cref="Run"/> with downloads through <paramref name="candidate"/>.</summary>
    public static List<OpCheckResult> RunOn(IBackend candidate, string? only = null)
    {
        CurrentGpu = candidate;
        try { return Run(candidate, only); }
        finally { CurrentGpu = null; }
    }

    private static Tensor Clone(Tensor t)
    {
        var c = Tensor.Zeros(t.DType, t.Shape, t.Name);
        if (t.ByteCount > 0) Buffer.MemoryCopy((void*)t.Ptr, (void*)c.Ptr, t.ByteCount, t.ByteCount);
        c.ColumnMajor = t.ColumnMajor;
        if (t.Scales is not null) BlockScales.Attach(c, Clone(t.Scales), t.ScaleBlock.Rows, t.ScaleBlock.Cols);
        return c;
    }

    // ---------------- inputs ----------------

    private static float[] Rand(Random r, long n, float scale = 1f)
    {
        var a = new float[n];
        for (long i = 0; i < n; i++) a[i] = ((float)r.NextDouble() * 2 - 1) * scale;
        return a;
    }

    private static Tensor F(float[] v, Shape s) => Tensor.FromFloats(v, s);
    private static Tensor RandT(Random r, Shape s, float scale = 1f) => F(Rand(r, s.Count, scale), s);

    private static Tensor Ints(int[] v, Shape s)
    {
        var t = Tensor.Zeros(DType.I32, s);
        v.CopyTo(t.AsSpan<int>());
        return t;
    }

    /// <summary>A weight [O, K] (or [experts, O, K]) of the given stored dtype with random values (and block scales).</summary>
    public static Tensor Weight(DType dtype, int O, int K, Random r, int experts = 0)
    {
        int rows = experts > 0 ? experts * O : O;
        var f = Rand(r, (long)rows * K, 0.5f);
        var shape = experts > 0 ? new Shape(experts, O, K) : new Shape(O, K);
        switch (dtype)
        {
            case DType.F32: return F(f, shape);
            case DType.BF16:
            {
                var t = Tensor.Zeros(DType.BF16, shape);
                var s = t.AsSpan<ushort>();
                for (int i = 0; i < f.Length; i++) s[i] = Cpu.Convert.F32ToBF16(f[i]);
                return t;
            }
            case DType.F16:
            {
                var t = Tensor.Zeros(DType.F16, shape);
                var s = t.AsSpan<Half>();
                for (int i = 0; i < f.Length; i++) s[i] = (Half)f[i];
                return t;
            }
            case DType.F8E4M3:
            {
                var t = Tensor.Zeros(DType.F8E4M3, shape);
                var s = t.AsBytes();
                for (int i = 0; i < s.Length; i++) { byte b = (byte)r.Next(256); s[i] = (b & 0x7F) == 0x7F ? (byte)0x38 : b; }
                int br = (O + 127) / 128, bc = (K + 127) / 128;
                var sc = experts > 0 ? new Shape(experts, br, bc) : new Shape(br, bc);
                return BlockScales.Attach(t, F(Rand(r, sc.Count, 0.1f), sc), 128, 128);
            }
            case DType.MXFP4:
            {
                var t = Tensor.Zeros(DType.MXFP4, shape);
                r.NextBytes(t.AsBytes());
                var sc = experts > 0 ? new Shape(experts, O, (K + 31) / 32) : new Shape(O, (K + 31) / 32);
                var st = Tensor.Zeros(DType.U8, sc);
                var sb = st.AsBytes();
                for (int i = 0; i < sb.Length; i++) sb[i] = (byte)(120 + r.Next(8));
                return BlockScales.Attach(t, st, 1, 32);
            }
            case DType.Q8_0: return Cpu.Q8.Quantize(F(f, shape)); // llama.cpp blocks; the GPU splits them at upload
        }
        throw new ArgumentException($"{dtype}");
    }

    private static Tensor ColumnMajor(DType dtype, int O, int K, Random r)
    {
        var stored = Weight(dtype, K, O, r); // memory [K, O]
        var t = stored.Reshape(new Shape(O, K));
        t.ColumnMajor = true;
        return t;
    }

    private static StepBatch Batch(IBackend b, params (int Slot, int Start, int Count)[] seqs)
    {
        var s = new StepBatch();
        foreach (var (slot, start, count) in seqs)
        {
            var ids = new int[count];
            for (int i = 0; i < count; i++) ids[i] = (slot * 31 + start + i) % 50;
            s.Add(slot, start, ids);
        }
        b.Prepare(s);
        return s;
    }

    // ---------------- the cases ----------------

    private static IEnumerable<Case> Cases()
    {
        var r = new Random(1234);
        Case C(string op, string name, Func<IBackend, Func<Tensor, Tensor>, Tensor> f, double atol = 1e-5, double rtol = 1e-4) => new(op, name, f, atol, rtol);

        // element-wise
        foreach (UnaryOp u in Enum.GetValues<UnaryOp>())
        {
            bool positive = u is UnaryOp.Log or UnaryOp.Sqrt or UnaryOp.Rsqrt;
            var x = F(Rand(r, 3 * 37, 4f).Select(v => positive ? MathF.Abs(v) + 0.1f : v).ToArray(), new Shape(3, 37));
            float a = u switch { UnaryOp.Softcap => 5f, UnaryOp.Clamp => -0.5f, UnaryOp.Affine => 1.5f, _ => 0f };
            float bb = u switch { UnaryOp.Clamp => 0.7f, UnaryOp.Affine => -0.25f, _ => 0f };
            yield return C("unary", u.ToString(), (b, put) => b.Unary(put(x), u, a, bb));
        }
        var bx = RandT(r, new Shape(2, 3, 4, 5));
        foreach (BinaryOp op in Enum.GetValues<BinaryOp>())
        {
            var same = RandT(r, new Shape(4, 33)); var same2 = RandT(r, new Shape(4, 33));
            var row = RandT(r, new Shape(33)); var col = RandT(r, new Shape(4, 1));
            var g1 = RandT(r, new Shape(3, 1, 5)); var g2 = RandT(r, new Shape(2, 1, 4, 5)); var g3 = RandT(r, new Shape(3, 4, 1));
            yield return C("binary", $"{op} same", (b, put) => b.Binary(put(same), put(same2), op));
            yield return C("binary", $"{op} row", (b, put) => b.Binary(put(same), put(row), op));
            yield return C("binary", $"{op} column", (b, put) => b.Binary(put(same), put(col), op));
            yield return C("binary", $"{op} general", (b, put) => b.Binary(put(bx), put(g1), op));
            yield return C("binary", $"{op} both broadcast", (b, put) => b.Binary(put(g2), put(g3), op));
        }
        {
            var a = RandT(r, new Shape(4, 33)); var row = RandT(r, new Shape(33)); var full = RandT(r, new Shape(4, 33));
            yield return C("binary", "in place row", (b, put) => { var t = put(a); b.BinaryInPlace(t, put(row), BinaryOp.Mul); return t; });
            yield return C("binary", "in place same", (b, put) => { var t = put(a); b.BinaryInPlace(t, put(full), BinaryOp.Add); return t; });
        }
        foreach (var act in new[] { ExpertActivation.SwiGlu, ExpertActivation.GeGluTanh, new ExpertActivation(GluKind.GeGlu), ExpertActivation.GptOss() })
        {
            var g = RandT(r, new Shape(5, 70), 3f); var u = RandT(r, new Shape(5, 70), 3f); var fused = RandT(r, new Shape(5, 140), 3f);
            yield return C("glu", $"{act.Kind} separate", (b, put) => b.Glu(put(g), put(u), act));
            yield return C("glu", $"{act.Kind} fused", (b, put) => b.Glu(put(fused), null, act));
            yield return C("glu", $"{act.Kind} interleaved", (b, put) => b.Glu(put(fused), null, act, interleaved: true));
        }
        {
            var x = F(Rand(r, 100, 50f).Concat([float.NaN, float.PositiveInfinity, -0f, 3.99999f]).ToArray(), new Shape(104));
            var small = F(Rand(r, 104, 3f), new Shape(104));
            yield return C("cast", "f32->bf16->f32", (b, put) => b.Cast(b.Cast(put(x), DType.BF16), DType.F32), 0, 0);
            yield return C("cast", "f32->f16->f32", (b, put) => b.Cast(b.Cast(put(small), DType.F16), DType.F32), 0, 0);
            yield return C("cast", "f32->i32", (b, put) => b.Cast(put(small), DType.I32), 0, 0);
            var ids = Ints(Enumerable.Range(-5, 40).ToArray(), new Shape(40));
            yield return C("cast", "i32->f32", (b, put) => b.Cast(put(ids), DType.F32), 0, 0);
        }

        // rows
        foreach (var (rows, dim) in new[] { (3, 1000), (20, 257), (1, 64), (8, 4096) })
        {
            var x = RandT(r, new Shape(rows, dim), 2f); var w = RandT(r, new Shape(dim));
            yield return C("rms_norm", $"{rows}x{dim}", (b, put) => b.RmsNorm(put(x), put(w), 1e-6f));
            yield return C("rms_norm", $"{rows}x{dim} (1+w)", (b, put) => b.RmsNorm(put(x), put(w), 1e-6f, 1f));
            yield return C("rms_norm", $"{rows}x{dim} no weight", (b, put) => b.RmsNorm(put(x), null, 1e-5f));
            var lb = RandT(r, new Shape(dim));
            yield return C("layer_norm", $"{rows}x{dim}", (b, put) => b.LayerNorm(put(x), put(w), put(lb), 1e-5f));
            yield return C("layer_norm", $"{rows}x{dim} no bias", (b, put) => b.LayerNorm(put(x), put(w), null, 1e-5f));
        }
        {
            var x = RandT(r, new Shape(7, 129), 5f);
            var withInf = F(Rand(r, 4 * 33).Select((v, i) => i % 5 == 0 ? float.NegativeInfinity : v).ToArray(), new Shape(4, 33));
            yield return C("softmax", "7x129", (b, put) => b.Softmax(put(x)));
            yield return C("softmax", "-inf entries", (b, put) => b.Softmax(put(withInf)));
            var ties = F(Rand(r, 6 * 128).Select(v => MathF.Round(v * 4) / 4).ToArray(), new Shape(6, 128));
            var nan = F(Rand(r, 3 * 40).Select((v, i) => i % 7 == 3 ? float.NaN : v).ToArray(), new Shape(3, 40));
            yield return C("top_k", "values k=8 ties", (b, put) => b.TopK(put(ties), 8).Values, 0, 0);
            yield return C("top_k", "indices k=8 ties", (b, put) => b.TopK(put(ties), 8).Indices, 0, 0);
            yield return C("top_k", "indices NaN", (b, put) => b.TopK(put(nan), 5).Indices, 0, 0);
            yield return C("top_k", "groups of 2", (b, put) => b.TopK(put(b.View(put(ties), new Shape(6 * 16, 8))), 2).Indices, 0, 0);
        }
        {
            var x = RandT(r, new Shape(3, 5, 7), 3f);
            var longRows = RandT(r, new Shape(4, 3000));
            foreach (ReduceOp op in Enum.GetValues<ReduceOp>())
            {
                foreach (int axis in new[] { 0, 1, -1 })
                    yield return C("reduce", $"{op} axis {axis}", (b, put) => b.Reduce(put(x), op, axis));
                yield return C("reduce", $"{op} long rows", (b, put) => b.Reduce(put(longRows), op));
            }
        }

        // data movement
        foreach (var dt in new[] { DType.F32, DType.BF16, DType.F16, DType.F8E4M3, DType.Q8_0, DType.MXFP4 })
        {
            var table = Weight(dt, 50, 64, r);
            var ids = Ints([3, 0, 49, 7, -1, 12], new Shape(6)); // -1: a row another device holds, zeros
            yield return C("gather", dt.ToString(), (b, put) => b.Gather(put(table), put(ids)), 1e-6, 1e-6);
        }
        {
            var x = RandT(r, new Shape(4, 20)); var idx = Ints([0, 19, 5, 1, 1, 2, 7, 8, 9, 19, 0, 3], new Shape(4, 3));
            yield return C("take_along", "4x20 k=3", (b, put) => b.TakeAlong(put(x), put(idx)), 0, 0);
            var dst = RandT(r, new Shape(10, 7)); var src = RandT(r, new Shape(6, 7)); var rowsIds = Ints([1, 4, 1, 9, 0, 1], new Shape(6));
            yield return C("scatter_add", "repeated rows", (b, put) => { var d = put(dst); b.ScatterAdd(d, put(rowsIds), put(src)); return d; });
            var t4 = RandT(r, new Shape(2, 3, 4, 5)); var ti = Ints(Enumerable.Range(0, 60).ToArray(), new Shape(3, 4, 5));
            foreach (int axis in new[] { 0, 1, 2, 3 })
                yield return C("slice", $"axis {axis}", (b, put) => b.Slice(put(t4), 1, Math.Min(2, t4.Shape[axis] - 1), axis), 0, 0);
            yield return C("slice", "i32", (b, put) => b.Slice(put(ti), 2, 3, -1), 0, 0);
            var c2 = RandT(r, new Shape(2, 3, 2, 5));
            yield return C("concat", "axis 2", (b, put) => b.Concat(put(t4), put(c2), 2), 0, 0);
            var c3 = RandT(r, new Shape(2, 3, 4, 9));
            yield return C("concat", "last axis", (b, put) => b.Concat(put(t4), put(c3)), 0, 0);
            foreach (var (d0, d1) in new[] { (0, 1), (1, 2), (2, 3), (0, 3), (1, -1) })
                yield return C("transpose", $"{d0},{d1}", (b, put) => b.Transpose(put(t4), d0, d1), 0, 0);
            var t2 = RandT(r, new Shape(7, 13));
            yield return C("transpose", "2-D", (b, put) => b.Transpose(put(t2), 0, 1), 0, 0);
        }

        // matmul: every dtype, decode-sized (GEMV, vector and scalar paths) and prefill-sized (tiled) inputs
        foreach (var dt in new[] { DType.F32, DType.BF16, DType.F16, DType.F8E4M3, DType.Q8_0, DType.MXFP4 })
            foreach (int K in new[] { 96, 256, 100 })
            {
                if (K % 2 != 0 && dt == DType.MXFP4) continue;
                if (K % 32 != 0 && dt == DType.Q8_0) continue; // llama.cpp blocks cover whole rows of 32s
                var w = Weight(dt, 67, K, r);
                var bias = RandT(r, new Shape(67));
                foreach (int M in new[] { 1, 3, 8, 9, 130 })
                {
                    var x = RandT(r, new Shape(M, K));
                    yield return C("matmul", $"{dt} M={M} K={K}", (b, put) => b.MatMul(put(x), put(w), M == 3 ? put(bias) : null), 1e-4, 1e-4);
                }
            }
        // few output rows (routers, small projections) with a bias, at the token counts of short prompts
        foreach (var dt in new[] { DType.F32, DType.BF16, DType.Q8_0, DType.MXFP4 })
            foreach (int O in new[] { 4, 32 })
            {
                var w = Weight(dt, O, 64, r);
                var bias = RandT(r, new Shape(O));
                foreach (int M in new[] { 1, 2, 6, 8, 17 })
                {
                    var x = RandT(r, new Shape(M, 64));
                    yield return C("matmul", $"{dt} O={O} M={M} K=64 bias", (b, put) => b.MatMul(put(x), put(w), put(bias)), 1e-4, 1e-4);
                }
            }
        foreach (var dt in new[] { DType.F32, DType.BF16 })
            foreach (int M in new[] { 2, 20 })
            {
                var w = ColumnMajor(dt, 45, 70, r); var x = RandT(r, new Shape(M, 70)); var bias = RandT(r, new Shape(45));
                yield return C("matmul", $"column-major {dt} M={M}", (b, put) => b.MatMul(put(x), put(w), put(bias)), 1e-4, 1e-4);
            }
        {
            var fp8NoScale = Weight(DType.F8E4M3, 40, 64, r);
            var plain = new Tensor(DType.F8E4M3, fp8NoScale.Shape, fp8NoScale.Ptr, fp8NoScale.Owner);
            var x = RandT(r, new Shape(2, 64));
            yield return C("matmul", "fp8 without scales", (b, put) => b.MatMul(put(x), put(plain)), 1e-4, 1e-4);
            var big = Weight(DType.BF16, 4096, 1024, r); var xb = RandT(r, new Shape(1, 1024));
            yield return C("matmul", "bf16 4096x1024 M=1", (b, put) => b.MatMul(put(xb), put(big)), 1e-4, 1e-4);
            var wide = Weight(DType.BF16, 64, 8192, r); var xw = RandT(r, new Shape(2, 8192));
            yield return C("matmul", "bf16 64x8192 M=2 (split rows)", (b, put) => b.MatMul(put(xw), put(wide)), 1e-4, 1e-4);
        }
        {
            var a = RandT(r, new Shape(3, 5, 24)); var bn = RandT(r, new Shape(3, 24, 11)); var b1 = RandT(r, new Shape(1, 24, 11));
            var bt = RandT(r, new Shape(3, 11, 24)); var btb = Weight(DType.BF16, 11, 24, r, experts: 3);
            yield return C("batch_matmul", "NN", (b, put) => b.BatchMatMul(put(a), put(bn), false), 1e-4, 1e-4);
            yield return C("batch_matmul", "NN broadcast b", (b, put) => b.BatchMatMul(put(a), put(b1), false), 1e-4, 1e-4);
            yield return C("batch_matmul", "NT", (b, put) => b.BatchMatMul(put(a), put(bt), true), 1e-4, 1e-4);
            yield return C("batch_matmul", "NT bf16", (b, put) => b.BatchMatMul(put(a), put(btb), true), 1e-4, 1e-4);
            // (Stacked FP8 with per-batch block scales is covered by matmul_by_id: the reference's whole-tensor
            // dequantization reads one scale grid for all batches, so it is no oracle for that layout.)
        }
        foreach (var (dt, stacked) in new[] { (DType.BF16, true), (DType.BF16, false), (DType.F32, true), (DType.MXFP4, true), (DType.F8E4M3, true), (DType.Q8_0, false) })
            foreach (int N in new[] { 2, 40 })
                foreach (bool sharedX in new[] { true, false })
                {
                    int E = 6, S = 3, K = 64, O = 40;
                    var stack = Weight(dt, O, K, r, experts: E);
                    var list = Enumerable.Range(0, E).Select(_ => Weight(dt, O, K, r)).ToArray();
                    var ids = Ints(Enumerable.Range(0, N * S).Select(i => i == 1 ? -1 : (i * 7 + i / 3) % E).ToArray(), new Shape(N, S)); // -1: zeros
                    var x = RandT(r, new Shape(N, sharedX ? 1 : S, K));
                    var bias = RandT(r, new Shape(E, O));
                    yield return C("matmul_by_id", $"{dt} {(stacked ? "stacked" : "list")} N={N} {(sharedX ? "shared x" : "per-slot x")}", (b, put) =>
                    {
                        var ew = stacked ? ExpertWeights.FromStacked(put(stack)) : ExpertWeights.FromList(list.Select(put).ToArray());
                        return b.MatMulById(put(x), ew, put(ids), N == 2 ? put(bias) : null);
                    }, 1e-4, 1e-4);
                }

        // sequence ops over a ragged step with a cache
        foreach (bool interleaved in new[] { false, true })
            foreach (int rot in new[] { 16, 8 })
            {
                var x = RandT(r, new Shape(5, 3, 16));
                var inv = Enumerable.Range(0, rot / 2).Select(i => 1f / MathF.Pow(10000f, 2f * i / rot)).ToArray();
                var table = new RopeTable(inv, 1f);
                yield return C("rope", $"rot {rot}{(interleaved ? " interleaved" : "")}", (b, put) =>
                {
                    var t = put(x);
                    var batch = Batch(b, (0, 7, 2), (1, 0, 3));
                    table.Ensure(b, 64);
                    b.Rope(t, batch, table, interleaved);
                    return t;
                });
            }
        foreach (var v in AttentionVariants())
        {
            var (name, Hq, Hkv, Dk, Dv, p0, ring, cap, seqs) = v;
            var rr = new Random(name.Length * 97 + Hq);
            int N = seqs.Sum(s => s.Count);
            var q = RandT(rr, new Shape(N, Hq, Dk)); var k = RandT(rr, new Shape(N, Hkv, Dk));
            var vv = RandT(rr, new Shape(N, Hkv, Dv));
            int slots = seqs.Max(s => s.Slot) + 1;
            var ck = Rand(rr, (long)slots * cap * Hkv * Dk); var cv = Rand(rr, (long)slots * cap * Hkv * Dv);
            var sinks = RandT(rr, new Shape(Hq));
            bool valuesInKeys = p0.ValueIsKeyPrefix;
            Tensor Run(IBackend b, Func<Tensor, Tensor> put, bool write)
            {
                var batch = Batch(b, seqs);
                var cache = new KvCache(b, slots, cap, Hkv, Dk, Dv, ring, ring ? Math.Max(p0.Window, p0.Chunk) : 0, valuesInKeys);
                b.Upload<float>(ck, cache.K);
                if (cache.V is not null) b.Upload<float>(cv, cache.V);
                var p = p0;
                if (name.Contains("sinks")) p.Sinks = put(sinks);
                var o = b.Attention(put(q), put(k), valuesInKeys ? null : put(vv), cache, batch, p);
                if (!write) return o;
                b.CacheWrite(cache, put(k), valuesInKeys ? null : put(vv), batch);
                return cache.K;
            }
            yield return C("attention", name, (b, put) => Run(b, put, false), 2e-5, 2e-4);
            yield return C("cache_write", name, (b, put) => Run(b, put, true), 0, 0);
        }
        {
            var rr = new Random(7);
            int ch = 40, K = 4;
            var x = RandT(rr, new Shape(7, ch)); var w = RandT(rr, new Shape(ch, K)); var st = Rand(rr, 3 * (K - 1) * ch);
            foreach (bool silu in new[] { false, true })
                yield return C("causal_conv1d", silu ? "silu" : "plain", (b, put) =>
                {
                    var batch = Batch(b, (2, 5, 5), (0, 0, 1), (1, 9, 1));
                    var state = b.Allocate(DType.F32, new Shape(3, K - 1, ch), "state");
                    b.Upload<float>(st, state);
                    var y = b.CausalConv1d(put(x), put(w), state, batch, silu);
                    return b.Concat(b.View(y, new Shape(7 * ch)), b.View(state, new Shape(3 * (K - 1) * ch)), 0);
                });
        }

        // fused family forms against their compositions on the reference
        foreach (var (T, Hk, Hv, Dk, Dv) in new[] { (1, 2, 4, 16, 8), (9, 2, 2, 32, 32), (3, 1, 2, 128, 128) })
        {
            var rr = new Random(T * 100 + Dk);
            var q = RandT(rr, new Shape(T + 1, Hk, Dk)); var k = RandT(rr, q.Shape); var v = RandT(rr, new Shape(T + 1, Hv, Dv));
            var g = F(Rand(rr, (T + 1) * Hv).Select(a => -MathF.Abs(a)).ToArray(), new Shape(T + 1, Hv));
            var beta = F(Rand(rr, (T + 1) * Hv).Select(a => (a + 1) / 2).ToArray(), new Shape(T + 1, Hv));
            var init = Rand(rr, 2 * Hv * Dk * Dv, 0.5f);
            yield return C("delta_rule", $"T={T} Hk={Hk} Hv={Hv} {Dk}x{Dv}", (b, put) =>
            {
                var batch = Batch(b, (1, 4, T), (0, 2, 1));
                var state = b.Allocate(DType.F32, new Shape(2, Hv, Dk, Dv), "state");
                b.Upload<float>(init, state);
                var y = b.Fused<IFusedDeltaRule>() is { } f
                    ? f.GatedDeltaRule(put(q), put(k), put(v), put(g), put(beta), state, batch, 64)
                    : Blocks.DeltaRule.Composed(b, put(q), put(k), put(v), put(g), put(beta), state, batch);
                return b.Concat(b.View(y, new Shape((int)y.Count)), b.View(state, new Shape((int)state.Count)), 0);
            }, 1e-4, 1e-3);
        }
        {
            var rr = new Random(5);
            int n = 4, c = 24, rows = 3;
            var streams = RandT(rr, new Shape(rows, n * c)); var coefs = RandT(rr, new Shape(rows, n * n)); var cc = RandT(rr, new Shape(rows, n));
            var act = RandT(rr, new Shape(rows, c)); var refx = RandT(rr, new Shape(rows, c), 3f);
            yield return C("altup", "predict", (b, put) => Blocks.AltUp.Predict(b, put(streams), put(coefs), n));
            yield return C("altup", "correct", (b, put) => Blocks.AltUp.Correct(b, put(streams), put(act), put(cc), n, 1));
            yield return C("row_stats", "match magnitude", (b, put) => Blocks.AltUp.MatchMagnitude(b, put(act), put(refx), 1e-5f));
            yield return C("row_stats", "gaussian top-k", (b, put) => Blocks.AltUp.GaussianTopK(b, put(refx), 1.6448535f), 1e-4, 1e-3);
        }

        foreach (var c in RowProgramCases(r)) yield return c;
        // the GPU's deferred fusions (norm into GEMV, shared-input GEMVs, gate/up + act, down + residual) vs plain ops
        foreach (var dt in new[] { DType.BF16, DType.F32, DType.Q8_0 })
            foreach (int M in new[] { 1, 4 })
            {
                int C0 = 128, I = 96;
                var x = RandT(r, new Shape(M, C0)); var nw = RandT(r, new Shape(C0));
                var wq = Weight(dt, 64, C0, r); var wk = Weight(dt, 32, C0, r); var wv = Weight(dt, 32, C0, r);
                var wg = Weight(dt, I, C0, r); var wu = Weight(dt, I, C0, r); var wd = Weight(dt, C0, I, r); var bq = RandT(r, new Shape(64));
                yield return C("fusion", $"{dt} M={M} layer", (b, put) =>
                {
                    var xs = put(x);
                    var h = b.RmsNorm(xs, put(nw), 1e-6f, 1f);
                    var q = b.MatMul(h, put(wq), put(bq)); var k = b.MatMul(h, put(wk)); var v = b.MatMul(h, put(wv));
                    var qkv = b.Concat(b.Concat(q, k), v);
                    b.BinaryInPlace(xs, b.MatMul(b.Slice(qkv, 0, C0), put(Weight(DType.F32, C0, C0, new Random(9)))), BinaryOp.Add);
                    var h2 = b.RmsNorm(xs, put(nw), 1e-6f);
                    var f = b.MatMul(b.Glu(b.MatMul(h2, put(wg)), b.MatMul(h2, put(wu)), ExpertActivation.SwiGlu), put(wd));
                    b.BinaryInPlace(xs, f, BinaryOp.Add);
                    return b.Concat(b.Concat(qkv, xs), h2);
                }, 1e-4, 1e-4);
            }
    }

    private static IEnumerable<Case> RowProgramCases(Random r)
    {
        foreach (int N in new[] { 1, 5 })
            foreach (bool norm in new[] { true, false })
            {
                var q = RandT(r, new Shape(N, 4, 32)); var k = RandT(r, new Shape(N, 2, 32)); var wq = RandT(r, new Shape(32)); var wk = RandT(r, new Shape(32));
                var inv = Enumerable.Range(0, 12).Select(i => 1f / MathF.Pow(10000f, 2f * i / 24)).ToArray();
                var table = new RopeTable(inv, 1.25f);
                yield return new Case("fusion", $"{(norm ? "qk-norm + rope" : "rope q, k")} N={N}", (b, put) =>
                {
                    var batch = N == 1 ? Batch(b, (0, 40, 1)) : Batch(b, (0, 3, 4), (1, 0, 1));
                    table.Ensure(b, 64);
                    var qs = put(q); var ks = put(k);
                    if (norm) { qs = b.RmsNorm(qs, put(wq), 1e-6f); ks = b.RmsNorm(ks, put(wk), 1e-6f, 1f); }
                    b.Rope(qs, batch, table, false);
                    b.Rope(ks, batch, table, true);
                    return b.Concat(b.View(qs, new Shape(N * 128)), b.View(ks, new Shape(N * 64)), 0);
                }, 1e-5, 1e-4);
            }
    }

    private static IEnumerable<(string Name, int Hq, int Hkv, int Dk, int Dv, AttentionParams P, bool Ring, int Cap, (int Slot, int Start, int Count)[] Seqs)> AttentionVariants()
    {
        var ragged = new[] { (0, 0, 4), (2, 5, 3), (1, 9, 1) };
        AttentionParams P(float scale, int window = 0, int chunk = 0, float softcap = 0, int temp = 0) =>
            new() { Scale = scale, Window = window, Chunk = chunk, Softcap = softcap, TemperatureLength = temp };
        yield return ("gqa", 4, 2, 16, 16, P(0.25f), false, 32, ragged);
        yield return ("mha odd dims", 3, 3, 20, 12, P(0.2f), false, 32, ragged);
        yield return ("window 3", 4, 1, 16, 16, P(0.25f, window: 3), false, 32, ragged);
        yield return ("chunk 4", 2, 2, 16, 16, P(0.25f, chunk: 4), false, 32, ragged);
        yield return ("softcap + temperature", 4, 2, 16, 16, P(0.25f, softcap: 2f, temp: 4), false, 32, ragged);
        yield return ("sinks", 4, 2, 16, 16, P(0.25f), false, 32, ragged);
        yield return ("ring window 6", 4, 2, 16, 16, P(0.25f, window: 6), true, 8, new[] { (0, 0, 4), (1, 13, 2), (2, 20, 1) });
        yield return ("values in keys (MLA)", 8, 1, 24, 16, new AttentionParams { Scale = 0.2f, ValueIsKeyPrefix = true, ValueDim = 16 }, false, 32, ragged);
        yield return ("head dim 256", 2, 1, 256, 256, P(0.06f), false, 16, ragged);
        yield return ("head dim 576 latent", 16, 1, 576, 512, new AttentionParams { Scale = 0.04f, ValueIsKeyPrefix = true, ValueDim = 512 }, false, 16, ragged);
        yield return ("decode long context (split-KV)", 8, 2, 64, 64, P(0.125f), false, 1100, new[] { (0, 1037, 1), (1, 700, 1) });
        yield return ("decode long context sinks", 8, 2, 64, 64, P(0.125f), false, 1100, new[] { (0, 1037, 1) });
        yield return ("decode window + split", 4, 2, 32, 32, P(0.17f, window: 100), false, 600, new[] { (0, 550, 1) });
        // Prefill-sized steps (16+ tokens per sequence) take the flash kernel.
        var prefill = new[] { (0, 0, 70), (1, 30, 20), (2, 7, 1) };
        yield return ("prefill gqa", 8, 2, 64, 64, P(0.125f), false, 128, prefill);
        yield return ("prefill head dim 128", 4, 4, 128, 128, P(0.088f), false, 128, new[] { (0, 0, 100), (1, 10, 33) });
        yield return ("prefill odd dims", 6, 3, 40, 24, P(0.15f), false, 128, prefill);
        yield return ("prefill window 24", 8, 2, 64, 64, P(0.125f, window: 24), false, 128, prefill);
        yield return ("prefill chunk 32 + softcap + sinks", 8, 2, 64, 64, P(0.125f, chunk: 32, softcap: 3f), false, 128, prefill);
        yield return ("prefill temperature", 8, 2, 64, 64, P(0.125f, temp: 16), false, 128, prefill);
        yield return ("prefill ring window 24", 8, 2, 64, 64, P(0.125f, window: 24), true, 56, new[] { (0, 0, 70), (1, 50, 20) });
    }
}
