using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using LlmArch.Native;
using static LlmArch.Native.CudaDriver;

namespace LlmArch.Compute.Cuda;

/// <summary>Options of a <see cref="CudaBackend"/>.</summary>
public sealed record CudaOptions
{
    /// <summary>Prefill GEMMs in BF16 on the tensor cores (cuBLASLt, FP32 accumulation and output) instead of exact FP32.</summary>
    public bool Bf16 { get; init; }
    /// <summary>Capture each decode step shape once as a CUDA graph and replay it.</summary>
    public bool Graphs { get; init; } = true;
    /// <summary>Fuse RMSNorm into the next GEMV, batch GEMVs that share an input, gate/up + activation, down + residual.</summary>
    public bool Fuse { get; init; } = true;

    /// <summary>The defaults, with LLMARCH_CUDA_GRAPHS=0 / LLMARCH_CUDA_FUSE=0 turning those features off (diagnosis).</summary>
    public static CudaOptions FromEnvironment(bool bf16 = false) => new()
    {
        Bf16 = bf16,
        Graphs = Environment.GetEnvironmentVariable("LLMARCH_CUDA_GRAPHS") != "0" && Environment.GetEnvironmentVariable("LLMARCH_CUDA_PROFILE") != "1",
        Fuse = Environment.GetEnvironmentVariable("LLMARCH_CUDA_FUSE") != "0",
    };
}

/// <summary>
/// The op set on an NVIDIA GPU through the CUDA driver API. Weights are uploaded once (quantized ones with their scales,
/// dequantized inside the kernels); caches and states live in device memory; scratch comes from a bump arena whose
/// addresses repeat step after step, which is what lets a decode step be captured as a CUDA graph and replayed
/// (<see cref="IStepGraphs"/>). All work goes to one stream of the device's primary context; the only device-to-host
/// traffic is <see cref="Download{T}"/>. Kernels come from the embedded fatbin built from cuda/src (no run-time
/// compilation). Calls bind the context to the calling thread (cheap when already bound): the model's step lock keeps
/// one step at a time, and a per-op hand-off to a worker thread would cost more than most kernels take.
/// </summary>
public sealed unsafe partial class CudaBackend : IBackend, IDisposable
{
    private readonly nint _ctx, _stream;
    private readonly int _device;
    private readonly CudaKernels _k;
    private readonly bool _syncDebug;
    private readonly ScratchArena _arena;
    private readonly PinnedBuffer _up, _down;
    private readonly ConcurrentQueue<ulong> _deferredFree = new();
    [ThreadStatic] private static nint t_bound;

    public CudaOptions Options { get; }
    public DeviceKind Device => DeviceKind.Cuda;
    public string Name { get; }
    public int Threads => Multiprocessors;
    public int Multiprocessors { get; }
    public int ComputeCapability { get; }
    public int MaxSharedPerBlock { get; }
    public long TotalMemory { get; }
    /// <summary>Bytes of placed weights (with scales), of persistent allocations (KV caches, states, tables), of scratch.</summary>
    public long WeightBytes { get; private set; }
    public long PersistentBytes { get; private set; }
    public long ScratchBytes => _arena.Reserved;

    /// <summary>The device with the given index; a machine without a driver or device is one clear <see cref="LlmArchInputException"/>.</summary>
    public static CudaBackend Create(int device = 0, CudaOptions? options = null)
    {
        if (!TryLoad()) throw new LlmArchInputException($"--device cuda: no usable CUDA driver ({LoadError})");
        int n = DeviceCount();
        if (n == 0) throw new LlmArchInputException("--device cuda: the CUDA driver reports no GPU on this machine");
        if (device < 0 || device >= n) throw new LlmArchInputException($"--device cuda:{device}: this machine has {n} GPU(s) (cuda:0..cuda:{n - 1})");
        return new CudaBackend(device, options ?? CudaOptions.FromEnvironment());
    }

