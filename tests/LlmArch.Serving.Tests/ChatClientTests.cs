using System.Text.Json;
using LlmArch.AI;
using LlmArch.Generation;
using LlmArch.Generation.Tools;
using Microsoft.Extensions.AI;

namespace LlmArch.Serving.Tests;

/// <summary>The in-process <see cref="IChatClient"/>, the library facade and sessions.</summary>
public class ChatClientTests
{
    [Fact]
    public async Task ReasoningIsSeparatedAndUsageReported()
    {
        using var model = TinyModels.Scripted(TinyModels.WeatherScript);
        IChatClient client = model.AsChatClient();
        var r = await client.GetResponseAsync("hello");
        Assert.Equal("Hello there, you are in Paris!", r.Text);
        var reasoning = r.Messages.SelectMany(m => m.Contents).OfType<TextReasoningContent>().Single();
        Assert.Equal("A greeting.", reasoning.Text);
        Assert.Equal(ChatFinishReason.Stop, r.FinishReason);
        Assert.NotNull(r.Usage);
        Assert.True(r.Usage!.InputTokenCount > 5 && r.Usage.OutputTokenCount > 5);
        Assert.Equal("scripted", r.ModelId);

        var parts = new List<ChatResponseUpdate>();
        await foreach (var u in client.GetStreamingResponseAsync("hello")) parts.Add(u);
        Assert.Equal("Hello there, you are in Paris!", string.Concat(parts.Select(p => p.Text)));
        Assert.True(parts.Count > 3, "the answer should stream in several updates");
        Assert.Contains(parts, p => p.Contents.OfType<TextReasoningContent>().Any());
    }

