// Load-and-faults benchmark of the OpenAI-compatible server (not part of LlmArch.sln).
//
//   make-model DIR                      a small random Qwen3-architecture model with the real Qwen3 tokenizer
//   run (--url URL [--pid PID] | --model DIR [--parallel N] [--ctx N] [--queue N])
//       [--duration S] [--scale-seconds S] [--clients N] [--max-tokens N] [--out FILE]
//
// Phases: throughput with 1, 8 and N streaming clients (aggregate tok/s, p50/p99 time to first token and
// inter-token latency); time to first token of a long repeated prefix (cold vs warm: the prefix cache); then the
// soak: N streaming clients for --duration seconds while a fault injector sends clients that disconnect mid-stream,
// malformed JSON, huge bodies, invalid parameters and bursts past the queue; RSS sampled every 5 s; afterwards the
// server must answer a normal request correctly. Every request loop is bounded in count and time and only talks to
// the given loopback address.
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using LlmArch;
using LlmArch.Checkpoints;
using LlmArch.Compute;
using LlmArch.Server;

var inv = CultureInfo.InvariantCulture;
if (args.Length == 0 || args[0] is "-h" or "--help") { Console.WriteLine("usage: ServeBench make-model DIR | run (--url URL [--pid PID] | --model DIR) [--duration S] [--scale-seconds S] [--clients N] [--max-tokens N] [--out FILE]"); return 2; }
try
{
    if (args[0] == "make-model") { MakeModel(args.Length > 1 ? args[1] : throw new LlmArchInputException("make-model needs a directory")); return 0; }
    if (args[0] != "run") throw new LlmArchInputException($"unknown command '{args[0]}'");
    var opt = Options(args.Skip(1).ToArray());
    return await Run(opt);
}
catch (LlmArchInputException e) { Console.Error.WriteLine("ServeBench: " + e.Message); return 2; }

static Dictionary<string, string> Options(string[] a)
{
    var d = new Dictionary<string, string>();
    for (int i = 0; i < a.Length; i++)
    {
        if (!a[i].StartsWith("--", StringComparison.Ordinal) || i + 1 >= a.Length) throw new LlmArchInputException($"bad option '{a[i]}'");
        d[a[i][2..]] = a[++i];
    }
    return d;
}

static void MakeModel(string dir)
{
    string root = FindRoot();
    // Qwen3 shapes scaled down (hidden 256, 4 layers) with the real 151,936-row vocabulary: tokenization, the LM
    // head and constrained decoding cost what they cost on the real model; the layers are cheap.
    var cfg = new JsonObject
    {
        ["architectures"] = new JsonArray("Qwen3ForCausalLM"), ["model_type"] = "qwen3", ["vocab_size"] = 151936,
        ["hidden_size"] = 256, ["intermediate_size"] = 768, ["num_hidden_layers"] = 4, ["num_attention_heads"] = 4,
        ["num_key_value_heads"] = 2, ["head_dim"] = 64, ["max_position_embeddings"] = 4096, ["rms_norm_eps"] = 1e-6,
        ["rope_theta"] = 1000000.0, ["tie_word_embeddings"] = true, ["hidden_act"] = "silu", ["bos_token_id"] = 151643, ["eos_token_id"] = 151645,
    };
    Directory.CreateDirectory(dir);
    RandomCheckpoint.Write(ModelConfig.Parse(cfg.ToJsonString(), Path.Combine(dir, "config.json")), dir, DType.BF16, 1);
    foreach (var f in new[] { "tokenizer.json.gz", "tokenizer_config.json" })
        File.Copy(Path.Combine(root, "tests", "fixtures", "tokenizers", "qwen3", f), Path.Combine(dir, f), overwrite: true);
    File.WriteAllText(Path.Combine(dir, "generation_config.json"), """{"eos_token_id":[151645,151643],"do_sample":true,"temperature":0.7,"top_k":20,"top_p":0.8}""");
    Console.WriteLine($"wrote {dir}");
}

static string FindRoot()
{
    var d = new DirectoryInfo(AppContext.BaseDirectory);
    while (d is not null && !File.Exists(Path.Combine(d.FullName, "LlmArch.sln"))) d = d.Parent;
    return d?.FullName ?? throw new LlmArchInputException("repository root not found");
}

