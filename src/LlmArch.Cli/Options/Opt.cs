using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using LlmArch.Checkpoints;

namespace LlmArch.Cli;

/// <summary>The value of a true/false option.</summary>
public sealed record Toggle(bool On);

/// <summary>The value of a list-of-ids option.</summary>
public sealed record IdList(int[] Ids);

/// <summary>
/// Typed options with llmarch's messages: every value is parsed and range-checked at parse time, so a bad value is one
/// line naming the option, what was given and what is allowed (<c>option --top-p: must be in (0, 1] (got 1.5)</c>).
/// </summary>
public static class Opt
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    private static string Token(ArgumentResult r) => r.Tokens.Count > 0 ? r.Tokens[^1].Value : "";
    private static string NameOf(ArgumentResult r) => r.Parent is OptionResult o ? o.Option.Name : r.Argument.Name;

    /// <summary>A flag: <c>--json</c>, also <c>--json=true</c> / <c>--json=false</c>.</summary>
    public static Option<bool> Flag(string name, string description) => new(name) { Description = description };

    /// <summary>A string value.</summary>
    public static Option<string?> Text(string name, string description, string? helpName = null, bool required = false) =>
        new(name) { Description = description, HelpName = helpName, Required = required };

    /// <summary>An integer in [min, max]; null when absent (use <paramref name="fallback"/> for a default shown in help).</summary>
    public static Option<int> Int(string name, string description, int fallback, int min = int.MinValue, int max = int.MaxValue, string helpName = "N") =>
        new(name)
        {
            Description = description, HelpName = helpName, DefaultValueFactory = _ => fallback,
            CustomParser = r => r.Tokens.Count == 0 ? fallback : (int)Integer(r, min, max),
        };

    /// <summary>An optional integer in [min, max] (null when absent).</summary>
    public static Option<int?> OptionalInt(string name, string description, int min = int.MinValue, int max = int.MaxValue, string helpName = "N") =>
        new(name) { Description = description, HelpName = helpName, CustomParser = r => r.Tokens.Count == 0 ? null : (int)Integer(r, min, max) };

    public static Option<long> Long(string name, string description, long fallback, long min = long.MinValue, long max = long.MaxValue, string helpName = "N") =>
        new(name)
        {
            Description = description, HelpName = helpName, DefaultValueFactory = _ => fallback,
            CustomParser = r => r.Tokens.Count == 0 ? fallback : Integer(r, min, max),
        };

    private static long Integer(ArgumentResult r, long min, long max)
    {
        string t = Token(r);
        if (!long.TryParse(t, NumberStyles.AllowLeadingSign, Inv, out long v))
        {
            r.AddError($"option {NameOf(r)}: '{t}' is not an integer");
            return min;
        }
        if (v < min || v > max)
        {
            r.AddError($"option {NameOf(r)}: must be {Range(min, max)} (got {t})");
            return min;
        }
        return v;
    }

    private static string Range(long min, long max) =>
        min == long.MinValue || min == int.MinValue ? $"<= {max}" : max == long.MaxValue || max == int.MaxValue ? $">= {min}" : $"between {min} and {max}";

    /// <summary>An optional finite number checked by <paramref name="check"/> (which returns the allowed range when the value is outside it).</summary>
    public static Option<double?> Number(string name, string description, Func<double, string?> check, string helpName = "X") =>
        new(name)
        {
            Description = description, HelpName = helpName,
            CustomParser = r =>
            {
                if (r.Tokens.Count == 0) return null;
                string t = Token(r);
                if (!double.TryParse(t, NumberStyles.Float, Inv, out double v) || !double.IsFinite(v))
                {
                    r.AddError($"option {NameOf(r)}: '{t}' is not a finite number");
                    return null;
                }
                if (check(v) is { } allowed) { r.AddError($"option {NameOf(r)}: must be {allowed} (got {t})"); return null; }
                return v;
            },
        };

    /// <summary>One of a fixed set of words (case-insensitive); the value is the lower-case word.</summary>
    public static Option<string> Choice(string name, string description, string fallback, params string[] choices) =>
        new(name)
        {
            Description = description, HelpName = string.Join("|", choices), DefaultValueFactory = _ => fallback,
            CustomParser = r =>
            {
                if (r.Tokens.Count == 0) return fallback;
                string t = Token(r).ToLowerInvariant();
                if (!choices.Contains(t, StringComparer.Ordinal)) r.AddError($"option {NameOf(r)}: '{Token(r)}' is not one of {string.Join(", ", choices)}");
                return t;
            },
        };

    /// <summary>true/false (also True/False, 1/0, yes/no); null when absent. (A class, not bool?: System.CommandLine
    /// would not consume a value it cannot parse as a bool, and the error would read "unexpected argument".)</summary>
    public static Option<Toggle?> Switch(string name, string description, Func<string, string>? message = null) =>
        new(name)
        {
            Description = description, HelpName = "true|false",
            CustomParser = r =>
            {
                if (r.Tokens.Count == 0) return null;
                string t = Token(r);
                switch (t.ToLowerInvariant())
                {
                    case "true" or "1" or "yes": return new Toggle(true);
                    case "false" or "0" or "no": return new Toggle(false);
                    default:
                        r.AddError(message?.Invoke(t) ?? $"option {NameOf(r)}: '{t}' is not true or false");
                        return null;
                }
            },
        };

    /// <summary>A comma-separated list of non-negative integers (no empty items); null when absent. (Wrapped: an absent
    /// array option would read as an empty array.)</summary>
    /// <param name="what">what one item is, with its article ("a token id").</param>
    public static Option<IdList?> IdList(string name, string description, string what = "a token id") =>
        new(name)
        {
            Description = description, HelpName = "1,2,3",
            CustomParser = r => r.Tokens.Count == 0 ? null : new IdList(ParseIdList(Token(r), what, e => r.AddError($"option {NameOf(r)}: {e}")) ?? []),
        };

    /// <summary>Parses "1,2,3": every item a non-negative integer, no empty item; errors go to <paramref name="error"/>.</summary>
    public static int[]? ParseIdList(string s, string what, Action<string> error)
    {
        var parts = s.Split(',');
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
        {
            string p = parts[i].Trim();
            if (p.Length == 0) { error(parts.Length == 1 ? "is empty" : $"item {i + 1} of '{s}' is empty"); return null; }
            if (!int.TryParse(p, NumberStyles.None, Inv, out ids[i])) { error($"'{p}' is not {what}"); return null; }
        }
        return ids;
    }

    /// <summary>
    /// <c>--model</c>: a model directory, a Hugging Face cache folder (<c>models--org--name</c>) or a repo id found in
    /// the local cache; the value is the resolved directory, checked to exist and be readable.
    /// </summary>
    public static Option<string> Model(string description = "model directory, GGUF file, Hugging Face cache folder (models--org--name) or cached repo id (org/name)", bool required = true) =>
        new("--model")
        {
            Description = description, HelpName = "dir|org/name", Required = required,
            CustomParser = r => r.Tokens.Count == 0 ? null! : ResolveDirectory(r, "model"),
        };

    /// <summary><c>--tokenizer</c>: like <see cref="Model"/>, or a tokenizer.json file; unchecked when absent.</summary>
    public static Option<string?> Tokenizer(string description, bool required = false) =>
        new("--tokenizer")
        {
            Description = description, HelpName = "dir|file|org/name", Required = required,
            CustomParser = r => r.Tokens.Count == 0 ? null : ResolveDirectory(r, "tokenizer", allowFile: true),
        };

    private static string ResolveDirectory(ArgumentResult r, string what, bool allowFile = false)
    {
        string arg = Token(r);
        try
        {
            // a llama.cpp GGUF file loads as a model (ModelLoader.Load)
            if (what == "model" && GgufFile.IsPath(arg))
                return File.Exists(arg) ? arg : throw new LlmArchInputException($"{arg}: GGUF file not found");
            string dir = ModelLocator.Resolve(arg, what);
            if (allowFile && File.Exists(dir)) return dir;
            if (allowFile && !Directory.Exists(dir)) throw new LlmArchInputException($"{dir}: no such {what} file or directory");
            CliFiles.CheckReadableDirectory(dir, what);
            return dir;
        }
        catch (LlmArchInputException e)
        {
            r.AddError(e.Message);
            return arg;
        }
    }

    /// <summary><c>--kv-dtype</c>: the KV cache element type the analysis counts in.</summary>
    public static Option<Analysis.KvCacheDType> KvDtype() =>
        new("--kv-dtype")
        {
            Description = "KV cache element type", HelpName = "bf16|fp8|f32", DefaultValueFactory = _ => Analysis.KvCacheDType.BF16,
            CustomParser = r =>
            {
                if (r.Tokens.Count == 0) return Analysis.KvCacheDType.BF16;
                try { return Analysis.KvCacheDTypes.Parse(Token(r)); }
                catch (LlmArchInputException e) { r.AddError("option " + e.Message); return Analysis.KvCacheDType.BF16; }
            },
        };

    /// <summary><c>--threads N</c>: CPU threads (default: LLMARCH_THREADS or the processor count).</summary>
    public static Option<int?> Threads() =>
        OptionalInt("--threads", "CPU threads (default: LLMARCH_THREADS or the number of processors)", min: 1, max: 4096);
}
