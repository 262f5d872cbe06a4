using LlmArch.Checkpoints;

namespace LlmArch.Tests;

/// <summary>
/// Models where users have them: the Hugging Face hub cache layout (snapshots/&lt;commit&gt;/ holding relative symlinks
/// into blobs/), the repo folder, and a repo id resolved from HF_HUB_CACHE / HF_HOME. Tests in this class change those
/// environment variables, so they run one after another (xunit runs a class's tests serially).
/// </summary>
public class HubCacheTests
{
    private const string Commit = "0123456789abcdef0123456789abcdef01234567";

    /// <summary>Builds hub/models--test-org--tiny-qwen3 from the qwen3 fixture (plus the qwen3 tokenizer) as huggingface_hub lays it out.</summary>
    internal static (string Hub, string Repo) BuildCache(string? commit = Commit, bool writeRef = true, string repoName = "models--test-org--tiny-qwen3")
    {
        string hub = Path.Combine(Path.GetTempPath(), "llmarch-hub-" + Guid.NewGuid().ToString("N")[..12], "hub");
        string repo = Path.Combine(hub, repoName);
        string blobs = Path.Combine(repo, "blobs"), snap = Path.Combine(repo, "snapshots", commit ?? Commit);
        Directory.CreateDirectory(blobs);
        Directory.CreateDirectory(snap);
        var files = Directory.GetFiles(TestPaths.Fixture("qwen3")).Where(f => !f.EndsWith("expected.safetensors") && !f.EndsWith("manifest.json"))
            .Concat(Directory.GetFiles(Path.Combine(TestPaths.Root, "tests", "fixtures", "tokenizers", "qwen3")).Where(f => !f.EndsWith("expected.json")));
        int n = 0;
        foreach (var f in files)
        {
            string blob = $"{n++:x4}" + new string('e', 36);
            File.Copy(f, Path.Combine(blobs, blob));
            File.CreateSymbolicLink(Path.Combine(snap, Path.GetFileName(f)), Path.Combine("..", "..", "blobs", blob));
        }
        if (writeRef)
        {
            Directory.CreateDirectory(Path.Combine(repo, "refs"));
            File.WriteAllText(Path.Combine(repo, "refs", "main"), commit ?? Commit);
        }
        return (hub, repo);
    }

    private static void WithEnv(string name, string? value, Action body)
    {
        string? saved = Environment.GetEnvironmentVariable(name);
        Environment.SetEnvironmentVariable(name, value);
        try { body(); }
        finally { Environment.SetEnvironmentVariable(name, saved); }
    }

    [Fact]
    public void SymlinkedSafetensorsReportsTheTargetSize()
    {
        var (_, repo) = BuildCache();
        string link = Path.Combine(repo, "snapshots", Commit, "model.safetensors");
        Assert.NotNull(new FileInfo(link).LinkTarget);
        using var f = new SafeTensorsFile(link);
        Assert.Equal(new FileInfo(TestPaths.Fixture("qwen3") + "/model.safetensors").Length, f.FileBytes);
        Assert.True(f.Tensors.Count > 0);
        Assert.True(f.Get("model.norm.weight").Count > 0);
    }

    [Fact]
    public void SnapshotFolderOfSymlinksRuns()
    {
        var (_, repo) = BuildCache();
        var (code, stdout, err) = CliTests.Run("run", "--model", Path.Combine(repo, "snapshots", Commit), "--prompt-ids", "1,2,3", "--max-new-tokens", "3");
        Assert.True(code == 0, err);
        Assert.Equal(3, stdout.Trim().Split(' ').Length);
        var info = CliTests.Run("info", "--model", Path.Combine(repo, "snapshots", Commit), "--json");
        Assert.True(info.Code == 0, info.Err);
        Assert.Contains("\"file_bytes\": 579216", info.Out);
    }

    [Fact]
    public void RepoFolderPicksRefsMainSnapshot()
    {
        var (_, repo) = BuildCache();
        Directory.CreateDirectory(Path.Combine(repo, "snapshots", "ffffffffffffffffffffffffffffffffffffffff")); // an older, empty snapshot
        Assert.Equal(Path.Combine(repo, "snapshots", Commit), ModelLocator.Resolve(repo));
        var (code, _, err) = CliTests.Run("run", "--model", repo, "--prompt-ids", "1,2,3", "--max-new-tokens", "2");
        Assert.True(code == 0, err);
        var tok = CliTests.Run("tokenize", "--tokenizer", repo, "--text", "Hello");
        Assert.True(tok.Code == 0, tok.Err);
        Assert.Equal("[9707]", tok.Out.Trim());
    }

