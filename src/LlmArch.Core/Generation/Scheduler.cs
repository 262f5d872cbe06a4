using System.Runtime.InteropServices;
using LlmArch.Blocks;
using LlmArch.Compute;
using LlmArch.Models;

namespace LlmArch.Generation;

/// <summary>
/// Continuous batching over a model's cache slots. Every <see cref="Step"/> advances all running sequences together in
/// one forward pass: one token for each sequence that is decoding, and a chunk of the prompt for each sequence that is
/// still prefilling (chunks share a per-step token budget), so sequences of any length join and leave between steps.
/// A finished sequence leaves its slot's contents behind as a cached prefix: a later request whose prompt starts with
/// the same tokens takes that slot over and skips the shared part (the cache protocol's Trim, or a checkpoint for
/// recurrent layers). Single-threaded: the owner (the async engine's loop, or a synchronous caller) drives it.
/// </summary>
public sealed class Scheduler : IDisposable
{
    private readonly CausalLM _model;
    private readonly ModelCache _cache;
    private readonly StepBatch _batch = new();
    private readonly List<Sequence> _running = new();
    private readonly Queue<Sequence> _waiting = new();
    private readonly List<int>?[] _slotTokens;   // tokens whose keys each slot holds (for prefix reuse)
    private readonly long[] _slotUsed;
    private readonly float[] _row;
    private readonly List<int> _rows = new();
    private long _clock;

    public int Slots { get; }
    public int Context { get; }
    /// <summary>Most tokens one step processes (decode tokens plus prompt chunks).</summary>
    public int StepTokens { get; }
    public CausalLM Model => _model;
    public int Running => _running.Count;
    public int Waiting => _waiting.Count;
    public bool HasWork => _running.Count > 0 || _waiting.Count > 0;

    // Counters (read by the engine's metrics).
    public long PromptTokens { get; private set; }
    public long CachedPromptTokens { get; private set; }
    public long GeneratedTokens { get; private set; }
    public long Steps { get; private set; }

    public Scheduler(CausalLM model, int slots, int context, int stepTokens = 512)
    {
        if (slots <= 0) throw new LlmArchInputException($"the engine needs at least one sequence slot (got {slots})");
        if (context <= 1) throw new LlmArchInputException($"the context must hold at least 2 tokens (got {context})");
        if (stepTokens < slots) throw new LlmArchInputException($"a step must fit one token per slot ({stepTokens} < {slots})");
        _model = model; Slots = slots; Context = Math.Min(context, model.MaxPositions); StepTokens = stepTokens;
        _cache = model.CreateCache(slots, Context);
        _slotTokens = new List<int>?[slots];
        _slotUsed = new long[slots];
        _row = new float[model.VocabSize];
    }

    /// <summary>One request in flight: its slot, tokens so far, and where its output goes.</summary>
    public sealed class Sequence
    {
        internal Sequence(GenerationRequest r, Action<GeneratedToken> sink, int index, CancellationToken ct)
        {
            Request = r; Sink = sink; Index = index; Token = ct;
            Tokens = new List<int>(r.Prompt.Length + r.MaxNewTokens + 1);
            Tokens.AddRange(r.Prompt);
            Sampler = new Sampler(r.Sampling);
        }
        public GenerationRequest Request { get; }
        internal Action<GeneratedToken> Sink { get; }
        /// <summary>Submission order (stable seeds, stable output order).</summary>
        public int Index { get; }
        internal int Slot = -1;
        /// <summary>Tokens whose keys are in the cache (prompt prefill cursor, then all but the newest token).</summary>
        internal int Fed;
        internal int Generated, MaxNew, Cached;
        internal readonly List<int> Tokens;
        internal readonly Sampler Sampler;
        internal volatile bool CancelRequested;
        internal readonly CancellationToken Token;
        internal bool Cancelled => CancelRequested || Token.IsCancellationRequested;
        internal bool Done;
        public IReadOnlyList<int> AllTokens => Tokens;
        public bool Finished => Done;
        public FinishReason? Reason { get; internal set; }
        /// <summary>Prompt tokens taken from a cached prefix.</summary>
        public int CachedPromptTokens => Cached;
        /// <summary>Steps in which this sequence's prompt was still being read.</summary>
        public bool Prefilling => Fed < Request.Prompt.Length;
    }