    private CudaBackend(int device, CudaOptions options)
    {
        Options = options;
        _device = device;
        int dev;
        Check(cuDeviceGet(&dev, device), "cuDeviceGet");
        nint ctx;
        Check(cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain");
        _ctx = ctx;
        Check(cuCtxSetCurrent(_ctx), "cuCtxSetCurrent");
        t_bound = _ctx;
        nint stream;
        Check(cuStreamCreate(&stream, StreamNonBlocking), "cuStreamCreate");
        _stream = stream;
        int v, major, minor, smem;
        Check(cuDeviceGetAttribute(&v, AttrMultiprocessorCount, dev), "cuDeviceGetAttribute");
        Multiprocessors = v;
        Check(cuDeviceGetAttribute(&major, AttrComputeCapabilityMajor, dev), "cuDeviceGetAttribute");
        Check(cuDeviceGetAttribute(&minor, AttrComputeCapabilityMinor, dev), "cuDeviceGetAttribute");
        ComputeCapability = major * 10 + minor;
        Check(cuDeviceGetAttribute(&smem, AttrMaxSharedMemoryPerBlockOptin, dev), "cuDeviceGetAttribute");
        MaxSharedPerBlock = smem;
        nuint total;
        Check(cuDeviceTotalMem(&total, dev), "cuDeviceTotalMem");
        TotalMemory = (long)total;
        byte* name = stackalloc byte[256];
        Check(cuDeviceGetName(name, 256, dev), "cuDeviceGetName");
        string gpu = System.Runtime.InteropServices.Marshal.PtrToStringAnsi((nint)name) ?? "GPU";
        Name = $"cuda:{device} {gpu} (sm_{ComputeCapability}, {Multiprocessors} SMs, {TotalMemory / (1L << 30)} GiB){(options.Bf16 ? " bf16" : "")}";
        if (ComputeCapability < 80) throw new LlmArchInputException($"--device cuda:{device}: {gpu} is sm_{ComputeCapability}; the kernels need sm_80 or newer (Ampere, Ada, Hopper)");
        _k = new CudaKernels(this);
        _syncDebug = Environment.GetEnvironmentVariable("LLMARCH_CUDA_SYNC") == "1";
        _arena = new ScratchArena(this);
        _up = new PinnedBuffer(4 << 20);
        _down = new PinnedBuffer(1 << 20);
    }

    internal nint Stream => _stream;

    /// <summary>Makes this backend's context current on the calling thread.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Bind()
    {
        if (t_bound != _ctx) { Check(cuCtxSetCurrent(_ctx), "cuCtxSetCurrent"); t_bound = _ctx; }
    }

    public T? Fused<T>() where T : class => this as T;

    // ---------------- launches ----------------

    internal void Launch(nint fn, uint gx, uint gy, uint gz, uint block, uint smem, void** args, string name)
    {
        if (_profile is not null && !_capturing) { ProfiledLaunch(fn, gx, gy, gz, block, smem, args, name); return; }
        int r = cuLaunchKernel(fn, gx, gy, gz, block, 1, 1, smem, _stream, args, null);
        if (r != 0) throw new CudaException($"launch of {name} (grid {gx}x{gy}x{gz}, block {block}, smem {smem}): {Describe(r)}", r);
        if (_syncDebug && !_capturing)
        {
            r = cuStreamSynchronize(_stream);
            if (r != 0) throw new CudaException($"{name} failed: {Describe(r)}", r);
        }
    }

    // ---------------- profiling (LLMARCH_CUDA_PROFILE=1: events around every launch, graphs off) ----------------

    private readonly Dictionary<string, (long Calls, double Ms)>? _profile =
        Environment.GetEnvironmentVariable("LLMARCH_CUDA_PROFILE") == "1" ? new() : null;
    private readonly List<nint> _events = new();
    private readonly List<(string Name, int Event)> _pending = new();
    private int _nextEvent;
    public bool Profiling => _profile is not null;

    private void ProfiledLaunch(nint fn, uint gx, uint gy, uint gz, uint block, uint smem, void** args, string name)
    {
        if (_nextEvent + 2 > 8192) CollectProfile();
        while (_events.Count < _nextEvent + 2)
        {
            nint e;
            Check(cuEventCreate(&e, 0), "cuEventCreate");
            _events.Add(e);
        }
        int i = _nextEvent;
        _nextEvent += 2;
        Check(cuEventRecord(_events[i], _stream), "cuEventRecord");
        int r = cuLaunchKernel(fn, gx, gy, gz, block, 1, 1, smem, _stream, args, null);
        if (r != 0) throw new CudaException($"launch of {name}: {Describe(r)}", r);
        Check(cuEventRecord(_events[i + 1], _stream), "cuEventRecord");
        _pending.Add((name, i));
    }

    private void CollectProfile()
    {
        if (_profile is null || _pending.Count == 0) return;
        Check(cuStreamSynchronize(_stream), "cuStreamSynchronize");
        foreach (var (name, i) in _pending)
        {
            float ms;
            Check(cuEventElapsedTime(&ms, _events[i], _events[i + 1]), "cuEventElapsedTime");
            var (c, t) = _profile.GetValueOrDefault(name);
            _profile[name] = (c + 1, t + ms);
        }
        _pending.Clear();
        _nextEvent = 0;
    }

    /// <summary>Per kernel (and shape): calls and GPU time, largest first (LLMARCH_CUDA_PROFILE=1).</summary>
    public IReadOnlyList<string> ProfileReport()
    {
        if (_profile is null) return [];
        Bind();
        Flush();
        CollectProfile();
        double total = _profile.Values.Sum(v => v.Ms);
        return _profile.OrderByDescending(kv => kv.Value.Ms).Select(kv => string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"{kv.Value.Ms,10:F2} ms {kv.Value.Ms / total * 100,5:F1}% {kv.Value.Calls,8} calls {kv.Value.Ms * 1000 / kv.Value.Calls,9:F2} us/call  {kv.Key}")).ToList();
    }

