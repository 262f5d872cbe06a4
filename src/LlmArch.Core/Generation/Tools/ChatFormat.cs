using System.Text.Json;
using System.Text.Json.Nodes;
using LlmArch.Tokenization;

namespace LlmArch.Generation.Tools;

/// <summary>The tool-call conventions of the model families (how the template asks for calls and how models emit them).</summary>
public enum ToolFormat
{
    /// <summary>The template takes no tools.</summary>
    None,
    /// <summary>Qwen3 / Qwen2.5 / Hermes: <c>&lt;tool_call&gt;{json}&lt;/tool_call&gt;</c>.</summary>
    Hermes,
    /// <summary>Qwen3-Coder / Qwen3.5: <c>&lt;tool_call&gt;&lt;function=f&gt;&lt;parameter=p&gt;...</c>.</summary>
    QwenXml,
    /// <summary>Llama 3.1-3.3: a bare JSON object <c>{"name", "parameters"}</c> or after <c>&lt;|python_tag|&gt;</c>.</summary>
    Llama3,
    /// <summary>gpt-oss harmony: <c>&lt;|channel|&gt;commentary to=functions.f ... &lt;|message|&gt;{json}&lt;|call|&gt;</c>.</summary>
    Harmony,
    /// <summary>DeepSeek-V3 / R1 / V3.1: <c>&lt;｜tool▁calls▁begin｜&gt;...</c>.</summary>
    DeepSeek,
    /// <summary>Mistral: <c>[TOOL_CALLS]</c>.</summary>
    Mistral,
    /// <summary>GLM-4.5 / 4.6: <c>&lt;tool_call&gt;f&lt;arg_key&gt;k&lt;/arg_key&gt;&lt;arg_value&gt;v&lt;/arg_value&gt;</c>.</summary>
    Glm,
    /// <summary>Kimi K2: <c>&lt;|tool_calls_section_begin|&gt;...</c>.</summary>
    Kimi,
    /// <summary>MiniMax-M2: <c>&lt;minimax:tool_call&gt;&lt;invoke name="f"&gt;...</c>.</summary>
    MiniMax,
}

/// <summary>
/// What a chat template implies about the model's output: its tool-call format, its reasoning markers, the
/// end-of-turn tokens to stop at. Detected from the template's own text, so a new checkpoint of a known family
/// works without configuration.
/// </summary>
public sealed record ChatFormat
{
    public ToolFormat Tools { get; init; }
    /// <summary>Reasoning block markers (<c>&lt;think&gt;</c>/<c>&lt;/think&gt;</c>, <c>[THINK]</c>/<c>[/THINK]</c>), or null.</summary>
    public string? ThinkOpen { get; init; }
    public string? ThinkClose { get; init; }
    /// <summary>Token texts that end an assistant turn in this format (added to the model's eos ids when they exist in the vocabulary).</summary>
    public IReadOnlyList<string> EndOfTurn { get; init; } = [];
    /// <summary>Special tokens that carry the format's structure and must reach the parser (others are dropped from the text).</summary>
    public IReadOnlyList<string> Markers { get; init; } = [];

    public static ChatFormat Plain { get; } = new();

    /// <summary>The format of a template, from markers its source contains.</summary>
    public static ChatFormat Detect(string? templateSource)
    {
        string s = templateSource ?? "";
        bool has(string m) => s.Contains(m, StringComparison.Ordinal);
        ToolFormat tools =
            has("<|channel|>") ? ToolFormat.Harmony :
            has("tool▁calls▁begin") ? ToolFormat.DeepSeek :
            has("tool_calls_section_begin") ? ToolFormat.Kimi :
            has("minimax:tool_call") ? ToolFormat.MiniMax :
            has("<arg_key>") ? ToolFormat.Glm :
            has("[TOOL_CALLS]") ? ToolFormat.Mistral :
            has("<function=") && has("<tool_call>") ? ToolFormat.QwenXml :
            has("<tool_call>") ? ToolFormat.Hermes :
            has("<|python_tag|>") || (has("<|eot_id|>") && has("\"parameters\"")) ? ToolFormat.Llama3 :
            ToolFormat.None;
        string? open = null, close = null;
        if (tools != ToolFormat.Harmony)
        {
            if (has("</think>")) { open = "<think>"; close = "</think>"; }
            else if (has("[/THINK]")) { open = "[THINK]"; close = "[/THINK]"; }
        }
        var end = tools switch
        {
            ToolFormat.Harmony => new[] { "<|return|>", "<|call|>" },
            ToolFormat.Llama3 => ["<|eot_id|>", "<|eom_id|>"],
            ToolFormat.DeepSeek => ["<｜end▁of▁sentence｜>"],
            ToolFormat.Glm => ["<|user|>", "<|observation|>", "<|endoftext|>"],
            ToolFormat.MiniMax => ["[e~["],
            ToolFormat.Mistral => ["</s>"],
            _ => [],
        };
        var extraEnd = new List<string>(end);
        foreach (var t in new[] { "<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>" })
            if (has(t) && !extraEnd.Contains(t) && tools != ToolFormat.Harmony) extraEnd.Add(t);
        var markers = tools switch
        {
            ToolFormat.Harmony => new[] { "<|channel|>", "<|message|>", "<|end|>", "<|start|>", "<|constrain|>", "<|call|>", "<|return|>" },
            ToolFormat.Hermes or ToolFormat.QwenXml => ["<tool_call>", "</tool_call>"],
            ToolFormat.Llama3 => ["<|python_tag|>"],
            ToolFormat.DeepSeek => ["<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"],
            ToolFormat.Mistral => ["[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"],
            ToolFormat.Glm => ["<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>"],
            ToolFormat.Kimi => ["<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", "<|tool_call_begin|>", "<|tool_call_argument_begin|>", "<|tool_call_end|>"],
            ToolFormat.MiniMax => ["<minimax:tool_call>", "</minimax:tool_call>"],
            _ => [],
        };
        var allMarkers = new List<string>(markers);
        if (open is not null) { allMarkers.Add(open); allMarkers.Add(close!); }
        return new ChatFormat { Tools = tools, ThinkOpen = open, ThinkClose = close, EndOfTurn = extraEnd, Markers = allMarkers };
    }

