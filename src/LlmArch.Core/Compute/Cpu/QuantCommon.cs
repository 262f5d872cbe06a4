using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LlmArch.Compute.Cpu;

/// <summary>IEEE half precision to and from F32 without F16C (which .NET does not expose): integer bit tricks.</summary>
public static unsafe class Fp16
{
    private static readonly float[] TableArray = BuildTable();
    /// <summary>All 65536 halves as F32 (256 KB, pinned): one load per block scale in the dot kernels; the few
    /// exponents real scales use stay in L1.</summary>
    public static readonly float* Table = (float*)Unsafe.AsPointer(ref TableArray[0]);

    private static float[] BuildTable()
    {
        var t = GC.AllocateArray<float>(65536, pinned: true);
        for (int h = 0; h < 65536; h++) t[h] = ToF32((ushort)h);
        return t;
    }

    /// <summary>Exact conversion of a half's bits to F32 (normals, subnormals, infinities, NaN).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToF32(ushort h)
    {
        // Exponent and mantissa move up by 13 bits; a power-of-two multiply rebiases the exponent (15 -> 127) and
        // turns half subnormals into normal floats exactly. Infinity/NaN keep an all-ones exponent.
        uint em = (uint)(h & 0x7FFF) << 13;
        float f = BitConverter.UInt32BitsToSingle(em) * 5.192296858534828e33f; // 2^112
        uint bits = em >= 0x7C00u << 13 ? em | 0x7F800000u : BitConverter.SingleToUInt32Bits(f);
        return BitConverter.UInt32BitsToSingle(bits | (uint)(h & 0x8000) << 16);
    }

    /// <summary>Round-to-nearest-even F32 to half bits (as ggml's GGML_FP32_TO_FP16).</summary>
    public static ushort FromF32(float f) => BitConverter.HalfToUInt16Bits((Half)f);

    /// <summary>F32 rounded through half precision (what a stored f16 scale reads back as).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Round(float f)
    {
        // In half's normal range, rounding to 10 mantissa bits (nearest, ties to even) is integer arithmetic on the
        // F32 bits; outside it (subnormal halves, overflow, NaN) take the exact conversion.
        uint u = BitConverter.SingleToUInt32Bits(f), a = u & 0x7FFFFFFF;
        if (a - 0x38800000u < 0x47800000u - 0x38800000u)
        {
            u += 0x0FFF + ((u >> 13) & 1);
            u &= 0xFFFFE000;
            if ((u & 0x7FFFFFFF) < 0x477FF000u) return BitConverter.UInt32BitsToSingle(u);
        }
        return ToF32(FromF32(f));
    }

    /// <summary>Eight halves to F32 in a 256-bit vector (AVX2), same results as <see cref="ToF32"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ToF32x8(Vector128<ushort> h)
    {
        var w = Avx2.ConvertToVector256Int32(h).AsUInt32();
        var em = (w & Vector256.Create(0x7FFFu)) << 13;
        var f = em.AsSingle() * Vector256.Create(5.192296858534828e33f);
        var inf = Vector256.GreaterThanOrEqual(em, Vector256.Create(0x7C00u << 13));
        var bits = Vector256.ConditionalSelect(inf, em | Vector256.Create(0x7F800000u), f.AsUInt32());
        return (bits | ((w & Vector256.Create(0x8000u)) << 16)).AsSingle();
    }

    /// <summary>Sixteen halves to F32 in a 512-bit vector, same results as <see cref="ToF32"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ToF32x16(Vector256<ushort> h)
    {
        var w = Avx512F.ConvertToVector512UInt32(h);
        var em = (w & Vector512.Create(0x7FFFu)) << 13;
        var f = em.AsSingle() * Vector512.Create(5.192296858534828e33f);
        var inf = Vector512.GreaterThanOrEqual(em, Vector512.Create(0x7C00u << 13));
        var bits = Vector512.ConditionalSelect(inf, em | Vector512.Create(0x7F800000u), f.AsUInt32());
        return (bits | ((w & Vector512.Create(0x8000u)) << 16)).AsSingle();
    }
}

/// <summary>
/// Activations quantized to 8 bits for the integer dot kernels, as llama.cpp does before a quantized matmul:
/// <c>Q</c> holds K int8 per row; for the 32-blocks (Q8_0, Q4_0 weights) <c>D</c> has one scale per 32 values
/// (rounded through f16, as llama.cpp's q8_0 stores it) and <c>Sums</c> the sum of each block's int8;
/// for the 256-blocks (k-quants, llama.cpp's q8_K) <c>D</c> has one F32 scale per 256 and <c>Sums</c> the sum of each
/// group of 16. Per-thread buffers, grown on demand and reused (no allocation per call).
/// </summary>
public sealed unsafe class QuantizedActivations
{
    private sbyte[] _q = [];
    private float[] _d = [];
    private short[] _s = [];
    public sbyte* Q { get; private set; }
    public float* D { get; private set; }
    public short* Sums { get; private set; }
    public int Rows { get; private set; }
    public int K { get; private set; }
    /// <summary>32 (Q8_0-style) or 256 (Q8_K-style).</summary>
    public int Block { get; private set; }

