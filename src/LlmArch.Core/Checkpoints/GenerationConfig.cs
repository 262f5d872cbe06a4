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

    public static GenerationConfig? TryLoad(string dir)
    {
        string path = Path.Combine(ModelLocator.Resolve(dir), "generation_config.json");
        if (!File.Exists(path)) return null;
        try
        {
            return JsonSerializer.Deserialize<GenerationConfig>(File.ReadAllText(path),
                new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, NumberHandling = JsonNumberHandling.AllowReadingFromString });
        }
        catch (JsonException e) { throw new ConfigException($"{path}: malformed ({e.Message})"); }
    }
}
