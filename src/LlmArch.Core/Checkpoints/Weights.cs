using System.Text.Json;
using LlmArch.Compute;
using LlmArch.Compute.Cpu;

namespace LlmArch.Checkpoints;

/// <summary>How a weight counts in parameter accounting.</summary>
public readonly record struct WeightUse(bool Embedding = false, double ActiveFraction = 1.0)
{
    // new() on a record struct skips the primary constructor's defaults (ActiveFraction would be 0): name an argument.
    public static WeightUse Dense => new(Embedding: false);
    public static WeightUse Embed => new(Embedding: true);
    /// <summary>An expert weight: only <paramref name="active"/> of <paramref name="total"/> experts run per token.</summary>
    public static WeightUse Expert(int active, int total) => new(ActiveFraction: (double)active / total);
}

/// <summary>One weight as the model asked for it (for <c>info</c>, <c>compare</c> and the loader's checks).</summary>
public sealed record WeightRecord(string Name, long[] Shape, DType DType, WeightUse Use)
{
    public long Count => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// What a model is built from: a real checkpoint (tensors memory-mapped), or shapes only (analysis of a preset,
/// where nothing is loaded). Models ask for each weight by its checkpoint name and expected shape; the source
/// checks it and records it, so parameter counts come from the same code that builds the model.
/// </summary>
public abstract class WeightSource
{
    private readonly List<WeightRecord> _records = new();
    public IReadOnlyList<WeightRecord> Records => _records;
    /// <summary>False for a shape-only source: tensors have no data; models must not compute with them at build time.</summary>
    public abstract bool HasData { get; }
    /// <summary>Where the weights live (for error messages).</summary>
    public abstract string Location { get; }

    public abstract bool Contains(string name);
    protected abstract Tensor Fetch(string name, long[] expected);
    /// <summary>A tensor name for error messages (a GGUF source adds the file's own name for it).</summary>
    protected virtual string Describe(string name) => $"'{name}'";
    /// <summary>Hook after the shape check (load-time quantization); the default returns the tensor as stored.</summary>
    protected virtual Tensor Prepare(Tensor t, WeightUse use) => t;

    /// <summary>The device the model runs on: <see cref="Get"/> places every weight there (the CPU uses it in place).</summary>
    public IBackend? Backend { get; set; }

    /// <summary>Places a host tensor (as read, or derived from what was read) on the model's device.</summary>
    public Tensor Place(Tensor host) => Backend is null || !HasData ? host : Backend.PlaceWeight(host);

    /// <summary>A weight in its stored dtype (matmul weights, embeddings), checked against <paramref name="shape"/>, on the model's device.</summary>
    /// <param name="countAs">for packed storage (MXFP4 blocks), the logical shape to count as parameters;
    /// an empty array counts nothing (quantization scales).</param>
    public Tensor Get(string name, long[] shape, WeightUse use = default, long[]? countAs = null) => Place(GetHost(name, shape, use, countAs));

    /// <summary>As <see cref="Get"/>, but the host tensor, for load-time rewrites (transposes, regrouping) before <see cref="Place"/>.</summary>
    public Tensor GetHost(string name, long[] shape, WeightUse use = default, long[]? countAs = null)
    {
        if (!Contains(name)) throw new CheckpointFormatException($"{Location}: tensor {Describe(name)} is missing (expected shape [{string.Join(", ", shape)}])");
        var t = Fetch(name, shape);
        var actual = t.Shape.ToArray();
        if (!actual.Select(x => (long)x).SequenceEqual(shape))
            throw new CheckpointFormatException($"{Location}: tensor {Describe(name)} has shape {t.Shape}; expected [{string.Join(", ", shape)}]");
        t = Prepare(t, use);
        if (countAs is not { Length: 0 })
            _records.Add(new WeightRecord(name, countAs ?? shape, t.DType, use.ActiveFraction == 0 && !use.Embedding ? WeightUse.Dense : use));
        return t;
    }