    [ThreadStatic] private static QuantizedActivations? _shared;
    /// <summary>This thread's reusable buffers.</summary>
    public static QuantizedActivations ForThread => _shared ??= new QuantizedActivations();

    /// <summary>Scales per row.</summary>
    public int ScalesPerRow => K / Block;
    /// <summary>Sums per row (one per 32-block, or per 16 values for 256-blocks).</summary>
    public int SumsPerRow => Block == 32 ? K / 32 : K / 16;

    /// <summary>Quantizes rows x <c>[N, K]</c> (K a multiple of <paramref name="block"/>).</summary>
    public void Quantize(float* x, int N, int K, int block, Isa isa)
    {
        Ensure(N, K, block);
        for (int n = 0; n < N; n++)
        {
            if (block == 32) Q8.QuantizeActivations(x + (long)n * K, K, RowQ(n), RowD(n), RowSums(n), isa);
            else KQuants.QuantizeActivations(x + (long)n * K, K, RowQ(n), RowD(n), RowSums(n), isa);
        }
    }

    public sbyte* RowQ(int n) => Q + (long)n * K;
    public float* RowD(int n) => D + (long)n * ScalesPerRow;
    public short* RowSums(int n) => Sums + (long)n * SumsPerRow;

    private void Ensure(int N, int K, int block)
    {
        this.K = K; Block = block; Rows = N;
        long nq = (long)N * K, nd = (long)N * (K / block), ns = (long)N * (block == 32 ? K / 32 : K / 16);
        if (_q.Length < nq) _q = GC.AllocateUninitializedArray<sbyte>(checked((int)Math.Max(nq * 2, 4096)), pinned: true);
        if (_d.Length < nd) _d = GC.AllocateUninitializedArray<float>(checked((int)Math.Max(nd * 2, 256)), pinned: true);
        if (_s.Length < ns) _s = GC.AllocateUninitializedArray<short>(checked((int)Math.Max(ns * 2, 512)), pinned: true);
        Q = (sbyte*)Unsafe.AsPointer(ref _q[0]); D = (float*)Unsafe.AsPointer(ref _d[0]); Sums = (short*)Unsafe.AsPointer(ref _s[0]);
    }
}

/// <summary>The int8 multiply-add building blocks shared by the quantized dot kernels.</summary>
internal static class Int8
{
    /// <summary>Unsigned (0..255, at most 63 in our uses) times signed bytes, summed in fours into 8 int32 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> DotU8S8(Vector256<byte> u, Vector256<sbyte> s, bool vnni)
    {
        if (vnni) return AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, u, s);
        return Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, s), Vector256<short>.One);
    }

    /// <summary>Signed times signed bytes (both in -127..127), summed in fours into 8 int32 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> DotS8S8(Vector256<sbyte> a, Vector256<sbyte> b, bool vnni) =>
        // |a| times b carrying a's sign: unsigned x signed, which is what the hardware multiplies.
        DotU8S8(Avx2.Abs(a), Avx2.Sign(b, a), vnni);

    /// <summary>Unsigned times signed bytes into 32 int16 pair sums (no saturation while u &lt;= 63 or |s| small).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<int> DotU8S8(Vector512<byte> u, Vector512<sbyte> s) =>
        Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(u, s), Vector512<short>.One);

    /// <summary>Signed times signed bytes (-127..127) into 16 int32 lanes (sign moved onto b with a mask: no vpsignb at 512 bits).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<int> DotS8S8(Vector512<sbyte> a, Vector512<sbyte> b)
    {
        var neg = Vector512.LessThan(a, Vector512<sbyte>.Zero);
        var sb = Vector512.ConditionalSelect(neg, Vector512<sbyte>.Zero - b, b);
        return DotU8S8(Avx512BW.Abs(a), sb);
    }

    /// <summary>[lo | hi] as one 512-bit vector (vinserti64x4; the JIT's Vector512.Create of two halves spills in loops).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> Join<T>(Vector256<T> lo, Vector256<T> hi) where T : struct =>
        Avx512F.InsertVector256(lo.AsInt32().ToVector512(), hi.AsInt32(), 1).As<int, T>();

    /// <summary>Horizontal sum of 8 int32 as one int.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Sum(Vector256<int> v) => Vector256.Sum(v);

    /// <summary>Low and high nibbles of 16 bytes as 32 bytes: [lo(0..15) | hi(0..15)], matching ggml's nibble order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<byte> Nibbles16(Vector128<byte> q)
    {
        var m = Vector128.Create((byte)0x0F);
        return Vector256.Create(q & m, (q.AsUInt16() >>> 4).AsByte() & m);
    }
}
