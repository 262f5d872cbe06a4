using System.Runtime.CompilerServices;
using System.Text.Json;
using LlmArch.Checkpoints;
using LlmArch.Compute;
using LlmArch.Compute.Cpu;
using LlmArch.Generation;
using LlmArch.Generation.Constraints;
using LlmArch.Generation.Tools;
using LlmArch.Models;
using LlmArch.Tokenization;

namespace LlmArch;

// The library facade: one object per loaded model that knows its tokenizer, chat template, generation defaults and
// engine, and turns chat requests into token streams and back (template rendering, tool-call and reasoning parsing,
// constrained decoding, stop strings, usage). The IChatClient adapter and the server are thin layers over it.

/// <summary>Options of <see cref="LlmModel.Load"/>.</summary>
public sealed record LlmModelOptions
{
    /// <summary>"cpu", "cuda" or "cuda:N" (when the build has a GPU backend).</summary>
    public string Device { get; init; } = "cpu";
    /// <summary>Split weight matrices over this many devices (tensor parallelism); null = one device.</summary>
    public int? TensorParallel { get; init; }
    /// <summary>Split stacked expert weights over this many devices (expert parallelism); null = one device.</summary>
    public int? ExpertParallel { get; init; }
    /// <summary>Compute threads; null = the machine's cores.</summary>
    public int? Threads { get; init; }
    /// <summary>Tokens per sequence (prompt + generated); null = max_position_embeddings capped at 4096.</summary>
    public int? Context { get; init; }
    /// <summary>Load-time weight quantization: null (keep stored dtypes) or "q8_0".</summary>
    public string? Quantization { get; init; }
    /// <summary>Sequences generated together (the engine's cache slots).</summary>
    public int Parallel { get; init; } = 8;
    /// <summary>Requests that may wait for a slot before new ones are refused.</summary>
    public int MaxQueue { get; init; } = 256;
    /// <summary>Directory of tokenizer.json / tokenizer_config.json when not the model's.</summary>
    public string? TokenizerPath { get; init; }
    /// <summary>The model's id in responses (default: the directory name).</summary>
    public string? Name { get; init; }
}

/// <summary>A prompt (with what generation allows) does not fit the context: the server's 400 context_length_exceeded.</summary>
public sealed class ContextLengthException(string message) : LlmArchInputException(message);

/// <summary>A raw text completion request (the server's /v1/completions).</summary>
public sealed record CompletionRequest
{
    /// <summary>The prompt as text (encoded with the tokenizer's special tokens, e.g. BOS) ...</summary>
    public string? Prompt { get; init; }
    /// <summary>... or as token ids.</summary>
    public int[]? PromptTokens { get; init; }
    public int? MaxTokens { get; init; }
    public SamplingOverrides Sampling { get; init; } = new();
    public IReadOnlyList<string>? Stop { get; init; }
    public bool Logprobs { get; init; }
    public int TopLogprobs { get; init; }
}

/// <summary>One step of a streamed completion; the last carries <see cref="Finish"/> and <see cref="Usage"/>.</summary>
public sealed record TextUpdate(string Text, IReadOnlyList<TokenLogprobInfo>? Logprobs = null, ChatFinish? Finish = null, ChatUsage? Usage = null);

/// <summary>A loaded model: engine, tokenizer, chat template and defaults.</summary>
public sealed class LlmModel : IAsyncDisposable, IDisposable
{
    private readonly IDisposable? _owned;
    private readonly HashSet<int> _stop;
    private readonly HashSet<int> _markerIds = new();
    private TokenVocabulary? _vocab;

