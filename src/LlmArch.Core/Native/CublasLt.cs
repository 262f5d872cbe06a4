using System.Runtime.InteropServices;

namespace LlmArch.Native;

/// <summary>
/// cuBLASLt, loaded when present (the prefill GEMMs of <c>--dtype bf16</c> runs: BF16 operands, FP32 accumulation and
/// output). Found through <c>LLMARCH_CUBLASLT</c> (a file), <c>CUDA_HOME</c>/<c>CUDA_PATH</c>, the loader's own search path,
/// and pip's <c>nvidia/*/lib</c> folders of the Python environments on the machine. Every op has an own kernel, so a
/// machine without cuBLASLt runs everything, only prefill in bf16 mode is slower.
/// </summary>
public static unsafe class CublasLt
{
    private static readonly object Gate = new();
    private static bool _tried;
    private static nint _lib;

    public static string? LoadedFrom { get; private set; }
    public static string? LoadError { get; private set; }

    internal static delegate* unmanaged<nint*, int> cublasLtCreate;
    internal static delegate* unmanaged<nint*, int, int, int> cublasLtMatmulDescCreate;
    internal static delegate* unmanaged<nint, int, void*, nuint, int> cublasLtMatmulDescSetAttribute;
    internal static delegate* unmanaged<nint, int> cublasLtMatmulDescDestroy;
    internal static delegate* unmanaged<nint*, int, ulong, ulong, long, int> cublasLtMatrixLayoutCreate;
    internal static delegate* unmanaged<nint, int> cublasLtMatrixLayoutDestroy;
    internal static delegate* unmanaged<nint*, int> cublasLtMatmulPreferenceCreate;
    internal static delegate* unmanaged<nint, int, void*, nuint, int> cublasLtMatmulPreferenceSetAttribute;
    internal static delegate* unmanaged<nint, int> cublasLtMatmulPreferenceDestroy;
    internal static delegate* unmanaged<nint, nint, nint, nint, nint, nint, nint, int, HeuristicResult*, int*, int> cublasLtMatmulAlgoGetHeuristic;
    internal static delegate* unmanaged<nint, nint, void*, void*, nint, void*, nint, void*, void*, nint, void*, nint, void*, void*, nuint, nint, int> cublasLtMatmul;

    // cublasLt.h / library_types.h constants.
    internal const int ComputeF32 = 68, DataF32 = 0, DataF16 = 2, DataBF16 = 14;
    internal const int DescTransA = 3, DescTransB = 4, PrefMaxWorkspace = 1, OpN = 0, OpT = 1;

    /// <summary>cublasLtMatmulHeuristicResult_t (96 bytes): the algorithm (64 opaque bytes), workspace, state, waves.</summary>
    [StructLayout(LayoutKind.Sequential, Size = 96)]
    internal struct HeuristicResult
    {
        public fixed ulong Algo[8];
        public nuint WorkspaceSize;
        public int State;
        public float Waves;
        public fixed int Reserved[4];
    }

    /// <summary>Where cuBLASLt may be, in search order (files or bare names for the loader); pure, for tests.</summary>
    public static IReadOnlyList<string> Candidates(Func<string, string?> env, Func<string, IEnumerable<string>> listDirectories, Func<string, bool> fileExists)
    {
        var names = new[] { "libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11", "libcublasLt.so" };
        var result = new List<string>();
        if (env("LLMARCH_CUBLASLT") is { Length: > 0 } explicitPath) result.Add(explicitPath);
        foreach (var v in new[] { "CUDA_HOME", "CUDA_PATH" })
            if (env(v) is { Length: > 0 } root)
                foreach (var sub in new[] { "lib64", "lib", Path.Combine("targets", "x86_64-linux", "lib") })
                    foreach (var n in names)
                    {
                        string p = Path.Combine(root, sub, n);
                        if (fileExists(p)) result.Add(p);
                    }
        result.AddRange(names); // the loader's own path (LD_LIBRARY_PATH, ldconfig)
        // pip wheels: <site-packages>/nvidia/<pkg>/lib/libcublasLt.so.* (nvidia-cublas, nvidia-cublas-cu12, the cu13 layout).
        var roots = new List<string>();
        foreach (var v in new[] { "VIRTUAL_ENV", "CONDA_PREFIX" })
            if (env(v) is { Length: > 0 } r) roots.Add(r);
        if (env("HOME") is { Length: > 0 } home) roots.Add(Path.Combine(home, ".local"));
        roots.AddRange(["/usr/local", "/usr"]);
        foreach (var opt in listDirectories("/opt")) { roots.Add(opt); roots.Add(Path.Combine(opt, ".venv")); roots.Add(Path.Combine(opt, "venv")); }
        foreach (var root in roots)
            foreach (var lib in listDirectories(Path.Combine(root, "lib")))
            {
                if (!Path.GetFileName(lib).StartsWith("python3", StringComparison.Ordinal)) continue;
                foreach (var kind in new[] { "site-packages", "dist-packages" })
                    foreach (var pkg in listDirectories(Path.Combine(lib, kind, "nvidia")))
                        foreach (var n in names)
                        {
                            string p = Path.Combine(pkg, "lib", n);
                            if (fileExists(p)) result.Add(p);
                        }
            }
        return result.Distinct().ToList();
    }

