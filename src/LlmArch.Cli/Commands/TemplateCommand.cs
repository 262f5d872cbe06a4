using System.CommandLine;
using System.Text.Json;
using LlmArch.Tokenization;

namespace LlmArch.Cli.Commands;

/// <summary>
/// <c>llmarch template</c>: renders a model's chat template for a conversation, as transformers'
/// <c>apply_chat_template(..., tokenize=False)</c> does, and prints the prompt (or its ids with --ids).
/// </summary>
public sealed class TemplateCommand : Verb
{
    public override string Name => "template";
    public override string Description => "Render a model's chat template for a conversation, as transformers' apply_chat_template(tokenize=False) does.";

    private readonly Option<string?> _tokenizer = Opt.Tokenizer("directory with tokenizer_config.json / chat_template.jinja", required: true);
    private readonly Option<string?> _messages = Opt.Text("--messages", "JSON file: an array of messages, or {\"messages\": [...], other template variables}", "file", required: true);
    private readonly Option<bool> _addGenerationPrompt = Opt.Flag("--add-generation-prompt", "end with the assistant turn's opening");
    private readonly Option<Toggle?> _thinking = Opt.Switch("--enable-thinking", "the template's enable_thinking switch");
    private readonly Option<string?> _tools = Opt.Text("--tools", "JSON file with an array of tool schemas", "file");
    private readonly Option<string?> _templateName = Opt.Text("--template-name", "which of several named templates (default: default)", "name");
    private readonly Option<bool> _ids = Opt.Flag("--ids", "print the token ids of the rendered prompt instead of the text");

    public override int Execute(Invocation inv)
    {
        string dir = inv.Get(_tokenizer)!, messagesPath = inv.Get(_messages)!;
        bool addGenerationPrompt = inv.Get(_addGenerationPrompt), printIds = inv.Get(_ids);
        string? toolsPath = inv.Get(_tools), name = inv.Get(_templateName);
        var extra = new Dictionary<string, object?>(StringComparer.Ordinal);
        if (inv.Get(_thinking) is { } thinking) extra["enable_thinking"] = thinking.On;

        using var doc = ReadJson(messagesPath, "--messages");
        JsonElement messages = doc.RootElement;
        if (messages.ValueKind == JsonValueKind.Object)
        {
            // {"messages": [...], "tools": [...], other template variables...}
            if (!messages.TryGetProperty("messages", out var m))
                throw new LlmArchInputException($"{messagesPath}: expected a JSON array of messages or an object with a 'messages' array");
            foreach (var p in messages.EnumerateObject()) if (p.Name != "messages") extra[p.Name] = p.Value.Clone();
            messages = m;
        }
        if (messages.ValueKind != JsonValueKind.Array)
            throw new LlmArchInputException($"{messagesPath}: 'messages' must be a JSON array, got {messages.ValueKind}");
        int i = 0;
        foreach (var msg in messages.EnumerateArray())
        {
            if (msg.ValueKind != JsonValueKind.Object || !msg.TryGetProperty("role", out var role) || role.ValueKind != JsonValueKind.String)
                throw new LlmArchInputException($"{messagesPath}: message {i} must be an object with a string 'role'");
            i++;
        }
        if (toolsPath is not null)
        {
            using var tools = ReadJson(toolsPath, "--tools");
            if (tools.RootElement.ValueKind != JsonValueKind.Array)
                throw new LlmArchInputException($"{toolsPath}: tools must be a JSON array");
            extra["tools"] = tools.RootElement.Clone();
        }

        var template = ChatTemplate.Load(dir, name);
        string rendered = template.Render(messages, addGenerationPrompt, extra);
        if (printIds)
        {
            var tok = Tokenizer.Load(dir);
            inv.Out.WriteLine("[" + string.Join(",", tok.Encode(rendered, addSpecialTokens: false)) + "]");
        }
        else inv.Out.Write(rendered);
        return 0;
    }

    private static JsonDocument ReadJson(string path, string option)
    {
        var bytes = CliFiles.ReadInput(path, option);
        try { return JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 128 }); }
        catch (JsonException e) { throw new LlmArchInputException($"{path}: not valid JSON ({e.Message})"); }
    }
}
