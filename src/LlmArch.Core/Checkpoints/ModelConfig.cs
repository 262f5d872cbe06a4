using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace LlmArch.Checkpoints;

/// <summary>
/// config.json as a typed, immutable record. Property names map 1:1 to Hugging Face keys (snake_case in JSON,
/// PascalCase here); unknown keys are ignored; keys some architectures spell differently (GPT-2's n_embd) are
/// separate properties, and each model reads the ones its reference reads. Partial: a family adds its own keys
/// in a file of its own. Multimodal configs are read through their <c>text_config</c>.
/// </summary>
public sealed partial record ModelConfig
{
    // ---- identity ----
    public string? ModelType { get; init; }
    public string[]? Architectures { get; init; }
    public string? Dtype { get; init; }
    public string? TorchDtype { get; init; }

    // ---- sizes ----
    public int? VocabSize { get; init; }
    public int? HiddenSize { get; init; }
    [JsonConverter(typeof(IntOrListConverter))] public int[]? IntermediateSize { get; init; }
    public int? NumHiddenLayers { get; init; }
    public int? NumAttentionHeads { get; init; }
    public int? NumKeyValueHeads { get; init; }
    public int? HeadDim { get; init; }
    public int? MaxPositionEmbeddings { get; init; }
    public bool? TieWordEmbeddings { get; init; }

    // ---- GPT-2 spellings ----
    public int? NEmbd { get; init; }
    public int? NLayer { get; init; }
    public int? NHead { get; init; }
    public int? NInner { get; init; }
    public int? NPositions { get; init; }
    public int? NCtx { get; init; }
    public double? LayerNormEpsilon { get; init; }
    public string? ActivationFunction { get; init; }
    public bool? ScaleAttnWeights { get; init; }
    public bool? ScaleAttnByInverseLayerIdx { get; init; }
    public bool? ReorderAndUpcastAttn { get; init; }

    // ---- norms, activations, biases ----
    public double? RmsNormEps { get; init; }
    public double? LayerNormEps { get; init; }
    public string? HiddenAct { get; init; }
    public string? HiddenActivation { get; init; }
    public bool? AttentionBias { get; init; }
    public bool? MlpBias { get; init; }
    public bool? UseQkNorm { get; init; }

    // ---- positions ----
    public double? RopeTheta { get; init; }
    /// <summary>Legacy <c>rope_scaling</c> dict.</summary>
    public RopeParameters? RopeScaling { get; init; }
    /// <summary>Current <c>rope_parameters</c>: one dict, or one per layer type; see <see cref="RopeFor"/>.</summary>
    [JsonConverter(typeof(RopeParametersMapConverter))] public Dictionary<string, RopeParameters>? RopeParameters { get; init; }
    public double? PartialRotaryFactor { get; init; }
    public int[]? NoRopeLayers { get; init; }
    public int? NoRopeLayerInterval { get; init; }

    // ---- attention pattern ----
    public string[]? LayerTypes { get; init; }
    public int? SlidingWindow { get; init; }
    public bool? UseSlidingWindow { get; init; }
    public int? MaxWindowLayers { get; init; }
    [JsonPropertyName("_sliding_window_pattern")] public int? SlidingWindowPatternPrivate { get; init; }
    public int? SlidingWindowPattern { get; init; }
    public int? AttentionChunkSize { get; init; }
    public double? QueryPreAttnScalar { get; init; }
    public double? AttnLogitSoftcapping { get; init; }
    public double? FinalLogitSoftcapping { get; init; }

    // ---- generation-related ids ----
    [JsonConverter(typeof(IntOrListConverter))] public int[]? BosTokenId { get; init; }
    [JsonConverter(typeof(IntOrListConverter))] public int[]? EosTokenId { get; init; }
    [JsonConverter(typeof(IntOrListConverter))] public int[]? PadTokenId { get; init; }

    // ---- MoE (shared by the MoE families) ----
    public int? NumLocalExperts { get; init; }
    public int? NumExperts { get; init; }
    public int? NRoutedExperts { get; init; }
    public int? NumExpertsPerTok { get; init; }
    public int? NSharedExperts { get; init; }
    public int? MoeIntermediateSize { get; init; }
    public int? SharedExpertIntermediateSize { get; init; }
    public bool? NormTopkProb { get; init; }
    public int? DecoderSparseStep { get; init; }
    public int[]? MlpOnlyLayers { get; init; }
    public int? FirstKDenseReplace { get; init; }
    public int? MoeLayerFreq { get; init; }
    public int? NGroup { get; init; }
    public int? TopkGroup { get; init; }
    public double? RoutedScalingFactor { get; init; }
    public string? ScoringFunc { get; init; }
    public string? TopkMethod { get; init; }
    public int? InterleaveMoeLayerStep { get; init; }
    public int[]? MoeLayers { get; init; }
    public int? IntermediateSizeMlp { get; init; }