    /// <summary>Blocks of 256 threads for a grid-stride loop over n items.</summary>
    internal static uint Blocks(long n, int threads = 256) => (uint)Math.Clamp((n + threads - 1) / threads, 1, 1 << 20);

    /// <summary>Waits for every queued kernel and copy.</summary>
    public void Synchronize()
    {
        Bind();
        Flush();
        Check(cuStreamSynchronize(_stream), "cuStreamSynchronize");
    }

    // ---------------- memory ----------------

    /// <summary>Owner of one device allocation; an allocation no longer referenced is freed at the next step.</summary>
    internal sealed class DeviceBuffer(CudaBackend owner, ulong ptr, long bytes)
    {
        public ulong Ptr { get; } = ptr;
        public long Bytes { get; } = bytes;
        public bool Freed { get; set; }
        ~DeviceBuffer()
        {
            if (!Freed) owner._deferredFree.Enqueue(Ptr);
        }
    }

    internal ulong Malloc(long bytes, string what)
    {
        Bind();
        ulong p;
        int r = cuMemAlloc(&p, (nuint)Math.Max(bytes, 256));
        if (r == ErrorOutOfMemory)
        {
            // Unreferenced caches of earlier generations may still hold memory: collect them and try once more.
            GC.Collect();
            GC.WaitForPendingFinalizers();
            DrainDeferredFrees();
            r = cuMemAlloc(&p, (nuint)Math.Max(bytes, 256));
        }
        if (r == ErrorOutOfMemory)
        {
            nuint free, total;
            cuMemGetInfo(&free, &total);
            throw new LlmArchInputException($"{Name}: out of GPU memory allocating {bytes / 1e6:F1} MB for {what} ({free / 1e6:F0} MB free of {total / 1e6:F0} MB)");
        }
        Check(r, $"cuMemAlloc({bytes} bytes for {what})");
        return p;
    }

