using LlmArch.Compute;
using LlmArch.Compute.Cuda;
using LlmArch.Generation;
using LlmArch.Models;
using LlmArch.Native;
using Xunit.Abstractions;

namespace LlmArch.Tests;

/// <summary>
/// The CUDA backend on a GPU: every op against the scalar reference, fixtures through the same path as
/// <c>llmarch verify --device cuda</c>, graph replay bit for bit equal to eager execution, device greedy sampling equal
/// to the host's. Without a GPU or driver each test reports itself skipped with the reason; then only the CLI's one-line
/// error is checked.
/// </summary>
public class CudaDeviceTests(ITestOutputHelper output)
{
    private static string? NoGpu =>
        !CudaDriver.TryLoad() ? $"no CUDA driver: {CudaDriver.LoadError}" : CudaDriver.DeviceCount() == 0 ? "the CUDA driver reports no GPU" : null;

    private static void RequireGpu()
    {
        if (NoGpu is string why) throw new SkipTestException(why);
    }

    [Fact]
    public void WithoutAGpuDeviceCudaIsOneLineAndExitTwo()
    {
        if (NoGpu is null) return; // with a GPU, the same command runs: covered by the tests below
        foreach (var args in new[]
        {
            new[] { "verify", TestPaths.Fixture("qwen3"), "--device", "cuda" },
            ["run", "--model", TestPaths.Fixture("qwen3"), "--prompt-ids", "1,2", "--device", "cuda:0"],
            ["check-backend", "--device", "cuda"],
            ["gpu-check"],
            ["bench", "--model", TestPaths.Fixture("qwen3"), "--device", "cuda"],
        })
        {
            var (code, _, err) = CliTests.Run(args);
            Assert.Equal(2, code);
            Assert.Single(err.Trim().Split('\n'));
            Assert.Contains("cuda", err);
            Assert.DoesNotContain("   at ", err);
        }
    }

    [Fact]
    public void BadDeviceOptionsAreOneLine()
    {
        foreach (var args in new[]
        {
            new[] { "verify", TestPaths.Fixture("qwen3"), "--dtype", "bf16" },
            ["verify", TestPaths.Fixture("qwen3"), "--device", "cuda:x"],
            ["bench", "--model", TestPaths.Fixture("qwen3"), "--dtype", "fp64", "--device", "cuda"],
            ["bench", "--preset", "qwen3-0.6b"],
            ["bench", "--preset", "qwen3-0.6b", "--random", "--layers", "5000"],
            ["bench", "--preset", "no-such-model", "--random"],
        })
        {
            var (code, _, err) = CliTests.Run(args);
            Assert.Equal(2, code);
            Assert.DoesNotContain("   at ", err);
        }
    }

    [SkippableFact]
    public void EveryOpMatchesTheReference()
    {
        RequireGpu();
        var gpu = CudaBackend.Create(0, CudaOptions.FromEnvironment() with { Graphs = false });
        var results = CudaOpCheck.RunOn(gpu);
        foreach (var g in results.GroupBy(r => r.Op)) output.WriteLine($"{g.Key}: {g.Count(r => r.Passed)}/{g.Count()}, worst {g.Max(r => r.MaxError):G3}");
        var failed = results.Where(r => !r.Passed).ToList();
        Assert.True(failed.Count == 0, string.Join("; ", failed.Select(f => $"{f.Op} {f.Case}: {f.MaxError:G3} {f.Error}")));
    }

    [SkippableFact]
    public void FixturesPassOnTheGpu()
    {
        RequireGpu();
        foreach (var name in new[] { "qwen3", "gemma3", "gpt_oss_mxfp4", "deepseek_v3_fp8", "qwen3_next", "gemma3n" })
        {
            var r = FixtureVerifier.Verify(TestPaths.Fixture(name), d => ModelLoader.Load(d, CudaBackend.Create()));
            output.WriteLine($"{name}: max |diff| {r.MaxAbs:G3}, tokens {r.TokensMatched}/{r.TokensTotal}");
            Assert.True(r.Pass, $"{name}: {r.Error}");
        }
    }

    [SkippableFact]
    public void GraphReplayEqualsEagerBitForBit()
    {
        RequireGpu();
        float[][] Decode(bool graphs, out long replays)
        {
            var b = CudaBackend.Create(0, CudaOptions.FromEnvironment() with { Graphs = graphs });
            var m = ModelLoader.Load(TestPaths.Fixture("qwen3"), b);
            var cache = m.CreateCache(1, 40);
            var rows = new List<float[]>();
            var l = m.Forward([1, 2, 3, 4], 1, cache, lastOnly: true);
            for (int s = 0; s < 12; s++)
            {
                var row = new float[m.VocabSize];
                b.Download(l, row);
                rows.Add(row);
                l = m.Forward([Sampler.ArgMax(row)], 1, cache, lastOnly: true);
            }
            replays = b.GraphStats.Replays;
            return rows.ToArray();
        }
        var withGraphs = Decode(true, out long replays);
        var eager = Decode(false, out _);
        Assert.True(replays >= 8, $"{replays} replays");
        for (int s = 0; s < eager.Length; s++) Assert.True(eager[s].AsSpan().SequenceEqual(withGraphs[s]), $"step {s} differs");
    }

    [SkippableFact]
    public void DeviceGreedySamplingEqualsHostArgMax()
    {
        RequireGpu();
        var b = CudaBackend.Create();
        var r = new Random(9);
        var logits = new float[3 * 151936];
        for (int i = 0; i < logits.Length; i++) logits[i] = (float)(r.NextDouble() * 10);
        logits[151936 + 7] = logits[151936 + 100] = 20f; // a tie: the first index wins
        var t = b.Allocate(DType.F32, new Shape(3, 151936), "logits");
        b.Upload<float>(logits, t);
        using var s = b.CreateSampler(3, 151936, DeviceSamplingOptions.Greedy);
        var ids = new int[3];
        s.Sample(t, ids);
        for (int row = 0; row < 3; row++) Assert.Equal(Sampler.ArgMax(logits.AsSpan(row * 151936, 151936)), ids[row]);
        Assert.Equal(7, ids[1]);
    }
}
