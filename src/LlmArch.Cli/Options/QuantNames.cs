using LlmArch.Compute;

namespace LlmArch.Cli;

/// <summary>
/// The <c>--quant</c> words and what they mean, in one place (add a format here and every verb that takes it accepts it).
/// Load-time quantization (<c>run</c>, <c>bench</c>, <c>serve</c>) maps to the dtype weights are converted to at load, null = as stored;
/// export maps to the dtype written.
/// </summary>
public static class QuantNames
{
    public static readonly IReadOnlyDictionary<string, DType?> LoadTime = new Dictionary<string, DType?>(StringComparer.Ordinal)
    {
        ["none"] = null, ["bf16"] = null, ["f32"] = null, ["stored"] = null, ["q8_0"] = DType.Q8_0, ["q8"] = DType.Q8_0,
        ["q4_0"] = DType.Q4_0, ["q4_k"] = DType.Q4_K,
    };

    public static readonly IReadOnlyDictionary<string, DType> Export = new Dictionary<string, DType>(StringComparer.Ordinal)
    {
        ["bf16"] = DType.BF16, ["f16"] = DType.F16, ["f32"] = DType.F32, ["q8_0"] = DType.Q8_0, ["q8"] = DType.Q8_0,
        ["q4_0"] = DType.Q4_0, ["q4_k"] = DType.Q4_K, ["q4_k_m"] = DType.Q4_K,
    };
}