    private void DrainDeferredFrees()
    {
        if (_deferredFree.IsEmpty) return;
        Check(cuStreamSynchronize(_stream), "cuStreamSynchronize");
        while (_deferredFree.TryDequeue(out var p))
        {
            cuMemFree(p);
            _epoch++;
        }
    }

    public Tensor Allocate(DType dtype, Shape shape, string name)
    {
        Bind();
        if (_capturing) AbortCapture("an allocation inside the step");
        long bytes = DTypes.StorageBytes(dtype, shape.Count);
        ulong p = Malloc(bytes, name);
        Check(cuMemsetD8Async(p, 0, (nuint)Math.Max(bytes, 1), _stream), "cuMemsetD8Async");
        PersistentBytes += bytes;
        return new Tensor(dtype, shape, (nint)p, new DeviceBuffer(this, p, bytes), name) { Device = DeviceKind.Cuda };
    }

    public void Free(Tensor t)
    {
        if (t.Owner is not DeviceBuffer b || b.Freed || (ulong)t.Ptr != b.Ptr) return;
        Bind();
        Flush();
        if (_capturing)
        {
            // No synchronization while capturing: free it after the step (the graph is single-use).
            AbortCapture("a free inside the step");
            b.Freed = true;
            GC.SuppressFinalize(b);
            _deferredFree.Enqueue(b.Ptr);
            PersistentBytes -= b.Bytes;
            if (t.Scales is not null) Free(t.Scales);
            return;
        }
        Check(cuStreamSynchronize(_stream), "cuStreamSynchronize");
        b.Freed = true;
        GC.SuppressFinalize(b);
        Check(cuMemFree(b.Ptr), "cuMemFree");
        PersistentBytes -= b.Bytes;
        _epoch++;
        if (t.Scales is not null) Free(t.Scales);
    }

    public Tensor PlaceWeight(Tensor host)
    {
        if (host.Device == DeviceKind.Cuda) return host;
        if (host.Ptr == 0 && host.Count > 0) throw new ArgumentException($"weight '{host.Name}' has no data to place on {Name}");
        if (host.DType == DType.Q8_0) host = SplitQ8(host);
        else if (DTypes.IsGgmlBlock(host.DType)) host = DequantizeToF16(host);
        Bind();
        long bytes = host.ByteCount;
        ulong p = Malloc(bytes, $"weight '{host.Name}'");
        if (bytes > 0) CopyToDevice(p, (void*)host.Ptr, bytes, $"upload of weight '{host.Name}'");
        WeightBytes += bytes;
        var t = new Tensor(host.DType, host.Shape, (nint)p, new DeviceBuffer(this, p, bytes), host.Name) { Device = DeviceKind.Cuda, ColumnMajor = host.ColumnMajor };
        if (host.Scales is not null) BlockScales.Attach(t, PlaceWeight(host.Scales), host.ScaleBlock.Rows, host.ScaleBlock.Cols);
        return t;
    }

    /// <summary>
    /// llama.cpp's Q8_0 (34-byte blocks: f16 scale, 32 int8) as the GPU kernels read it: the int8 values row-major
    /// (16-byte loads) and one F32 scale per 32 values, attached as block scales (1 x 32). Same values, 6% less memory
    /// than the blocks would need once aligned.
    /// </summary>
    public static Tensor SplitQ8(Tensor host)
    {
        int K = host.Shape.Last;
        long rows = host.Count / Math.Max(1, K);
        int blocks = K / 32;
        var q = Tensor.Zeros(DType.I8, host.Shape, host.Name);
        var dims = host.Shape.ToArray(); dims[^1] = blocks;
        var sc = Tensor.Zeros(DType.F32, Shape.Of(dims.Select(d => (long)d).ToArray()), host.Name + ".scales");
        byte* src = (byte*)host.Ptr; sbyte* dq = (sbyte*)q.Ptr; float* ds = (float*)sc.Ptr;
        Parallel.For(0, (rows + 255) / 256, chunk =>
        {
            for (long r = chunk * 256; r < Math.Min(rows, chunk * 256 + 256); r++)
                for (int b = 0; b < blocks; b++)
                {
                    byte* blk = src + (r * blocks + b) * 34;
                    ds[r * blocks + b] = Cpu.Fp16.ToF32(*(ushort*)blk);
                    new ReadOnlySpan<sbyte>(blk + 2, 32).CopyTo(new Span<sbyte>(dq + r * K + b * 32, 32));
                }
        });
        return BlockScales.Attach(q, sc, 1, 32);
    }

