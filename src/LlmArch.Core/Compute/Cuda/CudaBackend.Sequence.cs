using LlmArch.Compute.Cpu;
using static LlmArch.Native.CudaDriver;

namespace LlmArch.Compute.Cuda;

// Sequence ops (RoPE, attention, cache writes, the causal conv) and the fused family ops the GPU offers
// (Gated DeltaNet's rule, AltUp, Gemma 3n's row statistics). Validation reads the host copy of the step layout;
// the kernels read the device copy, so a captured step replays for new positions, slots and lengths.
public sealed unsafe partial class CudaBackend : IFusedDeltaRule, IFusedAltUp, IFusedRowStats
{
    public void Rope(Tensor x, StepBatch batch, RopeTable table, bool interleaved)
    {
        RequireF32(x, "rope input");
        int N = x.Shape[0], H = x.Shape[1], D = x.Shape[2];
        if (x.Shape.Rank != 3 || N != batch.Tokens) throw new ArgumentException($"rope: x {x.Shape} for {batch.Tokens} tokens");
        if (table.RotaryDim > D) throw new ArgumentException($"rotary dim {table.RotaryDim} > head dim {D}");
        Bind();
        if (table.Cos is null || table.Positions < batch.MaxEnd || table.Cos.Device != DeviceKind.Cuda) table.Ensure(this, batch.MaxEnd);
        int rot = table.RotaryDim, il = interleaved ? 1 : 0;
        long total = (long)N * H * (rot / 2);
        if (total == 0) return;
        if (Options.Fuse && D <= 8192)
        {
            // Joins a pending norm of x (QK-norm + RoPE), else queues as its own row program.
            for (int i = 0; i < _rowCount; i++)
                if (_rows[i].Y.Ptr == x.Ptr && _rows[i].Y.Count == x.Count && !_rows[i].Rope && _rows[i].Dim == D)
                {
                    ref var e = ref _rows[i];
                    e.Rope = true; e.Heads = H; e.Rot = rot; e.Interleaved = interleaved; e.Cos = table.Cos!.Ptr; e.Sin = table.Sin!.Ptr; e.Pos = batch.Positions!.Ptr;
                    return;
                }
            QueueRow(new RowEntry
            {
                X = x, Y = x, Rope = true, Rows = N * H, Dim = D, Heads = H, Rot = rot, Interleaved = interleaved,
                Cos = table.Cos!.Ptr, Sin = table.Sin!.Ptr, Pos = batch.Positions!.Ptr,
            });
            return;
        }
        Flush();
        nint px = x.Ptr, pp = batch.Positions!.Ptr, pc = table.Cos!.Ptr, ps = table.Sin!.Ptr;
        void** args = stackalloc void*[] { &px, &N, &H, &D, &pp, &pc, &ps, &rot, &il };
        Launch(_k.Rope, Blocks(total), 1, 1, 256, 0, args, "k_rope");
    }

