using System.Text.Json;

namespace LlmArch.Generation.Tools;

// The chat vocabulary shared by the IChatClient adapter and the OpenAI-compatible server: a library-neutral message
// model (no dependency on Microsoft.Extensions.AI or ASP.NET), a request, and the stream of updates a request produces.

/// <summary>A tool call the assistant made: <paramref name="ArgumentsJson"/> is a JSON object as text.</summary>
public sealed record ChatToolCall(string Id, string Name, string ArgumentsJson);

/// <summary>One message of a conversation.</summary>
public sealed record ChatTurn
{
    /// <summary>system, user, assistant or tool.</summary>
    public required string Role { get; init; }
    public string? Content { get; init; }
    /// <summary>The assistant's reasoning (rendered back as <c>reasoning_content</c> / <c>thinking</c> where the template reads it).</summary>
    public string? Reasoning { get; init; }
    public IReadOnlyList<ChatToolCall>? ToolCalls { get; init; }
    /// <summary>For a tool message: the id of the call it answers.</summary>
    public string? ToolCallId { get; init; }
    /// <summary>For a tool message: the tool's name (filled from the matching call when absent).</summary>
    public string? Name { get; init; }

    public static ChatTurn System(string text) => new() { Role = "system", Content = text };
    public static ChatTurn User(string text) => new() { Role = "user", Content = text };
    public static ChatTurn Assistant(string text) => new() { Role = "assistant", Content = text };
}

/// <summary>A function the model may call: <paramref name="Parameters"/> is its JSON schema (an object schema) or null.</summary>
public sealed record ToolSpec(string Name, string? Description, JsonElement? Parameters);

/// <summary>How the model may use the tools (OpenAI's tool_choice).</summary>
public enum ToolChoiceMode { Auto, None, Required }

/// <summary>Sampling settings of one request; null fields take the model's defaults (generation_config.json).</summary>
public sealed record SamplingOverrides
{
    public double? Temperature { get; init; }
    public double? TopP { get; init; }
    public int? TopK { get; init; }
    public double? MinP { get; init; }
    public double? RepetitionPenalty { get; init; }
    public int? Seed { get; init; }

    /// <summary>These settings over <paramref name="defaults"/>.</summary>
    public SamplingOptions Over(SamplingOptions defaults) => defaults with
    {
        Temperature = Temperature ?? defaults.Temperature, TopP = TopP ?? defaults.TopP, TopK = TopK ?? defaults.TopK,
        MinP = MinP ?? defaults.MinP, RepetitionPenalty = RepetitionPenalty ?? defaults.RepetitionPenalty, Seed = Seed ?? defaults.Seed,
    };
}

/// <summary>The requested output format.</summary>
public enum ResponseFormatKind { Text, JsonObject, JsonSchema }

/// <summary>One chat request.</summary>
public sealed record ChatRequest
{
    public required IReadOnlyList<ChatTurn> Messages { get; init; }
    public IReadOnlyList<ToolSpec>? Tools { get; init; }
    public ToolChoiceMode ToolChoice { get; init; } = ToolChoiceMode.Auto;
    /// <summary>With <see cref="ToolChoiceMode.Required"/>: the one function that must be called (null = any).</summary>
    public string? RequiredTool { get; init; }
    /// <summary>Sampling settings; each one left null takes the model's generation_config default.</summary>
    public SamplingOverrides Sampling { get; init; } = new();
    /// <summary>Null = until a stop token or the end of the context.</summary>
    public int? MaxTokens { get; init; }
    public IReadOnlyList<string>? Stop { get; init; }
    public ResponseFormatKind ResponseFormat { get; init; }
    /// <summary>The schema of <see cref="ResponseFormatKind.JsonSchema"/>.</summary>
    public JsonElement? Schema { get; init; }
    public bool Logprobs { get; init; }
    public int TopLogprobs { get; init; }
    /// <summary>Passed to templates that read <c>enable_thinking</c> (Qwen3, GLM, ...); null = the template's default.</summary>
    public bool? EnableThinking { get; init; }
    /// <summary>Extra template variables (chat_template_kwargs), e.g. reasoning_effort for gpt-oss.</summary>
    public IReadOnlyDictionary<string, object?>? TemplateArgs { get; init; }
}

/// <summary>A token with its log-probability as the wire formats report it (text of the token, its UTF-8 bytes).</summary>
public sealed record TokenLogprobInfo(int Id, string Text, float Logprob, IReadOnlyList<(int Id, string Text, float Logprob)>? Top);

/// <summary>Token counts of one request.</summary>
public sealed record ChatUsage(int PromptTokens, int CompletionTokens, int CachedPromptTokens)
{
    public int TotalTokens => PromptTokens + CompletionTokens;
}

/// <summary>Why a chat response ended (the wire's finish_reason).</summary>
public enum ChatFinish { Stop, Length, ToolCalls, Cancelled }

/// <summary>
/// One step of a streamed chat response: any of text, reasoning, a complete tool call, logprobs of the tokens that
/// produced it; the last update carries <see cref="Finish"/> and <see cref="Usage"/>.
/// </summary>
public sealed record ChatUpdate
{
    public string? Content { get; init; }
    public string? Reasoning { get; init; }
    public ChatToolCall? ToolCall { get; init; }
    /// <summary>Index of the tool call in this response (0, 1, ...).</summary>
    public int ToolCallIndex { get; init; }
    public IReadOnlyList<TokenLogprobInfo>? Logprobs { get; init; }
    public ChatFinish? Finish { get; init; }
    public ChatUsage? Usage { get; init; }
}

/// <summary>A whole chat response (the updates of a stream, gathered).</summary>
public sealed record ChatResult(string Content, string? Reasoning, IReadOnlyList<ChatToolCall> ToolCalls, ChatFinish Finish, ChatUsage Usage,
    IReadOnlyList<TokenLogprobInfo>? Logprobs);
