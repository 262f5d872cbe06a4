using LlmArch.Compute.Cpu;
using LlmArch.Native;
using static LlmArch.Native.CudaDriver;

namespace LlmArch.Compute.Cuda;

// Matrix products and the deferred fusion of decode-sized GEMVs.
//
// Fusion (Options.Fuse) works by deferring, never by pattern-matching model code: RmsNorm on at most 8 rows returns
// its output unwritten and records itself; MatMuls on at most 8 rows queue up while they share one input (q/k/v,
// gate/up, router + shared expert). The next op decides: a Glu of the two queued outputs becomes one gate/up launch
// that also writes act(gate)·up; an in-place Add of the one queued output into the residual becomes one launch with
// a residual epilogue; anything else (any op that reads device data) first runs what is pending as it would have run
// (one multi-segment GEMV launch, whose prologue normalizes x when the queue reads the pending norm's output, block 0
// writing that output too). Every pending output is therefore written before anything can read it.
public sealed unsafe partial class CudaBackend
{
    private readonly record struct PendingNorm(Tensor X, Tensor? W, Tensor Y, float Eps, float Offset);
    private struct PendingGemv { public Tensor W; public Tensor? Bias; public Tensor Y; }

    /// <summary>A deferred row program: RMSNorm x → y and/or RoPE in place on y (see k_rowprog).</summary>
    private struct RowEntry
    {
        public Tensor X, Y;
        public Tensor? W;
        public float Eps, Offset;
        public bool Norm, Rope, Interleaved;
        public int Rows, Dim, Heads, Rot;
        public nint Cos, Sin, Pos;
    }

    private readonly RowEntry[] _rows = new RowEntry[2];
    private int _rowCount;
    private readonly PendingGemv[] _gemv = new PendingGemv[4];
    private int _gemvCount, _gemvM, _gemvK;
    private bool _gemvVec;
    private DType _gemvDType;
    private Tensor? _gemvX;
    private PendingNorm? _gemvNorm;

    /// <summary>Runs deferred work: the queued GEMVs, then the pending row programs (norms, RoPE).</summary>
    internal void Flush()
    {
        if (_gemvCount > 0) LaunchGemvQueue(null, null, default);
        if (_rowCount > 0) LaunchRows();
    }

    /// <summary>The single pending plain RMSNorm of at most 8 rows (what a GEMV prologue can absorb), or null.</summary>
    private PendingNorm? _pendingNorm
    {
        get => _rowCount == 1 && _rows[0].Norm && !_rows[0].Rope && _rows[0].Rows <= 8
            ? new PendingNorm(_rows[0].X, _rows[0].W, _rows[0].Y, _rows[0].Eps, _rows[0].Offset) : null;
        set { if (value is null) { _rowCount = 0; _rows[0] = default; } }
    }

    private bool OverlapsPendingRows(Tensor t)
    {
        for (int i = 0; i < _rowCount; i++)
            if (Overlaps(t, _rows[i].Y) || Overlaps(t, _rows[i].X)) return true;
        return false;
    }

    /// <summary>Queues a row program; runs what is pending first when it would conflict or the queue is full.</summary>
    private void QueueRow(in RowEntry e)
    {
        if (_gemvCount > 0) LaunchGemvQueue(null, null, default);
        if (_rowCount == _rows.Length || OverlapsPendingRows(e.X) || OverlapsPendingRows(e.Y)) LaunchRows();
        _rows[_rowCount++] = e;
    }

    private void LaunchRows()
    {
        int n = _rowCount;
        _rowCount = 0;
        var p0 = Prog(_rows[0]);
        var p1 = n > 1 ? Prog(_rows[1]) : default;
        _rows[0] = _rows[1] = default;
        int total = p0.Rows + (n > 1 ? p1.Rows : 0);
        if (total == 0) return;
        int dim = Math.Max(p0.Dim, p1.Dim);
        void** args = stackalloc void*[] { &p0, &p1, &n };
        Launch(_k.RowProg, (uint)total, 1, 1, dim >= 512 ? 256u : 128u, 0, args, "k_rowprog");
    }

    private static RowProg Prog(in RowEntry e) => new()
    {
        X = (ulong)e.X.Ptr, Y = (ulong)e.Y.Ptr, W = (ulong)(e.W?.Ptr ?? 0), CosT = (ulong)e.Cos, SinT = (ulong)e.Sin, Pos = (ulong)e.Pos,
        Rows = e.Rows, Dim = e.Dim, Norm = e.Norm ? 1 : 0, Rope = e.Rope ? 1 : 0, Heads = Math.Max(1, e.Heads), Rot = e.Rot,
        Interleaved = e.Interleaved ? 1 : 0, Eps = e.Eps, Offset = e.Offset,
    };

