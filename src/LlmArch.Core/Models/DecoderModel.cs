using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>
/// The common decoder-only skeleton: token embedding (optionally scaled), a stack of layers, a final norm and
/// the LM head (tied or not, optional final softcap). The Llama recipe is the default; each family overrides
/// what its reference does differently (norm placement, QK-norm, NoPE layers, windows).
/// </summary>
public abstract class DecoderModel : CausalLM
{
    protected readonly int Hidden, Heads, KvHeads, HeadDim, Vocab, Layers, MaxPos;
    protected readonly float Eps;
    protected Tensor EmbedTokens = null!;
    protected Tensor LmHead = null!;
    protected IModule FinalNorm = null!;
    protected DecoderLayer[] Stack = [];
    protected float EmbedScale = 1f;
    protected float FinalSoftcap;
    private ArchitectureInfo? _info;

    public override int VocabSize => Vocab;
    public override int MaxPositions => MaxPos;
    public override int HiddenSize => Hidden;
    public override ArchitectureInfo Info => _info ??= Describe();

    /// <summary>Default for <c>tie_word_embeddings</c> when the config omits it (the family's config class default).</summary>
    protected virtual bool TieDefault => false;
    protected virtual string Prefix => "model";
    /// <summary>Name of the untied LM head (multimodal checkpoints nest it under the language model).</summary>
    protected virtual string LmHeadName => "lm_head.weight";

    protected DecoderModel(ModelConfig c, WeightSource w, IBackend b) : base(c, w, b)
    {
        Hidden = c.RequirePositive(c.HiddenSize, "hidden_size");
        Heads = c.RequirePositive(c.NumAttentionHeads, "num_attention_heads");
        KvHeads = c.NumKeyValueHeads ?? Heads;
        if (KvHeads <= 0) throw c.Invalid("num_key_value_heads", $"must be positive (got {KvHeads})");
        if (Heads % KvHeads != 0) throw c.Invalid("num_key_value_heads", $"{KvHeads} does not divide num_attention_heads {Heads}");
        HeadDim = c.HeadDim ?? Hidden / Heads;
        Vocab = c.RequirePositive(c.VocabSize, "vocab_size");
        Layers = c.RequirePositive(c.NumHiddenLayers, "num_hidden_layers");
        MaxPos = c.RequirePositive(c.MaxPositionEmbeddings, "max_position_embeddings");
        Eps = (float)(c.RmsNormEps ?? 1e-6);
        c.CheckedLayerTypes(Layers);
    }

    /// <summary>Loads everything; call at the end of the subclass constructor.</summary>
    protected void Build()
    {
        EmbedTokens = Weights.Get($"{Prefix}.embed_tokens.weight", [Vocab, Hidden], WeightUse.Embed);
        Stack = new DecoderLayer[Layers];
        for (int i = 0; i < Layers; i++) Stack[i] = BuildLayer(i, $"{Prefix}.layers.{i}");
        FinalNorm = BuildNorm($"{Prefix}.norm.weight", Hidden);
        bool tied = Config.TieWordEmbeddings ?? TieDefault;
        LmHead = tied ? EmbedTokens : Weights.Get(LmHeadName, Vocab, Hidden);
    }

    protected virtual IModule BuildNorm(string name, int dim) => RmsNorm.Load(Weights, name, dim, Eps);

    protected virtual RopeTable? RopeFor(int layer, string? layerType) => SharedRope(layerType);

    private RopeTables? _ropes;
    /// <summary>One RoPE table per layer type (layers of a type share it).</summary>
    protected RopeTable SharedRope(string? layerType) => (_ropes ??= new RopeTables(Config, HeadDim, RopeParametersFor)).For(layerType);

    /// <summary>RoPE parameters of a layer type; families whose legacy config form maps to per-type parameters override it.</summary>
    protected virtual RopeParameters RopeParametersFor(string? layerType) => Config.RopeFor(layerType);

    /// <summary>Layer type of layer i (from layer_types; families that derive a default pattern override it).</summary>
    protected virtual string? LayerType(int i) => Config.LayerTypes?[i];

    /// <summary>Sliding window of layer i: from layer_types when present, else the config's sliding_window for all layers.</summary>
    protected virtual int WindowFor(int i)
    {
        var type = LayerType(i);
        int? w = Config.SlidingWindow;
        if (type is not null)
        {
            if (type != "sliding_attention") return 0;
            if (w is null) throw Config.Missing("sliding_window");
        }
        else if (w is null || Config.UseSlidingWindow == false) return 0;
        return w.Value > 0 ? w.Value : throw Config.Invalid("sliding_window", $"must be positive (got {w})");
    }

