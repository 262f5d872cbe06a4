using System.Runtime.CompilerServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using LlmArch.Generation;
using LlmArch.Models;
using LlmArch.Tokenization;

namespace LlmArch.Serving.Tests;

/// <summary>
/// Models for end-to-end tests: the tiny random Qwen3 fixture (vocabulary 512) with a byte-level BPE tokenizer made to
/// fit it (256 byte tokens, merges of common words, the Qwen3 chat template's special tokens) and the real Qwen3 chat
/// template; and scripted engines over the same model that emit a chosen text (a tool call, reasoning, an answer).
/// </summary>
public static class TinyModels
{
    private static readonly Lazy<string> TokenizerDirLazy = new(WriteTokenizer);
    public static string TokenizerDir => TokenizerDirLazy.Value;

    private static readonly string[] Specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>"];

    private static string WriteTokenizer()
    {
        string dir = Path.Combine(Path.GetTempPath(), "llmarch-serving-tok-" + Environment.ProcessId);
        Directory.CreateDirectory(dir);
        var alphabet = new string[256];
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            alphabet[b] = ((char)(printable ? b : 256 + n++)).ToString();
        }
        var vocab = new JsonObject();
        var ids = new Dictionary<string, int>();
        for (int b = 0; b < 256; b++) { vocab[alphabet[b]] = b; ids[alphabet[b]] = b; }
        var merges = new JsonArray();
        string words = "the weather Paris city name arguments get_weather sunny today you are assistant system user tool call think hello there " +
                       "what is in for of and to it be on with as at by this that from or an he she they we not but all can will one two three";
        int limit = 512 - Specials.Length;
        foreach (var w in words.Split(' ').SelectMany(w => new[] { w, "Ġ" + w }))
        {
            string cur = w[..1];
            for (int i = 1; i < w.Length && ids.Count < limit; i++)
            {
                string next = w[i].ToString(), merged = cur + next;
                if (!ids.ContainsKey(merged)) { ids[merged] = ids.Count; vocab[merged] = ids[merged]; merges.Add(cur + " " + next); }
                cur = merged;
            }
        }
        for (char a = 'a'; a <= 'z' && ids.Count < limit; a++)
            for (char b = 'a'; b <= 'z' && ids.Count < limit; b++)
            {
                string merged = $"{a}{b}";
                if (!ids.ContainsKey(merged)) { ids[merged] = ids.Count; vocab[merged] = ids[merged]; merges.Add($"{a} {b}"); }
            }
        var added = new JsonArray();
        for (int i = 0; i < Specials.Length; i++)
            added.Add(new JsonObject { ["id"] = limit + i, ["content"] = Specials[i], ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                ["normalized"] = false, ["special"] = Specials[i].StartsWith("<|") });
        var tok = new JsonObject
        {
            ["version"] = "1.0", ["added_tokens"] = added, ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = true },
            ["post_processor"] = null, ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject { ["type"] = "BPE", ["vocab"] = vocab, ["merges"] = merges },
        };
        if (ids.Count != limit) throw new InvalidOperationException($"synthetic vocabulary has {ids.Count} tokens, expected {limit}");
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), tok.ToJsonString());
        string template = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestData.TokenizerDir("qwen3"), "tokenizer_config.json"))).RootElement.GetProperty("chat_template").GetString()!;
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), new JsonObject
        {
            ["chat_template"] = template, ["eos_token"] = "<|im_end|>", ["pad_token"] = "<|endoftext|>",
        }.ToJsonString());
        return dir;
    }

    private static readonly Lazy<string> ModelDirLazy = new(() =>
    {
        // The fixture's max_position_embeddings is 256; tool prompts spelled in 505 byte-level tokens are longer, so
        // the copy allows 2048 positions (default RoPE: nothing else changes).
        string dir = Path.Combine(Path.GetTempPath(), "llmarch-serving-qwen3-" + Environment.ProcessId);
        Directory.CreateDirectory(dir);
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(TestData.Fixture("qwen3"), "config.json")))!;
        cfg["max_position_embeddings"] = 2048;
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());
        foreach (var f in new[] { "model.safetensors", "generation_config.json" })
            File.Copy(Path.Combine(TestData.Fixture("qwen3"), f), Path.Combine(dir, f), overwrite: true);
        return dir;
    });
    public static string ModelDir => ModelDirLazy.Value;

    /// <summary>The Qwen3 fixture (with a 2048-position config) and the synthetic tokenizer behind the real engine.</summary>
    public static LlmModel LoadQwen3(int parallel = 4, int maxQueue = 64) =>
        LlmModel.Load(ModelDir, new LlmModelOptions { TokenizerPath = TokenizerDir, Context = 1024, Parallel = parallel, MaxQueue = maxQueue, Name = "tiny-qwen3", Threads = 1 });

    private static readonly Lazy<CausalLM> Qwen3Model = new(() => ModelLoader.Load(ModelDir));

    /// <summary>A model whose engine answers by script (<see cref="ScriptedEngine"/>), with the synthetic tokenizer and the Qwen3 template.</summary>
    public static LlmModel Scripted(Func<string, string> script, TimeSpan? perToken = null)
    {
        var tok = Tokenizer.Load(TokenizerDir);
        var engine = new ScriptedEngine(Qwen3Model.Value, tok, script, perToken ?? TimeSpan.Zero);
        return LlmModel.Create(engine, tok, ChatTemplate.Load(TokenizerDir), null, "scripted");
    }

    /// <summary>The assistant that calls get_weather when asked about weather and answers from the tool's result.</summary>
    public static string WeatherScript(string prompt)
    {
        int lastUser = prompt.LastIndexOf("<|im_start|>user", StringComparison.Ordinal);
        string tail = lastUser >= 0 ? prompt[lastUser..] : prompt;
        if (tail.Contains("<tool_response>")) return "<think>\nThe tool answered.\n</think>\n\nIt is sunny in Paris today.<|im_end|>";
        if (prompt.Contains("weather")) return "<think>\nI need the weather tool.\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>";
        return "<think>\nA greeting.\n</think>\n\nHello there, you are in Paris!<|im_end|>";
    }
}

