using LlmArch.Compute.Cpu;

namespace LlmArch.Compute.Conformance;

/// <summary>One op on one case: the largest error against the reference backend, scaled as the case's tolerance says.</summary>
public sealed record ConformanceResult(string Op, string Case, double MaxError, double Tolerance, bool Passed, string? Error = null);

/// <summary>
/// The op-conformance harness (after llama.cpp's test-backend-ops): every op of <see cref="IBackend"/> on many cases
/// (every weight dtype and layout, odd and zero sizes, broadcasting, ragged batches, rings, NaN and infinities), run
/// on a candidate backend and on <see cref="ReferenceBackend"/> from the same host inputs, outputs compared element by
/// element. Errors are |got - want| / (1 + |want|) (NaN must meet NaN, an infinity the same infinity), except that
/// matmul-like cases divide by the largest |want| of the case. Any backend can be handed to it.
/// </summary>
public static unsafe class ConformanceSuite
{
    /// <summary>The ops the suite covers (the compute ops of the contract, and the fused forms a backend may offer).</summary>
    public static IReadOnlyList<string> Ops { get; } =
    [
        "MatMul", "BatchMatMul", "MatMulById", "Unary", "Binary", "BinaryInPlace", "Glu", "Cast", "RmsNorm", "LayerNorm",
        "Softmax", "TopK", "Reduce", "Gather", "TakeAlong", "ScatterAdd", "Slice", "Concat", "Transpose", "Copy", "Fill",
        "Rope", "Attention", "CacheWrite", "CausalConv1d", "FusedDeltaRule", "FusedAltUp", "FusedRowStats",
    ];

    /// <summary>Runs every case (of one op when <paramref name="op"/> is given) on <paramref name="candidate"/>.</summary>
    public static IEnumerable<ConformanceResult> Run(IBackend candidate, string? op = null, int seed = 1234)
    {
        if (op is not null && !Ops.Contains(op, StringComparer.OrdinalIgnoreCase))
            throw new LlmArchInputException($"unknown op '{op}' (ops: {string.Join(", ", Ops)})");
        var h = new Harness(candidate, seed);
        foreach (var c in Cases(h))
        {
            if (op is not null && !string.Equals(c.Op, op, StringComparison.OrdinalIgnoreCase)) continue;
            yield return h.Check(c);
        }
    }

    private sealed record Case(string Op, string Name, Func<IBackend, bool, Output[]> Body, double Tolerance = 2e-5, bool Relative = false);

    /// <summary>A result downloaded to the host: floats (or ints as floats).</summary>
    private sealed record Output(float[] Values);

    private sealed unsafe class Harness(IBackend candidate, int seed)
    {
        private readonly ReferenceBackend _ref = new();
        public IBackend Candidate => candidate;
        public Random Rng = new(seed);

        public ConformanceResult Check(Case c)
        {
            try
            {
                // Both runs draw the same inputs: the stream restarts from the case's own seed.
                Rng = new Random(seed ^ StableHash(c.Op + "/" + c.Name));
                _ref.ResetScratch();
                var want = c.Body(_ref, true);
                Rng = new Random(seed ^ StableHash(c.Op + "/" + c.Name));
                candidate.ResetScratch();
                Output[] got;
                try { got = c.Body(candidate, false); }
                catch (SkipCase skip) { return new ConformanceResult(c.Op, c.Name, 0, c.Tolerance, true, $"not offered ({skip.Message})"); }
                double worst = 0;
                string? err = null;
                for (int o = 0; o < want.Length && err is null; o++)
                {
                    var (w, g) = (want[o].Values, got[o].Values);
                    if (w.Length != g.Length) { err = $"output {o}: {g.Length} values, expected {w.Length}"; break; }
                    double scale = 1;
                    if (c.Relative) foreach (float v in w) if (float.IsFinite(v)) scale = Math.Max(scale, Math.Abs(v));
                    for (int i = 0; i < w.Length; i++)
                    {
                        float a = w[i], b = g[i];
                        if (float.IsNaN(a) || float.IsNaN(b))
                        {
                            if (!(float.IsNaN(a) && float.IsNaN(b))) { err = $"output {o}[{i}]: {b}, expected {a}"; break; }
                            continue;
                        }
                        if (float.IsInfinity(a) || float.IsInfinity(b))
                        {
                            if (a != b) { err = $"output {o}[{i}]: {b}, expected {a}"; break; }
                            continue;
                        }
                        double e = Math.Abs(a - b) / (c.Relative ? scale : 1 + Math.Abs(a));
                        worst = Math.Max(worst, e);
                    }
                }
                return new ConformanceResult(c.Op, c.Name, worst, c.Tolerance, err is null && worst <= c.Tolerance, err);
            }
            catch (Exception e)
            {
                return new ConformanceResult(c.Op, c.Name, double.NaN, c.Tolerance, false, $"{e.GetType().Name}: {e.Message}");
            }
        }

