using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>
/// The skeleton the hybrid families share: token embedding (optionally scaled), a stack of layers (<see cref="IStackLayer"/>, usually <see cref="MixerLayer"/>)
/// whose mixers own their cache entries, a final norm and the LM head (tied or not, optional final softcap). A family
/// file reads its config, builds the layers and their <see cref="LayerInfo"/>, and overrides what differs.
/// </summary>
public abstract class StackModel : CausalLM
{
    protected readonly int Hidden, Vocab, NumLayersConfigured, MaxPos;
    protected Tensor Embed = null!;
    protected Tensor LmHeadWeight = null!;
    protected IModule FinalNorm = null!;
    protected IStackLayer[] Stack = [];
    protected float EmbedScale = 1f;
    protected float FinalSoftcap;
    /// <summary>RoPE tables to size once per cache (tables shared by several layers appear once).</summary>
    protected readonly List<RopeTable> Ropes = new();
    private ArchitectureInfo? _info;

    public override int VocabSize => Vocab;
    public override int MaxPositions => MaxPos;
    public override int HiddenSize => Hidden;
    public override ArchitectureInfo Info => _info ??= Describe();

    /// <param name="layers">the layer count when the config derives it from elsewhere (a block pattern); else num_hidden_layers.</param>
    protected StackModel(ModelConfig c, WeightSource w, IBackend b, int? layers = null) : base(c, w, b)
    {
        Hidden = c.RequirePositive(c.HiddenSize, "hidden_size");
        Vocab = c.RequirePositive(c.VocabSize, "vocab_size");
        NumLayersConfigured = c.RequirePositive(layers ?? c.NumHiddenLayers, "num_hidden_layers");
        MaxPos = c.RequirePositive(c.MaxPositionEmbeddings ?? c.Get<int?>("model_max_length"), "max_position_embeddings");
    }

    /// <summary>The architecture description (layers, norms, positions) shown by info/compare.</summary>
    protected abstract ArchitectureInfo Describe();

    /// <summary>Entries of the model's <see cref="ModelCache"/> (one per layer unless a family keeps more per layer).</summary>
    protected virtual int CacheEntries => Stack.Length;

    public override ModelCache CreateCache(int slots, int maxTokens)
    {
        var cache = new ModelCache(Backend, CacheEntries, slots, maxTokens);
        for (int i = 0; i < Stack.Length; i++) Stack[i].Mixer.CreateCache(Backend, cache, i, slots, maxTokens);
        foreach (var r in Ropes) r.Ensure(Backend, maxTokens);
        return cache;
    }

    protected virtual Tensor EmbedInput(StepBatch batch)
    {
        var x = Backend.Gather(Embed, batch.Ids!);
        return EmbedScale != 1f ? Backend.Unary(x, UnaryOp.Affine, EmbedScale) : x;
    }

    protected override Tensor HiddenStates(StepBatch batch, ModelCache cache)
    {
        var x = EmbedInput(batch);
        for (int i = 0; i < Stack.Length; i++) x = Stack[i].Forward(Backend, x, cache, i, batch);
        return FinalNorm.Forward(Backend, x);
    }

    protected override Tensor Head(Tensor hidden)
    {
        var logits = Backend.MatMul(hidden, LmHeadWeight);
        return FinalSoftcap > 0 ? Backend.Unary(logits, UnaryOp.Softcap, FinalSoftcap) : logits;
    }

    /// <summary>Registers a RoPE table to be sized with every cache; returns it.</summary>
    protected RopeTable Rope(RopeTable t)
    {
        if (!Ropes.Contains(t)) Ropes.Add(t);
        return t;
    }

    /// <summary>The layer types: <c>layer_types</c>, else <paramref name="fallback"/>, checked against <paramref name="allowed"/>.</summary>
    protected string[] Types(Func<int, string>? fallback, params string[] allowed) =>
        LayerTypes.Resolve(Config, NumLayersConfigured, fallback, allowed) ?? throw Config.Missing("layer_types");

    /// <summary>An attention layer's info from its spec.</summary>
    protected static LayerInfo AttentionInfo(AttentionSpec s) => LayerInfo.FromAttention(s);
}