    public Tensor Get(string name, params long[] shape) => Get(name, shape, WeightUse.Dense);

    /// <summary>A small weight (norm, bias, sink) converted to F32 so kernels can read it directly, on the model's device.</summary>
    public Tensor GetF32(string name, params long[] shape) => Place(GetF32Host(name, shape));

    /// <summary>As <see cref="GetF32"/>, on the host (for load-time rewrites).</summary>
    public Tensor GetF32Host(string name, params long[] shape)
    {
        var t = GetHost(name, shape, WeightUse.Dense);
        if (t.DType == DType.F32 || !HasData) return t;
        var f = Tensor.Zeros(DType.F32, t.Shape, name);
        Compute.Cpu.Convert.ToF32(t, 0, f.AsFloats());
        return f;
    }

    /// <summary>Vectors of <paramref name="width"/> values stored one per name, stacked into one F32 <c>[names, width]</c> on the model's device (per-expert biases).</summary>
    public Tensor GetStackedF32(IReadOnlyList<string> names, int width)
    {
        if (!HasData)
        {
            foreach (var n in names) GetHost(n, [width], WeightUse.Dense);
            return new Tensor(DType.F32, new Shape(names.Count, width), 0, null, names.Count > 0 ? names[0] : "");
        }
        var all = Tensor.Zeros(DType.F32, new Shape(names.Count, width), names.Count > 0 ? names[0] : "");
        var f = all.AsFloats();
        for (int i = 0; i < names.Count; i++) Compute.Cpu.Convert.ToF32(GetHost(names[i], [width], WeightUse.Dense), 0, f.Slice(i * width, width));
        return Place(all);
    }

    public Tensor? TryGet(string name, params long[] shape) => Contains(name) ? Get(name, shape) : null;
    public Tensor? TryGetF32(string name, params long[] shape) => Contains(name) ? GetF32(name, shape) : null;

    public long TotalParameters => _records.Sum(r => r.Count);
}

/// <summary>Weights read from safetensors files (single or sharded) through memory maps.</summary>
public sealed class CheckpointWeights : WeightSource, IDisposable
{
    private readonly Dictionary<string, SafeTensorsFile> _byName = new(StringComparer.Ordinal);
    private readonly List<SafeTensorsFile> _files = new();
    public override bool HasData => true;
    public override string Location { get; }
    /// <summary>FP8 block size from quantization_config (rows, cols), default 128x128.</summary>
    public (int Rows, int Cols) Fp8Block { get; init; } = (128, 128);
    /// <summary>
    /// Load-time weight quantization (<see cref="DType.Q8_0"/>, <see cref="DType.Q4_0"/>, <see cref="DType.Q4_K"/>) of
    /// every 2-D F32/BF16/F16 weight (linear layers and embedding tables), with llama.cpp's choices per tensor
    /// (<see cref="WeightQuantizer"/>); null keeps dtypes.
    /// </summary>
    public DType? Quantize { get; init; }

    /// <summary>The output head: lm_head, or the embedding table when the head is tied to it.</summary>
    private bool IsHead(string name, WeightUse use) => name == "lm_head.weight" || (use.Embedding && !Contains("lm_head.weight"));

    /// <summary>Copy weights out of the memory map into process memory at load (see <see cref="Models.LoadOptions.Copy"/>).</summary>
    public bool Copy { get; init; }

    protected override Tensor Prepare(Tensor t, WeightUse use)
    {
        if (Quantize is { } q && WeightQuantizer.TypeFor(q, t.DType, t.Shape.Rank, t.Shape.Last, IsHead(t.Name, use)) is not null)
            return WeightQuantizer.Apply(t, q, IsHead(t.Name, use));
        if (Copy && !DTypes.IsQuantized(t.DType) && t.ByteCount >= 1 << 16) return HostCopy.Of(t);
        return t;
    }

