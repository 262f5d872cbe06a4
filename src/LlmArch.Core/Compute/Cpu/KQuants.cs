using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LlmArch.Compute.Cpu;

/// <summary>
/// llama.cpp's k-quants in its exact super-block layouts (256 values each), so GGUF files load in place:
/// <list type="bullet">
/// <item>Q4_K, 144 bytes: f16 d, f16 dmin, 12 bytes packing eight 6-bit scales and eight 6-bit mins, 128 bytes of
/// nibbles; the 64 values of chunk c are the low (sub-block 2c) then high (2c+1) nibbles of bytes 32c..32c+31;
/// value = d * sc * q - dmin * m.</item>
/// <item>Q5_K, 176 bytes: d, dmin, scales[12], qh[32], qs[128]; as Q4_K with bit 2c (low nibbles) or 2c+1 (high)
/// of qh[l] as the fifth bit.</item>
/// <item>Q6_K, 210 bytes: ql[128], qh[64], int8 scales[16] (one per 16 values), f16 d; value = d * sc * (q - 32).</item>
/// </list>
/// The dot kernels run against activations quantized as llama.cpp's q8_K (one F32 scale per 256, int8 values, the
/// sum of every 16): the unsigned weight codes multiply the int8 activations directly (<c>vpmaddubsw</c>), the
/// per-sub-block scales are applied in int32 (<c>vpmaddwd</c>), and mins / the offset of 32 come from the sums.
/// Quantization follows the same weighted least-squares idea as llama.cpp's reference quantizers (our own code).
/// </summary>
public static unsafe class KQuants
{
    public const int QK = 256;
    public const int Q4KBytes = 144, Q5KBytes = 176, Q6KBytes = 210;

    // ---------------- scales ----------------

