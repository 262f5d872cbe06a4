using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Blocks;

/// <summary>Shape of one multi-head latent attention layer (DeepSeek-V2/V3, Kimi K2).</summary>
public sealed record MlaSpec
{
    public required int Hidden { get; init; }
    public required int Heads { get; init; }
    /// <summary>q_lora_rank; null: a plain q_proj (DeepSeek-V2-Lite).</summary>
    public int? QLoraRank { get; init; }
    public required int KvLoraRank { get; init; }
    public required int NopeDim { get; init; }
    public required int RopeDim { get; init; }
    public required int ValueDim { get; init; }
    public bool Bias { get; init; }
    public float NormEps { get; init; } = 1e-6f;
    /// <summary>null: NoPE MLA (Kimi Linear): the "rope" channels of q and the shared key are used unrotated.</summary>
    public required RopeTable? Rope { get; init; }
    /// <summary>rope_interleave: rotate pairs (2i, 2i + 1) of the rope channels (what HF's de-interleave + rotate_half computes).</summary>
    public bool RopeInterleaved { get; init; }
    public required float Scale { get; init; }
    public int QkHeadDim => NopeDim + RopeDim;
    /// <summary>Values cached per token: the normalized latent and the roped shared key.</summary>
    public int CacheDim => KvLoraRank + RopeDim;
}

/// <summary>
/// Multi-head latent attention. The cache holds one row per token, <c>[c_kv (normed) | k_pe (roped)]</c>
/// (kv_lora_rank + qk_rope_head_dim values), never the expanded keys and values.
/// <para>A step whose sequences all start at position 0 expands k_nope/v with kv_b_proj and runs ordinary MHA (cheaper for long prompts);
/// steps after that use the absorbed form: q_nope·W_UK maps the query into latent space, attention is then MQA with
/// one KV head (Dk = rank + rope, values = the first rank channels of the keys), and W_UV maps the latent output
/// back per head before o_proj. Both read the same cache.</para>
/// </summary>
public sealed class MlaAttention : SelfAttention
{
    public MlaSpec Mla { get; }
    public Linear? QProj { get; }
    public Linear? QA { get; }
    public RmsNorm? QANorm { get; }
    public Linear? QB { get; }
    public Linear KvA { get; }
    public RmsNorm KvANorm { get; }
    public Linear KvB { get; }
    public Linear OProj { get; }
    /// <summary>W_UK per head transposed, <c>[H, rank, nope]</c>, in the weights' dtype (F32 when FP8 blocks do not align with heads); null for shape-only builds.</summary>
    public Tensor? QAbsorb { get; }
    /// <summary>W_UV per head, <c>[H, v, rank]</c>, in the weights' dtype (or F32 as above); null for shape-only builds.</summary>
    public Tensor? OAbsorb { get; }
    /// <summary>Forces the absorbed path for prefill too (tests).</summary>
    public bool AlwaysAbsorbed { get; set; }

    public MlaAttention(WeightSource w, string prefix, MlaSpec s) : base(new AttentionSpec
    {
        Hidden = s.Hidden, Heads = s.Heads, KvHeads = 1, HeadDim = s.CacheDim, ValueHeadDim = s.KvLoraRank,
        Rope = s.Rope, RopeInterleaved = s.RopeInterleaved, Scale = s.Scale, NormEps = s.NormEps,
    })
    {
        Mla = s;
        int H = s.Heads, r = s.KvLoraRank;
        if (s.QLoraRank is int qr)
        {
            QA = Linear.Load(w, $"{prefix}.q_a_proj", s.Hidden, qr, s.Bias);
            QANorm = RmsNorm.Load(w, $"{prefix}.q_a_layernorm.weight", qr, s.NormEps);
            QB = Linear.Load(w, $"{prefix}.q_b_proj", qr, H * s.QkHeadDim, false);
        }
        else QProj = Linear.Load(w, $"{prefix}.q_proj", s.Hidden, H * s.QkHeadDim, false);
        KvA = Linear.Load(w, $"{prefix}.kv_a_proj_with_mqa", s.Hidden, r + s.RopeDim, s.Bias);
        KvANorm = RmsNorm.Load(w, $"{prefix}.kv_a_layernorm.weight", r, s.NormEps);
        var kvB = w.GetHost($"{prefix}.kv_b_proj.weight", [H * (s.NopeDim + s.ValueDim), r]);
        KvB = new Linear(w.Place(kvB), null);
        OProj = Linear.Load(w, $"{prefix}.o_proj", H * s.ValueDim, s.Hidden, s.Bias);
        if (w.HasData)
        {
            var (q, o) = MlaAbsorb.Split(kvB, H, r, s.NopeDim, s.ValueDim);
            QAbsorb = w.Place(q); OAbsorb = w.Place(o);
        }
    }

