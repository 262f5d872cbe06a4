using System.Globalization;
using System.Text;

namespace LlmArch.Tokenization.Jinja;

/// <summary>Python methods of str, dict and list that templates call (<c>s.startswith(...)</c>, <c>d.items()</c>, ...).</summary>
internal static class JinjaMethods
{
    private delegate object? Method(object self, JinjaFilters.Args a);

    private static readonly Dictionary<string, Method> StrMethods = new(StringComparer.Ordinal)
    {
        ["startswith"] = (s, a) => AnyAffix(a.Get(0, "prefix"), p => ((string)s).StartsWith(p, StringComparison.Ordinal)),
        ["endswith"] = (s, a) => AnyAffix(a.Get(0, "suffix"), p => ((string)s).EndsWith(p, StringComparison.Ordinal)),
        ["split"] = (s, a) => Split((string)s, a.Get(0, "sep"), (int)Py.ToLong(a.Get(1, "maxsplit", -1L)), fromRight: false),
        ["rsplit"] = (s, a) => Split((string)s, a.Get(0, "sep"), (int)Py.ToLong(a.Get(1, "maxsplit", -1L)), fromRight: true),
        ["splitlines"] = (s, _) => ((string)s).ReplaceLineEndings("\n").TrimEnd('\n') is var t && t.Length == 0
            ? new List<object?>() : t.Split('\n').Cast<object?>().ToList(),
        ["strip"] = (s, a) => Strip((string)s, a.Get(0, "chars"), true, true),
        ["lstrip"] = (s, a) => Strip((string)s, a.Get(0, "chars"), true, false),
        ["rstrip"] = (s, a) => Strip((string)s, a.Get(0, "chars"), false, true),
        ["upper"] = (s, _) => ((string)s).ToUpperInvariant(),
        ["lower"] = (s, _) => ((string)s).ToLowerInvariant(),
        ["title"] = (s, _) => Title((string)s),
        ["capitalize"] = (s, _) => ((string)s) is { Length: > 0 } x ? char.ToUpperInvariant(x[0]) + x[1..].ToLowerInvariant() : "",
        ["replace"] = (s, a) => Replace((string)s, Py.Str(a.Get(0, "old")), Py.Str(a.Get(1, "new")), a.Get(2, "count")),
        ["find"] = (s, a) => (long)((string)s).IndexOf(Py.Str(a.Get(0, "sub")), StringComparison.Ordinal),
        ["rfind"] = (s, a) => (long)((string)s).LastIndexOf(Py.Str(a.Get(0, "sub")), StringComparison.Ordinal),
        ["index"] = (s, a) => ((string)s).IndexOf(Py.Str(a.Get(0, "sub")), StringComparison.Ordinal) is var i and >= 0
            ? (long)i : throw new JinjaError("substring not found"),
        ["count"] = (s, a) => CountOccurrences((string)s, Py.Str(a.Get(0, "sub"))),
        ["join"] = (s, a) => string.Join((string)s, Py.Iterate(a.Get(0, "iterable")).Select(Py.Str)),
        ["format"] = (s, a) => Format((string)s, a),
        ["isdigit"] = (s, _) => ((string)s).Length > 0 && ((string)s).All(char.IsDigit),
        ["isnumeric"] = (s, _) => ((string)s).Length > 0 && ((string)s).All(char.IsNumber),
        ["isalpha"] = (s, _) => ((string)s).Length > 0 && ((string)s).All(char.IsLetter),
        ["isalnum"] = (s, _) => ((string)s).Length > 0 && ((string)s).All(char.IsLetterOrDigit),
        ["isspace"] = (s, _) => ((string)s).Length > 0 && ((string)s).All(char.IsWhiteSpace),
        ["isupper"] = (s, _) => ((string)s).Any(char.IsLetter) && (string)s == ((string)s).ToUpperInvariant(),
        ["islower"] = (s, _) => ((string)s).Any(char.IsLetter) && (string)s == ((string)s).ToLowerInvariant(),
        ["removeprefix"] = (s, a) => Py.Str(a.Get(0, "prefix")) is var p && ((string)s).StartsWith(p, StringComparison.Ordinal) ? ((string)s)[p.Length..] : s,
        ["removesuffix"] = (s, a) => Py.Str(a.Get(0, "suffix")) is var p && p.Length > 0 && ((string)s).EndsWith(p, StringComparison.Ordinal) ? ((string)s)[..^p.Length] : s,
        ["zfill"] = (s, a) => ((string)s).PadLeft(JinjaLimits.Size(Py.ToLong(a.Get(0, "width")), "zfill width"), '0'),
        ["ljust"] = (s, a) => ((string)s).PadRight(JinjaLimits.Size(Py.ToLong(a.Get(0, "width")), "ljust width"), FillChar(a)),
        ["rjust"] = (s, a) => ((string)s).PadLeft(JinjaLimits.Size(Py.ToLong(a.Get(0, "width")), "rjust width"), FillChar(a)),
    };

