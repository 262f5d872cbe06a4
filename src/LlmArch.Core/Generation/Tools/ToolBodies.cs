using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace LlmArch.Generation.Tools;

/// <summary>
/// The bodies of each family's tool blocks, as the vendors' templates render them (and so as the models emit them).
/// Each returns (name, arguments as compact JSON) per call, or null when the body is not a well-formed call.
/// </summary>
public static class ToolBodies
{
    internal static readonly JsonSerializerOptions Compact = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Compact JSON text of an arguments value: an object, or a string that holds one.</summary>
    public static string? ArgumentsText(JsonNode? args)
    {
        if (args is null) return "{}";
        if (args is JsonValue v && v.TryGetValue(out string? s))
        {
            try { return JsonNode.Parse(s) is JsonObject o ? o.ToJsonString(Compact) : null; }
            catch (JsonException) { return null; }
        }
        return args is JsonObject obj ? obj.ToJsonString(Compact) : null;
    }

    /// <summary>Parses the first JSON value of <paramref name="s"/> (trailing text after it is allowed); null if none.</summary>
    private static JsonNode? ParseLeadingJson(string s, out int consumed)
    {
        consumed = 0;
        var bytes = System.Text.Encoding.UTF8.GetBytes(s);
        var reader = new Utf8JsonReader(bytes, new JsonReaderOptions { AllowTrailingCommas = false, CommentHandling = JsonCommentHandling.Disallow });
        try
        {
            var node = JsonNode.Parse(ref reader);
            consumed = System.Text.Encoding.UTF8.GetCharCount(bytes, 0, (int)reader.BytesConsumed);
            return node;
        }
        catch (JsonException) { return null; }
    }

    private static (string, string)? NameAndArgs(JsonNode? n)
    {
        if (n is not JsonObject o || o["name"] is not JsonValue nv || !nv.TryGetValue(out string? name) || name.Length == 0) return null;
        var args = ArgumentsText(o["arguments"] ?? o["parameters"]);
        return args is null ? null : (name, args);
    }

    /// <summary>Qwen3 / Qwen2.5 / Hermes: <c>&lt;tool_call&gt;\n{"name": ..., "arguments": {...}}\n&lt;/tool_call&gt;</c>.</summary>
    public static List<(string, string)>? Hermes(string body)
    {
        var n = ParseLeadingJson(body.Trim(), out int used);
        if (used != body.Trim().Length) return null;
        return NameAndArgs(n) is { } c ? [c] : null;
    }

    /// <summary>Llama 3.1-3.3: <c>{"name": ..., "parameters": {...}}</c> (several joined by ';'), alone or after <c>&lt;|python_tag|&gt;</c>.</summary>
    public static List<(string, string)>? Llama(string body)
    {
        var calls = new List<(string, string)>();
        string rest = body.Trim();
        while (rest.Length > 0)
        {
            var n = ParseLeadingJson(rest, out int used);
            if (NameAndArgs(n) is not { } c) return null;
            calls.Add(c);
            rest = rest[used..].TrimStart();
            if (rest.StartsWith(';')) rest = rest[1..].TrimStart();
            else if (rest.Length > 0) return null;
        }
        return calls.Count > 0 ? calls : null;
    }

    /// <summary>Mistral: <c>[TOOL_CALLS][{"name":..., "arguments":{...}}, ...]</c> (v3 tokenizers) or <c>[TOOL_CALLS]name[CALL_ID]id[ARGS]{...}</c> (v11+).</summary>
    public static List<(string, string)>? Mistral(string body)
    {
        var calls = new List<(string, string)>();
        foreach (var raw in body.Split("[TOOL_CALLS]"))
        {
            string part = raw.Trim();
            if (part.Length == 0) continue;
            if (part[0] == '[')
            {
                if (ParseLeadingJson(part, out int used) is not JsonArray arr || part[used..].Trim().Length > 0) return null;
                foreach (var item in arr) if (NameAndArgs(item) is { } c) calls.Add(c); else return null;
                continue;
            }
            int a = part.IndexOf("[ARGS]", StringComparison.Ordinal);
            if (a <= 0) return null;
            string name = part[..a];
            int cid = name.IndexOf("[CALL_ID]", StringComparison.Ordinal);
            if (cid >= 0) name = name[..cid];
            string argText = part[(a + 6)..].Trim();
            var args = ParseLeadingJson(argText, out int n2);
            if (n2 != argText.Length || ArgumentsText(args) is not { } at || name.Trim().Length == 0) return null;
            calls.Add((name.Trim(), at));
        }
        return calls.Count > 0 ? calls : null;
    }

