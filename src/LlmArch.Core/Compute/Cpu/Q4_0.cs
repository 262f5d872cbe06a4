using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LlmArch.Compute.Cpu;

/// <summary>
/// Q4_0 in llama.cpp's block layout: 32 values as 18 bytes, an f16 scale d then 16 bytes whose low nibbles are values
/// 0..15 and high nibbles values 16..31; value = d * (q - 8). Quantization is llama.cpp's reference rule: d = m / -8
/// where m is the value of largest magnitude, q = min(15, trunc(v / d + 8.5)). The dot kernels multiply the unsigned
/// nibbles by the int8 activations (no sign juggling) and subtract 8 x the activation block sum afterwards.
/// </summary>
public static unsafe class Q4_0
{
    public const int Block = 32;
    public const int BlockBytes = 18;

    public static Tensor Quantize(Tensor t) => Q8.QuantizeTensor(t, DType.Q4_0);

    public static void QuantizeRow(float* x, int n, byte* dst)
    {
        for (int b = 0; b < n / Block; b++)
        {
            float* v = x + b * Block;
            float amax = 0, max = 0;
            for (int i = 0; i < Block; i++)
                if (MathF.Abs(v[i]) > amax) { amax = MathF.Abs(v[i]); max = v[i]; }
            float d = max / -8f;
            float id = d != 0 ? 1f / d : 0f;
            byte* blk = dst + b * BlockBytes;
            *(ushort*)blk = Fp16.FromF32(d);
            for (int j = 0; j < Block / 2; j++)
            {
                int q0 = Math.Min(15, (int)(sbyte)(int)(v[j] * id + 8.5f));
                int q1 = Math.Min(15, (int)(sbyte)(int)(v[j + 16] * id + 8.5f));
                blk[2 + j] = (byte)(q0 | q1 << 4);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void DequantizeRow(byte* row, int col, int n, float* dst)
    {
        int i = 0;
        while (i < n)
        {
            int c = col + i, b = c / Block, within = c % Block;
            byte* blk = row + (long)b * BlockBytes;
            float d = Fp16.ToF32(*(ushort*)blk);
            if (within == 0 && n - i >= Block && Avx2.IsSupported)
            {
                var q = Int8.Nibbles16(Vector128.Load(blk + 2));
                var vd = Vector256.Create(d);
                var eight = Vector256.Create(8);
                var lo = q.GetLower(); var hi = q.GetUpper();
                (Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32(lo) - eight) * vd).Store(dst + i);
                (Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(lo, 8)) - eight) * vd).Store(dst + i + 8);
                (Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32(hi) - eight) * vd).Store(dst + i + 16);
                (Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(hi, 8)) - eight) * vd).Store(dst + i + 24);
                i += Block;
                continue;
            }
            int len = Math.Min(n - i, Block - within);
            for (int j = 0; j < len; j++)
            {
                int e = within + j;
                int q = e < 16 ? blk[2 + e] & 0xF : blk[2 + e - 16] >> 4;
                dst[i + j] = (q - 8) * d;
            }
            i += len;
        }
    }

    /// <summary>Scalar reference: sum_b f16(d_w) * d_x[b] * sum_i (q_i - 8) * x_i.</summary>
    public static float DotReference(byte* w, sbyte* xq, float* xd, short* xs, int K)
    {
        float sum = 0;
        for (int b = 0; b < K / Block; b++)
        {
            byte* blk = w + b * BlockBytes;
            sbyte* x = xq + b * Block;
            int acc = 0;
            for (int j = 0; j < 16; j++) acc += ((blk[2 + j] & 0xF) - 8) * x[j] + ((blk[2 + j] >> 4) - 8) * x[j + 16];
            sum += Fp16.ToF32(*(ushort*)blk) * xd[b] * acc;
        }
        return sum;
    }

    internal static float Dot256Vnni(byte* w, sbyte* xq, float* xd, short* xs, int K) => Dot256(w, xq, xd, xs, K, true);
    internal static float Dot256Plain(byte* w, sbyte* xq, float* xd, short* xs, int K) => Dot256(w, xq, xd, xs, K, false);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Dot(byte* w, sbyte* xq, float* xd, short* xs, int K, Isa isa)
    {
        if (isa == Isa.Avx512) return Dot512(w, xq, xd, xs, K);
        if (isa >= Isa.Avx2) return Dot256(w, xq, xd, xs, K, isa == Isa.Avx2Vnni);
        return DotReference(w, xq, xd, xs, K);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Dot256(byte* w, sbyte* xq, float* xd, short* xs, int K, bool vnni)
    {
        int nb = K / Block;
        Vector256<float> a0 = default, a1 = default;
        float corr = 0;
        int b = 0;
        for (; b + 2 <= nb; b += 2)
        {
            byte* b0 = w + b * BlockBytes, b1 = b0 + BlockBytes;
            float s0 = Fp16.Table[*(ushort*)b0] * xd[b], s1 = Fp16.Table[*(ushort*)b1] * xd[b + 1];
            var p0 = Int8.DotU8S8(Int8.Nibbles16(Vector128.Load(b0 + 2)), Vector256.Load(xq + b * Block), vnni);
            var p1 = Int8.DotU8S8(Int8.Nibbles16(Vector128.Load(b1 + 2)), Vector256.Load(xq + b * Block + Block), vnni);
            a0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(p0), Vector256.Create(s0), a0);
            a1 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(p1), Vector256.Create(s1), a1);
            corr += s0 * xs[b] + s1 * xs[b + 1];
        }
        for (; b < nb; b++)
        {
            byte* b0 = w + b * BlockBytes;
            float s0 = Fp16.Table[*(ushort*)b0] * xd[b];
            var p0 = Int8.DotU8S8(Int8.Nibbles16(Vector128.Load(b0 + 2)), Vector256.Load(xq + b * Block), vnni);
            a0 = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(p0), Vector256.Create(s0), a0);
            corr += s0 * xs[b];
        }
        return Vector256.Sum(a0 + a1) - 8f * corr;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float Dot512(byte* w, sbyte* xq, float* xd, short* xs, int K)
    {
        int nb = K / Block;
        Vector512<float> acc = default;
        float corr = 0;
        int b = 0;
        for (; b + 2 <= nb; b += 2)
        {
            byte* b0 = w + b * BlockBytes, b1 = b0 + BlockBytes;
            float s0 = Fp16.Table[*(ushort*)b0] * xd[b], s1 = Fp16.Table[*(ushort*)b1] * xd[b + 1];
            var q = Int8.Join(Int8.Nibbles16(Vector128.Load(b0 + 2)), Int8.Nibbles16(Vector128.Load(b1 + 2)));
            var p = Int8.DotU8S8(q, Vector512.Load(xq + b * Block));
            acc = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(p), Int8.Join(Vector256.Create(s0), Vector256.Create(s1)), acc);
            corr += s0 * xs[b] + s1 * xs[b + 1];
        }
        float sum = Vector512.Sum(acc);
        for (; b < nb; b++)
        {
            byte* b0 = w + b * BlockBytes;
            float s0 = Fp16.Table[*(ushort*)b0] * xd[b];
            var p0 = Int8.DotU8S8(Int8.Nibbles16(Vector128.Load(b0 + 2)), Vector256.Load(xq + b * Block), false);
            sum += s0 * Vector256.Sum(p0);
            corr += s0 * xs[b];
        }
        return sum - 8f * corr;
    }
}
