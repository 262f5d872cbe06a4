using System.Runtime.InteropServices;

namespace LlmArch.Native;

/// <summary>A CUDA driver call that failed: the function, the CUresult name and the driver's description.</summary>
public sealed class CudaException(string message, int code = 0) : Exception(message)
{
    public int Code { get; } = code;
}

/// <summary>
/// The CUDA driver API (<c>libcuda.so.1</c> / <c>nvcuda.dll</c>) through unmanaged function pointers resolved once at
/// first use, versioned symbols by their exported names (<c>cuMemAlloc_v2</c>, <c>cuStreamBeginCapture_v2</c>, ...).
/// Nothing here links statically: a machine without a driver gets <see cref="TryLoad"/> = false and a reason, never a
/// crash at startup. Only the calls the backend needs are bound.
/// </summary>
public static unsafe class CudaDriver
{
    private static readonly object Gate = new();
    private static bool _tried;
    private static string? _error;
    private static nint _lib;

    // Function pointers (CUresult = int; CUdeviceptr = ulong; handles = nint).
    internal static delegate* unmanaged<uint, int> cuInit;
    internal static delegate* unmanaged<int*, int> cuDriverGetVersion;
    internal static delegate* unmanaged<int*, int> cuDeviceGetCount;
    internal static delegate* unmanaged<int*, int, int> cuDeviceGet;
    internal static delegate* unmanaged<byte*, int, int, int> cuDeviceGetName;
    internal static delegate* unmanaged<int*, int, int, int> cuDeviceGetAttribute;
    internal static delegate* unmanaged<nuint*, int, int> cuDeviceTotalMem;
    internal static delegate* unmanaged<nint*, int, int> cuDevicePrimaryCtxRetain;
    internal static delegate* unmanaged<nint, int> cuCtxSetCurrent;
    internal static delegate* unmanaged<nint*, int> cuCtxGetCurrent;
    internal static delegate* unmanaged<int> cuCtxSynchronize;
    internal static delegate* unmanaged<nint*, void*, int> cuModuleLoadData;
    internal static delegate* unmanaged<nint*, nint, byte*, int> cuModuleGetFunction;
    internal static delegate* unmanaged<nint, int, int, int> cuFuncSetAttribute;
    internal static delegate* unmanaged<ulong*, nuint, int> cuMemAlloc;
    internal static delegate* unmanaged<ulong, int> cuMemFree;
    internal static delegate* unmanaged<void**, nuint, int> cuMemAllocHost;
    internal static delegate* unmanaged<void*, int> cuMemFreeHost;
    internal static delegate* unmanaged<ulong, void*, nuint, int> cuMemcpyHtoD;
    internal static delegate* unmanaged<void*, ulong, nuint, int> cuMemcpyDtoH;
    internal static delegate* unmanaged<ulong, void*, nuint, nint, int> cuMemcpyHtoDAsync;
    internal static delegate* unmanaged<void*, ulong, nuint, nint, int> cuMemcpyDtoHAsync;
    internal static delegate* unmanaged<ulong, ulong, nuint, nint, int> cuMemcpyDtoDAsync;
    internal static delegate* unmanaged<ulong, byte, nuint, nint, int> cuMemsetD8Async;
    internal static delegate* unmanaged<nuint*, nuint*, int> cuMemGetInfo;
    internal static delegate* unmanaged<nint*, uint, int> cuStreamCreate;
    internal static delegate* unmanaged<nint, int> cuStreamSynchronize;
    internal static delegate* unmanaged<nint, int, int> cuStreamBeginCapture;
    internal static delegate* unmanaged<nint, nint*, int> cuStreamEndCapture;
    internal static delegate* unmanaged<nint, int*, int> cuStreamIsCapturing;
    internal static delegate* unmanaged<nint*, nint, ulong, int> cuGraphInstantiateWithFlags;
    internal static delegate* unmanaged<nint, nint, int> cuGraphLaunch;
    internal static delegate* unmanaged<nint, int> cuGraphExecDestroy;
    internal static delegate* unmanaged<nint, int> cuGraphDestroy;
    internal static delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, nint, void**, void**, int> cuLaunchKernel;
    internal static delegate* unmanaged<nint*, uint, int> cuEventCreate;
    internal static delegate* unmanaged<nint, nint, int> cuEventRecord;
    internal static delegate* unmanaged<nint, int> cuEventSynchronize;
    internal static delegate* unmanaged<float*, nint, nint, int> cuEventElapsedTime;
    internal static delegate* unmanaged<int, byte**, int> cuGetErrorString;
    internal static delegate* unmanaged<int, byte**, int> cuGetErrorName;