    public string Name { get; }
    public ITextEngine Engine { get; }
    public CausalLM Model => Engine.Model;
    public Tokenizer Tokenizer { get; }
    /// <summary>The chat template, or null when the model has none (then only completions work).</summary>
    public ChatTemplate? Template { get; }
    public GenerationConfig? GenerationConfig { get; }
    public ChatFormat Format { get; }
    /// <summary>Ids that end generation: generation_config / config eos ids, the tokenizer's eos, the format's end-of-turn tokens.</summary>
    public IReadOnlyCollection<int> StopTokens => _stop;
    /// <summary>Sampling when a request sets nothing: generation_config.json (greedy unless it says do_sample).</summary>
    public SamplingOptions DefaultSampling { get; }
    public int Context => Engine.Context;

    private LlmModel(string name, ITextEngine engine, Tokenizer tokenizer, ChatTemplate? template, GenerationConfig? gen, IDisposable? owned)
    {
        Name = name; Engine = engine; Tokenizer = tokenizer; Template = template; GenerationConfig = gen; _owned = owned;
        Format = ChatFormat.Detect(template?.Source);
        _stop = new HashSet<int>(gen?.EosTokenId ?? engine.Model.Config.EosTokenId ?? []);
        if (tokenizer.EosTokenId is int e) _stop.Add(e);
        foreach (var t in Format.EndOfTurn) if (tokenizer.TokenToId(t) is int id) _stop.Add(id);
        _stop.RemoveWhere(id => id < 0 || id >= engine.Model.VocabSize);
        foreach (var m in Format.Markers) if (tokenizer.TokenToId(m) is int id) _markerIds.Add(id);
        bool sample = gen?.DoSample == true;
        DefaultSampling = new SamplingOptions
        {
            Temperature = sample ? gen!.Temperature ?? 1.0 : 0,
            TopK = gen?.TopK ?? 0, TopP = gen?.TopP ?? 1.0, MinP = gen?.MinP ?? 0, RepetitionPenalty = gen?.RepetitionPenalty ?? 1.0,
        };
    }

