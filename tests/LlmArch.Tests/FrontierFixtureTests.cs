using LlmArch.Generation;

namespace LlmArch.Tests;

/// <summary>
/// The frontier families against their transformers 5.17 reference fixtures (the path of <c>llmarch verify</c>): max
/// |logit diff| ≤ 1e-3 over the prompt and identical greedy tokens with the cache. The fixtures in
/// tests/fixtures/frontier always run; the others run when the shared fixture folder is present and skip otherwise.
/// </summary>
public class FrontierFixtureTests
{
    private static void Check(string name)
    {
        var r = FixtureVerifier.Verify(FrontierFixtures.Require(name));
        Assert.True(r.Pass, $"{name}: {r.Error} (max_abs {r.MaxAbs}, tokens {r.TokensMatched}/{r.TokensTotal})");
        Assert.True(r.MaxAbs <= 1e-3);
        Assert.Equal(8, r.TokensTotal);
    }

    [SkippableFact] public void DeepseekV32() => Check("deepseek_v32");
    [SkippableFact] public void DeepseekV4() => Check("deepseek_v4");
    [SkippableFact] public void KimiLinear() => Check("kimi_linear");
    [SkippableFact] public void MiniMax() => Check("minimax");
    [SkippableFact] public void NemotronH() => Check("nemotron_h");
    [SkippableFact] public void Qwen3_5() => Check("qwen3_5");
    [SkippableFact] public void Qwen3_5Moe() => Check("qwen3_5_moe");
    [SkippableFact] public void Gemma4() => Check("gemma4");
    [SkippableFact] public void GlmMoeDsa() => Check("glm_moe_dsa");
    [SkippableFact] public void OlmoHybrid() => Check("olmo_hybrid");
    [SkippableFact] public void Lfm2() => Check("lfm2");

    [Fact]
    public void RepositoryFixturesAreWholeAndVerifyPasses()
    {
        var dirs = FrontierFixtures.InRepository.Select(FrontierFixtures.RepoDir).ToArray();
        foreach (var d in dirs)
            foreach (var f in new[] { "config.json", "model.safetensors", "expected.safetensors", "manifest.json" })
                Assert.True(File.Exists(Path.Combine(d, f)), $"{d}/{f} is missing");
        var (code, stdout, _) = CliTests.Run(["verify", .. dirs]);
        Assert.Equal(0, code);
        foreach (var n in FrontierFixtures.InRepository) Assert.Contains($"PASS {n}", stdout);
    }
}
