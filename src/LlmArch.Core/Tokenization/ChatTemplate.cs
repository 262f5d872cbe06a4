using System.Text.Json;
using LlmArch.Tokenization.Jinja;

namespace LlmArch.Tokenization;

/// <summary>
/// A model's chat template (Jinja), loaded from <c>chat_template.jinja</c> or <c>tokenizer_config.json</c>'s
/// <c>chat_template</c>, rendered as transformers' <c>apply_chat_template</c> does: with <c>messages</c>,
/// <c>tools</c> (None unless given), <c>documents</c> (None), <c>add_generation_prompt</c>, the special tokens of
/// tokenizer_config.json (<c>bos_token</c>, <c>eos_token</c>, ...) and any extra variables
/// (<c>enable_thinking</c>, ...).
/// </summary>
public sealed class ChatTemplate
{
    private readonly JinjaTemplate _template;

    /// <summary>The template source.</summary>
    public string Source { get; }
    /// <summary>Special tokens passed to the template (bos_token, eos_token, additional_special_tokens, ...).</summary>
    public IReadOnlyDictionary<string, object?> SpecialTokens { get; }

    private ChatTemplate(string source, IReadOnlyDictionary<string, object?> specialTokens)
    {
        Source = source;
        SpecialTokens = specialTokens;
        _template = JinjaTemplate.Parse(source);
    }

    /// <summary>A template from source text, with the given special-token variables.</summary>
    public static ChatTemplate FromString(string source, IReadOnlyDictionary<string, object?>? specialTokens = null) =>
        new(source, specialTokens ?? new Dictionary<string, object?>());

    /// <summary>
    /// Loads the chat template of a tokenizer directory (or of the directory of a given file): <c>chat_template.jinja</c>
    /// when present, else tokenizer_config.json's <c>chat_template</c> (a string, or a list of {name, template} from
    /// which <paramref name="name"/>, default "default", is taken).
    /// </summary>
    public static ChatTemplate Load(string dirOrFile, string? name = null)
    {
        dirOrFile = Checkpoints.ModelLocator.Resolve(dirOrFile, "tokenizer");
        if (!Directory.Exists(dirOrFile) && !File.Exists(dirOrFile)) throw new LlmArchInputException($"{dirOrFile}: no such directory");
        string dir = Directory.Exists(dirOrFile) ? dirOrFile : Path.GetDirectoryName(Path.GetFullPath(dirOrFile))!;
        string configPath = Path.Combine(dir, "tokenizer_config.json");
        JsonDocument? config = File.Exists(configPath) ? Tokenizer.ParseJsonFile(configPath) : null;
        using (config)
        {
            var specials = new Dictionary<string, object?>(StringComparer.Ordinal);
            string? source = null;
            if (config is not null)
            {
                var root = config.RootElement;
                if (root.ValueKind != JsonValueKind.Object) throw new ConfigException("tokenizer_config.json: must be a JSON object");
                foreach (var p in root.EnumerateObject())
                {
                    if (p.Name == "additional_special_tokens" && p.Value.ValueKind == JsonValueKind.Array)
                        specials[p.Name] = p.Value.EnumerateArray().Select(Tokenizer.TokenContent).Where(s => s is not null).Cast<object?>().ToList();
                    else if (p.Name.EndsWith("_token", StringComparison.Ordinal) && Tokenizer.TokenContent(p.Value) is { } s)
                        specials[p.Name] = s;
                }
                if (root.TryGetProperty("chat_template", out var ct)) source = SelectTemplate(ct, name);
            }
            string jinjaPath = Path.Combine(dir, "chat_template.jinja");
            if (File.Exists(jinjaPath) && name is null or "default") source = File.ReadAllText(jinjaPath);
            if (source is null)
                throw new LlmArchInputException($"{dir}: no chat template (no chat_template.jinja, and tokenizer_config.json has no 'chat_template')");
            return new ChatTemplate(source, specials);
        }
    }

    private static string? SelectTemplate(JsonElement ct, string? name)
    {
        switch (ct.ValueKind)
        {
            case JsonValueKind.Null:
                return null;
            case JsonValueKind.String:
                return ct.GetString();
            case JsonValueKind.Array:
            {
                var named = new Dictionary<string, string>(StringComparer.Ordinal);
                foreach (var e in ct.EnumerateArray())
                {
                    if (e.ValueKind != JsonValueKind.Object || !e.TryGetProperty("name", out var n) || n.ValueKind != JsonValueKind.String
                        || !e.TryGetProperty("template", out var t) || t.ValueKind != JsonValueKind.String)
                        throw new ConfigException("tokenizer_config.json: chat_template list entries must be {\"name\": ..., \"template\": ...}");
                    named[n.GetString()!] = t.GetString()!;
                }
                string want = name ?? "default";
                if (named.TryGetValue(want, out var src)) return src;
                throw new ConfigException($"tokenizer_config.json: chat_template has no template named '{want}' (has: {string.Join(", ", named.Keys)})");
            }
            default:
                throw new ConfigException($"tokenizer_config.json: chat_template must be a string or a list of named templates, got {ct.ValueKind}");
        }
    }

    /// <summary>A message dictionary {"role": role, "content": content}.</summary>
    public static Dictionary<string, object?> Message(string role, string content) =>
        new(StringComparer.Ordinal) { ["role"] = role, ["content"] = content };

    /// <summary>
    /// Renders a conversation. <paramref name="messages"/> are dictionaries (or JSON objects) with role, content and
    /// whatever else the template reads (tool_calls, reasoning_content, ...). <paramref name="extra"/> adds or overrides
    /// variables: <c>tools</c>, <c>enable_thinking</c>, <c>documents</c>, ...
    /// </summary>
    public string Render(IEnumerable<object?> messages, bool addGenerationPrompt, IReadOnlyDictionary<string, object?>? extra = null)
    {
        var vars = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (k, v) in SpecialTokens) vars[k] = v;
        vars["messages"] = messages.ToList();
        vars["tools"] = null;
        vars["documents"] = null;
        vars["add_generation_prompt"] = addGenerationPrompt;
        if (extra is not null) foreach (var (k, v) in extra) vars[k] = v;
        return _template.Render(vars);
    }

    /// <summary>Renders messages given as a JSON array of message objects.</summary>
    public string Render(JsonElement messages, bool addGenerationPrompt, IReadOnlyDictionary<string, object?>? extra = null)
    {
        if (messages.ValueKind != JsonValueKind.Array) throw new LlmArchInputException($"messages must be a JSON array, got {messages.ValueKind}");
        return Render(messages.EnumerateArray().Select(e => (object?)e).ToList(), addGenerationPrompt, extra);
    }
}