    public Tensor Attention(Tensor q, Tensor k, Tensor? v, KvCache? cache, StepBatch batch, in AttentionParams p)
    {
        int dv = p.ValueIsKeyPrefix ? p.ValueDim : v?.Shape[2] ?? 0;
        Begin();
        var y = Empty(new Shape(q.Shape[0], q.Shape[1], dv));
        AttentionKernel.Validate(q, k, v, y, cache, batch, p);
        RequireF32(q, "query"); RequireF32(k, "key"); RequireF32(v, "value"); RequireF32(p.Sinks, "sinks");
        if (cache is not null) RequireF32(cache.K, "KV cache");
        int N = q.Shape[0], Hq = q.Shape[1], Hkv = k.Shape[1], Dk = q.Shape[2];
        if (N == 0 || dv == 0) return y;
        if (batch.MaxCount >= 16 && Dk <= 128 && dv <= 128 && !p.ValueIsKeyPrefix && FlashAttention(q, k, v!, cache, batch, p, y)) return y;
        nint kernel; int rb;
        if (Dk <= 128 && dv <= 128) { kernel = _k.AttentionD128; rb = 8; }
        else if (Dk <= 256 && dv <= 256) { kernel = _k.AttentionD256; rb = 4; }
        else if (Dk <= 576 && dv <= 512) { kernel = _k.AttentionD576; rb = 2; }
        else throw new ArgumentException($"attention head dims {Dk}/{dv} exceed the kernels' 576/512");
        int G = Hq / Hkv;
        rb = Math.Min(rb, G);
        int chunks = (G + rb - 1) / rb;
        // Split the key positions of the step's context bucket so that the grid fills the GPU (decode); one split
        // for prefill-sized steps. A function of the step's shape only.
        int bucket = Bucket;
        long baseBlocks = (long)N * Hkv * chunks;
        int splits = 1;
        while (splits < 128 && baseBlocks * splits < 4L * Multiprocessors && bucket / (splits * 2) >= 16) splits *= 2;
        int kps = (bucket + splits - 1) / splits;
        var a = new AttnArgs
        {
            Q = (ulong)q.Ptr, K = (ulong)k.Ptr, V = (ulong)(v?.Ptr ?? 0), Ck = (ulong)(cache?.K.Ptr ?? 0), Cv = (ulong)(cache?.V?.Ptr ?? 0),
            Out = (ulong)y.Ptr, Pos = (ulong)batch.Positions!.Ptr, Seq = (ulong)batch.TokenSequences!.Ptr, Table = (ulong)batch.SequenceTable!.Ptr,
            Sinks = (ulong)(p.Sinks?.Ptr ?? 0), Scale = p.Scale, Softcap = p.Softcap, N = N, Hq = Hq, Hkv = Hkv, Dk = Dk, Dv = dv,
            Cap = cache?.Capacity ?? 0, Ring = cache?.Ring == true ? 1 : 0, VFromK = p.ValueIsKeyPrefix ? 1 : 0, HasCache = cache is null ? 0 : 1,
            Window = p.Window, Chunk = p.Chunk, TempLen = p.TemperatureLength, RowsPerBlock = rb, Splits = splits, KeysPerSplit = kps,
        };
        if (splits > 1)
        {
            var part = Empty(new Shape(N * Hq, splits, dv));
            var ml = Empty(new Shape(N * Hq, splits, 2));
            a.PartO = (ulong)part.Ptr; a.PartML = (ulong)ml.Ptr;
        }
        void* pa = &a;
        Launch(kernel, (uint)N, (uint)(Hkv * chunks), (uint)splits, 128, 0, &pa, Profiling ? $"k_attention N={N} Hq={Hq} D={Dk} bucket={bucket} splits={splits}" : "k_attention");
        if (splits > 1)
        {
            nint po = (nint)a.PartO, pm = (nint)a.PartML, ps = p.Sinks?.Ptr ?? 0, py = y.Ptr;
            void** args = stackalloc void*[] { &po, &pm, &ps, &py, &N, &Hq, &dv, &splits };
            Launch(_k.AttentionCombine, (uint)N, (uint)Hq, 1, 128, 0, args, "k_attention_combine");
        }
        return y;
    }

    private int _flashSmem;

