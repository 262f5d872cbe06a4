using LlmArch.Blocks;
using LlmArch.Compute;
using LlmArch.Generation;
using LlmArch.Models;
using Xunit.Abstractions;

namespace LlmArch.Tests;

/// <summary>
/// The engine's properties, on every family: a ragged batch advanced in shared steps equals each prompt alone (prompt
/// chunks and decode tokens mixed), the cache protocol (trim, copy a prefix, checkpoints of recurrent state), and the
/// async engine (concurrent requests, cancellation, a bounded queue, prompt-prefix reuse).
/// </summary>
public class EngineTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> AllFixtures() => Directory.GetDirectories(Path.Combine(TestPaths.Root, "tests", "fixtures", "hf"))
        .Select(Path.GetFileName).Where(n => n != "qwen3_batch2").OrderBy(n => n).Select(n => new object[] { n! });

    private static int[] Prompt(CausalLM m, int length, int salt) => Enumerable.Range(0, length).Select(i => (i * 37 + salt * 11 + 5) % m.VocabSize).ToArray();

    /// <summary>Prompts of 9, 24, 3 and 17 tokens in one ragged batch give each one's own greedy tokens.</summary>
    [Theory]
    [MemberData(nameof(AllFixtures))]
    public void RaggedBatchEqualsEachPromptAlone(string fixture)
    {
        var m = ModelLoader.Load(TestPaths.Fixture(fixture));
        int[][] prompts = [Prompt(m, 9, 1), Prompt(m, 24, 2), Prompt(m, 3, 3), Prompt(m, 17, 4)];
        var (batch, stats) = Generator.Generate(m, prompts, 8, SamplingOptions.Greedy);
        for (int i = 0; i < prompts.Length; i++)
        {
            var alone = Generator.Generate(m, [prompts[i]], 8, SamplingOptions.Greedy).Tokens[0];
            Assert.Equal(alone, batch[i]);
        }
        Assert.Equal(4, stats.Sequences);
        Assert.Equal(32, stats.GeneratedTokens);
    }

    /// <summary>With a small step budget, prompt chunks of some sequences share steps with decode tokens of others.</summary>
    [Theory]
    [InlineData("qwen3")]
    [InlineData("gemma3")]
    [InlineData("deepseek_v3")]
    [InlineData("qwen3_next")]
    [InlineData("gemma3n")]
    [InlineData("gpt_oss")]
    public void ChunkedPrefillMixedWithDecodeEqualsAlone(string fixture)
    {
        var m = ModelLoader.Load(TestPaths.Fixture(fixture));
        int[][] prompts = [Prompt(m, 20, 5), Prompt(m, 2, 6), Prompt(m, 13, 7)];
        using var s = new Scheduler(m, 3, 40, stepTokens: 6);
        var outs = prompts.Select(_ => new List<int>()).ToArray();
        for (int i = 0; i < prompts.Length; i++) { int j = i; s.Submit(new GenerationRequest { Prompt = prompts[j], MaxNewTokens = 6 }, t => { if (t.Id >= 0) outs[j].Add(t.Id); }); }
        int steps = 0;
        while (s.HasWork) { s.Step(); steps++; }
        Assert.True(steps > 8, $"{steps} steps: the budget of 6 tokens per step should split the prompts");
        for (int i = 0; i < prompts.Length; i++)
            Assert.Equal(Generator.Generate(m, [prompts[i]], 6, SamplingOptions.Greedy).Tokens[0][prompts[i].Length..], outs[i]);
    }

    /// <summary>Trim rewinds an attention model exactly; copying a prefix into another slot continues like the original.</summary>
    [Theory]
    [InlineData("llama3")]
    [InlineData("gemma3")]
    [InlineData("deepseek_v3")]
    [InlineData("gemma3n")]
    public void TrimAndCopyPrefixContinueExactly(string fixture)
    {
        var m = ModelLoader.Load(TestPaths.Fixture(fixture));
        var seq = Prompt(m, 20, 9);
        var b = m.Backend;
        using var cache = m.CreateCache(3, 32);
        var full = Logits(m, cache, 0, seq);                      // slot 0: all 20 tokens
        Assert.Equal(12, cache.Trim(0, 12));                      // rewind to 12, then feed the same 8 again
        var again = Logits(m, cache, 0, seq[12..]);
        AssertClose(full.AsSpan(12 * m.VocabSize).ToArray(), again);
        Assert.Equal(15, cache.CopyPrefix(0, 2, 15));            // slot 2 takes the first 15
        var copied = Logits(m, cache, 2, seq[15..]);
        AssertClose(full.AsSpan(15 * m.VocabSize).ToArray(), copied);
        _ = b;
    }

    /// <summary>Recurrent layers rewind only to a checkpoint: Trim reports how far it could go.</summary>
    [Fact]
    public void RecurrentStateTrimsToItsCheckpoint()
    {
        var m = ModelLoader.Load(TestPaths.Fixture("qwen3_next"));
        var seq = Prompt(m, 16, 3);
        using var cache = m.CreateCache(2, 32);
        var full = Logits(m, cache, 0, seq);
        Assert.Equal(0, cache.Trim(0, 10));                       // no checkpoint yet: start over
        Logits(m, cache, 0, seq[..10]);
        cache.Checkpoint(0);
        Logits(m, cache, 0, seq[10..14]);
        Assert.Equal(10, cache.Trim(0, 12));                      // back to the checkpoint at 10, not 12
        var rest = Logits(m, cache, 0, seq[10..]);
        AssertClose(full.AsSpan(10 * m.VocabSize).ToArray(), rest);
        Assert.Equal(0, cache.CopyPrefix(0, 1, 5));               // a prefix the state cannot represent
        Assert.Equal(16, cache.CopyPrefix(0, 1, 16));             // the whole sequence it can
        var next = Prompt(m, 1, 8);
        AssertClose(Logits(m, cache, 0, next), Logits(m, cache, 1, next));
    }

    private static float[] Logits(CausalLM m, ModelCache cache, int slot, int[] tokens)
    {
        var batch = new StepBatch();
        batch.Add(slot, cache.Length(slot), tokens);
        var l = m.Forward(batch, cache);
        var r = new float[tokens.Length * m.VocabSize];
        m.Backend.Download(l, r);
        return r;
    }

    private static void AssertClose(float[] want, float[] got)
    {
        Assert.Equal(want.Length, got.Length);
        float max = 0;
        for (int i = 0; i < want.Length; i++) max = MathF.Max(max, MathF.Abs(want[i] - got[i]));
        Assert.True(max < 1e-4f, $"max |diff| {max}");
    }

    // ---------------- the async engine ----------------

    private static async Task<int[]> Collect(ITextEngine e, GenerationRequest r, CancellationToken ct = default)
    {
        var tokens = new List<int>();
        await foreach (var t in e.GenerateAsync(r, ct)) if (t.Id >= 0) tokens.Add(t.Id);
        return tokens.ToArray();
    }

    [Fact]
    public async Task ConcurrentRequestsEqualSequentialOnes()
    {
        var m = ModelLoader.Load(TestPaths.Fixture("qwen3"));
        var reqs = Enumerable.Range(0, 10).Select(i => new GenerationRequest
        {
            Prompt = Prompt(m, 3 + i * 2, i), MaxNewTokens = 5 + i % 4,
            Sampling = i % 2 == 0 ? SamplingOptions.Greedy : new SamplingOptions { Temperature = 0.8, TopK = 10, Seed = 100 + i },
        }).ToArray();
        await using var serial = TextEngine.CreateSerial(m, new EngineOptions { Context = 64 });
        var want = new List<int[]>();
        foreach (var r in reqs) want.Add(await Collect(serial, r));
        await using var engine = TextEngine.Create(m, new EngineOptions { MaxSequences = 4, Context = 64 });
        var got = await Task.WhenAll(reqs.Select(r => Task.Run(() => Collect(engine, r))));
        for (int i = 0; i < reqs.Length; i++) Assert.Equal(want[i], got[i]);
        var metrics = engine.Metrics;
        Assert.Equal(10, metrics.Requests);
        Assert.Equal(want.Sum(w => w.Length), metrics.GeneratedTokens);
        Assert.True(metrics.Steps < metrics.GeneratedTokens, "sequences should share steps");
        output.WriteLine($"{metrics.GeneratedTokens} tokens in {metrics.Steps} steps");
    }

    [Fact]
    public async Task CancellationFreesTheSlotAndLaterRequestsRun()
    {
        var m = ModelLoader.Load(TestPaths.Fixture("llama3"));
        // steps of 5 ms at least: the request is still generating when the consumer cancels
        await using var engine = TextEngine.Create(m, new EngineOptions { MaxSequences = 1, Context = 200, BeforeStep = () => Thread.Sleep(5) });
        using var cts = new CancellationTokenSource();
        int seen = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var t in engine.GenerateAsync(new GenerationRequest { Prompt = Prompt(m, 5, 1), MaxNewTokens = 150 }, cts.Token))
                if (++seen == 3) cts.Cancel();
        });
        // The only slot is free again: the next request completes.
        var next = await Collect(engine, new GenerationRequest { Prompt = Prompt(m, 4, 2), MaxNewTokens = 4 }).WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(4, next.Length);
        // The loop removes a finished sequence at the end of its step, just after the last token went out.
        for (int i = 0; i < 200 && engine.Metrics.Active != 0; i++) await Task.Delay(10);
        Assert.Equal(0, engine.Metrics.Active);
    }

    [Fact]
    public async Task AFullQueueRefusesNewRequests()
    {
        var m = ModelLoader.Load(TestPaths.Fixture("llama3"));
        await using var engine = TextEngine.Create(m, new EngineOptions { MaxSequences = 1, Context = 300, MaxQueue = 2, BeforeStep = () => Thread.Sleep(5) }); // steps of 5 ms at least: the running requests outlast the test
        using var cts = new CancellationTokenSource();
        var running = Enumerable.Range(0, 3).Select(i => Task.Run(() => Collect(engine, new GenerationRequest { Prompt = Prompt(m, 4, i), MaxNewTokens = 250 }, cts.Token))).ToList();
        await Task.Delay(200);
        var ex = await Record.ExceptionAsync(async () =>
        {
            for (int i = 0; i < 4; i++) await Collect(engine, new GenerationRequest { Prompt = Prompt(m, 4, 9), MaxNewTokens = 1 }, cts.Token).WaitAsync(TimeSpan.FromMilliseconds(1));
        });
        cts.Cancel();
        foreach (var t in running) await Record.ExceptionAsync(() => t);
        Assert.True(ex is EngineBusyException or TimeoutException, $"got {ex?.GetType().Name}");
    }

    [Fact]
    public async Task BadRequestsAreOneClearError()
    {
        var m = ModelLoader.Load(TestPaths.Fixture("llama3"));
        await using var engine = TextEngine.Create(m, new EngineOptions { MaxSequences = 2, Context = 32 });
        await Assert.ThrowsAsync<LlmArchInputException>(() => Collect(engine, new GenerationRequest { Prompt = [] }));
        await Assert.ThrowsAsync<LlmArchInputException>(() => Collect(engine, new GenerationRequest { Prompt = [m.VocabSize] }));
        await Assert.ThrowsAsync<LlmArchInputException>(() => Collect(engine, new GenerationRequest { Prompt = Prompt(m, 40, 1) }));
        await Assert.ThrowsAsync<LlmArchInputException>(() => Collect(engine, new GenerationRequest { Prompt = [1], TopLogprobs = 50 }));
        Assert.Equal(3, (await Collect(engine, new GenerationRequest { Prompt = [1, 2], MaxNewTokens = 3 })).Length);
    }

    /// <summary>A second request with the same long prefix skips it, and its tokens do not change.</summary>
    [Theory]
    [InlineData("qwen3")]
    [InlineData("qwen3_next")]
    public async Task RepeatedPrefixIsReusedAndGivesTheSameTokens(string fixture)
    {
        var m = ModelLoader.Load(TestPaths.Fixture(fixture));
        var prefix = Prompt(m, 40, 4);
        await using var engine = TextEngine.Create(m, new EngineOptions { MaxSequences = 2, Context = 80 });
        var first = await Collect(engine, new GenerationRequest { Prompt = prefix, MaxNewTokens = 6 });
        // The next turn: the whole first conversation plus new tokens.
        var turn2 = prefix.Concat(first).Concat(Prompt(m, 5, 7)).ToArray();
        long cachedBefore = engine.Metrics.CachedPromptTokens;
        var second = await Collect(engine, new GenerationRequest { Prompt = turn2, MaxNewTokens = 6 });
        long reused = engine.Metrics.CachedPromptTokens - cachedBefore;
        Assert.True(reused >= prefix.Length, $"reused {reused} tokens");
        Assert.Equal(Generator.Generate(m, [turn2], 6, SamplingOptions.Greedy).Tokens[0][turn2.Length..], second);
    }
}
