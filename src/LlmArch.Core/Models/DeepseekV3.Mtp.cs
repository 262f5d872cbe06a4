using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;
using LlmArch.Generation;

namespace LlmArch.Models;

/// <summary>
/// DeepSeek-V3's multi-token-prediction module as a draft head (<see cref="IMtpDraft"/>). The checkpoint stores it as
/// one extra layer, index <c>num_hidden_layers</c> (config <c>num_nextn_predict_layers</c>):
/// <c>enorm</c>, <c>hnorm</c> (RMSNorms), <c>eh_proj</c> <c>[C, 2C]</c>, a full decoder layer (MLA + MoE, named like
/// the others), <c>shared_head.norm</c> and <c>shared_head.head</c> (the main <c>lm_head</c> when absent), and a copy of
/// <c>embed_tokens</c> (the main table is used; the copy is not read). Entry t reads the main model's hidden state
/// at t after its final norm and token t+1, at position t, and predicts token t+2:
/// h' = eh_proj([enorm(embed(token t+1)) | hnorm(h_t)]) → decoder layer → shared_head.norm → head
/// (embedding first, as in vLLM's deepseek_mtp.py and SGLang's deepseek_nextn.py). When chaining, the head's own
/// output before shared_head.norm is fed back as the hidden state. vLLM also zeroes the embedding of the entry at
/// position 0; SGLang and DeepSeek's report do not, nor does this (it only changes draft quality, never the output).
/// Only the first MTP layer is loaded when the config declares more. Its weights are read through
/// <see cref="UncountedWeights"/>, so they stay out of <see cref="CausalLM.Weights"/>' records and therefore out of
/// info/compare/bench parameter counts (DeepSeek-V3 stays 671B, not 685B).
/// </summary>
public sealed partial class DeepseekV3 : IMtpDraft
{
    private readonly MtpHead? _mtp;

    /// <summary>The MTP layer's weights as the model read them (not part of <see cref="CausalLM.Weights"/>' records).</summary>
    public IReadOnlyList<WeightRecord> DraftHeadWeights { get; private set; } = [];

    private MtpHead? LoadMtp(WeightSource w)
    {
        int n = Config.NumNextnPredictLayers ?? 0;
        if (n < 0) throw Config.Invalid("num_nextn_predict_layers", $"must be >= 0 (got {n})");
        string p = $"{Prefix}.layers.{Layers}";
        if (n == 0 || !w.HasData || !w.Contains($"{p}.eh_proj.weight")) return null;
        var mw = new UncountedWeights(w);
        var head = mw.Contains($"{p}.shared_head.head.weight") ? mw.Get($"{p}.shared_head.head.weight", Vocab, Hidden) : LmHead;
        var mtp = new MtpHead
        {
            EmbedNorm = RmsNorm.Load(mw, $"{p}.enorm.weight", Hidden, Eps),
            HiddenNorm = RmsNorm.Load(mw, $"{p}.hnorm.weight", Hidden, Eps),
            Fc = Linear.Load(mw, $"{p}.eh_proj", 2 * Hidden, Hidden, false),
            Layer = LayerFrom(mw, Layers, p),
            FinalNorm = RmsNorm.Load(mw, $"{p}.shared_head.norm.weight", Hidden, Eps),
            Embed = EmbedTokens,
            LmHead = head,
            Parameters = mw.TotalParameters,
        };
        DraftHeadWeights = mw.Records;
        return mtp;
    }

    public bool HasDraftHead => _mtp is not null;

    public ModelCache CreateDraftCache(int maxTokens) => (_mtp ?? throw NoHead()).CreateCache(Backend, maxTokens);

    public void ForwardBase(ReadOnlySpan<int> ids, ModelCache cache, Span<float> logits, Span<float> hidden) =>
        MtpDraft.ForwardBase(this, ids, cache, logits, hidden);

    public void ForwardDraft(ReadOnlySpan<float> hidden, ReadOnlySpan<int> nextTokens, ModelCache draftCache, Span<float> logits, Span<float> outHidden) =>
        MtpDraft.ForwardDraft(this, _mtp ?? throw NoHead(), hidden, nextTokens, draftCache, logits, outHidden);

    private LlmArchInputException NoHead() =>
        new($"{Config.SourcePath}: this checkpoint has no multi-token-prediction layer (model.layers.{Layers}.eh_proj etc.; num_nextn_predict_layers {Config.NumNextnPredictLayers ?? 0})");

    /// <summary>
    /// Reads through another weight source (same tensors, shape checks, FP8 scales, load-time quantization) but records
    /// into its own list, so a side module's weights are not counted as the model's parameters.
    /// </summary>
    private sealed class UncountedWeights : WeightSource
    {
        private readonly WeightSource _inner;
        public UncountedWeights(WeightSource inner) { _inner = inner; Backend = inner.Backend; }
        public override bool HasData => _inner.HasData;
        public override string Location => _inner.Location;
        public override bool Contains(string name) => _inner.Contains(name);
        protected override Tensor Fetch(string name, long[] expected) => _inner.GetHost(name, expected, WeightUse.Dense, countAs: []);
    }
}
