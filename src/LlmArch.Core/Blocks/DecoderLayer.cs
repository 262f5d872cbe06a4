using LlmArch.Compute;


namespace LlmArch.Blocks;

/// <summary>Where the norms sit around the two sublayers.</summary>
public enum NormPlacement
{
    /// <summary>x + attn(norm(x)); h + ffn(norm(h)) — GPT-2, Llama, Qwen, Mistral.</summary>
    Pre,
    /// <summary>x + norm(attn(x)); h + norm(ffn(h)) — OLMo 2/3 (post-norm inside the residual).</summary>
    Post,
    /// <summary>x + norm(attn(norm(x))); h + norm(ffn(norm(h))) — Gemma 2/3 sandwich norms.</summary>
    Sandwich,
}

/// <summary>
/// One decoder layer: an attention-like mixer and a feed-forward, with the norms placed as the family wants.
/// Norms not used by a placement are null.
/// </summary>
public sealed class DecoderLayer
{
    public required NormPlacement Placement { get; init; }
    public required SelfAttention Attention { get; init; }
    public required IModule FeedForward { get; init; }
    /// <summary>Pre/Sandwich: before attention.</summary>
    public IModule? InputNorm { get; init; }
    /// <summary>Post/Sandwich: on the attention output.</summary>
    public IModule? PostAttentionNorm { get; init; }
    /// <summary>Pre/Sandwich: before the feed-forward.</summary>
    public IModule? PreFeedForwardNorm { get; init; }
    /// <summary>Post/Sandwich: on the feed-forward output.</summary>
    public IModule? PostFeedForwardNorm { get; init; }

    /// <summary>x <c>[N, C]</c>, updated in place and returned.</summary>
    public Tensor Forward(IBackend b, Tensor x, KvCache? cache, StepBatch batch, KvShare? share = null, int layer = -1)
    {
        var h = InputNorm is null ? x : InputNorm.Forward(b, x);
        var a = Attention.Forward(b, h, cache, batch, share, layer);
        if (PostAttentionNorm is not null) a = PostAttentionNorm.Forward(b, a);
        b.BinaryInPlace(x, a, BinaryOp.Add);
        h = PreFeedForwardNorm is null ? x : PreFeedForwardNorm.Forward(b, x);
        var f = FeedForward.Forward(b, h);
        if (PostFeedForwardNorm is not null) f = PostFeedForwardNorm.Forward(b, f);
        b.BinaryInPlace(x, f, BinaryOp.Add);
        return x;
    }
}