    /// <summary>
    /// Loads a Hugging Face model directory: config.json + safetensors, tokenizer.json (+ tokenizer_config.json),
    /// the chat template (chat_template.jinja or tokenizer_config.json; optional), generation_config.json (optional),
    /// and starts the engine.
    /// </summary>
    public static LlmModel Load(string path, LlmModelOptions? options = null)
    {
        options ??= new LlmModelOptions();
        Backends.CheckName(options.Device);
        if (options.Threads is < 1) throw new LlmArchInputException($"threads must be >= 1 (got {options.Threads})");
        if (options.Parallel < 1) throw new LlmArchInputException($"parallel must be >= 1 (got {options.Parallel})");
        if (options.Context is < 2) throw new LlmArchInputException($"context must be >= 2 (got {options.Context})");
        DType? quant = options.Quantization?.ToLowerInvariant() switch
        {
            null or "" or "none" => null,
            "q8_0" => DType.Q8_0,
            "q4_0" => DType.Q4_0,
            "q4_k" => DType.Q4_K,
            var q => throw new LlmArchInputException($"quantization '{q}' is not supported (supported: q8_0, q4_0, q4_k)"),
        };
        // a llama.cpp GGUF file carries its vocabulary and chat template in its metadata
        if (!GgufFile.Exists(path) && !Directory.Exists(path)) throw new LlmArchInputException($"{path}: model directory not found");
        var tokenizer = ModelTokenizer.Load(path, options.TokenizerPath);
        var template = ModelTokenizer.LoadChatTemplate(path, options.TokenizerPath);
        var gen = GenerationConfig.TryLoad(path);
        CpuThreadPool? pool = options.Threads is int th ? new CpuThreadPool(th) : null;
        try
        {
            if (options.TensorParallel is int a && options.ExpertParallel is int e && a != e)
                throw new LlmArchInputException($"tensor parallel {a} and expert parallel {e} must use the same number of devices");
            IBackend backend = (options.TensorParallel ?? options.ExpertParallel) is int ranks
                ? Backends.CreateSharded(options.Device, ranks, options.TensorParallel is not null, true, pool)
                : string.Equals(options.Device.Trim(), "cpu", StringComparison.OrdinalIgnoreCase) ? new CpuBackend(pool) : Backends.Create(options.Device);
            var model = ModelLoader.Load(path, backend, new LoadOptions { Quantize = quant });
            var engine = TextEngine.Create(model, new EngineOptions { MaxSequences = options.Parallel, Context = options.Context, MaxQueue = options.MaxQueue });
            string name = options.Name ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(path)));
            return new LlmModel(name, engine, tokenizer, template, gen, pool);
        }
        catch { pool?.Dispose(); throw; }
    }

    /// <summary>A model over a given engine (a custom or scripted engine, a model already loaded).</summary>
    public static LlmModel Create(ITextEngine engine, Tokenizer tokenizer, ChatTemplate? template = null, GenerationConfig? generationConfig = null, string name = "model") =>
        new(name, engine, tokenizer, template, generationConfig, null);

    /// <summary>A session over this model's engine, optionally starting from <paramref name="tokens"/>.</summary>
    public LlmSession CreateSession(IEnumerable<int>? tokens = null) => new(this, tokens);

    /// <summary>The vocabulary tables of constrained decoding (built on first use, then cached).</summary>
    public TokenVocabulary Vocabulary => _vocab ??= TokenVocabulary.For(Tokenizer, Model.VocabSize);

    /// <summary>Renders a conversation with the model's chat template (tools as the template takes them).</summary>
    public string RenderChat(IReadOnlyList<ChatTurn> messages, IReadOnlyList<ToolSpec>? tools = null, bool addGenerationPrompt = true,
        IReadOnlyDictionary<string, object?>? extra = null)
    {
        if (Template is null) throw new LlmArchInputException($"model '{Name}' has no chat template (no chat_template.jinja, no chat_template in tokenizer_config.json)");
        return ChatFormat.Render(Template, messages, tools, addGenerationPrompt, extra);
    }

    /// <summary>A chat request made ready for the engine: the rendered prompt, its tokens, the request and the parser.</summary>
    public sealed record PreparedChat(ChatRequest Request, string PromptText, GenerationRequest Generation, OutputParser Parser);

    /// <summary>Validates and renders a request; throws <see cref="LlmArchInputException"/> naming what is wrong.</summary>
    public PreparedChat PrepareChat(ChatRequest request)
    {
        if (request.Messages.Count == 0) throw new LlmArchInputException("messages must not be empty");
        foreach (var m in request.Messages)
            if (m.Role is not ("system" or "user" or "assistant" or "tool" or "developer"))
                throw new LlmArchInputException($"message role '{m.Role}' is not supported (system, user, assistant, tool, developer)");
        var tools = request.ToolChoice == ToolChoiceMode.None || request.Tools is not { Count: > 0 } ? null : request.Tools;
        if (tools is not null && Format.Tools == ToolFormat.None)
            throw new LlmArchInputException($"the chat template of model '{Name}' takes no tools");
        if (tools is not null && request.ResponseFormat != ResponseFormatKind.Text)
            throw new LlmArchInputException("response_format json_object/json_schema together with tools is not supported (a constrained answer could not call them)");
        if (request.ToolChoice == ToolChoiceMode.Required && request.Tools is not { Count: > 0 })
            throw new LlmArchInputException("tool_choice requires a tool but no tools were given");
        if (request.RequiredTool is { } rt && request.Tools?.Any(t => t.Name == rt) != true)
            throw new LlmArchInputException($"tool_choice names function '{rt}', which is not among the tools");
        var extra = new Dictionary<string, object?>(StringComparer.Ordinal);
        if (request.TemplateArgs is not null) foreach (var (k, v) in request.TemplateArgs) extra[k] = v;
        if (request.EnableThinking is bool think) extra["enable_thinking"] = think;
        // A constrained answer (JSON, a forced call) skips the reasoning unless the request asks for it, as gpt-oss's
        // answer goes straight to the final channel: a template that can turn thinking off does.
        else if ((request.ResponseFormat != ResponseFormatKind.Text || request.ToolChoice == ToolChoiceMode.Required)
                 && Template?.Source.Contains("enable_thinking", StringComparison.Ordinal) == true && !extra.ContainsKey("enable_thinking"))
            extra["enable_thinking"] = false;
        // Templates read "system"; OpenAI's newer "developer" role is the same thing.
        var turns = request.Messages.Select(m => m.Role == "developer" ? m with { Role = "system" } : m).ToList();
        string text = RenderChat(turns, tools, addGenerationPrompt: true, extra);
        var prompt = Tokenizer.Encode(text, addSpecialTokens: false);
        bool openReasoning = Format.PromptOpensReasoning(text);

        ITokenConstraint? constraint = null;
        if (request.ResponseFormat != ResponseFormatKind.Text)
        {
            var grammar = request.ResponseFormat == ResponseFormatKind.JsonObject ? JsonSchemaGrammar.AnyObject()
                : JsonSchemaGrammar.Compile(request.Schema ?? throw new LlmArchInputException("response_format json_schema needs a schema"), "response_format.json_schema.schema");
            constraint = WrapAnswer(new JsonConstraint(Vocabulary, grammar, _stop), openReasoning, ClosedReasoning(text));
        }
        else if (request.ToolChoice == ToolChoiceMode.Required && tools is not null)
            constraint = RequiredCall(tools, request.RequiredTool, openReasoning, ClosedReasoning(text));
        if (constraint is null && Model.VocabSize > Tokenizer.VocabSize) constraint = new VocabularyLimit(Tokenizer.VocabSize);
        var gen = MakeGeneration(prompt, request.MaxTokens, request.Sampling, constraint, request.Logprobs, request.TopLogprobs);
        return new PreparedChat(request, text, gen, Format.CreateParser(tools, openReasoning));
    }

    private GenerationRequest MakeGeneration(int[] prompt, int? maxTokens, SamplingOverrides sampling, ITokenConstraint? constraint, bool logprobs, int top)
    {
        if (prompt.Length == 0) throw new LlmArchInputException("the prompt has no tokens");
        if (prompt.Length >= Context)
            throw new ContextLengthException($"the prompt has {prompt.Length} tokens; this model's context is {Context} tokens");
        if (maxTokens is < 0) throw new LlmArchInputException($"max_tokens must be >= 0 (got {maxTokens})");
        if (maxTokens is int mt && prompt.Length + mt > Context)
            throw new ContextLengthException($"the prompt ({prompt.Length} tokens) plus max_tokens ({mt}) exceeds this model's context of {Context} tokens");
        if (top is < 0 or > 20) throw new LlmArchInputException($"top_logprobs must be between 0 and 20 (got {top})");
        var s = sampling.Over(DefaultSampling);
        s.Validate();
        return new GenerationRequest
        {
            Prompt = prompt, MaxNewTokens = maxTokens ?? Context - prompt.Length, Sampling = s, StopTokens = _stop,
            Constraint = constraint, Logprobs = logprobs || top > 0, TopLogprobs = top,
        };
    }

    /// <summary>Puts a constrained answer where the format expects the answer: after gpt-oss's final-channel header, after an optional reasoning block.</summary>
    /// <summary>The template already closed the reasoning (Qwen3 with enable_thinking=false renders an empty think block).</summary>
    private bool ClosedReasoning(string prompt) => Format.ThinkClose is { } c && prompt.TrimEnd().EndsWith(c, StringComparison.Ordinal);

    private ITokenConstraint WrapAnswer(ITokenConstraint inner, bool openReasoning, bool closedReasoning)
    {
        if (Format.Tools == ToolFormat.Harmony)
            return new ForcedPrefix(Tokenizer.Encode("<|channel|>final<|message|>"), inner);
        if (!closedReasoning && Format.ThinkOpen is { } o && Tokenizer.TokenToId(o) is int open && Tokenizer.TokenToId(Format.ThinkClose!) is int close)
            return new ReasoningGate(inner, open, close, openReasoning);
        return inner;
    }

    /// <summary>
    /// tool_choice "required" / a named function: the call's markup is forced and its arguments constrained to the
    /// tool's parameter schema. Formats whose arguments are not JSON (the XML-style ones) are refused.
    /// </summary>
    private ITokenConstraint RequiredCall(IReadOnlyList<ToolSpec> tools, string? name, bool openReasoning, bool closedReasoning)
    {
        var chosen = name is null ? (tools.Count == 1 ? tools[0] : null) : tools.First(t => t.Name == name);
        // The arguments may use only the declared parameters (as OpenAI's strict mode): a schema that leaves
        // additionalProperties open would let a forced call wander in made-up keys.
        string Args(ToolSpec t)
        {
            if (t.Parameters is not { ValueKind: JsonValueKind.Object } p) return """{"type":"object","properties":{},"additionalProperties":false}""";
            var node = System.Text.Json.Nodes.JsonNode.Parse(p.GetRawText())!.AsObject();
            if (!node.ContainsKey("additionalProperties") && node.ContainsKey("properties")) node["additionalProperties"] = false;
            return node.ToJsonString();
        }
        string CallSchema(string nameKey, string argsKey)
        {
            var nameSchema = chosen is not null ? new System.Text.Json.Nodes.JsonObject { ["const"] = chosen.Name }
                : new System.Text.Json.Nodes.JsonObject { ["enum"] = new System.Text.Json.Nodes.JsonArray(tools.Select(t => (System.Text.Json.Nodes.JsonNode?)t.Name).ToArray()) };
            var argsSchema = System.Text.Json.Nodes.JsonNode.Parse(chosen is not null ? Args(chosen) : """{"type":"object"}""");
            var o = new System.Text.Json.Nodes.JsonObject
            {
                ["type"] = "object",
                ["properties"] = new System.Text.Json.Nodes.JsonObject { [nameKey] = nameSchema, [argsKey] = argsSchema },
                ["required"] = new System.Text.Json.Nodes.JsonArray(nameKey, argsKey),
                ["additionalProperties"] = false,
            };
            return o.ToJsonString();
        }
        JsonConstraint Json(string schema) =>
            new(Vocabulary, JsonSchemaGrammar.Compile(JsonDocument.Parse(schema).RootElement, "tools.parameters"), _stop);
        ITokenConstraint Prefixed(string markup, ITokenConstraint c) => new ForcedPrefix(Tokenizer.Encode(markup), c);
        string NeedOne() => chosen?.Name ?? throw new LlmArchInputException(
            $"tool_choice 'required' with several tools is not supported for the {Format.Tools} tool format; name the function to call");
        ITokenConstraint c = Format.Tools switch
        {
            ToolFormat.Hermes => Prefixed("<tool_call>\n", Json(CallSchema("name", "arguments"))),
            ToolFormat.Llama3 => Json(CallSchema("name", "parameters")),
            ToolFormat.Harmony => Prefixed($"<|channel|>commentary to=functions.{NeedOne()} <|constrain|>json<|message|>", Json(Args(chosen!))),
            ToolFormat.Kimi => Prefixed($"<|tool_calls_section_begin|><|tool_call_begin|>functions.{NeedOne()}:0<|tool_call_argument_begin|>", Json(Args(chosen!))),
            ToolFormat.DeepSeek when Template!.Source.Contains("'<｜tool▁sep｜>' + tool['function']['name']", StringComparison.Ordinal) =>
                Prefixed($"<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>{NeedOne()}\n```json\n", Json(Args(chosen!))),
            ToolFormat.DeepSeek => Prefixed($"<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>{NeedOne()}<｜tool▁sep｜>", Json(Args(chosen!))),
            ToolFormat.Mistral when Template!.Source.Contains("[ARGS]", StringComparison.Ordinal) =>
                Prefixed($"[TOOL_CALLS]{NeedOne()}[ARGS]", Json(Args(chosen!))),
            ToolFormat.Mistral => Prefixed("[TOOL_CALLS]", Json("{\"type\":\"array\",\"items\":" + CallSchema("name", "arguments") + ",\"minItems\":1,\"maxItems\":1}")),
            _ => throw new LlmArchInputException($"tool_choice 'required' is not supported for the {Format.Tools} tool format (its arguments are not JSON)"),
        };
        if (!closedReasoning && Format.ThinkOpen is { } o && Tokenizer.TokenToId(o) is int open && Tokenizer.TokenToId(Format.ThinkClose!) is int close)
            c = new ReasoningGate(c, open, close, openReasoning);
        return c;
    }

    /// <summary>Streams a chat response: answer text, reasoning and tool calls as they are recognised, then the finish and usage.</summary>
    public async IAsyncEnumerable<ChatUpdate> ChatStreamAsync(ChatRequest request, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var prepared = PrepareChat(request);
        await foreach (var u in RunChatAsync(prepared, cancellationToken).ConfigureAwait(false)) yield return u;
    }

    /// <summary>Streams the response of a prepared request (see <see cref="PrepareChat"/>).</summary>
    public async IAsyncEnumerable<ChatUpdate> RunChatAsync(PreparedChat prepared, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var request = prepared.Request;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var detok = Tokenizer.CreateStreamingDetokenizer(skipSpecialTokens: false);
        var stop = new StopStrings(request.Stop);
        var parser = prepared.Parser;
        var events = new List<OutputEvent>();
        var pendingLogprobs = new List<TokenLogprobInfo>();
        int completion = 0, cached = 0, toolIndex = 0;
        bool first = true;
        FinishReason? engineFinish = null;
        var updates = new List<ChatUpdate>();

        await foreach (var t in Engine.GenerateAsync(prepared.Generation, cts.Token).ConfigureAwait(false))
        {
            if (first) { cached = t.CachedPromptTokens; first = false; }
            if (t.Finish is { } f) engineFinish = f;
            if (t.Id >= 0)
            {
                completion++;
                if (prepared.Generation.Logprobs) pendingLogprobs.Add(LogprobInfo(t));
                if (!_stop.Contains(t.Id) && (!Tokenizer.IsSpecial(t.Id) || _markerIds.Contains(t.Id)) && t.Id < Tokenizer.VocabSize)
                {
                    string text = stop.Push(detok.Push(t.Id));
                    if (text.Length > 0) parser.Push(text, events);
                }
            }
            Collect(events, updates, ref toolIndex, pendingLogprobs);
            foreach (var u in updates) yield return u;
            updates.Clear();
            if (stop.Matched) { cts.Cancel(); break; }
        }
        cancellationToken.ThrowIfCancellationRequested();
        if (!stop.Matched) parser.Push(stop.Push(detok.Flush()) + stop.Flush(), events);
        parser.Finish(events);
        Collect(events, updates, ref toolIndex, pendingLogprobs);
        foreach (var u in updates) yield return u;
        var finish = toolIndex > 0 ? ChatFinish.ToolCalls : stop.Matched ? ChatFinish.Stop : engineFinish switch
        {
            FinishReason.Length => ChatFinish.Length,
            FinishReason.Cancelled => ChatFinish.Cancelled,
            _ => ChatFinish.Stop,
        };
        yield return new ChatUpdate
        {
            Finish = finish, Usage = new ChatUsage(prepared.Generation.Prompt.Length, completion, cached),
            Logprobs = pendingLogprobs.Count > 0 ? pendingLogprobs.ToArray() : null,
        };
    }

    private void Collect(List<OutputEvent> events, List<ChatUpdate> updates, ref int toolIndex, List<TokenLogprobInfo> logprobs)
    {
        foreach (var e in events)
        {
            ChatUpdate u = e.Kind switch
            {
                OutputEventKind.Content => new ChatUpdate { Content = e.Text },
                OutputEventKind.Reasoning => new ChatUpdate { Reasoning = e.Text },
                _ => new ChatUpdate { ToolCall = new ChatToolCall(e.ToolId ?? Format.NewToolCallId(e.ToolName!, toolIndex), e.ToolName!, e.ArgumentsJson!), ToolCallIndex = toolIndex++ },
            };
            if (logprobs.Count > 0) { u = u with { Logprobs = logprobs.ToArray() }; logprobs.Clear(); }
            updates.Add(u);
        }
        events.Clear();
    }

    private TokenLogprobInfo LogprobInfo(GeneratedToken t) =>
        new(t.Id, TokenText(t.Id), t.Logprob, t.Top?.Select(x => (x.Id, TokenText(x.Id), x.Logprob)).ToArray());

    /// <summary>The text of one token (special tokens as their content; partial UTF-8 as U+FFFD).</summary>
    public string TokenText(int id) => (uint)id < (uint)Tokenizer.VocabSize ? SafeDecode(id) : "";

    private string SafeDecode(int id)
    {
        try { return Tokenizer.Decode([id]); } catch (LlmArchInputException) { return ""; }
    }

    /// <summary>A whole chat response.</summary>
    public async Task<ChatResult> ChatAsync(ChatRequest request, CancellationToken cancellationToken = default)
    {
        var content = new System.Text.StringBuilder();
        var reasoning = new System.Text.StringBuilder();
        var calls = new List<ChatToolCall>();
        var logprobs = request.Logprobs ? new List<TokenLogprobInfo>() : null;
        ChatFinish finish = ChatFinish.Stop;
        ChatUsage usage = new(0, 0, 0);
        await foreach (var u in ChatStreamAsync(request, cancellationToken).ConfigureAwait(false))
        {
            content.Append(u.Content); reasoning.Append(u.Reasoning);
            if (u.ToolCall is not null) calls.Add(u.ToolCall);
            if (u.Logprobs is not null) logprobs?.AddRange(u.Logprobs);
            if (u.Finish is { } f) { finish = f; usage = u.Usage!; }
        }
        return new ChatResult(content.ToString(), reasoning.Length > 0 ? reasoning.ToString() : null, calls, finish, usage, logprobs);
    }

    /// <summary>Validates a completion request and makes its engine request.</summary>
    public GenerationRequest PrepareCompletion(CompletionRequest request)
    {
        int[] prompt = request.PromptTokens ?? Tokenizer.Encode(request.Prompt ?? throw new LlmArchInputException("prompt is required"), addSpecialTokens: true);
        ITokenConstraint? c = Model.VocabSize > Tokenizer.VocabSize ? new VocabularyLimit(Tokenizer.VocabSize) : null;
        return MakeGeneration(prompt, request.MaxTokens, request.Sampling, c, request.Logprobs, request.TopLogprobs);
    }

    /// <summary>Streams a raw completion (special tokens skipped in the text, stop strings applied).</summary>
    public async IAsyncEnumerable<TextUpdate> CompleteStreamAsync(CompletionRequest request, GenerationRequest? prepared = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var gen = prepared ?? PrepareCompletion(request);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var detok = Tokenizer.CreateStreamingDetokenizer(skipSpecialTokens: true);
        var stop = new StopStrings(request.Stop);
        int completion = 0, cached = 0;
        bool first = true;
        FinishReason? engineFinish = null;
        await foreach (var t in Engine.GenerateAsync(gen, cts.Token).ConfigureAwait(false))
        {
            if (first) { cached = t.CachedPromptTokens; first = false; }
            if (t.Finish is { } f) engineFinish = f;
            if (t.Id < 0) continue;
            completion++;
            string text = _stop.Contains(t.Id) || t.Id >= Tokenizer.VocabSize ? "" : stop.Push(detok.Push(t.Id));
            yield return new TextUpdate(text, gen.Logprobs ? [LogprobInfo(t)] : null);
            if (stop.Matched) { cts.Cancel(); break; }
        }
        cancellationToken.ThrowIfCancellationRequested();
        string tail = stop.Matched ? "" : stop.Push(detok.Flush()) + stop.Flush();
        var finish = stop.Matched ? ChatFinish.Stop : engineFinish switch
        {
            FinishReason.Length => ChatFinish.Length, FinishReason.Cancelled => ChatFinish.Cancelled, _ => ChatFinish.Stop,
        };
        yield return new TextUpdate(tail, null, finish, new ChatUsage(gen.Prompt.Length, completion, cached));
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }

    public void Dispose()
    {
        Engine.DisposeAsync().AsTask().GetAwaiter().GetResult();
        _owned?.Dispose();
    }
}

