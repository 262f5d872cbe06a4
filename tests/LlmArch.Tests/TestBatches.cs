using LlmArch.Compute;

namespace LlmArch.Tests;

/// <summary>Step layouts for op-level tests.</summary>
internal static class TestBatches
{
    /// <summary>B sequences of T tokens in slots 0..B-1, all starting at <paramref name="start"/>, prepared on b.</summary>
    public static StepBatch Uniform(IBackend b, int B, int T, int start = 0)
    {
        var s = new StepBatch();
        var ids = new int[T];
        for (int i = 0; i < B; i++) s.Add(i, start, ids);
        b.Prepare(s);
        return s;
    }

    /// <summary>Sequences (slot, start, count), prepared on b.</summary>
    public static StepBatch Ragged(IBackend b, params (int Slot, int Start, int Count)[] seqs)
    {
        var s = new StepBatch();
        foreach (var (slot, start, count) in seqs) s.Add(slot, start, new int[count]);
        b.Prepare(s);
        return s;
    }
}