    private static readonly Dictionary<string, Method> DictMethods = new(StringComparer.Ordinal)
    {
        ["get"] = (d, a) => ((Dictionary<string, object?>)d).TryGetValue(Py.Str(a.Get(0, "key")), out var v) ? v : a.Get(1, "default"),
        ["items"] = (d, _) => ((Dictionary<string, object?>)d).Select(kv => (object?)new JinjaTuple([kv.Key, kv.Value])).ToList(),
        ["keys"] = (d, _) => ((Dictionary<string, object?>)d).Keys.Cast<object?>().ToList(),
        ["values"] = (d, _) => ((Dictionary<string, object?>)d).Values.ToList(),
        ["pop"] = (d, a) => ((Dictionary<string, object?>)d).Remove(Py.Str(a.Get(0, "key")), out var v) ? v
            : a.Has(1, "default") ? a.Get(1, "default") : throw new JinjaError($"KeyError: {Py.Repr(a.Get(0, "key"))}"),
        ["update"] = (d, a) =>
        {
            var self = (Dictionary<string, object?>)d;
            if (a.Get(0, "other") is Dictionary<string, object?> o) foreach (var kv in o) self[kv.Key] = kv.Value;
            return null;
        },
        ["setdefault"] = (d, a) =>
        {
            var self = (Dictionary<string, object?>)d;
            string k = Py.Str(a.Get(0, "key"));
            if (!self.TryGetValue(k, out var v)) self[k] = v = a.Get(1, "default");
            return v;
        },
        ["copy"] = (d, _) => new Dictionary<string, object?>((Dictionary<string, object?>)d, StringComparer.Ordinal),
    };

    private static readonly Dictionary<string, Method> ListMethods = new(StringComparer.Ordinal)
    {
        ["append"] = (l, a) => { ((List<object?>)l).Add(a.Get(0, "item")); return null; },
        ["extend"] = (l, a) => { ((List<object?>)l).AddRange(Py.Iterate(a.Get(0, "iterable"))); return null; },
        ["insert"] = (l, a) =>
        {
            var list = (List<object?>)l;
            long i = Py.ToLong(a.Get(0, "index"));
            if (i < 0) i += list.Count;
            list.Insert((int)Math.Clamp(i, 0, list.Count), a.Get(1, "item"));
            return null;
        },
        ["pop"] = (l, a) =>
        {
            var list = (List<object?>)l;
            if (list.Count == 0) throw new JinjaError("pop from empty list");
            long i = Py.ToLong(a.Get(0, "index", -1L));
            if (i < 0) i += list.Count;
            if (i < 0 || i >= list.Count) throw new JinjaError("pop index out of range");
            var v = list[(int)i];
            list.RemoveAt((int)i);
            return v;
        },
        ["index"] = (l, a) => ((List<object?>)l).FindIndex(x => Py.Eq(x, a.Get(0, "item"))) is var i and >= 0 ? (long)i : throw new JinjaError("item is not in list"),
        ["count"] = (l, a) => (long)((List<object?>)l).Count(x => Py.Eq(x, a.Get(0, "item"))),
        ["remove"] = (l, a) =>
        {
            var list = (List<object?>)l;
            int i = list.FindIndex(x => Py.Eq(x, a.Get(0, "item")));
            if (i < 0) throw new JinjaError("list.remove(x): x not in list");
            list.RemoveAt(i);
            return null;
        },
        ["reverse"] = (l, _) => { ((List<object?>)l).Reverse(); return null; },
        ["copy"] = (l, _) => ((List<object?>)l).ToList(),
    };

