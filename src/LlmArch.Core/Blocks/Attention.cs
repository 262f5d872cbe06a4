using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Blocks;

/// <summary>How q and k are normalized before attention.</summary>
public enum QkNormKind
{
    None,
    /// <summary>RMSNorm over each head's dims, weight <c>[head_dim]</c> (Qwen3, Gemma 3, GLM).</summary>
    PerHead,
    /// <summary>RMSNorm over the whole projection, weight <c>[heads * head_dim]</c> (OLMo 2/3, MiniMax-M2).</summary>
    Whole,
    /// <summary>Weight-free RMS per head, after RoPE (Llama 4's L2 norm).</summary>
    L2,
}

/// <summary>Shape and options of one self-attention layer; see <see cref="SelfAttention"/>.</summary>
public sealed record AttentionSpec
{
    public required int Hidden { get; init; }
    public required int Heads { get; init; }
    public required int KvHeads { get; init; }
    public required int HeadDim { get; init; }
    public int? ValueHeadDim { get; init; }
    public bool QkvBias { get; init; }
    public bool OutBias { get; init; }
    public QkNormKind QkNorm { get; init; }
    public float NormEps { get; init; } = 1e-6f;
    /// <summary>1 for Gemma's (1 + w) norms.</summary>
    public float NormOffset { get; init; }
    /// <summary>null: NoPE layer.</summary>
    public RopeTable? Rope { get; init; }
    public bool RopeInterleaved { get; init; }
    /// <summary>Softmax scale; default 1/sqrt(head_dim).</summary>
    public float? Scale { get; init; }
    public int Window { get; init; }
    public int Chunk { get; init; }
    public float Softcap { get; init; }
    /// <summary>Grok's attention length temperature (see <see cref="AttentionParams.TemperatureLength"/>); 0 = none.</summary>
    public int TemperatureLength { get; init; }
    /// <summary>Learned per-head sinks (<c>{prefix}.sinks</c>, gpt-oss).</summary>
    public bool Sinks { get; init; }
    public string QName { get; init; } = "q_proj";
    public string KName { get; init; } = "k_proj";
    public string VName { get; init; } = "v_proj";
    public string OName { get; init; } = "o_proj";
    public string QNormName { get; init; } = "q_norm";
    public string KNormName { get; init; } = "k_norm";
    /// <summary>q_proj gives per head [query | gate]; the output is multiplied by sigmoid(gate) (Qwen3-Next's gated attention).</summary>
    public bool OutputGate { get; init; }
    /// <summary>v is RMS-normalized per head without a weight (Gemma 3n).</summary>
    public bool ValueNorm { get; init; }
    /// <summary>No v_proj: the values are the raw key projection (before k-norm and RoPE) — Gemma 4's attention_k_eq_v.</summary>
    public bool ValueIsKey { get; init; }
    /// <summary>This layer computes no keys/values: it reads those of layer KvSource (Gemma 3n's KV sharing).</summary>
    public int? KvSource { get; init; }
    /// <summary>A later layer reads this layer's keys and values: keep every position (no ring).</summary>
    public bool KvShared { get; init; }

    public int VDim => ValueHeadDim ?? HeadDim;

    /// <summary>Positions a ring cache keeps past its window, so a sequence can be rewound that far (speculative decoding).</summary>
    public const int RewindSlack = 32;

    /// <summary>Capacity of this layer's KV cache for maxTokens per sequence (a ring of window/chunk + slack slots when bounded).</summary>
    public (int Capacity, bool Ring, int Bound) CacheShape(int maxTokens)
    {
        int bound = KvShared ? 0 : Window > 0 ? Window : Chunk > 0 ? Chunk : 0;
        return bound > 0 && bound + RewindSlack < maxTokens ? (bound + RewindSlack, true, bound) : (maxTokens, false, 0);
    }
}

/// <summary>
/// The keys and values of the current step of layers whose cache later layers read (Gemma 3n's KV sharing): the
/// source layer stores them here, its consumers read them with the cache. Cleared at the start of every step.
/// </summary>
public sealed class KvShare(int layers)
{
    private readonly (Tensor K, Tensor V)?[] _kv = new (Tensor, Tensor)?[layers];
    public void Clear() => Array.Clear(_kv);
    public void Set(int layer, Tensor k, Tensor v) => _kv[layer] = (k, v);
    public (Tensor K, Tensor V) Get(int layer, int reader) =>
        _kv[layer] ?? throw new InvalidOperationException($"layer {reader} reads the keys/values of layer {layer}, which has not run in this step");
}

