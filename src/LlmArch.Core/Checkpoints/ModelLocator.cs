using System.Text.RegularExpressions;

namespace LlmArch.Checkpoints;

/// <summary>
/// Finds a model where users have it: a plain directory, a Hugging Face hub cache repo folder
/// (<c>models--org--name</c>, whose <c>refs/main</c> names the snapshot to use), or a repo id (<c>Qwen/Qwen3-0.6B</c>,
/// optionally <c>@revision</c>) looked up in the local hub cache. Offline only: nothing is ever downloaded.
/// The hub cache's snapshot files are relative symlinks into <c>blobs/</c>; everything that reads them follows the link.
/// </summary>
public static partial class ModelLocator
{
    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*(@[A-Za-z0-9_.\-/]+)?$")]
    private static partial Regex RepoIdPattern();

    /// <summary>
    /// The hub cache roots in the order huggingface_hub uses them: <c>HF_HUB_CACHE</c>, else <c>HF_HOME/hub</c>, else
    /// <c>$XDG_CACHE_HOME/huggingface/hub</c>, else <c>~/.cache/huggingface/hub</c>.
    /// </summary>
    public static IReadOnlyList<string> CacheRoots()
    {
        var roots = new List<string>();
        void Add(string? p) { if (!string.IsNullOrEmpty(p) && !roots.Contains(p)) roots.Add(p); }
        Add(Environment.GetEnvironmentVariable("HF_HUB_CACHE"));
        Add(Environment.GetEnvironmentVariable("HUGGINGFACE_HUB_CACHE"));
        if (Environment.GetEnvironmentVariable("HF_HOME") is { Length: > 0 } home) Add(Path.Combine(home, "hub"));
        if (roots.Count == 0)
        {
            string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
            string user = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
            Add(Path.Combine(xdg is { Length: > 0 } ? xdg : Path.Combine(user, ".cache"), "huggingface", "hub"));
        }
        return roots;
    }

    /// <summary>True when <paramref name="arg"/> has the shape of a hub repo id (<c>org/name</c>, optionally <c>@rev</c>).</summary>
    public static bool LooksLikeRepoId(string arg) => RepoIdPattern().IsMatch(arg) && !arg.StartsWith('.');

    /// <summary>
    /// Resolves a <c>--model</c> or <c>--tokenizer</c> argument to a directory (or, for a file, the file itself).
    /// An existing path wins; a hub cache repo folder becomes its snapshot; a repo id is looked up in the cache.
    /// Anything else is returned unchanged so the caller reports it as not found.
    /// </summary>
    /// <exception cref="LlmArchInputException">a repo id or cache folder that names no usable snapshot; the message says where it looked.</exception>
    public static string Resolve(string arg, string what = "model")
    {
        ArgumentNullException.ThrowIfNull(arg);
        if (File.Exists(arg)) return arg;
        if (Directory.Exists(arg)) return IsCacheRepoFolder(arg) ? Snapshot(arg, null, arg) : arg;
        if (!LooksLikeRepoId(arg)) return arg;

        string id = arg, rev = "main";
        int at = arg.IndexOf('@');
        if (at >= 0) { id = arg[..at]; rev = arg[(at + 1)..]; }
        string folder = "models--" + id.Replace("/", "--", StringComparison.Ordinal);
        var looked = new List<string>();
        foreach (var root in CacheRoots())
        {
            string repo = Path.Combine(root, folder);
            looked.Add(repo);
            if (Directory.Exists(repo)) return Snapshot(repo, rev, arg);
        }
        throw new LlmArchInputException(
            $"{what} '{arg}': no such directory, and not in the Hugging Face cache (looked in {string.Join(", ", looked)}); " +
            $"download it first (huggingface-cli download {id}) or set HF_HUB_CACHE / HF_HOME: llmarch never downloads");
    }

    /// <summary>A hub cache repo folder: <c>models--org--name</c> holding <c>snapshots/</c>.</summary>
    public static bool IsCacheRepoFolder(string dir) =>
        Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir))).StartsWith("models--", StringComparison.Ordinal)
        && Directory.Exists(Path.Combine(dir, "snapshots"));

    /// <summary>The snapshot of <paramref name="rev"/> (a ref under refs/, or a commit hash); null = refs/main, or the only snapshot.</summary>
    private static string Snapshot(string repo, string? rev, string arg)
    {
        string snapshots = Path.Combine(repo, "snapshots");
        string[] have;
        try { have = Directory.Exists(snapshots) ? Directory.GetDirectories(snapshots).Select(Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal).ToArray() : []; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new LlmArchInputException($"{snapshots}: cannot list the snapshots ({e.Message})"); }
        string want = rev ?? "main";
        string refFile = Path.Combine(repo, "refs", want);
        string? commit = null;
        if (!want.Contains("..", StringComparison.Ordinal) && File.Exists(refFile))
        {
            try { commit = File.ReadAllText(refFile).Trim(); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            { throw new LlmArchInputException($"{refFile}: cannot read ({e.Message})"); }
        }
        else if (have.Contains(want, StringComparer.Ordinal)) commit = want;
        else if (rev is null && have.Length == 1) commit = have[0];

        if (commit is null)
            throw new LlmArchInputException(
                $"{arg}: the Hugging Face cache folder {repo} has no refs/{want}" +
                (have.Length == 0 ? " and no snapshots (the download did not finish?)" : $"; snapshots: {string.Join(", ", have)} (name one with {IdOf(repo)}@<commit>, or pass the snapshot folder)"));
        if (commit.Length == 0 || commit.IndexOfAny(['/', '\\']) >= 0 || commit.Contains("..", StringComparison.Ordinal))
            throw new LlmArchInputException($"{refFile}: '{commit}' is not a commit hash");
        string snap = Path.Combine(snapshots, commit);
        if (!Directory.Exists(snap))
            throw new LlmArchInputException($"{arg}: refs/{want} of {repo} names snapshot {commit}, which is not in {snapshots} (the download did not finish?)");
        return snap;
    }

    private static string IdOf(string repo)
    {
        string name = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(repo)));
        return name.StartsWith("models--", StringComparison.Ordinal) ? name["models--".Length..].Replace("--", "/", StringComparison.Ordinal) : name;
    }
}
