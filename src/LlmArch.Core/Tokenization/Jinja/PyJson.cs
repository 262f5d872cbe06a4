using System.Globalization;
using System.Text;

namespace LlmArch.Tokenization.Jinja;

/// <summary>Python's <c>json.dumps</c> output format (what transformers' <c>tojson</c> filter produces).</summary>
internal static class PyJson
{
    public static string Dumps(object? v, object? indent, bool sortKeys, object? separators, bool ensureAscii)
    {
        string? ind = indent switch
        {
            null or JinjaUndefined => null,
            string s => s,
            _ => new string(' ', JinjaLimits.Size(Py.ToLong(indent), "tojson indent", 1024)),
        };
        string itemSep = ind is null ? ", " : ",", keySep = ": ";
        if (separators is List<object?> { Count: 2 } seps) { itemSep = Py.Str(seps[0]); keySep = Py.Str(seps[1]); }
        var sb = new StringBuilder();
        Write(sb, v, ind, 0, sortKeys, itemSep, keySep, ensureAscii);
        JinjaLimits.Charge(sb.Length);
        return sb.ToString();
    }

    private static void Write(StringBuilder sb, object? v, string? ind, int depth, bool sortKeys, string itemSep, string keySep, bool ascii)
    {
        // Shared lists can make the text exponentially longer than the value: check as it grows, and the depth.
        if (sb.Length > JinjaLimits.MaxString) throw JinjaLimits.TooLong("tojson output", sb.Length);
        JinjaLimits.Deeper(depth);
        switch (v)
        {
            case null or JinjaUndefined: sb.Append("null"); return;
            case bool b: sb.Append(b ? "true" : "false"); return;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); return;
            case double d:
                sb.Append(double.IsNaN(d) ? "NaN" : double.IsPositiveInfinity(d) ? "Infinity" : double.IsNegativeInfinity(d) ? "-Infinity" : Py.FloatRepr(d));
                return;
            case string s: WriteString(sb, s, ascii); return;
            case List<object?> list:
                if (list.Count == 0) { sb.Append("[]"); return; }
                sb.Append('[');
                for (int i = 0; i < list.Count; i++)
                {
                    if (i > 0) sb.Append(itemSep);
                    NewLine(sb, ind, depth + 1);
                    Write(sb, list[i], ind, depth + 1, sortKeys, itemSep, keySep, ascii);
                }
                NewLine(sb, ind, depth);
                sb.Append(']');
                return;
            case Dictionary<string, object?> dict:
                if (dict.Count == 0) { sb.Append("{}"); return; }
                sb.Append('{');
                IEnumerable<KeyValuePair<string, object?>> items = sortKeys ? dict.OrderBy(kv => kv.Key, StringComparer.Ordinal) : dict;
                bool first = true;
                foreach (var (k, val) in items)
                {
                    if (!first) sb.Append(itemSep);
                    first = false;
                    NewLine(sb, ind, depth + 1);
                    WriteString(sb, k, ascii);
                    sb.Append(keySep);
                    Write(sb, val, ind, depth + 1, sortKeys, itemSep, keySep, ascii);
                }
                NewLine(sb, ind, depth);
                sb.Append('}');
                return;
            case JinjaNamespace ns:
                Write(sb, ns.Attrs, ind, depth, sortKeys, itemSep, keySep, ascii);
                return;
            default:
                throw new JinjaError($"Object of type {Py.TypeName(v)} is not JSON serializable");
        }
    }

    private static void NewLine(StringBuilder sb, string? ind, int depth)
    {
        if (ind is null) return;
        sb.Append('\n');
        for (int i = 0; i < depth; i++) sb.Append(ind);
    }

    private static void WriteString(StringBuilder sb, string s, bool ascii)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20 || (ascii && c > 0x7F)) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}