        private static int StableHash(string s)
        {
            int h = 17;
            foreach (char ch in s) h = h * 31 + ch;
            return h;
        }

        // ---- inputs: built on the host from the case's random stream, then put on the backend ----

        public float[] Floats(int n, float scale = 1f, bool specials = false)
        {
            var v = new float[n];
            for (int i = 0; i < n; i++) v[i] = (float)(Rng.NextDouble() * 2 - 1) * scale;
            if (specials && n >= 4)
            {
                v[Rng.Next(n)] = float.NaN; v[Rng.Next(n)] = float.PositiveInfinity; v[Rng.Next(n)] = float.NegativeInfinity; v[Rng.Next(n)] = 0f;
            }
            return v;
        }

        public int[] Ints(int n, int max)
        {
            var v = new int[n];
            for (int i = 0; i < n; i++) v[i] = Rng.Next(max);
            return v;
        }

        /// <summary>An activation on backend b holding values.</summary>
        public static Tensor Act(IBackend b, float[] values, Shape shape)
        {
            var t = b.Empty(shape);
            b.Upload<float>(values, t);
            return t;
        }

        public static Tensor Ids(IBackend b, int[] values, Shape shape)
        {
            var t = b.Empty(shape, DType.I32);
            b.Upload<int>(values, t);
            return t;
        }

        /// <summary>A weight of the given dtype built on the host from random values, placed on b.</summary>
        public Tensor Weight(IBackend b, DType dtype, int rows, int cols, bool columnMajor = false, int experts = 0)
        {
            int E = Math.Max(experts, 1);
            var vals = Floats(E * rows * cols, 0.5f);
            Tensor host;
            switch (dtype)
            {
                case DType.F32: case DType.BF16: case DType.F16:
                {
                    var shape = experts > 0 ? (columnMajor ? new Shape(E, cols, rows) : new Shape(E, rows, cols)) : columnMajor ? new Shape(cols, rows) : new Shape(rows, cols);
                    host = Tensor.Zeros(dtype, shape, $"w_{dtype}");
                    TensorKernels.Cast(Tensor.FromFloats(vals, shape), host);
                    if (columnMajor)
                    {
                        // Stored [.., in, out], read as [.., out, in] in place.
                        var stacked = Checkpoints.StackedWeightTransforms.TransposedView(experts > 0 ? host : host.Reshape(new Shape(1, cols, rows)));
                        host = experts > 0 ? stacked : stacked.Index0(0);
                    }
                    break;
                }
                case DType.Q8_0:
                {
                    var f = Tensor.FromFloats(vals, new Shape(E * rows, cols));
                    var q = Q8.Quantize(f);
                    host = experts > 0 ? Restack(q, E, rows, cols) : q;
                    break;
                }
                case DType.F8E4M3:
                {
                    host = Tensor.Zeros(DType.F8E4M3, experts > 0 ? new Shape(E, rows, cols) : new Shape(rows, cols), "w_fp8");
                    var bytes = host.AsBytes();
                    for (int i = 0; i < bytes.Length; i++) { byte v = (byte)Rng.Next(256); bytes[i] = (v & 0x7F) == 0x7F ? (byte)0x38 : v; }
                    int br = 16, bc = 16;
                    int sr = (rows + br - 1) / br, sc = (cols + bc - 1) / bc;
                    var s = Tensor.FromFloats(Floats(E * sr * sc).Select(x => 0.01f + Math.Abs(x) * 0.05f).ToArray(), experts > 0 ? new Shape(E, sr, sc) : new Shape(sr, sc), "w_fp8_scale_inv");
                    BlockScales.Attach(host, s, br, bc);
                    break;
                }
                case DType.MXFP4:
                {
                    host = Tensor.Zeros(DType.U8, new Shape(E * rows * cols / 2), "w_mxfp4");
                    var bytes = host.AsBytes();
                    for (int i = 0; i < bytes.Length; i++) bytes[i] = (byte)Rng.Next(256);
                    var scales = Tensor.Zeros(DType.U8, experts > 0 ? new Shape(E, rows, cols / 32) : new Shape(rows, cols / 32), "w_mxfp4_scales");
                    var sb = scales.AsBytes();
                    for (int i = 0; i < sb.Length; i++) sb[i] = (byte)(120 + Rng.Next(8));
                    host = BlockScales.Attach(new Tensor(DType.MXFP4, experts > 0 ? new Shape(E, rows, cols) : new Shape(rows, cols), host.Ptr, host.Owner, "w_mxfp4"), scales, 1, 32);
                    break;
                }
                default: throw new ArgumentException($"no weight generator for {dtype}");
            }
            return b.PlaceWeight(host);
        }

