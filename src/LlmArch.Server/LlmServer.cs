using System.Buffers;
using System.Diagnostics;
using System.Net;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Threading.Channels;
using LlmArch.Generation;
using LlmArch.Generation.Tools;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace LlmArch.Server;

/// <summary>Options of <c>llmarch serve</c>.</summary>
public sealed record ServeOptions
{
    /// <summary>The model directory (config.json, safetensors, tokenizer.json).</summary>
    public string? ModelPath { get; init; }
    public string Host { get; init; } = "127.0.0.1";
    /// <summary>0 = any free port (see <see cref="LlmServer.BaseAddress"/>).</summary>
    public int Port { get; init; } = 8080;
    public string Device { get; init; } = "cpu";
    public int? Threads { get; init; }
    /// <summary>Split weight matrices over this many devices (tensor parallelism).</summary>
    public int? TensorParallel { get; init; }
    /// <summary>Split stacked expert weights over this many devices (expert parallelism).</summary>
    public int? ExpertParallel { get; init; }
    /// <summary>Sequences generated at once (the engine's slots).</summary>
    public int Parallel { get; init; } = 8;
    /// <summary>Tokens per sequence; null = the model's, capped at 4096.</summary>
    public int? Context { get; init; }
    /// <summary>Requests waiting for a slot before new ones get 429.</summary>
    public int MaxQueue { get; init; } = 64;
    /// <summary>Largest request body; larger ones get 413.</summary>
    public long MaxBodyBytes { get; init; } = 4 << 20;
    public string? ModelName { get; init; }
    public string? Quantization { get; init; }
    public string? TokenizerPath { get; init; }
    /// <summary>Write one line per request (and errors) to stderr.</summary>
    public bool Log { get; init; } = true;
}

/// <summary>
/// The OpenAI-compatible HTTP server (ASP.NET Core minimal API) over one <see cref="LlmModel"/>:
/// /v1/chat/completions, /v1/completions, /v1/models, /health, /metrics.
/// </summary>
public sealed class LlmServer : IAsyncDisposable
{
    private static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
    private readonly WebApplication _app;
    private readonly ServeOptions _options;
    private readonly bool _ownsModel;
    private readonly ServerMetrics _metrics;
    private readonly ILogger _log;
    private int _stopped;

    public LlmModel Model { get; }
    /// <summary>Where the server listens, e.g. http://127.0.0.1:8080/.</summary>
    public Uri BaseAddress { get; private set; } = new("http://127.0.0.1/");

