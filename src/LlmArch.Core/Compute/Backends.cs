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

    /// <summary>
    /// <paramref name="ranks"/> devices as one backend (tensor and/or expert parallelism): "cpu" gives CPU ranks with
    /// in-process collectives (for checking the partitioning anywhere); "cuda" gives cuda:0..N-1 once a GPU backend with
    /// collectives is present.
    /// </summary>
    public static IBackend CreateSharded(string? device, int ranks, bool tensorParallel, bool expertParallel, CpuThreadPool? pool = null)
    {
        if (ranks < 1) throw new LlmArchInputException($"the number of devices must be at least 1 (got {ranks})");
        string d = (device ?? "cpu").Trim().ToLowerInvariant();
        var options = new Sharding.ShardingOptions { TensorParallel = tensorParallel, ExpertParallel = expertParallel };
        if (d is "cpu" or "")
            return new Sharding.ShardedBackend(Enumerable.Range(0, ranks).Select(_ => (IBackend)new CpuBackend(pool)).ToArray(), new Sharding.HostCollectives(), options);
        if (d == "cuda")
        {
            if (ShardedCudaFactory is null)
                throw new LlmArchInputException($"--device cuda with {ranks} devices needs GPU collectives (NCCL), which this build does not have yet; run on one GPU or check the partitioning with --device cpu");
            return ShardedCudaFactory(ranks, options);
        }
        throw new LlmArchInputException($"--device '{device}' cannot be combined with --tensor-parallel/--expert-parallel (use cpu or cuda)");
    }

    /// <summary>Hook for a multi-GPU backend: (ranks, options) → a backend over cuda:0..ranks-1 with its collectives.</summary>
    public static Func<int, Sharding.ShardingOptions, IBackend>? ShardedCudaFactory { get; set; }

    /// <summary>Checks a device name's form (cpu, cuda, cuda:N) without creating anything; one clear error otherwise.</summary>
    public static void CheckName(string? device)
    {
        string d = (device ?? "cpu").Trim().ToLowerInvariant();
        if (d is "cpu" or "" or "cuda") return;
        if (d.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(d.AsSpan(5), out int i) && i >= 0) return;
        throw new LlmArchInputException($"device '{device}' is not supported (supported: cpu, cuda, cuda:N)");
    }

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
