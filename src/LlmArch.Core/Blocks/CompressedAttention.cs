using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Blocks;

/// <summary>Which long-range branch a DeepSeek-V4 attention layer has.</summary>
public enum CompressionKind
{
    /// <summary>Sliding window only.</summary>
    None,
    /// <summary>Compressed sparse attention (CSA): overlapping windows of 2m tokens every m, a lightning indexer picks top-k entries.</summary>
    Sparse,
    /// <summary>Heavily compressed attention (HCA): one entry per m' tokens, every entry attended.</summary>
    Heavy,
}

/// <summary>Shape of one DeepSeek-V4 attention layer.</summary>
public sealed record CompressedAttentionSpec
{
    public required int Hidden { get; init; }
    public required int Heads { get; init; }
    public required int HeadDim { get; init; }
    public required int QLoraRank { get; init; }
    /// <summary>Trailing RoPE dims of every head (qk_rope_head_dim).</summary>
    public required int RopeDim { get; init; }
    public required int Window { get; init; }
    public required int OGroups { get; init; }
    public required int OLoraRank { get; init; }
    public CompressionKind Compression { get; init; }
    /// <summary>Tokens per compressed entry (m for CSA, m' for HCA).</summary>
    public int Rate { get; init; }
    public int IndexHeads { get; init; }
    public int IndexHeadDim { get; init; }
    public int IndexTopK { get; init; }
    public float NormEps { get; init; } = 1e-6f;
    /// <summary>RoPE of q and the local K=V (main for sliding layers, compress for CSA/HCA), and its inverse (negated frequencies).</summary>
    public required RopeTable Rope { get; init; }
    public required RopeTable InverseRope { get; init; }
    /// <summary>The compressed entries' RoPE (compress_rope_theta with YaRN), read at each entry's first-token position.</summary>
    public RopeTable? CompressRope { get; init; }

    /// <summary>Compressed series per token: CSA keeps two (the current and the next window's halves), HCA one.</summary>
    public int Series => Compression == CompressionKind.Sparse ? 2 : 1;
    /// <summary>Projected values per token kept for the compressors: [kv | gate] (+ the indexer's [kv | gate] for CSA).</summary>
    public int RawWidth => 2 * Series * HeadDim + (Compression == CompressionKind.Sparse ? 4 * IndexHeadDim : 0);
}

/// <summary>
/// DeepSeek-V4 attention: shared-KV MQA (one head of width D is both key and value) over a sliding window, plus for
/// CSA/HCA layers a long-range branch of compressed entries.
/// <list type="bullet">
/// <item>q = RMS(wq_b(q_norm(wq_a(x)))) per head (weight-free), kv = norm(wkv(x)); RoPE on the trailing rope dims in
/// interleaved pairs; local keys are the window (p-W, p] of kv.</item>
/// <item>Compressor: per token [kv | gate] = wkv(x), wgate(x) + ape[pos mod m]; a window's entry is the per-channel
/// softmax(gate)-weighted sum of its kv rows, RMS-normed and roped at the window's first position. CSA windows are 2m
/// wide with stride m: entry w mixes window w-1's first half-series with window w's second. A query at p sees entry w
/// only once its window is complete ((w+1)·m ≤ p+1).</item>
/// <item>CSA's lightning indexer compresses its own keys the same way (index_head_dim) and picks, per query,
/// the top-k visible entries by Σ_h w_h·ReLU(q_h·k) (queries from wq_b of the q LoRA, roped); HCA attends to all.</item>
/// <item>One softmax over [window keys | compressed entries | a learned per-head sink]; the output's rope dims are
/// rotated back (inverse RoPE at the query position), then the grouped low-rank output wo_b(wo_a per head group).</item>
/// </list>
/// Caches (all positional, so a sequence can be rewound within the rings' slack): the window ring (Kv[layer]), a ring of
/// the last 2m projected [kv | gate] rows (Kv[raw]), the compressed entries (Kv[pool]) and, for CSA, the indexer's
/// entries (Kv[indexPool]). Everything is a composition of generic ops. x <c>[N, C]</c> → <c>[N, C]</c>.
/// </summary>
public sealed class CompressedAttention : IMixer
{
    public CompressedAttentionSpec Spec { get; }
    private readonly int _rawEntry, _poolEntry, _indexPoolEntry;
    private readonly Linear _wqA, _wqB, _wkv, _wo_b;
    private readonly RmsNorm _qNorm, _kvNorm;
    private readonly Tensor _woA, _sinks, _positions;
    private readonly Linear? _cKv, _cGate, _iKv, _iGate, _iWqB, _iWeights;
    private readonly Tensor? _cApe, _iApe;
    private readonly RmsNorm? _cNorm, _iNorm;
    /// <summary>CSA: score every visible entry with the unselected ones masked, instead of gathering the top-k (tests compare the two).</summary>
    public bool DenseMasked { get; set; }

