using System.Runtime.InteropServices;
using LlmArch.Compute;

namespace LlmArch.Checkpoints;

/// <summary>
/// Copies a tensor into 2 MB-aligned native memory advised for transparent huge pages (Linux <c>madvise</c>), so a
/// decode step streams weights with few TLB misses and long physically contiguous runs. Freed with its owner.
/// </summary>
internal static unsafe partial class HostCopy
{
    private const int MadvHugepage = 14, MadvDontneed = 4;
    private const nuint Huge = 2 << 20;

    [LibraryImport("libc", EntryPoint = "madvise", SetLastError = true)]
    private static partial int Madvise(void* addr, nuint length, int advice);

    public static Tensor Of(Tensor t)
    {
        nuint bytes = (nuint)t.ByteCount;
        nuint rounded = (bytes + Huge - 1) / Huge * Huge;
        void* p = NativeMemory.AlignedAlloc(rounded, Huge);
        if (OperatingSystem.IsLinux()) _ = Madvise(p, rounded, MadvHugepage); // advisory: ignore failure
        Buffer.MemoryCopy((void*)t.Ptr, p, bytes, bytes);
        if (OperatingSystem.IsLinux())
        {
            // Drop the source pages from this process's resident set (they stay in the page cache; the map stays valid).
            nuint start = ((nuint)t.Ptr + 4095) & ~(nuint)4095, end = ((nuint)t.Ptr + bytes) & ~(nuint)4095;
            if (end > start) _ = Madvise((void*)start, end - start, MadvDontneed);
        }
        var c = new Tensor(t.DType, t.Shape, (nint)p, new NativeAllocation(p), t.Name);
        if (t.Scales is not null) BlockScales.Attach(c, t.Scales, t.ScaleBlock.Rows, t.ScaleBlock.Cols);
        return c;
    }
}
