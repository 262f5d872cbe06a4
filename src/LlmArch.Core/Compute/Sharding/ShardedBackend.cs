using System.Runtime.CompilerServices;

namespace LlmArch.Compute.Sharding;

/// <summary>How a <see cref="ShardedBackend"/> splits weights over its ranks.</summary>
public sealed record ShardingOptions
{
    /// <summary>Tensor parallelism: every 2-D weight is split by output rows (q/k/v/o, gate/up/down, the LM head,
    /// vocabulary rows of the embedding); outputs are gathered after each product.</summary>
    public bool TensorParallel { get; init; } = true;
    /// <summary>Expert parallelism: stacked expert weights <c>[E, out, in]</c> are split by expert; each rank computes only
    /// the (token, expert) pairs it owns and the partial sums are reduced.</summary>
    public bool ExpertParallel { get; init; } = true;
}

/// <summary>
/// Several devices as one backend: tensor and expert parallelism without any change to model code. Activations,
/// caches and small weights are replicated on every rank; each rank holds a slice of every large weight (the memory
/// map is read per slice, so a GPU uploads only its part). A product against a row-split weight runs on every rank over
/// its rows and the outputs are all-gathered; an embedding lookup reads each row on the rank that holds it (-1 ids
/// elsewhere give zeros) and the rows are all-reduced; experts split by expert compute only their own (token, slot)
/// pairs and the partial outputs are all-reduced. Every other op runs on each rank over its replica. The result equals
/// one device's up to the order of floating-point sums inside a product. Collectives go through
/// <see cref="ICollectives"/>: in-process copies for CPU ranks (tests), NCCL for GPUs.
/// </summary>
public sealed class ShardedBackend : IBackend
{
    private readonly IBackend[] _ranks;
    private readonly ICollectives _comm;
    private readonly ShardingOptions _options;
    private readonly ConditionalWeakTable<KvCache, KvCache[]> _caches = new();
    private readonly ConditionalWeakTable<RopeTable, RopeTable[]> _ropes = new();
    private readonly ConditionalWeakTable<ExpertWeights, ExpertWeights[]> _experts = new();

    public ShardedBackend(IReadOnlyList<IBackend> ranks, ICollectives? collectives = null, ShardingOptions? options = null)
    {
        if (ranks.Count < 1) throw new ArgumentException("a sharded backend needs at least one rank");
        _ranks = ranks.ToArray();
        _comm = collectives ?? new HostCollectives();
        _options = options ?? new ShardingOptions();
        PlacedBytes = new long[_ranks.Length];
    }

    public int Ranks => _ranks.Length;
    /// <summary>Weight bytes placed on each rank (split weights count only the slice a rank holds).</summary>
    public long[] PlacedBytes { get; }
    /// <summary>Weights split over the ranks / replicated on every rank.</summary>
    public int SplitWeights { get; private set; }
    public int ReplicatedWeights { get; private set; }
    public DeviceKind Device => _ranks[0].Device;
    public string Name => $"{_ranks.Length} x {_ranks[0].Name} ({(_options.TensorParallel ? "tensor" : "")}{(_options.TensorParallel && _options.ExpertParallel ? "+" : "")}{(_options.ExpertParallel ? "expert" : "")} parallel)";
    public int Threads => _ranks[0].Threads;

    /// <summary>A tensor's parts, one per rank: replicas, or contiguous slices along axis 0 of a weight.</summary>
    internal sealed class Parts(Tensor[] parts, int[]? bounds, Tensor? host)
    {
        public readonly Tensor[] Of = parts;
        /// <summary>For a split weight: rank r holds rows [Bounds[r], Bounds[r+1]) of axis 0; null for replicas.</summary>
        public readonly int[]? Bounds = bounds;
        /// <summary>For a split weight: the whole host tensor, replicated on demand for an op that needs it whole.</summary>
        public readonly Tensor? Host = host;
        public Tensor[]? Whole;
        public bool Split => Bounds is not null;
    }

