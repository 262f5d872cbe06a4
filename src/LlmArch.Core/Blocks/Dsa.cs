using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Blocks;

/// <summary>Shape of DeepSeek Sparse Attention's lightning indexer (<c>index_n_heads</c>, <c>index_head_dim</c>, <c>index_topk</c>).</summary>
public sealed record DsaSpec
{
    public required int Heads { get; init; }
    public required int HeadDim { get; init; }
    public required int TopK { get; init; }
    /// <summary>RoPE on the indexer's first rope dims in interleaved pairs (GLM-5) rather than half-split (DeepSeek-V3.2).</summary>
    public bool RopeInterleaved { get; init; }
    /// <summary>A layer without its own indexer reuses the top-k of the last layer that has one (GLM-5's shared indexer).</summary>
    public bool Shared { get; init; }
}

/// <summary>The top-k selections of the step's sequences, handed from a layer with an indexer to the layers that share it.</summary>
public sealed class TopKShare
{
    private Tensor?[] _idx = new Tensor?[4];
    public void Set(int sequence, Tensor idx)
    {
        if (sequence >= _idx.Length) Array.Resize(ref _idx, Math.Max(sequence + 1, _idx.Length * 2));
        _idx[sequence] = idx;
    }
    public Tensor Get(int sequence, int layer) =>
        (sequence < _idx.Length ? _idx[sequence] : null) ?? throw new InvalidOperationException($"layer {layer} shares a top-k selection but no earlier layer made one in this step");
    public void Clear() => Array.Clear(_idx);
}

/// <summary>
/// MLA with DeepSeek Sparse Attention (DeepSeek-V3.2, GLM-5). The lightning indexer scores every cached token for each
/// query, I(t, s) = Σ_h w_h(t) · ReLU(q_h(t)·k(s) / sqrt(D_I)) with w = weights_proj(x) / sqrt(H_I), queries from the MLA
/// query LoRA (wq_b of q_a_layernorm(q_a_proj(x))), one key per token (LayerNorm(wk(x))), RoPE on their first rope dims;
/// each query keeps the top <c>index_topk</c> causal tokens and MLA attends to those only. The attention is MLA's
/// absorbed form over the gathered latent rows of the selected tokens (<see cref="MlaAttention"/>'s weights), so a
/// query costs O(top-k), not O(context). Caches: the MLA latent (Kv[layer]) and the indexer keys (Kv[indexerEntry]),
/// both per position. <see cref="DenseMasked"/> computes the same attention densely with the selection as a mask
/// (the reference formulation; tests compare the two). x <c>[N, C]</c> → <c>[N, C]</c>.
/// </summary>
public sealed class DsaAttention : IMixer
{
    public MlaAttention Mla { get; }
    public DsaSpec Spec { get; }
    private readonly int _indexerEntry;
    private readonly TopKShare _share;
    private readonly Tensor _positions;
    private readonly Linear? _wqB, _wk, _weights;
    private readonly Tensor? _kNormW, _kNormB;
    /// <summary>Attend over every cached token with non-selected ones masked instead of gathering the selected rows.</summary>
    public bool DenseMasked { get; set; }

    /// <param name="positions">a <see cref="PositionRange"/> table (0, 1, 2, ... as F32) covering the model's positions.</param>
    public DsaAttention(WeightSource w, string prefix, MlaSpec mla, DsaSpec s, int indexerEntry, TopKShare share, Tensor positions)
    {
        if (mla.QLoraRank is null) throw new ConfigException($"{w.Location}: DeepSeek Sparse Attention at {prefix} needs q_lora_rank (its indexer reads the query LoRA)");
        if (s.Heads <= 0 || s.HeadDim <= 0 || s.TopK <= 0) throw new ConfigException($"{w.Location}: index_n_heads, index_head_dim and index_topk must be positive (got {s.Heads}/{s.HeadDim}/{s.TopK})");
        if (s.HeadDim < mla.RopeDim) throw new ConfigException($"{w.Location}: index_head_dim {s.HeadDim} is smaller than qk_rope_head_dim {mla.RopeDim}");
        Mla = new MlaAttention(w, prefix, mla);
        Spec = s; _indexerEntry = indexerEntry; _share = share; _positions = positions;
        if (!s.Shared)
        {
            string p = $"{prefix}.indexer";
            _wqB = Linear.Load(w, $"{p}.wq_b", mla.QLoraRank.Value, s.Heads * s.HeadDim, false);
            _wk = Linear.Load(w, $"{p}.wk", mla.Hidden, s.HeadDim, false);
            _kNormW = w.GetF32($"{p}.k_norm.weight", s.HeadDim);
            _kNormB = w.GetF32($"{p}.k_norm.bias", s.HeadDim);
            _weights = Linear.Load(w, $"{p}.weights_proj", mla.Hidden, s.Heads, false);
        }
    }