    public Tensor MatMul(Tensor x, Tensor w, Tensor? bias = null)
    {
        int K = x.Shape.Last;
        if (w.Shape.Rank != 2 || w.Shape[1] != K)
            throw new LlmArchInputException($"weight '{w.Name}' has shape {w.Shape}; expected [*, {K}]");
        RequireF32(x, "matmul input"); RequireF32(bias, "bias");
        RequireDevice(w, "weight");
        Bind();
        int M = checked((int)x.Shape.Rows), O = w.Shape[0];
        var y = Empty(CpuBackend.WithLast(x.Shape, O));
        if (M == 0 || O == 0) { Flush(); return y; }
        if (M <= 8 && !w.ColumnMajor)
        {
            bool fromNorm = _pendingNorm is { } pn && pn.Y.Ptr == x.Ptr && pn.Y.Count == x.Count;
            nint xin = fromNorm ? _pendingNorm!.Value.X.Ptr : x.Ptr;
            bool vec = GemvVectorizable(w, K, xin);
            if (Options.Fuse && _gemvCount is > 0 and < 4 && _gemvX!.Ptr == x.Ptr && _gemvX.Count == x.Count && _gemvVec == vec
                && _gemvDType == Kind(w) && _gemvK == K && _gemvM == M)
            {
                _gemv[_gemvCount++] = new PendingGemv { W = w, Bias = bias, Y = y };
                return y;
            }
            if (_gemvCount > 0) LaunchGemvQueue(null, null, default);
            if (_rowCount > 0 && !fromNorm) LaunchRows();
            _gemvNorm = fromNorm ? _pendingNorm : null;
            _pendingNorm = null;
            _gemvX = x; _gemvM = M; _gemvK = K; _gemvVec = vec; _gemvDType = Kind(w);
            _gemv[0] = new PendingGemv { W = w, Bias = bias, Y = y };
            _gemvCount = 1;
            if (!Options.Fuse) LaunchGemvQueue(null, null, default);
            return y;
        }
        Flush();
        if (w.ColumnMajor)
        {
            if (DTypes.IsQuantized(w.DType)) throw new ArgumentException($"column-major weight '{w.Name}' is {w.DType}; only plain dtypes are read column-major");
            if (M <= 8)
            {
                var d = Desc(w, O, K);
                nint px = x.Ptr, pb = bias?.Ptr ?? 0, py = y.Ptr;
                void** args = stackalloc void*[] { &px, &d, &pb, &py, &M, &K, &O };
                Launch(_k.GemvColMajor, (uint)((O + 255) / 256), 1, 1, 256, 0, args, "k_gemv_colmajor");
                return y;
            }
        }
        if (Options.Bf16 && w.DType == DType.BF16 && !w.ColumnMajor && M >= 16 && K % 8 == 0 && LtReady())
        {
            LtMatMul(x, w, bias, y, M, K, O);
            return y;
        }
        LaunchGemm(x.Ptr, y.Ptr, bias?.Ptr ?? 0, Desc(w, O, K), M, O, K, 1, 0, 0);
        return y;
    }

    /// <summary>Whether the 16-byte-load GEMV can read w (alignment, row length, block layout).</summary>
    private static bool GemvVectorizable(Tensor w, int K, nint x)
    {
        if (x % 16 != 0 || w.Ptr % 16 != 0 || K % 4 != 0 || w.ColumnMajor) return false;
        var (br, bc) = w.ScaleBlock;
        return Kind(w) switch
        {
            DType.F32 => true,
            DType.BF16 or DType.F16 => K % 8 == 0,
            DType.F8E4M3 => K % 16 == 0 && (w.Scales is null || bc % 16 == 0),
            DType.Q8_0 => K % 16 == 0 && bc % 16 == 0 && br == 1,
            DType.MXFP4 => K % 32 == 0 && bc == 32 && br == 1,
            _ => false,
        };
    }

    /// <summary>What the kernels see: Q8_0 weights live on the GPU as int8 values plus F32 scales per 32 (split from
    /// llama.cpp's 34-byte blocks at upload, see <see cref="PlaceWeight"/>), an I8 tensor with scales attached.</summary>
    internal static DType Kind(Tensor w) => w.DType == DType.I8 && w.Scales is not null ? DType.Q8_0 : w.DType;

