using System.Text.Json;
using System.Text.Json.Serialization;

namespace LlmArch.Checkpoints;

/// <summary>generation_config.json: stop ids and default sampling.</summary>
public sealed record GenerationConfig
{
    [JsonConverter(typeof(IntOrListConverter))] public int[]? EosTokenId { get; init; }
    [JsonConverter(typeof(IntOrListConverter))] public int[]? BosTokenId { get; init; }
    public bool? DoSample { get; init; }
    public double? Temperature { get; init; }
    public int? TopK { get; init; }
    public double? TopP { get; init; }
    public double? MinP { get; init; }
    public double? RepetitionPenalty { get; init; }
    public int? MaxNewTokens { get; init; }

    private static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, NumberHandling = JsonNumberHandling.AllowReadingFromString,
    };

    /// <summary>generation_config.json of a model directory (or hub cache folder / repo id), or null when it has none.</summary>
    public static GenerationConfig? TryLoad(string dir)
    {
        string path = Path.Combine(ModelLocator.Resolve(dir), "generation_config.json");
        if (!File.Exists(path)) return null;
        return Parse(ModelConfig.ReadBounded(path, 1 << 20), path);
    }

    /// <summary>Strict JSON (see <see cref="StrictJson"/>), typed keys, and sampling values in the ranges the sampler accepts.</summary>
    public static GenerationConfig Parse(byte[] utf8, string path)
    {
        GenerationConfig g;
        using (var doc = StrictJson.Parse(utf8, path, maxDepth: 16))
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new ConfigException($"{path}: not a JSON object");
            try { g = doc.RootElement.Deserialize<GenerationConfig>(Options)!; }
            catch (JsonException e)
            {
                string key = e.Path is { Length: > 2 } p ? p.TrimStart('$', '.') : "?";
                throw new ConfigException($"{path}: key '{key}' has an unexpected value ({e.Message.Split('.')[0]})");
            }
            catch (Exception e) when (e is InvalidOperationException or FormatException or OverflowException)
            { throw new ConfigException($"{path}: a value has an unexpected type ({e.Message.Split('.')[0]})"); }
        }
        void Check(bool ok, string key, object? v, string range)
        {
            if (!ok) throw new ConfigException($"{path}: key '{key}' must be {range} (got {Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture)})");
        }
        if (g.Temperature is double t) Check(t >= 0 && double.IsFinite(t), "temperature", t, "a finite number >= 0");
        if (g.TopK is int k) Check(k >= 0, "top_k", k, ">= 0");
        if (g.TopP is double p2) Check(p2 > 0 && p2 <= 1, "top_p", p2, "in (0, 1]");
        if (g.MinP is double m) Check(m >= 0 && m <= 1, "min_p", m, "in [0, 1]");
        if (g.RepetitionPenalty is double r) Check(r > 0 && double.IsFinite(r), "repetition_penalty", r, "a finite number > 0");
        if (g.MaxNewTokens is int n) Check(n >= 0, "max_new_tokens", n, ">= 0");
        foreach (var (ids, key) in new[] { (g.EosTokenId, "eos_token_id"), (g.BosTokenId, "bos_token_id") })
            if (ids is not null) foreach (var id in ids) Check(id >= 0, key, id, "a token id >= 0");
        return g;
    }
}
