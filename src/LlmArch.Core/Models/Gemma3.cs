using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>
/// Gemma 3 text stack (<c>model_type</c> "gemma3_text"; also the text half of "gemma3" multimodal checkpoints).
/// Differences from the Llama recipe:
/// <list type="bullet">
/// <item>sandwich norms (input, post-attention, pre-feedforward, post-feedforward), every RMSNorm is x * (1 + w),
/// including the per-head q/k norms;</item>
/// <item>embeddings scaled by sqrt(hidden_size), the scale rounded to the embedding dtype as the reference does;</item>
/// <item>softmax scale query_pre_attn_scalar^-0.5, optional attention-logit and final-logit softcaps;</item>
/// <item>5:1 sliding-window/global layers from <c>layer_types</c> (or every <c>sliding_window_pattern</c>-th layer
/// global), each type with its own RoPE: local base 10k, global base 1M with linear scaling;</item>
/// <item>GeGLU (gelu_pytorch_tanh) MLP, tied embeddings by default.</item>
/// </list>
/// </summary>
[ModelType("gemma3_text", "Gemma3ForCausalLM", "gemma3", "Gemma3ForConditionalGeneration")]
public sealed class Gemma3 : DecoderModel
{
    private readonly string[] _types;
    private readonly string _prefix;

    protected override bool TieDefault => true;
    protected override string Prefix => _prefix;

    public Gemma3(ModelConfig c, WeightSource w, IBackend b) : base(c, w, b)
    {
        _types = c.CheckedLayerTypes(Layers) ?? DefaultLayerTypes(c, Layers);
        foreach (var t in _types)
            if (t is not ("sliding_attention" or "full_attention"))
                throw c.Invalid("layer_types", $"has '{t}'; Gemma 3 layers are 'sliding_attention' or 'full_attention'");
        // Multimodal checkpoints nest the text model: "language_model.model." (original) or "model.language_model." (transformers 5).
        _prefix = !w.HasData || w.Contains("model.embed_tokens.weight") ? "model"
            : w.Contains("language_model.model.embed_tokens.weight") ? "language_model.model"
            : w.Contains("model.language_model.embed_tokens.weight") ? "model.language_model" : "model";
        if (c.FinalLogitSoftcapping is double fs)
            FinalSoftcap = fs >= 0 ? (float)fs : throw c.Invalid("final_logit_softcapping", $"must be positive or null (got {fs})");
        Build();
        EmbedScale = ScaleInDType(MathF.Sqrt(Hidden), EmbedTokens.DType);
    }

    /// <summary>Gemma3TextConfig's default: every sliding_window_pattern-th layer (1-based) is global.</summary>
    private static string[] DefaultLayerTypes(ModelConfig c, int layers)
    {
        int pattern = c.SlidingWindowPattern ?? c.SlidingWindowPatternPrivate ?? 6;
        if (pattern <= 0) throw c.Invalid("sliding_window_pattern", $"must be positive (got {pattern})");
        return Enumerable.Range(0, layers).Select(i => (i + 1) % pattern == 0 ? "full_attention" : "sliding_attention").ToArray();
    }

    /// <summary>The reference keeps the scale as a tensor in the embedding dtype: sqrt(64) is exact, sqrt(5376) is not in bf16.</summary>
    private static float ScaleInDType(float s, DType t) => t switch
    {
        DType.BF16 => BFloat16Rounding.Round(s),
        DType.F16 => (float)(Half)s,
        _ => s,
    };

    protected override string? LayerType(int i) => _types[i];

    /// <summary>Per-type parameters when given; the legacy form maps rope_local_base_freq to the sliding layers.</summary>
    protected override RopeParameters RopeParametersFor(string? layerType) => LayerTypes.WithLocalBase(Config, layerType);

    protected override IModule BuildNorm(string name, int dim) => RmsNorm.Load(Weights, name, dim, Eps, offset: 1f);

    protected override AttentionSpec AttentionSpecFor(int i)
    {
        double qpas = Config.QueryPreAttnScalar ?? HeadDim;
        if (qpas <= 0) throw Config.Invalid("query_pre_attn_scalar", $"must be positive (got {qpas})");
        double cap = Config.AttnLogitSoftcapping ?? 0;
        if (cap < 0) throw Config.Invalid("attn_logit_softcapping", $"must be positive or null (got {cap})");
        return base.AttentionSpecFor(i) with
        {
            QkNorm = QkNormKind.PerHead, NormOffset = 1f,
            Scale = (float)Math.Pow(qpas, -0.5), Softcap = (float)cap,
        };
    }

    protected override DecoderLayer BuildLayer(int i, string prefix) => new()
    {
        Placement = NormPlacement.Sandwich,
        InputNorm = BuildNorm($"{prefix}.input_layernorm.weight", Hidden),
        Attention = new SelfAttention(Weights, $"{prefix}.self_attn", AttentionSpecFor(i)),
        PostAttentionNorm = BuildNorm($"{prefix}.post_attention_layernorm.weight", Hidden),
        PreFeedForwardNorm = BuildNorm($"{prefix}.pre_feedforward_layernorm.weight", Hidden),
        FeedForward = BuildFeedForward(i, prefix),
        PostFeedForwardNorm = BuildNorm($"{prefix}.post_feedforward_layernorm.weight", Hidden),
    };

    protected override ArchitectureInfo Describe() => base.Describe() with
    {
        Norm = "sandwich RMSNorm x (1 + w) (pre and post)",
        QkNorm = "per-head RMSNorm x (1 + w)",
        Positions = $"RoPE per layer type: local theta {RopeParametersFor("sliding_attention").RopeTheta ?? 10000:G}, " +
                    $"global theta {RopeParametersFor("full_attention").RopeTheta ?? Config.RopeTheta ?? 10000:G} ({RopeParametersFor("full_attention").Kind})",
        Notes = $"embeddings x sqrt({Hidden}); GeGLU; sliding window {Stack.Select(l => l.Attention.Spec.Window).DefaultIfEmpty(0).Max()} on " +
                $"{Stack.Count(l => l.Attention.Spec.Window > 0)} of {Stack.Length} layers" + (FinalSoftcap > 0 ? $"; final softcap {FinalSoftcap:G}" : ""),
    };
}
