using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;

namespace LlmArch.Cli;

/// <summary>
/// <c>llmarch</c>: the verbs (one <see cref="Verb"/> class each, found by reflection) on System.CommandLine.
/// Help (<c>llmarch VERB --help</c>, <c>llmarch help VERB</c>) is generated from the option descriptions. Every error is
/// one line on stderr, <c>llmarch VERB: error: ...</c>, with exit code 2: parse errors, bad input
/// (<see cref="LlmArchInputException"/>), I/O failures and, as a last resort, anything unexpected
/// (<c>LLMARCH_DEBUG=1</c> prints its stack trace too).
/// </summary>
public static class Program
{
    private static readonly Type[] VerbTypes = typeof(Program).Assembly.GetTypes()
        .Where(t => typeof(Verb).IsAssignableFrom(t) && !t.IsAbstract)
        .ToArray();

    /// <summary>A fresh instance of every verb, by name.</summary>
    public static IReadOnlyList<Verb> Verbs() =>
        VerbTypes.Select(t => (Verb)Activator.CreateInstance(t)!).OrderBy(v => v.Name, StringComparer.Ordinal).ToList();

    public static int Main(string[] args) => Run(args, Console.In, Console.Out, Console.Error);

    /// <summary>Entry point shared by <c>Main</c> and the tests: bad input is one line on stderr and exit 2.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr) => Run(args, TextReader.Null, stdout, stderr);

    /// <summary>As <see cref="Run(string[], TextWriter, TextWriter)"/>, with the input <c>chat</c> reads its turns from.</summary>
    public static int Run(string[] args, TextReader stdin, TextWriter stdout, TextWriter stderr)
    {
        var verbs = Verbs();
        var root = new RootCommand("llmarch: modern LLM architectures in pure .NET. Run 'llmarch VERB --help' for a verb's options.");
        foreach (var v in verbs)
        {
            var cmd = v.BuildCommand();
            var verb = v;
            cmd.SetAction(p => verb.Execute(new Invocation(p, stdin, stdout, stderr, IsTerminal(stderr))));
            root.Add(cmd);
        }

        if (args.Length > 0 && args[0] == "help")
        {
            if (args.Length == 1) args = ["--help"];
            else if (verbs.Any(v => v.Name == args[1]) && args.Length == 2) args = [args[1], "--help"];
            else return Fail(stderr, null, args.Length == 2 ? UnknownVerb(args[1], verbs) : "usage: llmarch help [VERB]");
        }
        if (args.Length == 0)
        {
            root.Parse(["--help"]).Invoke(Config(stdout, stderr));
            return 2;
        }
        if (!args[0].StartsWith('-') && verbs.All(v => v.Name != args[0])) return Fail(stderr, null, UnknownVerb(args[0], verbs));

        string? verbName = verbs.Any(v => v.Name == args[0]) ? args[0] : null;
        try
        {
            // No response files: "@name" is a value (a prompt may start with '@'), never "read arguments from file name".
            var parse = root.Parse(args, new ParserConfiguration { ResponseFileTokenReplacer = null });
            if (parse.Action is ParseErrorAction && parse.Errors.Count > 0)
                return Fail(stderr, verbName, ParseErrorLine(parse) + (verbName is null ? "" : $" (see llmarch {verbName} --help)"));
            return parse.Invoke(Config(stdout, stderr));
        }
        catch (Exception e) when (Unwrap(e) is LlmArchInputException or IOException or UnauthorizedAccessException or System.Text.Json.JsonException)
        {
            return Fail(stderr, verbName, Unwrap(e).Message);
        }
        catch (Exception e) when (Unwrap(e) is not (StackOverflowException or AccessViolationException))
        {
            // Last resort: a bug or an input no check foresaw. One line and exit 2; the trace only when asked for.
            var inner = Unwrap(e);
            if (Environment.GetEnvironmentVariable("LLMARCH_DEBUG") is "1" or "true") stderr.WriteLine(inner.ToString());
            return Fail(stderr, verbName, $"unexpected {inner.GetType().Name}: {inner.Message} (set LLMARCH_DEBUG=1 for the stack trace; please report it)");
        }
    }

    private static Exception Unwrap(Exception e) =>
        e is System.Reflection.TargetInvocationException or AggregateException && e.InnerException is not null ? Unwrap(e.InnerException) : e;

    private static InvocationConfiguration Config(TextWriter stdout, TextWriter stderr) =>
        new() { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false };

    private static bool IsTerminal(TextWriter w)
    {
        try { return ReferenceEquals(w, Console.Error) && !Console.IsErrorRedirected; }
        catch (IOException) { return false; }
    }

    private static string UnknownVerb(string name, IReadOnlyList<Verb> verbs) =>
        $"unknown verb '{name}' (verbs: {string.Join(", ", verbs.Select(v => v.Name))}; llmarch --help lists them)";

    /// <summary>The first parse error as llmarch words it: unknown options and stray arguments named as such.</summary>
    private static string ParseErrorLine(ParseResult parse)
    {
        foreach (var t in parse.UnmatchedTokens)
            return t.StartsWith('-') && t.Length > 1 && !double.TryParse(t, out _) ? $"unknown option {t}" : $"unexpected argument '{t}'";
        return parse.Errors[0].Message;
    }

    private static int Fail(TextWriter stderr, string? verb, string message)
    {
        stderr.WriteLine($"llmarch{(verb is null ? "" : " " + verb)}: error: {message.ReplaceLineEndings(" ")}");
        return 2;
    }
}
