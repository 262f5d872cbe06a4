using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LlmArch.Compute.Cpu;

/// <summary>Element conversions to and from F32, vectorized where it matters (BF16, F16), table-driven for FP8/FP4.</summary>
public static unsafe class Convert
{
    /// <summary>FP8 e4m3fn to float: 1 sign, 4 exponent (bias 7), 3 mantissa; 0x7F/0xFF are NaN, no infinities.</summary>
    public static readonly float[] Fp8E4M3Table = BuildFp8();
    /// <summary>e2m1 (FP4) nibble to float: the 16 values of the OCP MX spec.</summary>
    public static readonly float[] Fp4E2M1Table = [0f, 0.5f, 1f, 1.5f, 2f, 3f, 4f, 6f, -0f, -0.5f, -1f, -1.5f, -2f, -3f, -4f, -6f];

    private static float[] BuildFp8()
    {
        var t = new float[256];
        for (int b = 0; b < 256; b++)
        {
            int sign = b >> 7, exp = (b >> 3) & 0xF, man = b & 7;
            float v;
            if (exp == 0xF && man == 7) v = float.NaN;
            else if (exp == 0) v = man / 8f * MathF.Pow(2, -6);
            else v = (1 + man / 8f) * MathF.Pow(2, exp - 7);
            t[b] = sign == 1 ? -v : v;
        }
        return t;
    }

    /// <summary>e8m0 scale byte: 2^(b-127); 0xFF is NaN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float E8M0(byte b) => b == 0xFF ? float.NaN : BitConverter.Int32BitsToSingle(b == 0 ? 0x00400000 : b << 23);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float BF16ToF32(ushort v) => BitConverter.Int32BitsToSingle(v << 16);

    /// <summary>Round-to-nearest-even F32 to BF16 (NaN kept quiet).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort F32ToBF16(float f)
    {
        uint u = BitConverter.SingleToUInt32Bits(f);
        if (float.IsNaN(f)) return (ushort)((u >> 16) | 0x40);
        u += 0x7FFF + ((u >> 16) & 1);
        return (ushort)(u >> 16);
    }

