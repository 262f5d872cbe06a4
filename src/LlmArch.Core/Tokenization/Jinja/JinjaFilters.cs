using System.Globalization;
using System.Text;

namespace LlmArch.Tokenization.Jinja;

/// <summary>Built-in filters and tests (Jinja2's, with transformers' <c>tojson</c>).</summary>
internal static class JinjaFilters
{
    private delegate object? Filter(JinjaContext ctx, object? v, Args a);

    /// <summary>Positional and keyword arguments of a filter or method call.</summary>
    internal sealed class Args(List<object?> pos, Dictionary<string, object?> kw)
    {
        public int Count => pos.Count;
        public List<object?> Positional => pos;

        public object? Get(int index, string name, object? fallback = null)
        {
            if (index < pos.Count) return pos[index];
            return kw.TryGetValue(name, out var v) ? v : fallback;
        }

        public bool Has(int index, string name) => index < pos.Count || kw.ContainsKey(name);
    }

    private static readonly Dictionary<string, Filter> Filters = new(StringComparer.Ordinal)
    {
        ["abs"] = (_, v, _) => Num(v, "abs") switch { double d => (object)Math.Abs(d), long l => Math.Abs(l), var x => x },
        ["attr"] = (_, v, a) => JinjaOps.GetAttr(v, Py.Str(a.Get(0, "name"))),
        ["batch"] = (_, v, a) => Batch(v, (int)Py.ToLong(a.Get(0, "linecount")), a.Get(1, "fill_with", Py.Undefined)),
        ["capitalize"] = (_, v, _) => Capitalize(Py.Str(v)),
        ["center"] = (_, v, a) => Center(Py.Str(v), JinjaLimits.Size(Py.ToLong(a.Get(0, "width", 80L)), "center width")),
        ["count"] = (_, v, _) => Length(v),
        ["d"] = Default,
        ["default"] = Default,
        ["dictsort"] = DictSort,
        ["e"] = (_, v, _) => Escape(Py.Str(v)),
        ["escape"] = (_, v, _) => Escape(Py.Str(v)),
        ["first"] = (_, v, _) => Py.Iterate(v) is { Count: > 0 } l ? l[0] : new JinjaUndefined("first"),
        ["float"] = (_, v, a) => ToFloat(v, a.Get(0, "default", 0.0)),
        ["format"] = (_, v, a) => JinjaOps.Binary("%", Py.Str(v), new JinjaTuple(a.Positional)),
        ["forceescape"] = (_, v, _) => Escape(Py.Str(v)),
        ["indent"] = Indent,
        ["int"] = (_, v, a) => ToInt(v, a.Get(0, "default", 0L)),
        ["items"] = (_, v, _) => v is Dictionary<string, object?> d
            ? d.Select(kv => (object?)new JinjaTuple([kv.Key, kv.Value])).ToList()
            : v is JinjaUndefined ? new List<object?>() : throw new JinjaError($"items filter needs a mapping, got {Py.TypeName(v)}"),
        ["join"] = Join,
        ["last"] = (_, v, _) => Py.Iterate(v) is { Count: > 0 } l ? l[^1] : new JinjaUndefined("last"),
        ["length"] = (_, v, _) => Length(v),
        ["list"] = (_, v, _) => Py.Iterate(v).ToList(),
        ["lower"] = (_, v, _) => Py.Str(v).ToLowerInvariant(),
        ["map"] = Map,
        ["max"] = (_, v, a) => MinMax(v, a, max: true),
        ["min"] = (_, v, a) => MinMax(v, a, max: false),
        ["pprint"] = (_, v, _) => Py.Repr(v),
        ["reject"] = (ctx, v, a) => Select(ctx, v, a, attr: false, keep: false),
        ["rejectattr"] = (ctx, v, a) => Select(ctx, v, a, attr: true, keep: false),
        ["replace"] = (_, v, a) => JinjaMethods.Replace(Py.Str(v), Py.Str(a.Get(0, "old")), Py.Str(a.Get(1, "new")), a.Get(2, "count")),
        ["reverse"] = (_, v, _) => v is string s ? string.Concat(Py.TextElements(s).Cast<string>().Reverse()) : Enumerable.Reverse(Py.Iterate(v)).ToList(),
        ["round"] = Round,
        ["safe"] = (_, v, _) => v,
        ["select"] = (ctx, v, a) => Select(ctx, v, a, attr: false, keep: true),
        ["selectattr"] = (ctx, v, a) => Select(ctx, v, a, attr: true, keep: true),
        ["sort"] = Sort,
        ["string"] = (_, v, _) => Py.Str(v),
        ["striptags"] = (_, v, _) => System.Text.RegularExpressions.Regex.Replace(Py.Str(v), "<[^>]*>", ""),
        ["sum"] = Sum,
        ["title"] = (_, v, _) => JinjaMethods.Title(Py.Str(v)),
        ["tojson"] = (_, v, a) => PyJson.Dumps(v, a.Get(1, "indent"), Py.Truthy(a.Get(3, "sort_keys", false)),
            a.Get(2, "separators"), Py.Truthy(a.Get(0, "ensure_ascii", false))),
        ["trim"] = (_, v, a) => JinjaMethods.Strip(Py.Str(v), a.Get(0, "chars"), true, true),
        ["truncate"] = Truncate,
        ["unique"] = (_, v, _) => Unique(Py.Iterate(v)),
        ["upper"] = (_, v, _) => Py.Str(v).ToUpperInvariant(),
        ["wordcount"] = (_, v, _) => (long)Py.Str(v).Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Length,
    };

