using System.ClientModel;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using LlmArch.Generation;
using LlmArch.Models;
using LlmArch.Server;
using Microsoft.Extensions.AI;
using OpenAI;
using OpenAI.Chat;
using ChatMessage = OpenAI.Chat.ChatMessage;
using ChatFinishReason = OpenAI.Chat.ChatFinishReason;
using ChatResponseFormat = OpenAI.Chat.ChatResponseFormat;

namespace LlmArch.Serving.Tests;

/// <summary>A live server on loopback over the tiny Qwen3 fixture (real engine) and one over the scripted weather assistant.</summary>
public sealed class ServerFixture : IAsyncLifetime
{
    public LlmServer Real { get; private set; } = null!;
    public LlmServer Scripted { get; private set; } = null!;
    public HttpClient Http { get; } = new() { Timeout = TimeSpan.FromSeconds(60) };

    public async Task InitializeAsync()
    {
        Real = await LlmServer.StartAsync(TinyModels.LoadQwen3(), new ServeOptions { Port = 0, Log = false, MaxBodyBytes = 1 << 20 }, ownsModel: true);
        Scripted = await LlmServer.StartAsync(TinyModels.Scripted(TinyModels.WeatherScript), new ServeOptions { Port = 0, Log = false }, ownsModel: true);
    }

    public async Task DisposeAsync()
    {
        Http.Dispose();
        await Real.DisposeAsync();
        await Scripted.DisposeAsync();
    }

    public static ChatClient Client(LlmServer s, string model) =>
        new(model, new ApiKeyCredential("unused"), new OpenAIClientOptions { Endpoint = new Uri(s.BaseAddress, "v1"), NetworkTimeout = TimeSpan.FromSeconds(60) });
}

[CollectionDefinition("server")]
public sealed class ServerCollection : ICollectionFixture<ServerFixture>;

[Collection("server")]
public class ServerTests(ServerFixture f)
{
    private ChatClient Real => ServerFixture.Client(f.Real, "tiny-qwen3");
    private ChatClient Scripted => ServerFixture.Client(f.Scripted, "scripted");

    private async Task<(HttpStatusCode Status, JsonElement Body, HttpResponseMessage Response)> Post(LlmServer s, string path, string body)
    {
        var r = await f.Http.PostAsync(new Uri(s.BaseAddress, path), new StringContent(body, Encoding.UTF8, "application/json"));
        string text = await r.Content.ReadAsStringAsync();
        return (r.StatusCode, JsonDocument.Parse(text).RootElement.Clone(), r);
    }

    private static void AssertError(JsonElement body, string? param, string? code)
    {
        var e = body.GetProperty("error");
        Assert.Equal(JsonValueKind.String, e.GetProperty("message").ValueKind);
        Assert.Equal(JsonValueKind.String, e.GetProperty("type").ValueKind);
        if (param is null) Assert.Equal(JsonValueKind.Null, e.GetProperty("param").ValueKind); else Assert.Equal(param, e.GetProperty("param").GetString());
        if (code is not null) Assert.Equal(code, e.GetProperty("code").GetString());
    }

    [Fact]
    public async Task StreamingAndNonStreamingGiveTheSameTokens()
    {
        var opts = new ChatCompletionOptions { MaxOutputTokenCount = 24, Temperature = 0 };
        ChatMessage[] msgs = [new SystemChatMessage("Be brief."), new UserChatMessage("hello there")];
        ChatCompletion whole = (await Real.CompleteChatAsync(msgs, opts)).Value;
        var streamed = new StringBuilder();
        ChatFinishReason? finish = null;
        ChatTokenUsage? usage = null;
        await foreach (var u in Real.CompleteChatStreamingAsync(msgs, opts))
        {
            foreach (var p in u.ContentUpdate) streamed.Append(p.Text);
            finish ??= u.FinishReason;
            usage ??= u.Usage;
        }
        Assert.Equal(whole.Content.Count > 0 ? whole.Content[0].Text : "", streamed.ToString());
        Assert.Equal(whole.FinishReason, finish);
        Assert.True(whole.Usage.InputTokenCount > 10);
        Assert.InRange(whole.Usage.OutputTokenCount, 1, 24);
        Assert.NotNull(usage);
        Assert.Equal(whole.Usage.OutputTokenCount, usage!.OutputTokenCount);
    }

