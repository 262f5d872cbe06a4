using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LlmArch.Compute.Cpu;

/// <summary>
/// y[n, o] = sum_k x[n, k] * W[k, o] + bias[o] for weights whose logical shape is <c>[O, K]</c> but that are stored
/// <c>[K, O]</c> (<see cref="Tensor.ColumnMajor"/>): the fused expert stacks of Llama 4 and bf16 gpt-oss, read in
/// place from the memory map instead of being transposed into a copy. Each thread owns a block of output columns
/// and streams the weight rows k = 0..K-1 over it, four tokens at a time so every weight load is used four times.
/// </summary>
public static unsafe class MatMulColumnMajor
{
    /// <summary>Scalar reference with the same contract as <see cref="Run"/>.</summary>
    public static void Reference(float* x, int N, int K, Tensor w, float* bias, float* y)
    {
        int O = w.Shape[0];
        var row = new float[O];
        var acc = new double[(long)N * O];
        for (int k = 0; k < K; k++)
        {
            Convert.ToF32Raw(w, (long)k * O, row);
            for (int n = 0; n < N; n++)
            {
                double xv = x[(long)n * K + k];
                for (int o = 0; o < O; o++) acc[(long)n * O + o] += xv * row[o];
            }
        }
        for (int n = 0; n < N; n++)
            for (int o = 0; o < O; o++) y[(long)n * O + o] = (float)acc[(long)n * O + o] + (bias is null ? 0f : bias[o]);
    }

    private const int ColBlock = 64;

    private sealed class Job : IParallelWork
    {
        public float* X, Bias, Y; public int N, K, O; public Tensor W = null!; public Isa Isa;
        [ThreadStatic] private static float[]? _rowBuf;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int start, int end)
        {
            int c0 = start * ColBlock, c1 = Math.Min(O, end * ColBlock);
            bool bf16 = W.DType == DType.BF16, f32 = W.DType == DType.F32;
            if (Isa == Isa.Scalar || !(bf16 || f32) || (c1 - c0) % (Isa == Isa.Avx512 ? 16 : 8) != 0)
            {
                Generic(c0, c1);
                return;
            }
            if (Isa != Isa.Avx512) { Run256(c0, c1, bf16); return; }
            for (int n = 0; n < N; n += 4)
            {
                int nn = Math.Min(4, N - n);
                for (int c = c0; c < c1; c += 16)
                {
                    Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
                    for (int k = 0; k < K; k++)
                    {
                        var w = bf16
                            ? (Vector512.WidenLower(Vector256.Load((ushort*)W.Ptr + (long)k * O + c).ToVector512Unsafe()) << 16).AsSingle()
                            : Vector512.Load((float*)W.Ptr + (long)k * O + c);
                        float* xk = X + (long)n * K + k;
                        a0 = Vector512.FusedMultiplyAdd(w, Vector512.Create(xk[0]), a0);
                        if (nn > 1) a1 = Vector512.FusedMultiplyAdd(w, Vector512.Create(xk[K]), a1);
                        if (nn > 2) a2 = Vector512.FusedMultiplyAdd(w, Vector512.Create(xk[2 * K]), a2);
                        if (nn > 3) a3 = Vector512.FusedMultiplyAdd(w, Vector512.Create(xk[3 * K]), a3);
                    }
                    var b = Bias is null ? Vector512<float>.Zero : Vector512.Load(Bias + c);
                    (a0 + b).Store(Y + (long)n * O + c);
                    if (nn > 1) (a1 + b).Store(Y + (long)(n + 1) * O + c);
                    if (nn > 2) (a2 + b).Store(Y + (long)(n + 2) * O + c);
                    if (nn > 3) (a3 + b).Store(Y + (long)(n + 3) * O + c);
                }
            }
        }

        /// <summary>The AVX2 twin of the 512-bit loop: 8 columns per vector, four tokens per weight load.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Run256(int c0, int c1, bool bf16)
        {
            for (int n = 0; n < N; n += 4)
            {
                int nn = Math.Min(4, N - n);
                for (int c = c0; c < c1; c += 8)
                {
                    Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
                    for (int k = 0; k < K; k++)
                    {
                        var w = bf16
                            ? (Vector256.WidenLower(Vector128.Load((ushort*)W.Ptr + (long)k * O + c).ToVector256Unsafe()) << 16).AsSingle()
                            : Vector256.Load((float*)W.Ptr + (long)k * O + c);
                        float* xk = X + (long)n * K + k;
                        a0 = Vector256.FusedMultiplyAdd(w, Vector256.Create(xk[0]), a0);
                        if (nn > 1) a1 = Vector256.FusedMultiplyAdd(w, Vector256.Create(xk[K]), a1);
                        if (nn > 2) a2 = Vector256.FusedMultiplyAdd(w, Vector256.Create(xk[2 * K]), a2);
                        if (nn > 3) a3 = Vector256.FusedMultiplyAdd(w, Vector256.Create(xk[3 * K]), a3);
                    }
                    var b = Bias is null ? Vector256<float>.Zero : Vector256.Load(Bias + c);
                    (a0 + b).Store(Y + (long)n * O + c);
                    if (nn > 1) (a1 + b).Store(Y + (long)(n + 1) * O + c);
                    if (nn > 2) (a2 + b).Store(Y + (long)(n + 2) * O + c);
                    if (nn > 3) (a3 + b).Store(Y + (long)(n + 3) * O + c);
                }
            }
        }

        /// <summary>Any plain dtype, any width: weight rows converted to F32 one at a time.</summary>
        private void Generic(int c0, int c1)
        {
            int w = c1 - c0;
            var buf = _rowBuf is { } rb && rb.Length >= w ? rb : (_rowBuf = new float[Math.Max(w, ColBlock)]);
            for (int n = 0; n < N; n++)
                for (int o = c0; o < c1; o++) Y[(long)n * O + o] = Bias is null ? 0f : Bias[o];
            fixed (float* row = buf)
                for (int k = 0; k < K; k++)
                {
                    Convert.ToF32Raw(W, (long)k * O + c0, new Span<float>(row, w));
                    for (int n = 0; n < N; n++)
                    {
                        float xv = X[(long)n * K + k];
                        float* yr = Y + (long)n * O + c0;
                        for (int o = 0; o < w; o++) yr[o] += xv * row[o];
                    }
                }
        }
    }

    [ThreadStatic] private static Job? _job;

    public static void Run(CpuThreadPool pool, float* x, int N, int K, Tensor w, float* bias, float* y) =>
        Run(pool, x, N, K, w, bias, y, CpuIsa.Current);

    public static void Run(CpuThreadPool pool, float* x, int N, int K, Tensor w, float* bias, float* y, Isa isa)
    {
        int O = w.Shape[0];
        if (N == 0 || O == 0) return;
        var job = _job ??= new Job();
        job.X = x; job.N = N; job.K = K; job.O = O; job.W = w; job.Bias = bias; job.Y = y; job.Isa = isa;
        pool.Run(job, (O + ColBlock - 1) / ColBlock);
        job.W = null!;
    }
}
