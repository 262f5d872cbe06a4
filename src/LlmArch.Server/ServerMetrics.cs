using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace LlmArch.Server;

/// <summary>
/// The server's counters in Prometheus text format: the engine's (queue, active sequences, tokens, prefix-cache hits,
/// steps), generation tokens/s over the last 10 seconds, HTTP requests by route and status, client disconnects, RSS.
/// </summary>
internal sealed class ServerMetrics : IDisposable
{
    private readonly LlmModel _model;
    private readonly ConcurrentDictionary<(string Route, int Status), long> _requests = new();
    private readonly Queue<(double T, long Tokens)> _window = new();
    private readonly Timer _timer;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private long _disconnects;

    public long Started { get; } = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    public ServerMetrics(LlmModel model)
    {
        _model = model;
        _timer = new Timer(_ => Sample(), null, 0, 1000);
    }

    private void Sample()
    {
        lock (_window)
        {
            _window.Enqueue((_clock.Elapsed.TotalSeconds, _model.Engine.Metrics.GeneratedTokens));
            while (_window.Count > 11) _window.Dequeue();
        }
    }

    public void Request(string route, int status) => _requests.AddOrUpdate((route, status), 1, (_, n) => n + 1);
    public void Disconnect() => Interlocked.Increment(ref _disconnects);

    private double TokensPerSecond()
    {
        lock (_window)
        {
            if (_window.Count < 2) return 0;
            var first = _window.Peek();
            double now = _clock.Elapsed.TotalSeconds;
            long tokens = _model.Engine.Metrics.GeneratedTokens;
            return now > first.T ? (tokens - first.Tokens) / (now - first.T) : 0;
        }
    }

    public string Prometheus()
    {
        var m = _model.Engine.Metrics;
        var sb = new StringBuilder();
        void Metric(string name, string type, string help, double value, string labels = "")
        {
            sb.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
            sb.Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');
            sb.Append(name).Append(labels).Append(' ').Append(value.ToString("R", CultureInfo.InvariantCulture)).Append('\n');
        }
        Metric("llmarch_queue_depth", "gauge", "Requests waiting for an engine slot.", m.Queued);
        Metric("llmarch_active_sequences", "gauge", "Sequences being generated.", m.Active);
        Metric("llmarch_engine_requests_total", "counter", "Requests the engine accepted.", m.Requests);
        Metric("llmarch_prompt_tokens_total", "counter", "Prompt tokens of accepted requests.", m.PromptTokens);
        Metric("llmarch_prompt_tokens_cached_total", "counter", "Prompt tokens taken from the prefix cache instead of being recomputed.", m.CachedPromptTokens);
        Metric("llmarch_prefix_cache_hit_ratio", "gauge", "Cached prompt tokens / prompt tokens.", m.PromptTokens > 0 ? (double)m.CachedPromptTokens / m.PromptTokens : 0);
        Metric("llmarch_generated_tokens_total", "counter", "Tokens generated.", m.GeneratedTokens);
        Metric("llmarch_engine_steps_total", "counter", "Engine steps.", m.Steps);
        Metric("llmarch_generation_tokens_per_second", "gauge", "Generated tokens per second over the last 10 seconds.", TokensPerSecond());
        Metric("llmarch_client_disconnects_total", "counter", "Requests whose client went away before the response ended (their generation was cancelled).", Interlocked.Read(ref _disconnects));
        Metric("llmarch_process_resident_memory_bytes", "gauge", "Resident memory of the server process.", Process.GetCurrentProcess().WorkingSet64);
        sb.Append("# HELP llmarch_http_requests_total HTTP requests by route and status.\n# TYPE llmarch_http_requests_total counter\n");
        foreach (var ((route, status), n) in _requests.OrderBy(kv => kv.Key.Route).ThenBy(kv => kv.Key.Status))
            sb.Append(CultureInfo.InvariantCulture, $"llmarch_http_requests_total{{route=\"{route}\",code=\"{status}\"}} {n}\n");
        return sb.ToString();
    }

    public void Dispose() => _timer.Dispose();
}
