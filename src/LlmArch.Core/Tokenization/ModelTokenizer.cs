using LlmArch.Checkpoints;

namespace LlmArch.Tokenization;

/// <summary>
/// A model's tokenizer and chat template, from wherever they live: a GGUF file's metadata, or tokenizer.json and
/// tokenizer_config.json / chat_template.jinja in the model directory, or a tokenizer directory given apart.
/// </summary>
public static class ModelTokenizer
{
    private static bool FromGguf(string model, string? tokenizerPath) => tokenizerPath is null && GgufFile.Exists(model);

    public static Tokenizer Load(string model, string? tokenizerPath = null) =>
        FromGguf(model, tokenizerPath) ? GgufTokenizer.Load(model) : Tokenizer.Load(tokenizerPath ?? model);

    /// <summary>The chat template; when the model has none, null, or with <paramref name="required"/> one clear error.</summary>
    public static ChatTemplate? LoadChatTemplate(string model, string? tokenizerPath = null, bool required = false)
    {
        if (FromGguf(model, tokenizerPath))
            return GgufTokenizer.LoadChatTemplate(model) ?? (required
                ? throw new LlmArchInputException($"{model}: no chat template (metadata key 'tokenizer.chat_template' is missing)")
                : null);
        if (required) return ChatTemplate.Load(tokenizerPath ?? model);
        try { return ChatTemplate.Load(tokenizerPath ?? model); }
        catch (LlmArchInputException e) when (e.Message.Contains("no chat template", StringComparison.Ordinal)) { return null; }
    }
}