        private static Tensor Restack(Tensor q, int E, int rows, int cols)
        {
            // llama.cpp blocks are row-contiguous: the [E * rows, cols] tensor is the stack as it is
            return new Tensor(DType.Q8_0, new Shape(E, rows, cols), q.Ptr, q.Owner, q.Name);
        }

        public Output Out(IBackend b, Tensor t)
        {
            var v = new float[t.Count];
            if (t.DType == DType.I32)
            {
                var iv = new int[t.Count];
                b.Download<int>(t, iv);
                for (int i = 0; i < iv.Length; i++) v[i] = iv[i];
            }
            else b.Download<float>(t, v);
            return new Output(v);
        }
    }

    private static IEnumerable<Case> Cases(Harness h)
    {
        // ---------------- matmul ----------------
        foreach (var dt in new[] { DType.F32, DType.BF16, DType.F16, DType.Q8_0, DType.F8E4M3, DType.MXFP4 })
            foreach (var (N, K, O) in new[] { (1, 64, 5), (3, 96, 33), (17, 256, 7), (4, 32, 1), (0, 64, 3) })
                foreach (bool bias in new[] { false, true })
                {
                    if (dt is DType.F32 or DType.BF16 or DType.F16 && K == 96 && bias) continue;
                    double tol = dt == DType.Q8_0 ? 2e-2 : 1e-4; // Q8_0 may quantize the activations too
                    yield return new Case("MatMul", $"{dt} N={N} K={K} O={O}{(bias ? " bias" : "")}", (b, _) =>
                    {
                        var w = h.Weight(b, dt, O, K);
                        var x = Harness.Act(b, h.Floats(N * K), new Shape(N, K));
                        var bi = bias ? Harness.Act(b, h.Floats(O), new Shape(O)) : null;
                        return [h.Out(b, b.MatMul(x, w, bi))];
                    }, tol, Relative: true);
                }
        foreach (var dt in new[] { DType.F32, DType.BF16 })
            foreach (var (N, K, O) in new[] { (1, 37, 9), (5, 64, 130) })
                yield return new Case("MatMul", $"{dt} column-major N={N} K={K} O={O}", (b, _) =>
                {
                    var w = h.Weight(b, dt, O, K, columnMajor: true);
                    return [h.Out(b, b.MatMul(Harness.Act(b, h.Floats(N * K), new Shape(N, K)), w))];
                }, 1e-4, Relative: true);
        yield return new Case("MatMul", "F32 K=1 and odd tail K=7", (b, _) =>
        {
            var w1 = h.Weight(b, DType.F32, 3, 1); var w7 = h.Weight(b, DType.F32, 5, 7);
            return [h.Out(b, b.MatMul(Harness.Act(b, h.Floats(4), new Shape(4, 1)), w1)), h.Out(b, b.MatMul(Harness.Act(b, h.Floats(14), new Shape(2, 7)), w7))];
        }, 1e-4, Relative: true);
        yield return new Case("MatMul", "F32 NaN and infinity in x", (b, _) =>
        {
            var w = h.Weight(b, DType.F32, 6, 16);
            return [h.Out(b, b.MatMul(Harness.Act(b, h.Floats(48, specials: true), new Shape(3, 16)), w))];
        }, 1e-4, Relative: true);

        foreach (var (Bt, M, K, N, tb, bcast, dt) in new[] { (3, 2, 5, 4, false, false, DType.F32), (2, 1, 8, 3, true, false, DType.F32), (4, 3, 6, 5, false, true, DType.F32), (2, 4, 32, 6, true, false, DType.BF16), (5, 1, 16, 7, true, true, DType.F32) })
            yield return new Case("BatchMatMul", $"[{Bt},{M},{K}] x {(tb ? "ᵀ" : "")}{dt}{(bcast ? " broadcast" : "")}", (b, _) =>
            {
                var a = Harness.Act(b, h.Floats(Bt * M * K), new Shape(Bt, M, K));
                int bb = bcast ? 1 : Bt;
                Tensor w = tb ? h.Weight(b, dt, N, K, experts: bb) : Harness.Act(b, h.Floats(bb * K * N), new Shape(bb, K, N));
                if (tb && w.Shape.Rank == 2) w = b.View(w, new Shape(1, N, K));
                return [h.Out(b, b.BatchMatMul(a, w, tb))];
            }, 1e-4, Relative: true);

        foreach (var dt in new[] { DType.F32, DType.BF16, DType.MXFP4, DType.Q8_0 })
            foreach (var (N, S, shared, stacked, bias) in new[] { (5, 2, true, true, false), (7, 3, false, true, true), (1, 1, true, false, false), (9, 4, false, false, true) })
                yield return new Case("MatMulById", $"{dt} N={N} slots={S}{(shared ? " shared x" : "")}{(stacked ? " stacked" : " per-expert")}{(bias ? " bias" : "")}", (b, _) =>
                {
                    int E = 6, K = 64, O = 33;
                    var stack = h.Weight(b, dt, O, K, experts: E);
                    var w = stacked ? ExpertWeights.FromStacked(stack) : ExpertWeights.FromList(Enumerable.Range(0, E).Select(e => stack.Index0(e)).ToArray());
                    var x = Harness.Act(b, h.Floats(N * (shared ? 1 : S) * K), new Shape(N, shared ? 1 : S, K));
                    var idv = h.Ints(N * S, E);
                    if (N * S > 3) idv[1] = -1; // a pair another device owns: zeros
                    var ids = Harness.Ids(b, idv, new Shape(N, S));
                    var bi = bias ? Harness.Act(b, h.Floats(E * O), new Shape(E, O)) : null;
                    return [h.Out(b, b.MatMulById(x, w, ids, bi))];
                }, dt == DType.Q8_0 ? 2e-2 : 1e-4, Relative: true);

        // ---------------- element-wise ----------------
        foreach (UnaryOp op in Enum.GetValues<UnaryOp>())
            foreach (int n in new[] { 0, 1, 17, 1000 })
            {
                float a = op switch { UnaryOp.Affine => 1.5f, UnaryOp.Softcap => 3f, UnaryOp.Clamp => -0.25f, _ => 0f };
                float c = op switch { UnaryOp.Affine => -0.5f, UnaryOp.Clamp => 0.5f, _ => 0f };
                float scale = op is UnaryOp.Exp or UnaryOp.Softplus or UnaryOp.Silu or UnaryOp.Sigmoid ? 30f : 4f;
                yield return new Case("Unary", $"{op} n={n}", (b, _) =>
                {
                    var v = h.Floats(n, scale, specials: true);
                    if (op is UnaryOp.Log or UnaryOp.Sqrt or UnaryOp.Rsqrt or UnaryOp.Log1p) v = v.Select(x => float.IsNaN(x) ? x : Math.Abs(x)).ToArray();
                    return [h.Out(b, b.Unary(Harness.Act(b, v, new Shape(Math.Max(n, 0))), op, a, c))];
                }, op is UnaryOp.Gelu or UnaryOp.GeluTanh or UnaryOp.Tanh or UnaryOp.Softcap or UnaryOp.Exp or UnaryOp.Log1p or UnaryOp.Softplus ? 1e-5 : 1e-6);
            }
        var shapes = new (Shape A, Shape B)[]
        {
            (new Shape(7, 33), new Shape(7, 33)), (new Shape(5, 16), new Shape(16)), (new Shape(6, 9), new Shape(6, 1)),
            (new Shape(2, 3, 4), new Shape(2, 1, 4)), (new Shape(3, 1, 5), new Shape(4, 1)), (new Shape(2, 3, 4, 5), new Shape(3, 1, 5)),
            (new Shape(1), new Shape(8)), (new Shape(0, 4), new Shape(4)),
        };
        foreach (BinaryOp op in Enum.GetValues<BinaryOp>())
            foreach (var (sa, sb) in shapes)
                yield return new Case("Binary", $"{op} {sa} {sb}", (b, _) =>
                {
                    var x = Harness.Act(b, h.Floats(checked((int)sa.Count), 3f, specials: sa.Count > 30), sa);
                    var y = Harness.Act(b, h.Floats(checked((int)sb.Count), 3f), sb);
                    return [h.Out(b, b.Binary(x, y, op))];
                }, 1e-6);
        foreach (var (sa, sb) in new[] { (new Shape(4, 8), new Shape(4, 8)), (new Shape(4, 8), new Shape(8)), (new Shape(3, 5, 2), new Shape(3, 1, 2)), (new Shape(6, 3), new Shape(6, 1)) })
            foreach (var op in new[] { BinaryOp.Add, BinaryOp.Mul, BinaryOp.Sub })
                yield return new Case("BinaryInPlace", $"{op} {sa} {sb}", (b, _) =>
                {
                    var x = Harness.Act(b, h.Floats(checked((int)sa.Count)), sa);
                    b.BinaryInPlace(x, Harness.Act(b, h.Floats(checked((int)sb.Count)), sb), op);
                    return [h.Out(b, x)];
                }, 1e-6);
        foreach (GluKind k in Enum.GetValues<GluKind>())
            foreach (var (rows, I, mode) in new[] { (3, 7, 0), (2, 16, 1), (4, 5, 2), (0, 4, 1), (1, 1, 2) })
                yield return new Case("Glu", $"{k} rows={rows} I={I} {(mode == 0 ? "separate" : mode == 1 ? "fused" : "interleaved")}", (b, _) =>
                {
                    var act = new ExpertActivation(k, 2f, 1.702f);
                    if (mode == 0)
                        return [h.Out(b, b.Glu(Harness.Act(b, h.Floats(rows * I, 6f, true), new Shape(rows, I)), Harness.Act(b, h.Floats(rows * I, 6f), new Shape(rows, I)), act))];
                    return [h.Out(b, b.Glu(Harness.Act(b, h.Floats(rows * 2 * I, 6f, true), new Shape(rows, 2 * I)), null, act, interleaved: mode == 2))];
                }, 1e-5);
        foreach (var (from, to) in new[] { (DType.F32, DType.BF16), (DType.F32, DType.F16), (DType.F32, DType.I32) })
            yield return new Case("Cast", $"{from} to {to}", (b, _) =>
            {
                var v = h.Floats(50, 100f);
                var t = b.Cast(Harness.Act(b, v, new Shape(5, 10)), to);
                return [h.Out(b, to == DType.I32 ? t : b.Cast(t, DType.F32))];
            }, 0);

        // ---------------- rows ----------------
        foreach (var (rows, dim, weight, offset) in new[] { (3, 64, true, 0f), (5, 33, true, 1f), (2, 7, false, 0f), (1, 1, true, 0f), (0, 16, true, 0f) })
            yield return new Case("RmsNorm", $"rows={rows} dim={dim}{(weight ? "" : " no weight")} offset={offset}", (b, _) =>
            {
                var w = weight ? Harness.Act(b, h.Floats(dim), new Shape(dim)) : null;
                return [h.Out(b, b.RmsNorm(Harness.Act(b, h.Floats(rows * dim, 3f), new Shape(rows, dim)), w, 1e-6f, offset))];
            }, 1e-5);
        foreach (var (rows, dim, wb) in new[] { (3, 64, true), (4, 17, false), (1, 5, true) })
            yield return new Case("LayerNorm", $"rows={rows} dim={dim}{(wb ? "" : " no weight/bias")}", (b, _) =>
            {
                Tensor? w = wb ? Harness.Act(b, h.Floats(dim), new Shape(dim)) : null, bb = wb ? Harness.Act(b, h.Floats(dim), new Shape(dim)) : null;
                return [h.Out(b, b.LayerNorm(Harness.Act(b, h.Floats(rows * dim, 3f), new Shape(rows, dim)), w, bb, 1e-5f))];
            }, 1e-5);
        foreach (var (rows, c, ninf) in new[] { (3, 10, false), (2, 257, false), (4, 6, true), (1, 1, false) })
            yield return new Case("Softmax", $"rows={rows} c={c}{(ninf ? " with -inf" : "")}", (b, _) =>
            {
                var v = h.Floats(rows * c, 20f);
                if (ninf) for (int i = 0; i < v.Length; i += 3) v[i] = float.NegativeInfinity;
                return [h.Out(b, b.Softmax(Harness.Act(b, v, new Shape(rows, c))))];
            }, 1e-5);
        foreach (var (rows, c, k, ties) in new[] { (3, 10, 1, false), (4, 16, 4, false), (2, 7, 7, false), (5, 12, 3, true), (1, 300, 8, false) })
            yield return new Case("TopK", $"rows={rows} c={c} k={k}{(ties ? " ties" : "")}", (b, _) =>
            {
                var v = h.Floats(rows * c);
                if (ties) for (int i = 0; i < v.Length; i++) v[i] = MathF.Round(v[i] * 2) / 2;
                var (vals, idx) = b.TopK(Harness.Act(b, v, new Shape(rows, c)), k);
                return [h.Out(b, vals), h.Out(b, idx)];
            }, 0);
        foreach (ReduceOp op in Enum.GetValues<ReduceOp>())
            foreach (int axis in new[] { -1, 0, 1 })
                yield return new Case("Reduce", $"{op} axis={axis}", (b, _) => [h.Out(b, b.Reduce(Harness.Act(b, h.Floats(3 * 5 * 7), new Shape(3, 5, 7)), op, axis))], 1e-5);

        // ---------------- data movement ----------------
        foreach (var dt in new[] { DType.F32, DType.BF16, DType.F16, DType.Q8_0, DType.F8E4M3 })
            yield return new Case("Gather", $"{dt} table", (b, _) =>
            {
                var table = h.Weight(b, dt, 50, 64);
                var idv = h.Ints(9, 50);
                idv[4] = -1; // a row another device holds: zeros
                return [h.Out(b, b.Gather(table, Harness.Ids(b, idv, new Shape(9))))];
            }, 0);
        yield return new Case("TakeAlong", "rows 4 c 9 k 3", (b, _) =>
            [h.Out(b, b.TakeAlong(Harness.Act(b, h.Floats(36), new Shape(4, 9)), Harness.Ids(b, h.Ints(12, 9), new Shape(4, 3))))], 0);
        yield return new Case("ScatterAdd", "repeated ids", (b, _) =>
        {
            var dst = Harness.Act(b, h.Floats(6 * 8), new Shape(6, 8));
            b.ScatterAdd(dst, Harness.Ids(b, [1, 4, 1, 0, 4, 4], new Shape(6)), Harness.Act(b, h.Floats(6 * 8), new Shape(6, 8)));
            return [h.Out(b, dst)];
        }, 1e-6);
        foreach (int axis in new[] { -1, 0, 1 })
        {
            yield return new Case("Slice", $"axis={axis}", (b, _) => [h.Out(b, b.Slice(Harness.Act(b, h.Floats(4 * 6 * 5), new Shape(4, 6, 5)), 1, 2, axis))], 0);
            yield return new Case("Concat", $"axis={axis}", (b, _) =>
            {
                var a = Harness.Act(b, h.Floats(4 * 6 * 5), new Shape(4, 6, 5));
                var sb = TensorKernels.WithDim(a.Shape, axis, 3);
                return [h.Out(b, b.Concat(a, Harness.Act(b, h.Floats(checked((int)sb.Count)), sb), axis))];
            }, 0);
        }
        foreach (var (d0, d1) in new[] { (0, 1), (1, 2), (0, 2), (-1, -3) })
            yield return new Case("Transpose", $"[3,4,5] dims {d0},{d1}", (b, _) => [h.Out(b, b.Transpose(Harness.Act(b, h.Floats(60), new Shape(3, 4, 5)), d0, d1))], 0);
        yield return new Case("Transpose", "[2,3,4,5] dims 1,2", (b, _) => [h.Out(b, b.Transpose(Harness.Act(b, h.Floats(120), new Shape(2, 3, 4, 5)), 1, 2))], 0);
        yield return new Case("Copy", "into a view at an offset", (b, _) =>
        {
            var dst = Harness.Act(b, h.Floats(40), new Shape(40));
            b.Copy(Harness.Act(b, h.Floats(12), new Shape(3, 4)), b.View(dst, new Shape(12), 17));
            return [h.Out(b, dst)];
        }, 0);
        yield return new Case("Fill", "F32 and I32", (b, _) =>
        {
            var f = b.Empty(new Shape(13)); b.Fill(f, 2.5f);
            var i = b.Empty(new Shape(7), DType.I32); b.Fill(i, -3f);
            return [h.Out(b, f), h.Out(b, i)];
        }, 0);

        // ---------------- sequence ----------------
        foreach (var (interleaved, D, rot) in new[] { (false, 16, 16), (true, 16, 16), (false, 24, 8), (true, 10, 6) })
            yield return new Case("Rope", $"{(interleaved ? "interleaved" : "half-split")} D={D} rotary={rot}, ragged", (b, _) =>
            {
                var inv = Enumerable.Range(0, rot / 2).Select(i => (float)Math.Pow(10000, -2.0 * i / rot)).ToArray();
                var table = new RopeTable(inv, 1.25f);
                table.Ensure(b, 64);
                var batch = new StepBatch();
                batch.Add(0, 5, new int[3]); batch.Add(2, 40, new int[1]); batch.Add(1, 0, new int[4]);
                b.Prepare(batch);
                var x = Harness.Act(b, h.Floats(8 * 3 * D), new Shape(8, 3, D));
                b.Rope(x, batch, table, interleaved);
                return [h.Out(b, x)];
            }, 1e-5);
        foreach (var ac in AttentionCases())
            yield return new Case("Attention", ac.Name, (b, _) => RunAttention(h, b, ac), 1e-5);
        foreach (bool ring in new[] { false, true })
            yield return new Case("CacheWrite", ring ? "ring of 6 over a 9-token chunk" : "ragged", (b, _) =>
            {
                var cache = new KvCache(b, 3, ring ? 6 : 20, 2, 4, 3, ring, ring ? 4 : 0);
                var batch = new StepBatch();
                batch.Add(2, 3, new int[ring ? 9 : 2]); batch.Add(0, 0, new int[5]);
                b.Prepare(batch);
                int N = batch.Tokens;
                b.CacheWrite(cache, Harness.Act(b, h.Floats(N * 8), new Shape(N, 2, 4)), Harness.Act(b, h.Floats(N * 6), new Shape(N, 2, 3)), batch);
                return [h.Out(b, cache.K), h.Out(b, cache.V!)];
            }, 0);
        foreach (int K in new[] { 1, 2, 4 })
            yield return new Case("CausalConv1d", $"K={K} ragged with state", (b, _) =>
            {
                int ch = 10;
                var state = b.Allocate(DType.F32, new Shape(3, K - 1, ch), "state");
                b.Upload<float>(h.Floats(3 * (K - 1) * ch), state);
                var batch = new StepBatch();
                batch.Add(1, 4, new int[5]); batch.Add(0, 0, new int[1]); batch.Add(2, 9, new int[2]);
                b.Prepare(batch);
                var w = Harness.Act(b, h.Floats(ch * K), new Shape(ch, K));
                var y = b.CausalConv1d(Harness.Act(b, h.Floats(8 * ch), new Shape(8, ch)), w, state, batch, silu: K != 2);
                return [h.Out(b, y), h.Out(b, state)];
            }, 1e-5);

        // ---------------- fused forms (each against its scalar reference) ----------------
        foreach (var (Hk, Hv, Dk, Dv, chunk) in new[] { (1, 2, 8, 4, 4), (2, 2, 16, 8, 0), (1, 3, 5, 7, 64) })
            yield return new Case("FusedDeltaRule", $"Hk={Hk} Hv={Hv} Dk={Dk} Dv={Dv} chunk={chunk}", (b, isRef) =>
            {
                var batch = new StepBatch();
                batch.Add(1, 3, new int[6]); batch.Add(0, 0, new int[1]);
                b.Prepare(batch);
                int N = batch.Tokens;
                var q = h.Floats(N * Hk * Dk); var k = h.Floats(N * Hk * Dk); var v = h.Floats(N * Hv * Dv);
                var g = h.Floats(N * Hv).Select(x => -Math.Abs(x) * 2).ToArray(); var beta = h.Floats(N * Hv).Select(x => (x + 1) / 2).ToArray();
                var s0 = h.Floats(2 * Hv * Dk * Dv, 0.5f);
                var state = b.Allocate(DType.F32, new Shape(2, Hv, Dk, Dv), "state");
                b.Upload<float>(s0, state);
                var fused = b.Fused<IFusedDeltaRule>();
                if (fused is null && !isRef) throw new SkipCase("no fused delta rule");
                Tensor y = isRef
                    ? DeltaRuleReference(b, q, k, v, g, beta, state, batch, Hk, Hv, Dk, Dv)
                    : fused!.GatedDeltaRule(Harness.Act(b, q, new Shape(N, Hk, Dk)), Harness.Act(b, k, new Shape(N, Hk, Dk)), Harness.Act(b, v, new Shape(N, Hv, Dv)),
                        Harness.Act(b, g, new Shape(N, Hv)), Harness.Act(b, beta, new Shape(N, Hv)), state, batch, chunk);
                return [h.Out(b, y), h.Out(b, state)];
            }, 1e-4);
        foreach (var (rows, n, c) in new[] { (3, 4, 8), (2, 2, 5) })
            yield return new Case("FusedAltUp", $"rows={rows} n={n} c={c}", (b, isRef) =>
            {
                var s = h.Floats(rows * n * c); var pc = h.Floats(rows * n * n); var act = h.Floats(rows * c); var cc = h.Floats(rows * n);
                if (isRef) return AltUpReference(s, pc, act, cc, rows, n, c);
                var f = b.Fused<IFusedAltUp>() ?? throw new SkipCase("no fused AltUp");
                var st = Harness.Act(b, s, new Shape(rows, n * c));
                return [h.Out(b, f.AltUpPredict(st, Harness.Act(b, pc, new Shape(rows, n * n)), n)),
                    h.Out(b, f.AltUpCorrect(st, Harness.Act(b, act, new Shape(rows, c)), Harness.Act(b, cc, new Shape(rows, n)), n, n - 1))];
            }, 1e-5);
        yield return new Case("FusedRowStats", "match magnitude and Gaussian top-k", (b, isRef) =>
        {
            int rows = 4, c = 33;
            var x = h.Floats(rows * c, 2f); var r = h.Floats(rows * c);
            for (int i = 0; i < c; i++) x[c + i] = 0; // a zero row: the eps floor
            if (isRef) return RowStatsReference(x, r, rows, c);
            var f = b.Fused<IFusedRowStats>() ?? throw new SkipCase("no fused row statistics");
            var xt = Harness.Act(b, x, new Shape(rows, c));
            return [h.Out(b, f.MatchMagnitude(xt, Harness.Act(b, r, new Shape(rows, c)), 1e-5f)), h.Out(b, f.GaussianTopK(xt, 1.6448536f))];
        }, 1e-5);
    }