    private Tensor Wrap(Tensor[] parts, Shape shape, DType dtype, int[]? bounds = null, string name = "", Tensor? host = null) =>
        new(dtype, shape, 0, new Parts(parts, bounds, host), name) { Device = Device };

    private Tensor Replicated(Func<IBackend, Tensor> make)
    {
        var parts = new Tensor[_ranks.Length];
        for (int r = 0; r < _ranks.Length; r++) parts[r] = make(_ranks[r]);
        return Wrap(parts, parts[0].Shape, parts[0].DType, null, parts[0].Name);
    }

    private static Parts P(Tensor t) => t.Owner as Parts ?? throw new ArgumentException($"tensor '{t.Name}' {t.Shape} does not belong to this sharded backend");

    /// <summary>Rank r's replica of an activation or weight (a split weight that an op needs whole is placed whole once).</summary>
    private Tensor R(Tensor t, int r)
    {
        var p = P(t);
        if (!p.Split) return p.Of[r];
        lock (p) p.Whole ??= _ranks.Select(b => b.PlaceWeight(p.Host!)).ToArray();
        return p.Whole[r];
    }

    private Tensor? Ro(Tensor? t, int r) => t is null ? null : R(t, r);

    private void Each(Action<IBackend, int> op)
    {
        for (int r = 0; r < _ranks.Length; r++) op(_ranks[r], r);
    }

    private Tensor Map(Func<IBackend, int, Tensor> op)
    {
        var parts = new Tensor[_ranks.Length];
        for (int r = 0; r < _ranks.Length; r++) parts[r] = op(_ranks[r], r);
        return Wrap(parts, parts[0].Shape, parts[0].DType, null, parts[0].Name);
    }

    // ---------------- memory ----------------

    public Tensor Allocate(DType dtype, Shape shape, string name) => Replicated(b => b.Allocate(dtype, shape, name));
    public void Free(Tensor t) { var p = P(t); for (int r = 0; r < _ranks.Length; r++) _ranks[r].Free(p.Of[r]); }
    public Tensor Empty(Shape shape, DType dtype = DType.F32) => Replicated(b => b.Empty(shape, dtype));
    public void ResetScratch() { foreach (var b in _ranks) b.ResetScratch(); }

    public Tensor View(Tensor x, Shape shape, long offset = 0)
    {
        var p = P(x);
        if (p.Split) throw new ArgumentException($"cannot view split weight '{x.Name}'");
        return Map((b, r) => b.View(p.Of[r], shape, offset));
    }

    public void Upload<T>(ReadOnlySpan<T> values, Tensor x, long offset = 0) where T : unmanaged
    {
        for (int r = 0; r < _ranks.Length; r++) _ranks[r].Upload(values, R(x, r), offset);
    }

    public void Download<T>(Tensor x, Span<T> dst, long offset = 0) where T : unmanaged => _ranks[0].Download(R(x, 0), dst, offset);
    public void Copy(Tensor src, Tensor dst) => Each((b, r) => b.Copy(R(src, r), R(dst, r)));
    public void Fill(Tensor x, float value) => Each((b, r) => b.Fill(R(x, r), value));

