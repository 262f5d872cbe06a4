using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LlmArch.Compute.Cpu;

public static unsafe partial class MatMul
{
    // BF16 matrix-vector (decode). A 64-byte (32-byte) load holds 32 (16) BF16 weights as 16 (8) uint32 lanes: lane j
    // has weight 2j in its low half and 2j+1 in its high half. (lane << 16) gives the even weights as F32 and
    // (lane & 0xFFFF0000) the odd ones, so each load costs two integer ops instead of two widening loads. The
    // activations are split the same way once per call (per 32- or 16-block: the even values, then the odd ones).

    private sealed class BF16Job : IParallelWork
    {
        public float* Xs, Bias, Y; public int N, K, O; public byte* W; public Isa Isa;

        public void Execute(int start, int end)
        {
            int r0 = start * RowBlock, r1 = Math.Min(O, end * RowBlock);
            if (Isa == Isa.Avx512) Rows512(r0, r1);
            else Rows256(r0, r1);
        }

        // Four rows at a time: four independent FMA chains, and the next four rows prefetched.
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Rows512(int r0, int r1)
        {
            long stride = (long)K * 2;
            // Rows in chunks of 16, every token per chunk: weights come from memory once, from L1/L2 for the other tokens.
            for (int c0 = r0; c0 < r1; c0 += 16)
            for (int n = 0, c1 = Math.Min(r1, c0 + 16); n < N; n++)
            {
                float* xs = Xs + (long)n * K;
                float* y = Y + (long)n * O;
                int o = c0;
                for (; o + 4 <= c1; o += 4)
                {
                    byte* w0 = W + o * stride;
                    Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
                    byte* pf = n == 0 && o + 8 <= O ? w0 + 4 * stride : null;
                    for (int k = 0; k < K; k += 32)
                    {
                        if (pf is not null)
                        {
                            // Hardware prefetchers stop at 4 KiB page boundaries of the memory-mapped weights.
                            Sse.Prefetch0(pf + 2 * k);
                            Sse.Prefetch0(pf + stride + 2 * k);
                            Sse.Prefetch0(pf + 2 * stride + 2 * k);
                            Sse.Prefetch0(pf + 3 * stride + 2 * k);
                        }
                        var xe = Vector512.Load(xs + k); var xo = Vector512.Load(xs + k + 16);
                        Acc(ref a0, Vector512.Load((uint*)(w0 + 2 * k)), xe, xo);
                        Acc(ref a1, Vector512.Load((uint*)(w0 + stride + 2 * k)), xe, xo);
                        Acc(ref a2, Vector512.Load((uint*)(w0 + 2 * stride + 2 * k)), xe, xo);
                        Acc(ref a3, Vector512.Load((uint*)(w0 + 3 * stride + 2 * k)), xe, xo);
                    }
                    Put4(y, o, Vector512.Sum(a0), Vector512.Sum(a1), Vector512.Sum(a2), Vector512.Sum(a3));
                }
                for (; o < c1; o++)
                {
                    byte* w0 = W + o * stride;
                    Vector512<float> a0 = default;
                    for (int k = 0; k < K; k += 32)
                        Acc(ref a0, Vector512.Load((uint*)(w0 + 2 * k)), Vector512.Load(xs + k), Vector512.Load(xs + k + 16));
                    y[o] = Vector512.Sum(a0) + (Bias is null ? 0 : Bias[o]);
                }
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Rows256(int r0, int r1)
        {
            long stride = (long)K * 2;
            // Rows in chunks of 16, every token per chunk: weights come from memory once, from L1/L2 for the other tokens.
            for (int c0 = r0; c0 < r1; c0 += 16)
            for (int n = 0, c1 = Math.Min(r1, c0 + 16); n < N; n++)
            {
                float* xs = Xs + (long)n * K;
                float* y = Y + (long)n * O;
                int o = c0;
                for (; o + 4 <= c1; o += 4)
                {
                    byte* w0 = W + o * stride;
                    Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
                    Vector256<float> b0 = default, b1 = default, b2 = default, b3 = default;
                    byte* pf = n == 0 && o + 8 <= O ? w0 + 4 * stride : null;
                    int k = 0;
                    for (; k + 32 <= K; k += 32)
                    {
                        if (pf is not null)
                        {
                            Sse.Prefetch0(pf + 2 * k);
                            Sse.Prefetch0(pf + stride + 2 * k);
                            Sse.Prefetch0(pf + 2 * stride + 2 * k);
                            Sse.Prefetch0(pf + 3 * stride + 2 * k);
                        }
                        var xe = Vector256.Load(xs + k); var xo = Vector256.Load(xs + k + 8);
                        var ye = Vector256.Load(xs + k + 16); var yo = Vector256.Load(xs + k + 24);
                        Acc(ref a0, Vector256.Load((uint*)(w0 + 2 * k)), xe, xo);
                        Acc(ref a1, Vector256.Load((uint*)(w0 + stride + 2 * k)), xe, xo);
                        Acc(ref a2, Vector256.Load((uint*)(w0 + 2 * stride + 2 * k)), xe, xo);
                        Acc(ref a3, Vector256.Load((uint*)(w0 + 3 * stride + 2 * k)), xe, xo);
                        Acc(ref b0, Vector256.Load((uint*)(w0 + 2 * k + 32)), ye, yo);
                        Acc(ref b1, Vector256.Load((uint*)(w0 + stride + 2 * k + 32)), ye, yo);
                        Acc(ref b2, Vector256.Load((uint*)(w0 + 2 * stride + 2 * k + 32)), ye, yo);
                        Acc(ref b3, Vector256.Load((uint*)(w0 + 3 * stride + 2 * k + 32)), ye, yo);
                    }
                    for (; k < K; k += 16)
                    {
                        var xe = Vector256.Load(xs + k); var xo = Vector256.Load(xs + k + 8);
                        Acc(ref a0, Vector256.Load((uint*)(w0 + 2 * k)), xe, xo);
                        Acc(ref a1, Vector256.Load((uint*)(w0 + stride + 2 * k)), xe, xo);
                        Acc(ref a2, Vector256.Load((uint*)(w0 + 2 * stride + 2 * k)), xe, xo);
                        Acc(ref a3, Vector256.Load((uint*)(w0 + 3 * stride + 2 * k)), xe, xo);
                    }
                    Put4(y, o, Vector256.Sum(a0 + b0), Vector256.Sum(a1 + b1), Vector256.Sum(a2 + b2), Vector256.Sum(a3 + b3));
                }
                for (; o < c1; o++)
                {
                    byte* w0 = W + o * stride;
                    Vector256<float> a0 = default;
                    for (int k = 0; k < K; k += 16)
                        Acc(ref a0, Vector256.Load((uint*)(w0 + 2 * k)), Vector256.Load(xs + k), Vector256.Load(xs + k + 8));
                    y[o] = Vector256.Sum(a0) + (Bias is null ? 0 : Bias[o]);
                }
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void Put4(float* y, int o, float s0, float s1, float s2, float s3)
        {
            float* b = Bias;
            y[o] = s0 + (b is null ? 0 : b[o]);
            y[o + 1] = s1 + (b is null ? 0 : b[o + 1]);
            y[o + 2] = s2 + (b is null ? 0 : b[o + 2]);
            y[o + 3] = s3 + (b is null ? 0 : b[o + 3]);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void Acc(ref Vector512<float> a, Vector512<uint> w, Vector512<float> xe, Vector512<float> xo)
        {
            a = Vector512.FusedMultiplyAdd((w << 16).AsSingle(), xe, a);
            a = Vector512.FusedMultiplyAdd((w & Vector512.Create(0xFFFF0000u)).AsSingle(), xo, a);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void Acc(ref Vector256<float> a, Vector256<uint> w, Vector256<float> xe, Vector256<float> xo)
        {
            a = Vector256.FusedMultiplyAdd((w << 16).AsSingle(), xe, a);
            a = Vector256.FusedMultiplyAdd((w & Vector256.Create(0xFFFF0000u)).AsSingle(), xo, a);
        }
    }

    [ThreadStatic] private static BF16Job? _bf16Job;
    [ThreadStatic] private static float[]? _xsplit;

    private static void RunBF16(CpuThreadPool pool, float* x, int N, int K, Tensor w, float* bias, float* y, Isa isa)
    {
        long need = (long)N * K;
        if (_xsplit is null || _xsplit.Length < need)
            _xsplit = GC.AllocateUninitializedArray<float>(checked((int)Math.Max(need, 8192)), pinned: true);
        fixed (float* xs = _xsplit)
        {
            if (isa == Isa.Avx512) SplitEvenOdd512(x, xs, need);
            else SplitEvenOdd256(x, xs, need);
            var job = _bf16Job ??= new BF16Job();
            job.Xs = xs; job.N = N; job.K = K; job.O = w.Shape[0]; job.W = (byte*)w.Ptr; job.Bias = bias; job.Y = y; job.Isa = isa;
            pool.Run(job, (job.O + RowBlock - 1) / RowBlock);
        }
    }

    /// <summary>Per 32-block: the 16 even-indexed values, then the 16 odd-indexed ones (count a multiple of 32).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SplitEvenOdd512(float* x, float* xs, long count)
    {
        var evenIdx = Vector512.Create(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        var oddIdx = evenIdx + Vector512<int>.One;
        for (long i = 0; i < count; i += 32)
        {
            var lo = Vector512.Load(x + i); var hi = Vector512.Load(x + i + 16);
            Avx512F.PermuteVar16x32x2(lo, evenIdx, hi).Store(xs + i);
            Avx512F.PermuteVar16x32x2(lo, oddIdx, hi).Store(xs + i + 16);
        }
    }

    /// <summary>Per 16-block: the 8 even-indexed values, then the 8 odd-indexed ones (count a multiple of 16).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void SplitEvenOdd256(float* x, float* xs, long count)
    {
        var perm = Vector256.Create(0, 1, 4, 5, 2, 3, 6, 7);
        for (long i = 0; i < count; i += 16)
        {
            var lo = Vector256.Load(x + i); var hi = Vector256.Load(x + i + 8);
            // shufps picks (lo0, lo2, hi0, hi2 | lo4, lo6, hi4, hi6) per 128-bit lane; a cross-lane permute orders it.
            var e = Avx.Shuffle(lo, hi, 0b10_00_10_00);
            var o = Avx.Shuffle(lo, hi, 0b11_01_11_01);
            Avx2.PermuteVar8x32(e, perm).Store(xs + i);
            Avx2.PermuteVar8x32(o, perm).Store(xs + i + 8);
        }
    }
}