    private nint GemvKernel(DType t, bool vec, bool m2) => !vec ? _k.GemvGeneric : t switch
    {
        DType.F32 => m2 ? _k.GemvF32M2 : _k.GemvF32,
        DType.BF16 => m2 ? _k.GemvBF16M2 : _k.GemvBF16,
        DType.F16 => m2 ? _k.GemvF16M2 : _k.GemvF16,
        DType.F8E4M3 => m2 ? _k.GemvFp8M2 : _k.GemvFp8,
        DType.Q8_0 => m2 ? _k.GemvQ8M2 : _k.GemvQ8,
        DType.MXFP4 => m2 ? _k.GemvMxfp4M2 : _k.GemvMxfp4,
        _ => _k.GemvGeneric,
    };

    private static GemvSeg Seg(in PendingGemv g, int K, nint residual) => new()
    {
        W = Desc(g.W, g.W.Shape[0], K), Y = (ulong)g.Y.Ptr, Bias = (ulong)(g.Bias?.Ptr ?? 0), Residual = (ulong)residual, Rows = g.W.Shape[0],
    };

    /// <summary>Launches the queued GEMVs as one kernel (optionally with a residual epilogue or the gate/up pair mode).</summary>
    private void LaunchGemvQueue(Tensor? residual, Tensor? gluOut, ExpertActivation act)
    {
        int n = _gemvCount;
        _gemvCount = 0;
        var norm = _gemvNorm;
        _gemvNorm = null;
        var x = _gemvX!;
        _gemvX = null;
        int K = _gemvK, M = _gemvM;
        bool pair = gluOut is not null;
        var a = new GemvArgs
        {
            X = (ulong)(norm is { } nm ? nm.X.Ptr : x.Ptr), M = M, K = K, Nseg = pair ? 2 : n, PairMode = pair ? 1 : 0,
            GluOut = (ulong)(gluOut?.Ptr ?? 0), GluKind = (int)act.Kind, GluLimit = act.Limit, GluAlpha = act.Alpha,
        };
        if (norm is { } p)
        {
            a.NormMode = p.W is null ? 1 : 2;
            a.NormW = (ulong)(p.W?.Ptr ?? 0);
            a.NormOut = (ulong)p.Y.Ptr;
            a.NormEps = p.Eps; a.NormOffset = p.Offset;
        }
        nint res = residual?.Ptr ?? 0;
        int total = 0;
        if (n > 0) { a.Seg0 = Seg(_gemv[0], K, res); total += a.Seg0.Rows; }
        if (n > 1) { a.Seg1 = Seg(_gemv[1], K, res); total += a.Seg1.Rows; }
        if (n > 2) { a.Seg2 = Seg(_gemv[2], K, res); total += a.Seg2.Rows; }
        if (n > 3) { a.Seg3 = Seg(_gemv[3], K, res); total += a.Seg3.Rows; }
        a.TotalRows = pair ? a.Seg0.Rows : total;
        bool m2 = M <= 2;
        // Rows per warp (x read once for all of them, more loads in flight) and warps per row (split K), so that the
        // grid keeps about 16 warps per SM streaming.
        int vpc = _gemvVec ? 16 / (_gemvDType == DType.Q8_0 ? 1 : DTypes.ElementSize(_gemvDType)) * (_gemvDType == DType.MXFP4 ? 2 : 1) : 1;
        int unroll = vpc <= 8 ? 4 : 2;
        // Prefer several rows per warp (their loads go out together: more bytes in flight per lane) and split K
        // across warps for parallelism; fall back to fewer rows per warp only for small matrices.
        int target = Multiprocessors * 16;
        int rows = a.TotalRows, chunks = Math.Max(1, K / vpc);
        int rpw = !_gemvVec ? 1 : (m2 ? 4 : 2) / (pair ? 2 : 1);
        int groups, wpr;
        while (true)
        {
            groups = (rows + rpw - 1) / rpw;
            wpr = 1;
            while (wpr < 8 && groups * wpr < target && chunks / (32 * wpr * 2) >= unroll) wpr *= 2;
            if (rpw == 1 || groups * wpr >= target / 2) break;
            rpw /= 2;
        }
        a.Wpr = wpr; a.Rpw = rpw;
        for (int i = 0; i < n; i++) _gemv[i] = default;
        uint blocks = (uint)((groups + 8 / wpr - 1) / (8 / wpr));
        void* pa = &a;
        Launch(GemvKernel(_gemvDType, _gemvVec, m2), blocks, 1, 1, 256, 0, &pa,
            Profiling ? $"k_gemv {_gemvDType}{(_gemvVec ? "" : " generic")} M={M} rows={rows} K={K} segs={n}{(pair ? " gate/up" : "")}{(norm is null ? "" : " +norm")}{(residual is null ? "" : " +residual")} rpw={rpw} wpr={wpr}" : "k_gemv");
    }

