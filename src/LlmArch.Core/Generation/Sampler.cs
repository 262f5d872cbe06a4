namespace LlmArch.Generation;

/// <summary>Sampling settings; Temperature 0 means greedy (argmax).</summary>
public sealed record SamplingOptions
{
    public double Temperature { get; init; }
    /// <summary>0 = off.</summary>
    public int TopK { get; init; }
    /// <summary>1 = off.</summary>
    public double TopP { get; init; } = 1.0;
    /// <summary>0 = off.</summary>
    public double MinP { get; init; }
    /// <summary>1 = off. HF semantics: logits of seen tokens divided (if positive) or multiplied (if negative).</summary>
    public double RepetitionPenalty { get; init; } = 1.0;
    public int? Seed { get; init; }

    public static SamplingOptions Greedy => new();

    public void Validate()
    {
        if (Temperature < 0 || double.IsNaN(Temperature)) throw new LlmArchInputException($"temperature must be >= 0 (got {Temperature})");
        if (TopK < 0) throw new LlmArchInputException($"top-k must be >= 0 (got {TopK})");
        if (!(TopP > 0 && TopP <= 1)) throw new LlmArchInputException($"top-p must be in (0, 1] (got {TopP})");
        if (!(MinP >= 0 && MinP <= 1)) throw new LlmArchInputException($"min-p must be in [0, 1] (got {MinP})");
        if (!(RepetitionPenalty > 0)) throw new LlmArchInputException($"repetition penalty must be > 0 (got {RepetitionPenalty})");
    }
}

/// <summary>
/// Picks the next token from one row of logits. Order as in HF's logits processors: repetition penalty,
/// temperature, top-k, top-p, min-p, then a draw. Buffers are allocated once per sampler (no allocation per token).
/// </summary>
public sealed class Sampler
{
    private readonly SamplingOptions _o;
    private readonly Random _rng;
    private float[] _work = [];
    private int[] _order = [];
    private ulong[] _keys = [];

    public Sampler(SamplingOptions options)
    {
        options.Validate();
        _o = options;
        _rng = options.Seed is int s ? new Random(s) : new Random();
    }

    /// <summary>Moves the <paramref name="k"/> smallest values of <paramref name="keys"/> (distinct) to its first k
    /// places, in no particular order.</summary>
    public static void SmallestKeys(Span<ulong> keys, int k)
    {
        // keys[0..k) is a max-heap of the k smallest seen so far
        for (int i = 1; i < k; i++)
        {
            int c = i;
            while (c > 0 && keys[(c - 1) / 2] < keys[c]) { (keys[c], keys[(c - 1) / 2]) = (keys[(c - 1) / 2], keys[c]); c = (c - 1) / 2; }
        }
        for (int i = k; i < keys.Length; i++)
        {
            if (keys[i] >= keys[0]) continue;
            keys[0] = keys[i];
            int p = 0;
            while (true)
            {
                int l = 2 * p + 1, r = l + 1, m = p;
                if (l < k && keys[l] > keys[m]) m = l;
                if (r < k && keys[r] > keys[m]) m = r;
                if (m == p) break;
                (keys[p], keys[m]) = (keys[m], keys[p]);
                p = m;
            }
        }
    }

    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        int best = 0;
        for (int i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }

    /// <param name="history">tokens seen so far (prompt and generated), for the repetition penalty.</param>
    public int Next(Span<float> logits, ReadOnlySpan<int> history)
    {
        if (_o.RepetitionPenalty != 1.0)
        {
            float p = (float)_o.RepetitionPenalty;
            foreach (int id in history)
                if ((uint)id < (uint)logits.Length) logits[id] = logits[id] > 0 ? logits[id] / p : logits[id] * p;
        }
        if (_o.Temperature == 0) return ArgMax(logits);
        int V = logits.Length;
        if (_work.Length < V) { _work = new float[V]; _order = new int[V]; }
        var probs = _work.AsSpan(0, V);
        float inv = (float)(1.0 / _o.Temperature);
        for (int i = 0; i < V; i++) probs[i] = logits[i] * inv;
        var order = _order.AsSpan(0, V);
        // Sort ids by logit, descending, ties by id: one ulong key per id (order-preserving float bits, inverted,
        // then the id), sorted without a comparer so no closure or copy is allocated per token.
        if (_keys.Length < V) _keys = new ulong[V];
        var keys = _keys.AsSpan(0, V);
        for (int i = 0; i < V; i++)
        {
            uint u = BitConverter.SingleToUInt32Bits(probs[i]);
            u = (u & 0x80000000u) != 0 ? ~u : u | 0x80000000u; // ascending with the float value
            keys[i] = ((ulong)~u << 32) | (uint)i;
        }
        int n = _o.TopK > 0 ? Math.Min(_o.TopK, V) : V;
        if (n < V / 8)
        {
            // top-k: the k smallest keys by a bounded max-heap (O(V log k), not a sort of the whole vocabulary per
            // token), then sorted: the same ids in the same order as the full sort's first k.
            SmallestKeys(keys, n);
            keys = keys[..n];
        }
        keys.Sort();
        for (int i = 0; i < keys.Length; i++) order[i] = (int)(uint)keys[i];
        float max = probs[order[0]];
        double sum = 0;
        for (int i = 0; i < n; i++) { float e = MathF.Exp(probs[order[i]] - max); probs[order[i]] = e; sum += e; }
        // top-p: smallest prefix with cumulative probability >= p (always keep one)
        if (_o.TopP < 1)
        {
            double cum = 0; int keep = 0;
            while (keep < n) { cum += probs[order[keep]] / sum; keep++; if (cum >= _o.TopP) break; }
            n = Math.Max(1, keep);
        }
        if (_o.MinP > 0)
        {
            double top = probs[order[0]];
            int keep = 0;
            while (keep < n && probs[order[keep]] >= _o.MinP * top) keep++;
            n = Math.Max(1, keep);
        }
        sum = 0;
        for (int i = 0; i < n; i++) sum += probs[order[i]];
        double r = _rng.NextDouble() * sum;
        for (int i = 0; i < n; i++)
        {
            r -= probs[order[i]];
            if (r <= 0) return order[i];
        }
        return order[n - 1];
    }
}
