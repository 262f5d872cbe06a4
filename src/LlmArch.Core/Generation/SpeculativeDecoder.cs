using System.Diagnostics;
using LlmArch.Blocks;
using LlmArch.Compute;
using LlmArch.Models;

namespace LlmArch.Generation;

/// <summary>
/// A model that carries its own draft head (multi-token prediction: Qwen3-Next <c>mtp.*</c>, DeepSeek-V3's extra
/// layer). Batch 1. Hidden states cross the interface on the host so they survive the next step's scratch reset.
/// </summary>
public interface IMtpDraft
{
    /// <summary>Whether the checkpoint had draft-head weights.</summary>
    bool HasDraftHead { get; }
    int HiddenSize { get; }
    /// <summary>The draft head's own cache (its attention KV), batch 1.</summary>
    ModelCache CreateDraftCache(int maxTokens);
    /// <summary>Runs the base model over ids (batch 1) with its cache, like <see cref="CausalLM.Forward"/>; writes logits
    /// <c>[T, V]</c> and the hidden states the draft head reads <c>[T, C]</c>.</summary>
    void ForwardBase(ReadOnlySpan<int> ids, ModelCache cache, Span<float> logits, Span<float> hidden);
    /// <summary>Runs the draft head over entries t = draftCache.Position.. : hidden[t] (base hidden at t, or the head's
    /// own output when chaining) and nextTokens[t] (token t+1); writes logits <c>[T, V]</c> predicting token t+2 and the
    /// head's output hidden <c>[T, C]</c>; advances draftCache.Position.</summary>
    void ForwardDraft(ReadOnlySpan<float> hidden, ReadOnlySpan<int> nextTokens, ModelCache draftCache, Span<float> logits, Span<float> outHidden);
}

/// <summary>Counts of one speculative generation.</summary>
public sealed record SpeculativeStats(int PromptTokens, int GeneratedTokens, int DraftedTokens, int AcceptedTokens,
    int VerifySteps, int Rollbacks, double PrefillSeconds, double DecodeSeconds)
{
    public double AcceptanceRate => DraftedTokens > 0 ? (double)AcceptedTokens / DraftedTokens : 0;
    /// <summary>Tokens emitted per base-model verification step (1 = no gain).</summary>
    public double TokensPerStep => VerifySteps > 0 ? (double)Math.Max(0, GeneratedTokens - 1) / VerifySteps : 0;
    public double DecodeTokensPerSecond => DecodeSeconds > 0 ? Math.Max(0, GeneratedTokens - 1) / DecodeSeconds : 0;
}

/// <summary>
/// Self-speculative greedy decoding with a model's own MTP head: the head drafts k tokens (chaining itself for
/// k &gt; 1), the base model verifies [last token, drafts] in one forward, the longest agreeing prefix is kept plus the
/// base model's own next token. Output is token-for-token the plain greedy output. Rollback goes through the cache
/// protocol: <see cref="ModelCache.Checkpoint"/> before each verification, <see cref="ModelCache.Trim"/> after a
/// rejection; attention caches keep the accepted prefix, recurrent states (Gated DeltaNet) return to the checkpoint and
/// the accepted tokens run again (one extra base forward, only on rejection).
/// </summary>
public static class SpeculativeDecoder
{
    /// <summary>Greedy decoding of one prompt with the model's own MTP head drafting <paramref name="draftTokens"/> per step.</summary>
    public static (int[] Tokens, double AcceptanceRate, SpeculativeStats Stats) Generate(CausalLM model, int[] prompt, int maxNew,
        IReadOnlyCollection<int>? eos = null, int draftTokens = 1)
    {
        if (model is not IMtpDraft draft || !draft.HasDraftHead)
            throw new LlmArchInputException($"{model.Config.SourcePath}: speculative decoding needs a multi-token-prediction head (mtp.* weights); this model has none");
        return Generate(model, draft, prompt, maxNew, eos, draftTokens);
    }

