namespace LlmArch.Compute.Sharding;

/// <summary>The collectives a <see cref="ShardedBackend"/> needs, over one tensor per rank.</summary>
public interface ICollectives
{
    /// <summary>outputs[r] = the concatenation of parts[0..n) along <paramref name="axis"/> (0 or the last), on every rank.</summary>
    void AllGather(IReadOnlyList<IBackend> ranks, Tensor[] parts, Tensor[] outputs, int axis);
    /// <summary>parts[r] = Σ_q parts[q] element by element, on every rank (in place).</summary>
    void AllReduceSum(IReadOnlyList<IBackend> ranks, Tensor[] parts);
}

/// <summary>
/// Collectives between ranks whose memory the host can address (CPU backends in one process): plain copies, summed in
/// rank order (deterministic). The reference for NCCL's, and what lets the tests run tensor and expert parallelism
/// with 2, 4 or 8 ranks on a machine without GPUs.
/// </summary>
public sealed unsafe class HostCollectives : ICollectives
{
    private static void RequireHost(IReadOnlyList<IBackend> ranks)
    {
        foreach (var r in ranks)
            if (r.Device != DeviceKind.Cpu) throw new InvalidOperationException($"host collectives need CPU ranks (got {r.Name})");
    }

    public void AllGather(IReadOnlyList<IBackend> ranks, Tensor[] parts, Tensor[] outputs, int axis)
    {
        RequireHost(ranks);
        var o = outputs[0];
        int es = DTypes.ElementSize(o.DType);
        if (axis == 0)
        {
            long at = 0;
            foreach (var p in parts)
            {
                long bytes = p.ByteCount;
                Buffer.MemoryCopy((void*)p.Ptr, (byte*)o.Ptr + at, bytes, bytes);
                at += bytes;
            }
        }
        else
        {
            long rows = o.Shape.Rows;
            int width = o.Shape.Last, col = 0;
            foreach (var p in parts)
            {
                int w = p.Shape.Last;
                long bytes = (long)w * es;
                for (long r = 0; r < rows; r++)
                    Buffer.MemoryCopy((byte*)p.Ptr + r * bytes, (byte*)o.Ptr + (r * width + col) * es, bytes, bytes);
                col += w;
            }
        }
        for (int r = 1; r < outputs.Length; r++) Buffer.MemoryCopy((void*)o.Ptr, (void*)outputs[r].Ptr, o.ByteCount, o.ByteCount);
    }

    public void AllReduceSum(IReadOnlyList<IBackend> ranks, Tensor[] parts)
    {
        RequireHost(ranks);
        long n = parts[0].Count;
        float* s = (float*)parts[0].Ptr;
        for (int r = 1; r < parts.Length; r++)
        {
            float* p = (float*)parts[r].Ptr;
            for (long i = 0; i < n; i++) s[i] += p[i];
        }
        for (int r = 1; r < parts.Length; r++) Buffer.MemoryCopy(s, (void*)parts[r].Ptr, n * 4, n * 4);
    }
}