    private static Output[] AltUpReference(float[] s, float[] pc, float[] act, float[] cc, int rows, int n, int c)
    {
        var p = new float[rows * n * c]; var cor = new float[rows * n * c];
        fixed (float* ps = s, ppc = pc, pp = p, pa = act, pcc = cc, pco = cor)
        {
            AltUpKernels.PredictReference(ps, ppc, pp, rows, n, c);
            AltUpKernels.CorrectReference(ps, pa, pcc, pco, rows, n, c, n - 1);
        }
        return [new Output(p), new Output(cor)];
    }

    private static Output[] RowStatsReference(float[] x, float[] r, int rows, int c)
    {
        var m = new float[rows * c]; var g = new float[rows * c];
        fixed (float* px = x, pr = r, pm = m, pg = g)
        {
            AltUpKernels.MatchMagnitudeReference(px, pr, pm, rows, c, 1e-5f);
            AltUpKernels.GaussianTopKReference(px, pg, rows, c, 1.6448536f);
        }
        return [new Output(m), new Output(g)];
    }

    /// <summary>A case the candidate does not offer (an optional fused form): reported as passed with a note.</summary>
    private sealed class SkipCase(string why) : Exception(why);

    private sealed record AttentionCase(string Name, int Hq, int Hkv, int Dk, int Dv, int Window, int Chunk, float Softcap, bool Sinks, int Temperature,
        bool ValueInKeys, bool Ring, (int Slot, int Start, int Count)[] Seqs);