    private LlmServer(LlmModel model, ServeOptions options, bool ownsModel)
    {
        Model = model; _options = options; _ownsModel = ownsModel;
        _metrics = new ServerMetrics(model);
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        if (options.Log)
        {
            builder.Logging.AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss "; });
            builder.Logging.AddFilter("Microsoft", LogLevel.Warning);
            builder.Logging.AddFilter("Microsoft.AspNetCore.Server.Kestrel", LogLevel.Error);
        }
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = options.MaxBodyBytes;
            k.AddServerHeader = false;
            if (options.Host is "localhost") k.ListenLocalhost(options.Port);
            else k.Listen(IPAddress.Parse(options.Host), options.Port);
        });
        _app = builder.Build();
        _log = _app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("llmarch.serve");
        Map(_app);
    }

    /// <summary>Loads <see cref="ServeOptions.ModelPath"/> and starts listening.</summary>
    public static async Task<LlmServer> StartAsync(ServeOptions options, CancellationToken cancellationToken = default)
    {
        if (options.ModelPath is null) throw new LlmArchInputException("serve: --model is required");
        var model = LlmModel.Load(options.ModelPath, new LlmModelOptions
        {
            Device = options.Device, Threads = options.Threads, TensorParallel = options.TensorParallel, ExpertParallel = options.ExpertParallel, Context = options.Context, Parallel = options.Parallel,
            MaxQueue = options.MaxQueue, Name = options.ModelName, Quantization = options.Quantization, TokenizerPath = options.TokenizerPath,
        });
        try { return await StartAsync(model, options, ownsModel: true, cancellationToken).ConfigureAwait(false); }
        catch { model.Dispose(); throw; }
    }

    /// <summary>Starts serving an already loaded model (disposed with the server when <paramref name="ownsModel"/>).</summary>
    public static async Task<LlmServer> StartAsync(LlmModel model, ServeOptions options, bool ownsModel = false, CancellationToken cancellationToken = default)
    {
        Validate(options);
        var server = new LlmServer(model, options, ownsModel);
        try
        {
            await server._app.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (IOException e)
        {
            await server._app.DisposeAsync().ConfigureAwait(false);
            throw new LlmArchInputException($"serve: cannot listen on {options.Host}:{options.Port} ({e.Message})");
        }
        var addr = server._app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        server.BaseAddress = new Uri(addr.EndsWith('/') ? addr : addr + "/");
        // Build the constrained-decoding tables now rather than on the first JSON request.
        _ = Task.Run(() => { try { _ = model.Vocabulary; } catch (Exception) { } });
        if (options.Log) server._log.LogInformation("serving {Model} at {Address} (context {Context}, {Parallel} sequences, queue {Queue})", model.Name, server.BaseAddress, model.Context, options.Parallel, options.MaxQueue);
        return server;
    }

    private static void Validate(ServeOptions o)
    {
        if (o.Port is < 0 or > 65535) throw new LlmArchInputException($"serve: --port must be between 0 and 65535 (got {o.Port})");
        if (o.Host != "localhost" && !IPAddress.TryParse(o.Host, out _)) throw new LlmArchInputException($"serve: --host '{o.Host}' is not an IP address or localhost");
        if (o.MaxBodyBytes < 1024) throw new LlmArchInputException($"serve: the body limit must be at least 1024 bytes (got {o.MaxBodyBytes})");
    }

    /// <summary>Loads the model, serves until <paramref name="cancellationToken"/> fires, then stops (what <c>llmarch serve</c> runs).</summary>
    public static async Task RunAsync(ServeOptions options, CancellationToken cancellationToken)
    {
        await using var server = await StartAsync(options, cancellationToken).ConfigureAwait(false);
        await server.RunAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Serves until <paramref name="cancellationToken"/> fires, then stops.</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        try { await Task.Delay(Timeout.Infinite, cancellationToken).ConfigureAwait(false); }
        catch (OperationCanceledException) { }
        await StopAsync().ConfigureAwait(false);
    }

    public async Task StopAsync()
    {
        if (Interlocked.Exchange(ref _stopped, 1) != 0) return;
        await _app.StopAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync().ConfigureAwait(false);
        await _app.DisposeAsync().ConfigureAwait(false);
        _metrics.Dispose();
        if (_ownsModel) await Model.DisposeAsync().ConfigureAwait(false);
    }

    private void Map(WebApplication app)
    {
        app.MapGet("/health", (HttpContext c) => Handle(c, "/health", () => WriteJson(c, 200, w => { w.WriteStartObject(); w.WriteString("status", "ok"); w.WriteEndObject(); })));
        app.MapGet("/metrics", (HttpContext c) => Handle(c, "/metrics", async () =>
        {
            c.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
            await c.Response.WriteAsync(_metrics.Prometheus(), c.RequestAborted).ConfigureAwait(false);
        }));
        app.MapGet("/v1/models", (HttpContext c) => Handle(c, "/v1/models", () => WriteJson(c, 200, w =>
        {
            w.WriteStartObject(); w.WriteString("object", "list"); w.WriteStartArray("data"); ModelObject(w); w.WriteEndArray(); w.WriteEndObject();
        })));
        app.MapGet("/v1/models/{id}", (HttpContext c, string id) => Handle(c, "/v1/models/{id}", () =>
            id == Model.Name ? WriteJson(c, 200, ModelObject) : throw new ApiError(404, $"the model '{id}' does not exist", "model", "model_not_found")));
        app.MapPost("/v1/chat/completions", (HttpContext c) => Handle(c, "/v1/chat/completions", () => ChatCompletions(c)));
        app.MapPost("/v1/completions", (HttpContext c) => Handle(c, "/v1/completions", () => Completions(c)));
        foreach (var path in new[] { "/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions" })
            app.Map(path, (HttpContext c) => Handle(c, path, () => throw new ApiError(405, $"method {c.Request.Method} is not allowed on {path}", null, "method_not_allowed")));
        app.MapFallback((HttpContext c) => Handle(c, "other", () => throw new ApiError(404, $"no route {c.Request.Method} {c.Request.Path}", null, "not_found")));
    }

    private void ModelObject(Utf8JsonWriter w)
    {
        w.WriteStartObject();
        w.WriteString("id", Model.Name); w.WriteString("object", "model"); w.WriteNumber("created", _metrics.Started); w.WriteString("owned_by", "llmarch");
        w.WriteNumber("max_model_len", Model.Context);
        w.WriteEndObject();
    }

    /// <summary>Runs a handler; every failure becomes OpenAI's error envelope (unless the response has started).</summary>
    private async Task Handle(HttpContext c, string route, Func<Task> handler)
    {
        var sw = Stopwatch.StartNew();
        int status = 200;
        try
        {
            await handler().ConfigureAwait(false);
            status = c.Response.StatusCode;
        }
        catch (Exception e) when (c.RequestAborted.IsCancellationRequested && e is OperationCanceledException or IOException or ObjectDisposedException)
        {
            status = 499; // the client went away
            _metrics.Disconnect();
        }
        catch (Exception e)
        {
            var err = e switch
            {
                ApiError a => a,
                BadHttpRequestException b when b.StatusCode == 413 => new ApiError(413, $"the request body exceeds {_options.MaxBodyBytes} bytes", null, "request_too_large"),
                BadHttpRequestException b => new ApiError(b.StatusCode, b.Message),
                ContextLengthException x => new ApiError(400, x.Message, route.Contains("chat") ? "messages" : "prompt", "context_length_exceeded"),
                EngineBusyException x => new ApiError(429, x.Message + "; retry later", null, "rate_limit_exceeded", "rate_limit_error"),
                LlmArchInputException x => new ApiError(400, x.Message),
                _ => new ApiError(500, "internal error: " + e.Message, null, null, "server_error"),
            };
            status = err.Status;
            if (status == 500) _log.LogError(e, "{Method} {Path} failed", c.Request.Method, c.Request.Path);
            if (!c.Response.HasStarted)
            {
                if (status == 429) c.Response.Headers.RetryAfter = "1";
                try { await WriteError(c, err).ConfigureAwait(false); } catch (Exception) when (c.RequestAborted.IsCancellationRequested) { }
            }
            else if (c.Response.ContentType?.StartsWith("text/event-stream", StringComparison.Ordinal) == true)
            {
                try { await WriteSse(c, w => ErrorBody(w, err)).ConfigureAwait(false); } catch (Exception) { }
            }
        }
        _metrics.Request(route, status);
        if (_options.Log) _log.LogInformation("{Method} {Path} {Status} {Ms:F0} ms", c.Request.Method, c.Request.Path.Value, status, sw.Elapsed.TotalMilliseconds);
    }

    private static void ErrorBody(Utf8JsonWriter w, ApiError e)
    {
        w.WriteStartObject(); w.WriteStartObject("error");
        w.WriteString("message", e.Message); w.WriteString("type", e.Type);
        if (e.Param is null) w.WriteNull("param"); else w.WriteString("param", e.Param);
        if (e.Code is null) w.WriteNull("code"); else w.WriteString("code", e.Code);
        w.WriteEndObject(); w.WriteEndObject();
    }

    private static Task WriteError(HttpContext c, ApiError e) => WriteJson(c, e.Status, w => ErrorBody(w, e));

    private static async Task WriteJson(HttpContext c, int status, Action<Utf8JsonWriter> body)
    {
        var buf = new ArrayBufferWriter<byte>(1024);
        using (var w = new Utf8JsonWriter(buf, WriterOptions)) body(w);
        c.Response.StatusCode = status;
        c.Response.ContentType = "application/json";
        c.Response.ContentLength = buf.WrittenCount;
        await c.Response.Body.WriteAsync(buf.WrittenMemory, c.RequestAborted).ConfigureAwait(false);
    }

    private static readonly byte[] DataPrefix = "data: "u8.ToArray(), EventEnd = "\n\n"u8.ToArray();

    private static async Task WriteSse(HttpContext c, Action<Utf8JsonWriter> body)
    {
        var buf = new ArrayBufferWriter<byte>(512);
        buf.Write(DataPrefix);
        using (var w = new Utf8JsonWriter(buf, WriterOptions)) body(w);
        buf.Write(EventEnd);
        await c.Response.Body.WriteAsync(buf.WrittenMemory, c.RequestAborted).ConfigureAwait(false);
        await c.Response.Body.FlushAsync(c.RequestAborted).ConfigureAwait(false);
    }

    private static void StartSse(HttpContext c)
    {
        c.Response.StatusCode = 200;
        c.Response.ContentType = "text/event-stream; charset=utf-8";
        c.Response.Headers.CacheControl = "no-cache";
        c.Response.Headers["X-Accel-Buffering"] = "no";
    }

    private async Task<JsonDocument> ReadBody(HttpContext c)
    {
        long limit = _options.MaxBodyBytes;
        if (c.Request.ContentLength > limit) throw new ApiError(413, $"the request body of {c.Request.ContentLength} bytes exceeds {limit} bytes", null, "request_too_large");
        var buf = new ArrayBufferWriter<byte>(4096);
        while (true)
        {
            var mem = buf.GetMemory(8192);
            int n = await c.Request.Body.ReadAsync(mem, c.RequestAborted).ConfigureAwait(false);
            if (n == 0) break;
            buf.Advance(n);
            if (buf.WrittenCount > limit) throw new ApiError(413, $"the request body exceeds {limit} bytes", null, "request_too_large");
        }
        if (buf.WrittenCount == 0) throw new ApiError(400, "the request body is empty (expected a JSON object)", null, "invalid_json");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(buf.WrittenMemory, new JsonDocumentOptions { MaxDepth = 64 }); }
        catch (JsonException e) { throw new ApiError(400, $"the request body is not valid JSON: {e.Message}", null, "invalid_json"); }
        if (doc.RootElement.ValueKind != JsonValueKind.Object) { doc.Dispose(); throw new ApiError(400, "the request body must be a JSON object", null, "invalid_json"); }
        return doc;
    }

    private static string FinishText(ChatFinish f) => f switch { ChatFinish.Length => "length", ChatFinish.ToolCalls => "tool_calls", _ => "stop" };

    private static string NewId(string prefix) => prefix + Guid.NewGuid().ToString("N")[..24];

    // ---------------- /v1/chat/completions ----------------

    private async Task ChatCompletions(HttpContext c)
    {
        ChatCompletionRequest req;
        using (var doc = await ReadBody(c).ConfigureAwait(false)) req = OpenAiRequests.Chat(doc.RootElement);
        var ct = c.RequestAborted;
        // Prepare (render, validate, tokenize) and start every choice before any byte is sent, so errors keep their status.
        var choices = new List<IAsyncEnumerator<ChatUpdate>>();
        try
        {
            for (int i = 0; i < req.N; i++)
            {
                var chat = req.N > 1 && req.Chat.Sampling.Seed is int s ? req.Chat with { Sampling = req.Chat.Sampling with { Seed = s + i } } : req.Chat;
                var prepared = Model.PrepareChat(chat);
                choices.Add(new Prefetched<ChatUpdate>(Model.RunChatAsync(prepared, ct).GetAsyncEnumerator(ct)));
            }
            // Streaming: the first choice's first token comes before the headers (its errors keep their status); the
            // others start as they are read (priming them all first would deadlock when choices exceed the engine's slots).
            // Whole responses are gathered before anything is written, so every error keeps its status.
            if (req.Stream) await ((Prefetched<ChatUpdate>)choices[0]).PrimeAsync().ConfigureAwait(false);
            string id = NewId("chatcmpl-");
            long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
            if (req.Stream) await StreamChat(c, req, choices, id, created).ConfigureAwait(false);
            else await WholeChat(c, req, choices, id, created).ConfigureAwait(false);
        }
        finally
        {
            foreach (var ch in choices) await ch.DisposeAsync().ConfigureAwait(false);
        }
    }

    private sealed class ChoiceState
    {
        public readonly System.Text.StringBuilder Content = new(), Reasoning = new();
        public readonly List<ChatToolCall> Calls = new();
        public readonly List<TokenLogprobInfo> Logprobs = new();
        public ChatFinish Finish = ChatFinish.Stop;
        public ChatUsage Usage = new(0, 0, 0);
    }

    private async Task WholeChat(HttpContext c, ChatCompletionRequest req, List<IAsyncEnumerator<ChatUpdate>> choices, string id, long created)
    {
        var states = await Task.WhenAll(choices.Select(async e =>
        {
            var s = new ChoiceState();
            while (await e.MoveNextAsync().ConfigureAwait(false))
            {
                var u = e.Current;
                s.Content.Append(u.Content); s.Reasoning.Append(u.Reasoning);
                if (u.ToolCall is not null && (req.ParallelToolCalls || s.Calls.Count == 0)) s.Calls.Add(u.ToolCall);
                if (u.Logprobs is not null) s.Logprobs.AddRange(u.Logprobs);
                if (u.Finish is { } f) { s.Finish = f; s.Usage = u.Usage!; }
            }
            return s;
        })).ConfigureAwait(false);
        await WriteJson(c, 200, w =>
        {
            w.WriteStartObject();
            w.WriteString("id", id); w.WriteString("object", "chat.completion"); w.WriteNumber("created", created); w.WriteString("model", Model.Name);
            w.WriteStartArray("choices");
            for (int i = 0; i < states.Length; i++)
            {
                var s = states[i];
                w.WriteStartObject();
                w.WriteNumber("index", i);
                w.WriteStartObject("message");
                w.WriteString("role", "assistant");
                if (s.Content.Length == 0 && s.Calls.Count > 0) w.WriteNull("content"); else w.WriteString("content", s.Content.ToString());
                if (s.Reasoning.Length > 0) w.WriteString("reasoning_content", s.Reasoning.ToString());
                if (s.Calls.Count > 0)
                {
                    w.WriteStartArray("tool_calls");
                    foreach (var call in s.Calls) ToolCall(w, call, null);
                    w.WriteEndArray();
                }
                w.WriteEndObject();
                if (req.Chat.Logprobs) Logprobs(w, s.Logprobs); else w.WriteNull("logprobs");
                w.WriteString("finish_reason", FinishText(s.Finish));
                w.WriteEndObject();
            }
            w.WriteEndArray();
            Usage(w, states.Select(s => s.Usage));
            w.WriteEndObject();
        }).ConfigureAwait(false);
    }

    private async Task StreamChat(HttpContext c, ChatCompletionRequest req, List<IAsyncEnumerator<ChatUpdate>> choices, string id, long created)
    {
        StartSse(c);
        void Head(Utf8JsonWriter w)
        {
            w.WriteString("id", id); w.WriteString("object", "chat.completion.chunk"); w.WriteNumber("created", created); w.WriteString("model", Model.Name);
        }
        for (int i = 0; i < choices.Count; i++)
        {
            int index = i;
            await WriteSse(c, w =>
            {
                w.WriteStartObject(); Head(w);
                w.WriteStartArray("choices"); w.WriteStartObject(); w.WriteNumber("index", index);
                w.WriteStartObject("delta"); w.WriteString("role", "assistant"); w.WriteString("content", ""); w.WriteEndObject();
                w.WriteNull("logprobs"); w.WriteNull("finish_reason");
                w.WriteEndObject(); w.WriteEndArray(); w.WriteEndObject();
            }).ConfigureAwait(false);
        }
        var usages = new ChatUsage[choices.Count];
        var toolCounts = new int[choices.Count];
        await foreach (var (index, u) in Merge(choices, c.RequestAborted).ConfigureAwait(false))
        {
            if (u.ToolCall is not null && !req.ParallelToolCalls && toolCounts[index] > 0) continue;
            int toolIndex = u.ToolCall is not null ? toolCounts[index]++ : 0;
            if (u.Finish is { } f) usages[index] = u.Usage!;
            bool hasDelta = u.Content is { Length: > 0 } || u.Reasoning is { Length: > 0 } || u.ToolCall is not null;
            if (!hasDelta && u.Finish is null && u.Logprobs is null) continue;
            await WriteSse(c, w =>
            {
                w.WriteStartObject(); Head(w);
                w.WriteStartArray("choices"); w.WriteStartObject(); w.WriteNumber("index", index);
                w.WriteStartObject("delta");
                if (u.Content is { Length: > 0 }) w.WriteString("content", u.Content);
                if (u.Reasoning is { Length: > 0 }) w.WriteString("reasoning_content", u.Reasoning);
                if (u.ToolCall is not null) { w.WriteStartArray("tool_calls"); ToolCall(w, u.ToolCall, toolIndex); w.WriteEndArray(); }
                w.WriteEndObject();
                if (req.Chat.Logprobs && u.Logprobs is not null) Logprobs(w, u.Logprobs); else w.WriteNull("logprobs");
                if (u.Finish is { } fin) w.WriteString("finish_reason", toolCounts[index] > 0 ? "tool_calls" : FinishText(fin)); else w.WriteNull("finish_reason");
                w.WriteEndObject(); w.WriteEndArray();
                w.WriteEndObject();
            }).ConfigureAwait(false);
        }
        if (req.IncludeUsage)
            await WriteSse(c, w => { w.WriteStartObject(); Head(w); w.WriteStartArray("choices"); w.WriteEndArray(); Usage(w, usages); w.WriteEndObject(); }).ConfigureAwait(false);
        await c.Response.Body.WriteAsync("data: [DONE]\n\n"u8.ToArray(), c.RequestAborted).ConfigureAwait(false);
        await c.Response.Body.FlushAsync(c.RequestAborted).ConfigureAwait(false);
    }

    /// <summary>Interleaves several choices' streams as their updates arrive.</summary>
    private static async IAsyncEnumerable<(int Index, T Item)> Merge<T>(List<IAsyncEnumerator<T>> sources, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        if (sources.Count == 1)
        {
            while (await sources[0].MoveNextAsync().ConfigureAwait(false)) yield return (0, sources[0].Current);
            yield break;
        }
        var channel = Channel.CreateUnbounded<(int, T)>();
        var pumps = sources.Select(async (s, i) =>
        {
            while (await s.MoveNextAsync().ConfigureAwait(false)) await channel.Writer.WriteAsync((i, s.Current), ct).ConfigureAwait(false);
        }).ToArray();
        _ = Task.WhenAll(pumps).ContinueWith(t => channel.Writer.TryComplete(t.Exception?.InnerException), TaskScheduler.Default);
        await foreach (var item in channel.Reader.ReadAllAsync(ct).ConfigureAwait(false)) yield return item;
    }

    private static void ToolCall(Utf8JsonWriter w, ChatToolCall call, int? index)
    {
        w.WriteStartObject();
        if (index is int i) w.WriteNumber("index", i);
        w.WriteString("id", call.Id); w.WriteString("type", "function");
        w.WriteStartObject("function"); w.WriteString("name", call.Name); w.WriteString("arguments", call.ArgumentsJson); w.WriteEndObject();
        w.WriteEndObject();
    }

    private static void Bytes(Utf8JsonWriter w, string text)
    {
        w.WriteStartArray("bytes");
        foreach (byte b in System.Text.Encoding.UTF8.GetBytes(text)) w.WriteNumberValue(b);
        w.WriteEndArray();
    }

    private static void Logprobs(Utf8JsonWriter w, IReadOnlyList<TokenLogprobInfo> lps)
    {
        w.WriteStartObject("logprobs");
        w.WriteStartArray("content");
        foreach (var t in lps)
        {
            w.WriteStartObject();
            w.WriteString("token", t.Text); w.WriteNumber("logprob", Finite(t.Logprob)); Bytes(w, t.Text);
            w.WriteStartArray("top_logprobs");
            foreach (var (_, text, lp) in t.Top ?? [])
            {
                w.WriteStartObject(); w.WriteString("token", text); w.WriteNumber("logprob", Finite(lp)); Bytes(w, text); w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteNull("refusal");
        w.WriteEndObject();
    }

    /// <summary>JSON has no infinity: a masked token's log-probability is reported as -9999 (as OpenAI does).</summary>
    private static double Finite(float lp) => float.IsFinite(lp) ? lp : -9999.0;

    private static void Usage(Utf8JsonWriter w, IEnumerable<ChatUsage?> usages)
    {
        int p = 0, comp = 0, cached = 0;
        bool firstChoice = true;
        foreach (var u in usages)
        {
            if (u is null) continue;
            if (firstChoice) { p = u.PromptTokens; cached = u.CachedPromptTokens; firstChoice = false; }
            comp += u.CompletionTokens;
        }
        w.WriteStartObject("usage");
        w.WriteNumber("prompt_tokens", p); w.WriteNumber("completion_tokens", comp); w.WriteNumber("total_tokens", p + comp);
        w.WriteStartObject("prompt_tokens_details"); w.WriteNumber("cached_tokens", cached); w.WriteEndObject();
        w.WriteEndObject();
    }

    // ---------------- /v1/completions ----------------

    private async Task Completions(HttpContext c)
    {
        TextCompletionRequest req;
        using (var doc = await ReadBody(c).ConfigureAwait(false)) req = OpenAiRequests.Completion(doc.RootElement);
        var ct = c.RequestAborted;
        var choices = new List<IAsyncEnumerator<TextUpdate>>();
        var echo = new List<string>();
        try
        {
            foreach (var (p, pi) in req.Prompts.Select((p, i) => (p, i)))
                for (int k = 0; k < req.N; k++)
                {
                    var r = req.N > 1 && p.Sampling.Seed is int s ? p with { Sampling = p.Sampling with { Seed = s + k } } : p;
                    var gen = Model.PrepareCompletion(r);
                    choices.Add(new Prefetched<TextUpdate>(Model.CompleteStreamAsync(r, gen, ct).GetAsyncEnumerator(ct)));
                    echo.Add(req.Echo ? req.PromptTexts[pi] ?? Model.Tokenizer.Decode(p.PromptTokens!) : "");
                }
            if (req.Stream) await ((Prefetched<TextUpdate>)choices[0]).PrimeAsync().ConfigureAwait(false);
            string id = NewId("cmpl-");
            long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
            void Head(Utf8JsonWriter w)
            {
                w.WriteString("id", id); w.WriteString("object", "text_completion"); w.WriteNumber("created", created); w.WriteString("model", Model.Name);
            }
            bool logprobs = req.Prompts[0].Logprobs;
            if (req.Stream)
            {
                StartSse(c);
                var usages = new ChatUsage[choices.Count];
                var echoed = new bool[choices.Count];
                await foreach (var (index, u) in Merge(choices, ct).ConfigureAwait(false))
                {
                    if (u.Usage is not null) usages[index] = u.Usage;
                    string text = (echoed[index] ? "" : echo[index]) + u.Text;
                    echoed[index] = true;
                    if (text.Length == 0 && u.Finish is null && u.Logprobs is null) continue;
                    await WriteSse(c, w =>
                    {
                        w.WriteStartObject(); Head(w);
                        w.WriteStartArray("choices"); w.WriteStartObject();
                        w.WriteNumber("index", index); w.WriteString("text", text);
                        if (logprobs && u.Logprobs is not null) LegacyLogprobs(w, u.Logprobs, 0); else w.WriteNull("logprobs");
                        if (u.Finish is { } f) w.WriteString("finish_reason", FinishText(f)); else w.WriteNull("finish_reason");
                        w.WriteEndObject(); w.WriteEndArray(); w.WriteEndObject();
                    }).ConfigureAwait(false);
                }
                if (req.IncludeUsage) await WriteSse(c, w => { w.WriteStartObject(); Head(w); w.WriteStartArray("choices"); w.WriteEndArray(); CompletionUsage(w, usages); w.WriteEndObject(); }).ConfigureAwait(false);
                await c.Response.Body.WriteAsync("data: [DONE]\n\n"u8.ToArray(), ct).ConfigureAwait(false);
                await c.Response.Body.FlushAsync(ct).ConfigureAwait(false);
                return;
            }
            var results = await Task.WhenAll(choices.Select(async e =>
            {
                var text = new System.Text.StringBuilder();
                var lps = new List<TokenLogprobInfo>();
                ChatFinish finish = ChatFinish.Stop; ChatUsage? usage = null;
                while (await e.MoveNextAsync().ConfigureAwait(false))
                {
                    text.Append(e.Current.Text);
                    if (e.Current.Logprobs is not null) lps.AddRange(e.Current.Logprobs);
                    if (e.Current.Finish is { } f) { finish = f; usage = e.Current.Usage; }
                }
                return (Text: text.ToString(), Lps: lps, Finish: finish, Usage: usage);
            })).ConfigureAwait(false);
            await WriteJson(c, 200, w =>
            {
                w.WriteStartObject(); Head(w);
                w.WriteStartArray("choices");
                for (int i = 0; i < results.Length; i++)
                {
                    w.WriteStartObject();
                    w.WriteNumber("index", i); w.WriteString("text", echo[i] + results[i].Text);
                    if (logprobs) LegacyLogprobs(w, results[i].Lps, echo[i].Length); else w.WriteNull("logprobs");
                    w.WriteString("finish_reason", FinishText(results[i].Finish));
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                CompletionUsage(w, results.Select(r => r.Usage));
                w.WriteEndObject();
            }).ConfigureAwait(false);
        }
        finally
        {
            foreach (var ch in choices) await ch.DisposeAsync().ConfigureAwait(false);
        }
    }

    private static void CompletionUsage(Utf8JsonWriter w, IEnumerable<ChatUsage?> usages)
    {
        // Several prompts: their token counts add up (each choice of a prompt shares its prompt tokens).
        var list = usages.Where(u => u is not null).Select(u => u!).ToList();
        int p = list.Select(u => u.PromptTokens).Sum(), comp = list.Sum(u => u.CompletionTokens), cached = list.Sum(u => u.CachedPromptTokens);
        w.WriteStartObject("usage");
        w.WriteNumber("prompt_tokens", p); w.WriteNumber("completion_tokens", comp); w.WriteNumber("total_tokens", p + comp);
        w.WriteStartObject("prompt_tokens_details"); w.WriteNumber("cached_tokens", cached); w.WriteEndObject();
        w.WriteEndObject();
    }

    private static void LegacyLogprobs(Utf8JsonWriter w, IReadOnlyList<TokenLogprobInfo> lps, int offset)
    {
        w.WriteStartObject("logprobs");
        w.WriteStartArray("tokens"); foreach (var t in lps) w.WriteStringValue(t.Text); w.WriteEndArray();
        w.WriteStartArray("token_logprobs"); foreach (var t in lps) w.WriteNumberValue(Finite(t.Logprob)); w.WriteEndArray();
        w.WriteStartArray("top_logprobs");
        foreach (var t in lps)
        {
            w.WriteStartObject();
            foreach (var (_, text, lp) in t.Top ?? []) if (!string.IsNullOrEmpty(text)) w.WriteNumber(text, Finite(lp));
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteStartArray("text_offset");
        foreach (var t in lps) { w.WriteNumberValue(offset); offset += t.Text.Length; }
        w.WriteEndArray();
        w.WriteEndObject();
    }
}

/// <summary>
/// An enumerator whose first item is fetched before the response starts: errors raised before the first token
/// (queue full, prompt too long) then still get their own status code.
/// </summary>
internal sealed class Prefetched<T>(IAsyncEnumerator<T> inner) : IAsyncEnumerator<T>
{
    private bool _primed, _hasFirst, _firstTaken;

    public async Task PrimeAsync()
    {
        _hasFirst = await inner.MoveNextAsync().ConfigureAwait(false);
        _primed = true;
    }

    public T Current => inner.Current;

    public async ValueTask<bool> MoveNextAsync()
    {
        if (!_primed) await PrimeAsync().ConfigureAwait(false);
        if (!_firstTaken) { _firstTaken = true; return _hasFirst; }
        return await inner.MoveNextAsync().ConfigureAwait(false);
    }

    public ValueTask DisposeAsync() => inner.DisposeAsync();
}