    [Fact]
    public async Task ConcurrentSeededRequestsEqualSequentialOnes()
    {
        ChatCompletionOptions Opts(int seed) => new() { MaxOutputTokenCount = 12, Temperature = 0.9f, Seed = seed };
        async Task<string> One(int seed) => string.Concat((await Real.CompleteChatAsync([new UserChatMessage("tell me about the weather")], Opts(seed))).Value.Content.Select(c => c.Text));
        var sequential = new List<string>();
        for (int s = 1; s <= 4; s++) sequential.Add(await One(s));
        var concurrent = await Task.WhenAll(Enumerable.Range(1, 4).Select(One));
        Assert.Equal(sequential, concurrent);
        Assert.True(sequential.Distinct().Count() > 1, "different seeds should give different samples");
    }

    [Fact]
    public async Task JsonSchemaResponseFormatIsEnforced()
    {
        const string schema = """{"type":"object","properties":{"color":{"enum":["red","green","blue"]},"count":{"type":"integer"},"ok":{"type":"boolean"}},"required":["color","count","ok"],"additionalProperties":false}""";
        var opts = new ChatCompletionOptions
        {
            MaxOutputTokenCount = 300, Temperature = 0,
            ResponseFormat = ChatResponseFormat.CreateJsonSchemaFormat("thing", BinaryData.FromString(schema), jsonSchemaIsStrict: true),
        };
        var c = (await Real.CompleteChatAsync([new UserChatMessage("describe a thing")], opts)).Value;
        Assert.Equal(ChatFinishReason.Stop, c.FinishReason);
        using var doc = JsonDocument.Parse(c.Content[0].Text);
        var r = doc.RootElement;
        Assert.Contains(r.GetProperty("color").GetString(), new[] { "red", "green", "blue" });
        Assert.Matches("^-?[0-9]+$", r.GetProperty("count").GetRawText());
        Assert.True(r.GetProperty("ok").ValueKind is JsonValueKind.True or JsonValueKind.False);
        Assert.Equal(3, r.EnumerateObject().Count());

        var o = (await Real.CompleteChatAsync([new UserChatMessage("json please")], new ChatCompletionOptions { MaxOutputTokenCount = 200, Temperature = 0, ResponseFormat = ChatResponseFormat.CreateJsonObjectFormat() })).Value;
        if (o.FinishReason == ChatFinishReason.Stop) Assert.Equal(JsonValueKind.Object, JsonDocument.Parse(o.Content[0].Text).RootElement.ValueKind);
        else Assert.StartsWith("{", o.Content[0].Text); // ran out of tokens inside the object: a valid prefix
    }