    /// <summary>The other llama.cpp block types (Q4_0, Q4_K, Q5_K, Q6_K, from GGUF files or --quant) have no GPU kernel:
    /// they are dequantized to F16 at upload (the values the CPU's scalar references decode, rounded to half precision).</summary>
    internal static Tensor DequantizeToF16(Tensor host)
    {
        int K = host.Shape.Last;
        long rows = host.Count / Math.Max(1, K);
        var h = Tensor.Zeros(DType.F16, host.Shape, host.Name);
        Half* dst = (Half*)h.Ptr;
        Parallel.For(0, (rows + 63) / 64, chunk =>
        {
            var row = new float[K];
            for (long r = chunk * 64; r < Math.Min(rows, chunk * 64 + 64); r++)
            {
                Cpu.Convert.ToF32(host, r * K, row);
                for (int i = 0; i < K; i++) dst[r * K + i] = (Half)row[i];
            }
        });
        return h;
    }

    public Tensor Empty(Shape shape, DType dtype = DType.F32)
    {
        if (shape.Count < 0) throw new ArgumentException($"shape {shape}");
        return _arena.Alloc(shape, dtype);
    }

    public void ResetScratch()
    {
        Bind();
        Flush();
        if (_pending.Count > 4096) CollectProfile();
        DrainDeferredFrees();
        _arena.Reset();
    }

    public Tensor View(Tensor x, Shape shape, long offset = 0)
    {
        if (offset < 0 || offset + shape.Count > x.Count) throw new ArgumentException($"cannot view {x.Shape} at {offset} as {shape}");
        var t = _arena.Header();
        t.DType = x.DType; t.Shape = shape; t.Device = x.Device; t.Ptr = x.Ptr + (nint)DTypes.StorageBytes(x.DType, offset); t.Owner = x.Owner;
        t.Scales = offset == 0 ? x.Scales : null; t.ScaleBlock = x.ScaleBlock; t.Name = x.Name; t.ColumnMajor = x.ColumnMajor;
        return t;
    }

    private static void RequireDevice(Tensor t, string what)
    {
        if (t.Device != DeviceKind.Cuda) throw new ArgumentException($"{what} '{t.Name}' {t.DType}{t.Shape} is on the {t.Device}, not on the GPU");
    }

    public void Upload<T>(ReadOnlySpan<T> values, Tensor x, long offset = 0) where T : unmanaged
    {
        if (offset < 0 || offset + values.Length > x.Count) throw new ArgumentException($"upload of {values.Length} at {offset} into {x.Shape}");
        if (sizeof(T) != DTypes.ElementSize(x.DType) || DTypes.IsQuantized(x.DType))
            throw new ArgumentException($"cannot upload {typeof(T).Name} into a {x.DType} tensor");
        RequireDevice(x, "upload target");
        Bind();
        Flush();
        if (_capturing) AbortCapture("a host upload inside the step");
        long bytes = (long)values.Length * sizeof(T);
        if (bytes == 0) return;
        ulong dst = (ulong)x.Ptr + (ulong)(offset * sizeof(T));
        if (bytes > _up.Bytes / 2)
        {
            // Large uploads (tables built at load) go straight from the caller's memory.
            if (_capturing) throw new InvalidOperationException("a large host upload inside a captured step");
            fixed (T* src = values) CopyToDevice(dst, src, bytes, "upload");
            return;
        }
        void* stage = StageUpload(bytes);
        fixed (T* src = values) Buffer.MemoryCopy(src, stage, bytes, bytes);
        Check(cuMemcpyHtoDAsync(dst, stage, (nuint)bytes, _stream), "cuMemcpyHtoDAsync");
    }

