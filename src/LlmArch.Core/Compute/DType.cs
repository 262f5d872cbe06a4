namespace LlmArch.Compute;

/// <summary>Element types. Block-quantized types carry their scales in <see cref="Tensor.Scales"/>.</summary>
public enum DType
{
    F32, BF16, F16, F64, I8, I16, I32, I64, U8, Bool,
    /// <summary>FP8 e4m3 values; optional float32 block scales (DeepSeek's 128x128 <c>weight_scale_inv</c>).</summary>
    F8E4M3,
    /// <summary>Two e2m1 values per byte (low nibble first), one e8m0 scale byte per 32 values.</summary>
    MXFP4,
    /// <summary>llama.cpp's Q8_0: blocks of 32 values as 34 bytes (f16 scale d, 32 int8 q; value = d * q).</summary>
    Q8_0,
    /// <summary>llama.cpp's Q4_0: blocks of 32 values as 18 bytes (f16 d, 16 bytes of nibbles: value j is the low
    /// nibble of byte j, value j + 16 the high nibble; value = d * (q - 8)).</summary>
    Q4_0,
    /// <summary>llama.cpp's Q4_K: super-blocks of 256 values as 144 bytes (f16 d, f16 dmin, 12 bytes of 6-bit scales
    /// and mins for 8 sub-blocks of 32, 128 bytes of nibbles; value = d * sc * q - dmin * m).</summary>
    Q4_K,
    /// <summary>llama.cpp's Q5_K: as Q4_K with a fifth bit per value (176 bytes: d, dmin, scales[12], qh[32], qs[128]).</summary>
    Q5_K,
    /// <summary>llama.cpp's Q6_K: super-blocks of 256 values as 210 bytes (ql[128], qh[64], int8 scales[16] for 16
    /// sub-blocks of 16, f16 d; value = d * sc * (q - 32)).</summary>
    Q6_K,
}

public static class DTypes
{
    /// <summary>Bytes per element for plain types; block types are sized by <see cref="StorageBytes"/>.</summary>
    public static int ElementSize(DType t) => t switch
    {
        DType.F32 or DType.I32 => 4,
        DType.BF16 or DType.F16 or DType.I16 => 2,
        DType.F64 or DType.I64 => 8,
        DType.I8 or DType.U8 or DType.Bool or DType.F8E4M3 => 1,
        DType.MXFP4 => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(t), $"{t} is a block type: size it with StorageBytes"),
    };

    /// <summary>Values per block of llama.cpp's block types (32 or 256); 1 for every other type.</summary>
    public static int BlockElements(DType t) => t switch
    {
        DType.Q8_0 or DType.Q4_0 => 32,
        DType.Q4_K or DType.Q5_K or DType.Q6_K => 256,
        _ => 1,
    };

    /// <summary>Bytes per block of llama.cpp's block types (scales inline); the element size for other types.</summary>
    public static int BlockBytes(DType t) => t switch
    {
        DType.Q8_0 => 34, DType.Q4_0 => 18, DType.Q4_K => 144, DType.Q5_K => 176, DType.Q6_K => 210,
        _ => ElementSize(t),
    };

    /// <summary>llama.cpp's self-contained block types: rows are whole blocks, scales inline, no <see cref="Tensor.Scales"/>.</summary>
    public static bool IsGgmlBlock(DType t) => t is DType.Q8_0 or DType.Q4_0 or DType.Q4_K or DType.Q5_K or DType.Q6_K;

    /// <summary>
    /// Bytes of the stored payload for <paramref name="count"/> logical elements: for block types a whole number of
    /// blocks (their scales included); for MXFP4 and FP8 the values only (their scales live in <see cref="Tensor.Scales"/>).
    /// </summary>
    public static long StorageBytes(DType t, long count) =>
        t == DType.MXFP4 ? (count + 1) / 2
        : IsGgmlBlock(t) ? (count + BlockElements(t) - 1) / BlockElements(t) * BlockBytes(t)
        : count * ElementSize(t);

    public static bool IsQuantized(DType t) => t is DType.F8E4M3 or DType.MXFP4 || IsGgmlBlock(t);

    /// <summary>Parses the dtype names used in safetensors headers.</summary>
    public static bool TryParseSafetensors(string s, out DType t)
    {
        switch (s)
        {
            case "F32": t = DType.F32; return true;
            case "BF16": t = DType.BF16; return true;
            case "F16": t = DType.F16; return true;
            case "F64": t = DType.F64; return true;
            case "I8": t = DType.I8; return true;
            case "I16": t = DType.I16; return true;
            case "I32": t = DType.I32; return true;
            case "I64": t = DType.I64; return true;
            case "U8": t = DType.U8; return true;
            case "BOOL": t = DType.Bool; return true;
            case "F8_E4M3": t = DType.F8E4M3; return true;
            default: t = default; return false;
        }
    }

    public static string SafetensorsName(DType t) => t switch
    {
        DType.F32 => "F32", DType.BF16 => "BF16", DType.F16 => "F16", DType.F64 => "F64", DType.I8 => "I8",
        DType.I16 => "I16", DType.I32 => "I32", DType.I64 => "I64", DType.U8 => "U8", DType.Bool => "BOOL",
        DType.F8E4M3 => "F8_E4M3",
        _ => throw new ArgumentOutOfRangeException(nameof(t), $"{t} has no safetensors name"),
    };
}