static async Task<int> Run(Dictionary<string, string> o)
{
    var inv = CultureInfo.InvariantCulture;
    int Int(string k, int d) => o.TryGetValue(k, out var v) ? int.Parse(v, inv) : d;
    int duration = Int("duration", 600), scaleSeconds = Int("scale-seconds", 30), clients = Int("clients", 64), maxTokens = Int("max-tokens", 48);
    LlmServer? server = null;
    Uri baseUri;
    int pid;
    if (o.TryGetValue("url", out var url)) { baseUri = new Uri(url.EndsWith('/') ? url : url + "/"); pid = Int("pid", 0); }
    else if (o.TryGetValue("model", out var model))
    {
        server = await LlmServer.StartAsync(new ServeOptions
        {
            ModelPath = model, Port = 0, Parallel = Int("parallel", 8), Context = o.ContainsKey("ctx") ? Int("ctx", 0) : null,
            MaxQueue = Int("queue", clients), Log = false, MaxBodyBytes = 1 << 20,
        });
        baseUri = server.BaseAddress; pid = Environment.ProcessId;
    }
    else throw new LlmArchInputException("run needs --url URL or --model DIR");
    if (!baseUri.IsLoopback) throw new LlmArchInputException($"{baseUri}: only loopback servers are benchmarked");

    using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 1024, PooledConnectionLifetime = TimeSpan.FromMinutes(30) }) { Timeout = TimeSpan.FromMinutes(10) };
    var report = new JsonObject { ["server"] = baseUri.ToString(), ["clients"] = clients, ["max_tokens"] = maxTokens, ["duration_s"] = duration };
    var bench = new Bench(http, baseUri, maxTokens);
    Console.WriteLine($"server {baseUri} (rss of pid {(pid == 0 ? "-" : pid.ToString(inv))}); warm-up");
    await bench.Stream("Say hello.", CancellationToken.None);

    // 1. Throughput scaling.
    var scaling = new JsonArray();
    foreach (int c in new[] { 1, 8, clients }.Distinct())
    {
        var r = await bench.Load(c, TimeSpan.FromSeconds(scaleSeconds), faults: false, rss: null, pid);
        Console.WriteLine(string.Create(inv, $"{c,3} clients: {r.TokensPerSecond,8:F1} tok/s aggregate, {r.Requests} requests, TTFT p50 {r.TtftP50,7:F0} ms p99 {r.TtftP99,7:F0} ms, inter-token p50 {r.ItlP50,6:F1} ms p99 {r.ItlP99,6:F1} ms, failed {r.Failed}"));
        scaling.Add(r.Json(c));
    }
    report["scaling"] = scaling;

    // 2. Prefix reuse: the same long prompt, cold then repeated.
    string longPrompt = string.Join(" ", Enumerable.Range(0, 600).Select(i => "word" + (i % 97).ToString(inv)));
    var cold = await bench.Stream(longPrompt + " first", CancellationToken.None, maxTokens: 1);
    var warm = new List<double>();
    for (int i = 0; i < 3; i++) warm.Add((await bench.Stream(longPrompt + " again " + i.ToString(inv), CancellationToken.None, maxTokens: 1)).TtftMs);
    double warmMs = warm.Min();
    Console.WriteLine(string.Create(inv, $"long prefix ({cold.PromptTokens} tokens): TTFT cold {cold.TtftMs:F0} ms, repeated {warmMs:F0} ms ({cold.TtftMs / Math.Max(warmMs, 0.001):F1}x), cached tokens reported {cold.CachedTokens} -> {bench.LastCached}"));
    report["prefix"] = new JsonObject { ["prompt_tokens"] = cold.PromptTokens, ["ttft_cold_ms"] = cold.TtftMs, ["ttft_warm_ms"] = warmMs, ["cached_tokens_warm"] = bench.LastCached };

    // 3. Soak with faults.
    var rss = new List<(double T, long Bytes)>();
    var soak = await bench.Load(clients, TimeSpan.FromSeconds(duration), faults: true, rss, pid);
    Console.WriteLine(string.Create(inv, $"soak {clients} clients x {duration} s: {soak.TokensPerSecond:F1} tok/s, {soak.Requests} requests, failed {soak.Failed}, 429 retried {soak.Busy}, TTFT p50 {soak.TtftP50:F0} ms p99 {soak.TtftP99:F0} ms, inter-token p50 {soak.ItlP50:F1} ms p99 {soak.ItlP99:F1} ms"));
    Console.WriteLine("faults: " + string.Join(", ", soak.Faults.OrderBy(k => k.Key).Select(kv => $"{kv.Key} {kv.Value}")));
    if (rss.Count > 0)
        Console.WriteLine("rss MB: " + string.Join(" ", rss.Select(x => string.Create(inv, $"{x.T:F0}s:{x.Bytes / 1048576.0:F0}"))));
    report["soak"] = soak.Json(clients);
    report["rss"] = new JsonArray(rss.Select(x => (JsonNode)new JsonObject { ["t_s"] = x.T, ["bytes"] = x.Bytes }).ToArray());

    // 4. The server still answers correctly.
    var after = await bench.Stream("Say hello again.", CancellationToken.None);
    var health = await http.GetAsync(new Uri(baseUri, "health"));
    bool healthy = after.Done && after.Tokens > 0 && health.StatusCode == HttpStatusCode.OK;
    Console.WriteLine($"after the soak: {(healthy ? "healthy, a normal request streams to [DONE]" : "NOT HEALTHY")}");
    report["healthy_after"] = healthy;
    if (o.TryGetValue("out", out var outFile)) File.WriteAllText(outFile, report.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    if (server is not null) await server.DisposeAsync();
    return healthy && soak.Failed == 0 ? 0 : 1;
}