    // ---- extra: everything else, for keys a family reads that are not typed above ----
    [JsonIgnore] public JsonObject Raw { get; init; } = new();
    /// <summary>The file this config came from (for error messages).</summary>
    [JsonIgnore] public string SourcePath { get; init; } = "config.json";

    private static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowReadingFromString | JsonNumberHandling.AllowNamedFloatingPointLiterals,
        AllowTrailingCommas = true,
        ReadCommentHandling = JsonCommentHandling.Skip,
    };

    /// <summary>Largest config.json read (real ones are a few KB; presets with per-layer lists reach ~100 KB).</summary>
    public const long MaxFileBytes = 16L << 20;

    /// <summary>Reads config.json; a nested <c>text_config</c> (multimodal checkpoints) is merged over the top level.</summary>
    public static ModelConfig Load(string path)
    {
        if (!File.Exists(path)) throw new ConfigException($"{path}: file not found");
        return Parse(ReadBounded(path, MaxFileBytes), path);
    }

    /// <summary>A whole file of at most <paramref name="max"/> bytes (an input error beyond, or when unreadable).</summary>
    internal static byte[] ReadBounded(string path, long max)
    {
        try
        {
            using var fs = File.OpenRead(path);
            if (fs.Length > max) throw new ConfigException($"{path}: {fs.Length} bytes is larger than the {max >> 20} MiB limit");
            using var ms = new MemoryStream();
            fs.CopyTo(ms);
            if (ms.Length > max) throw new ConfigException($"{path}: larger than the {max >> 20} MiB limit");
            return ms.ToArray();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new ConfigException($"{path}: cannot read ({e.Message})"); }
    }

    public static ModelConfig Parse(string json, string path = "config.json") => Parse(System.Text.Encoding.UTF8.GetBytes(json), path);

    /// <summary>Parses config.json bytes: strict JSON (see <see cref="StrictJson"/>), typed keys, then <see cref="Validate"/>.</summary>
    public static ModelConfig Parse(byte[] utf8, string path)
    {
        JsonObject root;
        using (var doc = StrictJson.Parse(utf8, path, maxDepth: 32, allowComments: true, notJson: "malformed JSON"))
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new ConfigException($"{path}: not a JSON object");
            root = JsonObject.Create(doc.RootElement.Clone())!;
        }
        if (root["text_config"] is JsonObject text)
        {
            var merged = new JsonObject();
            foreach (var kv in root) if (kv.Key != "text_config" && kv.Key != "vision_config") merged[kv.Key] = kv.Value?.DeepClone();
            foreach (var kv in text) merged[kv.Key] = kv.Value?.DeepClone();
            merged["outer_model_type"] = root["model_type"]?.DeepClone();
            root = merged;
        }
        ModelConfig cfg;
        try
        {
            cfg = root.Deserialize<ModelConfig>(Options) ?? throw new ConfigException($"{path}: empty config");
        }
        catch (JsonException e)
        {
            string key = e.Path is { Length: > 2 } p ? p.TrimStart('$', '.') : "?";
            throw new ConfigException($"{path}: key '{key}' has an unexpected value ({e.Message.Split('.')[0]})");
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or OverflowException or ArgumentException)
        {
            throw new ConfigException($"{path}: a value has an unexpected type ({e.Message.Split('.')[0]})");
        }
        cfg = cfg with { Raw = root, SourcePath = path };
        cfg.Validate();
        return cfg;
    }

    public string ToJson() => Raw.ToJsonString(new JsonSerializerOptions { WriteIndented = true });

    // ---- typed access helpers with errors that name the file and key ----

    public ConfigException Missing(string key) => new($"{SourcePath}: required key '{key}' is missing");
    public ConfigException Invalid(string key, string why) => new($"{SourcePath}: key '{key}' {why}");

    public int Require(int? value, string key) => value ?? throw Missing(key);
    public double Require(double? value, string key) => value ?? throw Missing(key);

    /// <summary>A positive integer, or a clear error.</summary>
    public int RequirePositive(int? value, string key)
    {
        int v = value ?? throw Missing(key);
        return v > 0 ? v : throw Invalid(key, $"must be positive (got {v})");
    }

    /// <summary>An untyped key from <see cref="Raw"/>.</summary>
    public T? Get<T>(string key)
    {
        var node = Raw[key];
        if (node is null) return default;
        try { return node.Deserialize<T>(Options); }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        { throw Invalid(key, $"has an unexpected value {node.ToJsonString()}"); }
    }

    public bool Has(string key) => Raw[key] is not null;

    /// <summary>RoPE parameters for a layer type (per-layer-type dict), or the single dict, or the legacy keys.</summary>
    public RopeParameters RopeFor(string? layerType = null)
    {
        if (RopeParameters is { Count: > 0 } map)
        {
            if (layerType is not null && map.TryGetValue(layerType, out var r)) return r;
            if (map.TryGetValue("", out var flat)) return flat;
            if (map.TryGetValue("full_attention", out var full)) return full;
            return map.Values.First();
        }
        var legacy = RopeScaling ?? new RopeParameters();
        return legacy with
        {
            RopeTheta = legacy.RopeTheta ?? RopeTheta ?? 10000.0,
            RopeType = legacy.RopeType ?? legacy.Type ?? "default",
            PartialRotaryFactor = legacy.PartialRotaryFactor ?? PartialRotaryFactor,
        };
    }

    /// <summary>The layer types, checked against the layer count (or null when the config has none).</summary>
    public string[]? CheckedLayerTypes(int layers)
    {
        if (LayerTypes is null) return null;
        if (LayerTypes.Length != layers)
            throw Invalid("layer_types", $"has {LayerTypes.Length} entries but num_hidden_layers is {layers}");
        return LayerTypes;
    }
}