    public static bool IsFilter(string name) => Filters.ContainsKey(name);

    public static object? Apply(JinjaContext ctx, string name, object? v, List<object?> args, Dictionary<string, object?> kwargs)
    {
        if (!Filters.TryGetValue(name, out var f)) throw new JinjaError($"unknown filter '{name}'");
        return f(ctx, v, new Args(args, kwargs));
    }

    private static object? Num(object? v, string filter) =>
        v is long or double ? v : v is bool b ? (b ? 1L : 0L) : throw new JinjaError($"{filter} filter needs a number, got {Py.TypeName(v)}");

    private static object? Default(JinjaContext ctx, object? v, Args a)
    {
        bool boolean = Py.Truthy(a.Get(1, "boolean", false));
        bool useDefault = v is JinjaUndefined || (boolean && !Py.Truthy(v));
        return useDefault ? a.Get(0, "default_value", "") : v;
    }

    private static long Length(object? v) => v switch
    {
        string s => Py.TextElements(s).Count,
        List<object?> l => l.Count,
        Dictionary<string, object?> d => d.Count,
        JinjaUndefined => 0,
        _ => throw new JinjaError($"object of type '{Py.TypeName(v)}' has no len()"),
    };

    private static string Capitalize(string s) =>
        s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    private static string Center(string s, int width)
    {
        if (s.Length >= width) return s;
        int total = width - s.Length, left = total / 2 + (total & width & 1);
        return new string(' ', left) + s + new string(' ', total - left);
    }

    private static string Escape(string s) => s.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;")
        .Replace("\"", "&#34;").Replace("'", "&#39;");

