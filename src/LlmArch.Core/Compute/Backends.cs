using LlmArch.Compute.Cpu;

namespace LlmArch.Compute;

/// <summary>
/// Creates the backend for a device name: "cpu" (the default), "cuda" / "cuda:N" when a CUDA backend is available.
/// A device that does not exist on this machine is one clear error. Each call gives a new backend: a backend's
/// scratch belongs to the one model that runs on it (CPU backends share the process's thread pool).
/// </summary>
public static class Backends
{
    /// <summary>Device names this build knows (whether or not the machine has them).</summary>
    public static IReadOnlyList<string> Known => ["cpu", "cuda", "cuda:N"];

    /// <summary>A CPU backend for building shapes only (analysis of presets): nothing ever runs on it.</summary>
    public static IBackend ShapeOnly { get; } = new CpuBackend();

    /// <summary>Hook for GPU backends: device index → backend, or a typed error (the CUDA backend of this assembly by default).</summary>
    public static Func<int, IBackend>? CudaFactory { get; set; } = index => Cuda.CudaBackend.Create(index);

    public static IBackend Create(string? device)
    {
        string d = (device ?? "cpu").Trim().ToLowerInvariant();
        if (d is "cpu" or "") return new CpuBackend();
        if (d == "cuda" || d.StartsWith("cuda:", StringComparison.Ordinal))
        {
            int index = 0;
            if (d.Length > 5 && (!int.TryParse(d.AsSpan(5), out index) || index < 0))
                throw new LlmArchInputException($"--device '{device}': expected cuda or cuda:N with N a device index");
            if (CudaFactory is null) throw new LlmArchInputException($"--device {device}: this build of llmarch has no CUDA backend");
            return CudaFactory(index);
        }
        throw new LlmArchInputException($"--device '{device}' is not supported (supported: cpu, cuda, cuda:N)");
    }
}
