using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>
/// OLMo hybrid (<c>model_type</c> "olmo_hybrid", AI2): Gated DeltaNet layers (<see cref="OlmoDeltaNet"/>: separate
/// q/k/v with short convs, β scaled to [0, 2] with <c>linear_allow_neg_eigval</c>) 3:1 with OLMo 3 attention layers.
/// The two layer kinds place their norms differently, as the reference does: DeltaNet layers are pre-norm
/// (<c>attention_layer_norm</c>, <c>feedforward_layer_norm</c>), attention layers are OLMo's post-norm inside the
/// residual (x + norm(attn(x)), the attention norm stored as <c>feedforward_layer_norm</c>, then
/// <c>post_feedforward_layernorm</c>) with RMSNorm over the whole q/k projections. Released checkpoints set no
/// <c>rope_parameters</c>: their attention is NoPE.
/// </summary>
[ModelType("olmo_hybrid", "OlmoHybridForCausalLM")]
public sealed class OlmoHybrid : StackModel
{
    private readonly int _kh, _kd, _vh, _vd, _kernel, _ffn;

    public OlmoHybrid(ModelConfig c, WeightSource w, IBackend b) : base(c, w, b)
    {
        float eps = (float)(c.RmsNormEps ?? 1e-6);
        int heads = c.RequirePositive(c.NumAttentionHeads, "num_attention_heads");
        int kv = c.RequirePositive(c.NumKeyValueHeads ?? heads, "num_key_value_heads");
        if (heads % kv != 0) throw c.Invalid("num_key_value_heads", $"{kv} does not divide num_attention_heads {heads}");
        int headDim = c.RequirePositive(c.HeadDim ?? Hidden / heads, "head_dim");
        _kh = c.RequirePositive(c.LinearNumKeyHeads ?? heads, "linear_num_key_heads");
        _vh = c.RequirePositive(c.LinearNumValueHeads ?? heads, "linear_num_value_heads");
        _kd = c.RequirePositive(c.LinearKeyHeadDim ?? (int)(0.75 * Hidden / _kh), "linear_key_head_dim");
        _vd = c.RequirePositive(c.LinearValueHeadDim ?? 2 * _kd, "linear_value_head_dim");
        _kernel = c.RequirePositive(c.LinearConvKernelDim ?? 4, "linear_conv_kernel_dim");
        bool negative = c.Get<bool?>("linear_allow_neg_eigval") ?? true;
        _ffn = c.RequirePositive(c.IntermediateSize?[0], "intermediate_size");
        var types = Types(i => i % 4 == 3 || (NumLayersConfigured < 4 && i == NumLayersConfigured - 1) ? "full_attention" : "linear_attention",
            "linear_attention", "full_attention");

        var rope = HasRope(c) ? Rope(RotaryEmbedding.Create(c, c.RopeFor(null), headDim)) : null;
        var attn = new AttentionSpec
        {
            Hidden = Hidden, Heads = heads, KvHeads = kv, HeadDim = headDim, QkNorm = QkNormKind.Whole, NormEps = eps, Rope = rope,
            QkvBias = c.AttentionBias ?? false, OutBias = c.AttentionBias ?? false,
        };
        Embed = w.Get("model.embed_tokens.weight", [Vocab, Hidden], WeightUse.Embed);
        Stack = new IStackLayer[NumLayersConfigured];
        for (int i = 0; i < Stack.Length; i++)
        {
            string p = $"model.layers.{i}";
            var mlp = GatedMlp.Load(w, $"{p}.mlp", Hidden, _ffn, UnaryOp.Silu);
            Stack[i] = types[i] == "linear_attention"
                ? new MixerLayer
                {
                    PreMixerNorm = RmsNorm.Load(w, $"{p}.attention_layer_norm.weight", Hidden, eps),
                    Mixer = new RecurrentMixer(new OlmoDeltaNet(w, $"{p}.linear_attn", Hidden, _kh, _kd, _vh, _vd, _kernel, negative)),
                    PreFeedForwardNorm = RmsNorm.Load(w, $"{p}.feedforward_layer_norm.weight", Hidden, eps),
                    FeedForward = mlp,
                }
                : new MixerLayer
                {
                    Mixer = new AttentionMixer(new SelfAttention(w, $"{p}.self_attn", attn)),
                    PostMixerNorm = RmsNorm.Load(w, $"{p}.feedforward_layer_norm.weight", Hidden, eps),
                    FeedForward = mlp,
                    PostFeedForwardNorm = RmsNorm.Load(w, $"{p}.post_feedforward_layernorm.weight", Hidden, eps),
                };
        }
        FinalNorm = RmsNorm.Load(w, "model.norm.weight", Hidden, eps);
        LmHeadWeight = c.TieWordEmbeddings ?? false ? Embed : w.Get("lm_head.weight", Vocab, Hidden);
    }

    /// <summary>RoPE unless the config sets rope_parameters (or rope_theta) to null, as the released checkpoints do.</summary>
    private static bool HasRope(ModelConfig c)
    {
        if (c.RopeParameters is { Count: > 0 } map) return map.Values.Any(r => r.RopeTheta is not null) || c.RopeTheta is not null;
        if (c.Raw.ContainsKey("rope_parameters")) return false;
        return !(c.Raw.ContainsKey("rope_theta") && c.RopeTheta is null);
    }

    protected override ArchitectureInfo Describe()
    {
        long state = (long)(_kernel - 1) * (2 * _kh * _kd + _vh * _vd) + (long)_vh * _kd * _vd;
        var layers = Stack.Select(l => l.Mixer is AttentionMixer a
            ? AttentionInfo(a.Attention.Spec) with { Ffn = FfnKind.Dense, FfnWidth = _ffn }
            : new LayerInfo { Mixer = MixerKind.Linear, Heads = _vh, KvHeads = _kh, HeadDim = _kd, ValueDim = _vd, Rope = false, StateValues = state, Ffn = FfnKind.Dense, FfnWidth = _ffn }).ToList();
        int linear = layers.Count(l => l.Mixer == MixerKind.Linear);
        bool rope = layers.Any(l => l.Mixer != MixerKind.Linear && l.Rope);
        return new ArchitectureInfo
        {
            Layers = layers, Norm = "pre-norm RMSNorm on DeltaNet layers, post-norm (inside the residual) on attention layers",
            QkNorm = "RMSNorm over all heads; L2 in DeltaNet",
            Positions = rope ? $"RoPE (theta {Config.RopeFor(null).RopeTheta ?? Config.RopeTheta ?? 10000:G}) on attention layers" : "NoPE",
            Notes = $"Gated DeltaNet {linear} : attention {layers.Count - linear}" + (Config.Get<bool?>("linear_allow_neg_eigval") ?? true ? ", negative eigenvalues (beta in [0, 2])" : ""),
        };
    }
}
