using LlmArch.Compute;
using LlmArch.Compute.Cuda;

namespace LlmArch.Cli;

/// <summary>
/// A single-device backend from <c>--device cpu|cuda|cuda:N</c> and, on a GPU, <c>--dtype f32|bf16</c> (f32: exact
/// fp32 GEMMs, TF32 off; bf16: prefill GEMMs on the tensor cores with fp32 accumulation). Used by the device group of
/// run/chat/verify/serve and by bench, info and gpu-check.
/// </summary>
internal static class DeviceOption
{
    /// <summary>The backend, or null for the default CPU backend (the caller's thread pool applies then).</summary>
    public static IBackend? Create(string? device, string? dtype)
    {
        bool bf16 = (dtype ?? "f32").ToLowerInvariant() switch
        {
            "f32" or "fp32" or "float32" => false,
            "bf16" or "bfloat16" => true,
            _ => throw new LlmArchInputException($"--dtype '{dtype}': expected f32 or bf16"),
        };
        string d = (device ?? "cpu").Trim().ToLowerInvariant();
        if (d is "cpu" or "")
        {
            if (bf16) throw new LlmArchInputException("--dtype bf16 is an option of --device cuda (the CPU backend computes in fp32)");
            return null;
        }
        if (d == "cuda" || d.StartsWith("cuda:", StringComparison.Ordinal))
        {
            int index = 0;
            if (d.Length > 5 && (!int.TryParse(d.AsSpan(5), out index) || index < 0))
                throw new LlmArchInputException($"--device '{device}': expected cuda or cuda:N with N a device index");
            return CudaBackend.Create(index, CudaOptions.FromEnvironment(bf16));
        }
        return Backends.Create(device);
    }
}
