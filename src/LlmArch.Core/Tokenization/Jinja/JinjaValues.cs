using System.Globalization;
using System.Text;
using System.Text.Json;

namespace LlmArch.Tokenization.Jinja;

/// <summary>Jinja's undefined value: falsy, prints as empty, iterates as empty; using its attributes is an error.</summary>
public sealed class JinjaUndefined
{
    public string Name { get; }
    public JinjaUndefined(string name) { Name = name; }
    public override string ToString() => "";
}

/// <summary>The object <c>namespace(...)</c> returns: attributes assignable with <c>{% set ns.x = ... %}</c>.</summary>
internal sealed class JinjaNamespace
{
    public readonly Dictionary<string, object?> Attrs = new(StringComparer.Ordinal);
}

/// <summary>Anything callable from a template: globals, macros, bound methods.</summary>
internal interface IJinjaCallable
{
    object? Call(JinjaContext ctx, List<object?> args, Dictionary<string, object?> kwargs);
}

internal sealed class JinjaFunction(string name, Func<JinjaContext, List<object?>, Dictionary<string, object?>, object?> fn) : IJinjaCallable
{
    public string Name => name;
    public object? Call(JinjaContext ctx, List<object?> args, Dictionary<string, object?> kwargs) => fn(ctx, args, kwargs);
}

/// <summary>A Python tuple (prints with parentheses); otherwise behaves as a list.</summary>
internal sealed class JinjaTuple : List<object?>
{
    public JinjaTuple() { }
    public JinjaTuple(IEnumerable<object?> items) : base(items) { }
}

/// <summary>Python-like semantics for template values: null = None, long, double, bool, string,
/// List&lt;object?&gt;, Dictionary&lt;string, object?&gt;, <see cref="JinjaUndefined"/>.</summary>
internal static class Py
{
    public static readonly JinjaUndefined Undefined = new("undefined");

    public static bool IsUndefined(object? v) => v is JinjaUndefined;

    public static bool Truthy(object? v) => v switch
    {
        null => false,
        JinjaUndefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        List<object?> l => l.Count > 0,
        Dictionary<string, object?> d => d.Count > 0,
        _ => true,
    };

    public static string TypeName(object? v) => v switch
    {
        null => "NoneType",
        JinjaUndefined => "Undefined",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        JinjaTuple => "tuple",
        List<object?> => "list",
        Dictionary<string, object?> => "dict",
        JinjaNamespace => "Namespace",
        IJinjaCallable => "function",
        _ => v.GetType().Name,
    };

    /// <summary>Python str().</summary>
    public static string Str(object? v) => v switch
    {
        null => "None",
        JinjaUndefined => "",
        string s => s,
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => FloatRepr(d),
        _ => Repr(v),
    };

    /// <summary>Python repr(), within the sandbox's depth and length limits (shared or self-containing lists included).</summary>
    public static string Repr(object? v)
    {
        if (v is string s0) return StrRepr(s0);
        var sb = new StringBuilder();
        Repr(sb, v, 0);
        JinjaLimits.Charge(sb.Length);
        return sb.ToString();
    }

    private static void Repr(StringBuilder sb, object? v, int depth)
    {
        if (sb.Length > JinjaLimits.MaxString) throw JinjaLimits.TooLong("a printed value", sb.Length);
        switch (v)
        {
            case string s: sb.Append(StrRepr(s)); return;
            case JinjaTuple t:
                JinjaLimits.Deeper(depth);
                sb.Append('(');
                for (int i = 0; i < t.Count; i++) { if (i > 0) sb.Append(", "); Repr(sb, t[i], depth + 1); }
                sb.Append(t.Count == 1 ? ",)" : ")");
                return;
            case List<object?> l:
                JinjaLimits.Deeper(depth);
                sb.Append('[');
                for (int i = 0; i < l.Count; i++) { if (i > 0) sb.Append(", "); Repr(sb, l[i], depth + 1); }
                sb.Append(']');
                return;
            case Dictionary<string, object?> d:
                JinjaLimits.Deeper(depth);
                sb.Append('{');
                bool first = true;
                foreach (var kv in d)
                {
                    if (!first) sb.Append(", ");
                    first = false;
                    sb.Append(StrRepr(kv.Key)).Append(": ");
                    Repr(sb, kv.Value, depth + 1);
                }
                sb.Append('}');
                return;
            case JinjaNamespace: sb.Append("<Namespace>"); return;
            case IJinjaCallable: sb.Append("<function>"); return;
            default: sb.Append(Str(v)); return;
        }
    }