/// <summary>
/// Multi-head self-attention: q/k/v projections (optional bias), optional QK-norm, RoPE or NoPE, GQA/MQA/MHA,
/// sliding window / chunked / sinks / softcap through the one attention op, optional output gate and value norm, KV
/// sharing, output projection. x <c>[N, C]</c> (the step's tokens, flattened) → <c>[N, C]</c>.
/// </summary>
public class SelfAttention
{
    public AttentionSpec Spec { get; }
    public Linear Q { get; }
    public Linear K { get; }
    public Linear V { get; }
    public Linear O { get; }
    public RmsNorm? QNorm { get; }
    public RmsNorm? KNorm { get; }
    public Tensor? SinkLogits { get; }

    /// <summary>From projections already built (checkpoints whose q/k/v are fused or transposed).</summary>
    public SelfAttention(AttentionSpec s, Linear q, Linear k, Linear v, Linear o)
    {
        Spec = s; Q = q; K = k; V = v; O = o;
    }

    public SelfAttention(WeightSource w, string prefix, AttentionSpec s)
    {
        Spec = s;
        int h = s.Heads, kv = s.KvHeads, d = s.HeadDim;
        if (h <= 0 || kv <= 0 || d <= 0) throw new ConfigException($"{w.Location}: attention at {prefix} needs positive heads/kv heads/head dim (got {h}/{kv}/{d})");
        if (h % kv != 0) throw new ConfigException($"{w.Location}: num_attention_heads {h} is not a multiple of num_key_value_heads {kv}");
        Q = Linear.Load(w, $"{prefix}.{s.QName}", s.Hidden, (s.OutputGate ? 2 : 1) * h * d, s.QkvBias);
        if (s.KvSource is null)
        {
            K = Linear.Load(w, $"{prefix}.{s.KName}", s.Hidden, kv * d, s.QkvBias);
            if (s.ValueIsKey && s.VDim != d) throw new ConfigException($"{w.Location}: attention at {prefix} reuses keys as values but value head dim {s.VDim} != {d}");
            V = s.ValueIsKey ? K : Linear.Load(w, $"{prefix}.{s.VName}", s.Hidden, kv * s.VDim, s.QkvBias);
        }
        else K = V = null!; // reads its source layer's keys and values (its own k/v weights, if stored, are ignored)
        O = Linear.Load(w, $"{prefix}.{s.OName}", h * s.VDim, s.Hidden, s.OutBias);
        switch (s.QkNorm)
        {
            case QkNormKind.PerHead:
                QNorm = RmsNorm.Load(w, $"{prefix}.{s.QNormName}.weight", d, s.NormEps, s.NormOffset);
                KNorm = s.KvSource is null ? RmsNorm.Load(w, $"{prefix}.{s.KNormName}.weight", d, s.NormEps, s.NormOffset) : null;
                break;
            case QkNormKind.Whole:
                QNorm = RmsNorm.Load(w, $"{prefix}.{s.QNormName}.weight", h * d, s.NormEps, s.NormOffset);
                KNorm = RmsNorm.Load(w, $"{prefix}.{s.KNormName}.weight", kv * d, s.NormEps, s.NormOffset);
                break;
            case QkNormKind.L2:
                QNorm = KNorm = new RmsNorm(null, s.NormEps);
                break;
        }
        if (s.Sinks) SinkLogits = w.GetF32($"{prefix}.sinks", h);
        if (s.ValueNorm) VNorm = new RmsNorm(null, s.NormEps);
    }

    public RmsNorm? VNorm { get; }

    /// <summary>For subclasses with their own projections (MLA): only the spec is set; Q/K/V/O stay null.</summary>
    protected SelfAttention(AttentionSpec s)
    {
        Spec = s; Q = K = V = O = null!;
    }

    /// <summary>Hook for per-position query scaling (Llama 4's NoPE temperature); q is <c>[N, H, D]</c>.</summary>
    protected virtual Tensor AdjustQuery(IBackend b, Tensor q, StepBatch batch) => q;