    /// <summary>DeepSeek-V3 (<c>function&lt;｜tool▁sep｜&gt;name\n```json\n{...}\n```</c>) and V3.1+ (<c>name&lt;｜tool▁sep｜&gt;{...}</c>) calls inside the calls section.</summary>
    public static List<(string, string)>? DeepSeek(string body)
    {
        const string begin = "<｜tool▁call▁begin｜>", end = "<｜tool▁call▁end｜>", sep = "<｜tool▁sep｜>";
        var calls = new List<(string, string)>();
        int pos = 0;
        while (true)
        {
            int b = body.IndexOf(begin, pos, StringComparison.Ordinal);
            if (b < 0) break;
            int e = body.IndexOf(end, b, StringComparison.Ordinal);
            string call = e < 0 ? body[(b + begin.Length)..] : body[(b + begin.Length)..e];
            pos = e < 0 ? body.Length : e + end.Length;
            int s = call.IndexOf(sep, StringComparison.Ordinal);
            if (s < 0) return null;
            string left = call[..s], right = call[(s + sep.Length)..];
            string name, argText;
            if (left == "function")
            {
                int nl = right.IndexOf('\n');
                if (nl < 0) return null;
                name = right[..nl].Trim();
                argText = right[(nl + 1)..].Trim();
                if (argText.StartsWith("```json", StringComparison.Ordinal)) argText = argText[7..];
                else if (argText.StartsWith("```", StringComparison.Ordinal)) argText = argText[3..];
                if (argText.EndsWith("```", StringComparison.Ordinal)) argText = argText[..^3];
                argText = argText.Trim();
            }
            else { name = left.Trim(); argText = right.Trim(); }
            var args = ParseLeadingJson(argText, out int used);
            if (used != argText.Length || ArgumentsText(args) is not { } at || name.Length == 0) return null;
            calls.Add((name, at));
        }
        return calls.Count > 0 ? calls : null;
    }

    /// <summary>Kimi K2: <c>&lt;|tool_call_begin|&gt;functions.name:0&lt;|tool_call_argument_begin|&gt;{...}&lt;|tool_call_end|&gt;</c> inside the calls section.</summary>
    public static List<(string, string)>? Kimi(string body)
    {
        const string begin = "<|tool_call_begin|>", argb = "<|tool_call_argument_begin|>", end = "<|tool_call_end|>";
        var calls = new List<(string, string)>();
        int pos = 0;
        while (true)
        {
            int b = body.IndexOf(begin, pos, StringComparison.Ordinal);
            if (b < 0) break;
            int e = body.IndexOf(end, b, StringComparison.Ordinal);
            string call = e < 0 ? body[(b + begin.Length)..] : body[(b + begin.Length)..e];
            pos = e < 0 ? body.Length : e + end.Length;
            int a = call.IndexOf(argb, StringComparison.Ordinal);
            if (a < 0) return null;
            string id = call[..a].Trim();
            string name = id.StartsWith("functions.", StringComparison.Ordinal) ? id[10..] : id;
            int colon = name.LastIndexOf(':');
            if (colon > 0) name = name[..colon];
            string argText = call[(a + argb.Length)..].Trim();
            var args = ParseLeadingJson(argText, out int used);
            if (used != argText.Length || ArgumentsText(args) is not { } at || name.Length == 0) return null;
            calls.Add((name, at));
        }
        return calls.Count > 0 ? calls : null;
    }

    /// <summary>Qwen3-Coder / Qwen3.5: <c>&lt;function=name&gt;&lt;parameter=p&gt;\nvalue\n&lt;/parameter&gt;&lt;/function&gt;</c>.</summary>
    public static ToolBlockParser QwenXml(IReadOnlyList<ToolSpec>? tools) => body =>
    {
        const string fOpen = "<function=", fClose = "</function>", pOpen = "<parameter=", pClose = "</parameter>";
        int f = body.IndexOf(fOpen, StringComparison.Ordinal);
        if (f < 0) return null;
        int gt = body.IndexOf('>', f);
        if (gt < 0) return null;
        string name = body[(f + fOpen.Length)..gt].Trim();
        int fe = body.IndexOf(fClose, gt, StringComparison.Ordinal);
        string inner = fe < 0 ? body[(gt + 1)..] : body[(gt + 1)..fe];
        var args = new List<(string, string)>();
        int pos = 0;
        while (true)
        {
            int p = inner.IndexOf(pOpen, pos, StringComparison.Ordinal);
            if (p < 0) break;
            int pg = inner.IndexOf('>', p);
            if (pg < 0) return null;
            string key = inner[(p + pOpen.Length)..pg].Trim();
            int pe = inner.IndexOf(pClose, pg, StringComparison.Ordinal);
            // A parameter runs to its closing tag, or (when the model omitted it) to the next parameter.
            int next = inner.IndexOf(pOpen, pg, StringComparison.Ordinal);
            int stop = pe >= 0 && (next < 0 || pe < next) ? pe : next >= 0 ? next : inner.Length;
            string value = inner[(pg + 1)..stop];
            if (value.StartsWith('\n')) value = value[1..];
            if (value.EndsWith('\n')) value = value[..^1];
            args.Add((key, value));
            pos = stop == pe ? pe + pClose.Length : stop;
        }
        return name.Length == 0 ? null : [(name, TypedArguments(tools, name, args))];
    };

