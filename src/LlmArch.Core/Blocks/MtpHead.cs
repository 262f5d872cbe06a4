using LlmArch.Compute;

namespace LlmArch.Blocks;

/// <summary>
/// A multi-token-prediction module used as a draft head (DeepSeek-V3's MTP layer, Qwen3-Next's <c>mtp.*</c>): entry t
/// reads the base model's final hidden state at t and token t+1, at position t, and predicts token t+2:
/// h' = fc([norm_e(embed(token t+1)) | norm_h(h_t)]) → one decoder layer with its own KV cache → final norm → the LM
/// head. Chaining feeds the layer's output (before the final norm) back as the next hidden state.
/// </summary>
public sealed class MtpHead
{
    private readonly StepBatch _batch = new();

    public required RmsNorm EmbedNorm { get; init; }
    public required RmsNorm HiddenNorm { get; init; }
    /// <summary>fc / eh_proj <c>[C, 2C]</c> over [embedding | hidden].</summary>
    public required Linear Fc { get; init; }
    public required DecoderLayer Layer { get; init; }
    public required RmsNorm FinalNorm { get; init; }
    public required Tensor Embed { get; init; }
    public required Tensor LmHead { get; init; }
    public long Parameters { get; init; }

    /// <summary>A one-layer, one-slot cache for the head's own attention.</summary>
    public ModelCache CreateCache(IBackend b, int maxTokens)
    {
        var cache = new ModelCache(b, 1, 1, maxTokens);
        cache.Kv[0] = Layer.Attention.CreateCache(b, 1, maxTokens);
        Layer.Attention.Spec.Rope?.Ensure(b, maxTokens);
        return cache;
    }

    /// <summary>
    /// Runs entries t = cache length.. : hidden <c>[T, C]</c> (host), tokens t+1; writes logits <c>[T, V]</c> and the layer's
    /// output <c>[T, C]</c> to the host; advances the cache. Call under the base model's step lock.
    /// </summary>
    public void Forward(IBackend b, ReadOnlySpan<float> hidden, ReadOnlySpan<int> nextTokens, ModelCache cache, Span<float> logits, Span<float> outHidden, int vocab)
    {
        int T = nextTokens.Length, C = Fc.Out;
        if (cache.Length(0) + T > cache.Capacity) throw new LlmArchInputException($"draft cache of {cache.Capacity} tokens is full");
        foreach (int id in nextTokens)
            if ((uint)id >= (uint)vocab) throw new LlmArchInputException($"token id {id} is outside the vocabulary of {vocab}");
        b.ResetScratch();
        _batch.Clear();
        _batch.Add(0, cache.Length(0), nextTokens);
        b.Prepare(_batch);
        var e = EmbedNorm.Forward(b, b.Gather(Embed, _batch.Ids!));
        var hostHidden = b.Empty(new Shape(T, C));
        b.Upload(hidden[..(T * C)], hostHidden);
        var h = HiddenNorm.Forward(b, hostHidden);
        var x = Fc.Forward(b, b.Concat(e, h));
        x = Layer.Forward(b, x, cache.Kv[0], _batch);
        b.Download(x, outHidden[..(T * C)]);
        b.Download(b.MatMul(FinalNorm.Forward(b, x), LmHead), logits[..(T * vocab)]);
        cache.Advance(0, T);
    }
}