    /// <summary>Validates a request against the model and the context (one clear error), without queueing it.</summary>
    public void Validate(GenerationRequest r)
    {
        if (r.Prompt is null || r.Prompt.Length == 0) throw new LlmArchInputException("the prompt has no tokens");
        if (r.MaxNewTokens < 0) throw new LlmArchInputException($"max new tokens must be >= 0 (got {r.MaxNewTokens})");
        if (r.TopLogprobs is < 0 or > 20) throw new LlmArchInputException($"top logprobs must be between 0 and 20 (got {r.TopLogprobs})");
        r.Sampling.Validate();
        int V = _model.VocabSize;
        foreach (int id in r.Prompt)
            if ((uint)id >= (uint)V) throw new LlmArchInputException($"token id {id} is outside the vocabulary of {V}");
        if (r.Prompt.Length >= Context)
            throw new LlmArchInputException($"the prompt of {r.Prompt.Length} tokens does not fit the context of {Context} tokens");
    }

    private int _submitted;

    /// <summary>Queues a request; its tokens go to <paramref name="sink"/> (on the thread that calls <see cref="Step"/>).</summary>
    public Sequence Submit(GenerationRequest r, Action<GeneratedToken> sink, CancellationToken cancellationToken = default)
    {
        Validate(r);
        var s = new Sequence(r, sink, _submitted++, cancellationToken);
        s.MaxNew = Math.Min(r.MaxNewTokens, Context - r.Prompt.Length);
        _waiting.Enqueue(s);
        return s;
    }

    /// <summary>Stops a sequence at the next step (its slot is freed, its stream ends with <see cref="FinishReason.Cancelled"/>).</summary>
    public void Cancel(Sequence s) => s.CancelRequested = true;

    /// <summary>Runs one step: admits waiting sequences into free slots, then one forward over everything running.</summary>
    public void Step()
    {
        Admit();
        foreach (var s in _running) if (s.Cancelled && !s.Done) Finish(s, FinishReason.Cancelled, emit: true);
        _running.RemoveAll(s => s.Done);
        if (_running.Count == 0) return;

        // Decode tokens first (one each), then prompt chunks in arrival order within the remaining budget.
        _batch.Clear();
        _rows.Clear();
        int budget = StepTokens;
        foreach (var s in _running)
            if (!s.Prefilling) { budget--; }
        foreach (var s in _running)
        {
            if (!s.Prefilling)
            {
                _batch.Add(s.Slot, s.Fed, CollectionsMarshal.AsSpan(s.Tokens).Slice(s.Fed, 1));
                _rows.Add(1);
                continue;
            }
            int n = Math.Min(s.Request.Prompt.Length - s.Fed, budget);
            if (n <= 0) { _rows.Add(0); continue; }
            budget -= n;
            _batch.Add(s.Slot, s.Fed, CollectionsMarshal.AsSpan(s.Tokens).Slice(s.Fed, n));
            _rows.Add(n);
        }
        Steps++;
        Tensor logits;
        try { logits = _model.Forward(_batch, _cache, lastOnly: true); }
        catch (Exception e)
        {
            // A failed step fails the sequences in it (their slots are freed); later requests run normally.
            foreach (var s in _running) { Fail(s, e); }
            _running.Clear();
            return;
        }

        int row = 0;
        for (int i = 0; i < _running.Count; i++)
        {
            var s = _running[i];
            int n = _rows[i];
            if (n == 0) continue;
            bool wasPrefill = s.Prefilling;
            s.Fed += n;
            if (wasPrefill) PromptTokens += n;
            if (s.Prefilling) { row++; continue; } // more of the prompt to read before the first token
            if (s.MaxNew == 0) { row++; Finish(s, FinishReason.Length, emit: true); continue; }
            lock (_model.StepLock) _model.Backend.Download(logits, _row.AsSpan(), (long)row * _row.Length);
            row++;
            Sample(s);
        }
        _running.RemoveAll(s => s.Done);
    }

    private void Sample(Sequence s)
    {
        var r = s.Request;
        r.Constraint?.Mask(_row);
        int tok = s.Sampler.Next(_row, CollectionsMarshal.AsSpan(s.Tokens));
        var (lp, top) = r.Logprobs || r.TopLogprobs > 0 ? Logprobs.Of(_row, tok, r.TopLogprobs) : (0f, null);
        r.Constraint?.Accept(tok);
        s.Tokens.Add(tok);
        s.Generated++;
        GeneratedTokens++;
        FinishReason? finish = r.StopTokens?.Contains(tok) == true || r.Constraint?.IsComplete == true ? FinishReason.Stop
            : s.Generated >= s.MaxNew || s.Tokens.Count >= Context ? FinishReason.Length : null;
        s.Sink(new GeneratedToken(tok, lp, top, finish) { CachedPromptTokens = s.Generated == 1 ? s.Cached : 0 });
        if (finish is { } f) Finish(s, f, emit: false);
    }

