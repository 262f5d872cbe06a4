namespace LlmArch.Compute;

/// <summary>
/// The layout of one forward step over a ragged batch: sequence s has <see cref="Count"/>[s] new tokens at positions
/// <see cref="Start"/>[s] .. Start[s] + Count[s] - 1, stored in cache slot <see cref="Slot"/>[s]; the tokens of all
/// sequences are flattened in sequence order (sequence s's first token is row <see cref="Offset"/>[s]), so a step's
/// activations are <c>[N, C]</c>. Prompt chunks and decode tokens of different sequences mix freely. The host arrays
/// are filled by <see cref="Add"/>; <see cref="IBackend.Prepare"/> puts the device copies (<see cref="Ids"/>,
/// <see cref="Positions"/>, ...) where the ops read them. Reused step after step: no allocation once grown.
/// </summary>
public sealed class StepBatch
{
    private int[] _slot = new int[4], _start = new int[4], _count = new int[4], _offset = new int[4];
    private int[] _ids = new int[16], _pos = new int[16], _seq = new int[16];

    public int Sequences { get; private set; }
    public int Tokens { get; private set; }
    /// <summary>Largest Start + Count over the sequences (the longest context any query sees).</summary>
    public int MaxEnd { get; private set; }
    /// <summary>Largest Count over the sequences.</summary>
    public int MaxCount { get; private set; }

    public ReadOnlySpan<int> Slot => _slot.AsSpan(0, Sequences);
    public ReadOnlySpan<int> Start => _start.AsSpan(0, Sequences);
    public ReadOnlySpan<int> Count => _count.AsSpan(0, Sequences);
    public ReadOnlySpan<int> Offset => _offset.AsSpan(0, Sequences);
    /// <summary>Token ids <c>[N]</c>.</summary>
    public ReadOnlySpan<int> TokenIds => _ids.AsSpan(0, Tokens);
    /// <summary>Position of each token <c>[N]</c>.</summary>
    public ReadOnlySpan<int> TokenPositions => _pos.AsSpan(0, Tokens);
    /// <summary>Sequence index (not slot) of each token <c>[N]</c>.</summary>
    public ReadOnlySpan<int> TokenSequence => _seq.AsSpan(0, Tokens);

    /// <summary>Every sequence has the same number of new tokens (activations can be seen as <c>[S, T, C]</c>).</summary>
    public bool Uniform
    {
        get
        {
            for (int s = 1; s < Sequences; s++) if (_count[s] != _count[0]) return false;
            return true;
        }
    }

    /// <summary>No sequence has tokens before this step (nothing to read from a cache).</summary>
    public bool AllFromStart
    {
        get
        {
            for (int s = 0; s < Sequences; s++) if (_start[s] != 0) return false;
            return true;
        }
    }

    // Device copies, set by IBackend.Prepare for this step.
    /// <summary>Token ids <c>[N]</c> I32.</summary>
    public Tensor? Ids { get; set; }
    /// <summary>Positions <c>[N]</c> I32.</summary>
    public Tensor? Positions { get; set; }
    /// <summary>Per sequence (slot, start, count, offset) <c>[S, 4]</c> I32.</summary>
    public Tensor? SequenceTable { get; set; }
    /// <summary>Sequence index of each token <c>[N]</c> I32.</summary>
    public Tensor? TokenSequences { get; set; }
    /// <summary>Row of each sequence's last token <c>[S]</c> I32 (for lastOnly logits).</summary>
    public Tensor? LastRows { get; set; }
    /// <summary>Anything a backend keeps per step (a graph key, event handles).</summary>
    public object? BackendState { get; set; }

    public void Clear()
    {
        Sequences = 0; Tokens = 0; MaxEnd = 0; MaxCount = 0;
        Ids = Positions = SequenceTable = TokenSequences = LastRows = null;
    }

    /// <summary>Appends a sequence: <paramref name="tokens"/> at positions start.. in cache slot <paramref name="slot"/>.</summary>
    public void Add(int slot, int start, ReadOnlySpan<int> tokens)
    {
        if (tokens.Length == 0) throw new ArgumentException("a sequence in a step needs at least one token");
        if (slot < 0 || start < 0) throw new ArgumentException($"slot {slot} / start {start} must be >= 0");
        int s = Sequences;
        if (s == _slot.Length)
        {
            int n = s * 2;
            Array.Resize(ref _slot, n); Array.Resize(ref _start, n); Array.Resize(ref _count, n); Array.Resize(ref _offset, n);
        }
        int N = Tokens + tokens.Length;
        if (N > _ids.Length)
        {
            int n = Math.Max(N, _ids.Length * 2);
            Array.Resize(ref _ids, n); Array.Resize(ref _pos, n); Array.Resize(ref _seq, n);
        }
        _slot[s] = slot; _start[s] = start; _count[s] = tokens.Length; _offset[s] = Tokens;
        tokens.CopyTo(_ids.AsSpan(Tokens));
        for (int i = 0; i < tokens.Length; i++) { _pos[Tokens + i] = start + i; _seq[Tokens + i] = s; }
        Tokens = N;
        Sequences = s + 1;
        MaxEnd = Math.Max(MaxEnd, start + tokens.Length);
        MaxCount = Math.Max(MaxCount, tokens.Length);
    }

    /// <summary>Host copy of the per-sequence table (slot, start, count, offset), <c>[S * 4]</c>.</summary>
    public void WriteSequenceTable(Span<int> dst)
    {
        for (int s = 0; s < Sequences; s++)
        {
            dst[4 * s] = _slot[s]; dst[4 * s + 1] = _start[s]; dst[4 * s + 2] = _count[s]; dst[4 * s + 3] = _offset[s];
        }
    }

    /// <summary>Host copy of each sequence's last-token row, <c>[S]</c>.</summary>
    public void WriteLastRows(Span<int> dst)
    {
        for (int s = 0; s < Sequences; s++) dst[s] = _offset[s] + _count[s] - 1;
    }
}
