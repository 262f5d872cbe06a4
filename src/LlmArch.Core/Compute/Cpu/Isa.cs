using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LlmArch.Compute.Cpu;

/// <summary>
/// The instruction-set paths of the CPU kernels, in increasing order. Every kernel has a scalar reference; the fast
/// kernels have a 256-bit AVX2 (+FMA) path and a 512-bit AVX-512 (F + BW) path, both first-class.
/// Kernels test <c>isa &gt;= Isa.Avx2</c> for the 256-bit code and <c>isa == Isa.Avx512</c> for the 512-bit code.
/// </summary>
public enum Isa
{
    /// <summary>Plain scalar code: the references, and the path for CPUs without AVX2 + FMA.</summary>
    Scalar = 0,
    /// <summary>AVX2 + FMA, 256-bit vectors, int8 dots with <c>vpmaddubsw</c> (Haswell..Comet Lake, Zen 1-4).</summary>
    Avx2 = 1,
    /// <summary>As <see cref="Avx2"/>, with 256-bit AVX-VNNI <c>vpdpbusd</c> for the int8 dots (Alder Lake and later, Zen 5).</summary>
    Avx2Vnni = 2,
    /// <summary>AVX-512 F + BW, 512-bit vectors.</summary>
    Avx512 = 3,
}

/// <summary>
/// Which path the kernels take: the best the CPU supports, or the one forced by the environment variable
/// <c>LLMARCH_ISA</c> (<c>scalar</c>, <c>avx2</c>, <c>avx2-vnni</c>, <c>avx512</c>, <c>auto</c>), read once at start-up.
/// A forced path the CPU lacks falls back to the best it has, with one warning on stderr. Forcing <c>avx2</c> on an
/// AVX-512 machine runs the 256-bit kernels, but the JIT may still encode them with EVEX and use 32 registers: run
/// with <c>DOTNET_EnableAVX512=0</c> as well to measure what an AVX2-only CPU gets. Kernels also take an explicit
/// <see cref="Isa"/>, so the tests run every path this machine supports in one process.
/// </summary>
public static class CpuIsa
{
    /// <summary>The best path this CPU (and the runtime) supports.</summary>
    public static readonly Isa Detected = Detect();
    /// <summary>The path the kernels take by default.</summary>
    public static readonly Isa Current;
    /// <summary>Why the forced path was not taken (null when it was, or nothing was forced).</summary>
    public static readonly string? Warning;

    static CpuIsa()
    {
        Current = Detected;
        string? env = Environment.GetEnvironmentVariable("LLMARCH_ISA")?.Trim().ToLowerInvariant();
        if (string.IsNullOrEmpty(env) || env == "auto") return;
        Isa? want = env switch
        {
            "scalar" => Isa.Scalar,
            "avx2" => Isa.Avx2,
            "avx2-vnni" or "avx2vnni" => Isa.Avx2Vnni,
            "avx512" or "avx-512" => Isa.Avx512,
            _ => null,
        };
        if (want is null) Warning = $"LLMARCH_ISA='{env}' is not one of scalar, avx2, avx2-vnni, avx512, auto; using {Name(Detected)}";
        else if (!Supports(want.Value))
        {
            Current = want.Value == Isa.Avx2Vnni && Supports(Isa.Avx2) ? Isa.Avx2 : Detected;
            Warning = $"LLMARCH_ISA={env}: this CPU does not support it; using {Name(Current)}";
        }
        else Current = want.Value;
        if (Warning is not null) Console.Error.WriteLine($"warning: {Warning}");
    }

    private static Isa Detect()
    {
        if (Avx512F.IsSupported && Avx512BW.IsSupported && Vector512.IsHardwareAccelerated && Fma.IsSupported) return Isa.Avx512;
        if (Avx2.IsSupported && Fma.IsSupported) return AvxVnni.IsSupported ? Isa.Avx2Vnni : Isa.Avx2;
        return Isa.Scalar;
    }

    /// <summary>Whether this CPU can run <paramref name="isa"/> (tests skip what it cannot, saying why).</summary>
    public static bool Supports(Isa isa) => isa switch
    {
        Isa.Scalar => true,
        Isa.Avx2 => Avx2.IsSupported && Fma.IsSupported,
        Isa.Avx2Vnni => Avx2.IsSupported && Fma.IsSupported && AvxVnni.IsSupported,
        _ => Detected == Isa.Avx512,
    };

    public static string Name(Isa isa) => isa switch
    {
        Isa.Avx512 => "avx512", Isa.Avx2Vnni => "avx2-vnni", Isa.Avx2 => "avx2", _ => "scalar",
    };

    /// <summary>The explicit paths to test on this machine: scalar, then each SIMD path it supports.</summary>
    public static IEnumerable<Isa> Testable() => Enum.GetValues<Isa>().Where(Supports);
}