    private void Finish(Sequence s, FinishReason reason, bool emit)
    {
        if (s.Done) return;
        s.Done = true; s.Reason = reason;
        if (emit) s.Sink(new GeneratedToken(-1, 0, null, reason) { CachedPromptTokens = s.Generated == 0 ? s.Cached : 0 });
        Release(s);
    }

    private void Fail(Sequence s, Exception e)
    {
        if (s.Done) return;
        s.Done = true; s.Reason = FinishReason.Cancelled;
        _failures.Add((s, e));
        if (s.Slot >= 0) { _cache.Release(s.Slot); _cache.Clear(s.Slot); _slotTokens[s.Slot] = null; s.Slot = -1; }
        try { s.Sink(new GeneratedToken(-2, 0, null, FinishReason.Cancelled)); } catch { /* the sink reports the failure itself */ }
    }

    private readonly List<(Sequence, Exception)> _failures = new();

    /// <summary>Ends every running and waiting sequence with <paramref name="e"/> (a failure outside a model step, or shutdown).</summary>
    public void FailAll(Exception e)
    {
        foreach (var s in _running) Fail(s, e);
        _running.Clear();
        while (_waiting.Count > 0) Fail(_waiting.Dequeue(), e);
    }

    /// <summary>The exception of a sequence that failed in a step (a GeneratedToken with id -2 announced it), or null.</summary>
    public Exception? FailureOf(Sequence s)
    {
        foreach (var (q, e) in _failures) if (ReferenceEquals(q, s)) return e;
        return null;
    }

    /// <summary>Frees a finished sequence's slot, keeping its keys as a cached prefix (all but its newest token are in the cache).</summary>
    private void Release(Sequence s)
    {
        if (s.Slot < 0) return;
        int held = _cache.Length(s.Slot);
        _slotTokens[s.Slot] = held > 0 ? s.Tokens.GetRange(0, held) : null;
        _slotUsed[s.Slot] = ++_clock;
        _cache.Release(s.Slot);
        s.Slot = -1;
    }

    /// <summary>Moves waiting sequences into free slots, reusing the longest cached prefix of their prompt.</summary>
    private void Admit()
    {
        while (_waiting.Count > 0)
        {
            var s = _waiting.Peek();
            if (s.Cancelled) { _waiting.Dequeue(); s.Done = true; s.Reason = FinishReason.Cancelled; s.Sink(new GeneratedToken(-1, 0, null, FinishReason.Cancelled)); continue; }
            int slot = PickSlot(s.Request.Prompt, out int common);
            if (slot < 0) return;
            _waiting.Dequeue();
            _cache.TryAcquire(slot);
            // At least the last prompt token is fed again, so its logits give the first new token.
            int reuse = Math.Min(common, s.Request.Prompt.Length - 1);
            int kept = reuse > 0 ? _cache.Trim(slot, reuse) : 0;
            if (kept == 0) _cache.Clear(slot);
            s.Slot = slot; s.Fed = kept; s.Cached = kept;
            CachedPromptTokens += kept;
            _slotTokens[slot] = null;
            _running.Add(s);
            // Recurrent layers can return here later only through a checkpoint at the end of the shared prompt part.
        }
    }

    /// <summary>A free slot: the one whose cached tokens share the longest prefix with the prompt, else the least recently used.</summary>
    private int PickSlot(int[] prompt, out int common)
    {
        int best = -1, bestLen = 0, lru = -1;
        for (int i = 0; i < Slots; i++)
        {
            if (_cache.InUse(i)) continue;
            var held = _slotTokens[i];
            int len = 0;
            if (held is not null)
            {
                int n = Math.Min(held.Count, prompt.Length);
                while (len < n && held[len] == prompt[len]) len++;
            }
            if (len > bestLen) { best = i; bestLen = len; }
            if (lru < 0 || _slotUsed[i] < _slotUsed[lru]) lru = i;
        }
        common = bestLen;
        return best >= 0 ? best : lru;
    }

    public void Dispose() => _cache.Dispose();
}