    public CompressedAttention(WeightSource w, string prefix, CompressedAttentionSpec s, int rawEntry, int poolEntry, int indexPoolEntry, Tensor positions)
    {
        Spec = s; _rawEntry = rawEntry; _poolEntry = poolEntry; _indexPoolEntry = indexPoolEntry; _positions = positions;
        int H = s.Heads, D = s.HeadDim, C = s.Hidden;
        if (H % s.OGroups != 0) throw new ConfigException($"{w.Location}: o_groups {s.OGroups} does not divide num_attention_heads {H}");
        if (s.RopeDim > D || s.RopeDim % 2 != 0) throw new ConfigException($"{w.Location}: rope dims {s.RopeDim} must be even and at most head_dim {D}");
        _wqA = Linear.Load(w, $"{prefix}.wq_a", C, s.QLoraRank, false);
        _qNorm = RmsNorm.Load(w, $"{prefix}.q_norm.weight", s.QLoraRank, s.NormEps);
        _wqB = Linear.Load(w, $"{prefix}.wq_b", s.QLoraRank, H * D, false);
        _wkv = Linear.Load(w, $"{prefix}.wkv", C, D, false);
        _kvNorm = RmsNorm.Load(w, $"{prefix}.norm.weight", D, s.NormEps);
        int per = H * D / s.OGroups;
        _woA = w.Place(w.GetHost($"{prefix}.wo_a.weight", [(long)s.OGroups * s.OLoraRank, per]).Reshape(new Shape(s.OGroups, s.OLoraRank, per)));
        _wo_b = Linear.Load(w, $"{prefix}.wo_b", s.OGroups * s.OLoraRank, C, false);
        _sinks = w.GetF32($"{prefix}.attn_sink", H);
        if (s.Compression == CompressionKind.None) return;
        if (s.Rate < 1) throw new ConfigException($"{w.Location}: compress rate of {prefix} must be positive (got {s.Rate})");
        string c = $"{prefix}.compressor";
        int width = s.Series * D;
        _cKv = Linear.Load(w, $"{c}.wkv", C, width, false);
        _cGate = Linear.Load(w, $"{c}.wgate", C, width, false);
        _cApe = w.GetF32($"{c}.ape", s.Rate, width);
        _cNorm = RmsNorm.Load(w, $"{c}.norm.weight", D, s.NormEps);
        if (s.Compression != CompressionKind.Sparse) return;
        if (s.IndexHeads <= 0 || s.IndexHeadDim < s.RopeDim || s.IndexTopK <= 0)
            throw new ConfigException($"{w.Location}: index_n_heads, index_head_dim (>= rope dims) and index_topk must be positive (got {s.IndexHeads}/{s.IndexHeadDim}/{s.IndexTopK})");
        string ix = $"{prefix}.indexer";
        _iKv = Linear.Load(w, $"{ix}.compressor.wkv", C, 2 * s.IndexHeadDim, false);
        _iGate = Linear.Load(w, $"{ix}.compressor.wgate", C, 2 * s.IndexHeadDim, false);
        _iApe = w.GetF32($"{ix}.compressor.ape", s.Rate, 2 * s.IndexHeadDim);
        _iNorm = RmsNorm.Load(w, $"{ix}.compressor.norm.weight", s.IndexHeadDim, s.NormEps);
        _iWqB = Linear.Load(w, $"{ix}.wq_b", s.QLoraRank, s.IndexHeads * s.IndexHeadDim, false);
        _iWeights = Linear.Load(w, $"{ix}.weights_proj", C, s.IndexHeads, false);
    }