    /// <summary>
    /// Splits a weight when it is large enough to matter and its layout allows: 2-D row-major weights by rows (tensor
    /// parallel; FP8 only on whole 128-row scale blocks), stacked expert weights by expert (expert parallel).
    /// Anything else is replicated. Each rank places only its slice.
    /// </summary>
    public Tensor PlaceWeight(Tensor host)
    {
        int n = _ranks.Length;
        bool stacked = host.Shape.Rank == 3, matrix = host.Shape.Rank == 2 && !host.ColumnMajor;
        bool split = n > 1 && host.Ptr != 0 && host.Shape[0] >= n
            && (stacked ? _options.ExpertParallel : matrix && _options.TensorParallel)
            && (host.Scales is null || stacked || host.ScaleBlock.Rows == 1 || host.Shape[0] % (host.ScaleBlock.Rows * n) == 0);
        if (!split)
        {
            ReplicatedWeights++;
            for (int r = 0; r < n; r++) PlacedBytes[r] += host.ByteCount;
            return Wrap(_ranks.Select(b => b.PlaceWeight(host)).ToArray(), host.Shape, host.DType, null, host.Name);
        }
        SplitWeights++;
        int rows = host.Shape[0], unit = !stacked && host.Scales is not null ? host.ScaleBlock.Rows : 1;
        int units = (rows + unit - 1) / unit;
        var bounds = new int[n + 1];
        for (int r = 0; r <= n; r++) bounds[r] = Math.Min(rows, (int)((long)units * r / n) * unit);
        var parts = new Tensor[n];
        for (int r = 0; r < n; r++)
        {
            var slice = RowSlice(host, bounds[r], bounds[r + 1] - bounds[r]);
            PlacedBytes[r] += slice.ByteCount;
            parts[r] = _ranks[r].PlaceWeight(slice);
        }
        return Wrap(parts, host.Shape, host.DType, bounds, host.Name, host);
    }

    /// <summary>Rows [start, start + count) of axis 0 of a host tensor, as a view over the same memory (scales sliced alike).</summary>
    private static Tensor RowSlice(Tensor t, int start, int count)
    {
        long per = t.Count / t.Shape[0];
        var shape = t.Shape.Rank switch
        {
            2 => new Shape(count, t.Shape[1]),
            3 => new Shape(count, t.Shape[1], t.Shape[2]),
            _ => new Shape(count, t.Shape[1], t.Shape[2], t.Shape[3]),
        };
        var v = new Tensor(t.DType, shape, t.Ptr + (nint)DTypes.StorageBytes(t.DType, per * start), t.Owner, t.Name) { ColumnMajor = t.ColumnMajor };
        if (t.Scales is { } s)
        {
            // Scales follow axis 0 in units of the scale block's rows (stacked scales: one entry per expert).
            int scaleUnit = t.Shape.Rank == 3 ? 1 : t.ScaleBlock.Rows;
            var sv = RowSlice(s, start / scaleUnit, (count + scaleUnit - 1) / scaleUnit);
            BlockScales.Attach(v, sv, t.ScaleBlock.Rows, t.ScaleBlock.Cols);
        }
        return v;
    }

    public void Prepare(StepBatch batch)
    {
        var shadows = batch.BackendState as StepBatch[];
        if (shadows is null || shadows.Length != _ranks.Length)
            batch.BackendState = shadows = Enumerable.Range(0, _ranks.Length).Select(_ => new StepBatch()).ToArray();
        for (int r = 0; r < _ranks.Length; r++)
        {
            var s = shadows[r];
            s.Clear();
            for (int q = 0; q < batch.Sequences; q++) s.Add(batch.Slot[q], batch.Start[q], batch.TokenIds.Slice(batch.Offset[q], batch.Count[q]));
            _ranks[r].Prepare(s);
        }
        batch.Ids = Wrap(shadows.Select(s => s.Ids!).ToArray(), shadows[0].Ids!.Shape, DType.I32);
        batch.Positions = Wrap(shadows.Select(s => s.Positions!).ToArray(), shadows[0].Positions!.Shape, DType.I32);
        batch.TokenSequences = Wrap(shadows.Select(s => s.TokenSequences!).ToArray(), shadows[0].TokenSequences!.Shape, DType.I32);
        batch.SequenceTable = Wrap(shadows.Select(s => s.SequenceTable!).ToArray(), shadows[0].SequenceTable!.Shape, DType.I32);
        batch.LastRows = Wrap(shadows.Select(s => s.LastRows!).ToArray(), shadows[0].LastRows!.Shape, DType.I32);
    }