    private bool TryFuseGlu(Tensor gate, Tensor up, in ExpertActivation act, out Tensor y)
    {
        y = null!;
        if (!Options.Fuse || _gemvCount != 2 || _gemv[0].Y.Ptr != gate.Ptr || _gemv[1].Y.Ptr != up.Ptr
            || gate.Count != up.Count || _gemv[0].Y.Count != gate.Count || _gemv[1].Y.Count != up.Count
            || _gemv[0].W.Shape[0] != _gemv[1].W.Shape[0] || _rowCount > 0) return false;
        y = Empty(gate.Shape);
        LaunchGemvQueue(null, y, act);
        return true;
    }

    private static bool Overlaps(Tensor a, Tensor b) =>
        a.Ptr < b.Ptr + (nint)b.ByteCount && b.Ptr < a.Ptr + (nint)a.ByteCount;

    private bool TryFuseResidual(Tensor a, Tensor b)
    {
        if (!Options.Fuse || _gemvCount != 1 || _gemv[0].Y.Ptr != b.Ptr || _gemv[0].Y.Count != b.Count || a.Count != b.Count) return false;
        // The epilogue writes a while other blocks still read the input: only when they cannot overlap.
        if (Overlaps(a, _gemvX!) || _gemvNorm is { } nm && Overlaps(a, nm.X) || Overlaps(a, b)) return false;
        if (_rowCount > 0) return false;
        LaunchGemvQueue(a, null, default);
        return true;
    }

    private void LaunchGemm(nint x, nint y, nint bias, WeightDesc w, int M, int N, int K, int batches, long xBatch, long yBatch)
    {
        var g = new GemmArgs { X = (ulong)x, Y = (ulong)y, Bias = (ulong)bias, W = w, M = M, N = N, K = K, XBatch = xBatch, YBatch = yBatch };
        void* pg = &g;
        Launch(_k.Gemm, (uint)((M + 127) / 128), (uint)((N + 127) / 128), (uint)batches, 256, 0, &pg, Profiling ? $"k_gemm M={M} N={N} K={K} x{batches}" : "k_gemm");
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
        if (!transposeB && b.DType != DType.F32) throw new ArgumentException($"batch matmul without transpose needs an F32 b (got {b.DType})");
        if (Bt > 65535) throw new ArgumentException($"batch matmul over {Bt} batches (at most 65535)");
        Begin();
        var y = Empty(new Shape(Bt, M, N));
        if ((long)Bt * M * N == 0) return y;
        var d = Desc(b, N, K);
        // Without transpose, b [K, N] is the logical [N, K] stored column-major.
        d.ColMajor = transposeB ? (b.ColumnMajor ? 1 : 0) : 1;
        if (d.ColMajor == 1 && DTypes.IsQuantized(b.DType)) throw new ArgumentException($"column-major {b.DType} operand '{b.Name}' is not supported");
        d.BatchStride = bb == 1 ? 0 : (long)N * K;
        d.ScaleBatchStride = b.Scales is { } sc && bb > 1 ? sc.Count / bb : 0;
        LaunchGemm(a.Ptr, y.Ptr, 0, d, M, N, K, Bt, (long)M * K, (long)M * N);
        return y;
    }

    // ---------------- mixture of experts ----------------

    /// <summary>Device tables of each expert's data and scale pointers (built once per expert set).</summary>
    private sealed class ExpertTables
    {
        public ulong Data, Scales;
        public bool Aligned;
    }

    private ExpertTables Tables(ExpertWeights w)
    {
        if (w.DeviceData is ExpertTables t) return t;
        int E = w.Count;
        var data = new ulong[E];
        var scales = new ulong[E];
        bool aligned = true;
        for (int e = 0; e < E; e++)
        {
            RequireDevice(w.Experts[e], "expert weight");
            data[e] = (ulong)w.Experts[e].Ptr;
            scales[e] = (ulong)(w.Experts[e].Scales?.Ptr ?? 0);
            aligned &= data[e] % 16 == 0;
        }
        t = new ExpertTables { Aligned = aligned };
        t.Data = Malloc(E * 8, "expert table");
        fixed (ulong* p = data) CopyToDevice(t.Data, p, E * 8, "expert table");
        if (w.Experts[0].Scales is not null)
        {
            t.Scales = Malloc(E * 8, "expert scale table");
            fixed (ulong* p = scales) CopyToDevice(t.Scales, p, E * 8, "expert scale table");
        }
        PersistentBytes += E * 16;
        w.DeviceData = t;
        return t;
    }

