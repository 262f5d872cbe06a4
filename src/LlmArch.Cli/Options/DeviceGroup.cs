using System.CommandLine;
using LlmArch.Compute;
using LlmArch.Compute.Cpu;

namespace LlmArch.Cli;

/// <summary>Where a model runs: <c>--device</c>, <c>--threads</c>, and tensor / expert parallelism over several devices.</summary>
public sealed class DeviceGroup : IOptionGroup
{
    public readonly Option<string?> Device = Opt.Text("--device", "where to run: cpu (default), cuda or cuda:N", "DEVICE");
    public readonly Option<int?> Threads = Opt.Threads();
    public readonly Option<int?> TensorParallel = Opt.OptionalInt("--tensor-parallel", "split every weight matrix by rows over N devices (cuda:0..N-1; with cpu, N CPU ranks)", min: 1, max: 64);
    public readonly Option<int?> ExpertParallel = Opt.OptionalInt("--expert-parallel", "split stacked expert weights by expert over N devices", min: 1, max: 64);

    public readonly Option<string?> DType = Opt.Text("--dtype", "GPU compute precision: f32 (exact, default) or bf16 (prefill GEMMs on the tensor cores)", "f32|bf16");

    public IEnumerable<Symbol> Symbols => [Device, Threads, TensorParallel, ExpertParallel, DType];

    /// <summary>The backend these options describe; <paramref name="pool"/> is the thread pool <c>--threads</c> made, if any.</summary>
    public IBackend Resolve(Invocation inv, CpuThreadPool? pool)
    {
        int? tp = inv.Get(TensorParallel), ep = inv.Get(ExpertParallel);
        if (tp is int a && ep is int b && a != b)
            throw new LlmArchInputException($"--tensor-parallel {a} and --expert-parallel {b} must use the same number of devices");
        int ranks = tp ?? ep ?? 1;
        string device = inv.Get(Device) ?? "cpu";
        if (ranks == 1 && tp is null && ep is null)
            return device.Trim().Equals("cpu", StringComparison.OrdinalIgnoreCase) && pool is not null ? new CpuBackend(pool)
                : DeviceOption.Create(device, inv.Get(DType)) ?? Backends.Create(device);
        if (inv.Get(DType) is not null) throw new LlmArchInputException("--dtype applies to a single GPU (not with --tensor-parallel/--expert-parallel)");
        return Backends.CreateSharded(device, ranks, tensorParallel: tp is not null, expertParallel: ep is not null || tp is not null, pool);
    }
}