    private static StepBatch B(StepBatch batch, int r) => ((StepBatch[])batch.BackendState!)[r];

    // ---------------- products ----------------

    public Tensor MatMul(Tensor x, Tensor w, Tensor? bias = null)
    {
        var p = P(w);
        if (!p.Split) return Map((b, r) => b.MatMul(R(x, r), p.Of[r], Ro(bias, r)));
        // Each rank multiplies by its rows; the outputs are gathered along the last dim, then the bias is added.
        var partial = new Tensor[_ranks.Length];
        for (int r = 0; r < _ranks.Length; r++) partial[r] = _ranks[r].MatMul(R(x, r), p.Of[r]);
        var y = Empty(CpuShapes.WithLast(x.Shape, w.Shape[0]));
        _comm.AllGather(_ranks, partial, P(y).Of, axis: -1);
        if (bias is not null) BinaryInPlace(y, bias, BinaryOp.Add);
        return y;
    }

    public Tensor BatchMatMul(Tensor a, Tensor b, bool transposeB)
    {
        var p = P(b);
        if (!p.Split) return Map((be, r) => be.BatchMatMul(R(a, r), p.Of[r], transposeB));
        if (!transposeB || p.Bounds is null) throw new ArgumentException($"batch product with split '{b.Name}' needs transposeB");
        // Split along the batch dim: each rank takes its batch entries of a, the results are gathered along dim 0.
        var partial = new Tensor[_ranks.Length];
        for (int r = 0; r < _ranks.Length; r++)
        {
            int lo = p.Bounds[r], n = p.Bounds[r + 1] - lo;
            partial[r] = _ranks[r].BatchMatMul(_ranks[r].Slice(R(a, r), lo, n, axis: 0), p.Of[r], true);
        }
        var y = Empty(new Shape(a.Shape[0], a.Shape[1], transposeB ? b.Shape[1] : b.Shape[2]));
        _comm.AllGather(_ranks, partial, P(y).Of, axis: 0);
        return y;
    }

    public Tensor MatMulById(Tensor x, ExpertWeights w, Tensor ids, Tensor? bias = null)
    {
        var local = _experts.GetValue(w, ew => SplitExperts(ew));
        var stackParts = w.Stacked is { } st ? P(st) : null;
        if (stackParts is not { Split: true })
        {
            // Replicated or per-expert weights (each expert's rows split by tensor parallelism): like MatMul.
            bool rowSplit = w.Stacked is null && P(w.Experts[0]).Split;
            if (!rowSplit) return Map((b, r) => b.MatMulById(R(x, r), local[r], R(ids, r), Ro(bias, r)));
            var partial = new Tensor[_ranks.Length];
            for (int r = 0; r < _ranks.Length; r++) partial[r] = _ranks[r].MatMulById(R(x, r), local[r], R(ids, r));
            var y = Empty(new Shape(ids.Shape[0], ids.Shape[1], w.Out));
            _comm.AllGather(_ranks, partial, P(y).Of, axis: -1);
            if (bias is not null) BinaryInPlace(y, View(Gather(bias, View(ids, new Shape(checked((int)ids.Count)))), y.Shape), BinaryOp.Add);
            return y;
        }
        // Expert parallel: ids outside a rank's experts become -1 (zero rows there); partial outputs are summed.
        var bounds = stackParts.Bounds!;
        var outs = new Tensor[_ranks.Length];
        for (int r = 0; r < _ranks.Length; r++)
        {
            var b = _ranks[r];
            var idf = b.Cast(R(ids, r), DType.F32);
            float lo = bounds[r], hi = bounds[r + 1];
            // own = (id >= lo) · (id < hi) = (id >= lo) - (id >= hi); local id = own · (id - lo + 1) - 1
            var own = b.Binary(GreaterEqual(b, idf, lo), GreaterEqual(b, idf, hi), BinaryOp.Sub);
            var localIds = b.Cast(b.Unary(b.Binary(own, b.Unary(idf, UnaryOp.Affine, 1f, 1f - lo), BinaryOp.Mul), UnaryOp.Affine, 1f, -1f), DType.I32);
            // A bias [E, out] is split over the same experts (its rows are the experts).
            var lb = bias is null ? null : P(bias).Split ? P(bias).Of[r] : b.Slice(R(bias, r), bounds[r], bounds[r + 1] - bounds[r], axis: 0);
            outs[r] = b.MatMulById(R(x, r), local[r], localIds, lb);
        }
        _comm.AllReduceSum(_ranks, outs);
        return Wrap(outs, outs[0].Shape, DType.F32);
    }