    private static IEnumerable<AttentionCase> AttentionCases() =>
    [
        new("GQA prefill from 0, no cache", 4, 2, 16, 16, 0, 0, 0, false, 0, false, false, [(0, 0, 5), (1, 0, 3)]),
        new("MHA ragged: prefill chunk + decode", 3, 3, 17, 17, 0, 0, 0, false, 0, false, false, [(0, 6, 4), (2, 11, 1), (1, 0, 2)]),
        new("MQA sliding window over a ring", 2, 1, 8, 8, 3, 0, 0, false, 0, false, true, [(0, 9, 2), (1, 4, 1)]),
        new("chunked", 2, 2, 8, 8, 0, 4, 0, false, 0, false, false, [(0, 5, 4), (1, 2, 1)]),
        new("softcap + sinks", 2, 2, 8, 6, 0, 0, 5f, true, 0, false, false, [(0, 2, 3)]),
        new("length temperature", 2, 1, 8, 8, 0, 0, 30f, false, 3, false, false, [(0, 4, 3)]),
        new("values in keys (MLA latent)", 4, 1, 12, 8, 0, 0, 0, false, 0, true, false, [(0, 3, 2), (1, 0, 1)]),
    ];

    private static Output[] RunAttention(Harness h, IBackend b, AttentionCase c)
    {
        int slots = 3, cap = c.Ring ? Math.Max(c.Window, c.Chunk) + 2 : 24;
        var batch = new StepBatch();
        foreach (var (slot, start, count) in c.Seqs) batch.Add(slot, start, new int[count]);
        b.Prepare(batch);
        int N = batch.Tokens;
        bool needCache = !batch.AllFromStart;
        KvCache? cache = null;
        if (needCache)
        {
            cache = new KvCache(b, slots, cap, c.Hkv, c.Dk, c.Dv, c.Ring, c.Ring ? Math.Max(c.Window, c.Chunk) : 0, c.ValueInKeys);
            b.Upload<float>(h.Floats(checked((int)cache.K.Count)), cache.K);
            if (cache.V is not null) b.Upload<float>(h.Floats(checked((int)cache.V.Count)), cache.V);
        }
        var q = Harness.Act(b, h.Floats(N * c.Hq * c.Dk), new Shape(N, c.Hq, c.Dk));
        var k = Harness.Act(b, h.Floats(N * c.Hkv * c.Dk), new Shape(N, c.Hkv, c.Dk));
        var v = c.ValueInKeys ? null : Harness.Act(b, h.Floats(N * c.Hkv * c.Dv), new Shape(N, c.Hkv, c.Dv));
        var p = new AttentionParams
        {
            Scale = 1f / MathF.Sqrt(c.Dk), Window = c.Window, Chunk = c.Chunk, Softcap = c.Softcap, TemperatureLength = c.Temperature,
            Sinks = c.Sinks ? Harness.Act(b, h.Floats(c.Hq, 2f), new Shape(c.Hq)) : null, ValueIsKeyPrefix = c.ValueInKeys, ValueDim = c.ValueInKeys ? c.Dv : 0,
        };
        return [h.Out(b, b.Attention(q, k, v, cache, batch, p))];
    }

    /// <summary>The delta rule's scalar statement, per sequence over its slot's state, on host memory (reference only).</summary>
    private static unsafe Tensor DeltaRuleReference(IBackend b, float[] q, float[] k, float[] v, float[] g, float[] beta, Tensor state, StepBatch batch,
        int Hk, int Hv, int Dk, int Dv)
    {
        var y = b.Empty(new Shape(batch.Tokens, Hv, Dv));
        fixed (float* pq = q, pk = k, pv = v, pg = g, pb = beta)
            for (int s = 0; s < batch.Sequences; s++)
            {
                int off = batch.Offset[s], T = batch.Count[s], slot = batch.Slot[s];
                DeltaNetKernels.RecurrentReference(pq + (long)off * Hk * Dk, pk + (long)off * Hk * Dk, pv + (long)off * Hv * Dv, pg + (long)off * Hv, pb + (long)off * Hv,
                    (float*)state.Ptr + (long)slot * Hv * Dk * Dv, (float*)y.Ptr + (long)off * Hv * Dv, new DeltaNetKernels.Dims(1, T, Hk, Hv, Dk, Dv));
            }
        return y;
    }
}