    /// <summary>Prefill-sized steps: 64-query tiles per sequence (host-built tile list), flash-style kernel.</summary>
    private bool FlashAttention(Tensor q, Tensor k, Tensor v, KvCache? cache, StepBatch batch, in AttentionParams p, Tensor y)
    {
        int Dk = q.Shape[2], Dv = v.Shape[2];
        int smem = (64 * (Dk + 1) * 2 + 64 * Dv + 64 * 65) * 4;
        if (smem > MaxSharedPerBlock) return false;
        if (smem > _flashSmem)
        {
            Check(cuFuncSetAttribute(_k.FlashAttn, FuncAttrMaxDynamicSharedSize, smem), "cuFuncSetAttribute");
            _flashSmem = smem;
        }
        int tiles = 0;
        for (int s = 0; s < batch.Sequences; s++) tiles += (batch.Count[s] + 63) / 64;
        if (tiles > 65535 * 16) return false;
        var table = Empty(new Shape(2 * tiles), DType.I32);
        Span<int> host = tiles <= 4096 ? stackalloc int[2 * tiles] : new int[2 * tiles];
        int t = 0;
        for (int s = 0; s < batch.Sequences; s++)
            for (int t0 = 0; t0 < batch.Count[s]; t0 += 64) { host[2 * t] = s; host[2 * t + 1] = t0; t++; }
        Upload<int>(host, table);
        var a = new AttnArgs
        {
            Q = (ulong)q.Ptr, K = (ulong)k.Ptr, V = (ulong)v.Ptr, Ck = (ulong)(cache?.K.Ptr ?? 0), Cv = (ulong)(cache?.V?.Ptr ?? 0),
            Out = (ulong)y.Ptr, Pos = (ulong)batch.Positions!.Ptr, Seq = (ulong)batch.TokenSequences!.Ptr, Table = (ulong)batch.SequenceTable!.Ptr,
            Sinks = (ulong)(p.Sinks?.Ptr ?? 0), Scale = p.Scale, Softcap = p.Softcap, N = q.Shape[0], Hq = q.Shape[1], Hkv = k.Shape[1], Dk = Dk, Dv = Dv,
            Cap = cache?.Capacity ?? 0, Ring = cache?.Ring == true ? 1 : 0, HasCache = cache is null ? 0 : 1,
            Window = p.Window, Chunk = p.Chunk, TempLen = p.TemperatureLength, Splits = 1,
        };
        nint pt = table.Ptr;
        void** args = stackalloc void*[] { &a, &pt };
        Launch(_k.FlashAttn, (uint)tiles, (uint)q.Shape[1], 1, 256, (uint)smem, args, Profiling ? $"k_flash_attn tiles={tiles} Hq={q.Shape[1]} D={Dk}" : "k_flash_attn");
        return true;
    }

    public void CacheWrite(KvCache cache, Tensor k, Tensor? v, StepBatch batch)
    {
        Begin();
        int row = CheckRows(cache.K, k, batch), rowV = 0;
        if (cache.V is not null)
        {
            if (v is null) throw new ArgumentException("this cache stores values: v is required");
            rowV = CheckRows(cache.V, v, batch);
        }
        int cap = cache.Capacity;
        for (int s = 0; s < batch.Sequences; s++)
        {
            int slot = batch.Slot[s], start = batch.Start[s], count = batch.Count[s];
            if ((uint)slot >= (uint)cache.Slots) throw new ArgumentException($"slot {slot} outside the cache's {cache.Slots} slots");
            if (!cache.Ring && start + count > cap)
                throw new LlmArchInputException($"sequence of {start + count} tokens exceeds the KV cache capacity of {cap}");
        }
        int N = batch.Tokens, ring = cache.Ring ? 1 : 0;
        long total = (long)N * (row + rowV);
        if (total == 0) return;
        nint pd = cache.K.Ptr, ps = k.Ptr, pdv = cache.V?.Ptr ?? 0, psv = cache.V is null ? 0 : v!.Ptr;
        nint pp = batch.Positions!.Ptr, pq = batch.TokenSequences!.Ptr, pt = batch.SequenceTable!.Ptr;
        void** args = stackalloc void*[] { &pd, &ps, &row, &pdv, &psv, &rowV, &N, &pp, &pq, &pt, &cap, &ring };
        Launch(_k.CacheWrite, Blocks(total), 1, 1, 256, 0, args, "k_cache_write");
    }

    private static int CheckRows(Tensor dst, Tensor src, StepBatch batch)
    {
        RequireF32(src, "cache input"); RequireF32(dst, "KV cache");
        int row = src.Shape[1] * src.Shape[2];
        if (src.Shape[0] != batch.Tokens || row != dst.Shape[2] * dst.Shape[3]) throw new ArgumentException($"cache write of {src.Shape} into {dst.Shape}");
        return row;
    }