    [Fact]
    public void RepoIdResolvesFromHfHubCacheAndHfHome()
    {
        var (hub, _) = BuildCache();
        WithEnv("HF_HUB_CACHE", hub, () =>
        {
            var (code, _, err) = CliTests.Run("run", "--model", "test-org/tiny-qwen3", "--prompt-ids", "1,2", "--max-new-tokens", "2");
            Assert.True(code == 0, err);
            Assert.Equal(Path.Combine(hub, "models--test-org--tiny-qwen3", "snapshots", Commit), ModelLocator.Resolve($"test-org/tiny-qwen3@{Commit}"));
        });
        WithEnv("HF_HUB_CACHE", null, () => WithEnv("HF_HOME", Path.GetDirectoryName(hub), () =>
        {
            Assert.Equal(Path.Combine(hub, "models--test-org--tiny-qwen3", "snapshots", Commit), ModelLocator.Resolve("test-org/tiny-qwen3"));
            var (code, o, err) = CliTests.Run("template", "--tokenizer", "test-org/tiny-qwen3", "--messages", WriteMessages());
            Assert.True(code == 0, err);
            Assert.Contains("<|im_start|>user", o);
        }));
    }

    [Fact]
    public void MissingRepoIdNamesWhereItLooked()
    {
        string empty = Directory.CreateTempSubdirectory("llmarch-emptyhub").FullName;
        WithEnv("HF_HUB_CACHE", empty, () =>
        {
            var (code, _, err) = CliTests.Run("run", "--model", "nobody/no-such-model", "--prompt-ids", "1");
            Assert.Equal(2, code);
            Assert.Single(err.Trim().Split('\n'));
            Assert.Contains(Path.Combine(empty, "models--nobody--no-such-model"), err);
            Assert.Contains("never downloads", err);
        });
    }

    [Fact]
    public void RepoFolderWithoutRefsNamesTheSnapshots()
    {
        var (_, repo) = BuildCache(writeRef: false);
        // one snapshot and no refs/main: that snapshot is the model
        Assert.Equal(Path.Combine(repo, "snapshots", Commit), ModelLocator.Resolve(repo));
        Directory.CreateDirectory(Path.Combine(repo, "snapshots", "aaaa"));
        var (code, _, err) = CliTests.Run("info", "--model", repo);
        Assert.Equal(2, code);
        Assert.Single(err.Trim().Split('\n'));
        Assert.Contains("no refs/main", err);
        Assert.Contains(Commit, err);
        Assert.Contains("aaaa", err);
    }

    [Fact]
    public void RefNamingAMissingSnapshotIsAnError()
    {
        var (_, repo) = BuildCache();
        File.WriteAllText(Path.Combine(repo, "refs", "main"), "feedfacefeedfacefeedfacefeedfacefeedface");
        var (code, _, err) = CliTests.Run("run", "--model", repo, "--prompt-ids", "1");
        Assert.Equal(2, code);
        Assert.Contains("feedface", err);
        Assert.Contains("did not finish", err);
        File.WriteAllText(Path.Combine(repo, "refs", "main"), "../../etc");
        Assert.Throws<LlmArchInputException>(() => ModelLocator.Resolve(repo));
    }

    [Fact]
    public void DanglingSymlinkIsAClearError()
    {
        var (_, repo) = BuildCache();
        string snap = Path.Combine(repo, "snapshots", Commit);
        foreach (var b in Directory.GetFiles(Path.Combine(repo, "blobs")))
            if (new FileInfo(b).Length == new FileInfo(Path.Combine(TestPaths.Fixture("qwen3"), "model.safetensors")).Length) File.Delete(b);
        var (code, _, err) = CliTests.Run("run", "--model", snap, "--prompt-ids", "1");
        Assert.Equal(2, code);
        Assert.Single(err.Trim().Split('\n'));
        Assert.Contains("model.safetensors", err);
    }

    private static string WriteMessages()
    {
        string p = Path.Combine(Path.GetTempPath(), $"llmarch-msgs-{Guid.NewGuid():N}.json");
        File.WriteAllText(p, """[{"role": "user", "content": "hi"}]""");
        return p;
    }
}