    /// <summary>
    /// A host-to-device copy on this backend's stream, complete on return (the stream does not synchronize with the
    /// legacy default stream, so the driver's synchronous copies could overtake queued kernels).
    /// </summary>
    internal void CopyToDevice(ulong dst, void* src, long bytes, string what)
    {
        Check(cuMemcpyHtoDAsync(dst, src, (nuint)bytes, _stream), what);
        Check(cuStreamSynchronize(_stream), what);
    }

    private long _upOffset;

    /// <summary>A region of the pinned upload ring; when it wraps, waits until the copies queued from it have run.</summary>
    private void* StageUpload(long bytes)
    {
        long n = (bytes + 255) & ~255L;
        if (_upOffset + n > _up.Bytes)
        {
            if (_capturing) throw new InvalidOperationException("the upload ring wrapped inside a captured step");
            Check(cuStreamSynchronize(_stream), "cuStreamSynchronize");
            _upOffset = 0;
        }
        void* p = (byte*)_up.Ptr + _upOffset;
        _upOffset += n;
        return p;
    }

    public void Download<T>(Tensor x, Span<T> dst, long offset = 0) where T : unmanaged
    {
        if (offset < 0 || offset + dst.Length > x.Count) throw new ArgumentException($"download of {dst.Length} at {offset} from {x.Shape}");
        RequireDevice(x, "download source");
        Bind();
        Flush();
        if (_capturing) throw new InvalidOperationException("a download inside a captured step");
        if (dst.Length == 0) return;
        bool toFloat = typeof(T) == typeof(float);
        if (!toFloat && sizeof(T) != DTypes.ElementSize(x.DType)) throw new ArgumentException($"cannot download a {x.DType} tensor as {typeof(T).Name}");
        if (toFloat && x.DType is not (DType.F32 or DType.BF16 or DType.F16))
            throw new ArgumentException($"cannot download a {x.DType} tensor as float");
        int es = DTypes.ElementSize(x.DType);
        long bytes = (long)dst.Length * es;
        _down.Ensure(bytes);
        Check(cuMemcpyDtoHAsync(_down.Ptr, (ulong)x.Ptr + (ulong)(offset * es), (nuint)bytes, _stream), "cuMemcpyDtoHAsync");
        Check(cuStreamSynchronize(_stream), $"download of {x.Name} {x.DType}{x.Shape}");
        if (toFloat && x.DType != DType.F32)
        {
            var f = System.Runtime.InteropServices.MemoryMarshal.Cast<T, float>(dst);
            var raw = new Tensor(x.DType, new Shape(dst.Length), (nint)_down.Ptr, null);
            Cpu.Convert.ToF32(raw, 0, f);
            return;
        }
        new ReadOnlySpan<T>(_down.Ptr, dst.Length).CopyTo(dst);
    }

    public void Copy(Tensor src, Tensor dst)
    {
        if (src.DType != dst.DType || src.Count != dst.Count) throw new ArgumentException($"copy {src.DType}{src.Shape} into {dst.DType}{dst.Shape}");
        Bind();
        Flush();
        long bytes = src.ByteCount;
        if (bytes > 0) Check(cuMemcpyDtoDAsync((ulong)dst.Ptr, (ulong)src.Ptr, (nuint)bytes, _stream), "cuMemcpyDtoDAsync");
    }