    /// <summary>x <c>[N, C]</c> → <c>[N, C]</c>; reads and then extends this layer's cache (null: no earlier tokens).</summary>
    public virtual Tensor Forward(IBackend b, Tensor x, KvCache? cache, StepBatch batch, KvShare? share = null, int layer = -1)
    {
        var s = Spec;
        int N = x.Shape[0], H = s.Heads, D = s.HeadDim;
        Tensor q, gate = null!;
        if (s.OutputGate)
        {
            var qg = b.View(Q.Forward(b, x), new Shape(N, H, 2 * D));
            q = b.Slice(qg, 0, D);
            gate = b.Unary(b.View(b.Slice(qg, D, D), new Shape(N, H * D)), UnaryOp.Sigmoid);
        }
        else q = Q.Forward(b, x);
        Tensor k, v;
        if (s.KvSource is int src)
        {
            (k, v) = (share ?? throw new InvalidOperationException($"layer {layer} shares KV but no KvShare was given")).Get(src, layer);
            if (s.QkNorm == QkNormKind.Whole) q = QNorm!.Forward(b, q);
            q = b.View(q, new Shape(N, H, D));
            if (s.QkNorm == QkNormKind.PerHead) q = QNorm!.Forward(b, q);
            if (s.Rope is not null) b.Rope(q, batch, s.Rope, s.RopeInterleaved);
            if (s.QkNorm == QkNormKind.L2) q = QNorm!.Forward(b, q);
        }
        else
        {
            k = K.Forward(b, x);
            // With ValueIsKey the raw projection is the value; the key is replaced (norm) or copied before RoPE rotates it in place.
            v = s.ValueIsKey ? (s.QkNorm is QkNormKind.PerHead or QkNormKind.Whole ? k : b.Unary(k, UnaryOp.Affine, 1f)) : V.Forward(b, x);
            if (s.QkNorm == QkNormKind.Whole) { q = QNorm!.Forward(b, q); k = KNorm!.Forward(b, k); }
            q = b.View(q, new Shape(N, H, D));
            k = b.View(k, new Shape(N, s.KvHeads, D));
            v = b.View(v, new Shape(N, s.KvHeads, s.VDim));
            if (s.QkNorm == QkNormKind.PerHead) { q = QNorm!.Forward(b, q); k = KNorm!.Forward(b, k); }
            if (s.Rope is not null)
            {
                b.Rope(q, batch, s.Rope, s.RopeInterleaved);
                b.Rope(k, batch, s.Rope, s.RopeInterleaved);
            }
            if (s.QkNorm == QkNormKind.L2) { q = QNorm!.Forward(b, q); k = KNorm!.Forward(b, k); }
            if (VNorm is not null) v = VNorm.Forward(b, v);
            if (s.KvShared) share?.Set(layer, k, v);
        }
        q = AdjustQuery(b, q, batch);
        var p = new AttentionParams
        {
            Scale = s.Scale ?? 1f / MathF.Sqrt(s.HeadDim),
            Window = s.Window, Chunk = s.Chunk, Softcap = s.Softcap, Sinks = SinkLogits, TemperatureLength = s.TemperatureLength,
        };
        var o = b.Attention(q, k, v, cache, batch, p);
        // A consumer's cache is its source's, which the source has already extended in this step.
        if (cache is not null && s.KvSource is null) b.CacheWrite(cache, k, v, batch);
        var flat = b.View(o, new Shape(N, H * s.VDim));
        if (s.OutputGate) flat = b.Binary(flat, gate, BinaryOp.Mul);
        return O.Forward(b, flat);
    }

    /// <summary>This layer's KV storage for <paramref name="slots"/> sequences of up to maxTokens (null for a KV-sharing consumer).</summary>
    public virtual KvCache? CreateCache(IBackend b, int slots, int maxTokens)
    {
        if (Spec.KvSource is not null) return null;
        var (cap, ring, bound) = Spec.CacheShape(maxTokens);
        return new KvCache(b, slots, cap, Spec.KvHeads, Spec.HeadDim, Spec.VDim, ring, bound, name: "kv");
    }
}
