namespace LlmArch.Compute;

/// <summary>
/// The key/value storage of one attention layer for every cache slot: K <c>[Slots, Capacity, Hkv, Dk]</c>,
/// V <c>[Slots, Capacity, Hkv, Dv]</c> (no V when values are a prefix of keys: MLA's latent cache). A layer that only
/// looks back a bounded distance (sliding window, chunk) keeps a ring: position p lives at p % Capacity, and the
/// capacity is the bound plus <see cref="Slack"/> positions so a sequence can be rewound that far. Allocated by the
/// backend; written by <see cref="IBackend.CacheWrite"/>, read by <see cref="IBackend.Attention"/>.
/// </summary>
public sealed class KvCache
{
    public Tensor K { get; }
    public Tensor? V { get; }
    public int Slots { get; }
    public int Capacity { get; }
    public bool Ring { get; }
    /// <summary>For a ring: how many positions past its window it keeps (how far a sequence may be trimmed back).</summary>
    public int Slack { get; }
    public int KvHeads { get; }
    public int KeyDim { get; }
    public int ValueDim { get; }
    /// <summary>For a ring: the window or chunk it serves (how far back a query looks).</summary>
    public int Bound { get; }

    /// <param name="bound">for a ring, the window or chunk size; the capacity must be at least that.</param>
    public KvCache(IBackend b, int slots, int capacity, int kvHeads, int keyDim, int valueDim, bool ring = false, int bound = 0,
        bool valuesInKeys = false, DType dtype = DType.F32, string name = "kv")
    {
        if (ring && (bound <= 0 || bound > capacity)) throw new ArgumentException($"KV cache {name}: ring of {capacity} for a bound of {bound}");
        if (slots <= 0 || capacity <= 0 || kvHeads <= 0 || keyDim <= 0 || valueDim <= 0)
            throw new ArgumentException($"KV cache {name}: slots {slots}, capacity {capacity}, heads {kvHeads}, dims {keyDim}/{valueDim} must be positive");
        Slots = slots; Capacity = capacity; Ring = ring; Bound = ring ? bound : 0; Slack = ring ? capacity - bound : 0; KvHeads = kvHeads; KeyDim = keyDim; ValueDim = valueDim;
        K = b.Allocate(dtype, new Shape(slots, capacity, kvHeads, keyDim), name + ".k");
        V = valuesInKeys ? null : b.Allocate(dtype, new Shape(slots, capacity, kvHeads, valueDim), name + ".v");
    }

    private KvCache(Tensor k, Tensor? v, KvCache like)
    {
        K = k; V = v; Slots = like.Slots; Capacity = like.Capacity; Ring = like.Ring; Bound = like.Bound; Slack = like.Slack;
        KvHeads = like.KvHeads; KeyDim = like.KeyDim; ValueDim = like.ValueDim;
    }

    /// <summary>The same cache layout over other storage (a backend that spans devices gives each device its part).</summary>
    public KvCache Over(Tensor k, Tensor? v) => new(k, v, this);

    public long Bytes => K.ByteCount + (V?.ByteCount ?? 0);

    /// <summary>Copies the first <paramref name="tokens"/> positions of slot src into slot dst (a ring copies what it holds).</summary>
    public void CopySlot(IBackend b, int src, int dst, int tokens)
    {
        if (src == dst || tokens <= 0) return;
        int rows = Ring ? Capacity : Math.Min(tokens, Capacity);
        CopyRows(b, K, src, dst, rows);
        if (V is not null) CopyRows(b, V, src, dst, rows);
    }

    private void CopyRows(IBackend b, Tensor t, int src, int dst, int rows)
    {
        long row = (long)t.Shape[2] * t.Shape[3];
        var shape = new Shape(rows, t.Shape[2], t.Shape[3]);
        b.Copy(b.View(t, shape, (long)src * Capacity * row), b.View(t, shape, (long)dst * Capacity * row));
    }

    /// <summary>Whether a sequence of <paramref name="length"/> tokens can be cut back to <paramref name="keep"/> (a ring overwrote older positions).</summary>
    public bool CanTrim(int length, int keep) => !Ring || length - keep <= Capacity - Bound;

    public void Free(IBackend b)
    {
        b.Free(K);
        if (V is not null) b.Free(V);
    }
}