    public Tensor MatMulById(Tensor x, ExpertWeights w, Tensor ids, Tensor? bias = null)
    {
        RequireI32(ids, "expert ids"); RequireF32(x, "expert input"); RequireF32(bias, "expert bias");
        if (ids.Shape.Rank != 2 || x.Shape.Rank != 3 || x.Shape[0] != ids.Shape[0] || (x.Shape[1] != 1 && x.Shape[1] != ids.Shape[1]) || x.Shape[2] != w.In)
            throw new ArgumentException($"expert matmul: x {x.Shape}, ids {ids.Shape}, experts [{w.Count}, {w.Out}, {w.In}]");
        if (bias is not null && (bias.Shape.Rank != 2 || bias.Shape[0] != w.Count || bias.Shape[1] != w.Out))
            throw new ArgumentException($"expert bias {bias.Shape} for [{w.Count}, {w.Out}]");
        Begin();
        int N = ids.Shape[0], S = ids.Shape[1], E = w.Count, K = w.In, O = w.Out;
        var y = Empty(new Shape(N, S, O));
        int pairs = N * S;
        if (pairs == 0 || O == 0) return y;
        var tables = Tables(w);
        var e0 = w.Experts[0];
        if (e0.ColumnMajor && DTypes.IsQuantized(e0.DType)) throw new ArgumentException($"column-major {e0.DType} experts '{e0.Name}' are not supported");
        var desc = Desc(e0, O, K);
        int shared = x.Shape[1] == 1 ? 1 : 0;
        if (pairs <= 64)
        {
            var m = new MoeGemvArgs
            {
                X = (ulong)x.Ptr, Y = (ulong)y.Ptr, Bias = (ulong)(bias?.Ptr ?? 0), Ids = (ulong)ids.Ptr, ExpData = tables.Data, ExpScales = tables.Scales,
                W = desc, Pairs = pairs, Slots = S, XShared = shared, K = K, O = O, Experts = E,
                Vec = tables.Aligned && GemvVectorizable(e0, K, x.Ptr) && (x.Ptr + (long)K * 4) % 16 == 0 ? 1 : 0,
            };
            void* pm = &m;
            if (m.Vec == 1) Launch(_k.MoeGemvVec, (uint)((O + 31) / 32), (uint)pairs, 1, 256, 0, &pm, Profiling ? $"k_moe_gemv {e0.DType} pairs={pairs} O={O} K={K}" : "k_moe_gemv");
            else Launch(_k.MoeGemv, (uint)((O + 7) / 8), (uint)pairs, 1, 256, 0, &pm, Profiling ? $"k_moe_gemv generic {e0.DType} pairs={pairs} O={O} K={K}" : "k_moe_gemv");
            return y;
        }
        // Prefill: sort the pairs by expert, then one grouped GEMM over (expert, tile of its rows). Pairs with id -1
        // (another device's expert) are in no tile: their rows stay zero.
        LaunchFill(y, 0f);
        var work = Empty(new Shape(3 * (E + 1) + pairs), DType.I32);
        nint rowStart = work.Ptr, tileStart = work.Ptr + (E + 1) * 4, fill = work.Ptr + 2 * (E + 1) * 4, rowMap = work.Ptr + 3 * (E + 1) * 4;
        nint pid = ids.Ptr;
        void** sa = stackalloc void*[] { &pid, &pairs, &E, &rowStart, &tileStart, &rowMap, &fill };
        Launch(_k.MoeSort, 1, 1, 1, 1024, (uint)(E * 4), sa, "k_moe_sort");
        var g = new GemmArgs
        {
            X = (ulong)x.Ptr, Y = (ulong)y.Ptr, Bias = (ulong)(bias?.Ptr ?? 0), W = desc, RowMap = (ulong)rowMap, TileStart = (ulong)tileStart,
            RowStart = (ulong)rowStart, ExpData = tables.Data, ExpScales = tables.Scales, M = pairs, N = O, K = K, XShared = shared, Slots = S, Experts = E,
        };
        void* pg = &g;
        Launch(_k.Gemm, (uint)((pairs + 127) / 128 + E), (uint)((O + 127) / 128), 1, 256, 0, &pg, "k_gemm (grouped)");
        return y;
    }

