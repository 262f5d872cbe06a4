using System.Runtime.CompilerServices;

namespace LlmArch.Compute.Cpu;

/// <summary>
/// Hands out tensors from pinned buffers that are reused step after step: the k-th request after a reset gets the
/// k-th buffer (grown if too small). A decode step repeats the same sequence of requests, so after the first step it
/// allocates nothing. Tensor headers are pooled the same way.
/// </summary>
public sealed unsafe class ScratchArena
{
    private readonly List<float[]> _buffers = new();
    private readonly List<Tensor> _headers = new();
    private int _nextBuffer, _nextHeader;

    public long BytesReserved { get; private set; }

    public void Reset() { _nextBuffer = 0; _nextHeader = 0; }

    public Tensor Alloc(Shape shape, DType dtype = DType.F32)
    {
        long bytes = DTypes.StorageBytes(dtype, Math.Max(1, shape.Count));
        long n = (bytes + 3) / 4 + 16; // slack: vector tails may read a few elements past the end
        if (_nextBuffer == _buffers.Count) _buffers.Add(Array.Empty<float>());
        var buf = _buffers[_nextBuffer];
        if (buf.Length < n)
        {
            long grown = Math.Max(n, buf.Length + buf.Length / 4);
            BytesReserved += (grown - buf.Length) * 4L;
            buf = GC.AllocateUninitializedArray<float>(checked((int)grown), pinned: true);
            _buffers[_nextBuffer] = buf;
        }
        _nextBuffer++;
        var t = Header();
        t.DType = dtype; t.Shape = shape; t.Device = DeviceKind.Cpu; t.Ptr = (nint)Unsafe.AsPointer(ref buf[0]);
        t.Owner = buf; t.Scales = null; t.ScaleBlock = default; t.Name = ""; t.ColumnMajor = false;
        return t;
    }

    public Tensor View(Tensor x, Shape shape, long offset)
    {
        var t = Header();
        t.DType = x.DType; t.Shape = shape; t.Device = x.Device; t.Ptr = x.Ptr + (nint)DTypes.StorageBytes(x.DType, offset); t.Owner = x.Owner;
        t.Scales = offset == 0 ? x.Scales : null; t.ScaleBlock = x.ScaleBlock; t.Name = x.Name; t.ColumnMajor = x.ColumnMajor;
        return t;
    }

    private Tensor Header()
    {
        if (_nextHeader == _headers.Count) _headers.Add(new Tensor());
        return _headers[_nextHeader++];
    }
}
