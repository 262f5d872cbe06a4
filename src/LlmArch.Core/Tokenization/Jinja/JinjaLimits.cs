using System.Runtime.CompilerServices;

namespace LlmArch.Tokenization.Jinja;

/// <summary>
/// The sandbox: chat templates come from model files and what they render (messages, tool schemas) may come from the
/// network, so parsing and rendering are bounded like Jinja2's SandboxedEnvironment and minijinja's fuel and recursion
/// limits. Each limit, when hit, is one clear <see cref="LlmArchInputException"/> naming the template line; never a stack
/// overflow, an out-of-memory or a hang. The numbers are far above what real chat templates use (a few levels of
/// nesting, a few thousand steps per message).
/// </summary>
public static class JinjaLimits
{
    /// <summary>Nesting of blocks and expressions in the source (parentheses, brackets, if/for/macro bodies).</summary>
    public const int MaxNesting = 64;
    /// <summary>Expressions evaluated one inside another: chains the parser builds in loops (a|f|f|..., a+b+c+...)
    /// are deep trees; a fixed bound fails them the same way on every thread, whatever its stack size.</summary>
    public const int MaxExpressionDepth = 1000;
    /// <summary>Depth of macro calls (a macro that calls itself).</summary>
    public const int MaxCallDepth = 64;
    /// <summary>Instruction budget of one render: statements, loop iterations and expression evaluations.</summary>
    public const long MaxSteps = 5_000_000;
    /// <summary>Longest string a template may build, in UTF-16 units.</summary>
    public const int MaxString = 8 << 20;
    /// <summary>Most items of a list a template may build.</summary>
    public const int MaxList = 1 << 20;
    /// <summary>Longest rendered output, in UTF-16 units.</summary>
    public const int MaxOutput = 16 << 20;
    /// <summary>Nesting of values (lists in dicts in lists...) that printing, tojson and comparisons walk.</summary>
    public const int MaxValueDepth = 128;
    /// <summary>Characters of strings plus items of lists one render may build in total (bounds memory: many values
    /// each under its own cap cannot add up to gigabytes).</summary>
    public const long MaxAllocation = 256L << 20;

    /// <summary>The render running on this thread (for charges from code that has no context at hand).</summary>
    [ThreadStatic] internal static JinjaContext? Current;

    /// <summary>Charges <paramref name="units"/> characters or items to the running render's allocation budget.</summary>
    internal static void Charge(long units)
    {
        if (Current is not { } ctx) return;
        ctx.Allocated += units;
        if (ctx.Allocated > MaxAllocation)
            throw new JinjaError($"the template built over {MaxAllocation} characters and list items in total, the sandbox limit");
    }

    internal static JinjaError TooLong(string what, long n) =>
        new($"{what} would be {n} characters, over the sandbox limit of {MaxString}");

    /// <summary>Checks a value a step produced: strings and lists within their caps.</summary>
    internal static object? Check(object? v)
    {
        switch (v)
        {
            case string s:
                if (s.Length > MaxString) throw TooLong("a string", s.Length);
                if (s.Length > 64) Charge(s.Length);
                break;
            case List<object?> l:
                if (l.Count > MaxList) throw new JinjaError($"a list of {l.Count} items is over the sandbox limit of {MaxList}");
                if (l.Count > 16) Charge(l.Count);
                break;
        }
        return v;
    }

    /// <summary>A width/count argument (padding, repetition) that would size a string or list.</summary>
    internal static int Size(long n, string what, int max = MaxString)
    {
        if (n > max) throw new JinjaError($"{what} of {n} is over the sandbox limit of {max}");
        return (int)Math.Max(0, n);
    }

    /// <summary>Before recursing into a value: depth within <see cref="MaxValueDepth"/> and stack to spare.</summary>
    internal static void Deeper(int depth)
    {
        if (depth > MaxValueDepth) throw new JinjaError($"a value nests deeper than {MaxValueDepth} levels (a list that contains itself?)");
        if (!RuntimeHelpers.TryEnsureSufficientExecutionStack()) throw new JinjaError("a value nests too deeply for the stack");
    }
}