    public void Fill(Tensor x, float value)
    {
        if (x.DType is not (DType.F32 or DType.I32 or DType.BF16 or DType.F16)) throw new ArgumentException($"cannot fill a {x.DType} tensor");
        Bind();
        Flush();
        LaunchFill(x, value);
    }

    private void LaunchFill(Tensor x, float value)
    {
        long n = x.Count;
        if (n == 0) return;
        nint p = x.Ptr;
        int dt = (int)x.DType;
        void** args = stackalloc void*[] { &p, &n, &dt, &value };
        Launch(_k.Fill, Blocks(n), 1, 1, 256, 0, args, "k_fill");
    }

    // ---------------- the step layout ----------------

    /// <summary>The context bucket of the current step: the attention kernels' split sizes depend on it, not on the data.</summary>
    internal int Bucket { get; private set; } = 256;

    public void Prepare(StepBatch batch)
    {
        Bind();
        Flush();
        int N = batch.Tokens, S = batch.Sequences;
        Bucket = ContextBucket(batch.MaxEnd);
        // One scratch block (the step's first allocation, so its address repeats for every step of this shape).
        int ints = 3 * N + 5 * S;
        var all = Empty(new Shape(Math.Max(ints, 1)), DType.I32);
        long bytes = (long)ints * 4;
        int* h = (int*)StageUpload(bytes);
        batch.TokenIds.CopyTo(new Span<int>(h, N));
        batch.TokenPositions.CopyTo(new Span<int>(h + N, N));
        batch.TokenSequence.CopyTo(new Span<int>(h + 2 * N, N));
        batch.WriteSequenceTable(new Span<int>(h + 3 * N, 4 * S));
        batch.WriteLastRows(new Span<int>(h + 3 * N + 4 * S, S));
        if (bytes > 0) Check(cuMemcpyHtoDAsync((ulong)all.Ptr, h, (nuint)bytes, _stream), "cuMemcpyHtoDAsync");
        batch.Ids = View(all, new Shape(N), 0);
        batch.Positions = View(all, new Shape(N), N);
        batch.TokenSequences = View(all, new Shape(N), 2 * N);
        batch.SequenceTable = View(all, new Shape(S, 4), 3 * N);
        batch.LastRows = View(all, new Shape(S), 3 * N + 4 * S);
    }

    /// <summary>Powers of two from 256: a captured decode step serves every context length up to its bucket.</summary>
    internal static int ContextBucket(int maxEnd)
    {
        int b = 256;
        while (b < maxEnd) b <<= 1;
        return b;
    }