sealed record StreamResult(bool Done, int Tokens, double TtftMs, List<double> Itl, int PromptTokens, int CachedTokens, int Status);

sealed class LoadResult
{
    public int Requests, Failed, Busy;
    public long Tokens;
    public double Seconds;
    public readonly List<double> Ttft = new(), Itl = new();
    public readonly Dictionary<string, int> Faults = new();
    public double TokensPerSecond => Seconds > 0 ? Tokens / Seconds : 0;
    static double P(List<double> v, double q) { if (v.Count == 0) return 0; var s = v.OrderBy(x => x).ToList(); return s[Math.Min(s.Count - 1, (int)(q * s.Count))]; }
    public double TtftP50 => P(Ttft, 0.5); public double TtftP99 => P(Ttft, 0.99);
    public double ItlP50 => P(Itl, 0.5); public double ItlP99 => P(Itl, 0.99);
    public JsonObject Json(int clients) => new()
    {
        ["clients"] = clients, ["requests"] = Requests, ["failed"] = Failed, ["busy_retried"] = Busy, ["tokens"] = Tokens, ["seconds"] = Seconds,
        ["tokens_per_s"] = TokensPerSecond, ["ttft_p50_ms"] = TtftP50, ["ttft_p99_ms"] = TtftP99, ["itl_p50_ms"] = ItlP50, ["itl_p99_ms"] = ItlP99,
        ["faults"] = new JsonObject(Faults.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
    };
}

sealed class Bench(HttpClient http, Uri baseUri, int maxTokens)
{
    private static readonly string[] Prompts =
    [
        "Write a short poem about the sea.", "Explain what a hash table is.", "List three prime numbers.", "What is the capital of France?",
        "Describe a sunset in one paragraph.", "Give me a recipe for pancakes.", "Why is the sky blue?", "Count from one to ten.",
    ];
    public int LastCached;

    private HttpRequestMessage Chat(string prompt, int max, bool stream = true) => new(HttpMethod.Post, new Uri(baseUri, "v1/chat/completions"))
    {
        Content = new StringContent(JsonSerializer.Serialize(new
        {
            model = "bench", stream, stream_options = new { include_usage = true }, max_tokens = max, temperature = 0.7, seed = 1,
            messages = new[] { new { role = "user", content = prompt } },
        }), Encoding.UTF8, "application/json"),
    };