    /// <summary>The same with an explicit draft (its <see cref="IMtpDraft.ForwardBase"/> must run <paramref name="model"/>).</summary>
    public static (int[] Tokens, double AcceptanceRate, SpeculativeStats Stats) Generate(CausalLM model, IMtpDraft draft, int[] prompt, int maxNew,
        IReadOnlyCollection<int>? eos = null, int draftTokens = 1)
    {
        if (prompt.Length == 0) throw new LlmArchInputException("a prompt has no tokens");
        if (maxNew < 0) throw new LlmArchInputException($"max new tokens must be >= 0 (got {maxNew})");
        if (draftTokens < 1) throw new LlmArchInputException($"draft tokens must be >= 1 (got {draftTokens})");
        int P0 = prompt.Length;
        int total = Math.Min(P0 + maxNew, model.MaxPositions);
        maxNew = total - P0;
        var tokens = new List<int>(prompt);
        if (maxNew == 0) return (prompt.ToArray(), 0, new SpeculativeStats(P0, 0, 0, 0, 0, 0, 0, 0));

        if (draftTokens >= AttentionSpec.RewindSlack)
            throw new LlmArchInputException($"draft tokens must be below {AttentionSpec.RewindSlack} (got {draftTokens})");
        int V = model.VocabSize, C = draft.HiddenSize, k = draftTokens;
        int cap = total + k + 1;
        using var cache = model.CreateCache(1, cap);
        using var draftCache = draft.CreateDraftCache(cap);
        int maxT = Math.Max(P0, k + 1);
        var logits = new float[maxT * V];
        var hidden = new float[maxT * C];
        var dLogits = new float[maxT * V];
        var dHidden = new float[maxT * C];
        var chainHidden = new float[C];
        var drafts = new int[k];
        int drafted = 0, accepted = 0, steps = 0, rollbacks = 0;
        var sw = Stopwatch.StartNew();

        // Prefill, then the head over entries (h_t, token t+1) for the whole prompt.
        draft.ForwardBase(prompt, cache, logits, hidden);
        int next = ArgMax(logits.AsSpan((P0 - 1) * V, V));
        tokens.Add(next);
        double prefill = sw.Elapsed.TotalSeconds;
        sw.Restart();
        var entryTokens = new int[maxT];
        for (int t = 0; t < P0; t++) entryTokens[t] = t + 1 < P0 ? prompt[t + 1] : next;
        int entries = P0;
        bool done = eos?.Contains(next) == true || tokens.Count >= total;

        while (!done)
        {
            // Draft k tokens: the head over the pending entries, then chained on its own output.
            int kk = Math.Min(k, total - tokens.Count);
            int basePos = cache.Length(0); // the position of `next`, the last emitted token (not yet in the base cache)
            draft.ForwardDraft(hidden.AsSpan(0, entries * C), entryTokens.AsSpan(0, entries), draftCache, dLogits, dHidden);
            drafts[0] = ArgMax(dLogits.AsSpan((entries - 1) * V, V));
            dHidden.AsSpan((entries - 1) * C, C).CopyTo(chainHidden);
            for (int j = 1; j < kk; j++)
            {
                draft.ForwardDraft(chainHidden, drafts.AsSpan(j - 1, 1), draftCache, dLogits, dHidden);
                drafts[j] = ArgMax(dLogits.AsSpan(0, V));
                dHidden.AsSpan(0, C).CopyTo(chainHidden);
            }
            drafted += kk;

            // Verify [next, d_1 .. d_kk] in one base forward.
            cache.Checkpoint(0);
            var verify = new int[kk + 1];
            verify[0] = next;
            drafts.AsSpan(0, kk).CopyTo(verify.AsSpan(1));
            draft.ForwardBase(verify, cache, logits, hidden);
            steps++;
            int m = 0;
            while (m < kk && ArgMax(logits.AsSpan(m * V, V)) == drafts[m]) m++;
            accepted += m;
            int emitted = 0;
            for (int i = 0; i <= m && !done; i++)
            {
                int tok = i < m ? drafts[i] : ArgMax(logits.AsSpan(m * V, V));
                tokens.Add(tok); emitted++;
                if (eos?.Contains(tok) == true || tokens.Count >= total) done = true;
            }
            if (done) break;
            next = tokens[^1];

            if (m < kk)
            {
                // Roll back: attention caches by length; recurrent states return to the checkpoint before the verification
                // and the accepted prefix runs again.
                rollbacks++;
                int kept = cache.Trim(0, basePos + m + 1);
                if (kept < basePos) throw new InvalidOperationException($"the cache could not be rewound to {basePos} (kept {kept})");
                if (kept < basePos + m + 1) draft.ForwardBase(verify.AsSpan(kept - basePos, basePos + m + 1 - kept), cache, logits, hidden);
            }
            // The head's chained entries used its own hidden; rewind it to the last entry built on base hidden states.
            draftCache.Trim(0, draftCache.Length(0) - (kk - 1));
            // Pending head entries: (h at basePos + i, token basePos + i + 1) for i = 0..m.
            entries = m + 1;
            for (int i = 0; i < entries; i++) entryTokens[i] = tokens[basePos + i + 1];
        }
        double decode = sw.Elapsed.TotalSeconds;
        var stats = new SpeculativeStats(P0, tokens.Count - P0, drafted, accepted, steps, rollbacks, prefill, decode);
        return (tokens.ToArray(), stats.AcceptanceRate, stats);
    }

    private static int ArgMax(ReadOnlySpan<float> row)
    {
        int best = 0;
        for (int i = 1; i < row.Length; i++) if (row[i] > row[best]) best = i;
        return best;
    }
}

/// <summary>The base-model half of <see cref="IMtpDraft"/> and the call into a model's <see cref="MtpHead"/>, shared by the families that have one.</summary>
public static class MtpDraft
{
    /// <summary>Runs ids through the model in slot 0 of cache; writes logits <c>[T, V]</c> and final hidden states <c>[T, C]</c>.</summary>
    public static void ForwardBase(CausalLM model, ReadOnlySpan<int> ids, ModelCache cache, Span<float> logits, Span<float> hidden)
    {
        lock (model.StepLock)
        {
            var batch = new StepBatch();
            batch.Add(0, cache.Length(0), ids);
            var l = model.Forward(batch, cache, lastOnly: false, out var h);
            model.Backend.Download(l, logits[..(ids.Length * model.VocabSize)]);
            model.Backend.Download(h, hidden[..(ids.Length * model.HiddenSize)]);
        }
    }

    public static void ForwardDraft(CausalLM model, MtpHead head, ReadOnlySpan<float> hidden, ReadOnlySpan<int> nextTokens, ModelCache draftCache,
        Span<float> logits, Span<float> outHidden)
    {
        lock (model.StepLock) head.Forward(model.Backend, hidden, nextTokens, draftCache, logits, outHidden, model.VocabSize);
    }
}
