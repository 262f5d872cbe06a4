using LlmArch.Cli;
using LlmArch.Cli.Output;

namespace LlmArch.Tests;

public class CliTests
{
    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter(); var e = new StringWriter();
        int code = Program.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    private static void AssertOneLineError((int Code, string Out, string Err) r, params string[] parts)
    {
        Assert.Equal(2, r.Code);
        Assert.Single(r.Err.Trim().Split('\n'));
        Assert.DoesNotContain("   at ", r.Err);
        foreach (var p in parts) Assert.Contains(p, r.Err);
    }

    private static string Qwen3 => TestPaths.Fixture("qwen3");

    [Fact]
    public void UnknownVerbExitsTwo()
    {
        var (code, _, err) = Run("frobnicate");
        Assert.Equal(2, code);
        Assert.Contains("unknown verb", err);
    }

    [Fact]
    public void EveryVerbHasGeneratedHelp()
    {
        foreach (var v in Program.Verbs())
        {
            var (code, o, err) = Run(v.Name, "--help");
            Assert.True(code == 0, err);
            Assert.Contains(v.Description, o);
            Assert.Contains("Options:", o);
            var (code2, o2, _) = Run("help", v.Name);
            Assert.Equal(0, code2);
            Assert.Equal(o, o2);
        }
        var run = Run("run", "--help").Out;
        Assert.Contains("--max-new-tokens <N>", run);
        Assert.Contains("[default: 32]", run);
        Assert.Contains("--threads", run);
        var root = Run("--help");
        Assert.Equal(0, root.Code);
        foreach (var v in Program.Verbs()) Assert.Contains(v.Name, root.Out);
        Assert.Equal(2, Run().Code); // no verb: the help, and exit 2
        AssertOneLineError(Run("help", "nope"), "unknown verb 'nope'");
    }

    [Fact]
    public void VersionPrintsOneLine()
    {
        var (code, o, _) = Run("--version");
        Assert.Equal(0, code);
        Assert.Matches(@"^\d+\.\d+\.\d+", o.Trim());
    }

    [Fact]
    public void OptionErrorsAreOneLineNamingTheOption()
    {
        AssertOneLineError(Run("run", "--model", Qwen3, "--prompt-ids", "1", "--bogus"), "unknown option --bogus", "llmarch run --help");
        AssertOneLineError(Run("run", "--model", Qwen3, "--prompt-ids", "1", "stray"), "unexpected argument 'stray'");
        AssertOneLineError(Run("info", "--preset", "gpt2", "extra"), "unexpected argument 'extra'");
        AssertOneLineError(Run("run", "--model", Qwen3, "--prompt-ids", "1,,3"), "--prompt-ids", "item 2", "empty");
        AssertOneLineError(Run("run", "--model", Qwen3, "--prompt-ids", "1,2;;3"), "--prompt-ids", "prompt 2", "empty");
        AssertOneLineError(Run("run", "--model", Qwen3, "--prompt-ids", "1", "--temperature", "Infinity"), "--temperature", "'Infinity' is not a finite number");
        AssertOneLineError(Run("run", "--model", Qwen3, "--prompt-ids", "1", "--temperature", "NaN"), "--temperature", "not a finite number");
        AssertOneLineError(Run("run", "--model", Qwen3, "--prompt-ids", "1", "--top-p", "1.5"), "--top-p", "(0, 1]", "1.5");
        AssertOneLineError(Run("run", "--model", Qwen3, "--prompt-ids", "1", "--max-new-tokens", "lots"), "--max-new-tokens", "'lots' is not an integer");
        AssertOneLineError(Run("run", "--model", Qwen3, "--prompt-ids", "1", "--threads", "0"), "--threads", "between 1 and 4096");
        AssertOneLineError(Run("run", "--prompt-ids", "1"), "--model");
        AssertOneLineError(Run("compare", "gpt2", "--context", "9223372036854775807"), "--context", "4294967296");
        AssertOneLineError(Run("compare", "gpt2", "--context", "99999999999999999999999"), "--context", "not an integer");
    }

    [Fact]
    public void FlagsTakeExplicitValues()
    {
        var sampled = Run("run", "--model", Qwen3, "--prompt-ids", "1,2,3", "--max-new-tokens", "4", "--temperature", "1.5", "--seed", "7", "--greedy=false");
        var greedy = Run("run", "--model", Qwen3, "--prompt-ids", "1,2,3", "--max-new-tokens", "4", "--greedy");
        var plain = Run("run", "--model", Qwen3, "--prompt-ids", "1,2,3", "--max-new-tokens", "4", "--greedy=true");
        Assert.True(sampled.Code == 0, sampled.Err);
        Assert.Equal(greedy.Out, plain.Out);
        var sampledAgain = Run("run", "--model", Qwen3, "--prompt-ids", "1,2,3", "--max-new-tokens", "4", "--temperature", "1.5", "--seed", "7");
        Assert.Equal(sampledAgain.Out, sampled.Out); // --greedy=false is the same as no --greedy
    }