    [Fact]
    public async Task UseFunctionInvocationRunsTheWholeLoopInProcess()
    {
        using var model = TinyModels.Scripted(TinyModels.WeatherScript);
        string? askedCity = null;
        var tool = AIFunctionFactory.Create((string city) => { askedCity = city; return "sunny, 24 C"; }, "get_weather", "Weather of a city");
        using var client = new ChatClientBuilder(model.AsChatClient()).UseFunctionInvocation().Build();
        var r = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "What is the weather in Paris?")], new ChatOptions { Tools = [tool] });
        Assert.Equal("Paris", askedCity);
        Assert.Equal("It is sunny in Paris today.", r.Text);
        var call = r.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>().Single();
        Assert.Equal("get_weather", call.Name);
        Assert.Contains(r.Messages, m => m.Contents.OfType<FunctionResultContent>().Any(fr => fr.CallId == call.CallId));
    }

    [Fact]
    public async Task ConcurrentCallsOnTheRealEngineMatchSequentialOnes()
    {
        using var model = TinyModels.LoadQwen3();
        IChatClient client = model.AsChatClient();
        ChatOptions Opts(int seed) => new() { Temperature = 0.8f, TopK = 50, TopP = 0.95f, Seed = seed, MaxOutputTokens = 10 };
        var seq = new List<string>();
        for (int s = 0; s < 3; s++) seq.Add((await client.GetResponseAsync("hi", Opts(s))).Text);
        var conc = await Task.WhenAll(Enumerable.Range(0, 3).Select(async s => (await client.GetResponseAsync("hi", Opts(s))).Text));
        Assert.Equal(seq, conc);
    }

    [Fact]
    public async Task JsonSchemaFormatInProcess()
    {
        using var model = TinyModels.LoadQwen3();
        var schema = JsonDocument.Parse("""{"type":"object","properties":{"answer":{"enum":["yes","no"]},"n":{"type":"integer"}},"required":["answer","n"],"additionalProperties":false}""").RootElement;
        var r = await model.AsChatClient().GetResponseAsync("answer", new ChatOptions
        {
            ResponseFormat = ChatResponseFormat.ForJsonSchema(schema, "reply"), MaxOutputTokens = 300, Temperature = 0,
            AdditionalProperties = new() { ["enable_thinking"] = false },
        });
        using var doc = JsonDocument.Parse(r.Text);
        Assert.Contains(doc.RootElement.GetProperty("answer").GetString(), new[] { "yes", "no" });
        Assert.Matches("^-?[0-9]+$", doc.RootElement.GetProperty("n").GetRawText());
    }

    [Fact]
    public void OptionsMapOntoTheRequest()
    {
        var tool = AIFunctionFactory.Create((int x) => x, "f", "doubles");
        var req = LlmChatClient.ToRequest(
            [new ChatMessage(ChatRole.System, "sys"), new ChatMessage(ChatRole.User, "u"),
             new ChatMessage(ChatRole.Assistant, [new TextReasoningContent("r"), new FunctionCallContent("c1", "f", new Dictionary<string, object?> { ["x"] = 2 })]),
             new ChatMessage(ChatRole.Tool, [new FunctionResultContent("c1", 4)])],
            new ChatOptions
            {
                Temperature = 0.5f, TopP = 0.9f, TopK = 7, Seed = 11, MaxOutputTokens = 33, StopSequences = ["END"], Tools = [tool],
                ToolMode = ChatToolMode.RequireSpecific("f"), Instructions = "be nice",
            });
        Assert.Equal(0.5, req.Sampling.Temperature!.Value, 5);
        Assert.Equal(0.9, req.Sampling.TopP!.Value, 5);
        Assert.Equal(7, req.Sampling.TopK);
        Assert.Equal(11, req.Sampling.Seed);
        Assert.Equal(33, req.MaxTokens);
        Assert.Equal(["END"], req.Stop);
        Assert.Equal(ToolChoiceMode.Required, req.ToolChoice);
        Assert.Equal("f", req.RequiredTool);
        Assert.Equal("f", Assert.Single(req.Tools!).Name);
        Assert.Equal(["system", "system", "user", "assistant", "tool"], req.Messages.Select(m => m.Role));
        Assert.Equal("r", req.Messages[3].Reasoning);
        Assert.Equal("""{"x":2}""", req.Messages[3].ToolCalls![0].ArgumentsJson);
        Assert.Equal("c1", req.Messages[4].ToolCallId);
        Assert.Equal("4", req.Messages[4].Content);
        Assert.Throws<LlmArchInputException>(() => LlmChatClient.ToRequest([new ChatMessage(ChatRole.User, "x")], new ChatOptions { PresencePenalty = 1 }));
    }

    [Fact]
    public async Task RequiredToolChoiceForcesAValidCall()
    {
        // The real tiny model cannot call tools by itself; the constraint writes the call's markup and schema-valid arguments.
        using var model = TinyModels.LoadQwen3();
        // (Numbers and booleans: a random model's free strings could run past any budget.)
        var tool = AIFunctionFactory.Create((bool metric, int days) => "", "get_weather", "Weather");
        var r = await model.AsChatClient().GetResponseAsync("weather?", new ChatOptions
        {
            Tools = [tool], ToolMode = ChatToolMode.RequireSpecific("get_weather"), MaxOutputTokens = 300, Temperature = 0,
            AdditionalProperties = new() { ["enable_thinking"] = false },
        });
        var call = r.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>().Single();
        Assert.Equal("get_weather", call.Name);
        Assert.IsType<JsonElement>(call.Arguments!["metric"]);
        Assert.True(((JsonElement)call.Arguments["metric"]!).ValueKind is JsonValueKind.True or JsonValueKind.False);
        Assert.Equal(JsonValueKind.Number, ((JsonElement)call.Arguments["days"]!).ValueKind);
        Assert.Equal(ChatFinishReason.ToolCalls, r.FinishReason);
    }

    [Fact]
    public async Task SessionAppendForkRewindGenerate()
    {
        using var model = TinyModels.LoadQwen3();
        var s = model.CreateSession();
        s.Append("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n");
        int promptLength = s.Length;
        Assert.Equal(model.Tokenizer.TokenToId("<|im_start|>"), s.Tokens[0]);
        var fork = s.Fork();
        var greedy = SamplingOptions.Greedy;
        var a = new List<int>();
        await foreach (var t in s.GenerateAsync(8, greedy)) if (t.Id >= 0) a.Add(t.Id);
        Assert.Equal(promptLength + a.Count, s.Length);
        Assert.Equal(promptLength, fork.Length); // the fork is independent
        var b = new List<int>();
        await foreach (var t in fork.GenerateAsync(8, greedy)) if (t.Id >= 0) b.Add(t.Id);
        Assert.Equal(a, b);
        // Rewind to the prompt and generate again: the same continuation; equal to the engine called directly.
        s.Rewind(promptLength);
        var c = new List<int>();
        await foreach (var t in s.GenerateAsync(8, greedy)) if (t.Id >= 0) c.Add(t.Id);
        Assert.Equal(a, c);
        var direct = new List<int>();
        await foreach (var t in model.Engine.GenerateAsync(new GenerationRequest { Prompt = s.Tokens.Take(promptLength).ToArray(), MaxNewTokens = 8, StopTokens = model.StopTokens }))
            if (t.Id >= 0) direct.Add(t.Id);
        Assert.Equal(a, direct);
        Assert.Throws<ArgumentOutOfRangeException>(() => s.Rewind(s.Length + 1));
        Assert.Throws<LlmArchInputException>(() => s.Append([9999]));
    }

    [Fact]
    public void LoadRejectsBadOptions()
    {
        Assert.Contains("device", Assert.Throws<LlmArchInputException>(() => LlmModel.Load(TestData.Fixture("qwen3"), new LlmModelOptions { Device = "tpu" })).Message);
        Assert.Contains("quantization", Assert.Throws<LlmArchInputException>(() => LlmModel.Load(TestData.Fixture("qwen3"), new LlmModelOptions { Quantization = "q2" })).Message);
        Assert.Contains("not found", Assert.Throws<LlmArchInputException>(() => LlmModel.Load("/nonexistent/model")).Message);
        // A model directory without a tokenizer: one clear error naming it.
        Assert.Contains("tokenizer", Assert.ThrowsAny<LlmArchInputException>(() => LlmModel.Load(TestData.Fixture("qwen3"))).Message);
    }
}
