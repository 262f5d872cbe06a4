namespace LlmArch.Cli;

/// <summary>
/// File checks with accurate messages: a directory where a file is expected (and the reverse), an unreadable directory,
/// kernel pseudo-files (/proc, /sys, /dev) and inputs that never end (/dev/zero) or exceed a size limit.
/// </summary>
public static class CliFiles
{
    /// <summary>Largest input file a verb reads whole (messages, tools).</summary>
    public const long MaxInputBytes = 64L << 20;

    /// <summary>Largest --jsonl file.</summary>
    public const long MaxJsonlBytes = 1L << 30;

    private static readonly string[] PseudoRoots = ["/proc/", "/sys/", "/dev/"];

    /// <summary>True for paths on Linux kernel pseudo-filesystems, whose files report size 0 or never end.</summary>
    public static bool IsPseudoFile(string path)
    {
        string full;
        try { full = Path.GetFullPath(path); }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException) { return false; }
        return OperatingSystem.IsLinux() && PseudoRoots.Any(r => full.StartsWith(r, StringComparison.Ordinal) || full + "/" == r);
    }

    /// <summary>An existing directory that this process can list, or an input error saying which of those it is not.</summary>
    public static void CheckReadableDirectory(string dir, string what)
    {
        if (File.Exists(dir)) throw new LlmArchInputException($"{dir}: is a file; {what} must be a directory");
        if (!Directory.Exists(dir)) throw new LlmArchInputException($"{dir}: {what} directory not found");
        try { using var e = Directory.EnumerateFileSystemEntries(dir).GetEnumerator(); e.MoveNext(); }
        catch (UnauthorizedAccessException) { throw new LlmArchInputException($"{dir}: cannot read this {what} directory (permission denied)"); }
        catch (IOException ex) { throw new LlmArchInputException($"{dir}: cannot read this {what} directory ({ex.Message})"); }
    }

    /// <summary>Reads a whole input file (at most <paramref name="maxBytes"/>), with messages naming the option and the path.</summary>
    public static byte[] ReadInput(string path, string option, long maxBytes = MaxInputBytes)
    {
        if (Directory.Exists(path)) throw new LlmArchInputException($"{option} {path}: is a directory; give a file");
        if (!File.Exists(path)) throw new LlmArchInputException($"{option} {path}: no such file");
        try
        {
            using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, FileOptions.SequentialScan);
            // Length is 0 for /proc files and unbounded for /dev/zero: read in chunks up to the limit instead of trusting it.
            using var ms = new MemoryStream(fs.CanSeek && fs.Length > 0 && fs.Length <= maxBytes ? (int)fs.Length : 0);
            var buf = new byte[1 << 16];
            int n;
            while ((n = fs.Read(buf, 0, buf.Length)) > 0)
            {
                if (ms.Length + n > maxBytes) throw new LlmArchInputException($"{option} {path}: larger than the {maxBytes >> 20} MiB limit for this input");
                ms.Write(buf, 0, n);
            }
            return ms.ToArray();
        }
        catch (UnauthorizedAccessException) { throw new LlmArchInputException($"{option} {path}: cannot read (permission denied)"); }
        catch (IOException e) { throw new LlmArchInputException($"{option} {path}: cannot read ({e.Message})"); }
    }

    /// <summary>A path a verb will create or overwrite as a file: not a directory, not a pseudo-file, in an existing directory.</summary>
    public static void CheckOutputFile(string path, string option)
    {
        if (path.Length == 0) throw new LlmArchInputException($"{option}: empty path");
        if (Directory.Exists(path) || path.EndsWith('/')) throw new LlmArchInputException($"{option} {path}: is a directory; give a file name");
        if (IsPseudoFile(path)) throw new LlmArchInputException($"{option} {path}: is on a kernel pseudo-filesystem (/proc, /sys, /dev); give a path on disk");
        string? parent = Path.GetDirectoryName(Path.GetFullPath(path));
        if (parent is not null && !Directory.Exists(parent))
            throw new LlmArchInputException(File.Exists(parent) ? $"{option} {path}: {parent} is a file, not a directory" : $"{option} {path}: directory {parent} does not exist");
    }

    /// <summary>A directory a verb will create or write into: not an existing file, not a pseudo-file.</summary>
    public static void CheckOutputDirectory(string path, string option)
    {
        if (path.Length == 0) throw new LlmArchInputException($"{option}: empty path");
        if (File.Exists(path)) throw new LlmArchInputException($"{option} {path}: is a file; give a directory");
        if (IsPseudoFile(path)) throw new LlmArchInputException($"{option} {path}: is on a kernel pseudo-filesystem (/proc, /sys, /dev); give a path on disk");
        for (string? p = Path.GetDirectoryName(Path.GetFullPath(path)); p is not null; p = Path.GetDirectoryName(p))
            if (File.Exists(p)) throw new LlmArchInputException($"{option} {path}: {p} is a file, not a directory");
    }
}