    private static string StrRepr(string s)
    {
        char q = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        var sb = new StringBuilder(s.Length + 2).Append(q);
        foreach (char c in s)
        {
            switch (c)
            {
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c == q) sb.Append('\\').Append(c);
                    else if (c < 0x20 || c == 0x7F) sb.Append("\\x").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        return sb.Append(q).ToString();
    }

    /// <summary>Python float repr: shortest round-trip digits, exponent form outside 1e-4 .. 1e16.</summary>
    public static string FloatRepr(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsPositiveInfinity(d)) return "inf";
        if (double.IsNegativeInfinity(d)) return "-inf";
        if (d == 0) return double.IsNegative(d) ? "-0.0" : "0.0";
        string shortest = d.ToString("R", CultureInfo.InvariantCulture);
        // digits and exponent from the shortest representation
        bool neg = shortest.StartsWith('-');
        string body = neg ? shortest[1..] : shortest;
        int exp = 0;
        int e = body.IndexOfAny(['E', 'e']);
        if (e >= 0) { exp = int.Parse(body[(e + 1)..], CultureInfo.InvariantCulture); body = body[..e]; }
        int dot = body.IndexOf('.');
        string intPart = dot >= 0 ? body[..dot] : body;
        string frac = dot >= 0 ? body[(dot + 1)..] : "";
        string digits = (intPart + frac).TrimStart('0');
        int lead = (intPart + frac).Length - digits.Length;
        int pointPos = intPart.Length + exp - lead; // decimal point position relative to digits start
        digits = digits.TrimEnd('0');
        if (digits.Length == 0) digits = "0";
        int sciExp = pointPos - 1;
        var sb = new StringBuilder();
        if (neg) sb.Append('-');
        if (sciExp < -4 || sciExp >= 16)
        {
            sb.Append(digits[0]);
            if (digits.Length > 1) sb.Append('.').Append(digits, 1, digits.Length - 1);
            sb.Append('e').Append(sciExp < 0 ? '-' : '+').Append(Math.Abs(sciExp).ToString("00", CultureInfo.InvariantCulture));
        }
        else if (pointPos <= 0)
        {
            sb.Append("0.").Append('0', -pointPos).Append(digits);
        }
        else if (pointPos >= digits.Length)
        {
            sb.Append(digits).Append('0', pointPos - digits.Length).Append(".0");
        }
        else
        {
            sb.Append(digits, 0, pointPos).Append('.').Append(digits, pointPos, digits.Length - pointPos);
        }
        return sb.ToString();
    }

    public static bool IsNumber(object? v) => v is long or double or bool;

    public static double ToDouble(object? v) => v switch
    {
        long l => l,
        double d => d,
        bool b => b ? 1 : 0,
        _ => throw new InvalidOperationException(),
    };

    public static bool Eq(object? a, object? b) => Eq(a, b, 0);

    private static bool Eq(object? a, object? b, int depth)
    {
        if (a is null || b is null) return a is null && b is null;
        if (a is JinjaUndefined || b is JinjaUndefined) return a is JinjaUndefined && b is JinjaUndefined;
        if (IsNumber(a) && IsNumber(b))
        {
            if (a is double || b is double) return ToDouble(a) == ToDouble(b);
            return ToLong(a) == ToLong(b);
        }
        if (a is string sa && b is string sb) return string.Equals(sa, sb, StringComparison.Ordinal);
        if (a is List<object?> la && b is List<object?> lb)
        {
            if (la.Count != lb.Count) return false;
            if (ReferenceEquals(la, lb)) return true;
            JinjaLimits.Deeper(depth);
            for (int i = 0; i < la.Count; i++) if (!Eq(la[i], lb[i], depth + 1)) return false;
            return true;
        }
        if (a is Dictionary<string, object?> da && b is Dictionary<string, object?> db)
        {
            if (da.Count != db.Count) return false;
            if (ReferenceEquals(da, db)) return true;
            JinjaLimits.Deeper(depth);
            foreach (var (k, v) in da) if (!db.TryGetValue(k, out var w) || !Eq(v, w, depth + 1)) return false;
            return true;
        }
        return ReferenceEquals(a, b);
    }

