namespace LlmArch.Tests;

/// <summary>
/// Locates the frontier reference fixtures: <c>tests/fixtures/frontier/NAME</c> when the repository carries it, else the
/// shared fixture folder (<c>LLMARCH_FRONTIER_FIXTURES</c>, or <c>/work/shared/fixtures/frontier</c>, or a
/// <c>shared/fixtures/frontier</c> beside or above the repository). Tests of a fixture that is in neither place skip
/// with the reason printed, so a fresh clone runs what it carries.
/// </summary>
public static class FrontierFixtures
{
    /// <summary>Fixtures copied byte-for-byte into tests/fixtures/frontier (the size budget allows only some).</summary>
    public static readonly string[] InRepository = ["deepseek_v4", "kimi_linear", "minimax"];

    public static string RepoDir(string name) => Path.Combine(TestPaths.Root, "tests", "fixtures", "frontier", name);

    private static IEnumerable<string> SharedRoots()
    {
        if (Environment.GetEnvironmentVariable("LLMARCH_FRONTIER_FIXTURES") is { Length: > 0 } env) yield return env;
        yield return "/work/shared/fixtures/frontier";
        var d = new DirectoryInfo(TestPaths.Root);
        for (int i = 0; i < 3 && d is not null; i++, d = d.Parent)
            yield return Path.Combine(d.FullName, "shared", "fixtures", "frontier");
    }

    /// <summary>The fixture directory, or null when it is in neither the repository nor the shared folder.</summary>
    public static string? Find(string name)
    {
        if (File.Exists(Path.Combine(RepoDir(name), "expected.safetensors"))) return RepoDir(name);
        foreach (var root in SharedRoots())
            if (File.Exists(Path.Combine(root, name, "expected.safetensors"))) return Path.Combine(root, name);
        return null;
    }

    /// <summary>The fixture directory, or a skip (with the reason) when it is not available here.</summary>
    public static string Require(string name)
    {
        if (Find(name) is { } dir) return dir;
        string why = $"frontier fixture '{name}' is not in tests/fixtures/frontier (size budget) and no shared fixture folder was found; set LLMARCH_FRONTIER_FIXTURES to run it";
        Console.WriteLine($"SKIP: {why}");
        throw new SkipTestException(why);
    }
}