    /// <summary>GLM-4.5 / 4.6: <c>name\n&lt;arg_key&gt;k&lt;/arg_key&gt;\n&lt;arg_value&gt;v&lt;/arg_value&gt;</c>.</summary>
    public static ToolBlockParser Glm(IReadOnlyList<ToolSpec>? tools) => body =>
    {
        int k = body.IndexOf("<arg_key>", StringComparison.Ordinal);
        string name = (k < 0 ? body : body[..k]).Trim();
        if (name.Length == 0 || name.Contains('<') || name.Contains('\n')) return null;
        var args = new List<(string, string)>();
        int pos = k < 0 ? body.Length : k;
        while (true)
        {
            int a = body.IndexOf("<arg_key>", pos, StringComparison.Ordinal);
            if (a < 0) break;
            int ae = body.IndexOf("</arg_key>", a, StringComparison.Ordinal);
            int v = body.IndexOf("<arg_value>", a, StringComparison.Ordinal);
            int ve = v < 0 ? -1 : body.IndexOf("</arg_value>", v, StringComparison.Ordinal);
            if (ae < 0 || v < 0 || ve < 0 || v < ae) return null;
            args.Add((body[(a + 9)..ae].Trim(), body[(v + 11)..ve]));
            pos = ve + 12;
        }
        return [(name, TypedArguments(tools, name, args))];
    };

    /// <summary>MiniMax-M2: <c>&lt;invoke name="f"&gt;&lt;parameter name="k"&gt;v&lt;/parameter&gt;&lt;/invoke&gt;</c>, one or more per block.</summary>
    public static ToolBlockParser MiniMax(IReadOnlyList<ToolSpec>? tools) => body =>
    {
        var calls = new List<(string, string)>();
        int pos = 0;
        while (true)
        {
            int i = body.IndexOf("<invoke name=\"", pos, StringComparison.Ordinal);
            if (i < 0) break;
            int q = body.IndexOf("\">", i + 14, StringComparison.Ordinal);
            if (q < 0) return null;
            string name = body[(i + 14)..q];
            int ie = body.IndexOf("</invoke>", q, StringComparison.Ordinal);
            string inner = ie < 0 ? body[(q + 2)..] : body[(q + 2)..ie];
            pos = ie < 0 ? body.Length : ie + 9;
            var args = new List<(string, string)>();
            int p = 0;
            while (true)
            {
                int a = inner.IndexOf("<parameter name=\"", p, StringComparison.Ordinal);
                if (a < 0) break;
                int aq = inner.IndexOf("\">", a + 17, StringComparison.Ordinal);
                int ae = aq < 0 ? -1 : inner.IndexOf("</parameter>", aq, StringComparison.Ordinal);
                if (aq < 0 || ae < 0) return null;
                args.Add((inner[(a + 17)..aq], inner[(aq + 2)..ae]));
                p = ae + 12;
            }
            calls.Add((name, TypedArguments(tools, name, args)));
        }
        return calls.Count > 0 ? calls : null;
    };

    /// <summary>
    /// Builds the arguments object of an XML-style call: a parameter whose schema type is string stays text; any other
    /// is read as JSON (the templates render non-strings with tojson) and kept as text when it does not parse.
    /// </summary>
    public static string TypedArguments(IReadOnlyList<ToolSpec>? tools, string name, List<(string Key, string Value)> args)
    {
        var props = tools?.FirstOrDefault(t => t.Name == name)?.Parameters is { ValueKind: JsonValueKind.Object } p
                    && p.TryGetProperty("properties", out var pr) && pr.ValueKind == JsonValueKind.Object ? pr : (JsonElement?)null;
        var obj = new JsonObject();
        foreach (var (k, v) in args)
        {
            bool isString = true;
            if (props is { } ps && ps.TryGetProperty(k, out var ks) && ks.ValueKind == JsonValueKind.Object && ks.TryGetProperty("type", out var ty))
                isString = ty.ValueKind == JsonValueKind.String ? ty.GetString() == "string"
                    : ty.ValueKind == JsonValueKind.Array && ty.EnumerateArray().All(t => t.ValueKind == JsonValueKind.String && t.GetString() == "string");
            JsonNode? value = null;
            if (!isString)
            {
                try { value = JsonNode.Parse(v.Trim()); } catch (JsonException) { value = JsonValue.Create(v); }
            }
            else value = JsonValue.Create(v);
            obj[k] = value;
        }
        return obj.ToJsonString(Compact);
    }
}
