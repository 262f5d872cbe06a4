using System.Diagnostics;
using LlmArch.Models;

namespace LlmArch.Generation;

/// <summary>Timing of one generation.</summary>
public sealed record GenerationStats(int PromptTokens, int GeneratedTokens, double PrefillSeconds, double DecodeSeconds)
{
    /// <summary>Sequences generated together.</summary>
    public int Sequences { get; init; } = 1;
    public double PrefillTokensPerSecond => PrefillSeconds > 0 ? PromptTokens / PrefillSeconds : 0;
    /// <summary>Decoded tokens per second over all sequences (each sequence's first token comes from the prefill).</summary>
    public double DecodeTokensPerSecond => DecodeSeconds > 0 ? Math.Max(0, GeneratedTokens - Sequences) / DecodeSeconds : 0;
}

/// <summary>
/// Generation of a batch of prompts to completion on the calling thread: every prompt gets its own cache slot and all
/// of them advance together in shared steps (continuous batching through <see cref="Scheduler"/>), whatever their
/// lengths; each stops at an eos id or after maxNewTokens, and its output equals running it alone.
/// </summary>
public static class Generator
{
    /// <param name="onToken">called with (sequence index, token) as each token is chosen.</param>
    public static (int[][] Tokens, GenerationStats Stats) Generate(CausalLM model, IReadOnlyList<int[]> prompts, int maxNewTokens,
        SamplingOptions sampling, IReadOnlyCollection<int>? eos = null, Action<int, int>? onToken = null)
    {
        if (prompts.Count == 0) return ([], new GenerationStats(0, 0, 0, 0));
        if (maxNewTokens < 0) throw new LlmArchInputException($"max new tokens must be >= 0 (got {maxNewTokens})");
        foreach (var p in prompts)
        {
            if (p.Length == 0) throw new LlmArchInputException("a prompt has no tokens");
            if (p.Length > model.MaxPositions)
                throw new LlmArchInputException($"prompt of {p.Length} tokens exceeds max_position_embeddings {model.MaxPositions} of {model.Config.SourcePath}");
        }
        int B = prompts.Count, longest = prompts.Max(p => p.Length);
        int context = Math.Min(longest + maxNewTokens, model.MaxPositions);
        var outs = new List<int>[B];
        for (int i = 0; i < B; i++) { outs[i] = new List<int>(prompts[i].Length + maxNewTokens); outs[i].AddRange(prompts[i]); }
        // A prompt that fills the whole context has nothing to generate.
        var live = Enumerable.Range(0, B).Where(i => prompts[i].Length < context).ToArray();
        var sw = Stopwatch.StartNew();
        if (live.Length == 0 || maxNewTokens == 0) return (outs.Select(o => o.ToArray()).ToArray(), new GenerationStats(prompts.Sum(p => p.Length), 0, sw.Elapsed.TotalSeconds, 0) { Sequences = B });

        using var sched = new Scheduler(model, live.Length, context, stepTokens: live.Sum(i => prompts[i].Length) + live.Length);
        var seqs = new Scheduler.Sequence[live.Length];
        int started = 0, generated = 0;
        for (int j = 0; j < live.Length; j++)
        {
            int i = live[j];
            var seeded = sampling.Seed is int seed ? sampling with { Seed = seed + i } : sampling;
            bool first = true;
            seqs[j] = sched.Submit(new GenerationRequest { Prompt = prompts[i], MaxNewTokens = maxNewTokens, Sampling = seeded, StopTokens = eos }, t =>
            {
                if (first) { first = false; started++; }
                if (t.Id < 0) return;
                outs[i].Add(t.Id); generated++;
                onToken?.Invoke(i, t.Id);
            });
        }
        double prefill = 0;
        while (sched.HasWork)
        {
            sched.Step();
            if (prefill == 0 && started == live.Length) prefill = sw.Elapsed.TotalSeconds;
        }
        foreach (var s in seqs)
            if (sched.FailureOf(s) is { } e) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e).Throw();
        if (prefill == 0) prefill = sw.Elapsed.TotalSeconds;
        double decode = sw.Elapsed.TotalSeconds - prefill;
        return (outs.Select(o => o.ToArray()).ToArray(), new GenerationStats(prompts.Sum(p => p.Length), generated, prefill, decode) { Sequences = live.Length });
    }
}