    private static IEnumerable<string> Dirs(string path)
    {
        try { return Directory.Exists(path) ? Directory.GetDirectories(path).OrderBy(d => d, StringComparer.Ordinal).ToArray() : []; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return []; }
    }

    /// <summary>Loads cuBLASLt from the first candidate that loads and exports every call; false otherwise.</summary>
    public static bool TryLoad()
    {
        lock (Gate)
        {
            if (_tried) return _lib != 0;
            _tried = true;
            if (Environment.GetEnvironmentVariable("LLMARCH_NO_CUBLASLT") == "1") { LoadError = "disabled by LLMARCH_NO_CUBLASLT=1"; return false; }
            foreach (var c in Candidates(Environment.GetEnvironmentVariable, Dirs, File.Exists))
            {
                if (!NativeLibrary.TryLoad(c, out var lib)) continue;
                try
                {
                    _lib = lib;
                    Bind();
                    LoadedFrom = c;
                    return true;
                }
                catch (EntryPointNotFoundException) { _lib = 0; }
            }
            LoadError = "libcublasLt was not found (set LLMARCH_CUBLASLT or CUDA_HOME, or install the nvidia-cublas wheel)";
            return false;
        }
    }

    private static nint Sym(string name) =>
        NativeLibrary.TryGetExport(_lib, name, out var p) ? p : throw new EntryPointNotFoundException(name);

    private static void Bind()
    {
        cublasLtCreate = (delegate* unmanaged<nint*, int>)Sym("cublasLtCreate");
        cublasLtMatmulDescCreate = (delegate* unmanaged<nint*, int, int, int>)Sym("cublasLtMatmulDescCreate");
        cublasLtMatmulDescSetAttribute = (delegate* unmanaged<nint, int, void*, nuint, int>)Sym("cublasLtMatmulDescSetAttribute");
        cublasLtMatmulDescDestroy = (delegate* unmanaged<nint, int>)Sym("cublasLtMatmulDescDestroy");
        cublasLtMatrixLayoutCreate = (delegate* unmanaged<nint*, int, ulong, ulong, long, int>)Sym("cublasLtMatrixLayoutCreate");
        cublasLtMatrixLayoutDestroy = (delegate* unmanaged<nint, int>)Sym("cublasLtMatrixLayoutDestroy");
        cublasLtMatmulPreferenceCreate = (delegate* unmanaged<nint*, int>)Sym("cublasLtMatmulPreferenceCreate");
        cublasLtMatmulPreferenceSetAttribute = (delegate* unmanaged<nint, int, void*, nuint, int>)Sym("cublasLtMatmulPreferenceSetAttribute");
        cublasLtMatmulPreferenceDestroy = (delegate* unmanaged<nint, int>)Sym("cublasLtMatmulPreferenceDestroy");
        cublasLtMatmulAlgoGetHeuristic = (delegate* unmanaged<nint, nint, nint, nint, nint, nint, nint, int, HeuristicResult*, int*, int>)Sym("cublasLtMatmulAlgoGetHeuristic");
        cublasLtMatmul = (delegate* unmanaged<nint, nint, void*, void*, nint, void*, nint, void*, void*, nint, void*, nint, void*, void*, nuint, nint, int>)Sym("cublasLtMatmul");
    }

    internal static void Check(int status, string call)
    {
        if (status != 0) throw new CudaException($"{call}: cublasStatus {status}", status);
    }
}
