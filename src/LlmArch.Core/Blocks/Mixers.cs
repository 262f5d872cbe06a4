using LlmArch.Compute;

namespace LlmArch.Blocks;

// The token mixers of the hybrid stacks (attention, linear attention, state-space, short convolution) behind one
// interface, so a layer can hold any of them and own its slot(s) of the model's cache. A mixer's cache entries are
// positional (KvCache: trimmable by position) or recurrent (IRecurrentState: checkpointed), both in ModelCache.

/// <summary>A token mixer of one layer: x <c>[N, C]</c> → <c>[N, C]</c>, reading and extending its cache entry.</summary>
public interface IMixer
{
    Tensor Forward(IBackend b, Tensor x, ModelCache cache, int layer, StepBatch batch);
    /// <summary>Allocates this mixer's entry in <paramref name="cache"/> (Kv[layer] or State[layer]).</summary>
    void CreateCache(IBackend b, ModelCache cache, int layer, int slots, int maxTokens);
}

/// <summary>A recurrent block with per-slot state (Gated DeltaNet, KDA, Mamba2, short convolution, lightning attention).</summary>
public interface IRecurrentBlock
{
    RecurrentState CreateState(IBackend b, int slots);
    /// <summary>x <c>[N, C]</c> → <c>[N, C]</c>, advancing each sequence's state.</summary>
    Tensor Forward(IBackend b, Tensor x, RecurrentState state, StepBatch batch);
}

/// <summary>Self-attention (any <see cref="SelfAttention"/>, MLA included) as a mixer over Kv[layer].</summary>
public sealed class AttentionMixer(SelfAttention attention, KvShare? share = null) : IMixer
{
    public SelfAttention Attention { get; } = attention;

    public Tensor Forward(IBackend b, Tensor x, ModelCache cache, int layer, StepBatch batch) =>
        Attention.Forward(b, x, cache.Kv[layer], batch, share, layer);

    public void CreateCache(IBackend b, ModelCache cache, int layer, int slots, int maxTokens)
    {
        cache.Kv[layer] = Attention.CreateCache(b, slots, maxTokens);
        Attention.Spec.Rope?.Ensure(b, maxTokens);
    }
}

/// <summary>A recurrent block as a mixer over State[layer].</summary>
public sealed class RecurrentMixer(IRecurrentBlock block) : IMixer
{
    public IRecurrentBlock Block { get; } = block;

    public Tensor Forward(IBackend b, Tensor x, ModelCache cache, int layer, StepBatch batch) =>
        Block.Forward(b, x, (RecurrentState)(cache.State[layer] ?? throw new InvalidOperationException($"layer {layer} has no recurrent state in this cache")), batch);

    public void CreateCache(IBackend b, ModelCache cache, int layer, int slots, int maxTokens) => cache.State[layer] = Block.CreateState(b, slots);
}

/// <summary>Qwen3-Next / Qwen3.5 Gated DeltaNet as a recurrent block.</summary>
public sealed class DeltaNetBlock(GatedDeltaNet net) : IRecurrentBlock
{
    public GatedDeltaNet Net { get; } = net;
    public RecurrentState CreateState(IBackend b, int slots) => Net.CreateState(b, slots);
    public Tensor Forward(IBackend b, Tensor x, RecurrentState state, StepBatch batch) => Net.Forward(b, x, state, batch);
}

/// <summary>One layer of a hybrid stack: its mixer (which owns the layer's cache entry) and how it updates x <c>[N, C]</c>.</summary>
public interface IStackLayer
{
    IMixer Mixer { get; }
    Tensor Forward(IBackend b, Tensor x, ModelCache cache, int layer, StepBatch batch);
}

/// <summary>
/// One residual layer around a mixer and an optional feed-forward, with the norms where the family puts them:
/// x += post_mix(mixer(pre_mix(x))); x += post_ffn(ffn(pre_ffn(x))). Absent norms are skipped; a null feed-forward
/// makes a mixer-only block (Nemotron-H). x <c>[N, C]</c> is updated in place.
/// </summary>
public sealed class MixerLayer : IStackLayer
{
    public IModule? PreMixerNorm { get; init; }
    public required IMixer Mixer { get; init; }
    public IModule? PostMixerNorm { get; init; }
    public IModule? PreFeedForwardNorm { get; init; }
    public IModule? FeedForward { get; init; }
    public IModule? PostFeedForwardNorm { get; init; }

    public Tensor Forward(IBackend b, Tensor x, ModelCache cache, int layer, StepBatch batch)
    {
        var h = PreMixerNorm is null ? x : PreMixerNorm.Forward(b, x);
        var a = Mixer.Forward(b, h, cache, layer, batch);
        if (PostMixerNorm is not null) a = PostMixerNorm.Forward(b, a);
        b.BinaryInPlace(x, a, BinaryOp.Add);
        if (FeedForward is null) return x;
        h = PreFeedForwardNorm is null ? x : PreFeedForwardNorm.Forward(b, x);
        var f = FeedForward.Forward(b, h);
        if (PostFeedForwardNorm is not null) f = PostFeedForwardNorm.Forward(b, f);
        b.BinaryInPlace(x, f, BinaryOp.Add);
        return x;
    }
}

/// <summary>Non-gated MLP down(act(up(x))) with act one of silu/gelu/relu or relu² (Nemotron-H's "relu2").</summary>
public sealed class UpDownMlp(Linear up, Linear down, UnaryOp act, bool squared = false) : IModule
{
    public Linear Up { get; } = up;
    public Linear Down { get; } = down;

    public Tensor Forward(IBackend b, Tensor x)
    {
        var h = b.Unary(Up.Forward(b, x), act);
        if (squared) h = b.Unary(h, UnaryOp.Square);
        return Down.Forward(b, h);
    }
}