/// <summary>One RoPE configuration (the <c>rope_parameters</c>/<c>rope_scaling</c> dict).</summary>
public sealed record RopeParameters
{
    public string? RopeType { get; init; }
    /// <summary>Legacy spelling of rope_type.</summary>
    public string? Type { get; init; }
    public double? RopeTheta { get; init; }
    public double? Factor { get; init; }
    public double? LowFreqFactor { get; init; }
    public double? HighFreqFactor { get; init; }
    public int? OriginalMaxPositionEmbeddings { get; init; }
    public double? BetaFast { get; init; }
    public double? BetaSlow { get; init; }
    public double? Mscale { get; init; }
    public double? MscaleAllDim { get; init; }
    public double? AttentionFactor { get; init; }
    public bool? Truncate { get; init; }
    public double? PartialRotaryFactor { get; init; }
    public string Kind => RopeType ?? Type ?? "default";
}

/// <summary>Reads an int, a list of ints, or null.</summary>
public sealed class IntOrListConverter : JsonConverter<int[]?>
{
    public override int[]? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        switch (reader.TokenType)
        {
            case JsonTokenType.Null: return null;
            case JsonTokenType.Number: return [reader.GetInt32()];
            case JsonTokenType.StartArray:
                var list = new List<int>();
                while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
                {
                    if (reader.TokenType != JsonTokenType.Number) throw new JsonException("expected an integer list");
                    list.Add(reader.GetInt32());
                }
                return list.ToArray();
            default: throw new JsonException("expected an integer or a list of integers");
        }
    }

    public override void Write(Utf8JsonWriter writer, int[]? value, JsonSerializerOptions options)
    {
        if (value is null) { writer.WriteNullValue(); return; }
        writer.WriteStartArray(); foreach (var v in value) writer.WriteNumberValue(v); writer.WriteEndArray();
    }
}

/// <summary>Reads <c>rope_parameters</c> as one dict (key "") or a dict of dicts keyed by layer type.</summary>
public sealed class RopeParametersMapConverter : JsonConverter<Dictionary<string, RopeParameters>?>
{
    public override Dictionary<string, RopeParameters>? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.Null) return null;
        using var doc = JsonDocument.ParseValue(ref reader);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw new JsonException("rope_parameters must be an object");
        bool nested = root.EnumerateObject().Any() && root.EnumerateObject().All(p => p.Value.ValueKind is JsonValueKind.Object or JsonValueKind.Null);
        var map = new Dictionary<string, RopeParameters>();
        if (nested)
        {
            foreach (var p in root.EnumerateObject())
                if (p.Value.ValueKind == JsonValueKind.Object) map[p.Name] = p.Value.Deserialize<RopeParameters>(options)!;
        }
        else map[""] = root.Deserialize<RopeParameters>(options)!;
        return map;
    }

    public override void Write(Utf8JsonWriter writer, Dictionary<string, RopeParameters>? value, JsonSerializerOptions options) =>
        throw new NotSupportedException();
}
