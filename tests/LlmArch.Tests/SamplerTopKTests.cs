using LlmArch.Generation;

namespace LlmArch.Tests;

public class SamplerTopKTests
{
    [Theory]
    [InlineData(1000, 1)]
    [InlineData(1000, 20)]
    [InlineData(151936, 20)]
    [InlineData(50, 7)]
    public void SmallestKeysSelectsWhatAFullSortPutsFirst(int n, int k)
    {
        var r = new Random(n + k);
        var keys = Enumerable.Range(0, n).Select(i => ((ulong)(uint)r.Next() << 32) | (uint)i).ToArray();
        var want = keys.OrderBy(x => x).Take(k).ToArray();
        var got = (ulong[])keys.Clone();
        Sampler.SmallestKeys(got, k);
        Assert.Equal(want, got.Take(k).OrderBy(x => x).ToArray());
    }

    [Fact]
    public void TopKSamplingDrawsOnlyAmongTheKBestAndIsSeeded()
    {
        var r = new Random(5);
        var logits = Enumerable.Range(0, 5000).Select(_ => (float)(r.NextDouble() * 10)).ToArray();
        var best = logits.Select((v, i) => (v, i)).OrderByDescending(p => p.v).ThenBy(p => p.i).Take(20).Select(p => p.i).ToHashSet();
        var a = new Sampler(new SamplingOptions { Temperature = 0.7, TopK = 20, TopP = 0.8, Seed = 3 });
        var b = new Sampler(new SamplingOptions { Temperature = 0.7, TopK = 20, TopP = 0.8, Seed = 3 });
        for (int t = 0; t < 200; t++)
        {
            int x = a.Next((float[])logits.Clone(), []), y = b.Next((float[])logits.Clone(), []);
            Assert.Equal(x, y);
            Assert.Contains(x, best);
        }
        // top-k of 1 is greedy
        var g = new Sampler(new SamplingOptions { Temperature = 1.0, TopK = 1, Seed = 1 });
        Assert.Equal(Sampler.ArgMax(logits), g.Next((float[])logits.Clone(), []));
    }
}