    public Tensor CausalConv1d(Tensor x, Tensor weight, Tensor state, StepBatch batch, bool silu)
    {
        RequireF32(x, "conv input"); RequireF32(weight, "conv1d weight"); RequireF32(state, "conv state");
        int N = x.Shape[0], ch = x.Shape.Last, K = weight.Shape.Last;
        if (x.Shape.Rank != 2 || N != batch.Tokens || weight.Shape.Rows != ch || state.Shape.Rank != 3 || state.Shape[1] != K - 1 || state.Shape[2] != ch)
            throw new ArgumentException($"conv1d: x {x.Shape}, weight {weight.Shape}, state {state.Shape}, {batch.Tokens} tokens");
        if (K < 1 || K > 17) throw new ArgumentException($"conv1d kernel width {K} (at most 17)");
        for (int s = 0; s < batch.Sequences; s++)
            if ((uint)batch.Slot[s] >= (uint)state.Shape[0]) throw new ArgumentException($"slot {batch.Slot[s]} outside the state's {state.Shape[0]} slots");
        Begin();
        var y = Empty(x.Shape);
        if (N == 0 || ch == 0) return y;
        nint px = x.Ptr, pw = weight.Ptr, pst = state.Ptr, py = y.Ptr, pt = batch.SequenceTable!.Ptr;
        int si = silu ? 1 : 0;
        void** args = stackalloc void*[] { &px, &pw, &pst, &py, &pt, &ch, &K, &si };
        Launch(_k.Conv1d, (uint)((ch + 255) / 256), (uint)batch.Sequences, 1, 256, 0, args, "k_conv1d");
        return y;
    }

    // ---------------- fused family ops ----------------

    private int _deltaSmem;

    public Tensor GatedDeltaRule(Tensor q, Tensor k, Tensor v, Tensor g, Tensor beta, Tensor state, StepBatch batch, int chunkSize)
    {
        int N = q.Shape[0], Hk = q.Shape[1], Dk = q.Shape[2], Hv = v.Shape[1], Dv = v.Shape[2];
        RequireF32(state, "recurrent state");
        if (k.Shape != q.Shape || v.Shape[0] != N || Hv % Hk != 0 || g.Count != (long)N * Hv || beta.Count != g.Count
            || state.Shape.Rank != 4 || state.Shape[1] != Hv || state.Shape[2] != Dk || state.Shape[3] != Dv || N != batch.Tokens)
            throw new ArgumentException($"delta rule: q {q.Shape}, k {k.Shape}, v {v.Shape}, g {g.Shape}, beta {beta.Shape}, state {state.Shape}, {batch.Tokens} tokens");
        for (int s = 0; s < batch.Sequences; s++)
            if ((uint)batch.Slot[s] >= (uint)state.Shape[0]) throw new ArgumentException($"slot {batch.Slot[s]} outside the state's {state.Shape[0]} slots");
        Begin();
        var y = Empty(v.Shape);
        if (N == 0) return y;
        int smem = (Dk * Dv + 2 * Dk) * 4;
        if (smem > MaxSharedPerBlock) throw new ArgumentException($"delta rule state of {Dk}x{Dv} needs {smem} bytes of shared memory; this GPU offers {MaxSharedPerBlock}");
        if (smem > _deltaSmem)
        {
            Native.CudaDriver.Check(Native.CudaDriver.cuFuncSetAttribute(_k.DeltaRule, Native.CudaDriver.FuncAttrMaxDynamicSharedSize, smem), "cuFuncSetAttribute");
            _deltaSmem = smem;
        }
        uint threads = (uint)Math.Clamp((Dv + 31) / 32 * 32, 32, 1024);
        if (Dv > 1024) throw new ArgumentException($"delta rule value dim {Dv} > 1024");
        nint pq = q.Ptr, pk = k.Ptr, pv = v.Ptr, pg = g.Ptr, pb = beta.Ptr, pst = state.Ptr, py = y.Ptr, pt = batch.SequenceTable!.Ptr;
        void** args = stackalloc void*[] { &pq, &pk, &pv, &pg, &pb, &pst, &py, &pt, &Hk, &Hv, &Dk, &Dv };
        Launch(_k.DeltaRule, (uint)batch.Sequences, (uint)Hv, 1, threads, (uint)smem, args, "k_delta_rule");
        return y;
    }

