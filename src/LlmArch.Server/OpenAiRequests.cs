using System.Text.Json;
using LlmArch.Generation.Tools;

namespace LlmArch.Server;

/// <summary>An error answered in OpenAI's envelope <c>{"error":{"message","type","param","code"}}</c>.</summary>
public sealed class ApiError(int status, string message, string? param = null, string? code = null, string type = "invalid_request_error") : Exception(message)
{
    public int Status { get; } = status;
    public string Type { get; } = type;
    public string? Param { get; } = param;
    public string? Code { get; } = code;

    public static ApiError BadType(string param, string expected) => new(400, $"'{param}' must be {expected}", param, "invalid_type");
    public static ApiError BadValue(string param, string what) => new(400, $"'{param}' {what}", param, "invalid_value");
}

/// <summary>A parsed /v1/chat/completions request.</summary>
public sealed record ChatCompletionRequest(ChatRequest Chat, int N, bool Stream, bool IncludeUsage, bool ParallelToolCalls);

/// <summary>A parsed /v1/completions request: one or more prompts.</summary>
public sealed record TextCompletionRequest(IReadOnlyList<CompletionRequest> Prompts, IReadOnlyList<string?> PromptTexts, int N, bool Stream, bool IncludeUsage, bool Echo);

/// <summary>
/// Reads OpenAI request bodies with strict type checks (a field of the wrong type is a 400 naming it) while ignoring
/// fields it does not know. Options that would change the output but are not implemented (logit_bias, penalties,
/// non-text content) are refused rather than accepted and ignored.
/// </summary>
public static class OpenAiRequests
{
    private static JsonElement? Get(JsonElement o, string name) =>
        o.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    private static string? Str(JsonElement o, string name, string path)
    {
        var v = Get(o, name);
        if (v is null) return null;
        return v.Value.ValueKind == JsonValueKind.String ? v.Value.GetString() : throw ApiError.BadType(path, "a string");
    }

    private static bool? Bool(JsonElement o, string name)
    {
        var v = Get(o, name);
        if (v is null) return null;
        return v.Value.ValueKind switch { JsonValueKind.True => true, JsonValueKind.False => false, _ => throw ApiError.BadType(name, "a boolean") };
    }

