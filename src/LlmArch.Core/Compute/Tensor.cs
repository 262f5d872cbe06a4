using System.Runtime.CompilerServices;

namespace LlmArch.Compute;

public enum DeviceKind { Cpu, Cuda }

/// <summary>
/// A typed, shaped view of memory on a device. Weights point into a memory-mapped checkpoint (no copy);
/// activations point into pinned arrays handed out by the backend's scratch arena. Block-quantized weights
/// carry their scales in <see cref="Scales"/>, with the block shape in <see cref="ScaleBlock"/>.
/// Layout is always row-major and contiguous; the last dimension is the contiguous one.
/// </summary>
public sealed unsafe class Tensor
{
    public DType DType { get; internal set; }
    public Shape Shape { get; internal set; }
    public DeviceKind Device { get; internal set; }
    /// <summary>Base address of the first element (CPU) or device pointer (CUDA).</summary>
    public nint Ptr { get; internal set; }
    /// <summary>Keeps the memory alive: a pinned array, a memory-mapped file, or null for borrowed memory.</summary>
    public object? Owner { get; internal set; }
    /// <summary>Block scales of a quantized tensor (float32, or e8m0 bytes for MXFP4).</summary>
    public Tensor? Scales { get; internal set; }
    /// <summary>(rows, cols) of elements covered by one scale: FP8 (128,128), MXFP4 and Q8_0 (1,32).</summary>
    public (int Rows, int Cols) ScaleBlock { get; internal set; }
    /// <summary>
    /// A 2-D (or stacked 3-D) weight whose logical shape is <c>[..., O, K]</c> but whose memory is <c>[..., K, O]</c>
    /// (checkpoints that store x @ W layouts); only the matmul reads it, in place.
    /// </summary>
    public bool ColumnMajor { get; internal set; }
    /// <summary>Checkpoint name, for error messages.</summary>
    public string Name { get; internal set; } = "";

    internal Tensor() { }

    public Tensor(DType dtype, Shape shape, nint ptr, object? owner, string name = "")
    {
        DType = dtype; Shape = shape; Ptr = ptr; Owner = owner; Name = name; Device = DeviceKind.Cpu;
    }

    /// <summary>Allocates a zeroed, pinned CPU tensor outside any arena (caches, persistent state).</summary>
    public static Tensor Zeros(DType dtype, Shape shape, string name = "")
    {
        long bytes = DTypes.StorageBytes(dtype, shape.Count);
        if (bytes > Array.MaxLength - 64)
        {
            // beyond a managed array (2 GB): zeroed native memory, freed with its owner
            void* p = System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)bytes, 64);
            System.Runtime.InteropServices.NativeMemory.Clear(p, (nuint)bytes);
            return new Tensor(dtype, shape, (nint)p, new NativeAllocation(p), name);
        }
        var arr = GC.AllocateArray<byte>(checked((int)Math.Max(bytes, 1)), pinned: true);
        return new Tensor(dtype, shape, (nint)Unsafe.AsPointer(ref arr[0]), arr, name);
    }

    /// <summary>A pinned F32 tensor holding a copy of <paramref name="values"/>.</summary>
    public static Tensor FromFloats(ReadOnlySpan<float> values, Shape shape, string name = "")
    {
        if (values.Length != shape.Count) throw new ArgumentException($"{values.Length} values for shape {shape}");
        var t = Zeros(DType.F32, shape, name);
        values.CopyTo(t.AsFloats());
        return t;
    }

    public long Count => Shape.Count;
    public long ByteCount => DTypes.StorageBytes(DType, Shape.Count);

    /// <summary>Raw element access for F32 CPU tensors (kernels, tests, samplers; model code uses ops).</summary>
    public Span<float> AsFloats()
    {
        if (DType != DType.F32 || Device != DeviceKind.Cpu) throw new InvalidOperationException($"tensor '{Name}' is {DType} on {Device}, not F32 on CPU");
        return new Span<float>((void*)Ptr, checked((int)Shape.Count));
    }

    public Span<T> AsSpan<T>() where T : unmanaged =>
        new((void*)Ptr, checked((int)(ByteCount / sizeof(T))));

    public Span<byte> AsBytes() => new((void*)Ptr, checked((int)ByteCount));

    /// <summary>A view with another shape of the same element count (allocates a header; model code uses the backend's View).</summary>
    public Tensor Reshape(Shape shape)
    {
        if (shape.Count != Shape.Count) throw new ArgumentException($"cannot view {Shape} as {shape}");
        return new Tensor { DType = DType, Shape = shape, Device = Device, Ptr = Ptr, Owner = Owner, Scales = Scales, ScaleBlock = ScaleBlock, Name = Name, ColumnMajor = ColumnMajor };
    }

    /// <summary>Reads any plain dtype as F32 into a new array (tests, loaders, small tensors).</summary>
    public float[] ToFloatArray()
    {
        var r = new float[Shape.Count];
        Cpu.Convert.ToF32(this, 0, r);
        return r;
    }

    public override string ToString() => $"{(Name.Length > 0 ? Name + " " : "")}{DType}{Shape}";
}

/// <summary>Owner of memory from <c>NativeMemory.AlignedAlloc</c>: frees it when the tensors holding it are collected.</summary>
internal sealed unsafe class NativeAllocation(void* p)
{
    ~NativeAllocation() => System.Runtime.InteropServices.NativeMemory.AlignedFree(p);
}
