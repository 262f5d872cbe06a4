using System.Runtime.CompilerServices;
using System.Threading.Channels;
using LlmArch.Models;

namespace LlmArch.Generation;

// The contract between generation (one engine per loaded model) and what serves it: the IChatClient adapter, the
// OpenAI-compatible server, the CLI. Requests are independent token streams; the engine decides how to batch them.

/// <summary>Why a sequence stopped.</summary>
public enum FinishReason { Stop, Length, Cancelled }

/// <summary>
/// Restricts which tokens may come next (constrained decoding: JSON, JSON schema, grammars). The engine calls
/// <see cref="Mask"/> on each step's logits row before sampling, then <see cref="Accept"/> with the chosen token.
/// </summary>
public interface ITokenConstraint
{
    /// <summary>Sets the logits of forbidden tokens to -infinity (in place).</summary>
    void Mask(Span<float> logits);
    /// <summary>Advances the constraint's state past <paramref name="token"/>.</summary>
    void Accept(int token);
    /// <summary>True once the constrained output is complete (the engine then stops the sequence with <see cref="FinishReason.Stop"/>).</summary>
    bool IsComplete { get; }
}

/// <summary>One request for a token stream.</summary>
public sealed record GenerationRequest
{
    public required int[] Prompt { get; init; }
    public int MaxNewTokens { get; init; } = 256;
    public SamplingOptions Sampling { get; init; } = SamplingOptions.Greedy;
    /// <summary>Token ids that end the sequence (eos, end-of-turn); the stop token is reported and not continued from.</summary>
    public IReadOnlyCollection<int>? StopTokens { get; init; }
    public ITokenConstraint? Constraint { get; init; }
    /// <summary>Report the chosen token's log-probability (after the constraint's mask, before temperature).</summary>
    public bool Logprobs { get; init; }
    /// <summary>Also report this many most likely alternatives per step (0-20).</summary>
    public int TopLogprobs { get; init; }
}

/// <summary>An alternative token and its log-probability.</summary>
public readonly record struct TokenLogprob(int Id, float Logprob);

/// <summary>
/// One generated token. <see cref="Finish"/> is set on the last token of the stream; a stream that ends without a new
/// token (cancelled, or no room left) ends with Id -1. A value type: the decode loop allocates nothing per token.
/// </summary>
public readonly record struct GeneratedToken(int Id, float Logprob, TokenLogprob[]? Top, FinishReason? Finish)
{
    /// <summary>Tokens of the prompt that were taken from a cached prefix instead of being recomputed (first token only).</summary>
    public int CachedPromptTokens { get; init; }
}

/// <summary>Counters an engine keeps (the server's /metrics).</summary>
public sealed record EngineMetrics
{
    public int Queued { get; init; }
    public int Active { get; init; }
    public long PromptTokens { get; init; }
    public long CachedPromptTokens { get; init; }
    public long GeneratedTokens { get; init; }
    public long Steps { get; init; }
    public long Requests { get; init; }
}

/// <summary>
/// Generates token streams for many concurrent requests over one loaded model. Implementations are thread-safe:
/// any number of callers may enumerate streams at once; cancelling a stream frees its slot.
/// </summary>
public interface ITextEngine : IAsyncDisposable
{
    CausalLM Model { get; }
    /// <summary>Longest sequence (prompt + generated) a request may reach.</summary>
    int Context { get; }
    EngineMetrics Metrics { get; }
    /// <summary>
    /// Streams the generated tokens of one request. Throws <see cref="LlmArchInputException"/> (before the first token)
    /// for a prompt that is empty, has ids outside the vocabulary or does not fit the context.
    /// </summary>
    IAsyncEnumerable<GeneratedToken> GenerateAsync(GenerationRequest request, CancellationToken cancellationToken = default);
}

/// <summary>Options of <see cref="TextEngine.Create"/>.</summary>
public sealed record EngineOptions
{
    /// <summary>Sequences advanced together in one step (cache slots).</summary>
    public int MaxSequences { get; init; } = 8;
    /// <summary>Tokens per sequence (prompt + generated); null = the model's max_position_embeddings, capped at 4096.</summary>
    public int? Context { get; init; }
    /// <summary>Requests waiting for a slot before new ones are refused (<see cref="EngineBusyException"/>).</summary>
    public int MaxQueue { get; init; } = 256;
    /// <summary>Most tokens one step processes (decode tokens plus prompt chunks): the prefill chunk size under load.</summary>
    public int StepTokens { get; init; } = 512;
    /// <summary>Called on the engine's thread before every step (tracing, pacing; tests use it to hold requests in flight).</summary>
    public Action? BeforeStep { get; init; }
}

/// <summary>The engine's queue is full (the server answers 429).</summary>
public sealed class EngineBusyException(string message) : Exception(message);

public static class TextEngine
{
    /// <summary>The continuous-batching engine for <paramref name="model"/> (its cache is allocated here: slots x context).</summary>
    public static ITextEngine Create(CausalLM model, EngineOptions? options = null) => new BatchingTextEngine(model, options ?? new EngineOptions());

    /// <summary>The one-request-at-a-time reference engine (tests compare the batching engine with it).</summary>
    public static ITextEngine CreateSerial(CausalLM model, EngineOptions? options = null) => new SerialTextEngine(model, options ?? new EngineOptions());
}

/// <summary>
/// A simple engine that runs one request at a time under a lock (the reference behaviour the batched engine must
/// reproduce token for token).
/// </summary>
internal sealed class SerialTextEngine : ITextEngine
{
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly EngineOptions _options;
    private int _queued, _active;
    private long _prompt, _generated, _steps, _requests;

    public CausalLM Model { get; }
    public int Context { get; }