    private static object? ToFloat(object? v, object? fallback)
    {
        return v switch
        {
            double d => d,
            long l => (double)l,
            bool b => b ? 1.0 : 0.0,
            string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double d) => d,
            _ => fallback,
        };
    }

    private static object? ToInt(object? v, object? fallback)
    {
        return v switch
        {
            long l => l,
            double d => (long)Math.Truncate(d),
            bool b => b ? 1L : 0L,
            string s when long.TryParse(s.Trim().Replace("_", ""), NumberStyles.Integer, CultureInfo.InvariantCulture, out long l) => l,
            string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double d) => (long)Math.Truncate(d),
            _ => fallback,
        };
    }

    private static object? Indent(JinjaContext ctx, object? v, Args a)
    {
        object? w = a.Get(0, "width", 4L);
        string pad = w is string ws ? ws : new string(' ', JinjaLimits.Size(Py.ToLong(w), "indent width", 4096));
        bool first = Py.Truthy(a.Get(1, "first", false)), blank = Py.Truthy(a.Get(2, "blank", false));
        string s = Py.Str(v);
        var lines = s.Split('\n');
        var sb = new StringBuilder();
        for (int i = 0; i < lines.Length; i++)
        {
            if (i > 0) sb.Append('\n');
            bool indent = (i > 0 || first) && (blank || lines[i].Trim().Length > 0);
            if (indent) sb.Append(pad);
            sb.Append(lines[i]);
        }
        return sb.ToString();
    }

    private static object? Join(JinjaContext ctx, object? v, Args a)
    {
        string sep = Py.Str(a.Get(0, "d", ""));
        var attr = a.Get(1, "attribute");
        var sb = new StringBuilder();
        bool first = true;
        foreach (var x in Py.Iterate(v))
        {
            if (!first) sb.Append(sep);
            first = false;
            sb.Append(Py.Str(attr is null ? x : AttrPath(x, attr)));
            if (sb.Length > JinjaLimits.MaxString) throw JinjaLimits.TooLong("the joined string", sb.Length);
        }
        return sb.ToString();
    }

    /// <summary>Attribute lookup by "a.b" path or integer index, as map/sort/selectattr take it.</summary>
    private static object? AttrPath(object? x, object? attr)
    {
        if (attr is long i) return JinjaOps.GetItem(x, i);
        foreach (var part in Py.Str(attr).Split('.'))
            x = long.TryParse(part, out long idx) ? JinjaOps.GetItem(x, idx) : JinjaOps.GetItem(x, part);
        return x;
    }

    private static object? Map(JinjaContext ctx, object? v, Args a)
    {
        var items = Py.Iterate(v);
        if (a.Has(99, "attribute"))
        {
            var attr = a.Get(99, "attribute");
            var dflt = a.Get(99, "default", Py.Undefined);
            return items.Select(x => AttrPath(x, attr) is JinjaUndefined && dflt is not JinjaUndefined ? dflt : AttrPath(x, attr)).ToList();
        }
        if (a.Count == 0) throw new JinjaError("map needs a filter name or attribute=");
        string filter = Py.Str(a.Positional[0]);
        var rest = a.Positional.Skip(1).ToList();
        return items.Select(x => Apply(ctx, filter, x, rest, new Dictionary<string, object?>())).ToList();
    }

    private static object? MinMax(object? v, Args a, bool max)
    {
        var items = Py.Iterate(v);
        if (items.Count == 0) return new JinjaUndefined(max ? "max" : "min");
        var attr = a.Get(1, "attribute");
        bool cs = Py.Truthy(a.Get(0, "case_sensitive", false));
        object? Key(object? x) { var k = attr is null ? x : AttrPath(x, attr); return !cs && k is string s ? s.ToLowerInvariant() : k; }
        var best = items[0];
        foreach (var x in items.Skip(1))
        {
            int c = Py.Compare(Key(x), Key(best));
            if (max ? c > 0 : c < 0) best = x;
        }
        return best;
    }

    private static object? Select(JinjaContext ctx, object? v, Args a, bool attr, bool keep)
    {
        var items = Py.Iterate(v);
        var pos = a.Positional;
        int k = 0;
        object? attrName = attr ? (pos.Count > 0 ? pos[k++] : throw new JinjaError("selectattr/rejectattr need an attribute name")) : null;
        string? test = pos.Count > k ? Py.Str(pos[k++]) : null;
        var testArgs = pos.Skip(k).ToList();
        if (test is not null && !IsTest(test)) throw new JinjaError($"unknown test '{test}'");
        var r = new List<object?>();
        foreach (var x in items)
        {
            var val = attr ? AttrPath(x, attrName) : x;
            bool ok = test is null ? Py.Truthy(val) : Test(ctx, test, val, testArgs);
            if (ok == keep) r.Add(x);
        }
        return r;
    }

    private static object? Round(JinjaContext ctx, object? v, Args a)
    {
        int precision = (int)Py.ToLong(a.Get(0, "precision", 0L));
        string method = Py.Str(a.Get(1, "method", "common"));
        double d = Py.ToDouble(Num(v, "round"));
        double m = Math.Pow(10, precision);
        return method switch
        {
            "common" => Math.Round(d, Math.Clamp(precision, 0, 15), MidpointRounding.ToEven),
            "ceil" => Math.Ceiling(d * m) / m,
            "floor" => Math.Floor(d * m) / m,
            _ => throw new JinjaError("round method must be 'common', 'ceil' or 'floor'"),
        };
    }

    private static object? Sort(JinjaContext ctx, object? v, Args a)
    {
        bool reverse = Py.Truthy(a.Get(0, "reverse", false));
        bool cs = Py.Truthy(a.Get(1, "case_sensitive", false));
        var attr = a.Get(2, "attribute");
        object? Key(object? x) { var k = attr is null ? x : AttrPath(x, attr); return !cs && k is string s ? s.ToLowerInvariant() : k; }
        var items = Py.Iterate(v).ToList();
        var sorted = items.Select((x, i) => (x, i)).ToList();
        sorted.Sort((p, q) => { int c = Py.Compare(Key(p.x), Key(q.x)); if (reverse) c = -c; return c != 0 ? c : p.i.CompareTo(q.i); });
        return sorted.Select(p => p.x).ToList();
    }

    private static object? DictSort(JinjaContext ctx, object? v, Args a)
    {
        if (v is not Dictionary<string, object?> d) throw new JinjaError($"dictsort needs a mapping, got {Py.TypeName(v)}");
        bool cs = Py.Truthy(a.Get(0, "case_sensitive", false));
        bool byValue = Py.Str(a.Get(1, "by", "key")) == "value";
        bool reverse = Py.Truthy(a.Get(2, "reverse", false));
        object? Key(KeyValuePair<string, object?> kv) { var k = byValue ? kv.Value : kv.Key; return !cs && k is string s ? s.ToLowerInvariant() : k; }
        var items = d.ToList();
        items.Sort((p, q) => { int c = Py.Compare(Key(p), Key(q)); return reverse ? -c : c; });
        return items.Select(kv => (object?)new JinjaTuple([kv.Key, kv.Value])).ToList();
    }

    private static object? Sum(JinjaContext ctx, object? v, Args a)
    {
        var attr = a.Get(0, "attribute");
        object? total = a.Get(1, "start", 0L);
        foreach (var x in Py.Iterate(v)) total = JinjaOps.Binary("+", total, attr is null ? x : AttrPath(x, attr));
        return total;
    }

    private static object? Truncate(JinjaContext ctx, object? v, Args a)
    {
        string s = Py.Str(v);
        int length = (int)Py.ToLong(a.Get(0, "length", 255L));
        bool killwords = Py.Truthy(a.Get(1, "killwords", false));
        string end = Py.Str(a.Get(2, "end", "..."));
        int leeway = (int)Py.ToLong(a.Get(3, "leeway", 5L));
        if (s.Length <= length + leeway) return s;
        if (killwords) return s[..Math.Max(0, length - end.Length)] + end;
        string cut = s[..Math.Max(0, length - end.Length)];
        int sp = cut.LastIndexOf(' ');
        return (sp >= 0 ? cut[..sp] : cut) + end;
    }

    private static List<object?> Unique(List<object?> items)
    {
        var r = new List<object?>();
        foreach (var x in items)
        {
            var key = x is string s ? s.ToLowerInvariant() : x;
            if (!r.Any(y => Py.Eq(y is string ys ? ys.ToLowerInvariant() : y, key))) r.Add(x);
        }
        return r;
    }

    private static List<object?> Batch(object? v, int n, object? fill)
    {
        if (n <= 0) throw new JinjaError("batch size must be positive");
        var items = Py.Iterate(v);
        var r = new List<object?>();
        for (int i = 0; i < items.Count; i += n)
        {
            var chunk = items.Skip(i).Take(n).ToList();
            if (chunk.Count < n && fill is not JinjaUndefined) while (chunk.Count < n) chunk.Add(fill);
            r.Add(chunk);
        }
        return r;
    }

    // ---------------------------------------------------------------- tests

    private delegate bool TestFn(object? v, List<object?> a);

    private static readonly Dictionary<string, TestFn> Tests = new(StringComparer.Ordinal)
    {
        ["boolean"] = (v, _) => v is bool,
        ["callable"] = (v, _) => v is IJinjaCallable,
        ["defined"] = (v, _) => v is not JinjaUndefined,
        ["divisibleby"] = (v, a) => Py.ToLong(v) % Py.ToLong(Arg(a, 0, "divisibleby")) == 0,
        ["eq"] = (v, a) => Py.Eq(v, Arg(a, 0, "eq")),
        ["equalto"] = (v, a) => Py.Eq(v, Arg(a, 0, "equalto")),
        ["=="] = (v, a) => Py.Eq(v, Arg(a, 0, "==")),
        ["escaped"] = (_, _) => false,
        ["even"] = (v, _) => Py.ToLong(v) % 2 == 0,
        ["false"] = (v, _) => v is false,
        ["filter"] = (v, _) => v is string s && IsFilter(s),
        ["float"] = (v, _) => v is double,
        ["ge"] = (v, a) => Py.Compare(v, Arg(a, 0, "ge")) >= 0,
        [">="] = (v, a) => Py.Compare(v, Arg(a, 0, ">=")) >= 0,
        ["gt"] = (v, a) => Py.Compare(v, Arg(a, 0, "gt")) > 0,
        [">"] = (v, a) => Py.Compare(v, Arg(a, 0, ">")) > 0,
        ["greaterthan"] = (v, a) => Py.Compare(v, Arg(a, 0, "greaterthan")) > 0,
        ["in"] = (v, a) => Py.Contains(Arg(a, 0, "in"), v),
        ["integer"] = (v, _) => v is long,
        ["iterable"] = (v, _) => v is string or List<object?> or Dictionary<string, object?>,
        ["le"] = (v, a) => Py.Compare(v, Arg(a, 0, "le")) <= 0,
        ["<="] = (v, a) => Py.Compare(v, Arg(a, 0, "<=")) <= 0,
        ["lower"] = (v, _) => v is string s && s == s.ToLowerInvariant(),
        ["lt"] = (v, a) => Py.Compare(v, Arg(a, 0, "lt")) < 0,
        ["<"] = (v, a) => Py.Compare(v, Arg(a, 0, "<")) < 0,
        ["lessthan"] = (v, a) => Py.Compare(v, Arg(a, 0, "lessthan")) < 0,
        ["mapping"] = (v, _) => v is Dictionary<string, object?>,
        ["ne"] = (v, a) => !Py.Eq(v, Arg(a, 0, "ne")),
        ["!="] = (v, a) => !Py.Eq(v, Arg(a, 0, "!=")),
        ["none"] = (v, _) => v is null,
        ["number"] = (v, _) => v is long or double or bool,
        ["odd"] = (v, _) => Py.ToLong(v) % 2 != 0,
        ["sameas"] = (v, a) => v is null ? Arg(a, 0, "sameas") is null : v is bool b ? Arg(a, 0, "sameas") is bool c && b == c : ReferenceEquals(v, Arg(a, 0, "sameas")),
        ["sequence"] = (v, _) => v is string or List<object?> or Dictionary<string, object?>,
        ["string"] = (v, _) => v is string,
        ["test"] = (v, _) => v is string s && IsTest(s),
        ["true"] = (v, _) => v is true,
        ["undefined"] = (v, _) => v is JinjaUndefined,
        ["upper"] = (v, _) => v is string s && s == s.ToUpperInvariant(),
    };

    private static object? Arg(List<object?> a, int i, string test) =>
        i < a.Count ? a[i] : throw new JinjaError($"test '{test}' needs an argument");

    public static bool IsTest(string name) => Tests.ContainsKey(name);

    public static bool Test(JinjaContext ctx, string name, object? v, List<object?> args)
    {
        if (!Tests.TryGetValue(name, out var t)) throw new JinjaError($"unknown test '{name}'");
        return t(v, args);
    }
}
