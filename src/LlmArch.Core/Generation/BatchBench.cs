using System.Diagnostics;
using LlmArch.Models;

namespace LlmArch.Generation;

/// <summary>Decode throughput of N ragged prompts advanced together in shared steps, against the same prompts one after another.</summary>
public sealed record BatchBenchResult(int Sequences, int[] PromptLengths, int GenTokens,
    double BatchedDecodeTokensPerSecond, double SequentialDecodeTokensPerSecond, double BatchedWallSeconds, double SequentialWallSeconds)
{
    public double Speedup => SequentialDecodeTokensPerSecond > 0 ? BatchedDecodeTokensPerSecond / SequentialDecodeTokensPerSecond : 0;
}

public static class BatchBench
{
    /// <summary>
    /// Prompts of lengths spread from half to one and a half times <paramref name="promptTokens"/> (random ids), each
    /// decoding <paramref name="genTokens"/> tokens greedily with no stop token: once all in one ragged batch, once one by one.
    /// Decode tokens/s counts every sequence's tokens after its first (which comes from the prefill).
    /// </summary>
    public static BatchBenchResult Run(CausalLM model, int sequences, int promptTokens, int genTokens, int seed = 1)
    {
        if (sequences < 1) throw new LlmArchInputException($"--batch must be at least 1 (got {sequences})");
        var rng = new Random(seed);
        var prompts = Enumerable.Range(0, sequences).Select(i =>
        {
            int len = Math.Max(1, (int)(promptTokens * (0.5 + (sequences == 1 ? 0.5 : (double)i / (sequences - 1)))));
            return Enumerable.Range(0, len).Select(_ => rng.Next(model.VocabSize)).ToArray();
        }).ToArray();
        if (prompts.Max(p => p.Length) + genTokens > model.MaxPositions)
            throw new LlmArchInputException($"{prompts.Max(p => p.Length)} + {genTokens} tokens exceed max_position_embeddings {model.MaxPositions}");
        Generator.Generate(model, [prompts[0][..Math.Min(8, prompts[0].Length)]], 4, SamplingOptions.Greedy); // warm-up (JIT, scratch)

        var sw = Stopwatch.StartNew();
        var (_, batched) = Generator.Generate(model, prompts, genTokens, SamplingOptions.Greedy);
        double batchedWall = sw.Elapsed.TotalSeconds;
        double seqDecode = 0; long seqTokens = 0;
        sw.Restart();
        foreach (var p in prompts)
        {
            var (_, s) = Generator.Generate(model, [p], genTokens, SamplingOptions.Greedy);
            seqDecode += s.DecodeSeconds; seqTokens += Math.Max(0, s.GeneratedTokens - 1);
        }
        double seqWall = sw.Elapsed.TotalSeconds;
        return new BatchBenchResult(sequences, prompts.Select(p => p.Length).ToArray(), genTokens,
            batched.DecodeTokensPerSecond, seqDecode > 0 ? seqTokens / seqDecode : 0, batchedWall, seqWall);
    }
}
