using LlmArch.Compute;
using LlmArch.Compute.Cpu;
using LlmArch.Compute.Sharding;
using LlmArch.Generation;
using LlmArch.Models;

namespace LlmArch.Tests;

/// <summary>
/// Tensor and expert parallelism through <see cref="ShardedBackend"/> with CPU ranks and in-process collectives: every
/// fixture gives the reference logits and greedy tokens with 2, 3, 4 and 8 ranks, the weights really are split, and
/// every rank holds only its slice.
/// </summary>
public class ShardingTests
{
    public static IEnumerable<object[]> Cases() => EngineTests.AllFixtures()
        .SelectMany(f => new[] { 2, 3 }.Select(n => new object[] { f[0], n }))
        .Concat([["qwen3_moe", 4], ["deepseek_v3", 8], ["gpt_oss_mxfp4", 4], ["qwen3", 8], ["qwen3_batch2", 2]]);

    private static ShardedBackend Ranks(int n, ShardingOptions? o = null) =>
        new(Enumerable.Range(0, n).Select(_ => (IBackend)new CpuBackend()).ToArray(), new HostCollectives(), o);

    [Theory]
    [MemberData(nameof(Cases))]
    public void FixtureMatchesAcrossRanks(string fixture, int ranks)
    {
        var r = FixtureVerifier.Verify(TestPaths.Fixture(fixture), d => ModelLoader.Load(d, Ranks(ranks)));
        Assert.True(r.Pass, $"{fixture} on {ranks} ranks: {r.Error}");
        Assert.True(r.MaxAbs <= FixtureVerifier.Tolerance);
    }

    [Theory]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public void TensorOnlyAndExpertOnlyAgree(bool tensor, bool expert)
    {
        var r = FixtureVerifier.Verify(TestPaths.Fixture("gpt_oss"), d => ModelLoader.Load(d, Ranks(2, new ShardingOptions { TensorParallel = tensor, ExpertParallel = expert })));
        Assert.True(r.Pass, r.Error);
    }

    /// <summary>Large weights are split by rows (or experts); each rank's slice covers only its rows.</summary>
    [Fact]
    public void WeightsAreSplitAcrossRanks()
    {
        var b = Ranks(2);
        var m = ModelLoader.Load(TestPaths.Fixture("qwen3_moe"), b);
        long whole = m.Weights.Records.Sum(x => x.Count) * 4; // the fixture is F32
        Assert.True(b.SplitWeights > 0 && b.ReplicatedWeights > 0);
        // Norm weights are replicated; every matrix and expert stack is split, so each rank holds a bit over half.
        Assert.All(b.PlacedBytes, p => Assert.InRange(p, whole / 2, whole * 6 / 10));
        // A ragged batch through the sharded model equals the plain model.
        var plain = ModelLoader.Load(TestPaths.Fixture("qwen3_moe"));
        int[][] prompts = [[1, 2, 3, 4, 5], [7, 8]];
        Assert.Equal(Generator.Generate(plain, prompts, 6, SamplingOptions.Greedy).Tokens, Generator.Generate(m, prompts, 6, SamplingOptions.Greedy).Tokens);
    }
}
