using LlmArch.Compute;

namespace LlmArch.Checkpoints;

/// <summary>Load-time rearrangements for checkpoint layouts that differ from <c>[out, in]</c> (GPT-2's Conv1D, fused experts).</summary>
public static unsafe class WeightTransforms
{
    /// <summary>
    /// Rows [rowStart, rowStart + rows) of the transpose of a 2-D tensor <c>[in, out]</c>, i.e. a new <c>[rows, in]</c>
    /// tensor in the same dtype (F32/BF16/F16). A shape-only tensor stays shape-only.
    /// </summary>
    public static Tensor TransposeRows(Tensor t, int rowStart, int rows)
    {
        int inDim = t.Shape[0], outDim = t.Shape[1];
        if (rowStart < 0 || rows < 0 || rowStart + rows > outDim) throw new ArgumentException($"rows [{rowStart}, {rowStart + rows}) of the transpose of {t.Shape}");
        if (t.Ptr == 0) return new Tensor(t.DType, new Shape(rows, inDim), 0, null, t.Name);
        if (DTypes.IsGgmlBlock(t.DType))
        {
            // Load-time quantization of a [in, out] layout (GPT-2's Conv1D): transpose the dequantized values, quantize again by rows.
            var f = Tensor.FromFloats(t.ToFloatArray(), t.Shape, t.Name);
            var tr = TransposeRows(f, rowStart, rows);
            return inDim % DTypes.BlockElements(t.DType) == 0 ? Compute.Cpu.WeightQuantizer.Quantize(tr, t.DType) : tr;
        }
        if (DTypes.IsQuantized(t.DType)) throw new CheckpointFormatException($"tensor '{t.Name}': cannot transpose a {t.DType} tensor");
        int es = DTypes.ElementSize(t.DType);
        var r = Tensor.Zeros(t.DType, new Shape(rows, inDim), t.Name);
        byte* src = (byte*)t.Ptr, dst = (byte*)r.Ptr;
        for (int o = 0; o < rows; o++)
            for (int i = 0; i < inDim; i++)
                Buffer.MemoryCopy(src + ((long)i * outDim + rowStart + o) * es, dst + ((long)o * inDim + i) * es, es, es);
        return r;
    }

    /// <summary>Elements [start, start + len) of a 1-D tensor as F32 (bias splits).</summary>
    public static Tensor SliceF32(Tensor t, int start, int len)
    {
        if (t.Ptr == 0) return new Tensor(DType.F32, new Shape(len), 0, null, t.Name);
        var r = Tensor.Zeros(DType.F32, new Shape(len), t.Name);
        Compute.Cpu.Convert.ToF32(t, start, r.AsFloats());
        return r;
    }
}