    /// <summary>The bound method <paramref name="name"/> of <paramref name="obj"/>, or null when it has none.</summary>
    public static IJinjaCallable? Bind(object? obj, string name)
    {
        Dictionary<string, Method>? table = obj switch
        {
            string => StrMethods,
            Dictionary<string, object?> => DictMethods,
            List<object?> => ListMethods,
            _ => null,
        };
        if (table is null || !table.TryGetValue(name, out var m)) return null;
        return new JinjaFunction(name, (_, args, kwargs) => m(obj!, new JinjaFilters.Args(args, kwargs)));
    }

    private static char FillChar(JinjaFilters.Args a) =>
        Py.Str(a.Get(1, "fillchar", " ")) is { Length: 1 } f ? f[0] : throw new JinjaError("the fill character must be exactly one character long");

    private static bool AnyAffix(object? arg, Func<string, bool> test) => arg switch
    {
        string s => test(s),
        List<object?> l => l.Any(x => test(Py.Str(x))),
        _ => throw new JinjaError($"startswith/endswith need a string or tuple, got {Py.TypeName(arg)}"),
    };

    public static string Strip(string s, object? chars, bool left, bool right)
    {
        Func<char, bool> strip = chars is null or JinjaUndefined ? char.IsWhiteSpace : Py.Str(chars).Contains;
        int a = 0, b = s.Length;
        if (left) while (a < b && strip(s[a])) a++;
        if (right) while (b > a && strip(s[b - 1])) b--;
        return s[a..b];
    }

    public static string Replace(string s, string old, string @new, object? count)
    {
        long n = count is null or JinjaUndefined ? -1 : Py.ToLong(count);
        long hits = old.Length == 0 ? s.Length + 1L : CountOccurrences(s, old);
        if (n >= 0) hits = Math.Min(hits, n);
        long size = s.Length + hits * (@new.Length - old.Length);
        if (size > JinjaLimits.MaxString) throw JinjaLimits.TooLong("the replaced string", size);
        if (n < 0) return old.Length == 0 ? InsertEverywhere(s, @new) : s.Replace(old, @new, StringComparison.Ordinal);
        var sb = new StringBuilder();
        int pos = 0;
        for (long k = 0; k < n; k++)
        {
            int i = old.Length == 0 ? (pos <= s.Length ? pos : -1) : s.IndexOf(old, pos, StringComparison.Ordinal);
            if (i < 0) break;
            sb.Append(s, pos, i - pos).Append(@new);
            pos = i + old.Length;
            if (old.Length == 0) { if (pos < s.Length) sb.Append(s[pos]); pos++; }
        }
        if (pos < s.Length) sb.Append(s, pos, s.Length - pos);
        return sb.ToString();
    }

    private static string InsertEverywhere(string s, string ins)
    {
        var sb = new StringBuilder(ins);
        foreach (char c in s) sb.Append(c).Append(ins);
        return sb.ToString();
    }

    private static long CountOccurrences(string s, string sub)
    {
        if (sub.Length == 0) return s.Length + 1;
        long n = 0;
        for (int i = s.IndexOf(sub, StringComparison.Ordinal); i >= 0; i = s.IndexOf(sub, i + sub.Length, StringComparison.Ordinal)) n++;
        return n;
    }