    [Fact]
    public async Task UnsupportedSchemaIsRefusedNotIgnored()
    {
        var (status, body, _) = await Post(f.Real, "v1/chat/completions",
            """{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"string","pattern":"^a+$"}}}}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("'pattern'", body.GetProperty("error").GetProperty("message").GetString());
    }

    [Fact]
    public async Task ToolCallsThroughTheOpenAiSdk()
    {
        var opts = new ChatCompletionOptions();
        opts.Tools.Add(ChatTool.CreateFunctionTool("get_weather", "Weather of a city", BinaryData.FromString("""{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}""")));
        var c = (await Scripted.CompleteChatAsync([new UserChatMessage("What is the weather in Paris?")], opts)).Value;
        Assert.Equal(ChatFinishReason.ToolCalls, c.FinishReason);
        var call = Assert.Single(c.ToolCalls);
        Assert.Equal("get_weather", call.FunctionName);
        Assert.Equal("Paris", JsonDocument.Parse(call.FunctionArguments).RootElement.GetProperty("city").GetString());
        Assert.StartsWith("call_", call.Id);

        // Streamed: the call arrives as delta.tool_calls.
        var name = new StringBuilder(); var args = new StringBuilder(); string? id = null; ChatFinishReason? finish = null;
        await foreach (var u in Scripted.CompleteChatStreamingAsync([new UserChatMessage("What is the weather in Paris?")], opts))
        {
            foreach (var t in u.ToolCallUpdates) { Assert.Equal(0, t.Index); id ??= t.ToolCallId; name.Append(t.FunctionName); args.Append(t.FunctionArgumentsUpdate?.ToString()); }
            finish ??= u.FinishReason;
        }
        Assert.Equal("get_weather", name.ToString());
        Assert.Equal("""{"city":"Paris"}""", args.ToString());
        Assert.NotNull(id);
        Assert.Equal(ChatFinishReason.ToolCalls, finish);

        // The tool's result goes back; the model answers from it.
        var answer = (await Scripted.CompleteChatAsync([new UserChatMessage("What is the weather in Paris?"), new AssistantChatMessage([call]), new ToolChatMessage(call.Id, "sunny, 24 C")], opts)).Value;
        Assert.Equal("It is sunny in Paris today.", answer.Content[0].Text);
    }

    [Fact]
    public async Task FunctionInvocationLoopThroughMicrosoftExtensionsAiOpenAi()
    {
        int calls = 0;
        var tool = AIFunctionFactory.Create((string city) => { calls++; return $"sunny in {city}"; }, "get_weather", "Weather of a city");
        using var client = new ChatClientBuilder(Scripted.AsIChatClient()).UseFunctionInvocation().Build();
        var r = await client.GetResponseAsync("What is the weather in Paris?", new ChatOptions { Tools = [tool] });
        Assert.Equal(1, calls);
        Assert.Equal("It is sunny in Paris today.", r.Text);
        Assert.Contains(r.Messages, m => m.Contents.OfType<FunctionCallContent>().Any(fc => fc.Name == "get_weather"));

        var streamed = new StringBuilder();
        await foreach (var u in client.GetStreamingResponseAsync("What is the weather in Paris?", new ChatOptions { Tools = [tool] })) streamed.Append(u.Text);
        Assert.Equal("It is sunny in Paris today.", streamed.ToString());
        Assert.Equal(2, calls);
    }

    [Fact]
    public async Task SseCarriesReasoningToolCallsUsageAndDone()
    {
        var req = new HttpRequestMessage(HttpMethod.Post, new Uri(f.Scripted.BaseAddress, "v1/chat/completions"))
        {
            Content = new StringContent("""{"model":"scripted","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"weather?"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]}""", Encoding.UTF8, "application/json"),
        };
        var r = await f.Http.SendAsync(req);
        Assert.Equal("text/event-stream", r.Content.Headers.ContentType!.MediaType);
        var events = (await r.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(e => e["data: ".Length..]).ToList();
        Assert.Equal("[DONE]", events[^1]);
        var chunks = events.SkipLast(1).Select(e => JsonDocument.Parse(e).RootElement).ToList();
        string reasoning = string.Concat(chunks.Where(c => c.GetProperty("choices").GetArrayLength() > 0)
            .Select(c => c.GetProperty("choices")[0].GetProperty("delta")).Where(d => d.TryGetProperty("reasoning_content", out _)).Select(d => d.GetProperty("reasoning_content").GetString()));
        Assert.Equal("I need the weather tool.", reasoning);
        var toolDelta = chunks.Where(c => c.GetProperty("choices").GetArrayLength() > 0).Select(c => c.GetProperty("choices")[0].GetProperty("delta"))
            .Single(d => d.TryGetProperty("tool_calls", out _)).GetProperty("tool_calls")[0];
        Assert.Equal("get_weather", toolDelta.GetProperty("function").GetProperty("name").GetString());
        Assert.Equal("tool_calls", chunks.Where(c => c.GetProperty("choices").GetArrayLength() > 0).Last().GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        var usage = chunks[^1].GetProperty("usage");
        Assert.Equal(0, chunks[^1].GetProperty("choices").GetArrayLength());
        Assert.True(usage.GetProperty("completion_tokens").GetInt32() > 5);
    }

    [Fact]
    public async Task BadRequestsGetOpenAiErrorEnvelopes()
    {
        var (s1, b1, _) = await Post(f.Real, "v1/chat/completions", "{\"messages\": [");
        Assert.Equal(HttpStatusCode.BadRequest, s1); AssertError(b1, null, "invalid_json");
        var (s2, b2, _) = await Post(f.Real, "v1/chat/completions", """{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}""");
        Assert.Equal(HttpStatusCode.BadRequest, s2); AssertError(b2, "temperature", "invalid_type");
        var (s3, b3, _) = await Post(f.Real, "v1/chat/completions", """{"model":"x"}""");
        Assert.Equal(HttpStatusCode.BadRequest, s3); AssertError(b3, "messages", "missing_required_parameter");
        var (s4, b4, _) = await Post(f.Real, "v1/chat/completions", """{"messages":[{"role":"user","content":5}]}""");
        Assert.Equal(HttpStatusCode.BadRequest, s4); AssertError(b4, "messages[0].content", "invalid_type");
        var (s5, b5, _) = await Post(f.Real, "v1/chat/completions", """{"messages":[{"role":"user","content":"x"}],"max_tokens":-3}""");
        Assert.Equal(HttpStatusCode.BadRequest, s5); AssertError(b5, "max_tokens", "invalid_value");
        var (s6, b6, _) = await Post(f.Real, "v1/chat/completions", """{"messages":[{"role":"user","content":"x"}],"top_logprobs":3}""");
        Assert.Equal(HttpStatusCode.BadRequest, s6); AssertError(b6, "top_logprobs", "invalid_value");
        var (s7, b7, _) = await Post(f.Real, "v1/chat/completions", """{"messages":[{"role":"user","content":"x"}],"presence_penalty":0.5}""");
        Assert.Equal(HttpStatusCode.BadRequest, s7); AssertError(b7, "presence_penalty", "unsupported_parameter");
        var (s8, b8, _) = await Post(f.Real, "v1/chat/completions", "[1,2]");
        Assert.Equal(HttpStatusCode.BadRequest, s8); AssertError(b8, null, "invalid_json");
        // A prompt longer than the context (1024 tokens): 400, never truncated.
        var (s9, b9, _) = await Post(f.Real, "v1/chat/completions", JsonSerializer.Serialize(new { messages = new[] { new { role = "user", content = string.Join(" ", Enumerable.Repeat("weather", 1100)) } } }));
        Assert.Equal(HttpStatusCode.BadRequest, s9); AssertError(b9, "messages", "context_length_exceeded");
        var (s10, b10, _) = await Post(f.Real, "v1/chat/completions", """{"messages":[{"role":"user","content":"x"}],"max_tokens":1020}""");
        Assert.Equal(HttpStatusCode.BadRequest, s10); AssertError(b10, "messages", "context_length_exceeded");
        // Tools on a model whose template takes them are fine; a tool_choice naming an unknown function is not.
        var (s11, b11, _) = await Post(f.Real, "v1/chat/completions", """{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"a"}}],"tool_choice":{"type":"function","function":{"name":"b"}}}""");
        Assert.Equal(HttpStatusCode.BadRequest, s11); AssertError(b11, "tool_choice", "invalid_value");
    }

    [Fact]
    public async Task HugeBodiesGet413AndTheServerStaysUp()
    {
        string huge = "{\"messages\":[{\"role\":\"user\",\"content\":\"" + new string('a', 2 << 20) + "\"}]}";
        // With Content-Length: refused before the body is read (the client waits for 100-continue, so it sends nothing).
        var req = new HttpRequestMessage(HttpMethod.Post, new Uri(f.Real.BaseAddress, "v1/chat/completions")) { Content = new StringContent(huge, Encoding.UTF8, "application/json") };
        req.Headers.ExpectContinue = true;
        var r = await f.Http.SendAsync(req);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, r.StatusCode);
        AssertError(JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement, null, "request_too_large");
        // Chunked (no Content-Length): counted while reading; the server answers 413 and closes, so a client still
        // sending may see the connection reset instead. Either way the server stays up.
        var chunked = new HttpRequestMessage(HttpMethod.Post, new Uri(f.Real.BaseAddress, "v1/completions")) { Content = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes(huge))) };
        chunked.Headers.TransferEncodingChunked = true;
        try
        {
            var r2 = await f.Http.SendAsync(chunked);
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, r2.StatusCode);
        }
        catch (HttpRequestException e) when (e.InnerException is IOException) { }
        var ok = await f.Http.GetAsync(new Uri(f.Real.BaseAddress, "health"));
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
    }

    [Fact]
    public async Task UnknownFieldsAreIgnoredAndOptionsWork()
    {
        var (status, body, _) = await Post(f.Real, "v1/chat/completions",
            """{"model":"anything","messages":[{"role":"user","content":[{"type":"text","text":"hello"}]}],"max_completion_tokens":6,"n":2,"seed":5,"temperature":0.7,"top_k":20,"logprobs":true,"top_logprobs":2,"user":"u1","metadata":{"a":1},"some_future_field":[1,2,3]}""");
        Assert.Equal(HttpStatusCode.OK, status);
        var choices = body.GetProperty("choices");
        Assert.Equal(2, choices.GetArrayLength());
        var lp = choices[0].GetProperty("logprobs").GetProperty("content");
        Assert.True(lp.GetArrayLength() >= 1);
        Assert.Equal(2, lp[0].GetProperty("top_logprobs").GetArrayLength());
        Assert.True(lp[0].GetProperty("logprob").GetDouble() <= 0);
        Assert.Equal("chat.completion", body.GetProperty("object").GetString());
        Assert.Equal("tiny-qwen3", body.GetProperty("model").GetString());
    }

    [Fact]
    public async Task StopSequencesEndTheAnswer()
    {
        var full = (await Real.CompleteChatAsync([new UserChatMessage("hello")], new ChatCompletionOptions { MaxOutputTokenCount = 30, Temperature = 0 })).Value.Content[0].Text;
        Assert.True(full.Length > 6, full);
        string stop = full.Substring(3, 2);
        var cut = (await Real.CompleteChatAsync([new UserChatMessage("hello")], new ChatCompletionOptions { MaxOutputTokenCount = 30, Temperature = 0, StopSequences = { stop } })).Value;
        Assert.Equal(full[..full.IndexOf(stop, StringComparison.Ordinal)], cut.Content.Count > 0 ? cut.Content[0].Text : "");
        Assert.Equal(ChatFinishReason.Stop, cut.FinishReason);
    }

    [Fact]
    public async Task CompletionsModelsHealthMetrics()
    {
        var (s1, b1, _) = await Post(f.Real, "v1/completions", """{"model":"tiny-qwen3","prompt":"the weather in Paris","max_tokens":5,"temperature":0,"logprobs":2,"echo":true}""");
        Assert.Equal(HttpStatusCode.OK, s1);
        var choice = b1.GetProperty("choices")[0];
        Assert.StartsWith("the weather in Paris", choice.GetProperty("text").GetString());
        Assert.Equal(b1.GetProperty("usage").GetProperty("completion_tokens").GetInt32(), choice.GetProperty("logprobs").GetProperty("tokens").GetArrayLength());
        var (s2, b2, _) = await Post(f.Real, "v1/completions", """{"prompt":[[5,6,7],[8,9]],"max_tokens":3}""");
        Assert.Equal(HttpStatusCode.OK, s2);
        Assert.Equal(2, b2.GetProperty("choices").GetArrayLength());
        Assert.Equal(5, b2.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        var (s3, b3, _) = await Post(f.Real, "v1/completions", """{"prompt":[5,600000],"max_tokens":3}""");
        Assert.Equal(HttpStatusCode.BadRequest, s3);
        AssertError(b3, null, null);
        var stream = await f.Http.PostAsync(new Uri(f.Real.BaseAddress, "v1/completions"), new StringContent("""{"prompt":"hello","max_tokens":4,"stream":true}""", Encoding.UTF8, "application/json"));
        string sse = await stream.Content.ReadAsStringAsync();
        Assert.EndsWith("data: [DONE]\n\n", sse);
        Assert.Contains("\"object\":\"text_completion\"", sse);

        var models = JsonDocument.Parse(await f.Http.GetStringAsync(new Uri(f.Real.BaseAddress, "v1/models"))).RootElement;
        Assert.Equal("tiny-qwen3", models.GetProperty("data")[0].GetProperty("id").GetString());
        Assert.Equal(HttpStatusCode.NotFound, (await f.Http.GetAsync(new Uri(f.Real.BaseAddress, "v1/models/other"))).StatusCode);
        Assert.Equal("ok", JsonDocument.Parse(await f.Http.GetStringAsync(new Uri(f.Real.BaseAddress, "health"))).RootElement.GetProperty("status").GetString());
        var nf = await f.Http.GetAsync(new Uri(f.Real.BaseAddress, "v1/nothing"));
        Assert.Equal(HttpStatusCode.NotFound, nf.StatusCode);
        AssertError(JsonDocument.Parse(await nf.Content.ReadAsStringAsync()).RootElement, null, "not_found");
        var na = await f.Http.GetAsync(new Uri(f.Real.BaseAddress, "v1/chat/completions"));
        Assert.Equal(HttpStatusCode.MethodNotAllowed, na.StatusCode);
        string metrics = await f.Http.GetStringAsync(new Uri(f.Real.BaseAddress, "metrics"));
        foreach (var name in new[] { "llmarch_queue_depth", "llmarch_active_sequences", "llmarch_generated_tokens_total", "llmarch_prompt_tokens_cached_total", "llmarch_generation_tokens_per_second", "llmarch_http_requests_total{route=\"/v1/completions\",code=\"200\"}" })
            Assert.Contains(name, metrics);
    }
}