    /// <summary>True when the rendered prompt leaves a reasoning block open (the template started the model's thinking).</summary>
    public bool PromptOpensReasoning(string prompt) =>
        ThinkOpen is not null && prompt.TrimEnd().EndsWith(ThinkOpen, StringComparison.Ordinal);

    /// <summary>The parser of this format's output; tool calls are recognised only when the request offered tools.</summary>
    public OutputParser CreateParser(IReadOnlyList<ToolSpec>? tools, bool startInReasoning)
    {
        bool t = tools is { Count: > 0 };
        if (Tools == ToolFormat.Harmony) return new HarmonyParser(t);
        var blocks = new List<ToolBlock>();
        ToolBlockParser? jsonAtStart = null;
        if (t)
        {
            switch (Tools)
            {
                case ToolFormat.Hermes: blocks.Add(new ToolBlock("<tool_call>", "</tool_call>", ToolBodies.Hermes)); break;
                case ToolFormat.QwenXml: blocks.Add(new ToolBlock("<tool_call>", "</tool_call>", ToolBodies.QwenXml(tools))); break;
                case ToolFormat.Glm: blocks.Add(new ToolBlock("<tool_call>", "</tool_call>", ToolBodies.Glm(tools))); break;
                case ToolFormat.MiniMax: blocks.Add(new ToolBlock("<minimax:tool_call>", "</minimax:tool_call>", ToolBodies.MiniMax(tools))); break;
                case ToolFormat.DeepSeek: blocks.Add(new ToolBlock("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", ToolBodies.DeepSeek)); break;
                case ToolFormat.Kimi: blocks.Add(new ToolBlock("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", ToolBodies.Kimi)); break;
                case ToolFormat.Mistral: blocks.Add(new ToolBlock("[TOOL_CALLS]", null, ToolBodies.Mistral)); break;
                case ToolFormat.Llama3:
                    blocks.Add(new ToolBlock("<|python_tag|>", null, ToolBodies.Llama));
                    jsonAtStart = ToolBodies.Llama;
                    break;
            }
        }
        return new MarkupParser(ThinkOpen, ThinkClose, startInReasoning, blocks, jsonAtStart);
    }

    /// <summary>
    /// A fresh tool-call id in the form the family's template accepts back: Mistral's templates require 9
    /// alphanumeric characters, Kimi's are <c>functions.name:index</c>, the others OpenAI-style <c>call_...</c>.
    /// </summary>
    public string NewToolCallId(string name, int index)
    {
        const string alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        return Tools switch
        {
            ToolFormat.Mistral => string.Create(9, 0, (s, _) => { for (int i = 0; i < s.Length; i++) s[i] = alnum[Random.Shared.Next(alnum.Length)]; }),
            ToolFormat.Kimi => $"functions.{name}:{index}",
            _ => "call_" + string.Create(24, 0, (s, _) => { for (int i = 0; i < s.Length; i++) s[i] = alnum[Random.Shared.Next(alnum.Length)]; }),
        };
    }

