using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using LlmArch.Models;

namespace LlmArch.Generation;

/// <summary>
/// The engine behind <see cref="TextEngine.Create"/>: one loop thread drives a <see cref="Scheduler"/> (continuous
/// batching over cache slots with prompt-prefix reuse); callers on any thread submit requests and read their tokens
/// from a channel. A caller that stops reading (cancellation, disconnect) cancels its sequence and frees its slot at
/// the next step. The queue is bounded: past <see cref="EngineOptions.MaxQueue"/> waiting requests, new ones are refused.
/// </summary>
internal sealed class BatchingTextEngine : ITextEngine
{
    private readonly Scheduler _scheduler;
    private readonly EngineOptions _options;
    private readonly ConcurrentQueue<Submission> _incoming = new();
    private readonly SemaphoreSlim _wake = new(0);
    private readonly Thread _loop;
    private readonly CancellationTokenSource _stop = new();
    private int _pending;
    private long _requests;

    private sealed record Submission(GenerationRequest Request, ChannelWriter<GeneratedToken> Writer, CancellationToken Token);

    public CausalLM Model { get; }
    public int Context => _scheduler.Context;

    public BatchingTextEngine(CausalLM model, EngineOptions options)
    {
        Model = model; _options = options;
        int context = Math.Min(options.Context ?? Math.Min(model.MaxPositions, 4096), model.MaxPositions);
        _scheduler = new Scheduler(model, options.MaxSequences, context, Math.Max(options.StepTokens, options.MaxSequences));
        _loop = new Thread(Loop) { IsBackground = true, Name = "llmarch-engine" };
        _loop.Start();
    }

    public EngineMetrics Metrics => new()
    {
        Queued = Volatile.Read(ref _pending) + _scheduler.Waiting, Active = _scheduler.Running,
        PromptTokens = _scheduler.PromptTokens, CachedPromptTokens = _scheduler.CachedPromptTokens,
        GeneratedTokens = _scheduler.GeneratedTokens, Steps = _scheduler.Steps, Requests = Interlocked.Read(ref _requests),
    };

    public async IAsyncEnumerable<GeneratedToken> GenerateAsync(GenerationRequest request, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_stop.IsCancellationRequested, this);
        _scheduler.Validate(request);
        if (Interlocked.Increment(ref _pending) + _scheduler.Waiting > _options.MaxQueue)
        {
            Interlocked.Decrement(ref _pending);
            throw new EngineBusyException($"the queue of {_options.MaxQueue} requests is full");
        }
        Interlocked.Increment(ref _requests);
        var channel = Channel.CreateUnbounded<GeneratedToken>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        _incoming.Enqueue(new Submission(request, channel.Writer, linked.Token));
        _wake.Release();
        bool finished = false;
        try
        {
            await foreach (var t in channel.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                if (t.Finish is not null) finished = true;
                yield return t;
                if (finished) yield break;
            }
        }
        finally
        {
            // The reader left early (break, dispose, cancellation): the sequence stops and its slot is freed.
            if (!finished) { linked.Cancel(); _wake.Release(); }
        }
    }

    private void Loop()
    {
        var stop = _stop.Token;
        while (!stop.IsCancellationRequested)
        {
            while (_incoming.TryDequeue(out var sub))
            {
                Interlocked.Decrement(ref _pending);
                var writer = sub.Writer;
                Scheduler.Sequence? seq = null;
                try
                {
                    seq = _scheduler.Submit(sub.Request, t =>
                    {
                        if (t.Id == -2) writer.TryComplete(_scheduler.FailureOf(seq!) ?? new InvalidOperationException("generation failed"));
                        else { writer.TryWrite(t); if (t.Finish is not null) writer.TryComplete(); }
                    }, sub.Token);
                }
                catch (Exception e) { writer.TryComplete(e); }
            }
            if (!_scheduler.HasWork)
            {
                try { _wake.Wait(stop); } catch (OperationCanceledException) { break; }
                continue;
            }
            try { _options.BeforeStep?.Invoke(); _scheduler.Step(); }
            catch (Exception e) { _scheduler.FailAll(e); } // a scheduler bug fails what is in flight; the engine keeps serving
        }
        _scheduler.FailAll(new ObjectDisposedException("the engine was disposed"));
        while (_incoming.TryDequeue(out var sub)) sub.Writer.TryComplete(new ObjectDisposedException("the engine was disposed"));
    }

    public ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _loop.Join();
        _scheduler.Dispose();
        return ValueTask.CompletedTask;
    }
}
