using System.Runtime.CompilerServices;
using System.Text.Json;
using LlmArch.Generation.Tools;
using Microsoft.Extensions.AI;

namespace LlmArch.AI;

/// <summary>
/// <see cref="IChatClient"/> over a local <see cref="LlmModel"/>: streaming and not, ChatOptions (temperature, top-p,
/// top-k, seed, max output tokens, stop sequences, response format, tools and tool mode), usage, reasoning as
/// <see cref="TextReasoningContent"/>, tool calls as <see cref="FunctionCallContent"/> (run them with
/// <c>UseFunctionInvocation()</c>). Thread-safe: concurrent calls share the model's engine.
/// </summary>
public sealed class LlmChatClient(LlmModel model) : IChatClient
{
    private readonly ChatClientMetadata _metadata = new("llmarch", null, model.Name);

    public LlmModel Model { get; } = model;

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in GetStreamingResponseAsync(messages, options, cancellationToken).ConfigureAwait(false)) updates.Add(u);
        return updates.ToChatResponse();
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var request = ToRequest(messages, options);
        string responseId = "chatcmpl-" + Guid.NewGuid().ToString("N")[..24];
        string messageId = responseId;
        var created = DateTimeOffset.UtcNow;
        await foreach (var u in Model.ChatStreamAsync(request, cancellationToken).ConfigureAwait(false))
        {
            var contents = new List<AIContent>();
            if (u.Reasoning is { Length: > 0 }) contents.Add(new TextReasoningContent(u.Reasoning));
            if (u.Content is { Length: > 0 }) contents.Add(new TextContent(u.Content));
            if (u.ToolCall is { } call)
            {
                var args = JsonSerializer.Deserialize<Dictionary<string, object?>>(call.ArgumentsJson);
                contents.Add(new FunctionCallContent(call.Id, call.Name, args));
            }
            if (u.Usage is { } usage)
                contents.Add(new UsageContent(new UsageDetails
                {
                    InputTokenCount = usage.PromptTokens, OutputTokenCount = usage.CompletionTokens, TotalTokenCount = usage.TotalTokens,
                    CachedInputTokenCount = usage.CachedPromptTokens,
                }));
            if (contents.Count == 0 && u.Finish is null) continue;
            yield return new ChatResponseUpdate(ChatRole.Assistant, contents)
            {
                ResponseId = responseId, MessageId = messageId, ModelId = Model.Name, CreatedAt = created,
                FinishReason = u.Finish switch
                {
                    ChatFinish.Stop => ChatFinishReason.Stop,
                    ChatFinish.Length => ChatFinishReason.Length,
                    ChatFinish.ToolCalls => ChatFinishReason.ToolCalls,
                    _ => null,
                },
            };
        }
    }

    /// <summary>Translates Microsoft.Extensions.AI messages and options into the model's chat request.</summary>
    public static ChatRequest ToRequest(IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        var turns = new List<ChatTurn>();
        if (options?.Instructions is { Length: > 0 } instructions) turns.Add(ChatTurn.System(instructions));
        foreach (var m in messages)
        {
            string role = m.Role.Value;
            var text = new System.Text.StringBuilder();
            var reasoning = new System.Text.StringBuilder();
            var calls = new List<ChatToolCall>();
            var results = new List<FunctionResultContent>();
            foreach (var c in m.Contents)
            {
                switch (c)
                {
                    case TextReasoningContent r: reasoning.Append(r.Text); break;
                    case TextContent t: text.Append(t.Text); break;
                    case FunctionCallContent f:
                        calls.Add(new ChatToolCall(f.CallId, f.Name, System.Text.Json.Nodes.JsonNode.Parse(
                            JsonSerializer.Serialize(f.Arguments ?? new Dictionary<string, object?>(), AIJsonUtilities.DefaultOptions))!.ToJsonString()));
                        break;
                    case FunctionResultContent fr: results.Add(fr); break;
                    case UsageContent: break;
                    default: throw new LlmArchInputException($"message content of type {c.GetType().Name} is not supported (text, reasoning, function calls and results)");
                }
            }
            if (results.Count > 0)
            {
                // Each result is its own tool message, as the templates expect.
                foreach (var r in results)
                    turns.Add(new ChatTurn { Role = "tool", ToolCallId = r.CallId, Content = ResultText(r.Result) });
                if (text.Length == 0) continue;
            }
            turns.Add(new ChatTurn
            {
                Role = role == "tool" && results.Count > 0 ? "user" : role,
                Content = text.Length > 0 || calls.Count == 0 ? text.ToString() : null,
                Reasoning = reasoning.Length > 0 ? reasoning.ToString() : null,
                ToolCalls = calls.Count > 0 ? calls : null,
            });
        }
        var tools = options?.Tools?.OfType<AIFunctionDeclaration>().Select(f => new ToolSpec(f.Name, f.Description, f.JsonSchema)).ToList();
        if (options?.Tools is { } all && all.Any(t => t is not AIFunctionDeclaration))
            throw new LlmArchInputException($"tool {all.First(t => t is not AIFunctionDeclaration).Name} is not a function (only function tools are supported)");
        var (mode, required) = options?.ToolMode switch
        {
            NoneChatToolMode => (ToolChoiceMode.None, (string?)null),
            RequiredChatToolMode r => (ToolChoiceMode.Required, r.RequiredFunctionName),
            _ => (ToolChoiceMode.Auto, null),
        };
        var (format, schema) = options?.ResponseFormat switch
        {
            ChatResponseFormatJson { Schema: { } s } => (ResponseFormatKind.JsonSchema, (JsonElement?)s),
            ChatResponseFormatJson => (ResponseFormatKind.JsonObject, null),
            _ => (ResponseFormatKind.Text, null),
        };
        if (options?.FrequencyPenalty is float fp && fp != 0) throw new LlmArchInputException("FrequencyPenalty is not supported");
        if (options?.PresencePenalty is float pp && pp != 0) throw new LlmArchInputException("PresencePenalty is not supported");
        bool? thinking = options?.AdditionalProperties?.TryGetValue("enable_thinking", out var et) == true && et is bool b ? b : null;
        return new ChatRequest
        {
            Messages = turns, Tools = tools is { Count: > 0 } ? tools : null, ToolChoice = mode, RequiredTool = required,
            Sampling = new SamplingOverrides
            {
                Temperature = options?.Temperature, TopP = options?.TopP, TopK = options?.TopK,
                Seed = options?.Seed is long seed ? unchecked((int)seed) : null,
            },
            MaxTokens = options?.MaxOutputTokens, Stop = options?.StopSequences?.ToList(), ResponseFormat = format, Schema = schema,
            EnableThinking = thinking,
        };
    }

    private static string ResultText(object? result) => result switch
    {
        null => "",
        string s => s,
        JsonElement e when e.ValueKind == JsonValueKind.String => e.GetString()!,
        _ => JsonSerializer.Serialize(result, AIJsonUtilities.DefaultOptions),
    };

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey is not null ? null
        : serviceType == typeof(ChatClientMetadata) ? _metadata
        : serviceType.IsInstanceOfType(this) ? this
        : serviceType.IsInstanceOfType(Model) ? Model
        : null;

    public void Dispose() { }
}

/// <summary>Extension methods of the Microsoft.Extensions.AI adapter.</summary>
public static class LlmModelChatExtensions
{
    /// <summary>The model as an <see cref="IChatClient"/>.</summary>
    public static IChatClient AsChatClient(this LlmModel model) => new LlmChatClient(model);
}