    public void CreateCache(IBackend b, ModelCache cache, int layer, int slots, int maxTokens)
    {
        var s = Spec;
        cache.Kv[layer] = Ring(b, slots, maxTokens, s.Window, s.HeadDim, "window");
        s.Rope.Ensure(b, maxTokens); s.InverseRope.Ensure(b, maxTokens); s.CompressRope?.Ensure(b, maxTokens);
        if (s.Compression == CompressionKind.None) return;
        cache.Kv[_rawEntry] = Ring(b, slots, maxTokens, 2 * s.Rate, s.RawWidth, "compressor.raw");
        int entries = maxTokens / s.Rate + 1;
        cache.Kv[_poolEntry] = new KvCache(b, slots, entries, 1, s.HeadDim, s.HeadDim, valuesInKeys: true, name: "compressed");
        if (s.Compression == CompressionKind.Sparse)
            cache.Kv[_indexPoolEntry] = new KvCache(b, slots, entries, 1, s.IndexHeadDim, s.IndexHeadDim, valuesInKeys: true, name: "indexer");
    }

    /// <summary>A ring of the last <paramref name="bound"/> positions (plus rewind slack), or a plain cache when that covers maxTokens.</summary>
    private static KvCache Ring(IBackend b, int slots, int maxTokens, int bound, int width, string name) =>
        bound + AttentionSpec.RewindSlack < maxTokens
            ? new KvCache(b, slots, bound + AttentionSpec.RewindSlack, 1, width, width, ring: true, bound: bound, valuesInKeys: true, name: name)
            : new KvCache(b, slots, maxTokens, 1, width, width, valuesInKeys: true, name: name);

    /// <summary>Rows of positions [from, to) of a slot, read before this step writes (a ring wraps: at most two pieces).</summary>
    private static Tensor? ReadRows(IBackend b, KvCache c, int slot, int from, int to)
    {
        if (to <= from) return null;
        int W = c.KeyDim, cap = c.Capacity;
        long baseOff = (long)slot * cap * W;
        int a = c.Ring ? from % cap : from, n = to - from;
        if (a + n <= cap) return b.View(c.K, new Shape(n, W), baseOff + (long)a * W);
        int first = cap - a;
        return b.Concat(b.View(c.K, new Shape(first, W), baseOff + (long)a * W), b.View(c.K, new Shape(n - first, W), baseOff), 0);
    }

    private static Tensor Join(IBackend b, Tensor? cached, Tensor fresh) => cached is null ? fresh : b.Concat(cached, fresh, 0);

    /// <summary>RoPE on the trailing <c>R</c> dims of x <c>[N, h, D]</c> at the step's positions (in place on a copy).</summary>
    private static Tensor RopeTail(IBackend b, Tensor x, RopeTable table, StepBatch batch)
    {
        int D = x.Shape[2], R = table.RotaryDim;
        var tail = b.Slice(x, D - R, R);
        b.Rope(tail, batch, table, interleaved: true);
        return R == D ? tail : b.Concat(b.Slice(x, 0, D - R), tail);
    }

    /// <summary>Interleaved RoPE on the trailing dims of x <c>[n, D]</c> at explicit positions <c>[n]</c> (I32), from the table's rows.</summary>
    private static Tensor RopeAt(IBackend b, Tensor x, Tensor positions, RopeTable table)
    {
        int n = x.Shape[0], D = x.Shape[1], R = table.RotaryDim, half = R / 2;
        var cos = b.View(b.Gather(table.Cos!, positions), new Shape(n, half, 1));
        var sin = b.View(b.Gather(table.Sin!, positions), new Shape(n, half, 1));
        var pairs = b.View(b.Slice(x, D - R, R), new Shape(n, half, 2));
        var even = b.Slice(pairs, 0, 1); var odd = b.Slice(pairs, 1, 1);
        var re = b.Binary(b.Binary(even, cos, BinaryOp.Mul), b.Binary(odd, sin, BinaryOp.Mul), BinaryOp.Sub);
        var ro = b.Binary(b.Binary(odd, cos, BinaryOp.Mul), b.Binary(even, sin, BinaryOp.Mul), BinaryOp.Add);
        var rotated = b.View(b.Concat(re, ro), new Shape(n, R));
        return R == D ? rotated : b.Concat(b.Slice(x, 0, D - R), rotated);
    }

