using System.Text.Json.Nodes;
using LlmArch.Checkpoints;
using LlmArch.Models;

namespace LlmArch.Tests;

/// <summary>
/// Properties of the bounded caches (ring cache of window slots, chunk-local cache) that need no oracle: cached
/// decode equals a fresh full recompute at every step past the window/chunk boundary, a prompt fed in pieces
/// equals one prefill, and a batch equals its sequences one by one.
/// </summary>
public class AttentionFamilyCacheTests
{
    /// <summary>Loads a fixture's weights with its config.json optionally edited.</summary>
    public static CausalLM Load(string fixture, Action<JsonObject>? edit = null)
    {
        string dir = AttnFixtures.Dir(fixture), path = Path.Combine(dir, "config.json");
        var root = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit?.Invoke(root);
        return ModelLoader.Create(ModelConfig.Parse(root.ToJsonString(), path), new CheckpointWeights(dir));
    }

    public static int[] Tokens(int n, int seed, int vocab)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => r.Next(vocab)).ToArray();
    }

    /// <summary>Logits <c>[B, T, V]</c> of a forward, copied to the host.</summary>
    public static float[] Run(CausalLM m, int[] ids, int batch, Blocks.ModelCache cache, bool lastOnly = false)
    {
        var t = m.Forward(ids, batch, cache, lastOnly);
        var a = new float[t.Count];
        m.Backend.Download(t, a);
        return a;
    }

    private static float[] FullLast(CausalLM m, int[] seq) => Run(m, seq, 1, m.CreateCache(1, seq.Length), lastOnly: true);

    private static double MaxDiff(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        Assert.Equal(a.Length, b.Length);
        double d = 0;
        for (int i = 0; i < a.Length; i++) d = Math.Max(d, Math.Abs(a[i] - b[i]));
        return d;
    }

    private static int ArgMax(ReadOnlySpan<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    /// <summary>
    /// Prefills the prompt in pieces of <paramref name="piece"/> tokens, then decodes greedily one token at a time;
    /// after every step the cached logits must equal a full forward over the whole sequence so far.
    /// Returns the largest difference seen.
    /// </summary>
    public static double CachedVersusFull(CausalLM m, int[] prompt, int steps, int piece)
    {
        int V = m.VocabSize;
        var cache = m.CreateCache(1, prompt.Length + steps);
        float[] last = [];
        for (int s = 0; s < prompt.Length; s += piece)
        {
            var ids = prompt[s..Math.Min(prompt.Length, s + piece)];
            var all = Run(m, ids, 1, cache);
            last = all[^V..];
        }
        var seq = new List<int>(prompt);
        double worst = MaxDiff(last, FullLast(m, seq.ToArray()));
        for (int n = 0; n < steps; n++)
        {
            int tok = ArgMax(last);
            seq.Add(tok);
            last = Run(m, [tok], 1, cache);
            worst = Math.Max(worst, MaxDiff(last, FullLast(m, seq.ToArray())));
        }
        return worst;
    }

    [Theory]
    [InlineData("gemma3", 5)]   // window 5: ring of 5 slots on 5 of 6 layers
    [InlineData("olmo3", 5)]    // window 5 on 3 of 4 layers
    [InlineData("llama4", 8)]   // chunk 8 on 3 of 4 layers; NoPE temperature on the 4th
    [InlineData("gpt_oss", 5)]  // window 5 on alternate layers, with sinks
    [InlineData("gpt_oss_mxfp4", 5)]
    public void CachedDecodeEqualsFullRecompute(string fixture, int bound)
    {
        var m = AttentionFamilyCacheTests.Load(fixture);
        var bounded = m.Info.Layers.Where(l => l.Window > 0).ToList();
        Assert.NotEmpty(bounded);
        Assert.All(bounded, l => Assert.Equal(bound, l.Window));
        var prompt = Tokens(3 * bound + 2, 7, m.VocabSize);          // spans several windows/chunks
        Assert.True(CachedVersusFull(m, prompt, 34, 1) < 1e-4);       // token by token
        Assert.True(CachedVersusFull(m, prompt, 6, 3) < 1e-4);        // prefill in pieces that straddle the boundary
        Assert.True(CachedVersusFull(m, prompt, 2, prompt.Length) < 1e-4);
    }

    [Fact]
    public void MistralWithSlidingWindowCachesAndDiffers()
    {
        var windowed = Load("mistral", c => c["sliding_window"] = 5);
        var full = Load("mistral");
        Assert.All(windowed.Info.Layers, l => Assert.Equal(5, l.Window));
        Assert.All(full.Info.Layers, l => Assert.Equal(0, l.Window));
        var prompt = Tokens(12, 3, windowed.VocabSize);
        Assert.True(CachedVersusFull(windowed, prompt, 30, 1) < 1e-4);
        Assert.True(CachedVersusFull(windowed, prompt, 4, 5) < 1e-4);

        // Positions 0..4 see the same keys either way; from position 5 on the window drops the oldest.
        int V = full.VocabSize;
        var a = Run(windowed, prompt, 1, windowed.CreateCache(1, prompt.Length));
        var b = Run(full, prompt, 1, full.CreateCache(1, prompt.Length));
        Assert.True(MaxDiff(a.AsSpan(0, 5 * V), b.AsSpan(0, 5 * V)) < 1e-5);
        Assert.True(MaxDiff(a.AsSpan(5 * V), b.AsSpan(5 * V)) > 1e-2);
        Assert.True(windowed.CreateCache(1, 64).Bytes < full.CreateCache(1, 64).Bytes);
    }

    [Theory]
    [InlineData("gemma3")]
    [InlineData("llama4")]
    public void BatchOfTwoEqualsOneByOne(string fixture)
    {
        var m = Load(fixture);
        int V = m.VocabSize, T = 19;
        var p0 = Tokens(T, 11, V); var p1 = Tokens(T, 12, V);
        var batchCache = m.CreateCache(2, T + 4);
        var batched = Run(m, [.. p0, .. p1], 2, batchCache);
        var c0 = m.CreateCache(1, T + 4); var c1 = m.CreateCache(1, T + 4);
        var one0 = Run(m, p0, 1, c0); var one1 = Run(m, p1, 1, c1);
        Assert.True(MaxDiff(batched.AsSpan(0, T * V), one0) < 1e-5);
        Assert.True(MaxDiff(batched.AsSpan(T * V), one1) < 1e-5);
        // decode steps past the window/chunk in the batch too
        for (int s = 0; s < 4; s++)
        {
            int t0 = 3 * s + 1, t1 = 5 * s + 2;
            var bb = Run(m, [t0, t1], 2, batchCache);
            var o0 = Run(m, [t0], 1, c0); var o1 = Run(m, [t1], 1, c1);
            Assert.True(MaxDiff(bb.AsSpan(0, V), o0) < 1e-5);
            Assert.True(MaxDiff(bb.AsSpan(V), o1) < 1e-5);
        }
    }
}