    private static Tensor GreaterEqual(IBackend b, Tensor x, float v)
    {
        var c = b.Empty(new Shape(1));
        b.Fill(c, v);
        return b.Binary(x, c, BinaryOp.GreaterEqual);
    }

    /// <summary>Each rank's view of an expert set: its slice of a split stack, or its replica / row slice of each expert.</summary>
    private ExpertWeights[] SplitExperts(ExpertWeights w)
    {
        var r = new ExpertWeights[_ranks.Length];
        for (int i = 0; i < r.Length; i++)
            r[i] = w.Stacked is { } st
                ? ExpertWeights.FromStacked(P(st).Of[i])
                : ExpertWeights.FromList(w.Experts.Select(e => P(e).Of[i]).ToArray());
        return r;
    }

    // ---------------- element-wise and rows: every rank over its replica ----------------

    public Tensor Unary(Tensor x, UnaryOp op, float a = 0f, float b = 0f) => Map((be, r) => be.Unary(R(x, r), op, a, b));
    public Tensor Binary(Tensor a, Tensor b, BinaryOp op) => Map((be, r) => be.Binary(R(a, r), R(b, r), op));
    public void BinaryInPlace(Tensor a, Tensor b, BinaryOp op) => Each((be, r) => be.BinaryInPlace(R(a, r), R(b, r), op));
    public Tensor Glu(Tensor gate, Tensor? up, in ExpertActivation act, bool interleaved = false)
    {
        var a = act;
        return Map((be, r) => be.Glu(R(gate, r), Ro(up, r), a, interleaved));
    }
    public Tensor Cast(Tensor x, DType dtype) => Map((b, r) => b.Cast(R(x, r), dtype));
    public Tensor RmsNorm(Tensor x, Tensor? w, float eps, float offset = 0f) => Map((b, r) => b.RmsNorm(R(x, r), Ro(w, r), eps, offset));
    public Tensor LayerNorm(Tensor x, Tensor? w, Tensor? bb, float eps) => Map((b, r) => b.LayerNorm(R(x, r), Ro(w, r), Ro(bb, r), eps));
    public Tensor Softmax(Tensor x) => Map((b, r) => b.Softmax(R(x, r)));

    public (Tensor Values, Tensor Indices) TopK(Tensor x, int k)
    {
        var v = new Tensor[_ranks.Length]; var i = new Tensor[_ranks.Length];
        for (int r = 0; r < _ranks.Length; r++) (v[r], i[r]) = _ranks[r].TopK(R(x, r), k);
        return (Wrap(v, v[0].Shape, DType.F32), Wrap(i, i[0].Shape, DType.I32));
    }

    public Tensor Reduce(Tensor x, ReduceOp op, int axis = -1) => Map((b, r) => b.Reduce(R(x, r), op, axis));

    // ---------------- data movement ----------------