    /// <summary>Widens <paramref name="n"/> BF16 values to F32.</summary>
    public static void BF16ToF32(ushort* src, float* dst, int n)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; i <= n - 16; i += 16)
            {
                var w = Vector512.WidenLower(Vector256.Load(src + i).ToVector512Unsafe());
                (w << 16).AsSingle().Store(dst + i);
            }
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= n - 8; i += 8)
            {
                var w = Vector256.WidenLower(Vector128.Load(src + i).ToVector256Unsafe());
                (w << 16).AsSingle().Store(dst + i);
            }
        }
        for (; i < n; i++) dst[i] = BF16ToF32(src[i]);
    }

    /// <summary>Widens <paramref name="n"/> F16 values to F32 (integer bit tricks; .NET exposes no F16C).</summary>
    public static void F16ToF32(Half* src, float* dst, int n)
    {
        ushort* s = (ushort*)src;
        int i = 0;
        if (Vector512.IsHardwareAccelerated && System.Runtime.Intrinsics.X86.Avx512F.IsSupported)
            for (; i <= n - 16; i += 16) Fp16.ToF32x16(Vector256.Load(s + i)).Store(dst + i);
        else if (System.Runtime.Intrinsics.X86.Avx2.IsSupported)
            for (; i <= n - 8; i += 8) Fp16.ToF32x8(Vector128.Load(s + i)).Store(dst + i);
        for (; i < n; i++) dst[i] = Fp16.ToF32(s[i]);
    }

    /// <summary>
    /// Writes elements [start, start + dst.Length) of any plain or block-quantized tensor as F32.
    /// Block-quantized tensors are dequantized with their scales (row = element / last dim).
    /// </summary>
    public static void ToF32(Tensor t, long start, Span<float> dst)
    {
        if (t.ColumnMajor) throw new InvalidOperationException($"tensor '{t.Name}' is stored column-major; only the matmul reads it");
        ToF32Raw(t, start, dst);
    }

    /// <summary>Like <see cref="ToF32"/> but over the stored element order, whatever the logical layout.</summary>
    public static void ToF32Raw(Tensor t, long start, Span<float> dst)
    {
        int n = dst.Length;
        if (n == 0) return;
        fixed (float* d = dst)
        {
            byte* p = (byte*)t.Ptr;
            switch (t.DType)
            {
                case DType.F32: new ReadOnlySpan<float>((float*)p + start, n).CopyTo(dst); return;
                case DType.BF16: BF16ToF32((ushort*)p + start, d, n); return;
                case DType.F16: F16ToF32((Half*)p + start, d, n); return;
                case DType.F64: for (int i = 0; i < n; i++) d[i] = (float)((double*)p)[start + i]; return;
                case DType.I64: for (int i = 0; i < n; i++) d[i] = ((long*)p)[start + i]; return;
                case DType.I32: for (int i = 0; i < n; i++) d[i] = ((int*)p)[start + i]; return;
                case DType.I16: for (int i = 0; i < n; i++) d[i] = ((short*)p)[start + i]; return;
                case DType.I8: for (int i = 0; i < n; i++) d[i] = ((sbyte*)p)[start + i]; return;
                case DType.U8: case DType.Bool: for (int i = 0; i < n; i++) d[i] = p[start + i]; return;
            }
            // Block-quantized: walk row by row so each row segment picks up its scales.
            int cols = t.Shape.Last;
            long e = start; int o = 0;
            while (o < n)
            {
                long row = e / cols; int col = (int)(e % cols);
                int len = Math.Min(n - o, cols - col);
                DequantizeRow(t, row, col, new Span<float>(d + o, len));
                o += len; e += len;
            }
        }
    }

    /// <summary>Dequantizes columns [col, col + dst.Length) of one row of a block-quantized tensor.</summary>
    public static void DequantizeRow(Tensor t, long row, int col, Span<float> dst)
    {
        int cols = t.Shape.Last;
        if (DTypes.IsGgmlBlock(t.DType))
        {
            byte* rp = (byte*)t.Ptr + row * DTypes.StorageBytes(t.DType, cols);
            fixed (float* d = dst)
                switch (t.DType)
                {
                    case DType.Q8_0: Q8.DequantizeRow(rp, col, dst.Length, d); break;
                    case DType.Q4_0: Q4_0.DequantizeRow(rp, col, dst.Length, d); break;
                    default: KQuants.DequantizeRow(t.DType, rp, col, dst.Length, d); break;
                }
            return;
        }
        var (br, bc) = t.ScaleBlock;
        int scaleCols = t.Scales is null ? 0 : (cols + bc - 1) / bc;
        byte* p = (byte*)t.Ptr;
        int n = dst.Length;
        switch (t.DType)
        {
            case DType.F8E4M3:
            {
                var tab = Fp8E4M3Table;
                byte* r = p + row * cols + col;
                float* sc = t.Scales is null ? null : (float*)t.Scales.Ptr + (row / br) * scaleCols;
                for (int i = 0; i < n; i++)
                {
                    float v = tab[r[i]];
                    dst[i] = sc is null ? v : v * sc[(col + i) / bc];
                }
                return;
            }
            case DType.MXFP4:
            {
                var tab = Fp4E2M1Table;
                byte* r = p + row * (cols / 2);
                byte* sc = (byte*)t.Scales!.Ptr + row * scaleCols;
                for (int i = 0; i < n; i++)
                {
                    int c = col + i;
                    int nib = (r[c >> 1] >> ((c & 1) * 4)) & 0xF;
                    dst[i] = tab[nib] * E8M0(sc[c / bc]);
                }
                return;
            }
            default:
                ToF32(t, row * cols + col, dst);
                return;
        }
    }
}
