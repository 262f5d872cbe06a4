namespace LlmArch.Compute.Cpu;

public sealed unsafe partial class CpuBackend
{
    public void Rope(Tensor x, StepBatch batch, RopeTable table, bool interleaved)
    {
        RequireF32(x, "rope input");
        int N = x.Shape[0], H = x.Shape[1], D = x.Shape[2];
        if (x.Shape.Rank != 3 || N != batch.Tokens) throw new ArgumentException($"rope: x {x.Shape} for {batch.Tokens} tokens");
        if (table.RotaryDim > D) throw new ArgumentException($"rotary dim {table.RotaryDim} > head dim {D}");
        if (table.Cos is null || table.Positions < batch.MaxEnd || table.Cos.Device != DeviceKind.Cpu) table.Ensure(this, batch.MaxEnd);
        RopeKernel.Apply(P(x), N, H, D, I(batch.Positions!), P(table.Cos), P(table.Sin), table.RotaryDim, interleaved);
    }

    public Tensor Attention(Tensor q, Tensor k, Tensor? v, KvCache? cache, StepBatch batch, in AttentionParams p)
    {
        int dv = p.ValueIsKeyPrefix ? p.ValueDim : v?.Shape[2] ?? 0;
        var y = Empty(new Shape(q.Shape[0], q.Shape[1], dv));
        AttentionKernel.Run(Pool, q, k, v, y, cache, batch, p);
        return y;
    }

    public void CacheWrite(KvCache cache, Tensor k, Tensor? v, StepBatch batch)
    {
        WriteRows(cache, cache.K, k, batch);
        if (cache.V is not null)
        {
            if (v is null) throw new ArgumentException("this cache stores values: v is required");
            WriteRows(cache, cache.V, v, batch);
        }
    }

    private static void WriteRows(KvCache cache, Tensor dst, Tensor src, StepBatch batch)
    {
        int row = src.Shape[1] * src.Shape[2];
        if (src.Shape[0] != batch.Tokens || row != dst.Shape[2] * dst.Shape[3]) throw new ArgumentException($"cache write of {src.Shape} into {dst.Shape}");
        int cap = cache.Capacity;
        for (int s = 0; s < batch.Sequences; s++)
        {
            int slot = batch.Slot[s], start = batch.Start[s], count = batch.Count[s], off = batch.Offset[s];
            if ((uint)slot >= (uint)cache.Slots) throw new ArgumentException($"slot {slot} outside the cache's {cache.Slots} slots");
            if (!cache.Ring && start + count > cap)
                throw new LlmArchInputException($"sequence of {start + count} tokens exceeds the KV cache capacity of {cap}");
            int from = cache.Ring ? Math.Max(0, count - cap) : 0; // a ring keeps only the last Capacity positions
            for (int t = from; t < count; t++)
            {
                int pos = start + t, r = cache.Ring ? pos % cap : pos;
                new ReadOnlySpan<float>(P(src) + (long)(off + t) * row, row).CopyTo(new Span<float>(P(dst) + ((long)slot * cap + r) * row, row));
            }
        }
    }

    public Tensor CausalConv1d(Tensor x, Tensor weight, Tensor state, StepBatch batch, bool silu)
    {
        RequireF32(x, "conv input"); RequireF32(weight, "conv1d weight"); RequireF32(state, "conv state");
        int N = x.Shape[0], ch = x.Shape.Last, K = weight.Shape.Last;
        if (x.Shape.Rank != 2 || N != batch.Tokens || weight.Shape.Rows != ch || state.Shape.Rank != 3 || state.Shape[1] != K - 1 || state.Shape[2] != ch)
            throw new ArgumentException($"conv1d: x {x.Shape}, weight {weight.Shape}, state {state.Shape}, {batch.Tokens} tokens");
        var y = Empty(x.Shape);
        for (int s = 0; s < batch.Sequences; s++)
        {
            int slot = batch.Slot[s];
            if ((uint)slot >= (uint)state.Shape[0]) throw new ArgumentException($"slot {slot} outside the state's {state.Shape[0]} slots");
            long off = (long)batch.Offset[s] * ch;
            DeltaNetKernels.CausalConv1d(P(x) + off, P(weight), P(state) + (long)slot * (K - 1) * ch, P(y) + off, 1, batch.Count[s], ch, K, silu);
        }
        return y;
    }
}