    /// <summary>The 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ScaleMin(byte* s, int j, out int sc, out int m)
    {
        if (j < 4) { sc = s[j] & 63; m = s[j + 4] & 63; }
        else { sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4); m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4); }
    }

    /// <summary>All eight scales and mins (for the dot kernels).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void UnpackScales(byte* s, short* sc, short* m)
    {
        for (int j = 0; j < 8; j++) { ScaleMin(s, j, out int a, out int b); sc[j] = (short)a; m[j] = (short)b; }
    }

    private static void PackScales(byte* s, ReadOnlySpan<int> ls, ReadOnlySpan<int> lm)
    {
        for (int j = 0; j < 12; j++) s[j] = 0;
        for (int j = 0; j < 8; j++)
        {
            if (j < 4) { s[j] = (byte)ls[j]; s[j + 4] = (byte)lm[j]; }
            else
            {
                s[j + 4] = (byte)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
                s[j - 4] |= (byte)((ls[j] >> 4) << 6);
                s[j] |= (byte)((lm[j] >> 4) << 6);
            }
        }
    }

    // ---------------- quantization ----------------

    /// <summary>
    /// Fits x ~ scale * L + min over n values (L in 0..nmax, min &lt;= 0) minimizing the weighted squared error: a
    /// min/max start, then a sweep of candidate inverse scales, each refined by the closed-form least-squares scale
    /// and offset for its codes. Returns the scale; <paramref name="negMin"/> is -min (&gt;= 0).
    /// </summary>
    private static float FitAffine(float* x, float* w, int n, int nmax, float rmin, float rdelta, int nstep, byte* L, out float negMin)
    {
        float lo = x[0], hi = x[0], sw = 0, swx = 0;
        for (int i = 0; i < n; i++)
        {
            lo = MathF.Min(lo, x[i]); hi = MathF.Max(hi, x[i]);
            sw += w[i]; swx += w[i] * x[i];
        }
        if (lo > 0) lo = 0;
        if (hi == lo) { for (int i = 0; i < n; i++) L[i] = 0; negMin = -lo; return 0; }
        float inv = nmax / (hi - lo), scale = 1 / inv, min = lo;
        float bestErr = 0;
        for (int i = 0; i < n; i++)
        {
            int l = Math.Clamp(Nearest(inv * (x[i] - lo)), 0, nmax);
            L[i] = (byte)l;
            float e = scale * l + lo - x[i];
            bestErr += w[i] * e * e;
        }
        byte* trial = stackalloc byte[n];
        for (int step = 0; step <= nstep; step++)
        {
            float iscale = (rmin + rdelta * step + nmax) / (hi - lo);
            float sl = 0, sl2 = 0, sxl = 0;
            for (int i = 0; i < n; i++)
            {
                int l = Math.Clamp(Nearest(iscale * (x[i] - lo)), 0, nmax);
                trial[i] = (byte)l;
                sl += w[i] * l; sl2 += w[i] * l * l; sxl += w[i] * l * x[i];
            }
            float det = sw * sl2 - sl * sl;
            if (det <= 0) continue;
            float s = (sw * sxl - swx * sl) / det, m = (sl2 * swx - sl * sxl) / det;
            if (m > 0) { m = 0; s = sxl / sl2; }
            float err = 0;
            for (int i = 0; i < n; i++) { float e = s * trial[i] + m - x[i]; err += w[i] * e * e; }
            if (err < bestErr)
            {
                for (int i = 0; i < n; i++) L[i] = trial[i];
                bestErr = err; scale = s; min = m;
            }
        }
        negMin = -min;
        return scale;
    }

    /// <summary>Round half to even, as ggml's nearest_int.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Nearest(float f) => (int)MathF.Round(f, MidpointRounding.ToEven);

    /// <summary>Shared by Q4_K (nmax 15) and Q5_K (nmax 31): per-sub-block scale/min fits, then 6-bit scales.</summary>
    private static void QuantizeAffineBlock(float* x, int nmax, float rmin, int nstep, byte* dHeader, byte* scales, byte* L)
    {
        float* sc = stackalloc float[8]; float* mn = stackalloc float[8]; float* w = stackalloc float[32];
        float maxScale = 0, maxMin = 0;
        for (int j = 0; j < 8; j++)
        {
            float* v = x + 32 * j;
            float ss = 0;
            for (int l = 0; l < 32; l++) ss += v[l] * v[l];
            float av = MathF.Sqrt(ss / 32);
            for (int l = 0; l < 32; l++) w[l] = av + MathF.Abs(v[l]);
            sc[j] = FitAffine(v, w, 32, nmax, rmin, 0.1f, nstep, L + 32 * j, out mn[j]);
            maxScale = MathF.Max(maxScale, sc[j]); maxMin = MathF.Max(maxMin, mn[j]);
        }
        float invScale = maxScale > 0 ? 63f / maxScale : 0f, invMin = maxMin > 0 ? 63f / maxMin : 0f;
        Span<int> ls = stackalloc int[8], lm = stackalloc int[8];
        for (int j = 0; j < 8; j++) { ls[j] = Math.Min(63, Nearest(invScale * sc[j])); lm[j] = Math.Min(63, Nearest(invMin * mn[j])); }
        PackScales(scales, ls, lm);
        ushort dBits = Fp16.FromF32(maxScale / 63f), mBits = Fp16.FromF32(maxMin / 63f);
        ((ushort*)dHeader)[0] = dBits; ((ushort*)dHeader)[1] = mBits;
        float d = Fp16.ToF32(dBits), dmin = Fp16.ToF32(mBits);
        // Codes again against the scales as stored (6-bit, f16 super-scales).
        for (int j = 0; j < 8; j++)
        {
            ScaleMin(scales, j, out int s6, out int m6);
            float dj = d * s6;
            if (dj == 0) continue;
            float mj = dmin * m6;
            for (int l = 0; l < 32; l++) L[32 * j + l] = (byte)Math.Clamp(Nearest((x[32 * j + l] + mj) / dj), 0, nmax);
        }
    }

    public static void QuantizeRowQ4K(float* x, int n, byte* dst)
    {
        byte* L = stackalloc byte[QK];
        for (int b = 0; b < n / QK; b++, x += QK, dst += Q4KBytes)
        {
            QuantizeAffineBlock(x, 15, -1f, 20, dst, dst + 4, L);
            byte* q = dst + 16;
            for (int c = 0; c < 4; c++)
                for (int l = 0; l < 32; l++) q[32 * c + l] = (byte)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
        }
    }

    public static void QuantizeRowQ5K(float* x, int n, byte* dst)
    {
        byte* L = stackalloc byte[QK];
        for (int b = 0; b < n / QK; b++, x += QK, dst += Q5KBytes)
        {
            QuantizeAffineBlock(x, 31, -0.5f, 15, dst, dst + 4, L);
            byte* qh = dst + 16, ql = dst + 48;
            for (int l = 0; l < 32; l++) qh[l] = 0;
            for (int c = 0; c < 4; c++)
                for (int l = 0; l < 32; l++)
                {
                    int a = L[64 * c + l], bb = L[64 * c + 32 + l];
                    if (a > 15) { a -= 16; qh[l] |= (byte)(1 << (2 * c)); }
                    if (bb > 15) { bb -= 16; qh[l] |= (byte)(2 << (2 * c)); }
                    ql[32 * c + l] = (byte)(a | (bb << 4));
                }
        }
    }

    /// <summary>Symmetric fit of 16 values to L in -nmax..nmax-1 (weights x^2), sweeping scales around the max.</summary>
    private static float FitSymmetric(float* x, int n, int nmax, sbyte* L)
    {
        float amax = 0, max = 0;
        for (int i = 0; i < n; i++) if (MathF.Abs(x[i]) > amax) { amax = MathF.Abs(x[i]); max = x[i]; }
        if (amax < 1e-15f) { for (int i = 0; i < n; i++) L[i] = 0; return 0; }
        float best = 0, scale = 0;
        for (int step = 0; step <= 18; step++)
        {
            // step 0 is the plain max scale; then nmax -0.9 .. +0.9 around it
            int off = step == 0 ? 0 : (step <= 9 ? step - 10 : step - 9);
            float iscale = -(nmax + 0.1f * off) / max;
            float sxl = 0, sl2 = 0;
            for (int i = 0; i < n; i++)
            {
                int l = Math.Clamp(Nearest(iscale * x[i]), -nmax, nmax - 1);
                float w = x[i] * x[i];
                sxl += w * x[i] * l; sl2 += w * l * l;
            }
            if (sl2 <= 0) continue;
            if (step == 0 || sxl * sxl > best * sl2)
            {
                for (int i = 0; i < n; i++) L[i] = (sbyte)Math.Clamp(Nearest(iscale * x[i]), -nmax, nmax - 1);
                scale = sxl / sl2; best = scale * sxl;
            }
        }
        return scale;
    }

    public static void QuantizeRowQ6K(float* x, int n, byte* dst)
    {
        sbyte* L = stackalloc sbyte[QK];
        byte* Lu = stackalloc byte[QK];
        float* scales = stackalloc float[16];
        for (int b = 0; b < n / QK; b++, x += QK, dst += Q6KBytes)
        {
            float maxScale = 0, maxAbs = 0;
            for (int g = 0; g < 16; g++)
            {
                scales[g] = FitSymmetric(x + 16 * g, 16, 32, L + 16 * g);
                if (MathF.Abs(scales[g]) > maxAbs) { maxAbs = MathF.Abs(scales[g]); maxScale = scales[g]; }
            }
            byte* ql = dst, qh = dst + 128; sbyte* sc = (sbyte*)(dst + 192);
            if (maxAbs < 1e-15f)
            {
                new Span<byte>(dst, Q6KBytes).Clear();
                continue;
            }
            float iscale = -128f / maxScale;
            ushort dBits = Fp16.FromF32(1 / iscale);
            *(ushort*)(dst + 208) = dBits;
            float d = Fp16.ToF32(dBits);
            for (int g = 0; g < 16; g++) sc[g] = (sbyte)Math.Min(127, Nearest(iscale * scales[g]));
            for (int g = 0; g < 16; g++)
            {
                float dg = d * sc[g];
                for (int i = 0; i < 16; i++)
                    Lu[16 * g + i] = dg == 0 ? (byte)(L[16 * g + i] + 32) : (byte)(Math.Clamp(Nearest(x[16 * g + i] / dg), -32, 31) + 32);
            }
            for (int h = 0; h < 2; h++)
            {
                byte* Lh = Lu + 128 * h;
                for (int l = 0; l < 32; l++)
                {
                    ql[64 * h + l] = (byte)((Lh[l] & 0xF) | ((Lh[l + 64] & 0xF) << 4));
                    ql[64 * h + l + 32] = (byte)((Lh[l + 32] & 0xF) | ((Lh[l + 96] & 0xF) << 4));
                    qh[32 * h + l] = (byte)((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) | ((Lh[l + 64] >> 4) << 4) | ((Lh[l + 96] >> 4) << 6));
                }
            }
        }
    }

    // ---------------- dequantization ----------------

    /// <summary>Dequantizes super-blocks of one row covering columns [col, col + n) of a Q4_K/Q5_K/Q6_K row.</summary>
    public static void DequantizeRow(DType type, byte* row, int col, int n, float* dst)
    {
        int bytes = type switch { DType.Q4_K => Q4KBytes, DType.Q5_K => Q5KBytes, _ => Q6KBytes };
        float* tmp = stackalloc float[QK];
        int i = 0;
        while (i < n)
        {
            int c = col + i, b = c / QK, within = c % QK;
            int len = Math.Min(n - i, QK - within);
            float* to = within == 0 && len == QK ? dst + i : tmp;
            byte* blk = row + (long)b * bytes;
            switch (type)
            {
                case DType.Q4_K: DequantQ4K(blk, to); break;
                case DType.Q5_K: DequantQ5K(blk, to); break;
                default: DequantQ6K(blk, to); break;
            }
            if (to == tmp) new ReadOnlySpan<float>(tmp + within, len).CopyTo(new Span<float>(dst + i, len));
            i += len;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DequantQ4K(byte* blk, float* y)
    {
        float d = Fp16.ToF32(((ushort*)blk)[0]), dmin = Fp16.ToF32(((ushort*)blk)[1]);
        byte* q = blk + 16;
        for (int c = 0; c < 4; c++, q += 32)
        {
            ScaleMin(blk + 4, 2 * c, out int s0, out int m0);
            ScaleMin(blk + 4, 2 * c + 1, out int s1, out int m1);
            float d0 = d * s0, n0 = dmin * m0, d1 = d * s1, n1 = dmin * m1;
            if (Avx2.IsSupported)
            {
                for (int l = 0; l < 32; l += 8)
                {
                    var b = Avx2.ConvertToVector256Int32(q + l); // 8 bytes zero-extended
                    var lo = Vector256.ConvertToSingle(b & Vector256.Create(0xF));
                    var hi = Vector256.ConvertToSingle(b >>> 4);
                    Vector256.FusedMultiplyAdd(lo, Vector256.Create(d0), Vector256.Create(-n0)).Store(y + 64 * c + l);
                    Vector256.FusedMultiplyAdd(hi, Vector256.Create(d1), Vector256.Create(-n1)).Store(y + 64 * c + 32 + l);
                }
                continue;
            }
            for (int l = 0; l < 32; l++)
            {
                y[64 * c + l] = d0 * (q[l] & 0xF) - n0;
                y[64 * c + 32 + l] = d1 * (q[l] >> 4) - n1;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DequantQ5K(byte* blk, float* y)
    {
        float d = Fp16.ToF32(((ushort*)blk)[0]), dmin = Fp16.ToF32(((ushort*)blk)[1]);
        byte* qh = blk + 16, ql = blk + 48;
        for (int c = 0; c < 4; c++, ql += 32)
        {
            ScaleMin(blk + 4, 2 * c, out int s0, out int m0);
            ScaleMin(blk + 4, 2 * c + 1, out int s1, out int m1);
            float d0 = d * s0, n0 = dmin * m0, d1 = d * s1, n1 = dmin * m1;
            int u0 = 1 << (2 * c), u1 = 2 << (2 * c);
            for (int l = 0; l < 32; l++)
            {
                y[64 * c + l] = d0 * ((ql[l] & 0xF) + ((qh[l] & u0) != 0 ? 16 : 0)) - n0;
                y[64 * c + 32 + l] = d1 * ((ql[l] >> 4) + ((qh[l] & u1) != 0 ? 16 : 0)) - n1;
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DequantQ6K(byte* blk, float* y)
    {
        float d = Fp16.ToF32(*(ushort*)(blk + 208));
        sbyte* sc = (sbyte*)(blk + 192);
        for (int h = 0; h < 2; h++)
        {
            byte* ql = blk + 64 * h, qh = blk + 128 + 32 * h;
            sbyte* s = sc + 8 * h;
            float* o = y + 128 * h;
            for (int l = 0; l < 32; l++)
            {
                int g = l / 16;
                o[l] = d * s[g] * (((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32);
                o[l + 32] = d * s[g + 2] * (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
                o[l + 64] = d * s[g + 4] * (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                o[l + 96] = d * s[g + 6] * (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
            }
        }
    }

    // ---------------- activations (q8_K) ----------------

    /// <summary>
    /// llama.cpp's q8_K: per 256 values d = m / -127 where m is the value of largest magnitude, q = round(x * -127 / m)
    /// (at most 127), and the sum of each 16 values' codes.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void QuantizeActivations(float* x, int n, sbyte* q, float* d, short* sums, Isa isa)
    {
        for (int b = 0; b < n / QK; b++)
        {
            float* v = x + b * QK;
            sbyte* qb = q + b * QK;
            float amax = 0, max = 0;
            if (isa >= Isa.Avx2)
            {
                // max |v| and whether any value is NaN; the value of largest magnitude is +amax or -amax (ties between the
                // two give codes and scale both negated: the same products).
                Vector256<float> hi = Vector256.Create(float.NegativeInfinity), lo = Vector256.Create(float.PositiveInfinity), nan = default;
                for (int i = 0; i < QK; i += 8)
                {
                    var t = Vector256.Load(v + i);
                    hi = Vector256.Max(hi, t); lo = Vector256.Min(lo, t);
                    nan |= ~Vector256.Equals(t, t);
                }
                float mh = MaxOf(hi), ml = -MaxOf(-lo);
                if (nan != Vector256<float>.Zero) { amax = float.NaN; max = float.NaN; }
                else { amax = MathF.Max(mh, -ml); max = mh >= -ml ? mh : ml; }
            }
            else
                for (int i = 0; i < QK; i++) { float a = MathF.Abs(v[i]); if (a > amax || float.IsNaN(a)) { amax = a; max = v[i]; } }
            if (amax == 0)
            {
                d[b] = 0;
                new Span<sbyte>(qb, QK).Clear();
                new Span<short>(sums + b * 16, 16).Clear();
                continue;
            }
            float iscale = -127f / max;
            d[b] = 1 / iscale;
            if (isa >= Isa.Avx2)
            {
                var vs = Vector256.Create(iscale);
                for (int i0 = 0; i0 < QK; i0 += 32)
                {
                    var a0 = Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(v + i0) * vs));
                    var a1 = Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(v + i0 + 8) * vs));
                    var a2 = Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(v + i0 + 16) * vs));
                    var a3 = Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(v + i0 + 24) * vs));
                    var b8 = Avx2.PackSignedSaturate(Avx2.PackSignedSaturate(a0, a1), Avx2.PackSignedSaturate(a2, a3));
                    b8 = Avx2.PermuteVar8x32(b8.AsInt32(), Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7)).AsSByte();
                    b8 = Vector256.Min(b8, Vector256.Create((sbyte)127));
                    b8.Store(qb + i0);
                    // sums of each 16: pairs by vpmaddubsw with ones, then 8 pairs summed by vpmaddwd, then within lanes
                    var s16 = Avx2.MultiplyAddAdjacent(Vector256<byte>.One, b8);           // 16 x (2 values)
                    var s32 = Avx2.MultiplyAddAdjacent(s16, Vector256<short>.One);          // 8 x (4 values)
                    var s64 = Avx2.HorizontalAdd(s32, s32);                                 // [s0+s1, s2+s3, ..] per lane
                    var s128 = Avx2.HorizontalAdd(s64, s64);                                // per lane: [16-sum, 16-sum ...]
                    sums[b * 16 + i0 / 16] = (short)s128.GetElement(0);
                    sums[b * 16 + i0 / 16 + 1] = (short)s128.GetElement(4);
                }
            }
            else
            {
                for (int i0 = 0; i0 < QK; i0++) qb[i0] = (sbyte)Math.Min(127, Nearest(iscale * v[i0]));
                for (int g = 0; g < 16; g++)
                {
                    int s = 0;
                    for (int i = 0; i < 16; i++) s += qb[16 * g + i];
                    sums[b * 16 + g] = (short)s;
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float MaxOf(Vector256<float> v)
    {
        var m = Vector128.Max(v.GetLower(), v.GetUpper());
        m = Vector128.Max(m, Vector128.Shuffle(m, Vector128.Create(2, 3, 0, 1)));
        return MathF.Max(m[0], m[1]);
    }

    // ---------------- dot products ----------------

    /// <summary>Scalar reference of a Q4_K row times q8_K activations.</summary>
    public static float DotQ4KReference(byte* w, sbyte* xq, float* xd, short* xs, int K)
    {
        float sum = 0;
        for (int b = 0; b < K / QK; b++)
        {
            byte* blk = w + b * Q4KBytes;
            float d = Fp16.ToF32(((ushort*)blk)[0]) * xd[b], dmin = Fp16.ToF32(((ushort*)blk)[1]) * xd[b];
            sbyte* x = xq + b * QK;
            short* s16 = xs + b * 16;
            int accQ = 0, accM = 0;
            for (int j = 0; j < 8; j++)
            {
                ScaleMin(blk + 4, j, out int sc, out int m);
                byte* q = blk + 16 + 32 * (j / 2);
                int dot = 0;
                for (int l = 0; l < 32; l++) dot += ((j & 1) == 0 ? q[l] & 0xF : q[l] >> 4) * x[32 * j + l];
                accQ += sc * dot;
                accM += m * (s16[2 * j] + s16[2 * j + 1]);
            }
            sum += d * accQ - dmin * accM;
        }
        return sum;
    }

    public static float DotQ5KReference(byte* w, sbyte* xq, float* xd, short* xs, int K)
    {
        float sum = 0;
        for (int b = 0; b < K / QK; b++)
        {
            byte* blk = w + b * Q5KBytes;
            float d = Fp16.ToF32(((ushort*)blk)[0]) * xd[b], dmin = Fp16.ToF32(((ushort*)blk)[1]) * xd[b];
            sbyte* x = xq + b * QK;
            short* s16 = xs + b * 16;
            byte* qh = blk + 16;
            int accQ = 0, accM = 0;
            for (int j = 0; j < 8; j++)
            {
                ScaleMin(blk + 4, j, out int sc, out int m);
                byte* q = blk + 48 + 32 * (j / 2);
                int dot = 0;
                for (int l = 0; l < 32; l++)
                {
                    int v = ((j & 1) == 0 ? q[l] & 0xF : q[l] >> 4) | (((qh[l] >> j) & 1) << 4);
                    dot += v * x[32 * j + l];
                }
                accQ += sc * dot;
                accM += m * (s16[2 * j] + s16[2 * j + 1]);
            }
            sum += d * accQ - dmin * accM;
        }
        return sum;
    }

    public static float DotQ6KReference(byte* w, sbyte* xq, float* xd, short* xs, int K)
    {
        float sum = 0;
        for (int b = 0; b < K / QK; b++)
        {
            byte* blk = w + b * Q6KBytes;
            float d = Fp16.ToF32(*(ushort*)(blk + 208)) * xd[b];
            sbyte* sc = (sbyte*)(blk + 192);
            sbyte* x = xq + b * QK;
            int acc = 0;
            for (int h = 0; h < 2; h++)
            {
                byte* ql = blk + 64 * h, qh = blk + 128 + 32 * h;
                for (int l = 0; l < 32; l++)
                {
                    int g = 8 * h + l / 16;
                    int q1 = (ql[l] & 0xF) | ((qh[l] & 3) << 4), q2 = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
                    int q3 = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4), q4 = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                    sbyte* xh = x + 128 * h;
                    acc += sc[g] * (q1 - 32) * xh[l] + sc[g + 2] * (q2 - 32) * xh[l + 32]
                         + sc[g + 4] * (q3 - 32) * xh[l + 64] + sc[g + 6] * (q4 - 32) * xh[l + 96];
                }
            }
            sum += d * acc;
        }
        return sum;
    }

    /// <summary>A k-quant row (Q4_K/Q5_K/Q6_K) times q8_K activations on the given path.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Dot(DType type, byte* w, sbyte* xq, float* xd, short* xs, int K, Isa isa)
    {
        return type switch
        {
            DType.Q4_K => isa == Isa.Avx512 ? DotQ4K512(w, xq, xd, xs, K) : isa >= Isa.Avx2 ? DotQ4K256(w, xq, xd, xs, K) : DotQ4KReference(w, xq, xd, xs, K),
            DType.Q5_K => isa == Isa.Avx512 ? DotQ5K512(w, xq, xd, xs, K) : isa >= Isa.Avx2 ? DotQ5K256(w, xq, xd, xs, K) : DotQ5KReference(w, xq, xd, xs, K),
            _ => isa == Isa.Avx512 ? DotQ6K512(w, xq, xd, xs, K) : isa >= Isa.Avx2 ? DotQ6K256(w, xq, xd, xs, K) : DotQ6KReference(w, xq, xd, xs, K),
        };
    }

    // ---- fast paths: scales unpacked with 32-bit word operations, broadcast with byte shuffles; the min (or offset)
    // terms accumulate in a float vector and are reduced once per row ----

    /// <summary>The 8 six-bit scales (bytes 0..7) and 8 mins (bytes 8..15) of a Q4_K/Q5_K super-block, from its 12 bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<byte> ScalesMins(byte* s)
    {
        uint w0 = *(uint*)s, w1 = *(uint*)(s + 4), w2 = *(uint*)(s + 8);
        uint s03 = w0 & 0x3F3F3F3F, m03 = w1 & 0x3F3F3F3F;
        uint s47 = (w2 & 0x0F0F0F0F) | (((w0 >> 6) & 0x03030303) << 4);
        uint m47 = ((w2 >> 4) & 0x0F0F0F0F) | (((w1 >> 6) & 0x03030303) << 4);
        return Vector128.Create(s03, s47, m03, m47).AsByte();
    }

    /// <summary>vpshufb patterns that broadcast int16 lane j (0..7) of each 128-bit half to all 8 lanes of that half.</summary>
    private static readonly Vector256<byte>[] Bcast = Enumerable.Range(0, 8)
        .Select(j => Vector256.Create(Enumerable.Range(0, 32).Select(i => (byte)(2 * j + (i & 1))).ToArray())).ToArray();
    /// <summary>Lane j in the low half, lane j+1 in the high half (two sub-blocks' scales for one 32-byte maddubs pair).</summary>
    private static readonly Vector256<byte>[] Bcast2 = Enumerable.Range(0, 8)
        .Select(j => Vector256.Create(Enumerable.Range(0, 32).Select(i => (byte)(2 * (i < 16 ? j : Math.Min(7, j + 1)) + (i & 1))).ToArray())).ToArray();

    /// <summary>Bit <paramref name="bit"/> of every byte moved to bit 4 (other bits garbage: mask with 0x10); 16-bit shifts
    /// never carry a neighbour's bit into bit 4 for these distances.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Bit4(Vector256<byte> v, int bit) =>
        bit <= 4 ? (v.AsUInt16() << (4 - bit)).AsByte() : (v.AsUInt16() >>> (bit - 4)).AsByte();

    /// <summary>Sum over the 8 sub-blocks of m_j * (bsum_2j + bsum_2j+1) as 8 int32 partial sums.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> MinTerm(Vector128<byte> sm, short* s16)
    {
        var mb = Sse2.ShiftRightLogical128BitLane(sm, 8);
        var pairs = Avx2.ConvertToVector256Int16(Sse2.UnpackLow(mb, mb)); // m0, m0, m1, m1, ...
        return Avx2.MultiplyAddAdjacent(Vector256.Load(s16), pairs);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float DotQ4K256(byte* w, sbyte* xq, float* xd, short* xs, int K)
    {
        var bc = Bcast;
        Vector256<float> acc = default, macc = default;
        var low = Vector256.Create((byte)0x0F);
        for (int b = 0; b < K / QK; b++)
        {
            byte* blk = w + b * Q4KBytes;
            float d = Fp16.Table[((ushort*)blk)[0]] * xd[b], dmin = Fp16.Table[((ushort*)blk)[1]] * xd[b];
            var sm = ScalesMins(blk + 4);
            macc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(MinTerm(sm, xs + b * 16)), Vector256.Create(dmin), macc);
            var sc = Avx2.ConvertToVector256Int16(sm).GetLower();
            var sc2 = Vector256.Create(sc, sc).AsByte();
            sbyte* x = xq + b * QK;
            byte* q = blk + 16;
            Vector256<int> ai = default;
            for (int c = 0; c < 4; c++)
            {
                var qv = Vector256.Load(q + 32 * c);
                var lo = qv & low;
                var hi = (qv.AsUInt16() >>> 4).AsByte() & low;
                var p0 = Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(lo, Vector256.Load(x + 64 * c)), Avx2.Shuffle(sc2, Bcast[2 * c]).AsInt16());
                var p1 = Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(hi, Vector256.Load(x + 64 * c + 32)), Avx2.Shuffle(sc2, Bcast[2 * c + 1]).AsInt16());
                ai += p0 + p1;
            }
            acc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(ai), Vector256.Create(d), acc);
        }
        return Vector256.Sum(acc) - Vector256.Sum(macc);
    }

    /// <summary>512-bit vpshufb patterns: int16 lane 2c of each 128-bit lane to lanes 0-1, lane 2c+1 to lanes 2-3.</summary>
    private static readonly Vector512<byte>[] Bcast512 = Enumerable.Range(0, 4)
        .Select(c => Vector512.Create(Enumerable.Range(0, 64).Select(i => (byte)(2 * (i < 32 ? 2 * c : 2 * c + 1) + (i & 1))).ToArray())).ToArray();
    /// <summary>Per-16-bit-lane shifts: 0 for the low 256 bits (low nibbles), 4 for the high 256 bits (high nibbles).</summary>
    private static readonly Vector512<ushort> NibbleShift = Vector512.Create(Enumerable.Range(0, 32).Select(i => (ushort)(i < 16 ? 0 : 4)).ToArray());

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Q4KChunk(byte* q, sbyte* x, int c, Vector512<byte> low, Vector512<ushort> shift, Vector512<short> scales)
    {
        // the 32 bytes of this chunk in both halves, the upper half shifted by 4: [low nibbles | high nibbles].
        // (Not Avx512F.BroadcastVector256ToVector512 from memory: .NET 10's JIT scales its displacement wrongly, so
        // q + 32 reads q + 64; found by bench/kernels check, reproduced in isolation.)
        var qv = Vector256.Load(q + 32 * c);
        var both = Int8.Join(qv, qv).AsUInt16();
        var q64 = Avx512BW.ShiftRightLogicalVariable(both, shift).AsByte() & low;
        var p = Avx512BW.MultiplyAddAdjacent(q64, Vector512.Load(x + 64 * c));
        return Avx512BW.MultiplyAddAdjacent(p, scales);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float DotQ4K512(byte* w, sbyte* xq, float* xd, short* xs, int K)
    {
        var p0 = Bcast512[0]; var p1 = Bcast512[1]; var p2 = Bcast512[2]; var p3 = Bcast512[3];
        var shift = NibbleShift;
        var low = Vector512.Create((byte)0x0F);
        Vector512<float> acc = default;
        Vector256<float> macc = default;
        for (int b = 0; b < K / QK; b++)
        {
            byte* blk = w + b * Q4KBytes;
            float d = Fp16.Table[((ushort*)blk)[0]] * xd[b], dmin = Fp16.Table[((ushort*)blk)[1]] * xd[b];
            var sm = ScalesMins(blk + 4);
            macc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(MinTerm(sm, xs + b * 16)), Vector256.Create(dmin), macc);
            var sc128 = Sse41.ConvertToVector128Int16(sm).AsByte();
            var sc256 = Vector256.Create(sc128, sc128);
            var sc = Int8.Join(sc256, sc256);
            sbyte* x = xq + b * QK;
            byte* q = blk + 16;
            var ai = Q4KChunk(q, x, 0, low, shift, Avx512BW.Shuffle(sc, p0).AsInt16()) + Q4KChunk(q, x, 1, low, shift, Avx512BW.Shuffle(sc, p1).AsInt16())
                   + Q4KChunk(q, x, 2, low, shift, Avx512BW.Shuffle(sc, p2).AsInt16()) + Q4KChunk(q, x, 3, low, shift, Avx512BW.Shuffle(sc, p3).AsInt16());
            acc = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(ai), Vector512.Create(d), acc);
        }
        return Vector512.Sum(acc) - Vector256.Sum(macc);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float DotQ5K256(byte* w, sbyte* xq, float* xd, short* xs, int K)
    {
        var bc = Bcast;
        Vector256<float> acc = default, macc = default;
        var low = Vector256.Create((byte)0x0F);
        var sixteen = Vector256.Create((byte)0x10);
        for (int b = 0; b < K / QK; b++)
        {
            byte* blk = w + b * Q5KBytes;
            float d = Fp16.Table[((ushort*)blk)[0]] * xd[b], dmin = Fp16.Table[((ushort*)blk)[1]] * xd[b];
            var sm = ScalesMins(blk + 4);
            macc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(MinTerm(sm, xs + b * 16)), Vector256.Create(dmin), macc);
            var sc = Avx2.ConvertToVector256Int16(sm).GetLower();
            var sc2 = Vector256.Create(sc, sc).AsByte();
            sbyte* x = xq + b * QK;
            var qh = Vector256.Load(blk + 16);
            byte* q = blk + 48;
            Vector256<int> ai = default;
            for (int c = 0; c < 4; c++)
            {
                var qv = Vector256.Load(q + 32 * c);
                // fifth bits: bit 2c of qh[l] for the low nibbles, bit 2c+1 for the high ones, moved to bit 4
                var lo = (qv & low) | (Bit4(qh, 2 * c) & sixteen);
                var hi = ((qv.AsUInt16() >>> 4).AsByte() & low) | (Bit4(qh, 2 * c + 1) & sixteen);
                var p0 = Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(lo, Vector256.Load(x + 64 * c)), Avx2.Shuffle(sc2, Bcast[2 * c]).AsInt16());
                var p1 = Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(hi, Vector256.Load(x + 64 * c + 32)), Avx2.Shuffle(sc2, Bcast[2 * c + 1]).AsInt16());
                ai += p0 + p1;
            }
            acc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(ai), Vector256.Create(d), acc);
        }
        return Vector256.Sum(acc) - Vector256.Sum(macc);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Q5KChunk(byte* q, Vector256<byte> qh, sbyte* x, int c, Vector256<byte> low, Vector256<byte> sixteen, Vector256<byte> sc2, Vector256<byte> pa, Vector256<byte> pb)
    {
        var qv = Vector256.Load(q + 32 * c);
        var lo = (qv & low) | (Bit4(qh, 2 * c) & sixteen);
        var hi = ((qv.AsUInt16() >>> 4).AsByte() & low) | (Bit4(qh, 2 * c + 1) & sixteen);
        var p = Avx512BW.MultiplyAddAdjacent(Int8.Join(lo, hi), Vector512.Load(x + 64 * c));
        return Avx512BW.MultiplyAddAdjacent(p, Int8.Join(Avx2.Shuffle(sc2, pa), Avx2.Shuffle(sc2, pb)).AsInt16());
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float DotQ5K512(byte* w, sbyte* xq, float* xd, short* xs, int K)
    {
        var p0 = Bcast[0]; var p1 = Bcast[1]; var p2 = Bcast[2]; var p3 = Bcast[3];
        var p4 = Bcast[4]; var p5 = Bcast[5]; var p6 = Bcast[6]; var p7 = Bcast[7];
        Vector512<float> acc = default;
        Vector256<float> macc = default;
        var low = Vector256.Create((byte)0x0F);
        var sixteen = Vector256.Create((byte)0x10);
        for (int b = 0; b < K / QK; b++)
        {
            byte* blk = w + b * Q5KBytes;
            float d = Fp16.Table[((ushort*)blk)[0]] * xd[b], dmin = Fp16.Table[((ushort*)blk)[1]] * xd[b];
            var sm = ScalesMins(blk + 4);
            macc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(MinTerm(sm, xs + b * 16)), Vector256.Create(dmin), macc);
            var sc = Avx2.ConvertToVector256Int16(sm).GetLower();
            var sc2 = Vector256.Create(sc, sc).AsByte();
            sbyte* x = xq + b * QK;
            var qh = Vector256.Load(blk + 16);
            byte* q = blk + 48;
            var ai = Q5KChunk(q, qh, x, 0, low, sixteen, sc2, p0, p1) + Q5KChunk(q, qh, x, 1, low, sixteen, sc2, p2, p3)
                   + Q5KChunk(q, qh, x, 2, low, sixteen, sc2, p4, p5) + Q5KChunk(q, qh, x, 3, low, sixteen, sc2, p6, p7);
            acc = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(ai), Vector512.Create(d), acc);
        }
        return Vector512.Sum(acc) - Vector256.Sum(macc);
    }

    /// <summary>Q6_K's 16 int8 scales as int16, each half's 8 repeated in both 128-bit lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector256<byte> H0, Vector256<byte> H1, Vector256<short> All) Q6Scales(sbyte* sc)
    {
        var all = Avx2.ConvertToVector256Int16(Vector128.Load(sc));
        var h0 = Vector256.Create(all.GetLower(), all.GetLower()).AsByte();
        var h1 = Vector256.Create(all.GetUpper(), all.GetUpper()).AsByte();
        return (h0, h1, all);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float DotQ6K256(byte* w, sbyte* xq, float* xd, short* xs, int K)
    {
        var b0 = Bcast2[0]; var b2 = Bcast2[2]; var b4 = Bcast2[4]; var b6 = Bcast2[6];
        Vector256<float> acc = default, oacc = default;
        var low = Vector256.Create((byte)0x0F);
        var hb = Vector256.Create((byte)0x30);
        for (int b = 0; b < K / QK; b++)
        {
            byte* blk = w + b * Q6KBytes;
            float d = Fp16.Table[*(ushort*)(blk + 208)] * xd[b];
            var (h0, h1, all) = Q6Scales((sbyte*)(blk + 192));
            // the offset of 32 in the codes: 32 * sum_g sc_g * bsum_g
            oacc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(Avx2.MultiplyAddAdjacent(all, Vector256.Load(xs + b * 16))), Vector256.Create(32f * d), oacc);
            sbyte* x = xq + b * QK;
            Vector256<int> ai = default;
            for (int h = 0; h < 2; h++)
            {
                byte* ql = blk + 64 * h;
                var qa = Vector256.Load(ql); var qb = Vector256.Load(ql + 32); var qh = Vector256.Load(blk + 128 + 32 * h);
                var q1 = (qa & low) | ((qh.AsUInt16() << 4).AsByte() & hb);
                var q2 = (qb & low) | ((qh.AsUInt16() << 2).AsByte() & hb);
                var q3 = ((qa.AsUInt16() >>> 4).AsByte() & low) | (qh & hb);
                var q4 = ((qb.AsUInt16() >>> 4).AsByte() & low) | ((qh.AsUInt16() >>> 2).AsByte() & hb);
                var sh = h == 0 ? h0 : h1;
                sbyte* xh = x + 128 * h;
                ai += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q1, Vector256.Load(xh)), Avx2.Shuffle(sh, b0).AsInt16());
                ai += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q2, Vector256.Load(xh + 32)), Avx2.Shuffle(sh, b2).AsInt16());
                ai += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q3, Vector256.Load(xh + 64)), Avx2.Shuffle(sh, b4).AsInt16());
                ai += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(q4, Vector256.Load(xh + 96)), Avx2.Shuffle(sh, b6).AsInt16());
            }
            acc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(ai), Vector256.Create(d), acc);
        }
        return Vector256.Sum(acc) - Vector256.Sum(oacc);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static float DotQ6K512(byte* w, sbyte* xq, float* xd, short* xs, int K)
    {
        var b0 = Bcast2[0]; var b2 = Bcast2[2]; var b4 = Bcast2[4]; var b6 = Bcast2[6];
        Vector512<float> acc = default;
        Vector256<float> oacc = default;
        var low = Vector512.Create((byte)0x0F);
        var three4 = Vector256.Create((byte)0x30);
        for (int b = 0; b < K / QK; b++)
        {
            byte* blk = w + b * Q6KBytes;
            float d = Fp16.Table[*(ushort*)(blk + 208)] * xd[b];
            var (h0, h1, all) = Q6Scales((sbyte*)(blk + 192));
            oacc = Vector256.FusedMultiplyAdd(Vector256.ConvertToSingle(Avx2.MultiplyAddAdjacent(all, Vector256.Load(xs + b * 16))), Vector256.Create(32f * d), oacc);
            sbyte* x = xq + b * QK;
            Vector512<int> ai = default;
            for (int h = 0; h < 2; h++)
            {
                // ql[0..63] as one vector: low nibbles are q1 (bytes 0..31) and q2 (32..63), high nibbles q3 and q4.
                var ql = Vector512.Load(blk + 64 * h);
                var qh = Vector256.Load(blk + 128 + 32 * h);
                var h12 = Int8.Join((qh.AsUInt16() << 4).AsByte() & three4, (qh.AsUInt16() << 2).AsByte() & three4);
                var h34 = Int8.Join(qh & three4, (qh.AsUInt16() >>> 2).AsByte() & three4);
                var q12 = (ql & low) | h12;
                var q34 = ((ql.AsUInt16() >>> 4).AsByte() & low) | h34;
                var sh = h == 0 ? h0 : h1;
                var s12 = Int8.Join(Avx2.Shuffle(sh, b0), Avx2.Shuffle(sh, b2)).AsInt16();
                var s34 = Int8.Join(Avx2.Shuffle(sh, b4), Avx2.Shuffle(sh, b6)).AsInt16();
                sbyte* xh = x + 128 * h;
                ai += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(q12, Vector512.Load(xh)), s12);
                ai += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(q34, Vector512.Load(xh + 64)), s34);
            }
            acc = Vector512.FusedMultiplyAdd(Vector512.ConvertToSingle(ai), Vector512.Create(d), acc);
        }
        return Vector512.Sum(acc) - Vector256.Sum(oacc);
    }
}