    protected virtual AttentionSpec AttentionSpecFor(int i) => new()
    {
        Hidden = Hidden, Heads = Heads, KvHeads = KvHeads, HeadDim = HeadDim,
        QkvBias = Config.AttentionBias ?? false, OutBias = Config.AttentionBias ?? false,
        NormEps = Eps, Rope = RopeFor(i, LayerType(i)), Window = WindowFor(i),
    };

    protected virtual int IntermediateFor(int i)
    {
        var sizes = Config.IntermediateSize ?? throw Config.Missing("intermediate_size");
        return sizes.Length == 1 ? sizes[0] : sizes.Length == Layers ? sizes[i] : throw Config.Invalid("intermediate_size", $"has {sizes.Length} entries for {Layers} layers");
    }

    protected virtual IModule BuildFeedForward(int i, string prefix) =>
        GatedMlp.Load(Weights, $"{prefix}.mlp", Hidden, IntermediateFor(i),
            Activations.Parse(Config, Config.HiddenAct ?? Config.HiddenActivation ?? "silu", "hidden_act"), Config.MlpBias ?? false);

    protected virtual DecoderLayer BuildLayer(int i, string prefix) => new()
    {
        Placement = NormPlacement.Pre,
        InputNorm = BuildNorm($"{prefix}.input_layernorm.weight", Hidden),
        Attention = new SelfAttention(Weights, $"{prefix}.self_attn", AttentionSpecFor(i)),
        PreFeedForwardNorm = BuildNorm($"{prefix}.post_attention_layernorm.weight", Hidden),
        FeedForward = BuildFeedForward(i, prefix),
    };

    protected virtual ArchitectureInfo Describe() => new()
    {
        Layers = Stack.Select((l, i) => LayerInfo.FromAttention(l.Attention.Spec) with { FfnWidth = IntermediateFor(i) }).ToList(),
        Norm = Stack.Length > 0 ? Stack[0].Placement switch
        {
            NormPlacement.Post => "post-norm RMSNorm (inside the residual)",
            NormPlacement.Sandwich => "sandwich RMSNorm (pre and post)",
            _ => "pre-norm RMSNorm",
        } : "",
        QkNorm = Stack.Length > 0 ? Stack[0].Attention.Spec.QkNorm switch
        {
            QkNormKind.PerHead => "per-head RMSNorm",
            QkNormKind.Whole => "RMSNorm over all heads",
            QkNormKind.L2 => "L2 (weight-free)",
            _ => "none",
        } : "none",
        Positions = DescribePositions(),
    };

    protected string DescribePositions()
    {
        int nope = Stack.Count(l => l.Attention.Spec.Rope is null);
        var rp = Config.RopeFor(null);
        double partial = rp.PartialRotaryFactor ?? Config.PartialRotaryFactor ?? 1.0;
        string rope = $"RoPE ({rp.Kind}, theta {rp.RopeTheta ?? Config.RopeTheta ?? 10000:G})" + (partial < 1 ? $", partial {partial:G}" : "");
        return nope == 0 ? rope : nope == Stack.Length ? "NoPE" : $"{rope}; NoPE on {nope} of {Stack.Length} layers";
    }

    public override ModelCache CreateCache(int slots, int maxTokens)
    {
        var cache = new ModelCache(Backend, Layers, slots, maxTokens);
        for (int i = 0; i < Layers; i++) cache.Kv[i] = Stack[i].Attention.CreateCache(Backend, slots, maxTokens);
        EnsureRope(maxTokens);
        return cache;
    }

    /// <summary>Sizes the RoPE tables once per cache, so decode steps never grow them.</summary>
    protected void EnsureRope(int maxTokens)
    {
        _ropes?.Ensure(Backend, maxTokens);
        foreach (var l in Stack) l.Attention.Spec.Rope?.Ensure(Backend, maxTokens);
    }

    protected Tensor EmbedInput(StepBatch batch)
    {
        var x = Backend.Gather(EmbedTokens, batch.Ids!);
        if (EmbedScale != 1f) x = Backend.Unary(x, UnaryOp.Affine, EmbedScale);
        return x;
    }

    protected override Tensor HiddenStates(StepBatch batch, ModelCache cache)
    {
        var x = EmbedInput(batch);
        for (int i = 0; i < Layers; i++) x = Stack[i].Forward(Backend, x, cache.Kv[i], batch);
        return FinalNorm.Forward(Backend, x);
    }

    protected override Tensor Head(Tensor hidden)
    {
        var logits = Backend.MatMul(hidden, LmHead);
        if (FinalSoftcap > 0) logits = Backend.Unary(logits, UnaryOp.Softcap, FinalSoftcap);
        return logits;
    }
}
