using LlmArch.Compute;
using LlmArch.Compute.Cpu;

namespace LlmArch.Checkpoints;

/// <summary>
/// The tensors of a GGUF file under Hugging Face names, as the model classes ask for them. Plain and llama.cpp block
/// types are views into the memory map; only what the converter changed is rebuilt: llama's permuted q/k rows
/// (gathered back into rotate-half order), norm weights stored shifted (Gemma), MXFP4 repacked. Stacked expert
/// tensors <c>[E, out, in]</c> are served per expert as views. Load-time quantization and <c>--copy</c> work as for
/// safetensors.
/// </summary>
public sealed unsafe class GgufWeights : WeightSource, IDisposable
{
    /// <summary>HF name to GGUF tensor, expert (-1: not stacked) and rows (Rows -1: all; else a row range of a fused tensor).</summary>
    private readonly Dictionary<string, (string Gguf, int Expert, int Row0, int Rows)> _map = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Tensor> _loaded = new(StringComparer.Ordinal);
    /// <summary>HF tensors built from several GGUF tensors (<see cref="GgufArch.Synthesize"/>), and the ones built so far.</summary>
    private readonly Dictionary<string, Func<Tensor>> _synth = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Tensor> _built = new(StringComparer.Ordinal);
    private readonly ModelConfig _cfg;

    public GgufFile File { get; }
    public GgufArch Arch { get; }
    public override bool HasData => true;
    public override string Location => File.Path;
    /// <summary>Load-time quantization of plain 2-D weights (as <see cref="CheckpointWeights.Quantize"/>).</summary>
    public DType? Quantize { get; init; }
    /// <summary>Copy weights out of the memory map at load (see <see cref="Models.LoadOptions.Copy"/>).</summary>
    public bool Copy { get; init; }

    public GgufWeights(GgufFile file, GgufArch arch, ModelConfig cfg)
    {
        File = file; Arch = arch; _cfg = cfg;
        foreach (var name in file.TensorOrder)
        {
            var info = file.Tensors[name];
            if (arch.HfName(name) is { } hf) { _map[hf] = (name, -1, 0, -1); continue; }
            // blk.N.ffn_X_exps.weight: [E, out, in], one HF tensor per expert
            var parts = name.Split('.');
            if (parts.Length == 4 && parts[0] == "blk" && parts[3] == "weight" && arch.StackedExperts.TryGetValue(parts[2], out var proj))
            {
                if (info.Ne.Length != 3) throw new CheckpointFormatException($"{file.Path}: stacked expert tensor '{name}' has {info.Ne.Length} dimensions; expected 3");
                for (int e = 0; e < info.Ne[2]; e++) _map[$"model.layers.{parts[1]}.mlp.experts.{e}.{proj}.weight"] = (name, e, 0, -1);
                continue;
            }
            // fused tensors (the converter's --fuse-qkv, --fuse-gate-up-exps): row ranges of one tensor
            foreach (var (fhf, expert, row0, rows) in arch.Fused(file, info, cfg)) _map[fhf] = (name, expert, row0, rows);
        }
        arch.Synthesize(file, cfg, (hf, build) => _synth[hf] = build);
    }

    public IEnumerable<string> Names => _map.Keys.Concat(_synth.Keys);
    public override bool Contains(string name) => _map.ContainsKey(name) || _synth.ContainsKey(name);

    protected override string Describe(string name) => Arch.SourceOf(name) is { } g ? $"'{g}' (read as '{name}')" : $"'{name}'";

    /// <summary>The tensor in Hugging Face layout, unchecked and unrecorded (export, tests).</summary>
    public Tensor Raw(string name) =>
        Contains(name) ? Fetch(name, []) : throw new CheckpointFormatException($"{File.Path}: no tensor maps to '{name}'");

    protected override Tensor Fetch(string name, long[] expected)
    {
        if (_synth.TryGetValue(name, out var build))
        {
            if (!_built.TryGetValue(name, out var made)) _built[name] = made = build();
            return made;
        }
        var (gguf, expert, row0, rows) = _map[name];
        var t = Load(gguf);
        if (expert >= 0) t = t.Index0(expert);
        if (rows >= 0) t = Rows(t, row0, rows, name);
        if (expert >= 0) return t;
        if (Arch.PermutesQk && (name.EndsWith(".self_attn.q_proj.weight", StringComparison.Ordinal) || name.EndsWith(".self_attn.q_proj.bias", StringComparison.Ordinal)))
            return Unpermute(t, _cfg.NumAttentionHeads ?? 1);
        if (Arch.PermutesQk && (name.EndsWith(".self_attn.k_proj.weight", StringComparison.Ordinal) || name.EndsWith(".self_attn.k_proj.bias", StringComparison.Ordinal)))
            return Unpermute(t, _cfg.NumKeyValueHeads ?? _cfg.NumAttentionHeads ?? 1);
        if (Arch.IsShiftedNorm(name)) return Shift(t, -Arch.NormShift);
        return t;
    }

