using System.Reflection;
using LlmArch.Checkpoints;
using LlmArch.Compute;
using LlmArch.Compute.Cpu;

namespace LlmArch.Models;

/// <summary>Options of <see cref="ModelLoader.Load(string, IBackend?, LoadOptions?)"/>.</summary>
public sealed record LoadOptions
{
    /// <summary>Quantize 2-D weights at load (<see cref="DType.Q8_0"/>, <see cref="DType.Q4_0"/>, <see cref="DType.Q4_K"/>), or null to keep the stored dtypes.</summary>
    public DType? Quantize { get; init; }
    /// <summary>
    /// Copy plain-dtype weights out of the memory map into 2 MB-aligned process memory advised for transparent huge
    /// pages: page-cache pages are 4 KB and scattered, which costs decode bandwidth; the copy costs load time.
    /// </summary>
    public bool Copy { get; init; }
    /// <summary>The device to run on ("cpu", "cuda", "cuda:N"); ignored when a backend is passed explicitly.</summary>
    public string? Device { get; init; }
}

/// <summary>
/// Finds the model class for a config (by <c>model_type</c>, falling back to <c>architectures[0]</c>) among the
/// classes marked with <see cref="ModelTypeAttribute"/>, and builds it from a checkpoint directory or from
/// shapes alone.
/// </summary>
public static class ModelLoader
{
    private static readonly Dictionary<string, Type> Types = typeof(ModelLoader).Assembly.GetTypes()
        .SelectMany(t => (t.GetCustomAttribute<ModelTypeAttribute>()?.Names ?? []).Select(n => (n, t)))
        .ToDictionary(x => x.n, x => x.t, StringComparer.Ordinal);

    public static IReadOnlyCollection<string> SupportedTypes => Types.Keys;

    public static Type Resolve(ModelConfig cfg)
    {
        if (cfg.ModelType is { } mt && Types.TryGetValue(mt, out var t)) return t;
        if (cfg.Architectures is { Length: > 0 } a && Types.TryGetValue(a[0], out t)) return t;
        string what = cfg.ModelType is null ? "no model_type" : $"model_type '{cfg.ModelType}'";
        throw new ConfigException($"{cfg.SourcePath}: {what}{(cfg.Architectures is { Length: > 0 } ar ? $" (architectures[0] '{ar[0]}')" : "")} is not supported; supported: {string.Join(", ", Types.Keys.Where(k => !k.Contains("For") && !k.EndsWith("Model")).OrderBy(k => k))}");
    }

    public static CausalLM Create(ModelConfig cfg, WeightSource weights, IBackend? backend = null)
    {
        var type = Resolve(cfg);
        backend ??= Backends.Create("cpu");
        weights.Backend = backend;
        try
        {
            return (CausalLM)Activator.CreateInstance(type, cfg, weights, backend)!;
        }
        catch (TargetInvocationException e) when (e.InnerException is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerException).Throw();
            throw;
        }
    }

    /// <summary>Loads config.json and the safetensors weights of a Hugging Face model directory.</summary>
    public static CausalLM Load(string dir, IBackend? backend = null) => Load(dir, backend, null);

    /// <summary>As <see cref="Load(string, IBackend?)"/>, with load options (weight quantization).</summary>
    public static CausalLM Load(string dir, IBackend? backend, LoadOptions? options)
    {
        if (GgufFile.IsPath(dir)) return LoadGguf(dir, backend, options);
        dir = ModelLocator.Resolve(dir); // a hub cache folder or repo id -> its snapshot directory
        if (!Directory.Exists(dir)) throw new LlmArchInputException($"{dir}: model directory not found");
        var cfg = ModelConfig.Load(Path.Combine(dir, "config.json"));
        Resolve(cfg);
        if (options?.Quantize is { } q && !WeightQuantizer.Supports(q))
            throw new LlmArchInputException($"load-time quantization to {q} is not supported (supported: Q8_0, Q4_0, Q4_K)");
        var weights = new CheckpointWeights(dir) { Fp8Block = Fp8BlockOf(cfg), Quantize = options?.Quantize, Copy = options?.Copy ?? false };
        return Create(cfg, weights, backend ?? Backends.Create(options?.Device));
    }

    /// <summary>A llama.cpp GGUF file: its metadata as the config, its tensors under Hugging Face names.</summary>
    private static CausalLM LoadGguf(string path, IBackend? backend, LoadOptions? options)
    {
        if (!File.Exists(path)) throw new LlmArchInputException($"{path}: GGUF file not found");
        if (options?.Quantize is { } q && !WeightQuantizer.Supports(q))
            throw new LlmArchInputException($"load-time quantization to {q} is not supported (supported: Q8_0, Q4_0, Q4_K)");
        var (cfg, weights) = GgufModel.Open(path, options?.Quantize, options?.Copy ?? false);
        Resolve(cfg);
        return Create(cfg, weights, backend ?? Backends.Create(options?.Device));
    }

    /// <summary>Builds the model's structure from shapes only (no data): parameter accounting for presets.</summary>
    public static CausalLM Describe(ModelConfig cfg) => Create(cfg, new ShapeOnlyWeights(cfg.SourcePath), Backends.ShapeOnly);

    private static (int, int) Fp8BlockOf(ModelConfig cfg)
    {
        var q = cfg.Raw["quantization_config"];
        if (q?["weight_block_size"] is System.Text.Json.Nodes.JsonArray a && a.Count == 2)
            return ((int)a[0]!, (int)a[1]!);
        return (128, 128);
    }
}