    private static double? Num(JsonElement o, string name, double min, double max, bool minExclusive = false)
    {
        var v = Get(o, name);
        if (v is null) return null;
        if (v.Value.ValueKind != JsonValueKind.Number) throw ApiError.BadType(name, "a number");
        double d = v.Value.GetDouble();
        if (d < min || d > max || (minExclusive && d == min)) throw ApiError.BadValue(name, $"must be in {(minExclusive ? "(" : "[")}{min}, {max}] (got {d})");
        return d;
    }

    private static int? Int(JsonElement o, string name, int min, int max)
    {
        var v = Get(o, name);
        if (v is null) return null;
        if (v.Value.ValueKind != JsonValueKind.Number || !v.Value.TryGetInt64(out long n)) throw ApiError.BadType(name, "an integer");
        if (n < min || n > max) throw ApiError.BadValue(name, $"must be between {min} and {max} (got {n})");
        return (int)n;
    }

    private static IReadOnlyList<string>? Stop(JsonElement o)
    {
        var v = Get(o, "stop");
        if (v is null) return null;
        if (v.Value.ValueKind == JsonValueKind.String) return [v.Value.GetString()!];
        if (v.Value.ValueKind != JsonValueKind.Array) throw ApiError.BadType("stop", "a string or an array of strings");
        var list = new List<string>();
        foreach (var s in v.Value.EnumerateArray())
            list.Add(s.ValueKind == JsonValueKind.String ? s.GetString()! : throw ApiError.BadType("stop", "a string or an array of strings"));
        if (list.Count > 16) throw ApiError.BadValue("stop", "may hold at most 16 sequences");
        return list;
    }

    private static SamplingOverrides Sampling(JsonElement o) => new()
    {
        Temperature = Num(o, "temperature", 0, 2),
        TopP = Num(o, "top_p", 0, 1, minExclusive: true),
        TopK = Int(o, "top_k", -1, int.MaxValue) is int k ? Math.Max(0, k) : null, // vLLM: -1 = off
        MinP = Num(o, "min_p", 0, 1),
        RepetitionPenalty = Num(o, "repetition_penalty", 0, 10, minExclusive: true),
        Seed = Get(o, "seed") is { } s ? (s.ValueKind == JsonValueKind.Number && s.TryGetInt64(out long sv) ? unchecked((int)sv) : throw ApiError.BadType("seed", "an integer")) : null,
    };

    private static void RefuseUnsupported(JsonElement o)
    {
        foreach (var p in new[] { "frequency_penalty", "presence_penalty" })
            if (Num(o, p, -2, 2) is double d && d != 0) throw new ApiError(400, $"'{p}' is not supported (only 0)", p, "unsupported_parameter");
        if (Get(o, "logit_bias") is { } lb)
        {
            if (lb.ValueKind != JsonValueKind.Object) throw ApiError.BadType("logit_bias", "an object");
            if (lb.EnumerateObject().Any()) throw new ApiError(400, "'logit_bias' is not supported", "logit_bias", "unsupported_parameter");
        }
    }

    /// <summary>Parses a chat completion request body.</summary>
    public static ChatCompletionRequest Chat(JsonElement o)
    {
        Str(o, "model", "model");
        var msgsEl = Get(o, "messages") ?? throw new ApiError(400, "'messages' is required", "messages", "missing_required_parameter");
        if (msgsEl.ValueKind != JsonValueKind.Array) throw ApiError.BadType("messages", "an array");
        var messages = new List<ChatTurn>();
        int i = 0;
        foreach (var m in msgsEl.EnumerateArray()) messages.Add(Message(m, $"messages[{i++}]"));
        if (messages.Count == 0) throw ApiError.BadValue("messages", "must not be empty");
        RefuseUnsupported(o);
        int? maxTokens = Int(o, "max_completion_tokens", 0, int.MaxValue) ?? Int(o, "max_tokens", 0, int.MaxValue);
        int n = Int(o, "n", 1, 16) ?? 1;
        bool stream = Bool(o, "stream") ?? false;
        bool includeUsage = false;
        if (Get(o, "stream_options") is { } so)
        {
            if (so.ValueKind != JsonValueKind.Object) throw ApiError.BadType("stream_options", "an object");
            includeUsage = so.TryGetProperty("include_usage", out var iu) && iu.ValueKind != JsonValueKind.Null
                ? iu.ValueKind is JsonValueKind.True or JsonValueKind.False ? iu.GetBoolean() : throw ApiError.BadType("stream_options.include_usage", "a boolean")
                : false;
        }
        bool logprobs = Bool(o, "logprobs") ?? false;
        int top = Int(o, "top_logprobs", 0, 20) ?? 0;
        if (top > 0 && !logprobs) throw ApiError.BadValue("top_logprobs", "requires 'logprobs': true");

        var tools = Tools(o);
        var (choice, required) = ToolChoice(o, tools);
        var (format, schema) = ResponseFormat(o);
        var templateArgs = new Dictionary<string, object?>(StringComparer.Ordinal);
        bool? thinking = null;
        if (Get(o, "chat_template_kwargs") is { } kw)
        {
            if (kw.ValueKind != JsonValueKind.Object) throw ApiError.BadType("chat_template_kwargs", "an object");
            foreach (var p in kw.EnumerateObject()) templateArgs[p.Name] = p.Value.Clone();
            if (kw.TryGetProperty("enable_thinking", out var et) && et.ValueKind is JsonValueKind.True or JsonValueKind.False) thinking = et.GetBoolean();
        }
        if (Str(o, "reasoning_effort", "reasoning_effort") is { } effort)
        {
            if (effort is not ("minimal" or "low" or "medium" or "high")) throw ApiError.BadValue("reasoning_effort", "must be minimal, low, medium or high");
            templateArgs["reasoning_effort"] = effort == "minimal" ? "low" : effort;
        }
        var chat = new ChatRequest
        {
            Messages = messages, Tools = tools, ToolChoice = choice, RequiredTool = required, Sampling = Sampling(o), MaxTokens = maxTokens,
            Stop = Stop(o), ResponseFormat = format, Schema = schema, Logprobs = logprobs, TopLogprobs = top,
            EnableThinking = thinking, TemplateArgs = templateArgs.Count > 0 ? templateArgs : null,
        };
        return new ChatCompletionRequest(chat, n, stream, includeUsage, Bool(o, "parallel_tool_calls") ?? true);
    }

    private static ChatTurn Message(JsonElement m, string path)
    {
        if (m.ValueKind != JsonValueKind.Object) throw ApiError.BadType(path, "an object");
        string role = Str(m, "role", path + ".role") ?? throw new ApiError(400, $"'{path}.role' is required", path + ".role", "missing_required_parameter");
        if (role is not ("system" or "developer" or "user" or "assistant" or "tool"))
            throw ApiError.BadValue(path + ".role", $"'{role}' is not one of system, developer, user, assistant, tool");
        string? content = null;
        if (Get(m, "content") is { } c)
        {
            if (c.ValueKind == JsonValueKind.String) content = c.GetString();
            else if (c.ValueKind == JsonValueKind.Array)
            {
                var sb = new System.Text.StringBuilder();
                int k = 0;
                foreach (var part in c.EnumerateArray())
                {
                    string pp = $"{path}.content[{k++}]";
                    if (part.ValueKind != JsonValueKind.Object) throw ApiError.BadType(pp, "an object");
                    string type = Str(part, "type", pp + ".type") ?? "text";
                    if (type is not ("text" or "input_text" or "output_text"))
                        throw new ApiError(400, $"'{pp}.type' '{type}' is not supported (text only)", pp + ".type", "unsupported_content");
                    sb.Append(Str(part, "text", pp + ".text") ?? throw new ApiError(400, $"'{pp}.text' is required", pp + ".text", "missing_required_parameter"));
                }
                content = sb.ToString();
            }
            else throw ApiError.BadType(path + ".content", "a string, an array of content parts or null");
        }
        string? reasoning = Str(m, "reasoning_content", path + ".reasoning_content") ?? Str(m, "reasoning", path + ".reasoning");
        List<ChatToolCall>? calls = null;
        if (Get(m, "tool_calls") is { } tc)
        {
            if (tc.ValueKind != JsonValueKind.Array) throw ApiError.BadType(path + ".tool_calls", "an array");
            calls = new List<ChatToolCall>();
            int k = 0;
            foreach (var call in tc.EnumerateArray())
            {
                string cp = $"{path}.tool_calls[{k++}]";
                if (call.ValueKind != JsonValueKind.Object) throw ApiError.BadType(cp, "an object");
                string id = Str(call, "id", cp + ".id") ?? $"call_{k}";
                var f = Get(call, "function") ?? throw new ApiError(400, $"'{cp}.function' is required", cp + ".function", "missing_required_parameter");
                if (f.ValueKind != JsonValueKind.Object) throw ApiError.BadType(cp + ".function", "an object");
                string name = Str(f, "name", cp + ".function.name") ?? throw new ApiError(400, $"'{cp}.function.name' is required", cp + ".function.name", "missing_required_parameter");
                string args = Get(f, "arguments") is { } a ? a.ValueKind == JsonValueKind.String ? a.GetString()! : a.ValueKind == JsonValueKind.Object ? a.GetRawText()
                    : throw ApiError.BadType(cp + ".function.arguments", "a string") : "{}";
                try { using var _ = JsonDocument.Parse(args); }
                catch (JsonException) { throw ApiError.BadValue(cp + ".function.arguments", "is not valid JSON"); }
                calls.Add(new ChatToolCall(id, name, args));
            }
        }
        string? toolCallId = Str(m, "tool_call_id", path + ".tool_call_id");
        if (role == "tool" && toolCallId is null) throw new ApiError(400, $"'{path}.tool_call_id' is required for tool messages", path + ".tool_call_id", "missing_required_parameter");
        return new ChatTurn { Role = role, Content = content, Reasoning = reasoning, ToolCalls = calls, ToolCallId = toolCallId, Name = Str(m, "name", path + ".name") };
    }

    private static List<ToolSpec>? Tools(JsonElement o)
    {
        if (Get(o, "tools") is not { } t) return null;
        if (t.ValueKind != JsonValueKind.Array) throw ApiError.BadType("tools", "an array");
        var list = new List<ToolSpec>();
        int i = 0;
        foreach (var tool in t.EnumerateArray())
        {
            string p = $"tools[{i++}]";
            if (tool.ValueKind != JsonValueKind.Object) throw ApiError.BadType(p, "an object");
            string type = Str(tool, "type", p + ".type") ?? "function";
            if (type != "function") throw ApiError.BadValue(p + ".type", $"'{type}' is not supported (function only)");
            var f = Get(tool, "function") ?? throw new ApiError(400, $"'{p}.function' is required", p + ".function", "missing_required_parameter");
            if (f.ValueKind != JsonValueKind.Object) throw ApiError.BadType(p + ".function", "an object");
            string name = Str(f, "name", p + ".function.name") ?? throw new ApiError(400, $"'{p}.function.name' is required", p + ".function.name", "missing_required_parameter");
            JsonElement? parameters = Get(f, "parameters") is { } pa ? pa.ValueKind == JsonValueKind.Object ? pa.Clone() : throw ApiError.BadType(p + ".function.parameters", "an object") : null;
            list.Add(new ToolSpec(name, Str(f, "description", p + ".function.description"), parameters));
        }
        return list.Count > 0 ? list : null;
    }

    private static (ToolChoiceMode, string?) ToolChoice(JsonElement o, List<ToolSpec>? tools)
    {
        if (Get(o, "tool_choice") is not { } tc) return (ToolChoiceMode.Auto, null);
        if (tc.ValueKind == JsonValueKind.String)
            return tc.GetString() switch
            {
                "auto" => (ToolChoiceMode.Auto, null), "none" => (ToolChoiceMode.None, null), "required" => (ToolChoiceMode.Required, null),
                var s => throw ApiError.BadValue("tool_choice", $"'{s}' is not one of none, auto, required"),
            };
        if (tc.ValueKind != JsonValueKind.Object) throw ApiError.BadType("tool_choice", "a string or an object");
        var f = Get(tc, "function");
        string? name = f is { ValueKind: JsonValueKind.Object } ? Str(f.Value, "name", "tool_choice.function.name") : null;
        if (name is null) throw new ApiError(400, "'tool_choice.function.name' is required", "tool_choice.function.name", "missing_required_parameter");
        if (tools?.Any(t => t.Name == name) != true) throw ApiError.BadValue("tool_choice", $"names function '{name}', which is not among the tools");
        return (ToolChoiceMode.Required, name);
    }

    private static (ResponseFormatKind, JsonElement?) ResponseFormat(JsonElement o)
    {
        if (Get(o, "response_format") is not { } rf) return (ResponseFormatKind.Text, null);
        if (rf.ValueKind != JsonValueKind.Object) throw ApiError.BadType("response_format", "an object");
        string type = Str(rf, "type", "response_format.type") ?? throw new ApiError(400, "'response_format.type' is required", "response_format.type", "missing_required_parameter");
        switch (type)
        {
            case "text": return (ResponseFormatKind.Text, null);
            case "json_object": return (ResponseFormatKind.JsonObject, null);
            case "json_schema":
                var js = Get(rf, "json_schema") ?? throw new ApiError(400, "'response_format.json_schema' is required", "response_format.json_schema", "missing_required_parameter");
                if (js.ValueKind != JsonValueKind.Object) throw ApiError.BadType("response_format.json_schema", "an object");
                var schema = Get(js, "schema") ?? throw new ApiError(400, "'response_format.json_schema.schema' is required", "response_format.json_schema.schema", "missing_required_parameter");
                if (schema.ValueKind is not (JsonValueKind.Object or JsonValueKind.True)) throw ApiError.BadType("response_format.json_schema.schema", "an object");
                return (ResponseFormatKind.JsonSchema, schema.Clone());
            default:
                throw ApiError.BadValue("response_format.type", $"'{type}' is not one of text, json_object, json_schema");
        }
    }

    /// <summary>Parses a /v1/completions request body.</summary>
    public static TextCompletionRequest Completion(JsonElement o)
    {
        Str(o, "model", "model");
        var p = Get(o, "prompt") ?? throw new ApiError(400, "'prompt' is required", "prompt", "missing_required_parameter");
        if (Get(o, "suffix") is not null) throw new ApiError(400, "'suffix' is not supported", "suffix", "unsupported_parameter");
        if (Get(o, "best_of") is { } bo && (bo.ValueKind != JsonValueKind.Number || bo.GetDouble() != 1))
            throw new ApiError(400, "'best_of' is not supported (only 1)", "best_of", "unsupported_parameter");
        RefuseUnsupported(o);
        var texts = new List<string?>();
        var tokens = new List<int[]?>();
        const string PromptType = "a string, an array of strings, an array of token ids or an array of such arrays";
        switch (p.ValueKind)
        {
            case JsonValueKind.String: texts.Add(p.GetString()); tokens.Add(null); break;
            case JsonValueKind.Array:
            {
                var items = p.EnumerateArray().ToList();
                if (items.Count == 0) throw ApiError.BadValue("prompt", "must not be empty");
                if (items.All(x => x.ValueKind == JsonValueKind.String)) foreach (var x in items) { texts.Add(x.GetString()); tokens.Add(null); }
                else if (items.All(x => x.ValueKind == JsonValueKind.Number)) { texts.Add(null); tokens.Add(Ids(items)); }
                else if (items.All(x => x.ValueKind == JsonValueKind.Array)) foreach (var x in items) { texts.Add(null); tokens.Add(Ids(x.EnumerateArray().ToList())); }
                else throw ApiError.BadType("prompt", PromptType);
                break;
            }
            default: throw ApiError.BadType("prompt", PromptType);
        }
        int maxTokens = Int(o, "max_tokens", 0, int.MaxValue) ?? 16;
        int? lp = Int(o, "logprobs", 0, 20);
        var sampling = Sampling(o);
        var stop = Stop(o);
        var reqs = texts.Select((t, i) => new CompletionRequest
        {
            Prompt = t, PromptTokens = tokens[i], MaxTokens = maxTokens, Sampling = sampling, Stop = stop, Logprobs = lp is not null, TopLogprobs = lp ?? 0,
        }).ToList();
        bool includeUsage = Get(o, "stream_options") is { ValueKind: JsonValueKind.Object } so && so.TryGetProperty("include_usage", out var iu) && iu.ValueKind == JsonValueKind.True;
        return new TextCompletionRequest(reqs, texts, Int(o, "n", 1, 16) ?? 1, Bool(o, "stream") ?? false, includeUsage, Bool(o, "echo") ?? false);

        static int[] Ids(List<JsonElement> items)
        {
            if (items.Count == 0) throw ApiError.BadValue("prompt", "must not hold an empty token list");
            return items.Select(x => x.ValueKind == JsonValueKind.Number && x.TryGetInt32(out int v) && v >= 0 ? v : throw ApiError.BadType("prompt", "token ids (non-negative integers)")).ToArray();
        }
    }
}
