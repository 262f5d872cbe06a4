using SharpFuzz;

namespace LlmArch.Fuzz;

/// <summary>
/// <c>LlmArch.Fuzz TARGET</c>: run under afl-fuzz (SharpFuzz's AFL forkserver protocol; the input file is read from stdin).
/// <c>LlmArch.Fuzz TARGET --replay FILE|DIR...</c>: run inputs once, uninstrumented, and report any that crash
/// (what fuzz/run.sh uses to triage findings and what a regression test does).
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        if (args.Length == 0 || !Targets.All.TryGetValue(args[0], out var target))
        {
            Console.Error.WriteLine($"usage: LlmArch.Fuzz TARGET [--replay FILE|DIR...]; targets: {string.Join(", ", Targets.All.Keys)}");
            return 2;
        }
        if (args.Length > 1 && args[1] == "--replay") return Replay(target, args[2..]);
        Fuzzer.OutOfProcess.Run(stream =>
        {
            using var ms = new MemoryStream();
            stream.CopyTo(ms);
            Run(target, ms.ToArray());
        });
        return 0;
    }

    /// <summary>One input: bad input is the expected outcome; anything else propagates (a crash for the fuzzer).</summary>
    public static void Run(Action<byte[]> target, byte[] input)
    {
        try { target(input); }
        catch (LlmArchInputException) { }
    }

    private static int Replay(Action<byte[]> target, string[] paths)
    {
        var files = paths.SelectMany(p => Directory.Exists(p) ? Directory.GetFiles(p, "*", SearchOption.AllDirectories) : [p]).Order(StringComparer.Ordinal).ToList();
        int crashes = 0;
        foreach (var f in files)
        {
            var sw = System.Diagnostics.Stopwatch.StartNew();
            try { Run(target, File.ReadAllBytes(f)); }
            catch (Exception e)
            {
                crashes++;
                Console.WriteLine($"CRASH {f}: {e.GetType().Name}: {e.Message.ReplaceLineEndings(" ")}");
                Console.WriteLine(e.StackTrace?.Split('\n').FirstOrDefault(l => l.Contains("LlmArch."))?.Trim());
            }
            if (sw.Elapsed.TotalSeconds > 2) Console.WriteLine($"SLOW {f}: {sw.Elapsed.TotalSeconds:F1}s");
        }
        Console.WriteLine($"replayed {files.Count} inputs: {crashes} crashes");
        return crashes == 0 ? 0 : 1;
    }
}