    public static long ToLong(object? v) => v switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        double d => (long)d,
        _ => throw new InvalidOperationException(),
    };

    /// <summary>Python ordering for &lt; &gt;; throws for unorderable types.</summary>
    public static int Compare(object? a, object? b) => Compare(a, b, 0);

    private static int Compare(object? a, object? b, int depth)
    {
        if (IsNumber(a) && IsNumber(b))
        {
            if (a is double || b is double) return ToDouble(a).CompareTo(ToDouble(b));
            return ToLong(a).CompareTo(ToLong(b));
        }
        if (a is string sa && b is string sb) return string.CompareOrdinal(sa, sb);
        if (a is List<object?> la && b is List<object?> lb)
        {
            JinjaLimits.Deeper(depth);
            for (int i = 0; i < Math.Min(la.Count, lb.Count); i++)
            {
                int c = Compare(la[i], lb[i], depth + 1);
                if (c != 0) return c;
            }
            return la.Count.CompareTo(lb.Count);
        }
        throw new JinjaError($"cannot compare {TypeName(a)} with {TypeName(b)}");
    }

    /// <summary>Python iteration: lists, dict keys, string characters; undefined iterates as empty.</summary>
    public static List<object?> Iterate(object? v) => v switch
    {
        List<object?> l => l,
        Dictionary<string, object?> d => d.Keys.Cast<object?>().ToList(),
        string s => TextElements(s),
        JinjaUndefined => new List<object?>(),
        _ => throw new JinjaError($"'{TypeName(v)}' object is not iterable"),
    };

    /// <summary>A string's characters as Python sees them (code points).</summary>
    public static List<object?> TextElements(string s)
    {
        var r = new List<object?>(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsSurrogatePair(s, i)) { r.Add(s.Substring(i, 2)); i++; }
            else r.Add(s[i].ToString());
        }
        return r;
    }

    public static bool Contains(object? container, object? item) => container switch
    {
        string s => item is string sub ? s.Contains(sub, StringComparison.Ordinal) : throw new JinjaError($"'in <string>' requires string as left operand, not {TypeName(item)}"),
        List<object?> l => l.Any(x => Eq(x, item)),
        Dictionary<string, object?> d => item is string k && d.ContainsKey(k),
        JinjaUndefined => false,
        _ => throw new JinjaError($"argument of type '{TypeName(container)}' is not iterable"),
    };

    /// <summary>Converts .NET / JSON values to template values.</summary>
    public static object? FromObject(object? v) => FromObject(v, 0);

    private static object? FromObject(object? v, int depth)
    {
        JinjaLimits.Deeper(depth);
        switch (v)
        {
            case null: return null;
            case string or bool or long or double or JinjaUndefined or JinjaNamespace or IJinjaCallable: return v;
            case int i: return (long)i;
            case short s: return (long)s;
            case byte b: return (long)b;
            case uint u: return (long)u;
            case float f: return (double)f;
            case decimal m: return (double)m;
            case JsonElement e: return FromJson(e, depth);
            case System.Text.Json.Nodes.JsonNode n: return FromJson(JsonSerializer.SerializeToElement(n));
            case System.Collections.IDictionary d:
            {
                var r = new Dictionary<string, object?>(StringComparer.Ordinal);
                foreach (System.Collections.DictionaryEntry kv in d) r[Str(FromObject(kv.Key, depth + 1))] = FromObject(kv.Value, depth + 1);
                return r;
            }
            case IEnumerable<KeyValuePair<string, object?>> kvs:
            {
                var r = new Dictionary<string, object?>(StringComparer.Ordinal);
                foreach (var kv in kvs) r[kv.Key] = FromObject(kv.Value, depth + 1);
                return r;
            }
            case IEnumerable<KeyValuePair<string, string>> kvs2:
            {
                var r = new Dictionary<string, object?>(StringComparer.Ordinal);
                foreach (var kv in kvs2) r[kv.Key] = kv.Value;
                return r;
            }
            case System.Collections.IEnumerable items:
            {
                var r = new List<object?>();
                foreach (var x in items) r.Add(FromObject(x, depth + 1));
                return r;
            }
            default: return FromJson(JsonSerializer.SerializeToElement(v));
        }
    }

    public static object? FromJson(JsonElement e) => FromJson(e, 0);

    private static object? FromJson(JsonElement e, int depth)
    {
        JinjaLimits.Deeper(depth);
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
            {
                var d = new Dictionary<string, object?>(StringComparer.Ordinal);
                foreach (var p in e.EnumerateObject()) d[p.Name] = FromJson(p.Value, depth + 1);
                return d;
            }
            case JsonValueKind.Array: return e.EnumerateArray().Select(x => FromJson(x, depth + 1)).ToList();
            case JsonValueKind.String: return e.GetString();
            case JsonValueKind.Number: return e.TryGetInt64(out long l) ? (object)l : e.GetDouble();
            case JsonValueKind.True: return true;
            case JsonValueKind.False: return false;
            default: return null;
        }
    }
}

/// <summary>A template runtime error (becomes an <see cref="LlmArchInputException"/> naming the template line).</summary>
internal sealed class JinjaError(string message) : Exception(message);
