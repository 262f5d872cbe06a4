using System.Globalization;
using System.Text;

namespace LlmArch.Tokenization.Jinja;

/// <summary>
/// A parsed Jinja template, rendered the way transformers renders chat templates: trim_blocks and lstrip_blocks on,
/// no autoescaping, <c>raise_exception</c>, <c>strftime_now</c>, <c>namespace</c> and <c>range</c> as globals, loop
/// controls (<c>break</c>/<c>continue</c>) enabled. Unknown filters and tests are rejected when parsing.
/// </summary>
public sealed class JinjaTemplate
{
    private readonly List<Stmt> _body;

    private JinjaTemplate(List<Stmt> body) { _body = body; }

    /// <summary>Parses a template; syntax errors, unknown filters and tests throw <see cref="LlmArchInputException"/>.</summary>
    public static JinjaTemplate Parse(string source)
    {
        if (source.Length > JinjaLimits.MaxString) throw new LlmArchInputException($"chat template: {source.Length} characters is over the sandbox limit of {JinjaLimits.MaxString}");
        try { return new(JinjaParser.Parse(source)); }
        catch (Exception e) when (e is OverflowException or FormatException or ArgumentException or IndexOutOfRangeException or InsufficientExecutionStackException)
        {
            throw new LlmArchInputException($"chat template: cannot parse ({e.GetType().Name}: {e.Message})");
        }
    }

    /// <summary>
    /// Renders with the given variables (.NET values: string, bool, numbers, lists, dictionaries, JsonElement/JsonNode).
    /// Template errors (including <c>raise_exception</c>) throw <see cref="LlmArchInputException"/>.
    /// </summary>
    public string Render(IReadOnlyDictionary<string, object?> variables)
    {
        var globals = new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["raise_exception"] = new JinjaFunction("raise_exception", (_, a, _) =>
                throw new JinjaError($"raise_exception: {(a.Count > 0 ? Py.Str(a[0]) : "")}")),
            ["strftime_now"] = new JinjaFunction("strftime_now", (_, a, _) => Strftime(DateTime.Now, a.Count > 0 ? Py.Str(a[0]) : "")),
            ["namespace"] = new JinjaFunction("namespace", (_, a, k) =>
            {
                var ns = new JinjaNamespace();
                if (a.Count > 0 && a[0] is Dictionary<string, object?> init) foreach (var kv in init) ns.Attrs[kv.Key] = kv.Value;
                foreach (var kv in k) ns.Attrs[kv.Key] = kv.Value;
                return ns;
            }),
            ["range"] = new JinjaFunction("range", (_, a, _) => Range(a)),
            ["dict"] = new JinjaFunction("dict", (_, a, k) =>
            {
                var d = new Dictionary<string, object?>(StringComparer.Ordinal);
                if (a.Count > 0 && a[0] is Dictionary<string, object?> init) foreach (var kv in init) d[kv.Key] = kv.Value;
                foreach (var kv in k) d[kv.Key] = kv.Value;
                return d;
            }),
        };
        var ctx = new JinjaContext(globals);
        var sb = new StringBuilder();
        var outer = JinjaLimits.Current;
        JinjaLimits.Current = ctx;
        try
        {
            foreach (var (k, v) in variables) ctx.Set(k, Py.FromObject(v));
            Stmt.ExecAll(_body, ctx, sb);
        }
        catch (JinjaError e)
        {
            throw new LlmArchInputException($"chat template: line {ctx.Line}: {e.Message}");
        }
        catch (InvalidOperationException e)
        {
            throw new LlmArchInputException($"chat template: line {ctx.Line}: {e.Message}");
        }
        catch (InvalidCastException e)
        {
            throw new LlmArchInputException($"chat template: line {ctx.Line}: wrong value type ({e.Message})");
        }
        catch (Exception e) when (e is ArgumentException or FormatException or OverflowException or IndexOutOfRangeException
                                      or KeyNotFoundException or NullReferenceException or InsufficientExecutionStackException)
        {
            // The engine's own checks name the problem; anything else a template provokes is still one error, not a crash.
            throw new LlmArchInputException($"chat template: line {ctx.Line}: {e.GetType().Name}: {e.Message}");
        }
        finally { JinjaLimits.Current = outer; }
        return sb.ToString();
    }

    private static List<object?> Range(List<object?> a)
    {
        long start = 0, stop, step = 1;
        if (a.Count == 1) stop = Py.ToLong(a[0]);
        else if (a.Count >= 2) { start = Py.ToLong(a[0]); stop = Py.ToLong(a[1]); if (a.Count > 2) step = Py.ToLong(a[2]); }
        else throw new JinjaError("range expected at least 1 argument");
        if (step == 0) throw new JinjaError("range() arg 3 must not be zero");
        var r = new List<object?>();
        for (long i = start; step > 0 ? i < stop : i > stop; i += step)
        {
            r.Add(i);
            if (r.Count > JinjaLimits.MaxList) throw new JinjaError($"range() of more than {JinjaLimits.MaxList} items is over the sandbox limit");
        }
        return r;
    }

    private static readonly string[] Days = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
    private static readonly string[] Months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];

    /// <summary>Python's strftime for the common directives (C locale).</summary>
    internal static string Strftime(DateTime t, string fmt)
    {
        var sb = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        for (int i = 0; i < fmt.Length; i++)
        {
            if (fmt[i] != '%' || i + 1 >= fmt.Length) { sb.Append(fmt[i]); continue; }
            char c = fmt[++i];
            if (c == '-' && i + 1 < fmt.Length)
            {
                string padded = Strftime(t, "%" + fmt[++i]).TrimStart('0');
                sb.Append(padded.Length == 0 ? "0" : padded);
                continue;
            }
            sb.Append(c switch
            {
                'd' => t.Day.ToString("00", inv),
                'm' => t.Month.ToString("00", inv),
                'Y' => t.Year.ToString("0000", inv),
                'y' => (t.Year % 100).ToString("00", inv),
                'H' => t.Hour.ToString("00", inv),
                'I' => ((t.Hour + 11) % 12 + 1).ToString("00", inv),
                'M' => t.Minute.ToString("00", inv),
                'S' => t.Second.ToString("00", inv),
                'p' => t.Hour < 12 ? "AM" : "PM",
                'B' => Months[t.Month - 1],
                'b' or 'h' => Months[t.Month - 1][..3],
                'A' => Days[(int)t.DayOfWeek],
                'a' => Days[(int)t.DayOfWeek][..3],
                'j' => t.DayOfYear.ToString("000", inv),
                'f' => (t.Ticks % TimeSpan.TicksPerSecond / 10).ToString("000000", inv),
                'w' => ((int)t.DayOfWeek).ToString(inv),
                'Z' => "",
                'z' => "",
                '%' => "%",
                _ => "%" + c,
            });
        }
        return sb.ToString();
    }
}