/// <summary>
/// A token sequence to generate from, step by step: append tokens or text, generate (the output is appended), fork,
/// rewind. Every call hands the whole sequence to the engine, whose prefix cache recognises what it has already
/// computed, so a session that grows turn by turn only prefills the new tokens (with an engine that caches prefixes;
/// the serial reference engine recomputes).
/// </summary>
public sealed class LlmSession
{
    private readonly List<int> _tokens;
    public LlmModel Model { get; }
    public IReadOnlyList<int> Tokens => _tokens;
    public int Length => _tokens.Count;

    internal LlmSession(LlmModel model, IEnumerable<int>? tokens)
    {
        Model = model;
        _tokens = new List<int>();
        if (tokens is not null) Append(tokens.ToArray());
    }

    /// <summary>Appends token ids (validated against the vocabulary).</summary>
    public void Append(ReadOnlySpan<int> tokens)
    {
        int V = Model.Model.VocabSize;
        foreach (int t in tokens) if ((uint)t >= (uint)V) throw new LlmArchInputException($"token id {t} is outside the vocabulary of {V}");
        if (_tokens.Count + tokens.Length > Model.Context)
            throw new ContextLengthException($"the session would hold {_tokens.Count + tokens.Length} tokens; the context is {Model.Context}");
        _tokens.AddRange(tokens);
    }

