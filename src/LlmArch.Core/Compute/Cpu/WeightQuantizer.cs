namespace LlmArch.Compute.Cpu;

/// <summary>
/// Load-time (and export-time) weight quantization: which llama.cpp block type each weight gets for a requested
/// format, as llama.cpp's own recipes choose:
/// <list type="bullet">
/// <item><c>q8_0</c>: every 2-D weight whose rows are whole 32-blocks.</item>
/// <item><c>q4_0</c>: Q4_0, with the output head (or the embedding table that doubles as the head) in Q6_K.</item>
/// <item><c>q4_k</c>: Q4_K, the head in Q6_K (llama.cpp's Q4_K_S/M keep the head in Q6_K; Q4_K_M also raises half of
/// attn_v/ffn_down to Q6_K, which we do not).</item>
/// </list>
/// Rows that are not whole blocks of the chosen type fall back to Q8_0 (or stay as stored when not a multiple of 32).
/// </summary>
public static class WeightQuantizer
{
    public static bool Supports(DType target) => target is DType.Q8_0 or DType.Q4_0 or DType.Q4_K;

    /// <summary>The block type for a 2-D plain weight with rows of <paramref name="cols"/> values, or null to keep it.</summary>
    public static DType? TypeFor(DType target, DType stored, int rank, int cols, bool head)
    {
        if (rank != 2 || stored is not (DType.F32 or DType.BF16 or DType.F16)) return null;
        DType want = target switch
        {
            DType.Q8_0 => DType.Q8_0,
            DType.Q4_0 or DType.Q4_K when head => DType.Q6_K,
            _ => target,
        };
        if (cols % DTypes.BlockElements(want) == 0) return want;
        return cols % Q8.Block == 0 ? DType.Q8_0 : null;
    }

    /// <summary>Quantizes the rows of a plain tensor (last dim a whole number of blocks) into a llama.cpp block type.</summary>
    public static Tensor Quantize(Tensor t, DType type) => Q8.QuantizeTensor(t, type);

    /// <summary>Quantizes <paramref name="t"/> as <see cref="TypeFor"/> says, or returns it unchanged.</summary>
    public static Tensor Apply(Tensor t, DType target, bool head) =>
        TypeFor(target, t.DType, t.Shape.Rank, t.Shape.Last, head) is { } q ? Q8.QuantizeTensor(t, q) : t;
}
