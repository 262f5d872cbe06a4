using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LlmArch.Compute.Cpu;

/// <summary>
/// Q8_0 in llama.cpp's block layout (so GGUF files load in place and export is a copy): each block of 32 values is
/// 34 bytes, an f16 scale d then 32 int8 q, value = d * q, with d = max|v| / 127 and q = round(v / d) (llama.cpp's
/// quantize_row_q8_0_ref). The matmul quantizes the activations the same way (32-blocks, f16-rounded scales) and
/// computes each block as an integer dot scaled by d_w * d_x (<c>vpmaddubsw</c>, or AVX-VNNI <c>vpdpbusd</c>).
/// </summary>
public static unsafe class Q8
{
    public const int Block = 32;
    public const int BlockBytes = 34;

    /// <summary>Quantizes a tensor of F32/BF16/F16 rows (last dim a multiple of 32) into a new Q8_0 tensor.</summary>
    public static Tensor Quantize(Tensor t) => QuantizeTensor(t, DType.Q8_0);

    /// <summary>Row-parallel quantization of any plain tensor into a llama.cpp block type.</summary>
    internal static Tensor QuantizeTensor(Tensor t, DType type)
    {
        int K = t.Shape.Last, be = DTypes.BlockElements(type);
        if (K % be != 0) throw new ArgumentException($"tensor '{t.Name}': {K} columns are not a multiple of the {type} block of {be}");
        long rows = t.Shape.Count / Math.Max(1, K);
        var q = Tensor.Zeros(type, t.Shape, t.Name);
        long rowBytes = DTypes.StorageBytes(type, K);
        byte* qp = (byte*)q.Ptr;
        Parallel.For(0, (rows + 63) / 64, chunk =>
        {
            var row = GC.AllocateUninitializedArray<float>(K);
            fixed (float* r = row)
                for (long o = chunk * 64; o < Math.Min(rows, chunk * 64 + 64); o++)
                {
                    Convert.ToF32(t, o * K, row);
                    QuantizeRow(type, r, K, qp + o * rowBytes);
                }
        });
        return q;
    }

    /// <summary>Quantizes n values (a multiple of the block) of any llama.cpp block type we write.</summary>
    public static void QuantizeRow(DType type, float* x, int n, byte* dst)
    {
        switch (type)
        {
            case DType.Q8_0: QuantizeRow(x, n, dst); break;
            case DType.Q4_0: Q4_0.QuantizeRow(x, n, dst); break;
            case DType.Q4_K: KQuants.QuantizeRowQ4K(x, n, dst); break;
            case DType.Q5_K: KQuants.QuantizeRowQ5K(x, n, dst); break;
            case DType.Q6_K: KQuants.QuantizeRowQ6K(x, n, dst); break;
            default: throw new ArgumentException($"no quantizer for {type}");
        }
    }

    /// <summary>Quantizes n values (n a multiple of 32) into n/32 blocks of 34 bytes.</summary>
    public static void QuantizeRow(float* x, int n, byte* dst)
    {
        for (int b = 0; b < n / Block; b++)
        {
            float* v = x + b * Block;
            float amax = 0;
            for (int i = 0; i < Block; i++) amax = MathF.Max(amax, MathF.Abs(v[i]));
            float d = amax / 127f;
            float id = d != 0 ? 1f / d : 0f;
            byte* blk = dst + b * BlockBytes;
            *(ushort*)blk = Fp16.FromF32(d);
            sbyte* q = (sbyte*)(blk + 2);
            for (int i = 0; i < Block; i++) q[i] = (sbyte)MathF.Round(v[i] * id, MidpointRounding.AwayFromZero);
        }
    }

