using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>
/// LFM2 (<c>model_type</c> "lfm2", Liquid AI): mostly gated short-convolution blocks (<see cref="ShortConv"/>, kernel
/// <c>conv_L_cache</c>, a constant (L-1)·C state per sequence) with a few GQA attention layers (<c>layer_types</c>
/// "full_attention", or <c>full_attn_idxs</c>) that use per-head QK RMSNorm (<c>q_layernorm</c>/<c>k_layernorm</c>) and
/// RoPE. Every layer is pre-norm (<c>operator_norm</c>, <c>ffn_norm</c>) with a SwiGLU <c>feed_forward</c> (w1/w3/w2)
/// whose width is auto-adjusted as the reference does (2/3, multiplier, rounded up to <c>block_multiple_of</c>). The
/// final norm is <c>embedding_norm</c>; embeddings are tied by default.
/// </summary>
[ModelType("lfm2", "Lfm2ForCausalLM")]
public sealed class Lfm2 : StackModel
{
    private readonly string[] _types;
    private readonly int _ffn, _kernel;

    public Lfm2(ModelConfig c, WeightSource w, IBackend b) : base(c, w, b)
    {
        float eps = (float)(c.Get<double?>("norm_eps") ?? c.RmsNormEps ?? 1e-5);
        int heads = c.RequirePositive(c.NumAttentionHeads, "num_attention_heads");
        int kv = c.RequirePositive(c.NumKeyValueHeads ?? heads, "num_key_value_heads");
        if (heads % kv != 0) throw c.Invalid("num_key_value_heads", $"{kv} does not divide num_attention_heads {heads}");
        int headDim = c.RequirePositive(c.HeadDim ?? Hidden / heads, "head_dim");
        var fullIdx = c.Get<int[]>("full_attn_idxs");
        _types = Types(fullIdx is null ? null : i => fullIdx.Contains(i) ? "full_attention" : "conv", "conv", "full_attention");
        _ffn = FeedForwardWidth(c);
        _kernel = c.RequirePositive(c.Get<int?>("conv_L_cache"), "conv_L_cache");
        bool convBias = c.Get<bool?>("conv_bias") ?? false;

        var rope = Rope(RotaryEmbedding.Create(c, c.RopeFor(null), headDim));
        var attn = new AttentionSpec
        {
            Hidden = Hidden, Heads = heads, KvHeads = kv, HeadDim = headDim, QkNorm = QkNormKind.PerHead, NormEps = eps, Rope = rope,
            OName = "out_proj", QNormName = "q_layernorm", KNormName = "k_layernorm",
        };
        Embed = w.Get("model.embed_tokens.weight", [Vocab, Hidden], WeightUse.Embed);
        Stack = new IStackLayer[NumLayersConfigured];
        for (int i = 0; i < Stack.Length; i++)
        {
            string p = $"model.layers.{i}";
            IMixer mixer = _types[i] == "conv"
                ? new RecurrentMixer(new ShortConv(w, $"{p}.conv", Hidden, _kernel, convBias))
                : new AttentionMixer(new SelfAttention(w, $"{p}.self_attn", attn));
            Stack[i] = new MixerLayer
            {
                PreMixerNorm = RmsNorm.Load(w, $"{p}.operator_norm.weight", Hidden, eps),
                Mixer = mixer,
                PreFeedForwardNorm = RmsNorm.Load(w, $"{p}.ffn_norm.weight", Hidden, eps),
                FeedForward = GatedMlp.Load(w, $"{p}.feed_forward", Hidden, _ffn, UnaryOp.Silu, gate: "w1", up: "w3", down: "w2"),
            };
        }
        FinalNorm = RmsNorm.Load(w, "model.embedding_norm.weight", Hidden, eps);
        // The released configs name these tie_embedding and block_ff_dim; transformers lets them override.
        LmHeadWeight = c.Get<bool?>("tie_embedding") ?? c.TieWordEmbeddings ?? true ? Embed : w.Get("lm_head.weight", Vocab, Hidden);
    }

    /// <summary>The reference's width: int(2I/3), then with a multiplier int(m·I) rounded up to block_multiple_of.</summary>
    public static int FeedForwardWidth(ModelConfig c)
    {
        int inter = c.RequirePositive(c.Get<int?>("block_ff_dim") ?? c.IntermediateSize?[0] ?? 12288, "intermediate_size");
        if (!(c.Get<bool?>("block_auto_adjust_ff_dim") ?? true)) return inter;
        inter = (int)(2L * inter / 3);
        if (c.Get<double?>("block_ffn_dim_multiplier") is double m)
        {
            int multiple = c.RequirePositive(c.Get<int?>("block_multiple_of") ?? 256, "block_multiple_of");
            inter = (int)(m * inter);
            inter = multiple * ((inter + multiple - 1) / multiple);
        }
        return c.RequirePositive(inter, "intermediate_size");
    }

    protected override ArchitectureInfo Describe()
    {
        var layers = Stack.Select((l, i) => l.Mixer is AttentionMixer a
            ? AttentionInfo(a.Attention.Spec) with { Ffn = FfnKind.Dense, FfnWidth = _ffn }
            : new LayerInfo { Mixer = MixerKind.Conv, Rope = false, HeadDim = _kernel, StateValues = (long)(_kernel - 1) * Hidden, Ffn = FfnKind.Dense, FfnWidth = _ffn }).ToList();
        int conv = _types.Count(t => t == "conv");
        return new ArchitectureInfo
        {
            Layers = layers, Norm = "pre-norm RMSNorm", QkNorm = "per-head RMSNorm",
            Positions = $"RoPE (theta {Config.RopeFor(null).RopeTheta ?? Config.RopeTheta ?? 10000:G}) on attention layers",
            Notes = $"gated short convolution (kernel {_kernel}) {conv} : attention {_types.Length - conv}",
        };
    }
}