/// <summary>Gemma 3's optional softcaps (null in the fixture) take effect when set.</summary>
public class Gemma3SoftcapTests
{
    [Fact]
    public void FinalAndAttentionSoftcapsApply()
    {
        var plain = AttentionFamilyCacheTests.Load("gemma3");
        var capped = AttentionFamilyCacheTests.Load("gemma3", c => { c["final_logit_softcapping"] = 2.0; c["attn_logit_softcapping"] = 0.5; });
        var finalOnly = AttentionFamilyCacheTests.Load("gemma3", c => c["final_logit_softcapping"] = 2.0);
        var ids = AttentionFamilyCacheTests.Tokens(12, 5, plain.VocabSize);
        var a = AttentionFamilyCacheTests.Run(plain, ids, 1, plain.CreateCache(1, 12));
        var b = AttentionFamilyCacheTests.Run(capped, ids, 1, capped.CreateCache(1, 12));
        var f = AttentionFamilyCacheTests.Run(finalOnly, ids, 1, finalOnly.CreateCache(1, 12));
        Assert.True(a.Max(Math.Abs) > 2f);
        Assert.All(b, v => Assert.True(Math.Abs(v) <= 2f));
        for (int i = 0; i < a.Length; i++) Assert.Equal(2f * MathF.Tanh(a[i] / 2f), f[i], 1e-5f);
        Assert.True(f.Zip(b, (x, y) => Math.Abs(x - y)).Max() > 1e-3);   // the attention cap changed the hidden states
        Assert.True(AttentionFamilyCacheTests.CachedVersusFull(capped, ids, 8, 1) < 1e-4);
    }
}