    private static int StreamWidth(Tensor streams, int n)
    {
        if (n <= 0 || streams.Shape.Last % n != 0) throw new ArgumentException($"{streams.Shape} does not hold {n} streams");
        return streams.Shape.Last / n;
    }

    public Tensor AltUpPredict(Tensor streams, Tensor coefs, int n)
    {
        int c = StreamWidth(streams, n);
        long rows = streams.Shape.Rows;
        if (coefs.Shape.Last != n * n || coefs.Shape.Rows != rows) throw new ArgumentException($"AltUp coefs {coefs.Shape} for {rows} rows of {n} streams");
        Begin();
        var y = Empty(streams.Shape);
        long total = rows * n * c;
        if (total == 0) return y;
        nint ps = streams.Ptr, pc = coefs.Ptr, py = y.Ptr;
        void** args = stackalloc void*[] { &ps, &pc, &py, &rows, &n, &c };
        Launch(_k.AltUpPredict, Blocks(total), 1, 1, 256, 0, args, "k_altup_predict");
        return y;
    }

    public Tensor AltUpCorrect(Tensor predictions, Tensor activated, Tensor coefs, int n, int active)
    {
        int c = StreamWidth(predictions, n);
        long rows = predictions.Shape.Rows;
        if (activated.Shape.Last != c || activated.Shape.Rows != rows || coefs.Shape.Last != n || coefs.Shape.Rows != rows || (uint)active >= (uint)n)
            throw new ArgumentException($"AltUp correct: predictions {predictions.Shape}, activated {activated.Shape}, coefs {coefs.Shape}, active {active}");
        Begin();
        var y = Empty(predictions.Shape);
        long total = rows * n * c;
        if (total == 0) return y;
        nint pp = predictions.Ptr, pa = activated.Ptr, pc = coefs.Ptr, py = y.Ptr;
        void** args = stackalloc void*[] { &pp, &pa, &pc, &py, &rows, &n, &c, &active };
        Launch(_k.AltUpCorrect, Blocks(total), 1, 1, 256, 0, args, "k_altup_correct");
        return y;
    }

    public Tensor MatchMagnitude(Tensor x, Tensor reference, float eps)
    {
        if (x.Shape.Last != reference.Shape.Last || x.Shape.Rows != reference.Shape.Rows) throw new ArgumentException($"magnitude of {x.Shape} vs {reference.Shape}");
        Begin();
        var y = Empty(x.Shape);
        long rows = x.Shape.Rows; int c = x.Shape.Last;
        if (rows == 0 || c == 0) return y;
        nint px = x.Ptr, pr = reference.Ptr, py = y.Ptr;
        void** args = stackalloc void*[] { &px, &pr, &py, &rows, &c, &eps };
        Launch(_k.MatchMagnitude, (uint)rows, 1, 1, RowThreads(c), 0, args, "k_match_magnitude");
        return y;
    }

    public Tensor GaussianTopK(Tensor x, float stdMultiplier)
    {
        Begin();
        var y = Empty(x.Shape);
        long rows = x.Shape.Rows; int c = x.Shape.Last;
        if (rows == 0 || c == 0) return y;
        nint px = x.Ptr, py = y.Ptr;
        void** args = stackalloc void*[] { &px, &py, &rows, &c, &stdMultiplier };
        Launch(_k.GaussianTopK, (uint)rows, 1, 1, RowThreads(c), 0, args, "k_gaussian_topk");
        return y;
    }
}