    public Tensor Gather(Tensor table, Tensor ids)
    {
        var p = P(table);
        if (!p.Split) return Map((b, r) => b.Gather(p.Of[r], R(ids, r)));
        // Vocabulary parallel: each rank reads the rows it holds (-1 elsewhere gives zeros); the rows are summed.
        var outs = new Tensor[_ranks.Length];
        for (int r = 0; r < _ranks.Length; r++)
        {
            var b = _ranks[r];
            var idf = b.Cast(R(ids, r), DType.F32);
            float lo = p.Bounds![r], hi = p.Bounds[r + 1];
            var own = b.Binary(GreaterEqual(b, idf, lo), GreaterEqual(b, idf, hi), BinaryOp.Sub);
            var local = b.Cast(b.Unary(b.Binary(own, b.Unary(idf, UnaryOp.Affine, 1f, 1f - lo), BinaryOp.Mul), UnaryOp.Affine, 1f, -1f), DType.I32);
            outs[r] = b.Gather(p.Of[r], local);
        }
        _comm.AllReduceSum(_ranks, outs);
        return Wrap(outs, outs[0].Shape, DType.F32);
    }

    public Tensor TakeAlong(Tensor x, Tensor idx) => Map((b, r) => b.TakeAlong(R(x, r), R(idx, r)));
    public void ScatterAdd(Tensor dst, Tensor ids, Tensor src) => Each((b, r) => b.ScatterAdd(R(dst, r), R(ids, r), R(src, r)));
    public Tensor Slice(Tensor x, int start, int len, int axis = -1) => Map((b, r) => b.Slice(R(x, r), start, len, axis));
    public Tensor Concat(Tensor a, Tensor c, int axis = -1) => Map((b, r) => b.Concat(R(a, r), R(c, r), axis));
    public Tensor Transpose(Tensor x, int d0, int d1) => Map((b, r) => b.Transpose(R(x, r), d0, d1));

    // ---------------- sequence ----------------

    private RopeTable RankRope(RopeTable t, int r, int positions)
    {
        var per = _ropes.GetValue(t, tt => Enumerable.Range(0, _ranks.Length).Select(_ => new RopeTable(tt.InverseFrequencies.ToArray(), tt.AttentionScaling)).ToArray());
        per[r].Ensure(_ranks[r], Math.Max(positions, t.Positions));
        return per[r];
    }

    private KvCache? RankCache(KvCache? c, int r)
    {
        if (c is null) return null;
        var per = _caches.GetValue(c, cc => Enumerable.Range(0, _ranks.Length).Select(i => cc.Over(P(cc.K).Of[i], cc.V is null ? null : P(cc.V).Of[i])).ToArray());
        return per[r];
    }

    public void Rope(Tensor x, StepBatch batch, RopeTable table, bool interleaved) =>
        Each((b, r) => b.Rope(R(x, r), B(batch, r), RankRope(table, r, batch.MaxEnd), interleaved));

    public Tensor Attention(Tensor q, Tensor k, Tensor? v, KvCache? cache, StepBatch batch, in AttentionParams p)
    {
        var prm = p;
        return Map((b, r) =>
        {
            var pr = prm;
            pr.Sinks = Ro(prm.Sinks, r);
            return b.Attention(R(q, r), R(k, r), Ro(v, r), RankCache(cache, r), B(batch, r), pr);
        });
    }

    public void CacheWrite(KvCache cache, Tensor k, Tensor? v, StepBatch batch) =>
        Each((b, r) => b.CacheWrite(RankCache(cache, r)!, R(k, r), Ro(v, r), B(batch, r)));

    public Tensor CausalConv1d(Tensor x, Tensor weight, Tensor state, StepBatch batch, bool silu) =>
        Map((b, r) => b.CausalConv1d(R(x, r), R(weight, r), R(state, r), B(batch, r), silu));

    /// <summary>Fused forms are not offered: the compositions run on every rank.</summary>
    public T? Fused<T>() where T : class => null;
}

/// <summary>Shape helpers shared by backends.</summary>
internal static class CpuShapes
{
    public static Shape WithLast(Shape s, int last) => Cpu.CpuBackend.WithLast(s, last);
}