    // Constants of cuda.h used here.
    internal const int AttrMultiprocessorCount = 16, AttrComputeCapabilityMajor = 75, AttrComputeCapabilityMinor = 76;
    internal const int AttrMaxSharedMemoryPerBlockOptin = 97, AttrL2CacheSize = 38, AttrMemoryClockRate = 36, AttrGlobalMemoryBusWidth = 37;
    internal const int FuncAttrMaxDynamicSharedSize = 8;
    internal const uint StreamNonBlocking = 1;
    internal const int CaptureModeRelaxed = 2;
    internal const int ErrorOutOfMemory = 2, ErrorNoDevice = 100, ErrorInvalidDevice = 101;

    /// <summary>Why the driver could not be used (null once it loaded).</summary>
    public static string? LoadError { get { TryLoad(); return _error; } }

    /// <summary>Loads libcuda and binds every call; false (with <see cref="LoadError"/>) when the driver is missing or too old.</summary>
    public static bool TryLoad()
    {
        lock (Gate)
        {
            if (_tried) return _error is null;
            _tried = true;
            string[] names = OperatingSystem.IsWindows() ? ["nvcuda.dll"] : ["libcuda.so.1", "libcuda.so"];
            foreach (var n in names)
                if (NativeLibrary.TryLoad(n, out _lib)) break;
            if (_lib == 0) { _error = $"the NVIDIA driver library ({string.Join(" / ", names)}) was not found; install the NVIDIA driver"; return false; }
            try { Bind(); }
            catch (EntryPointNotFoundException e) { _error = $"the NVIDIA driver is too old: {e.Message} (driver 525 or newer is needed)"; return false; }
            int r = cuInit(0);
            if (r != 0) { _error = $"cuInit failed: {Describe(r)}"; return false; }
            return true;
        }
    }

    private static nint Sym(string name) =>
        NativeLibrary.TryGetExport(_lib, name, out var p) ? p : throw new EntryPointNotFoundException($"{name} is not exported");