    public void CreateCache(IBackend b, ModelCache cache, int layer, int slots, int maxTokens)
    {
        cache.Kv[layer] = Mla.CreateCache(b, slots, maxTokens);
        if (!Spec.Shared) cache.Kv[_indexerEntry] = new KvCache(b, slots, maxTokens, 1, Spec.HeadDim, Spec.HeadDim, valuesInKeys: true, name: "indexer");
        Mla.Mla.Rope?.Ensure(b, maxTokens);
    }

    public Tensor Forward(IBackend b, Tensor x, ModelCache cache, int layer, StepBatch batch)
    {
        var m = Mla.Mla;
        int N = x.Shape[0], H = m.Heads, r = m.KvLoraRank, D = m.CacheDim;
        var mlaCache = cache.Kv[layer] ?? throw new InvalidOperationException($"layer {layer} has no MLA cache");
        var qResid = Mla.QANorm!.Forward(b, Mla.QA!.Forward(b, x));                      // [N, q_lora]
        var q = b.View(Mla.QB!.Forward(b, qResid), new Shape(N, H, m.QkHeadDim));
        var qNope = b.Slice(q, 0, m.NopeDim);
        var qRope = b.Slice(q, m.NopeDim, m.RopeDim);
        var kv = Mla.KvA.Forward(b, x);
        var latent = Mla.KvANorm.Forward(b, b.Slice(kv, 0, r));
        var kRope = b.View(b.Slice(kv, r, m.RopeDim), new Shape(N, 1, m.RopeDim));
        if (m.Rope is not null) { b.Rope(qRope, batch, m.Rope, m.RopeInterleaved); b.Rope(kRope, batch, m.Rope, m.RopeInterleaved); }
        b.CacheWrite(mlaCache, b.Concat(b.View(latent, new Shape(N, 1, r)), kRope), null, batch);
        var qAbs = b.Concat(MlaAttention.HeadLinear(b, qNope, Mla.QAbsorb ?? throw new InvalidOperationException("MLA absorbed weights need a checkpoint with data")), qRope); // [N, H, r + rope]

        Tensor? iq = null, weights = null;
        KvCache? idxCache = null;
        if (!Spec.Shared)
        {
            idxCache = cache.Kv[_indexerEntry] ?? throw new InvalidOperationException($"layer {layer} has no indexer cache");
            iq = b.View(_wqB!.Forward(b, qResid), new Shape(N, Spec.Heads, Spec.HeadDim));
            var ik = b.View(b.LayerNorm(_wk!.Forward(b, x), _kNormW, _kNormB, 1e-6f), new Shape(N, 1, Spec.HeadDim));
            if (m.Rope is not null) { iq = RopeFirst(b, iq, m.Rope, batch); ik = RopeFirst(b, ik, m.Rope, batch); }
            b.CacheWrite(idxCache, ik, null, batch);
            weights = b.Unary(_weights!.Forward(b, x), UnaryOp.Affine, 1f / MathF.Sqrt(Spec.Heads));
        }
        var qpos = b.Cast(batch.Positions!, DType.F32);
        var o = b.Empty(new Shape(N, H, r));
        for (int s = 0; s < batch.Sequences; s++)
        {
            int off = batch.Offset[s], T = batch.Count[s], end = batch.Start[s] + T, slot = batch.Slot[s];
            // Causal mask [T, end]: 0 where key j <= query position, -1e30 after it.
            var future = b.Binary(b.View(_positions, new Shape(1, end)), b.Unary(b.View(qpos, new Shape(T, 1), off), UnaryOp.Affine, 1f, 1f), BinaryOp.GreaterEqual);
            var mask = b.Unary(future, UnaryOp.Affine, -1e30f);
            Tensor idx;
            if (Spec.Shared) idx = _share.Get(s, layer);
            else
            {
                var keys = b.View(idxCache!.K, new Shape(1, end, Spec.HeadDim), (long)slot * idxCache.Capacity * Spec.HeadDim);
                var sc = b.BatchMatMul(b.View(b.Slice(iq!, off, T, 0), new Shape(1, T * Spec.Heads, Spec.HeadDim)), keys, transposeB: true);
                sc = b.Unary(b.Unary(sc, UnaryOp.Affine, 1f / MathF.Sqrt(Spec.HeadDim)), UnaryOp.Relu);
                var index = b.BatchMatMul(b.View(b.Slice(weights!, off, T, 0), new Shape(T, 1, Spec.Heads)), b.View(sc, new Shape(T, Spec.Heads, end)), transposeB: false);
                idx = b.TopK(b.Binary(b.View(index, new Shape(T, end)), mask, BinaryOp.Add), Math.Min(Spec.TopK, end)).Indices;   // [T, k]
                _share.Set(s, idx);
            }
            int k = idx.Shape[1];
            var qs = b.Slice(qAbs, off, T, 0);                                                   // [T, H, D]
            var rows = b.View(mlaCache.K, new Shape(end, D), (long)slot * mlaCache.Capacity * D);
            Tensor probs, values;
            if (DenseMasked)
            {
                // The reference formulation: every causal key, the unselected ones masked out.
                var ids = b.Cast(b.Binary(b.Cast(idx, DType.F32), b.Unary(b.View(_positions, new Shape(T, 1)), UnaryOp.Affine, end), BinaryOp.Add), DType.I32);
                var selected = b.Empty(new Shape(T * end, 1)); b.Fill(selected, 0f);
                var ones = b.Empty(new Shape(T * k, 1)); b.Fill(ones, 1f);
                b.ScatterAdd(selected, b.View(ids, new Shape(T * k)), ones);
                var full = b.Binary(mask, b.Unary(b.View(selected, new Shape(T, end)), UnaryOp.Affine, 1e30f, -1e30f), BinaryOp.Add);
                var sc = b.BatchMatMul(qs, b.View(rows, new Shape(1, end, D)), transposeB: true);  // [T, H, end]
                probs = b.Softmax(b.Binary(b.Unary(sc, UnaryOp.Affine, m.Scale), b.View(full, new Shape(T, 1, end)), BinaryOp.Add));
                values = b.View(b.Slice(rows, 0, r), new Shape(1, end, r));
            }
            else
            {
                // Gather the selected latent rows of this slot: [T, k, D].
                var ids = b.Cast(b.Unary(b.Cast(idx, DType.F32), UnaryOp.Affine, 1f, (float)((long)slot * mlaCache.Capacity)), DType.I32);
                var table = b.View(mlaCache.K, new Shape(mlaCache.Slots * mlaCache.Capacity, D));
                var picked = b.View(b.Gather(table, b.View(ids, new Shape(T * k))), new Shape(T, k, D));
                var sc = b.BatchMatMul(qs, picked, transposeB: true);                              // [T, H, k]
                var sel = b.View(b.TakeAlong(mask, idx), new Shape(T, 1, k));                     // selections past the query stay masked
                probs = b.Softmax(b.Binary(b.Unary(sc, UnaryOp.Affine, m.Scale), sel, BinaryOp.Add));
                values = b.Slice(picked, 0, r);
            }
            b.Copy(b.BatchMatMul(probs, values, transposeB: false), b.View(o, new Shape(T, H, r), (long)off * H * r));
        }
        var ov = MlaAttention.HeadLinear(b, o, Mla.OAbsorb!);                                      // [N, H, v]
        return Mla.OProj.Forward(b, b.View(ov, new Shape(N, H * m.ValueDim)));
    }

    /// <summary>RoPE on the first rotary-dim channels of x <c>[N, h, D]</c> (the indexer's layout: [rope | rest]).</summary>
    private Tensor RopeFirst(IBackend b, Tensor x, RopeTable rope, StepBatch batch)
    {
        int R = rope.RotaryDim, D = x.Shape[2];
        if (R == D) { b.Rope(x, batch, rope, Spec.RopeInterleaved); return x; }
        var head = b.Slice(x, 0, R);
        b.Rope(head, batch, rope, Spec.RopeInterleaved);
        return b.Concat(head, b.Slice(x, R, D - R));
    }
}

/// <summary>0, 1, 2, ... as an F32 vector on the model's device (key positions for masks built from ops), placed once at load.</summary>
public static class PositionRange
{
    public static Tensor Load(WeightSource w, int n) =>
        w.HasData ? w.Place(FrontierWeightTransforms.Arange("positions", n)) : new Tensor(DType.F32, new Shape(n), 0, null, "positions");
}