    /// <summary>
    /// The messages as the templates read them (transformers' conventions): tool calls as
    /// <c>{id, type: "function", function: {name, arguments}}</c> with arguments as a mapping (or, when
    /// <paramref name="argumentsAsText"/>, as the JSON text, for templates that concatenate it), reasoning as both
    /// <c>reasoning_content</c> and <c>thinking</c>, tool results with <c>tool_call_id</c> and <c>name</c>.
    /// </summary>
    public static List<object?> TemplateMessages(IReadOnlyList<ChatTurn> turns, bool argumentsAsText, CallContent callContent = CallContent.Empty)
    {
        var names = new Dictionary<string, string>(StringComparer.Ordinal);
        var list = new List<object?>(turns.Count);
        foreach (var t in turns)
        {
            var m = new JsonObject { ["role"] = t.Role };
            bool hasCalls = t.ToolCalls is { Count: > 0 };
            if (t.Content is not null || !hasCalls) m["content"] = t.Content ?? "";
            else if (callContent == CallContent.Empty) m["content"] = "";
            else if (callContent == CallContent.Null) m["content"] = null;
            if (!string.IsNullOrEmpty(t.Reasoning)) { m["reasoning_content"] = t.Reasoning; m["thinking"] = t.Reasoning; }
            if (hasCalls)
            {
                var calls = new JsonArray();
                foreach (var c in t.ToolCalls!)
                {
                    names[c.Id] = c.Name;
                    JsonNode? args;
                    if (argumentsAsText) args = c.ArgumentsJson;
                    else
                    {
                        try { args = JsonNode.Parse(c.ArgumentsJson) ?? new JsonObject(); }
                        catch (JsonException) { throw new LlmArchInputException($"tool call '{c.Id}' ({c.Name}): arguments are not valid JSON"); }
                    }
                    calls.Add(new JsonObject
                    {
                        ["id"] = c.Id, ["type"] = "function",
                        ["function"] = new JsonObject { ["name"] = c.Name, ["arguments"] = args },
                    });
                }
                m["tool_calls"] = calls;
            }
            if (t.ToolCallId is not null) m["tool_call_id"] = t.ToolCallId;
            string? name = t.Name ?? (t.ToolCallId is not null && names.TryGetValue(t.ToolCallId, out var n) ? n : null);
            if (name is not null && t.Role == "tool") m["name"] = name;
            list.Add(m);
        }
        return list;
    }

    /// <summary>How an assistant message that only calls tools carries its (absent) content: templates disagree.</summary>
    public enum CallContent { Empty, Null, Absent }

    /// <summary>The tools as the templates read them: <c>{type: "function", function: {name, description, parameters}}</c>.</summary>
    public static List<object?> TemplateTools(IReadOnlyList<ToolSpec> tools)
    {
        var list = new List<object?>(tools.Count);
        foreach (var t in tools)
        {
            var f = new JsonObject { ["name"] = t.Name };
            if (t.Description is not null) f["description"] = t.Description;
            f["parameters"] = t.Parameters is { } p ? JsonNode.Parse(p.GetRawText()) : new JsonObject { ["type"] = "object", ["properties"] = new JsonObject() };
            list.Add(new JsonObject { ["type"] = "function", ["function"] = f });
        }
        return list;
    }

    /// <summary>
    /// Renders a conversation with the model's template. Templates disagree on how a message that only calls tools
    /// looks (content "" or null or absent; arguments as a mapping or as JSON text: DeepSeek-V3's concatenates text and
    /// tests content for none, gpt-oss's and Qwen3's need a string). The encodings are tried in turn; one is taken
    /// when it renders and every call's name appears in the text (a template that silently drops the calls is not).
    /// </summary>
    public static string Render(ChatTemplate template, IReadOnlyList<ChatTurn> turns, IReadOnlyList<ToolSpec>? tools,
        bool addGenerationPrompt, IReadOnlyDictionary<string, object?>? extra)
    {
        var vars = new Dictionary<string, object?>(StringComparer.Ordinal);
        if (extra is not null) foreach (var (k, v) in extra) vars[k] = v;
        if (tools is { Count: > 0 }) vars["tools"] = TemplateTools(tools);
        var names = turns.Where(t => t.ToolCalls is not null).SelectMany(t => t.ToolCalls!).Select(c => c.Name).Distinct().ToList();
        if (names.Count == 0) return template.Render(TemplateMessages(turns, false), addGenerationPrompt, vars);
        (bool, CallContent)[] encodings = [(false, CallContent.Empty), (true, CallContent.Null), (false, CallContent.Null), (false, CallContent.Absent), (true, CallContent.Empty)];
        LlmArchInputException? firstError = null;
        foreach (var (asText, content) in encodings)
        {
            try
            {
                string text = template.Render(TemplateMessages(turns, asText, content), addGenerationPrompt, vars);
                if (names.All(n => text.Contains(n, StringComparison.Ordinal))) return text;
            }
            catch (LlmArchInputException e) { firstError ??= e; }
        }
        throw firstError ?? new LlmArchInputException("the chat template drops the assistant's tool calls whatever form they take");
    }
}
