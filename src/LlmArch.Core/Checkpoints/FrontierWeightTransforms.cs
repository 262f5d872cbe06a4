using LlmArch.Compute;

namespace LlmArch.Checkpoints;

/// <summary>Load-time weight rewrites of the frontier families (joined conv weights, int tables, derived decays).</summary>
public static class FrontierWeightTransforms
{
    /// <summary>F32 rows of several 2-D tensors stacked in order (separate q/k/v conv weights joined into one); shape-only stays shape-only.</summary>
    public static Tensor ConcatRowsF32(string name, params Tensor[] parts)
    {
        int cols = parts[0].Shape.Last;
        int rows = 0;
        foreach (var p in parts)
        {
            if (p.Shape.Last != cols) throw new ArgumentException($"cannot stack {p.Shape} under rows of width {cols}");
            rows += checked((int)(p.Shape.Count / cols));
        }
        if (parts.Any(p => p.Ptr == 0)) return new Tensor(DType.F32, new Shape(rows, cols), 0, null, name);
        var r = Tensor.Zeros(DType.F32, new Shape(rows, cols), name);
        var f = r.AsFloats();
        long off = 0;
        foreach (var p in parts)
        {
            Compute.Cpu.Convert.ToF32(p, 0, f.Slice((int)off, (int)p.Shape.Count));
            off += p.Shape.Count;
        }
        return r;
    }

    /// <summary>An integer table (I64/I32, e.g. DeepSeek-V4's tid2eid) as F32 values (exact below 2^24), checked to lie in [0, limit).</summary>
    public static unsafe Tensor IndexTableF32(Tensor t, int limit, string what)
    {
        if (t.Ptr == 0) return new Tensor(DType.F32, t.Shape, 0, null, t.Name);
        var r = Tensor.Zeros(DType.F32, t.Shape, t.Name);
        var f = r.AsFloats();
        for (long i = 0; i < t.Count; i++)
        {
            long v = t.DType switch
            {
                DType.I64 => ((long*)t.Ptr)[i],
                DType.I32 => ((int*)t.Ptr)[i],
                _ => throw new CheckpointFormatException($"tensor '{t.Name}' ({what}) is {t.DType}; expected an integer table"),
            };
            if (v < 0 || v >= limit) throw new CheckpointFormatException($"tensor '{t.Name}' ({what}) holds {v} at element {i}; expected values in [0, {limit})");
            f[(int)i] = v;
        }
        return r;
    }

    /// <summary>0, 1, ..., n-1 as a host F32 vector (key positions for masks).</summary>
    public static Tensor Arange(string name, int n)
    {
        var t = Tensor.Zeros(DType.F32, new Shape(n), name);
        var f = t.AsFloats();
        for (int i = 0; i < n; i++) f[i] = i;
        return t;
    }

    /// <summary>A host F32 tensor of the given values (tables derived from the config, e.g. MiniMax's decay slopes).</summary>
    public static Tensor FromValues(string name, float[] values, Shape shape) => Tensor.FromFloats(values, shape, name);
}