    private Tensor Load(string gguf)
    {
        if (!_loaded.TryGetValue(gguf, out var t)) _loaded[gguf] = t = File.Get(gguf);
        return t;
    }

    /// <summary>Rows [row0, row0 + rows) of a row-major tensor (elements of a vector) as a view.</summary>
    private Tensor Rows(Tensor t, int row0, int rows, string name)
    {
        if (t.Scales is not null || t.DType == DType.MXFP4)
            throw new CheckpointFormatException($"{File.Path}: tensor '{t.Name}': a fused {t.DType} tensor cannot be split");
        var shape = t.Shape.Rank == 1 ? new Shape(rows) : new Shape(rows, t.Shape.Last);
        long per = t.Shape.Rank == 1 ? 1 : t.Shape.Last;
        return new Tensor(t.DType, shape, t.Ptr + (nint)DTypes.StorageBytes(t.DType, row0 * per), t.Owner, name);
    }

    /// <summary>llama.cpp row order (h, i, j) back to Hugging Face's (h, j, i): row h*D + j*D/2 + i comes from h*D + 2i + j.</summary>
    internal static Tensor Unpermute(Tensor t, int heads) => PermuteRows(t, heads, toGguf: false);

    /// <summary>Hugging Face rotate-half rows to llama.cpp's adjacent pairs (the converter's permute).</summary>
    internal static Tensor PermuteRows(Tensor t, int heads, bool toGguf)
    {
        int rows = t.Shape[0];
        if (heads <= 0 || rows % heads != 0 || rows / heads % 2 != 0)
            throw new CheckpointFormatException($"tensor '{t.Name}' has {rows} rows, not {heads} heads of an even dimension");
        int D = rows / heads;
        long cols = t.Shape.Count / rows;
        long rowBytes = DTypes.StorageBytes(t.DType, cols);
        if (t.DType == DType.MXFP4 || t.Scales is not null) throw new CheckpointFormatException($"tensor '{t.Name}': cannot permute the rows of a {t.DType} tensor");
        var r = Tensor.Zeros(t.DType, t.Shape, t.Name);
        byte* src = (byte*)t.Ptr, dst = (byte*)r.Ptr;
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < D / 2; i++)
                for (int j = 0; j < 2; j++)
                {
                    long hf = (long)h * D + j * (D / 2) + i, gg = (long)h * D + 2 * i + j;
                    long from = toGguf ? hf : gg, to = toGguf ? gg : hf;
                    Buffer.MemoryCopy(src + from * rowBytes, dst + to * rowBytes, rowBytes, rowBytes);
                }
        return r;
    }

    private static Tensor Shift(Tensor t, float by)
    {
        var f = Tensor.Zeros(DType.F32, t.Shape, t.Name);
        var v = f.AsFloats();
        Compute.Cpu.Convert.ToF32(t, 0, v);
        for (int i = 0; i < v.Length; i++) v[i] += by;
        return f;
    }

    protected override Tensor Prepare(Tensor t, WeightUse use)
    {
        bool head = t.Name is "output.weight" || (use.Embedding && !_map.ContainsKey("lm_head.weight"));
        if (Quantize is { } q && WeightQuantizer.TypeFor(q, t.DType, t.Shape.Rank, t.Shape.Last, head) is not null)
            return WeightQuantizer.Apply(t, q, head);
        // tensors built from several GGUF tensors already live in process memory: no second copy
        bool built = _built.ContainsKey(t.Name) && !ReferenceEquals(t.Owner, File);
        if (Copy && !built && t.Scales is null && t.DType != DType.MXFP4 && t.ByteCount >= 1 << 16)
        {
            var c = HostCopy.Of(t);
            c.ColumnMajor = t.ColumnMajor; // gpt-oss experts are served as transposed views
            return c;
        }
        return t;
    }

    public void Dispose() => File.Dispose();
}
