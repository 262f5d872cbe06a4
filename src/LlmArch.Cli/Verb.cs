using System.CommandLine;
using System.Reflection;

namespace LlmArch.Cli;

/// <summary>
/// One verb of <c>llmarch</c>, one file per verb under Commands/, discovered by reflection. A verb declares its options
/// and arguments as fields (built with <see cref="Opt"/>, or a shared group such as <see cref="SamplingGroup"/>) in the
/// order help lists them, and reads them in <see cref="Execute"/> through <see cref="Invocation.Get{T}(Option{T})"/>.
/// Adding an option is one field and the line that reads it; adding a verb is one class. Bad input is thrown as an
/// <see cref="LlmArchInputException"/> (one line, exit 2); parse errors never reach <see cref="Execute"/>.
/// </summary>
public abstract class Verb
{
    /// <summary>The verb as typed: <c>llmarch NAME</c>.</summary>
    public abstract string Name { get; }
    /// <summary>One or two sentences: the first line of <c>llmarch NAME --help</c> and the verb's line in <c>llmarch --help</c>.</summary>
    public abstract string Description { get; }

    /// <summary>Runs the verb on parsed, typed, range-checked options; returns the exit code.</summary>
    public abstract int Execute(Invocation inv);

    /// <summary>The System.CommandLine command: every <see cref="Option"/>, <see cref="Argument"/> and <see cref="IOptionGroup"/> field, in declaration order.</summary>
    public Command BuildCommand()
    {
        var cmd = new Command(Name, Description);
        foreach (var f in GetType().GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            foreach (var s in Symbols(f.GetValue(this)))
                switch (s)
                {
                    case Option o: cmd.Add(o); break;
                    case Argument a: cmd.Add(a); break;
                }
        return cmd;
    }

    private static IEnumerable<Symbol> Symbols(object? v) => v switch
    {
        Symbol s => [s],
        IOptionGroup g => g.Symbols,
        _ => [],
    };
}

/// <summary>A set of options several verbs share (sampling flags, thread count): a verb holds one as a field.</summary>
public interface IOptionGroup
{
    IEnumerable<Symbol> Symbols { get; }
}

/// <summary>What a verb runs with: the parse result and the process's streams.</summary>
public sealed class Invocation(ParseResult parse, TextReader stdin, TextWriter stdout, TextWriter stderr, bool stderrIsTerminal)
{
    public ParseResult Parse => parse;
    public TextReader In => stdin;
    public TextWriter Out => stdout;
    public TextWriter Err => stderr;
    /// <summary>True when stderr is an interactive terminal: progress displays are drawn only then.</summary>
    public bool ErrIsTerminal => stderrIsTerminal;
    /// <summary>The verb's name (for messages).</summary>
    public string Verb => parse.CommandResult.Command.Name;

    public T Get<T>(Option<T> o) => parse.GetValue(o)!;
    public T Get<T>(Argument<T> a) => parse.GetValue(a)!;
    /// <summary>True when the option was given on the command line (not just defaulted).</summary>
    public bool Given(Option o) => parse.GetResult(o) is { Implicit: false };

    /// <summary>A note on stderr, prefixed with the verb.</summary>
    public void Note(string text) => stderr.WriteLine($"llmarch {Verb}: {text}");
}