    [Fact]
    public void AtSignIsAValueNotAResponseFile()
    {
        string tok = Path.Combine(TestPaths.Root, "tests", "fixtures", "tokenizers", "qwen3");
        var (code, o, err) = Run("tokenize", "--tokenizer", tok, "--text", "@nonexistent-file");
        Assert.True(code == 0, err);
        Assert.StartsWith("[", o);
    }

    [Fact]
    public void RunTakesThreadsAndNotesTheContextEnd()
    {
        // qwen3 fixture: max_position_embeddings 256; 250 prompt tokens leave room for 6
        string ids = string.Join(',', Enumerable.Range(1, 250));
        var (code, o, err) = Run("run", "--model", Qwen3, "--prompt-ids", ids, "--max-new-tokens", "20", "--threads", "1");
        Assert.True(code == 0, err);
        Assert.Equal(6, o.Trim().Split(' ').Length);
        Assert.Contains("stops after 6 tokens, at max_position_embeddings 256", err);
    }

    [Fact]
    public void NoRateForZeroTokens()
    {
        var (code, _, err) = Run("run", "--model", Qwen3, "--prompt-ids", "1,2", "--max-new-tokens", "0");
        Assert.True(code == 0, err);
        Assert.Contains("decode: 0 tokens", err);
        Assert.DoesNotContain("0 tokens,", err);
        string full = string.Join(',', Enumerable.Range(1, 256));
        (code, _, err) = Run("run", "--model", Qwen3, "--prompt-ids", full, "--max-new-tokens", "4");
        Assert.True(code == 0, err);
        Assert.Contains("stops after 0 tokens", err);
        Assert.Contains("decode: 0 tokens", err);
    }

    [Fact]
    public void OutputPathsAreChecked()
    {
        string dir = Directory.CreateTempSubdirectory("llmarch-out").FullName;
        AssertOneLineError(Run("compare", "gpt2", "--html", dir), "--html", "is a directory");
        AssertOneLineError(Run("compare", "gpt2", "--html", Path.Combine(dir, "no", "such", "x.html")), "does not exist");
        AssertOneLineError(Run("compare", "gpt2", "--html", "/proc/self/llmarch.html"), "pseudo-filesystem");
        AssertOneLineError(Run("export", "--model", Qwen3, "--out", dir), "--out", "is a directory");
        string file = Path.Combine(dir, "f");
        File.WriteAllText(file, "x");
        AssertOneLineError(Run("init", "--preset", "gpt2", "--random", "--out", file), "--out", "is a file");
        AssertOneLineError(Run("run", "--model", file, "--prompt-ids", "1"), "is a file");
    }

    [Fact]
    public void InputFilesAreReadWithLimits()
    {
        string tok = Path.Combine(TestPaths.Root, "tests", "fixtures", "tokenizers", "qwen3");
        AssertOneLineError(Run("template", "--tokenizer", tok, "--messages", "/proc/self/status"), "/proc/self/status", "not valid JSON");
        AssertOneLineError(Run("template", "--tokenizer", tok, "--messages", Path.GetTempPath()), "--messages", "is a directory");
        AssertOneLineError(Run("tokenize", "--tokenizer", tok, "--jsonl", "/nonexistent.jsonl"), "no such file");
        if (File.Exists("/dev/zero"))
            AssertOneLineError(Run("template", "--tokenizer", tok, "--messages", "/dev/zero"), "--messages", "MiB limit");
    }

    [Fact]
    public void InitRefusesAPresetLargerThanTheDisk()
    {
        string dir = Path.Combine(Directory.CreateTempSubdirectory("llmarch-init").FullName, "m");
        var free = Cli.Commands.InitCommand.FreeBytes(dir);
        Assert.NotNull(free);
        if (free > 5_000_000_000_000) return; // a disk larger than DeepSeek-V3 in f32
        var r = Run("init", "--preset", "deepseek-v3", "--random", "--dtype", "f32", "--out", dir);
        AssertOneLineError(r, "deepseek-v3", "GB free", "--force");
        Assert.False(File.Exists(Path.Combine(dir, "model.safetensors")));
    }

    [Fact]
    public void ProgressDrawsOnlyOnATerminal()
    {
        var sw = new StringWriter();
        var err = TextWriter.Synchronized(sw);
        var parse = new System.CommandLine.RootCommand().Parse([]);
        var tty = new Invocation(parse, TextReader.Null, TextWriter.Null, err, stderrIsTerminal: true);
        string Text() { lock (err) return sw.ToString(); } // TextWriter.Synchronized locks on itself
        using (Progress.Start(tty, "writing", () => (50, 100)))
        {
            // the line appears after the progress's start delay; a loaded machine may take longer than that
            var t = System.Diagnostics.Stopwatch.StartNew();
            while (!Text().Contains("writing [", StringComparison.Ordinal) && t.Elapsed < TimeSpan.FromSeconds(20)) Thread.Sleep(50);
        }
        Assert.Contains("writing [############............] 50%", Text());
        Assert.EndsWith("\r\u001b[K", Text());

        var log = new StringWriter();
        var notTty = new Invocation(parse, TextReader.Null, TextWriter.Null, log, stderrIsTerminal: false);
        using (Progress.Start(notTty, "writing", () => (50, 100))) Thread.Sleep(400);
        Assert.Equal("", log.ToString());
    }
}