    /// <summary>One streaming request: TTFT, gaps between content chunks, usage, whether it ended with [DONE].</summary>
    public async Task<StreamResult> Stream(string prompt, CancellationToken ct, int? maxTokens = null, int abortAfterChunks = -1)
    {
        var sw = Stopwatch.StartNew();
        using var resp = await http.SendAsync(Chat(prompt, maxTokens ?? maxTokens_), HttpCompletionOption.ResponseHeadersRead, ct);
        if (resp.StatusCode != HttpStatusCode.OK) return new StreamResult(false, 0, 0, [], 0, 0, (int)resp.StatusCode);
        using var reader = new StreamReader(await resp.Content.ReadAsStreamAsync(ct));
        double ttft = -1, last = 0;
        var itl = new List<double>();
        int chunks = 0, completion = 0, prompt_ = 0, cached = 0;
        bool done = false;
        while (await reader.ReadLineAsync(ct) is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
            string data = line[6..];
            if (data == "[DONE]") { done = true; break; }
            using var doc = JsonDocument.Parse(data);
            var root = doc.RootElement;
            if (root.TryGetProperty("error", out _)) break;
            if (root.TryGetProperty("usage", out var u) && u.ValueKind == JsonValueKind.Object)
            {
                completion = u.GetProperty("completion_tokens").GetInt32(); prompt_ = u.GetProperty("prompt_tokens").GetInt32();
                cached = u.TryGetProperty("prompt_tokens_details", out var d) ? d.GetProperty("cached_tokens").GetInt32() : 0;
            }
            if (root.GetProperty("choices").GetArrayLength() == 0) continue;
            var delta = root.GetProperty("choices")[0].GetProperty("delta");
            bool content = (delta.TryGetProperty("content", out var c) && c.GetString() is { Length: > 0 }) || delta.TryGetProperty("reasoning_content", out _);
            if (!content) continue;
            double now = sw.Elapsed.TotalMilliseconds;
            if (ttft < 0) ttft = now; else itl.Add(now - last);
            last = now;
            if (++chunks == abortAfterChunks) return new StreamResult(false, chunks, ttft, itl, 0, 0, 499);
        }
        LastCached = cached;
        return new StreamResult(done, completion, Math.Max(ttft, sw.Elapsed.TotalMilliseconds * (ttft < 0 ? 1 : 0)), itl, prompt_, cached, 200);
    }

    private int maxTokens_ => maxTokens;

    public async Task<LoadResult> Load(int clients, TimeSpan duration, bool faults, List<(double, long)>? rss, int pid)
    {
        var result = new LoadResult();
        var sw = Stopwatch.StartNew();
        using var stop = new CancellationTokenSource(duration);
        var workers = Enumerable.Range(0, clients).Select(async i =>
        {
            int n = 0;
            while (!stop.IsCancellationRequested)
            {
                StreamResult r;
                try { r = await Stream(Prompts[(i + n++) % Prompts.Length], CancellationToken.None); }
                catch (Exception) { lock (result) result.Failed++; continue; }
                lock (result)
                {
                    if (r.Status == 429) { result.Busy++; }
                    else if (r.Status != 200 || !r.Done) result.Failed++;
                    else
                    {
                        result.Requests++; result.Tokens += r.Tokens; result.Ttft.Add(r.TtftMs); result.Itl.AddRange(r.Itl);
                    }
                }
                if (r.Status == 429) await Task.Delay(1000);
            }
        }).ToList();
        if (faults) workers.Add(Faults(result, stop.Token));
        if (rss is not null && pid > 0) workers.Add(SampleRss(rss, pid, sw, stop.Token));
        await Task.WhenAll(workers);
        result.Seconds = sw.Elapsed.TotalSeconds;
        return result;
    }

    private static async Task SampleRss(List<(double, long)> rss, int pid, Stopwatch sw, CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            try
            {
                string status = await File.ReadAllTextAsync($"/proc/{pid}/status", CancellationToken.None);
                var line = status.Split('\n').First(l => l.StartsWith("VmRSS:", StringComparison.Ordinal));
                long kb = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
                lock (rss) rss.Add((sw.Elapsed.TotalSeconds, kb * 1024));
            }
            catch (IOException) { return; }
            try { await Task.Delay(5000, ct); } catch (OperationCanceledException) { return; }
        }
    }