    // ---------------- cuBLASLt (bf16 prefill) ----------------

    private nint _lt;
    private ulong _ltWorkspace;
    private const long LtWorkspaceBytes = 32L << 20;
    private bool _ltFailed;

    private bool LtReady()
    {
        if (_lt != 0) return true;
        if (_ltFailed || !CublasLt.TryLoad()) { _ltFailed = true; return false; }
        nint h;
        int r = CublasLt.cublasLtCreate(&h);
        if (r != 0) { _ltFailed = true; return false; }
        _lt = h;
        _ltWorkspace = Malloc(LtWorkspaceBytes, "cuBLASLt workspace");
        return true;
    }

    /// <summary>y [M, O] = bf16(x) [M, K] · W [O, K]ᵀ, FP32 accumulation and output (column-major: D[O, M] = Wᵀᵀ X).</summary>
    private void LtMatMul(Tensor x, Tensor w, Tensor? bias, Tensor y, int M, int K, int O)
    {
        var xb = Cast(x, DType.BF16);
        nint desc = 0, la = 0, lb = 0, lc = 0, pref = 0;
        try
        {
            CublasLt.Check(CublasLt.cublasLtMatmulDescCreate(&desc, CublasLt.ComputeF32, CublasLt.DataF32), "cublasLtMatmulDescCreate");
            int opT = CublasLt.OpT, opN = CublasLt.OpN;
            CublasLt.Check(CublasLt.cublasLtMatmulDescSetAttribute(desc, CublasLt.DescTransA, &opT, 4), "cublasLtMatmulDescSetAttribute");
            CublasLt.Check(CublasLt.cublasLtMatmulDescSetAttribute(desc, CublasLt.DescTransB, &opN, 4), "cublasLtMatmulDescSetAttribute");
            CublasLt.Check(CublasLt.cublasLtMatrixLayoutCreate(&la, CublasLt.DataBF16, (ulong)K, (ulong)O, K), "cublasLtMatrixLayoutCreate");
            CublasLt.Check(CublasLt.cublasLtMatrixLayoutCreate(&lb, CublasLt.DataBF16, (ulong)K, (ulong)M, K), "cublasLtMatrixLayoutCreate");
            CublasLt.Check(CublasLt.cublasLtMatrixLayoutCreate(&lc, CublasLt.DataF32, (ulong)O, (ulong)M, O), "cublasLtMatrixLayoutCreate");
            CublasLt.Check(CublasLt.cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
            ulong ws = LtWorkspaceBytes;
            CublasLt.Check(CublasLt.cublasLtMatmulPreferenceSetAttribute(pref, CublasLt.PrefMaxWorkspace, &ws, 8), "cublasLtMatmulPreferenceSetAttribute");
            CublasLt.HeuristicResult h;
            int found = 0;
            CublasLt.Check(CublasLt.cublasLtMatmulAlgoGetHeuristic(_lt, desc, la, lb, lc, lc, pref, 1, &h, &found), "cublasLtMatmulAlgoGetHeuristic");
            if (found == 0) throw new CudaException($"cuBLASLt has no algorithm for a bf16 GEMM of [{M}, {K}] x [{O}, {K}]");
            float alpha = 1f, beta = 0f;
            CublasLt.Check(CublasLt.cublasLtMatmul(_lt, desc, &alpha, (void*)w.Ptr, la, (void*)xb.Ptr, lb, &beta, (void*)y.Ptr, lc, (void*)y.Ptr, lc,
                h.Algo, (void*)_ltWorkspace, (nuint)LtWorkspaceBytes, Stream), "cublasLtMatmul");
        }
        finally
        {
            if (pref != 0) CublasLt.cublasLtMatmulPreferenceDestroy(pref);
            if (la != 0) CublasLt.cublasLtMatrixLayoutDestroy(la);
            if (lb != 0) CublasLt.cublasLtMatrixLayoutDestroy(lb);
            if (lc != 0) CublasLt.cublasLtMatrixLayoutDestroy(lc);
            if (desc != 0) CublasLt.cublasLtMatmulDescDestroy(desc);
        }
        if (bias is not null) LaunchBinary(y, bias, y, y.Shape, BinaryOp.Add);
    }
}