    public static string Title(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool prevCased = false;
        foreach (char c in s)
        {
            sb.Append(prevCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c));
            prevCased = char.IsLetter(c);
        }
        return sb.ToString();
    }

    private static List<object?> Split(string s, object? sep, int maxsplit, bool fromRight)
    {
        var r = new List<object?>();
        if (sep is null or JinjaUndefined)
        {
            var words = s.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (maxsplit < 0 || words.Length <= maxsplit + 1) { r.AddRange(words); return r; }
            // Keep the unsplit remainder (with its inner whitespace) as the last (or first) item.
            if (!fromRight)
            {
                int pos = 0;
                for (int k = 0; k < maxsplit; k++)
                {
                    while (char.IsWhiteSpace(s[pos])) pos++;
                    int start = pos;
                    while (!char.IsWhiteSpace(s[pos])) pos++;
                    r.Add(s[start..pos]);
                }
                r.Add(s[pos..].TrimStart());
            }
            else
            {
                int pos = s.Length;
                var tail = new List<object?>();
                for (int k = 0; k < maxsplit; k++)
                {
                    while (char.IsWhiteSpace(s[pos - 1])) pos--;
                    int end = pos;
                    while (!char.IsWhiteSpace(s[pos - 1])) pos--;
                    tail.Insert(0, s[pos..end]);
                }
                r.Add(s[..pos].TrimEnd());
                r.AddRange(tail);
            }
            return r;
        }
        string sp = Py.Str(sep);
        if (sp.Length == 0) throw new JinjaError("empty separator");
        var parts = s.Split(sp);
        if (maxsplit < 0 || parts.Length <= maxsplit + 1) { r.AddRange(parts); return r; }
        if (!fromRight)
        {
            r.AddRange(parts.Take(maxsplit));
            r.Add(string.Join(sp, parts.Skip(maxsplit)));
        }
        else
        {
            r.Add(string.Join(sp, parts.Take(parts.Length - maxsplit)));
            r.AddRange(parts.Skip(parts.Length - maxsplit));
        }
        return r;
    }

    /// <summary>str.format with {}, {0}, {name} fields (format specs other than empty are applied as Python would for simple cases).</summary>
    private static string Format(string fmt, JinjaFilters.Args a)
    {
        var sb = new StringBuilder();
        int auto = 0;
        for (int i = 0; i < fmt.Length; i++)
        {
            char c = fmt[i];
            if (c == '{' && i + 1 < fmt.Length && fmt[i + 1] == '{') { sb.Append('{'); i++; continue; }
            if (c == '}' && i + 1 < fmt.Length && fmt[i + 1] == '}') { sb.Append('}'); i++; continue; }
            if (c != '{') { sb.Append(c); continue; }
            int close = fmt.IndexOf('}', i);
            if (close < 0) throw new JinjaError("single '{' encountered in format string");
            string field = fmt[(i + 1)..close];
            string spec = "";
            int colon = field.IndexOf(':');
            if (colon >= 0) { spec = field[(colon + 1)..]; field = field[..colon]; }
            object? v = field.Length == 0 ? a.Get(auto++, "\0")
                : int.TryParse(field, NumberStyles.None, CultureInfo.InvariantCulture, out int idx) ? a.Get(idx, "\0")
                : a.Get(int.MaxValue, field, new JinjaUndefined(field));
            sb.Append(ApplySpec(v, spec));
            i = close;
        }
        return sb.ToString();
    }

    private static string ApplySpec(object? v, string spec)
    {
        if (spec.Length == 0) return Py.Str(v);
        if (spec.EndsWith('f') && int.TryParse(spec.TrimStart('.').TrimEnd('f'), out int prec) && prec is >= 0 and <= 100)
            return Py.ToDouble(v).ToString("F" + prec, CultureInfo.InvariantCulture);
        if (spec == "d") return Py.ToLong(v).ToString(CultureInfo.InvariantCulture);
        return Py.Str(v);
    }
}