    public SerialTextEngine(CausalLM model, EngineOptions options)
    {
        Model = model; _options = options;
        Context = Math.Min(options.Context ?? Math.Min(model.MaxPositions, 4096), model.MaxPositions);
    }

    public EngineMetrics Metrics => new()
    {
        Queued = Volatile.Read(ref _queued), Active = Volatile.Read(ref _active), PromptTokens = Interlocked.Read(ref _prompt),
        GeneratedTokens = Interlocked.Read(ref _generated), Steps = Interlocked.Read(ref _steps), Requests = Interlocked.Read(ref _requests),
    };

    public async IAsyncEnumerable<GeneratedToken> GenerateAsync(GenerationRequest request, [EnumeratorCancellation] CancellationToken ct = default)
    {
        Validate(request);
        if (Interlocked.Increment(ref _queued) > _options.MaxQueue)
        {
            Interlocked.Decrement(ref _queued);
            throw new EngineBusyException($"the queue of {_options.MaxQueue} requests is full");
        }
        Interlocked.Increment(ref _requests);
        var channel = Channel.CreateUnbounded<GeneratedToken>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        try { await _gate.WaitAsync(ct).ConfigureAwait(false); }
        finally { Interlocked.Decrement(ref _queued); }
        Interlocked.Increment(ref _active);
        var worker = Task.Run(() => Run(request, channel.Writer, ct), CancellationToken.None);
        try
        {
            await foreach (var t in channel.Reader.ReadAllAsync(CancellationToken.None).ConfigureAwait(false)) yield return t;
        }
        finally
        {
            await worker.ConfigureAwait(false);
            Interlocked.Decrement(ref _active);
            _gate.Release();
        }
    }

    private void Validate(GenerationRequest r)
    {
        if (r.Prompt.Length == 0) throw new LlmArchInputException("the prompt has no tokens");
        if (r.MaxNewTokens < 0) throw new LlmArchInputException($"max new tokens must be >= 0 (got {r.MaxNewTokens})");
        if (r.TopLogprobs is < 0 or > 20) throw new LlmArchInputException($"top logprobs must be between 0 and 20 (got {r.TopLogprobs})");
        r.Sampling.Validate();
        int V = Model.VocabSize;
        foreach (int id in r.Prompt)
            if ((uint)id >= (uint)V) throw new LlmArchInputException($"token id {id} is outside the vocabulary of {V}");
        if (r.Prompt.Length >= Context)
            throw new LlmArchInputException($"the prompt of {r.Prompt.Length} tokens does not fit the context of {Context} tokens");
    }

    private void Run(GenerationRequest r, ChannelWriter<GeneratedToken> writer, CancellationToken ct)
    {
        try
        {
            int maxNew = Math.Min(r.MaxNewTokens, Context - r.Prompt.Length);
            Interlocked.Add(ref _prompt, r.Prompt.Length);
            if (maxNew == 0) { writer.TryWrite(new GeneratedToken(-1, 0, null, FinishReason.Length)); return; }
            var cache = Model.CreateCache(1, r.Prompt.Length + maxNew);
            var sampler = new Sampler(r.Sampling);
            var history = new List<int>(r.Prompt.Length + maxNew);
            history.AddRange(r.Prompt);
            int V = Model.VocabSize;
            var row = new float[V];
            var logits = Model.Forward(r.Prompt, 1, cache, lastOnly: true);
            for (int n = 0; n < maxNew; n++)
            {
                Interlocked.Increment(ref _steps);
                if (ct.IsCancellationRequested) { writer.TryWrite(new GeneratedToken(-1, 0, null, FinishReason.Cancelled)); return; }
                Model.Backend.Download(logits, row);
                r.Constraint?.Mask(row);
                int tok = sampler.Next(row, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(history));
                var (lp, top) = r.Logprobs || r.TopLogprobs > 0 ? Logprobs.Of(row, tok, r.TopLogprobs) : (0f, null);
                r.Constraint?.Accept(tok);
                history.Add(tok);
                Interlocked.Increment(ref _generated);
                FinishReason? finish = r.StopTokens?.Contains(tok) == true || r.Constraint?.IsComplete == true ? FinishReason.Stop
                    : n == maxNew - 1 ? FinishReason.Length : null;
                writer.TryWrite(new GeneratedToken(tok, lp, top, finish));
                if (finish is not null) return;
                logits = Model.Forward([tok], 1, cache, lastOnly: true);
            }
        }
        catch (Exception e) { writer.TryComplete(e); return; }
        finally { writer.TryComplete(); }
    }

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}

/// <summary>Log-probabilities of one logits row (log-softmax), with the top alternatives.</summary>
public static class Logprobs
{
    public static (float Chosen, TokenLogprob[]? Top) Of(ReadOnlySpan<float> logits, int chosen, int top)
    {
        float max = float.NegativeInfinity;
        foreach (float v in logits) if (v > max) max = v;
        double sum = 0;
        foreach (float v in logits) sum += Math.Exp(v - max);
        float lse = max + (float)Math.Log(sum);
        TokenLogprob[]? best = null;
        if (top > 0)
        {
            best = new TokenLogprob[Math.Min(top, logits.Length)];
            int n = 0;
            for (int i = 0; i < logits.Length; i++)
            {
                float lp = logits[i] - lse;
                if (n < best.Length) { best[n++] = new TokenLogprob(i, lp); if (n == best.Length) Array.Sort(best, (a, b) => b.Logprob.CompareTo(a.Logprob)); continue; }
                if (lp <= best[^1].Logprob) continue;
                int j = best.Length - 1;
                while (j > 0 && best[j - 1].Logprob < lp) { best[j] = best[j - 1]; j--; }
                best[j] = new TokenLogprob(i, lp);
            }
        }
        return (logits[chosen] - lse, best);
    }
}