    /// <summary>Appends text (special-token texts in it become their ids; no BOS is added).</summary>
    public void Append(string text) => Append(Model.Tokenizer.Encode(text, addSpecialTokens: false));

    /// <summary>An independent copy (sharing the cached prefix in the engine).</summary>
    public LlmSession Fork() => new(Model, _tokens);

    /// <summary>Drops tokens past <paramref name="length"/>.</summary>
    public void Rewind(int length)
    {
        if (length < 0 || length > _tokens.Count) throw new ArgumentOutOfRangeException(nameof(length), $"length must be in [0, {_tokens.Count}]");
        _tokens.RemoveRange(length, _tokens.Count - length);
    }

    /// <summary>Generates from the current tokens, appending each generated token to the session as it arrives.</summary>
    public async IAsyncEnumerable<GeneratedToken> GenerateAsync(int maxNewTokens, SamplingOptions? sampling = null, ITokenConstraint? constraint = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var request = new GenerationRequest
        {
            Prompt = _tokens.ToArray(), MaxNewTokens = Math.Min(maxNewTokens, Model.Context - _tokens.Count),
            Sampling = sampling ?? Model.DefaultSampling, StopTokens = Model.StopTokens.ToArray(), Constraint = constraint,
        };
        await foreach (var t in Model.Engine.GenerateAsync(request, cancellationToken).ConfigureAwait(false))
        {
            if (t.Id >= 0) _tokens.Add(t.Id);
            yield return t;
        }
    }

    /// <summary>Generates and returns the new text (special tokens skipped).</summary>
    public async Task<string> GenerateTextAsync(int maxNewTokens, SamplingOptions? sampling = null, CancellationToken cancellationToken = default)
    {
        int start = _tokens.Count;
        await foreach (var _ in GenerateAsync(maxNewTokens, sampling, null, cancellationToken).ConfigureAwait(false)) { }
        return Model.Tokenizer.Decode(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_tokens)[start..], skipSpecialTokens: true);
    }
}
