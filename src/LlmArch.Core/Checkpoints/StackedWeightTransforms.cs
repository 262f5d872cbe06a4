using LlmArch.Compute;

namespace LlmArch.Checkpoints;

/// <summary>Stacked expert tensors stored <c>[E, in, out]</c> (Llama 4, gpt-oss bf16) seen as <c>[E, out, in]</c>.</summary>
public static unsafe class StackedWeightTransforms
{
    /// <summary>
    /// <c>[E, a, b]</c> viewed as <c>[E, b, a]</c> without a copy (<see cref="Tensor.ColumnMajor"/>): the matmul reads
    /// the stored layout in place, so a memory-mapped checkpoint stays mapped. Plain dtypes only.
    /// </summary>
    public static Tensor TransposedView(Tensor t)
    {
        if (t.Shape.Rank != 3) throw new CheckpointFormatException($"tensor '{t.Name}' {t.Shape}: expected a stacked [E, in, out] tensor");
        if (DTypes.IsQuantized(t.DType)) throw new CheckpointFormatException($"tensor '{t.Name}': a {t.DType} tensor cannot be read transposed");
        return new Tensor(t.DType, new Shape(t.Shape[0], t.Shape[2], t.Shape[1]), t.Ptr, t.Owner, t.Name) { ColumnMajor = !t.ColumnMajor, Device = t.Device };
    }
}
