using LlmArch.Compute;

namespace LlmArch.Checkpoints;

/// <summary>Load-time weight rewrites of the hybrid families (Gemma 3n's clipped AltUp coefficients).</summary>
public static class HybridWeightTransforms
{
    /// <summary>An F32 copy of t with every value clamped to [-limit, limit] (a shape-only tensor stays as it is).</summary>
    public static Tensor ClampF32(Tensor t, float limit)
    {
        if (t.Ptr == 0) return t;
        var r = Tensor.Zeros(DType.F32, t.Shape, t.Name);
        var f = r.AsFloats();
        Compute.Cpu.Convert.ToF32(t, 0, f);
        for (int i = 0; i < f.Length; i++) f[i] = Math.Clamp(f[i], -limit, limit);
        return r;
    }

    /// <summary>An F32 copy of t with f applied to every value (derived weights, e.g. -exp(A_log)); shape-only stays as it is.</summary>
    public static Tensor Map(Tensor t, Func<float, float> f)
    {
        if (t.Ptr == 0) return t;
        var r = Tensor.Zeros(DType.F32, t.Shape, t.Name);
        var v = r.AsFloats();
        Compute.Cpu.Convert.ToF32(t, 0, v);
        for (int i = 0; i < v.Length; i++) v[i] = f(v[i]);
        return r;
    }

    /// <summary>
    /// A copy of a 2-D tensor <c>[rows, cols]</c> with its rows reordered: row i of the result is row order[i] of t
    /// (plain dtypes; fused projections regrouped at load). A shape-only tensor stays shape-only.
    /// </summary>
    public static unsafe Tensor PermuteRows(Tensor t, int[] order)
    {
        int rows = t.Shape[0], cols = checked((int)(t.Shape.Count / Math.Max(1, rows)));
        if (order.Length != rows) throw new ArgumentException($"{order.Length} row indices for {t.Shape}");
        if (t.Ptr == 0) return t;
        if (DTypes.IsQuantized(t.DType)) throw new CheckpointFormatException($"tensor '{t.Name}': cannot regroup the rows of a {t.DType} tensor");
        int rowBytes = cols * DTypes.ElementSize(t.DType);
        var r = Tensor.Zeros(t.DType, t.Shape, t.Name);
        for (int i = 0; i < rows; i++)
        {
            if ((uint)order[i] >= (uint)rows) throw new ArgumentException($"row index {order[i]} outside {rows}");
            Buffer.MemoryCopy((byte*)t.Ptr + (long)order[i] * rowBytes, (byte*)r.Ptr + (long)i * rowBytes, rowBytes, rowBytes);
        }
        return r;
    }
}