    public override KvCache? CreateCache(IBackend b, int slots, int maxTokens) =>
        new(b, slots, maxTokens, 1, Mla.CacheDim, Mla.KvLoraRank, valuesInKeys: true, name: "mla");

    /// <summary>A different matrix per head: x <c>[N, H, K]</c> times w <c>[H, O, K]</c> → <c>[N, H, O]</c>.</summary>
    public static Tensor HeadLinear(IBackend b, Tensor x, Tensor w) =>
        b.Transpose(b.BatchMatMul(b.Transpose(x, 0, 1), w, transposeB: true), 0, 1);

    public override Tensor Forward(IBackend b, Tensor x, KvCache? cache, StepBatch batch, KvShare? share = null, int layer = -1)
    {
        var s = Mla;
        int N = x.Shape[0], H = s.Heads, r = s.KvLoraRank;
        var q = QProj is not null ? QProj.Forward(b, x) : QB!.Forward(b, QANorm!.Forward(b, QA!.Forward(b, x)));
        q = b.View(q, new Shape(N, H, s.QkHeadDim));
        var qNope = b.Slice(q, 0, s.NopeDim);                  // [N, H, nope]
        var qRope = b.Slice(q, s.NopeDim, s.RopeDim);          // [N, H, rope]
        var kv = KvA.Forward(b, x);                            // [N, rank + rope]
        var latent = KvANorm.Forward(b, b.Slice(kv, 0, r));    // [N, rank]
        var kRope = b.View(b.Slice(kv, r, s.RopeDim), new Shape(N, 1, s.RopeDim));
        if (s.Rope is not null)
        {
            b.Rope(qRope, batch, s.Rope, s.RopeInterleaved);
            b.Rope(kRope, batch, s.Rope, s.RopeInterleaved);
        }
        var entry = b.Concat(b.View(latent, new Shape(N, 1, r)), kRope); // [N, 1, rank + rope]: what the cache keeps
        var p = new AttentionParams { Scale = s.Scale };

        Tensor o;
        if (batch.AllFromStart && !AlwaysAbsorbed && (QAbsorb is null || batch.MaxCount > 1))
        {
            // Expanded (prefill from position 0): per-head keys [k_nope | k_pe] and values from the latent.
            var kvFull = b.View(KvB.Forward(b, latent), new Shape(N, H, s.NopeDim + s.ValueDim));
            var kNope = b.Slice(kvFull, 0, s.NopeDim);
            var v = b.Slice(kvFull, s.NopeDim, s.ValueDim);
            var zeros = b.Empty(new Shape(N, H, s.RopeDim));
            b.Fill(zeros, 0f);
            var kRopeH = b.Binary(zeros, kRope, BinaryOp.Add);  // the shared rope key repeated per head
            o = b.Attention(b.Concat(qNope, qRope), b.Concat(kNope, kRopeH), v, null, batch, p);
        }
        else
        {
            if (QAbsorb is null || OAbsorb is null) throw new InvalidOperationException("MLA absorbed weights need a checkpoint with data");
            var qAbs = b.Concat(HeadLinear(b, qNope, QAbsorb), qRope);                // [N, H, rank + rope]
            p.ValueIsKeyPrefix = true; p.ValueDim = r;
            var oLatent = b.Attention(qAbs, entry, null, cache, batch, p);           // [N, H, rank]
            o = HeadLinear(b, oLatent, OAbsorb);                                      // [N, H, v]
        }
        if (cache is not null) b.CacheWrite(cache, entry, null, batch);
        return OProj.Forward(b, b.View(o, new Shape(N, H * s.ValueDim)));
    }
}
