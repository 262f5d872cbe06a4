using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LlmArch.Compute.Cpu;

public static unsafe partial class MatMul
{
    // Packed GEMM for prefill (BLIS-style), the same for every weight dtype:
    //  - A (the activations [N, K]) is packed once per call into tiles of MR tokens, k-major: [N/MR][K][MR].
    //  - Each thread takes panels of NR output columns. For every KC-slice of K it dequantizes the panel's NR weight
    //    rows to F32 (BF16 widened, block types decoded) and transposes them into a k-major micro-panel [KC][NR]
    //    (32 KB at most: it stays in L1 while every token tile streams past it).
    //  - The micro-kernel keeps an MR x NR tile of C in registers: per k, NR/W weight vectors are loaded, each token's
    //    activation is broadcast once, and MR * NR/W FMAs run (12 x 2 zmm with AVX-512, 6 x 2 ymm with AVX2).
    //  - C accumulates in a per-thread [N, NR] panel buffer (L2), copied to y with the bias at the end, so partial
    //    tiles need no special cases.
    // The dequantization of a panel is paid once per KC-slice and reused by all N tokens.

    private const int KC = 256;

    private sealed class PackAJob : IParallelWork
    {
        public float* X, A; public int N, K, MR;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int start, int end)
        {
            for (int t = start; t < end; t++)
            {
                float* dst = A + (long)t * K * MR;
                int n0 = t * MR, rows = Math.Min(MR, N - n0);
                for (int i = 0; i < MR; i++)
                {
                    if (i >= rows) { for (int k = 0; k < K; k++) dst[(long)k * MR + i] = 0; continue; }
                    float* src = X + (long)(n0 + i) * K;
                    for (int k = 0; k < K; k++) dst[(long)k * MR + i] = src[k];
                }
            }
        }
    }

    private sealed class GemmJob : IParallelWork
    {
        public float* A, Bias, Y; public int N, K, O, MR, NR, Tiles; public Tensor W = null!; public Isa Isa;
        [ThreadStatic] private static float[]? _panel, _rows, _c;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int start, int end)
        {
            int npad = Tiles * MR;
            var panel = Grow(ref _panel, KC * NR); var rows = Grow(ref _rows, KC * NR); var cbuf = Grow(ref _c, npad * NR);
            fixed (float* bp = panel, tmp = rows, c = cbuf)
                for (int p = start; p < end; p++)
                {
                    int o0 = p * NR, nr = Math.Min(NR, O - o0);
                    for (int kb = 0; kb < K; kb += KC)
                    {
                        int kc = Math.Min(KC, K - kb);
                        PackB(o0, nr, kb, kc, tmp, bp);
                        bool load = kb > 0;
                        if (Isa == Isa.Avx512)
                            for (int t = 0; t < Tiles; t++) Kernel12x32(A + ((long)t * K + kb) * 12, bp, kc, c + (long)t * 12 * 32, load);
                        else
                            for (int t = 0; t < Tiles; t++) Kernel6x16(A + ((long)t * K + kb) * 6, bp, kc, c + (long)t * 6 * 16, load);
                    }
                    StoreC(c, o0, nr);
                }
        }

        private static float[] Grow(ref float[]? a, long n)
        {
            if (a is null || a.Length < n) a = GC.AllocateUninitializedArray<float>(checked((int)n), pinned: true);
            return a;
        }

        /// <summary>Weight rows o0..o0+nr, columns kb..kb+kc, as F32 in k-major order [kc][NR] (rows past nr are 0).</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void PackB(int o0, int nr, int kb, int kc, float* tmp, float* bp)
        {
            for (int r = 0; r < NR; r++)
            {
                var dst = new Span<float>(tmp + (long)r * kc, kc);
                if (r < nr) Convert.ToF32(W, (long)(o0 + r) * K + kb, dst);
                else dst.Clear();
            }
            int k8 = kc & ~7;
            for (int r = 0; r < NR; r += 8)
                for (int k = 0; k < k8; k += 8)
                    Transpose8x8(tmp + (long)r * kc + k, kc, bp + (long)k * NR + r, NR);
            for (int k = k8; k < kc; k++)
                for (int r = 0; r < NR; r++) bp[(long)k * NR + r] = tmp[(long)r * kc + k];
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void StoreC(float* c, int o0, int nr)
        {
            for (int n = 0; n < N; n++)
            {
                float* src = c + (long)n * NR, dst = Y + (long)n * O + o0;
                if (nr == NR && NR == 32 && Bias is null) { Vector512.Load(src).Store(dst); Vector512.Load(src + 16).Store(dst + 16); continue; }
                if (nr == NR && NR == 16 && Bias is null) { Vector256.Load(src).Store(dst); Vector256.Load(src + 8).Store(dst + 8); continue; }
                for (int j = 0; j < nr; j++) dst[j] = src[j] + (Bias is null ? 0f : Bias[o0 + j]);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8x8(float* src, long ss, float* dst, long ds)
    {
        var r0 = Vector256.Load(src); var r1 = Vector256.Load(src + ss); var r2 = Vector256.Load(src + 2 * ss); var r3 = Vector256.Load(src + 3 * ss);
        var r4 = Vector256.Load(src + 4 * ss); var r5 = Vector256.Load(src + 5 * ss); var r6 = Vector256.Load(src + 6 * ss); var r7 = Vector256.Load(src + 7 * ss);
        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1); var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5); var t5 = Avx.UnpackHigh(r4, r5); var t6 = Avx.UnpackLow(r6, r7); var t7 = Avx.UnpackHigh(r6, r7);
        var s0 = Avx.Shuffle(t0, t2, 0x44); var s1 = Avx.Shuffle(t0, t2, 0xEE); var s2 = Avx.Shuffle(t1, t3, 0x44); var s3 = Avx.Shuffle(t1, t3, 0xEE);
        var s4 = Avx.Shuffle(t4, t6, 0x44); var s5 = Avx.Shuffle(t4, t6, 0xEE); var s6 = Avx.Shuffle(t5, t7, 0x44); var s7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Permute2x128(s0, s4, 0x20).Store(dst); Avx.Permute2x128(s1, s5, 0x20).Store(dst + ds);
        Avx.Permute2x128(s2, s6, 0x20).Store(dst + 2 * ds); Avx.Permute2x128(s3, s7, 0x20).Store(dst + 3 * ds);
        Avx.Permute2x128(s0, s4, 0x31).Store(dst + 4 * ds); Avx.Permute2x128(s1, s5, 0x31).Store(dst + 5 * ds);
        Avx.Permute2x128(s2, s6, 0x31).Store(dst + 6 * ds); Avx.Permute2x128(s3, s7, 0x31).Store(dst + 7 * ds);
    }

    /// <summary>C[12, 32] (+)= A[12, kc] * B[kc, 32]; A k-major [kc][12], B k-major [kc][32], C row stride 32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel12x32(float* a, float* b, int kc, float* c, bool load)
    {
        Vector512<float> c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
        Vector512<float> c60, c61, c70, c71, c80, c81, c90, c91, ca0, ca1, cb0, cb1;
        if (load)
        {
            c00 = Vector512.Load(c); c01 = Vector512.Load(c + 16); c10 = Vector512.Load(c + 32); c11 = Vector512.Load(c + 48);
            c20 = Vector512.Load(c + 64); c21 = Vector512.Load(c + 80); c30 = Vector512.Load(c + 96); c31 = Vector512.Load(c + 112);
            c40 = Vector512.Load(c + 128); c41 = Vector512.Load(c + 144); c50 = Vector512.Load(c + 160); c51 = Vector512.Load(c + 176);
            c60 = Vector512.Load(c + 192); c61 = Vector512.Load(c + 208); c70 = Vector512.Load(c + 224); c71 = Vector512.Load(c + 240);
            c80 = Vector512.Load(c + 256); c81 = Vector512.Load(c + 272); c90 = Vector512.Load(c + 288); c91 = Vector512.Load(c + 304);
            ca0 = Vector512.Load(c + 320); ca1 = Vector512.Load(c + 336); cb0 = Vector512.Load(c + 352); cb1 = Vector512.Load(c + 368);
        }
        else
        {
            c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = Vector512<float>.Zero;
            c60 = c61 = c70 = c71 = c80 = c81 = c90 = c91 = ca0 = ca1 = cb0 = cb1 = Vector512<float>.Zero;
        }
        for (int k = 0; k < kc; k++, a += 12, b += 32)
        {
            var b0 = Vector512.Load(b); var b1 = Vector512.Load(b + 16);
            var t = Vector512.Create(a[0]); c00 = Vector512.FusedMultiplyAdd(t, b0, c00); c01 = Vector512.FusedMultiplyAdd(t, b1, c01);
            t = Vector512.Create(a[1]); c10 = Vector512.FusedMultiplyAdd(t, b0, c10); c11 = Vector512.FusedMultiplyAdd(t, b1, c11);
            t = Vector512.Create(a[2]); c20 = Vector512.FusedMultiplyAdd(t, b0, c20); c21 = Vector512.FusedMultiplyAdd(t, b1, c21);
            t = Vector512.Create(a[3]); c30 = Vector512.FusedMultiplyAdd(t, b0, c30); c31 = Vector512.FusedMultiplyAdd(t, b1, c31);
            t = Vector512.Create(a[4]); c40 = Vector512.FusedMultiplyAdd(t, b0, c40); c41 = Vector512.FusedMultiplyAdd(t, b1, c41);
            t = Vector512.Create(a[5]); c50 = Vector512.FusedMultiplyAdd(t, b0, c50); c51 = Vector512.FusedMultiplyAdd(t, b1, c51);
            t = Vector512.Create(a[6]); c60 = Vector512.FusedMultiplyAdd(t, b0, c60); c61 = Vector512.FusedMultiplyAdd(t, b1, c61);
            t = Vector512.Create(a[7]); c70 = Vector512.FusedMultiplyAdd(t, b0, c70); c71 = Vector512.FusedMultiplyAdd(t, b1, c71);
            t = Vector512.Create(a[8]); c80 = Vector512.FusedMultiplyAdd(t, b0, c80); c81 = Vector512.FusedMultiplyAdd(t, b1, c81);
            t = Vector512.Create(a[9]); c90 = Vector512.FusedMultiplyAdd(t, b0, c90); c91 = Vector512.FusedMultiplyAdd(t, b1, c91);
            t = Vector512.Create(a[10]); ca0 = Vector512.FusedMultiplyAdd(t, b0, ca0); ca1 = Vector512.FusedMultiplyAdd(t, b1, ca1);
            t = Vector512.Create(a[11]); cb0 = Vector512.FusedMultiplyAdd(t, b0, cb0); cb1 = Vector512.FusedMultiplyAdd(t, b1, cb1);
        }
        c00.Store(c); c01.Store(c + 16); c10.Store(c + 32); c11.Store(c + 48);
        c20.Store(c + 64); c21.Store(c + 80); c30.Store(c + 96); c31.Store(c + 112);
        c40.Store(c + 128); c41.Store(c + 144); c50.Store(c + 160); c51.Store(c + 176);
        c60.Store(c + 192); c61.Store(c + 208); c70.Store(c + 224); c71.Store(c + 240);
        c80.Store(c + 256); c81.Store(c + 272); c90.Store(c + 288); c91.Store(c + 304);
        ca0.Store(c + 320); ca1.Store(c + 336); cb0.Store(c + 352); cb1.Store(c + 368);
    }

    /// <summary>C[6, 16] (+)= A[6, kc] * B[kc, 16]; A k-major [kc][6], B k-major [kc][16], C row stride 16.
    /// 12 accumulators + 2 weight vectors + 1 broadcast: fits the 16 registers of AVX2.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel6x16(float* a, float* b, int kc, float* c, bool load)
    {
        Vector256<float> c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
        if (load)
        {
            c00 = Vector256.Load(c); c01 = Vector256.Load(c + 8); c10 = Vector256.Load(c + 16); c11 = Vector256.Load(c + 24);
            c20 = Vector256.Load(c + 32); c21 = Vector256.Load(c + 40); c30 = Vector256.Load(c + 48); c31 = Vector256.Load(c + 56);
            c40 = Vector256.Load(c + 64); c41 = Vector256.Load(c + 72); c50 = Vector256.Load(c + 80); c51 = Vector256.Load(c + 88);
        }
        else c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = Vector256<float>.Zero;
        for (int k = 0; k < kc; k++, a += 6, b += 16)
        {
            var b0 = Vector256.Load(b); var b1 = Vector256.Load(b + 8);
            var t = Vector256.Create(a[0]); c00 = Vector256.FusedMultiplyAdd(t, b0, c00); c01 = Vector256.FusedMultiplyAdd(t, b1, c01);
            t = Vector256.Create(a[1]); c10 = Vector256.FusedMultiplyAdd(t, b0, c10); c11 = Vector256.FusedMultiplyAdd(t, b1, c11);
            t = Vector256.Create(a[2]); c20 = Vector256.FusedMultiplyAdd(t, b0, c20); c21 = Vector256.FusedMultiplyAdd(t, b1, c21);
            t = Vector256.Create(a[3]); c30 = Vector256.FusedMultiplyAdd(t, b0, c30); c31 = Vector256.FusedMultiplyAdd(t, b1, c31);
            t = Vector256.Create(a[4]); c40 = Vector256.FusedMultiplyAdd(t, b0, c40); c41 = Vector256.FusedMultiplyAdd(t, b1, c41);
            t = Vector256.Create(a[5]); c50 = Vector256.FusedMultiplyAdd(t, b0, c50); c51 = Vector256.FusedMultiplyAdd(t, b1, c51);
        }
        c00.Store(c); c01.Store(c + 8); c10.Store(c + 16); c11.Store(c + 24);
        c20.Store(c + 32); c21.Store(c + 40); c30.Store(c + 48); c31.Store(c + 56);
        c40.Store(c + 64); c41.Store(c + 72); c50.Store(c + 80); c51.Store(c + 88);
    }

    [ThreadStatic] private static PackAJob? _packAJob;
    [ThreadStatic] private static GemmJob? _gemmJob;
    [ThreadStatic] private static float[]? _apack;

    private static void RunGemm(CpuThreadPool pool, float* x, int N, int K, Tensor w, float* bias, float* y, Isa isa)
    {
        int MR = isa == Isa.Avx512 ? 12 : 6, NR = isa == Isa.Avx512 ? 32 : 16;
        int tiles = (N + MR - 1) / MR;
        long need = (long)tiles * MR * K;
        if (_apack is null || _apack.Length < need) _apack = GC.AllocateUninitializedArray<float>(checked((int)Math.Max(need, 4096)), pinned: true);
        fixed (float* a = _apack)
        {
            var pack = _packAJob ??= new PackAJob();
            pack.X = x; pack.A = a; pack.N = N; pack.K = K; pack.MR = MR;
            pool.Run(pack, tiles);
            var job = _gemmJob ??= new GemmJob();
            job.A = a; job.Bias = bias; job.Y = y; job.N = N; job.K = K; job.O = w.Shape[0]; job.MR = MR; job.NR = NR;
            job.Tiles = tiles; job.W = w; job.Isa = isa;
            pool.Run(job, (job.O + NR - 1) / NR);
            job.W = null!;
        }
    }
}
