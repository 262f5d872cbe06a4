using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Blocks;

/// <summary>
/// The one place that reads a stack's layer types (<c>layer_types</c>, or the family's default pattern) and builds the
/// per-type RoPE tables (per-type <c>rope_parameters</c>, or the legacy single dict with Gemma's
/// <c>rope_local_base_freq</c> for sliding layers). Layers of a type share one table.
/// </summary>
public static class LayerTypes
{
    /// <summary>
    /// The type of every layer: <c>layer_types</c> when the config has it (checked against the layer count and
    /// <paramref name="allowed"/>), else <paramref name="fallback"/>(i), else null (an untyped stack).
    /// </summary>
    public static string[]? Resolve(ModelConfig c, int layers, Func<int, string>? fallback, params string[] allowed)
    {
        var types = c.CheckedLayerTypes(layers) ?? (fallback is null ? null : Enumerable.Range(0, layers).Select(fallback).ToArray());
        if (types is null || allowed.Length == 0) return types;
        for (int i = 0; i < types.Length; i++)
            if (Array.IndexOf(allowed, types[i]) < 0)
                throw c.Invalid($"layer_types[{i}]", $"is '{types[i]}'; expected {string.Join(" or ", allowed)}");
        return types;
    }

    /// <summary>Gemma's legacy form: sliding layers use <c>rope_local_base_freq</c> (default 10k) with no scaling.</summary>
    public static RopeParameters WithLocalBase(ModelConfig c, string? type)
    {
        if (c.RopeParameters is { } map && type is not null && map.TryGetValue(type, out var r)) return r;
        if (type == "sliding_attention") return new RopeParameters { RopeType = "default", RopeTheta = c.RopeLocalBaseFreq ?? 10000.0 };
        return c.RopeFor(null);
    }
}

/// <summary>One RoPE table per layer type, built on first use from the type's parameters.</summary>
public sealed class RopeTables(ModelConfig config, int headDim, Func<string?, RopeParameters>? parameters = null, int? rotaryDim = null)
{
    private readonly Dictionary<string, RopeTable> _tables = new();

    public RopeTable For(string? layerType)
    {
        string key = layerType ?? "";
        if (!_tables.TryGetValue(key, out var t))
            _tables[key] = t = RotaryEmbedding.Create(config, (parameters ?? config.RopeFor)(layerType), headDim, rotaryDim);
        return t;
    }

    public RopeParameters Parameters(string? layerType) => (parameters ?? config.RopeFor)(layerType);

    /// <summary>Sizes every table for maxTokens positions on b (from CreateCache, so decode steps never grow them).</summary>
    public void Ensure(IBackend b, int maxTokens)
    {
        foreach (var t in _tables.Values) t.Ensure(b, maxTokens);
    }
}