    /// <summary>
    /// The entries of windows [w0, w0 + nW) from raw rows <c>[rows, ·]</c> starting at position <paramref name="rawLo"/>:
    /// kv and gate are the <paramref name="col"/>.. columns (series·d each), ape the position bias. <c>[nW, d]</c>, normed and roped.
    /// </summary>
    private Tensor Compress(IBackend b, Tensor raw, int rawLo, int w0, int nW, int col, int d, Tensor ape, RmsNorm norm)
    {
        int m = Spec.Rate, series = Spec.Series, width = series * d;
        Tensor Windows(int firstWindow, int count, int c0) =>
            b.View(b.Slice(b.Slice(raw, firstWindow * m - rawLo, count * m, 0), c0, width), new Shape(count, m, width));
        var kv = Windows(w0, nW, col);
        var gate = b.Binary(Windows(w0, nW, col + width), ape, BinaryOp.Add);
        Tensor kvS, gateS;
        if (series == 1) { kvS = kv; gateS = gate; }
        else
        {
            // Slots [window w-1's first series | window w's second series]; before window 0 the slots weigh nothing.
            Tensor prevKv, prevGate;
            int avail = w0 == 0 ? nW - 1 : nW;
            Tensor? pk = avail > 0 ? Windows(w0 + nW - avail - 1, avail, col) : null;
            Tensor? pg = avail > 0 ? b.Binary(Windows(w0 + nW - avail - 1, avail, col + width), ape, BinaryOp.Add) : null;
            if (w0 == 0)
            {
                var zk = b.Empty(new Shape(1, m, width)); b.Fill(zk, 0f);
                var ng = b.Empty(new Shape(1, m, width)); b.Fill(ng, -1e30f);
                prevKv = pk is null ? zk : b.Concat(zk, pk, 0);
                prevGate = pg is null ? ng : b.Concat(ng, pg, 0);
            }
            else { prevKv = pk!; prevGate = pg!; }
            kvS = b.Concat(b.Slice(prevKv, 0, d), b.Slice(kv, d, d), 1);                  // [nW, 2m, d]
            gateS = b.Concat(b.Slice(prevGate, 0, d), b.Slice(gate, d, d), 1);
        }
        // Per-channel softmax over the window's slots, then the weighted sum.
        var e = b.Unary(b.Binary(gateS, b.Reduce(gateS, ReduceOp.Max, 1), BinaryOp.Sub), UnaryOp.Exp);
        var p = b.Binary(e, b.Reduce(e, ReduceOp.Sum, 1), BinaryOp.Div);
        var entry = norm.Forward(b, b.View(b.Reduce(b.Binary(kvS, p, BinaryOp.Mul), ReduceOp.Sum, 1), new Shape(nW, d)));
        var pos = b.Cast(b.Unary(b.View(_positions, new Shape(nW), w0), UnaryOp.Affine, m), DType.I32);
        return RopeAt(b, entry, pos, Spec.CompressRope!);
    }

