using LlmArch.Generation;
using LlmArch.Models;

namespace LlmArch.Tests;

/// <summary>The dense family against its Hugging Face fixtures, and properties that need no oracle.</summary>
public class DenseFixtureTests
{
    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama3")]
    [InlineData("mistral")]
    [InlineData("qwen3")]
    [InlineData("qwen3_batch2")]
    [InlineData("olmo2")]
    [InlineData("smollm3")]
    public void MatchesReference(string fixture)
    {
        var r = FixtureVerifier.Verify(TestPaths.Fixture(fixture));
        Assert.True(r.Pass, $"{fixture}: {r.Error}");
        Assert.True(r.MaxAbs <= 1e-3);
        Assert.True(r.TokensMatch);
    }

    [Fact]
    public void VerifyVerbPrintsOneLinePerFixture()
    {
        var (code, stdout, _) = CliTests.Run("verify", TestPaths.Fixture("qwen3"), TestPaths.Fixture("gpt2"));
        Assert.Equal(0, code);
        var lines = stdout.Trim().Split('\n');
        Assert.Equal(2, lines.Length);
        Assert.StartsWith("PASS qwen3 max_abs=", lines[0]);
        Assert.EndsWith("tokens=8/8", lines[0].Trim());
    }

    [Fact]
    public void VerifyJson()
    {
        var (code, stdout, _) = CliTests.Run("verify", "--json", TestPaths.Fixture("llama3"));
        Assert.Equal(0, code);
        using var doc = System.Text.Json.JsonDocument.Parse(stdout);
        var e = doc.RootElement[0];
        Assert.Equal("llama3", e.GetProperty("name").GetString());
        Assert.True(e.GetProperty("pass").GetBoolean());
        Assert.True(e.GetProperty("tokens_match").GetBoolean());
        Assert.True(e.GetProperty("max_abs").GetDouble() <= 1e-3);
    }

    /// <summary>Logits of every decode step with the cache equal a fresh full forward over the whole sequence.</summary>
    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama3")]
    [InlineData("olmo2")]
    [InlineData("smollm3")]
    public void CachedDecodeEqualsFullRecompute(string fixture)
    {
        var model = ModelLoader.Load(TestPaths.Fixture(fixture));
        int[] seq = Enumerable.Range(0, 20).Select(i => (i * 37 + 5) % model.VocabSize).ToArray();
        var cache = model.CreateCache(1, seq.Length);
        model.Forward(seq.AsSpan(0, 8), 1, cache);
        int V = model.VocabSize;
        var step = new float[V]; var full = new float[V];
        for (int t = 8; t < seq.Length; t++)
        {
            var l = model.Forward(seq.AsSpan(t, 1), 1, cache);
            model.Backend.Download(l, step);
            var fresh = model.CreateCache(1, t + 1);
            var lf = model.Forward(seq.AsSpan(0, t + 1), 1, fresh, lastOnly: true);
            model.Backend.Download(lf, full);
            for (int i = 0; i < V; i++) Assert.True(Math.Abs(step[i] - full[i]) < 1e-4, $"{fixture} pos {t} logit {i}: {step[i]} vs {full[i]}");
        }
    }

    [Fact]
    public void BatchEqualsOneByOne()
    {
        var model = ModelLoader.Load(TestPaths.Fixture("qwen3"));
        int[] a = [5, 17, 99, 3, 42, 7], b = [300, 2, 8, 61, 77, 13];
        var (both, _) = Generator.Generate(model, [a, b], 6, SamplingOptions.Greedy);
        var (onlyA, _) = Generator.Generate(model, [a], 6, SamplingOptions.Greedy);
        var (onlyB, _) = Generator.Generate(model, [b], 6, SamplingOptions.Greedy);
        Assert.Equal(onlyA[0], both[0]);
        Assert.Equal(onlyB[0], both[1]);
        // different lengths run one by one and agree too
        var (mixed, _) = Generator.Generate(model, [a, b[..4]], 6, SamplingOptions.Greedy);
        Assert.Equal(onlyA[0], mixed[0]);
    }

    [Fact]
    public void SamplingIsSeededAndStopsOnEos()
    {
        var model = ModelLoader.Load(TestPaths.Fixture("llama3"));
        var opts = new SamplingOptions { Temperature = 0.9, TopK = 50, TopP = 0.95, MinP = 0.01, RepetitionPenalty = 1.1, Seed = 7 };
        var (x, _) = Generator.Generate(model, [[1, 2, 3]], 12, opts);
        var (y, _) = Generator.Generate(model, [[1, 2, 3]], 12, opts);
        Assert.Equal(x[0], y[0]);
        Assert.Equal(15, x[0].Length);
        int stop = x[0][5];
        var (z, _) = Generator.Generate(model, [[1, 2, 3]], 12, opts, eos: [stop]);
        Assert.Equal(stop, z[0][^1]);
        Assert.True(z[0].Length <= 6);
    }

    [Fact]
    public void SamplerTopKOneIsGreedy()
    {
        var s = new Sampler(new SamplingOptions { Temperature = 1.5, TopK = 1, Seed = 3 });
        float[] logits = [0.1f, 3f, -2f, 2.9f];
        for (int i = 0; i < 20; i++) Assert.Equal(1, s.Next(logits.ToArray(), []));
    }

    [Fact]
    public void RepetitionPenaltyFollowsHfSemantics()
    {
        var s = new Sampler(new SamplingOptions { RepetitionPenalty = 2.0 });
        float[] logits = [4f, 3f, -1f];
        Assert.Equal(1, s.Next(logits, [0]));   // 4/2 = 2 < 3
        Assert.Equal(2f, logits[0]);
        float[] neg = [-1f, -1.5f];
        Assert.Equal(1, s.Next(neg, [0]));      // -1*2 = -2 < -1.5
    }

    [Fact]
    public void RunVerbStreamsIds()
    {
        var (code, stdout, stderr) = CliTests.Run("run", "--model", TestPaths.Fixture("qwen3"), "--prompt-ids", "1,2,3", "--max-new-tokens", "5");
        Assert.Equal(0, code);
        Assert.Equal(5, stdout.Trim().Split(' ').Length);
        Assert.Contains("decode:", stderr);
    }
}
