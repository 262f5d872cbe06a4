using LlmArch.Blocks;
using LlmArch.Generation;
using LlmArch.Models;
using Xunit.Abstractions;

namespace LlmArch.Tests;

/// <summary>
/// A draft head that proposes the known greedy continuation (wrong where <c>wrongAt</c> says), around a model's own
/// base forward: exercises full and partial acceptance and the rollback of every cache kind.
/// </summary>
internal sealed class OracleDraft(CausalLM model, int[] truth, Func<int, bool> wrongAt) : IMtpDraft
{
    private readonly IMtpDraft _base = (IMtpDraft)model;
    public bool HasDraftHead => true;
    public int HiddenSize => _base.HiddenSize;
    public ModelCache CreateDraftCache(int maxTokens) => new(model.Backend, 1, 1, maxTokens);
    public void ForwardBase(ReadOnlySpan<int> ids, ModelCache cache, Span<float> logits, Span<float> hidden) => _base.ForwardBase(ids, cache, logits, hidden);

    public void ForwardDraft(ReadOnlySpan<float> hidden, ReadOnlySpan<int> nextTokens, ModelCache draftCache, Span<float> logits, Span<float> outHidden)
    {
        int V = model.VocabSize;
        logits[..(nextTokens.Length * V)].Clear();
        for (int i = 0; i < nextTokens.Length; i++)
        {
            int target = draftCache.Length(0) + i + 2; // entry t predicts token t + 2
            int tok = target < truth.Length ? truth[target] : 0;
            if (wrongAt(target)) tok = (tok + 1) % V;
            logits[i * V + tok] = 1f;
        }
        draftCache.Advance(0, nextTokens.Length);
    }

    /// <summary>Plain greedy decoding, the reference speculative decoding must reproduce.</summary>
    public static int[] Greedy(CausalLM m, int[] prompt, int n) => Generator.Generate(m, [prompt], n, SamplingOptions.Greedy).Tokens[0];

    /// <summary>
    /// Speculative decoding with an oracle wrong every <paramref name="wrongEvery"/> positions equals greedy; acceptance
    /// is full only when it is never wrong, and every wrong draft is rolled back.
    /// </summary>
    public static void CheckAcceptanceAndRollback(CausalLM m, int[] prompt, int draftTokens, int wrongEvery, ITestOutputHelper output)
    {
        var want = Greedy(m, prompt, 30);
        var (got, rate, stats) = SpeculativeDecoder.Generate(m, new OracleDraft(m, want, t => t % wrongEvery == 0), prompt, 30, draftTokens: draftTokens);
        output.WriteLine($"oracle draft {draftTokens}, wrong every {wrongEvery}: acceptance {rate:P1}, {stats.VerifySteps} verify steps, {stats.Rollbacks} rollbacks, {stats.TokensPerStep:F2} tokens/step");
        Assert.Equal(want, got);
        if (wrongEvery == 1000) { Assert.Equal(1.0, rate); Assert.Equal(0, stats.Rollbacks); }
        else { Assert.True(rate > 0 && rate < 1); Assert.True(stats.Rollbacks > 0); }
        Assert.True(stats.VerifySteps < 30);
    }
}