    public Tensor Forward(IBackend b, Tensor x, ModelCache cache, int layer, StepBatch batch)
    {
        var s = Spec;
        int N = x.Shape[0], H = s.Heads, D = s.HeadDim, m = s.Rate;
        var local = cache.Kv[layer] ?? throw new InvalidOperationException($"layer {layer} has no window cache");
        var qResid = _qNorm.Forward(b, _wqA.Forward(b, x));
        var q = RopeTail(b, b.RmsNorm(b.View(_wqB.Forward(b, qResid), new Shape(N, H, D)), null, s.NormEps), s.Rope, batch);   // [N, H, D]
        var kv = RopeTail(b, b.View(_kvNorm.Forward(b, _wkv.Forward(b, x)), new Shape(N, 1, D)), s.Rope, batch);             // [N, 1, D] keys = values
        Tensor? raw = null, iq = null, iw = null;
        KvCache? rawCache = null, pool = null, ipool = null;
        if (s.Compression != CompressionKind.None)
        {
            rawCache = cache.Kv[_rawEntry]; pool = cache.Kv[_poolEntry];
            raw = b.Concat(_cKv!.Forward(b, x), _cGate!.Forward(b, x));
            if (s.Compression == CompressionKind.Sparse)
            {
                ipool = cache.Kv[_indexPoolEntry];
                raw = b.Concat(raw, b.Concat(_iKv!.Forward(b, x), _iGate!.Forward(b, x)));
                iq = RopeTail(b, b.View(_iWqB!.Forward(b, qResid), new Shape(N, s.IndexHeads, s.IndexHeadDim)), s.CompressRope!, batch);
                iw = b.Unary(_iWeights!.Forward(b, x), UnaryOp.Affine, 1f / MathF.Sqrt(s.IndexHeads));
            }
        }
        var qpos = b.Cast(batch.Positions!, DType.F32);
        var o = b.Empty(new Shape(N, H, D));
        float scale = 1f / MathF.Sqrt(D);
        for (int sq = 0; sq < batch.Sequences; sq++)
        {
            int off = batch.Offset[sq], T = batch.Count[sq], start = batch.Start[sq], end = start + T, slot = batch.Slot[sq];
            var pt = b.View(qpos, new Shape(T, 1), off);
            var qs = b.Slice(q, off, T, 0);                                                              // [T, H, D]
            // Window keys: positions [lo, end), the cached part read before this step writes.
            int lo = Math.Max(0, start - (s.Window - 1));
            var keys = Join(b, ReadRows(b, local, slot, lo, start), b.View(b.Slice(kv, off, T, 0), new Shape(T, D)));
            var kpos = b.View(_positions, new Shape(1, end - lo), lo);
            var outside = b.Binary(b.Binary(kpos, b.Unary(pt, UnaryOp.Affine, 1f, 1f), BinaryOp.GreaterEqual),
                b.Binary(pt, b.Unary(kpos, UnaryOp.Affine, 1f, s.Window), BinaryOp.GreaterEqual), BinaryOp.Add);
            var scores = b.View(b.BatchMatMul(b.View(qs, new Shape(1, T * H, D)), b.View(keys, new Shape(1, end - lo, D)), transposeB: true), new Shape(T, H, end - lo));
            scores = b.Binary(b.Unary(scores, UnaryOp.Affine, scale), b.View(b.Unary(outside, UnaryOp.Affine, -1e30f), new Shape(T, 1, end - lo)), BinaryOp.Add);
            Tensor? values2 = null, scores2 = null;
            bool gathered = false;
            if (s.Compression != CompressionKind.None)
            {
                // New entries: windows completed in this step, from the projected rows of up to two windows back.
                int w0 = start / m, w1 = end / m;
                if (w1 > w0)
                {
                    int rawLo = Math.Max(0, (w0 - (s.Series - 1)) * m);
                    var rows = Join(b, ReadRows(b, rawCache!, slot, rawLo, start), b.Slice(raw!, off, T, 0));
                    var entries = Compress(b, rows, rawLo, w0, w1 - w0, 0, D, _cApe!, _cNorm!);
                    b.Copy(entries, b.View(pool!.K, new Shape(w1 - w0, D), ((long)slot * pool.Capacity + w0) * D));
                    if (s.Compression == CompressionKind.Sparse)
                    {
                        var ientries = Compress(b, rows, rawLo, w0, w1 - w0, 2 * s.Series * D, s.IndexHeadDim, _iApe!, _iNorm!);
                        b.Copy(ientries, b.View(ipool!.K, new Shape(w1 - w0, s.IndexHeadDim), ((long)slot * ipool.Capacity + w0) * s.IndexHeadDim));
                    }
                }
                int E = w1;                                                                               // entries complete by the end of the step
                if (E > 0)
                {
                    // Entry w is visible to the query at p once (w+1)·m <= p+1.
                    var epos = b.Unary(b.View(_positions, new Shape(1, E)), UnaryOp.Affine, m, m);        // (w+1)·m
                    var hidden = b.Unary(b.Binary(epos, b.Unary(pt, UnaryOp.Affine, 1f, 2f), BinaryOp.GreaterEqual), UnaryOp.Affine, -1e30f); // [T, E]
                    var entries = b.View(pool!.K, new Shape(E, D), (long)slot * pool.Capacity * D);
                    if (s.Compression == CompressionKind.Heavy)
                    {
                        scores2 = b.View(b.BatchMatMul(b.View(qs, new Shape(1, T * H, D)), b.View(entries, new Shape(1, E, D)), transposeB: true), new Shape(T, H, E));
                        scores2 = b.Binary(b.Unary(scores2, UnaryOp.Affine, scale), b.View(hidden, new Shape(T, 1, E)), BinaryOp.Add);
                        values2 = b.View(entries, new Shape(1, E, D));
                    }
                    else
                    {
                        // Lightning indexer over the visible entries, then attention over the top-k of them.
                        var ikeys = b.View(ipool!.K, new Shape(1, E, s.IndexHeadDim), (long)slot * ipool.Capacity * s.IndexHeadDim);
                        var isc = b.BatchMatMul(b.View(b.Slice(iq!, off, T, 0), new Shape(1, T * s.IndexHeads, s.IndexHeadDim)), ikeys, transposeB: true);
                        isc = b.Unary(b.Unary(isc, UnaryOp.Relu), UnaryOp.Affine, 1f / MathF.Sqrt(s.IndexHeadDim));
                        var index = b.BatchMatMul(b.View(b.Slice(iw!, off, T, 0), new Shape(T, 1, s.IndexHeads)), b.View(isc, new Shape(T, s.IndexHeads, E)), transposeB: false);
                        int k = Math.Min(s.IndexTopK, E);
                        var idx = b.TopK(b.Binary(b.View(index, new Shape(T, E)), hidden, BinaryOp.Add), k).Indices;               // [T, k]
                        if (DenseMasked)
                        {
                            // Every entry scored, the unselected (and still hidden) ones masked out.
                            var flat = b.Cast(b.Binary(b.Cast(idx, DType.F32), b.Unary(b.View(_positions, new Shape(T, 1)), UnaryOp.Affine, E), BinaryOp.Add), DType.I32);
                            var selected = b.Empty(new Shape(T * E, 1)); b.Fill(selected, 0f);
                            var ones = b.Empty(new Shape(T * k, 1)); b.Fill(ones, 1f);
                            b.ScatterAdd(selected, b.View(flat, new Shape(T * k)), ones);
                            var mask = b.Binary(hidden, b.Unary(b.View(selected, new Shape(T, E)), UnaryOp.Affine, 1e30f, -1e30f), BinaryOp.Add);
                            scores2 = b.View(b.BatchMatMul(b.View(qs, new Shape(1, T * H, D)), b.View(entries, new Shape(1, E, D)), transposeB: true), new Shape(T, H, E));
                            scores2 = b.Binary(b.Unary(scores2, UnaryOp.Affine, scale), b.View(mask, new Shape(T, 1, E)), BinaryOp.Add);
                            values2 = b.View(entries, new Shape(1, E, D));
                        }
                        else
                        {
                            var ids = b.Cast(b.Unary(b.Cast(idx, DType.F32), UnaryOp.Affine, 1f, (float)((long)slot * pool.Capacity)), DType.I32);
                            var picked = b.View(b.Gather(b.View(pool.K, new Shape(pool.Slots * pool.Capacity, D)), b.View(ids, new Shape(T * k))), new Shape(T, k, D));
                            scores2 = b.BatchMatMul(qs, picked, transposeB: true);                                                  // [T, H, k]
                            scores2 = b.Binary(b.Unary(scores2, UnaryOp.Affine, scale), b.View(b.TakeAlong(hidden, idx), new Shape(T, 1, k)), BinaryOp.Add);
                            values2 = picked; gathered = true;
                        }
                    }
                }
            }
            // One softmax over [window | compressed | sink].
            var sink = b.Binary(b.Empty(new Shape(T, H, 1)).Also(t => b.Fill(t, 0f)), b.View(_sinks, new Shape(1, H, 1)), BinaryOp.Add);
            int L = end - lo, E2 = scores2?.Shape[2] ?? 0;
            var all = scores2 is null ? b.Concat(scores, sink) : b.Concat(b.Concat(scores, scores2), sink);
            var probs = b.Softmax(all);
            var y = b.View(b.BatchMatMul(b.View(b.Slice(probs, 0, L), new Shape(1, T * H, L)), b.View(keys, new Shape(1, L, D)), transposeB: false), new Shape(T, H, D));
            if (scores2 is not null)
            {
                var p2 = b.Slice(probs, L, E2);
                var y2 = gathered ? b.BatchMatMul(p2, values2!, transposeB: false)
                    : b.View(b.BatchMatMul(b.View(p2, new Shape(1, T * H, E2)), values2!, transposeB: false), new Shape(T, H, D));
                b.BinaryInPlace(y, y2, BinaryOp.Add);
            }
            b.Copy(y, b.View(o, new Shape(T, H, D), (long)off * H * D));
        }
        b.CacheWrite(local, kv, null, batch);
        if (rawCache is not null) b.CacheWrite(rawCache, b.View(raw!, new Shape(N, 1, s.RawWidth)), null, batch);
        // Undo the values' rotation at the query position, then the grouped low-rank output.
        o = RopeTail(b, o, s.InverseRope, batch);
        var grouped = MlaAttention.HeadLinear(b, b.View(o, new Shape(N, s.OGroups, H * D / s.OGroups)), _woA);             // [N, G, r]
        return _wo_b.Forward(b, b.View(grouped, new Shape(N, s.OGroups * s.OLoraRank)));
    }
}

internal static class TensorExtensions
{
    /// <summary>Runs <paramref name="f"/> on t and returns t (fills scratch tensors inline).</summary>
    public static Tensor Also(this Tensor t, Action<Tensor> f) { f(t); return t; }
}
