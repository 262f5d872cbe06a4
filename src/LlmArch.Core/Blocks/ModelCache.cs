using LlmArch.Compute;

namespace LlmArch.Blocks;

/// <summary>A per-layer cache state other than KV (linear attention's conv + recurrent state), one entry per slot.</summary>
public interface IRecurrentState
{
    long Bytes { get; }
    /// <summary>Copies slot src's state into slot dst (dst may belong to another state object of the same shape).</summary>
    void CopySlot(IBackend b, int src, IRecurrentState dst, int dstSlot);
    /// <summary>Zeroes a slot (a new sequence starts from the empty state).</summary>
    void Reset(IBackend b, int slot);
    /// <summary>An empty state of the same shape with <paramref name="slots"/> slots.</summary>
    IRecurrentState CreateLike(IBackend b, int slots);
    void Free(IBackend b);
}

/// <summary>
/// The cache protocol: everything the sequences of one model carry between steps, in slots. Each slot holds one
/// sequence: its length, and for every layer its KV rows (<see cref="KvCache"/>; layers that share KV point at the
/// same object) or its recurrent state (<see cref="IRecurrentState"/>). Slots are acquired and released by the
/// scheduler; a sequence can be cut back (<see cref="Trim"/>: speculative rewind, an edited conversation), and a
/// prefix can be copied into another slot (<see cref="CopyPrefix"/>: a shared prompt). Recurrent states cannot be
/// rewound by position: they keep a checkpoint per slot (<see cref="Checkpoint"/>), and Trim/CopyPrefix return the
/// length they could actually keep, from which the caller re-feeds the rest. All memory is the backend's.
/// </summary>
public sealed class ModelCache : IDisposable
{
    private readonly int[] _length;
    private readonly bool[] _used;
    private readonly int[] _checkpointLength;
    private IRecurrentState?[]? _checkpoints;

    public IBackend Backend { get; }
    public int Slots { get; }
    /// <summary>Positions each slot can hold.</summary>
    public int Capacity { get; }
    /// <summary>Per layer: its KV storage, or null.</summary>
    public KvCache?[] Kv { get; }
    /// <summary>Per layer: its recurrent state, or null.</summary>
    public IRecurrentState?[] State { get; }

    public ModelCache(IBackend backend, int layers, int slots, int capacity)
    {
        if (slots <= 0 || capacity <= 0) throw new ArgumentException($"a cache needs positive slots and capacity (got {slots}, {capacity})");
        Backend = backend; Slots = slots; Capacity = capacity;
        Kv = new KvCache?[layers]; State = new IRecurrentState?[layers];
        _length = new int[slots]; _used = new bool[slots]; _checkpointLength = new int[slots];
        Array.Fill(_checkpointLength, -1);
    }

    /// <summary>Tokens held by a slot (the position of its next token).</summary>
    public int Length(int slot) => _length[slot];

    /// <summary>Compatibility for a batch of equal-length sequences in slots 0..Slots-1: slot 0's length; setting it sets every slot.</summary>
    public int Position
    {
        get => _length[0];
        set { for (int i = 0; i < Slots; i++) SetLength(i, value); }
    }

    public int Batch => Slots;
    public int MaxTokens => Capacity;

    /// <summary>Called by the model after a step appended <paramref name="tokens"/> tokens to a slot.</summary>
    public void Advance(int slot, int tokens) => _length[slot] += tokens;

    private void SetLength(int slot, int length)
    {
        if (length < 0 || length > Capacity) throw new ArgumentOutOfRangeException(nameof(length), $"{length} outside [0, {Capacity}]");
        _length[slot] = length;
    }

    /// <summary>Takes a free slot (empty, zeroed recurrent state) or returns -1 when all are in use.</summary>
    public int Acquire()
    {
        for (int i = 0; i < Slots; i++)
            if (!_used[i])
            {
                _used[i] = true;
                Clear(i);
                return i;
            }
        return -1;
    }

    /// <summary>Takes a specific free slot (its contents are kept: prefix reuse).</summary>
    public bool TryAcquire(int slot)
    {
        if (_used[slot]) return false;
        _used[slot] = true;
        return true;
    }

    public void Release(int slot) => _used[slot] = false;
    public bool InUse(int slot) => _used[slot];

    /// <summary>Empties a slot: length 0, recurrent states zeroed, checkpoint dropped.</summary>
    public void Clear(int slot)
    {
        _length[slot] = 0;
        _checkpointLength[slot] = -1;
        foreach (var s in State) s?.Reset(Backend, slot);
    }

    private IEnumerable<KvCache> UniqueKv() => Kv.Where(k => k is not null).Distinct()!;
    private bool HasRecurrent => State.Any(s => s is not null);

    /// <summary>Records the slot's recurrent states at its current length, so a later <see cref="Trim"/> can return to it.</summary>
    public void Checkpoint(int slot)
    {
        if (!HasRecurrent) { _checkpointLength[slot] = _length[slot]; return; }
        _checkpoints ??= State.Select(s => s?.CreateLike(Backend, Slots)).ToArray();
        for (int i = 0; i < State.Length; i++) State[i]?.CopySlot(Backend, slot, _checkpoints[i]!, slot);
        _checkpointLength[slot] = _length[slot];
    }

    /// <summary>
    /// Cuts a slot back to at most <paramref name="length"/> tokens and returns the length it now holds: exactly that
    /// for attention-only models (unless a ring overwrote positions it would need), the last checkpoint at or before it
    /// for recurrent layers, or 0 (start over). The caller re-feeds tokens from the returned length on.
    /// </summary>
    public int Trim(int slot, int length)
    {
        int cur = _length[slot];
        if (length >= cur) return cur;
        int keep = Math.Max(length, 0);
        if (HasRecurrent)
        {
            int c = _checkpointLength[slot];
            if (c < 0 || c > keep) keep = 0;
            else
            {
                keep = c;
                for (int i = 0; i < State.Length; i++) _checkpoints![i]?.CopySlot(Backend, slot, State[i]!, slot);
            }
        }
        foreach (var kv in UniqueKv())
            if (!kv.CanTrim(cur, keep)) keep = 0;
        if (keep == 0) Clear(slot);
        _length[slot] = keep;
        return keep;
    }

    /// <summary>
    /// Copies the first <paramref name="tokens"/> tokens of slot src into slot dst and returns how many it copied (fewer
    /// when recurrent states or rings cannot represent that prefix: then the last checkpoint, or 0).
    /// </summary>
    public int CopyPrefix(int src, int dst, int tokens)
    {
        int len = _length[src];
        int n = Math.Min(tokens, len);
        if (HasRecurrent && n != len) n = _checkpointLength[src] is int c && c >= 0 && c <= n ? c : 0;
        foreach (var kv in UniqueKv())
            if (!kv.CanTrim(len, n)) n = 0;
        Clear(dst);
        if (n == 0) return 0;
        foreach (var kv in UniqueKv()) kv.CopySlot(Backend, src, dst, n);
        for (int i = 0; i < State.Length; i++)
        {
            if (State[i] is not { } s) continue;
            if (n == len) s.CopySlot(Backend, src, s, dst);
            else _checkpoints![i]!.CopySlot(Backend, src, s, dst);
        }
        _length[dst] = n;
        return n;
    }

    public long Bytes => UniqueKv().Sum(k => k.Bytes) + State.Sum(s => s?.Bytes ?? 0);

    public void Dispose()
    {
        foreach (var kv in UniqueKv()) kv.Free(Backend);
        foreach (var s in State) s?.Free(Backend);
        if (_checkpoints is not null) foreach (var s in _checkpoints) s?.Free(Backend);
    }
}
