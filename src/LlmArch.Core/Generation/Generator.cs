using System.Diagnostics;
using LlmArch.Blocks;
using LlmArch.Models;

namespace LlmArch.Generation;

/// <summary>Timing of one generation.</summary>
public sealed record GenerationStats(int PromptTokens, int GeneratedTokens, double PrefillSeconds, double DecodeSeconds)
{
    public double PrefillTokensPerSecond => PrefillSeconds > 0 ? PromptTokens / PrefillSeconds : 0;
    /// <summary>Decode steps per second (the first generated token comes from the prefill).</summary>
    public double DecodeTokensPerSecond => DecodeSeconds > 0 ? Math.Max(0, GeneratedTokens - 1) / DecodeSeconds : 0;
}

/// <summary>
/// Prefill then token-by-token decode with the KV cache, allocated once per batch. A batch of equal-length
/// prompts runs as one batch; prompts of different lengths run one after another. Each sequence stops at an
/// eos id or after maxNewTokens.
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
        if (prompts.All(p => p.Length == prompts[0].Length)) return GenerateBatch(model, prompts, maxNewTokens, sampling, eos, onToken, 0);
        var outs = new int[prompts.Count][];
        double pre = 0, dec = 0; int pt = 0, gt = 0;
        for (int i = 0; i < prompts.Count; i++)
        {
            int idx = i;
            var (t, s) = GenerateBatch(model, [prompts[i]], maxNewTokens, sampling, eos, onToken is null ? null : (_, tok) => onToken(idx, tok), i);
            outs[i] = t[0]; pre += s.PrefillSeconds; dec += s.DecodeSeconds; pt += s.PromptTokens; gt += s.GeneratedTokens;
        }
        return (outs, new GenerationStats(pt, gt, pre, dec));
    }

    private static bool AllDone(bool[] done)
    {
        foreach (bool d in done) if (!d) return false;
        return true;
    }

    private static (int[][], GenerationStats) GenerateBatch(CausalLM model, IReadOnlyList<int[]> prompts, int maxNew,
        SamplingOptions sampling, IReadOnlyCollection<int>? eos, Action<int, int>? onToken, int seedOffset)
    {
        int B = prompts.Count, T = prompts[0].Length;
        int total = Math.Min(T + maxNew, model.MaxPositions);
        maxNew = total - T;
        var cache = model.CreateCache(B, Math.Max(total, 1));
        var history = new List<int>[B];
        var samplers = new Sampler[B];
        for (int b = 0; b < B; b++)
        {
            history[b] = new List<int>(T + maxNew); // capacity for the whole sequence: no growth while decoding
            history[b].AddRange(prompts[b]);
            samplers[b] = new Sampler(sampling.Seed is int s ? sampling with { Seed = s + seedOffset + b } : sampling);
        }
        var ids = new int[B * T];
        for (int b = 0; b < B; b++) prompts[b].CopyTo(ids, b * T);
        var done = new bool[B];
        var step = new int[B];
        int V = model.VocabSize;
        var row = new float[V];
        var sw = Stopwatch.StartNew();
        double prefill = 0;
        int generated = 0;
        if (maxNew > 0)
        {
            var logits = model.Forward(ids, B, cache, lastOnly: true);
            for (int n = 0; n < maxNew; n++)
            {
                for (int b = 0; b < B; b++)
                {
                    if (done[b]) { step[b] = history[b][^1]; continue; }
                    model.Backend.Download(logits, row, (long)b * V);
                    int tok = samplers[b].Next(row, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(history[b]));
                    history[b].Add(tok); step[b] = tok;
                    onToken?.Invoke(b, tok);
                    if (eos is not null && eos.Contains(tok)) done[b] = true;
                }
                if (n == 0) { prefill = sw.Elapsed.TotalSeconds; sw.Restart(); }
                generated++;
                if (n == maxNew - 1 || AllDone(done)) break;
                logits = model.Forward(step, B, cache, lastOnly: true);
            }
        }
        else prefill = sw.Elapsed.TotalSeconds;
        double decode = maxNew > 0 ? sw.Elapsed.TotalSeconds : 0;
        return (history.Select(h => h.ToArray()).ToArray(), new GenerationStats(B * T, generated * B, prefill, decode));
    }
}