/// <summary>
/// An engine that emits the tokens of a scripted text (chosen from the decoded prompt), one by one, stopping at a stop
/// token like a model would; it validates prompts like the real engine and honours cancellation.
/// </summary>
public sealed class ScriptedEngine(CausalLM model, Tokenizer tokenizer, Func<string, string> script, TimeSpan perToken) : ITextEngine
{
    private int _active;
    private long _requests, _generated, _prompt;
    public CausalLM Model => model;
    public int Context => 1024;
    public EngineMetrics Metrics => new() { Active = Volatile.Read(ref _active), Requests = Interlocked.Read(ref _requests), GeneratedTokens = Interlocked.Read(ref _generated), PromptTokens = Interlocked.Read(ref _prompt) };

    public async IAsyncEnumerable<GeneratedToken> GenerateAsync(GenerationRequest request, [EnumeratorCancellation] CancellationToken ct = default)
    {
        if (request.Prompt.Length >= Context) throw new LlmArchInputException($"the prompt of {request.Prompt.Length} tokens does not fit the context of {Context} tokens");
        var tokens = tokenizer.Encode(script(tokenizer.Decode(request.Prompt)));
        Interlocked.Increment(ref _requests);
        Interlocked.Add(ref _prompt, request.Prompt.Length);
        Interlocked.Increment(ref _active);
        try
        {
            int n = Math.Min(tokens.Length, request.MaxNewTokens);
            if (n == 0) { yield return new GeneratedToken(-1, 0, null, FinishReason.Length); yield break; }
            for (int i = 0; i < n; i++)
            {
                if (perToken > TimeSpan.Zero) await Task.Delay(perToken, CancellationToken.None);
                else await Task.Yield();
                if (ct.IsCancellationRequested) { yield return new GeneratedToken(-1, 0, null, FinishReason.Cancelled); yield break; }
                int t = tokens[i];
                request.Constraint?.Accept(t);
                Interlocked.Increment(ref _generated);
                bool stop = request.StopTokens?.Contains(t) == true;
                yield return new GeneratedToken(t, -0.5f, null, stop ? FinishReason.Stop : i == n - 1 ? FinishReason.Length : null) { CachedPromptTokens = 0 };
                if (stop) yield break;
            }
        }
        finally { Interlocked.Decrement(ref _active); }
    }

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}

/// <summary>Slows a real engine down (a fixed delay per token) so tests can hold a slot or fill the queue deterministically.</summary>
public sealed class DelayedEngine(ITextEngine inner, TimeSpan perToken) : ITextEngine
{
    public CausalLM Model => inner.Model;
    public int Context => inner.Context;
    public EngineMetrics Metrics => inner.Metrics;

    public async IAsyncEnumerable<GeneratedToken> GenerateAsync(GenerationRequest request, [EnumeratorCancellation] CancellationToken ct = default)
    {
        await foreach (var t in inner.GenerateAsync(request, ct))
        {
            await Task.Delay(perToken, CancellationToken.None);
            yield return t;
        }
    }

    public ValueTask DisposeAsync() => inner.DisposeAsync();
}