    private async Task<int> Status(string path, HttpContent content, CancellationToken ct = default)
    {
        // Expect: 100-continue, so a body the server refuses by its Content-Length is never sent (no broken pipe).
        using var req = new HttpRequestMessage(HttpMethod.Post, new Uri(baseUri, path)) { Content = content };
        req.Headers.ExpectContinue = true;
        using var r = await http.SendAsync(req, ct);
        string body = await r.Content.ReadAsStringAsync(ct);
        if ((int)r.StatusCode >= 400)
        {
            // Every error must be OpenAI's envelope.
            using var doc = JsonDocument.Parse(body);
            var e = doc.RootElement.GetProperty("error");
            _ = e.GetProperty("message").GetString(); _ = e.GetProperty("type").GetString();
            if (!e.TryGetProperty("param", out _) || !e.TryGetProperty("code", out _)) throw new InvalidDataException("error envelope without param/code");
        }
        return (int)r.StatusCode;
    }

    /// <summary>
    /// Starts one fault every 500 ms, round-robin, each on its own (a fault waiting in the queue must not hold up the
    /// next); a fault that is not answered as expected counts as a failure. A client that gives up while its request
    /// is still queued is a disconnect too.
    /// </summary>
    private async Task Faults(LoadResult result, CancellationToken ct)
    {
        var running = new List<Task>();
        int k = 0;
        while (!ct.IsCancellationRequested)
        {
            try { await Task.Delay(500, ct); } catch (OperationCanceledException) { break; }
            string kind = (k++ % 5) switch { 0 => "disconnect", 1 => "malformed_json", 2 => "huge_body", 3 => "invalid_params", _ => "queue_burst" };
            running.Add(Task.Run(async () =>
            {
                bool ok;
                try { ok = await Fault(kind, result); }
                catch (Exception) { ok = false; }
                lock (result)
                {
                    result.Faults[kind] = result.Faults.GetValueOrDefault(kind) + 1;
                    if (!ok) { result.Failed++; result.Faults[kind + "_unexpected"] = result.Faults.GetValueOrDefault(kind + "_unexpected") + 1; }
                }
            }));
        }
        await Task.WhenAll(running);
    }

    private async Task<bool> Fault(string kind, LoadResult result)
    {
        switch (kind)
        {
            case "disconnect":
            {
                using var giveUp = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                try
                {
                    var r = await Stream("Tell me a long story about dragons.", giveUp.Token, maxTokens: 200, abortAfterChunks: 2);
                    return r.Status is 499 or 200 or 429;
                }
                catch (OperationCanceledException) { return true; } // left while queued or mid-stream
            }
            case "malformed_json":
                return await Status("v1/chat/completions", new StringContent("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}", Encoding.UTF8, "application/json")) == 400;
            case "huge_body":
                return await Status("v1/chat/completions", new StringContent("{\"messages\":[{\"role\":\"user\",\"content\":\"" + new string('x', 3 << 20) + "\"}]}", Encoding.UTF8, "application/json")) == 413;
            case "invalid_params":
                return await Status("v1/chat/completions", new StringContent("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":\"hot\",\"max_tokens\":-1}", Encoding.UTF8, "application/json")) == 400;
            default:
            {
                // A burst past the queue: each is answered 200 or 429 (with the envelope), or still queued when the client gives up.
                var codes = await Task.WhenAll(Enumerable.Range(0, 96).Select(async _ =>
                {
                    using var giveUp = new CancellationTokenSource(TimeSpan.FromSeconds(20));
                    try
                    {
                        return await Status("v1/chat/completions", new StringContent("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":2}", Encoding.UTF8, "application/json"), giveUp.Token);
                    }
                    catch (OperationCanceledException) { return 0; }
                }));
                lock (result) result.Faults["queue_full_429"] = result.Faults.GetValueOrDefault("queue_full_429") + codes.Count(c => c == 429);
                return codes.All(c => c is 200 or 429 or 0);
            }
        }
    }
}