    private static void Bind()
    {
        cuInit = (delegate* unmanaged<uint, int>)Sym("cuInit");
        cuDriverGetVersion = (delegate* unmanaged<int*, int>)Sym("cuDriverGetVersion");
        cuDeviceGetCount = (delegate* unmanaged<int*, int>)Sym("cuDeviceGetCount");
        cuDeviceGet = (delegate* unmanaged<int*, int, int>)Sym("cuDeviceGet");
        cuDeviceGetName = (delegate* unmanaged<byte*, int, int, int>)Sym("cuDeviceGetName");
        cuDeviceGetAttribute = (delegate* unmanaged<int*, int, int, int>)Sym("cuDeviceGetAttribute");
        cuDeviceTotalMem = (delegate* unmanaged<nuint*, int, int>)Sym("cuDeviceTotalMem_v2");
        cuDevicePrimaryCtxRetain = (delegate* unmanaged<nint*, int, int>)Sym("cuDevicePrimaryCtxRetain");
        cuCtxSetCurrent = (delegate* unmanaged<nint, int>)Sym("cuCtxSetCurrent");
        cuCtxGetCurrent = (delegate* unmanaged<nint*, int>)Sym("cuCtxGetCurrent");
        cuCtxSynchronize = (delegate* unmanaged<int>)Sym("cuCtxSynchronize");
        cuModuleLoadData = (delegate* unmanaged<nint*, void*, int>)Sym("cuModuleLoadData");
        cuModuleGetFunction = (delegate* unmanaged<nint*, nint, byte*, int>)Sym("cuModuleGetFunction");
        cuFuncSetAttribute = (delegate* unmanaged<nint, int, int, int>)Sym("cuFuncSetAttribute");
        cuMemAlloc = (delegate* unmanaged<ulong*, nuint, int>)Sym("cuMemAlloc_v2");
        cuMemFree = (delegate* unmanaged<ulong, int>)Sym("cuMemFree_v2");
        cuMemAllocHost = (delegate* unmanaged<void**, nuint, int>)Sym("cuMemAllocHost_v2");
        cuMemFreeHost = (delegate* unmanaged<void*, int>)Sym("cuMemFreeHost");
        cuMemcpyHtoD = (delegate* unmanaged<ulong, void*, nuint, int>)Sym("cuMemcpyHtoD_v2");
        cuMemcpyDtoH = (delegate* unmanaged<void*, ulong, nuint, int>)Sym("cuMemcpyDtoH_v2");
        cuMemcpyHtoDAsync = (delegate* unmanaged<ulong, void*, nuint, nint, int>)Sym("cuMemcpyHtoDAsync_v2");
        cuMemcpyDtoHAsync = (delegate* unmanaged<void*, ulong, nuint, nint, int>)Sym("cuMemcpyDtoHAsync_v2");
        cuMemcpyDtoDAsync = (delegate* unmanaged<ulong, ulong, nuint, nint, int>)Sym("cuMemcpyDtoDAsync_v2");
        cuMemsetD8Async = (delegate* unmanaged<ulong, byte, nuint, nint, int>)Sym("cuMemsetD8Async");
        cuMemGetInfo = (delegate* unmanaged<nuint*, nuint*, int>)Sym("cuMemGetInfo_v2");
        cuStreamCreate = (delegate* unmanaged<nint*, uint, int>)Sym("cuStreamCreate");
        cuStreamSynchronize = (delegate* unmanaged<nint, int>)Sym("cuStreamSynchronize");
        cuStreamBeginCapture = (delegate* unmanaged<nint, int, int>)Sym("cuStreamBeginCapture_v2");
        cuStreamEndCapture = (delegate* unmanaged<nint, nint*, int>)Sym("cuStreamEndCapture");
        cuStreamIsCapturing = (delegate* unmanaged<nint, int*, int>)Sym("cuStreamIsCapturing");
        cuGraphInstantiateWithFlags = (delegate* unmanaged<nint*, nint, ulong, int>)Sym("cuGraphInstantiateWithFlags");
        cuGraphLaunch = (delegate* unmanaged<nint, nint, int>)Sym("cuGraphLaunch");
        cuGraphExecDestroy = (delegate* unmanaged<nint, int>)Sym("cuGraphExecDestroy");
        cuGraphDestroy = (delegate* unmanaged<nint, int>)Sym("cuGraphDestroy");
        cuLaunchKernel = (delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, nint, void**, void**, int>)Sym("cuLaunchKernel");
        cuEventCreate = (delegate* unmanaged<nint*, uint, int>)Sym("cuEventCreate");
        cuEventRecord = (delegate* unmanaged<nint, nint, int>)Sym("cuEventRecord");
        cuEventSynchronize = (delegate* unmanaged<nint, int>)Sym("cuEventSynchronize");
        cuEventElapsedTime = (delegate* unmanaged<float*, nint, nint, int>)Sym("cuEventElapsedTime");
        cuGetErrorString = (delegate* unmanaged<int, byte**, int>)Sym("cuGetErrorString");
        cuGetErrorName = (delegate* unmanaged<int, byte**, int>)Sym("cuGetErrorName");
    }

    /// <summary>"CUDA_ERROR_OUT_OF_MEMORY (out of memory)" for a CUresult.</summary>
    public static string Describe(int code)
    {
        if (cuGetErrorName == null) return $"CUresult {code}";
        byte* name = null, text = null;
        cuGetErrorName(code, &name);
        cuGetErrorString(code, &text);
        string n = name == null ? $"CUresult {code}" : Marshal.PtrToStringAnsi((nint)name) ?? "";
        string t = text == null ? "" : Marshal.PtrToStringAnsi((nint)text) ?? "";
        return t.Length > 0 ? $"{n} ({t})" : n;
    }

    /// <summary>Throws a <see cref="CudaException"/> naming the call when it failed.</summary>
    internal static void Check(int result, string call)
    {
        if (result != 0) throw new CudaException($"{call}: {Describe(result)}", result);
    }

    /// <summary>Driver version as major.minor (12080 → 12.8), or null without a driver.</summary>
    public static string? Version()
    {
        if (!TryLoad()) return null;
        int v;
        Check(cuDriverGetVersion(&v), "cuDriverGetVersion");
        return $"{v / 1000}.{v % 1000 / 10}";
    }

    public static int DeviceCount()
    {
        if (!TryLoad()) return 0;
        int n;
        int r = cuDeviceGetCount(&n);
        return r == 0 ? n : 0;
    }
}