    public void Dispose()
    {
        Bind();
        try { Synchronize(); } catch (CudaException) { }
        DestroyGraphs();
        _arena.Dispose();
        _up.Dispose();
        _down.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>
    /// Device-to-device copy bandwidth, counting bytes read plus bytes written (the ceiling a decode step is compared
    /// with): best of 10 copies of <paramref name="bytes"/>, timed with events.
    /// </summary>
    public double MeasureCopyBandwidth(long bytes = 4L << 30)
    {
        Bind();
        Flush();
        ulong a = Malloc(bytes, "bandwidth source"), b = Malloc(bytes, "bandwidth target");
        nint e0, e1;
        Check(cuEventCreate(&e0, 0), "cuEventCreate");
        Check(cuEventCreate(&e1, 0), "cuEventCreate");
        try
        {
            Check(cuMemsetD8Async(a, 1, (nuint)bytes, _stream), "cuMemsetD8Async");
            double best = 0;
            for (int i = 0; i < 12; i++)
            {
                Check(cuEventRecord(e0, _stream), "cuEventRecord");
                Check(cuMemcpyDtoDAsync(b, a, (nuint)bytes, _stream), "cuMemcpyDtoDAsync");
                Check(cuEventRecord(e1, _stream), "cuEventRecord");
                Check(cuEventSynchronize(e1), "cuEventSynchronize");
                float ms;
                Check(cuEventElapsedTime(&ms, e0, e1), "cuEventElapsedTime");
                if (i >= 2) best = Math.Max(best, 2.0 * bytes / (ms / 1e3));
            }
            return best;
        }
        finally
        {
            cuMemFree(a); cuMemFree(b);
        }
    }

    /// <summary>GPU memory in use by this backend, by kind, and the device's free memory.</summary>
    public (long Weights, long Persistent, long Scratch, long Free, long Total) MemoryUse()
    {
        Bind();
        nuint free, total;
        Check(cuMemGetInfo(&free, &total), "cuMemGetInfo");
        return (WeightBytes, PersistentBytes, ScratchBytes, (long)free, (long)total);
    }

    // ---------------- helpers ----------------

    /// <summary>Page-locked host memory (staging for copies), grown on demand.</summary>
    internal sealed class PinnedBuffer : IDisposable
    {
        public void* Ptr { get; private set; }
        public long Bytes { get; private set; }
        public PinnedBuffer(long bytes) { Alloc(bytes); }
        private void Alloc(long bytes)
        {
            void* p;
            Check(cuMemAllocHost(&p, (nuint)bytes), "cuMemAllocHost");
            Ptr = p; Bytes = bytes;
        }
        public void Ensure(long bytes)
        {
            if (bytes <= Bytes) return;
            cuMemFreeHost(Ptr);
            Alloc(Math.Max(bytes, Bytes * 2));
        }
        public void Dispose() { if (Ptr != null) cuMemFreeHost(Ptr); Ptr = null; }
    }

    /// <summary>
    /// Scratch: a bump allocator over device chunks that are never freed while the backend lives, and pooled tensor
    /// headers. The same sequence of requests after a reset gets the same addresses (what graph replay needs); a
    /// request that does not fit moves to the next chunk (allocated when missing, twice the last one's size).
    /// </summary>
    internal sealed class ScratchArena(CudaBackend b) : IDisposable
    {
        private readonly List<(ulong Ptr, long Bytes)> _chunks = new();
        private readonly List<Tensor> _headers = new();
        private int _chunk, _nextHeader;
        private long _offset;
        public long Reserved { get; private set; }
        /// <summary>Incremented whenever a chunk is added (a capture that grew the arena is not replayable).</summary>
        public int Growth { get; private set; }

        public void Reset() { _chunk = 0; _offset = 0; _nextHeader = 0; }

        public Tensor Alloc(Shape shape, DType dtype)
        {
            long bytes = (DTypes.StorageBytes(dtype, Math.Max(1, shape.Count)) + 255) & ~255L;
            while (true)
            {
                if (_chunk == _chunks.Count)
                {
                    // Doubling up to 1 GiB per chunk: a long prefill needs many GiB in all, not one giant block.
                    long size = Math.Max(bytes, _chunks.Count == 0 ? 64L << 20 : Math.Min(_chunks[^1].Bytes * 2, 1L << 30));
                    _chunks.Add((b.Malloc(size, "scratch"), size));
                    Reserved += size;
                    Growth++;
                }
                var (p, n) = _chunks[_chunk];
                if (_offset + bytes <= n)
                {
                    var t = Header();
                    t.DType = dtype; t.Shape = shape; t.Device = DeviceKind.Cuda; t.Ptr = (nint)(p + (ulong)_offset); t.Owner = null;
                    t.Scales = null; t.ScaleBlock = default; t.Name = ""; t.ColumnMajor = false;
                    _offset += bytes;
                    return t;
                }
                _chunk++;
                _offset = 0;
            }
        }

        public Tensor Header()
        {
            if (_nextHeader == _headers.Count) _headers.Add(new Tensor());
            return _headers[_nextHeader++];
        }

        public void Dispose()
        {
            foreach (var (p, _) in _chunks) cuMemFree(p);
            _chunks.Clear();
        }
    }
}