    /// <summary>Dequantizes blocks covering columns [col, col + n) of one row (col, n need not be block aligned).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void DequantizeRow(byte* row, int col, int n, float* dst)
    {
        int i = 0;
        while (i < n)
        {
            int c = col + i, b = c / Block, within = c % Block;
            byte* blk = row + (long)b * BlockBytes;
            float d = Fp16.ToF32(*(ushort*)blk);
            sbyte* q = (sbyte*)(blk + 2);
            if (within == 0 && n - i >= Block && Avx2.IsSupported)
            {
                var vd = Vector256.Create(d);
                for (int j = 0; j < Block; j += 8)
                    (Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32(q + j)) * vd).Store(dst + i + j);
                i += Block;
                continue;
            }
            int len = Math.Min(n - i, Block - within);
            for (int j = 0; j < len; j++) dst[i + j] = q[within + j] * d;
            i += len;
        }
    }

    /// <summary>
    /// Activations to 32-blocks as llama.cpp's quantize_row_q8_0 does for a matmul: d = max|x| / 127 stored through
    /// f16, q = round-to-even(x * 127 / max|x|); also each block's sum of q (for Q4_0's offset of 8).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void QuantizeActivations(float* x, int n, sbyte* q, float* d, short* sums, Isa isa)
    {
        for (int b = 0; b < n / Block; b++)
        {
            float* v = x + b * Block;
            sbyte* qb = q + b * Block;
            if (isa >= Isa.Avx2)
            {
                var v0 = Vector256.Load(v); var v1 = Vector256.Load(v + 8); var v2 = Vector256.Load(v + 16); var v3 = Vector256.Load(v + 24);
                var m = Vector256.Max(Vector256.Max(Vector256.Abs(v0), Vector256.Abs(v1)), Vector256.Max(Vector256.Abs(v2), Vector256.Abs(v3)));
                var m4 = Vector128.Max(m.GetLower(), m.GetUpper());
                float amax = MathF.Max(MathF.Max(m4[0], m4[1]), MathF.Max(m4[2], m4[3]));
                d[b] = Fp16.Round(amax / 127f);
                var id = Vector256.Create(amax != 0 ? 127f / amax : 0f);
                // Round to nearest even, convert to int32, then pack to int8 in order (packs interleave 128-bit lanes).
                var i0 = Vector256.ConvertToInt32(Vector256.Round(v0 * id)); var i1 = Vector256.ConvertToInt32(Vector256.Round(v1 * id));
                var i2 = Vector256.ConvertToInt32(Vector256.Round(v2 * id)); var i3 = Vector256.ConvertToInt32(Vector256.Round(v3 * id));
                var s01 = Avx2.PackSignedSaturate(i0, i1); var s23 = Avx2.PackSignedSaturate(i2, i3);
                var b8 = Avx2.PackSignedSaturate(s01, s23);
                b8 = Avx2.PermuteVar8x32(b8.AsInt32(), Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7)).AsSByte();
                b8.Store(qb);
                var s16 = Avx2.MultiplyAddAdjacent(Vector256<byte>.One, b8);
                sums[b] = (short)Vector256.Sum(Avx2.MultiplyAddAdjacent(s16, Vector256<short>.One));
                continue;
            }
            float a = 0;
            for (int i = 0; i < Block; i++) a = MathF.Max(a, MathF.Abs(v[i]));
            d[b] = Fp16.Round(a / 127f);
            float inv = a != 0 ? 127f / a : 0f;
            int s = 0;
            for (int i = 0; i < Block; i++)
            {
                int qi = (int)MathF.Round(v[i] * inv, MidpointRounding.ToEven);
                qb[i] = (sbyte)qi; s += qi;
            }
            sums[b] = (short)s;
        }
    }

    /// <summary>Scalar reference of one row's dot: sum_b f16(d_w) * d_x[b] * sum_i w_q[i] * x_q[i].</summary>
    public static float DotReference(byte* w, sbyte* xq, float* xd, int K)
    {
        float sum = 0;
        for (int b = 0; b < K / Block; b++)
        {
            byte* blk = w + b * BlockBytes;
            sbyte* q = (sbyte*)(blk + 2);
            int acc = 0;
            for (int i = 0; i < Block; i++) acc += q[i] * xq[b * Block + i];
            sum += Fp16.ToF32(*(ushort*)blk) * xd[b] * acc;
        }
        return sum;
    }

    // Uniform signatures (the activation sums are unused by Q8_0) for MatMul's per-type function pointers.
    internal static float Dot512U(byte* w, sbyte* xq, float* xd, short* xs, int K) => Dot512(w, xq, xd, K);
    internal static float Dot256VnniU(byte* w, sbyte* xq, float* xd, short* xs, int K) => Dot256(w, xq, xd, K, true);
    internal static float Dot256U(byte* w, sbyte* xq, float* xd, short* xs, int K) => Dot256(w, xq, xd, K, false);
    internal static float DotReferenceU(byte* w, sbyte* xq, float* xd, short* xs, int K) => DotReference(w, xq, xd, K);

    /// <summary>One row of Q8_0 weights times one quantized activation row, on the given path.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Dot(byte* w, sbyte* xq, float* xd, int K, Isa isa)
    {
        if (isa == Isa.Avx512) return Dot512(w, xq, xd, K);
        if (isa >= Isa.Avx2) return Dot256(w, xq, xd, K, isa == Isa.Avx2Vnni);
        return DotReference(w, xq, xd, K);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Dot256(byte* w, sbyte* xq, float* xd, int K, bool vnni)
    {
        int nb = K / Block;
        Vector256<float> a0 = default, a1 = default;
        int b = 0;
        for (; b + 2 <= nb; b += 2)
        {
            byte* b0 = w + b * BlockBytes, b1 = b0 + BlockBytes;
            var d0 = Int8.DotS8S8(Vector256.Load((sbyte*)(b0 + 2)), Vector256.Load(xq + b * Block), vnni);
            var d1 = Int8.DotS8S8(Vector256.Load((sbyte*)(b1 + 2)), Vector256.Load(xq + b * Block + Block), vnni);
            a0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(d0), Vector256.Create(Fp16.Table[*(ushort*)b0] * xd[b]), a0);
            a1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(d1), Vector256.Create(Fp16.Table[*(ushort*)b1] * xd[b + 1]), a1);
        }
        for (; b < nb; b++)
        {
            byte* b0 = w + b * BlockBytes;
            var d0 = Int8.DotS8S8(Vector256.Load((sbyte*)(b0 + 2)), Vector256.Load(xq + b * Block), vnni);
            a0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(d0), Vector256.Create(Fp16.Table[*(ushort*)b0] * xd[b]), a0);
        }
        return Vector256.Sum(a0 + a1);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Dot512(byte* w, sbyte* xq, float* xd, int K)
    {
        int nb = K / Block;
        Vector512<float> acc = default;
        int b = 0;
        for (; b + 2 <= nb; b += 2)
        {
            byte* b0 = w + b * BlockBytes, b1 = b0 + BlockBytes;
            var wv = Int8.Join(Vector256.Load((sbyte*)(b0 + 2)), Vector256.Load((sbyte*)(b1 + 2)));
            var p = Int8.DotS8S8(wv, Vector512.Load(xq + b * Block));
            var s = Int8.Join(Vector256.Create(Fp16.Table[*(ushort*)b0] * xd[b]), Vector256.Create(Fp16.Table[*(ushort*)b1] * xd[b + 1]));
            acc = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(p), s, acc);
        }
        float sum = Vector512.Sum(acc);
        for (; b < nb; b++)
        {
            byte* b0 = w + b * BlockBytes;
            var d0 = Int8.DotS8S8(Vector256.Load((sbyte*)(b0 + 2)), Vector256.Load(xq + b * Block), false);
            sum += Fp16.Table[*(ushort*)b0] * xd[b] * Vector256.Sum(d0);
        }
        return sum;
    }
}