/// <summary>Cancellation and back-pressure on a deliberately slow engine (one slot, a queue of one).</summary>
public class ServerFaultTests
{
    private static async Task<(LlmServer, ITextEngine)> SlowServer()
    {
        var tok = LlmArch.Tokenization.Tokenizer.Load(TinyModels.TokenizerDir);
        var engine = new DelayedEngine(TextEngine.Create(ModelLoader.Load(TinyModels.ModelDir), new EngineOptions { MaxSequences = 1, MaxQueue = 1, Context = 256, BeforeStep = () => Thread.Sleep(10) }), TimeSpan.FromMilliseconds(25));
        var model = LlmModel.Create(engine, tok, LlmArch.Tokenization.ChatTemplate.Load(TinyModels.TokenizerDir), null, "slow");
        return (await LlmServer.StartAsync(model, new ServeOptions { Port = 0, Log = false }, ownsModel: true), engine);
    }

    private static async Task WaitFor(Func<bool> condition, string what)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (!condition())
        {
            if (sw.Elapsed > TimeSpan.FromSeconds(20)) throw new TimeoutException(what);
            await Task.Delay(20);
        }
    }

    [Fact]
    public async Task ClientThatDisconnectsIsCancelledAndItsSlotFreed()
    {
        // An engine that produces a token every 20 ms (a long answer), so the generation is still running when the client leaves.
        string longAnswer = string.Join(" ", Enumerable.Repeat("the weather in Paris", 60)) + "<|im_end|>";
        using var model = TinyModels.Scripted(_ => longAnswer, TimeSpan.FromMilliseconds(20));
        await using var server = await LlmServer.StartAsync(model, new ServeOptions { Port = 0, Log = false });
        var client = ServerFixture.Client(server, "scripted");
        using var cts = new CancellationTokenSource();
        int seen = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var u in client.CompleteChatStreamingAsync([new UserChatMessage("hello")], new ChatCompletionOptions { MaxOutputTokenCount = 500 }, cts.Token))
                if (u.ContentUpdate.Count > 0 && ++seen == 3) cts.Cancel();
        });
        await WaitFor(() => model.Engine.Metrics.Active == 0, "the cancelled request's slot was not freed");
        long generated = model.Engine.Metrics.GeneratedTokens;
        int total = model.Tokenizer.Encode(longAnswer).Length;
        Assert.True(generated < total / 2, $"generation went on after the client left ({generated} of {total} tokens)");
        await Task.Delay(200);
        Assert.Equal(generated, model.Engine.Metrics.GeneratedTokens);
        var metrics = await new HttpClient().GetStringAsync(new Uri(server.BaseAddress, "metrics"));
        Assert.Contains("llmarch_client_disconnects_total 1", metrics);
        var after = (await client.CompleteChatAsync([new UserChatMessage("hello")], new ChatCompletionOptions { MaxOutputTokenCount = 3 })).Value;
        Assert.Equal(3, after.Usage.OutputTokenCount);
    }

    [Fact]
    public async Task FullQueueAnswers429AndLaterRequestsSucceed()
    {
        var (server, engine) = await SlowServer();
        await using var _ = server;
        using var http = new HttpClient();
        string Body(int max) => $$"""{"messages":[{"role":"user","content":"hello"}],"max_tokens":{{max}},"stream":true}""";
        var holding = new HttpRequestMessage(HttpMethod.Post, new Uri(server.BaseAddress, "v1/chat/completions")) { Content = new StringContent(Body(200), Encoding.UTF8, "application/json") };
        var first = await http.SendAsync(holding, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        await WaitFor(() => engine.Metrics.Active == 1, "the first request did not start");
        var queued = http.PostAsync(new Uri(server.BaseAddress, "v1/chat/completions"), new StringContent(Body(2).Replace("true", "false"), Encoding.UTF8, "application/json"));
        await WaitFor(() => engine.Metrics.Queued == 1, "the second request was not queued");
        var refused = await http.PostAsync(new Uri(server.BaseAddress, "v1/chat/completions"), new StringContent(Body(2), Encoding.UTF8, "application/json"));
        Assert.Equal((HttpStatusCode)429, refused.StatusCode);
        Assert.Equal("1", refused.Headers.RetryAfter?.ToString());
        var err = JsonDocument.Parse(await refused.Content.ReadAsStringAsync()).RootElement.GetProperty("error");
        Assert.Equal("rate_limit_exceeded", err.GetProperty("code").GetString());
        first.Dispose(); // the client goes away: its slot goes to the queued request
        var second = await queued;
        Assert.Equal(HttpStatusCode.OK, second.StatusCode);
        var ok = await http.PostAsync(new Uri(server.BaseAddress, "v1/chat/completions"), new StringContent(Body(2).Replace("true", "false"), Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
    }
}