    public CheckpointWeights(string dir)
    {
        Location = dir;
        string index = Path.Combine(dir, "model.safetensors.index.json");
        string single = Path.Combine(dir, "model.safetensors");
        if (File.Exists(index))
        {
            Dictionary<string, string> map;
            try
            {
                using var doc = JsonDocument.Parse(File.ReadAllText(index));
                map = doc.RootElement.GetProperty("weight_map").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString() ?? "");
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
            { throw new CheckpointFormatException($"{index}: malformed index ({e.Message})"); }
            var open = new Dictionary<string, SafeTensorsFile>();
            foreach (var (name, file) in map)
            {
                if (file.Contains('/') || file.Contains('\\') || file.Length == 0) throw new CheckpointFormatException($"{index}: invalid shard name '{file}' for '{name}'");
                if (!open.TryGetValue(file, out var f))
                {
                    f = new SafeTensorsFile(Path.Combine(dir, file));
                    open[file] = f; _files.Add(f);
                }
                if (!f.Tensors.ContainsKey(name)) throw new CheckpointFormatException($"{index}: '{name}' is mapped to {file}, which does not contain it");
                _byName[name] = f;
            }
        }
        else if (File.Exists(single))
        {
            var f = new SafeTensorsFile(single);
            _files.Add(f);
            foreach (var name in f.Tensors.Keys) _byName[name] = f;
        }
        else
        {
            var shards = Directory.Exists(dir) ? Directory.GetFiles(dir, "*.safetensors").OrderBy(x => x, StringComparer.Ordinal).ToArray() : [];
            if (shards.Length == 0) throw new CheckpointFormatException($"{dir}: no model.safetensors or model.safetensors.index.json");
            foreach (var s in shards)
            {
                var f = new SafeTensorsFile(s);
                _files.Add(f);
                foreach (var name in f.Tensors.Keys) _byName[name] = f;
            }
        }
    }

    public IEnumerable<string> Names => _byName.Keys;
    public override bool Contains(string name) => _byName.ContainsKey(name);
    public SafeTensorInfo Info(string name) => _byName[name].Tensors[name];

    /// <summary>The raw tensor, with no shape check and no record (loaders of fused or quantized layouts).</summary>
    public Tensor Raw(string name) =>
        _byName.TryGetValue(name, out var f) ? f.Get(name) : throw new CheckpointFormatException($"{Location}: tensor '{name}' is missing");

    protected override Tensor Fetch(string name, long[] expected)
    {
        var t = _byName[name].Get(name);
        if (t.DType == DType.F8E4M3 && Contains(name + "_scale_inv"))
        {
            var s = Raw(name + "_scale_inv");
            int rows = checked((int)(t.Shape.Count / t.Shape.Last)), cols = t.Shape.Last;
            var (br, bc) = Fp8Block;
            long want = (long)((rows + br - 1) / br) * ((cols + bc - 1) / bc);
            if (s.DType != DType.F32 || s.Count != want)
                throw new CheckpointFormatException($"{Location}: tensor '{name}_scale_inv' is {s.DType}{s.Shape}; expected F32 with {(rows + br - 1) / br}x{(cols + bc - 1) / bc} blocks of {br}x{bc} for {name}{t.Shape}");
            t.Scales = s; t.ScaleBlock = (br, bc);
        }
        return t;
    }

    public void Dispose() { foreach (var f in _files) f.Dispose(); }
}

/// <summary>Shapes only: every requested weight "exists" with the requested shape and no data.</summary>
public sealed class ShapeOnlyWeights(string location, DType dtype = DType.BF16) : WeightSource
{
    public override bool HasData => false;
    public override string Location => location;
    public override bool Contains(string name) => true;

    protected override Tensor Fetch(string name, long[] expected) =>
        new(dtype, Shape.Of(expected.Length <= 4 ? expected : [expected.Aggregate(1L, (a, b) => a * b)]), 0, null, name);
}
