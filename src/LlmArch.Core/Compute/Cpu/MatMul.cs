using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LlmArch.Compute.Cpu;

/// <summary>Reads 16 (or 8) consecutive weights of one row as F32. One implementation per stored dtype.</summary>
internal unsafe interface IRowLoader
{
    static abstract int ElementSize { get; }
    static abstract Vector512<float> Load16(byte* row, int k);
    static abstract Vector256<float> Load8(byte* row, int k);
    static abstract float Load1(byte* row, int k);
}

internal unsafe struct F32Loader : IRowLoader
{
    public static int ElementSize => 4;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Load16(byte* row, int k) => Vector512.Load((float*)row + k);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Load8(byte* row, int k) => Vector256.Load((float*)row + k);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Load1(byte* row, int k) => ((float*)row)[k];
}

internal unsafe struct BF16Loader : IRowLoader
{
    public static int ElementSize => 2;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(byte* row, int k) =>
        (Vector512.WidenLower(Vector256.Load((ushort*)row + k).ToVector512Unsafe()) << 16).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(byte* row, int k) =>
        (Vector256.WidenLower(Vector128.Load((ushort*)row + k).ToVector256Unsafe()) << 16).AsSingle();
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Load1(byte* row, int k) => Convert.BF16ToF32(((ushort*)row)[k]);
}

internal unsafe struct F16Loader : IRowLoader
{
    public static int ElementSize => 2;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(byte* row, int k) => Fp16.ToF32x16(Vector256.Load((ushort*)row + k));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(byte* row, int k) => Fp16.ToF32x8(Vector128.Load((ushort*)row + k));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Load1(byte* row, int k) => Fp16.ToF32(((ushort*)row)[k]);
}

/// <summary>
/// y[n, o] = sum_k x[n, k] * W[o, k] + bias[o]: activations F32 <c>[N, K]</c>, weights <c>[O, K]</c> in their stored
/// dtype. Two regimes:
/// <list type="bullet">
/// <item>Prefill (N &gt;= <see cref="GemmMinTokens"/>): a packed GEMM for every dtype (<c>MatMul.Gemm.cs</c>): weight
/// panels are dequantized to F32 once and reused by every token, activations packed into register-tile order,
/// accumulators in registers (12x32 with AVX-512, 6x16 with AVX2).</item>
/// <item>Decode (few tokens): matrix-vector kernels that stream the weights once near memory bandwidth: BF16 widened in
/// registers, F32/F16, and the llama.cpp block types as integer dots against activations quantized to 8 bits
/// (Q8_0/Q4_0 against 32-blocks, Q4_K/Q5_K/Q6_K against q8_K); FP8/MXFP4 rows dequantized into a per-thread buffer.</item>
/// </list>
/// Rows of W are split across threads. Every path has an explicit <see cref="Isa"/> overload for the tests; the
/// default is <see cref="CpuIsa.Current"/>.
/// </summary>
public static unsafe partial class MatMul
{
    /// <summary>Scalar reference with the same contract as <see cref="Run(CpuThreadPool, float*, int, int, Tensor, float*, float*)"/>:
    /// weights dequantized to F32, activations unquantized, sums in double.</summary>
    public static void Reference(float* x, int N, int K, Tensor w, float* bias, float* y)
    {
        if (w.ColumnMajor) { MatMulColumnMajor.Reference(x, N, K, w, bias, y); return; }
        int O = w.Shape[0];
        var row = new float[K];
        for (int o = 0; o < O; o++)
        {
            Convert.ToF32(w, (long)o * K, row);
            for (int n = 0; n < N; n++)
            {
                double acc = 0;
                float* xr = x + (long)n * K;
                for (int k = 0; k < K; k++) acc += (double)xr[k] * row[k];
                y[(long)n * O + o] = (float)acc + (bias is null ? 0f : bias[o]);
            }
        }
    }

    /// <summary>
    /// Scalar reference of what the quantized decode path computes: for the llama.cpp block types the activations are
    /// quantized to 8 bits and each row's integer block dots are scaled (<see cref="Q8.DotReference"/> and friends);
    /// other dtypes are <see cref="Reference"/>.
    /// </summary>
    public static void QuantizedReference(float* x, int N, int K, Tensor w, float* bias, float* y)
    {
        if (!DTypes.IsGgmlBlock(w.DType) || w.ColumnMajor) { Reference(x, N, K, w, bias, y); return; }
        int O = w.Shape[0];
        var acts = new QuantizedActivations();
        acts.Quantize(x, N, K, DTypes.BlockElements(w.DType) == 32 ? 32 : 256, Isa.Scalar);
        long rowBytes = DTypes.StorageBytes(w.DType, K);
        for (int n = 0; n < N; n++)
            for (int o = 0; o < O; o++)
                y[(long)n * O + o] = QuantDot(w.DType, (byte*)w.Ptr + o * rowBytes, acts, n, K, Isa.Scalar) + (bias is null ? 0f : bias[o]);
    }

    /// <summary>
    /// Token count from which the packed GEMM takes over from the matrix-vector kernels (which read each weight row
    /// once per token from L1, and for block types do integer dots): measured crossovers, see bench/kernels
    /// <c>--only crossover</c>. <c>LLMARCH_GEMM_MIN</c> overrides it (tuning).
    /// </summary>
    public static int GemmMinTokens(DType t) => GemmMinOverride > 0 ? GemmMinOverride : t switch
    {
        DType.Q8_0 or DType.Q4_K or DType.Q5_K or DType.Q6_K => 20, // fast integer dots, costly panel decoding
        _ => 10,
    };

    private static readonly int GemmMinOverride =
        int.TryParse(Environment.GetEnvironmentVariable("LLMARCH_GEMM_MIN"), out int v) && v > 0 ? v : 0;

    private sealed class Job : IParallelWork
    {
        public float* X, Bias, Y; public int N, K, O; public Tensor W = null!; public Isa Isa;
        [ThreadStatic] private static float[]? _rowBuf;

        public void Execute(int start, int end)
        {
            int r0 = start * RowBlock, r1 = Math.Min(O, end * RowBlock);
            byte* wp = (byte*)W.Ptr;
            switch (W.DType)
            {
                case DType.F32: Rows<F32Loader>(wp, r0, r1); break;
                case DType.BF16: Rows<BF16Loader>(wp, r0, r1); break;
                case DType.F16: Rows<F16Loader>(wp, r0, r1); break;
                default: Dequantized(r0, r1); break;
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Dequantized(int r0, int r1)
        {
            var buf = _rowBuf is { } b && b.Length >= K ? b : (_rowBuf = new float[K]);
            fixed (float* rb = buf)
            {
                for (int o = r0; o < r1; o++)
                {
                    Convert.DequantizeRow(W, o, 0, new Span<float>(rb, K));
                    for (int n = 0; n < N; n++)
                        Y[(long)n * O + o] = Dot<F32Loader>((byte*)rb, X + (long)n * K, K, Isa) + (Bias is null ? 0f : Bias[o]);
                }
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Rows<TL>(byte* wp, int r0, int r1) where TL : IRowLoader
        {
            long stride = (long)K * TL.ElementSize;
            // Each weight row once, for every token while it is in L1.
            for (int o = r0; o < r1; o++)
                for (int n = 0; n < N; n++)
                    Y[(long)n * O + o] = Dot<TL>(wp + o * stride, X + (long)n * K, K, Isa) + (Bias is null ? 0f : Bias[o]);
        }
    }

    /// <summary>One dot product of a stored row with an F32 vector on the given path, with a scalar tail.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float Dot<TL>(byte* w, float* x, int K, Isa isa) where TL : IRowLoader
    {
        int k = 0;
        float sum = 0;
        if (isa == Isa.Avx512)
        {
            Vector512<float> a0 = default, a1 = default;
            for (; k + 32 <= K; k += 32)
            {
                a0 = Vector512.FusedMultiplyAdd(TL.Load16(w, k), Vector512.Load(x + k), a0);
                a1 = Vector512.FusedMultiplyAdd(TL.Load16(w, k + 16), Vector512.Load(x + k + 16), a1);
            }
            for (; k + 16 <= K; k += 16) a0 = Vector512.FusedMultiplyAdd(TL.Load16(w, k), Vector512.Load(x + k), a0);
            sum = Vector512.Sum(a0 + a1);
        }
        else if (isa >= Isa.Avx2)
        {
            Vector256<float> a0 = default, a1 = default;
            for (; k + 16 <= K; k += 16)
            {
                a0 = Vector256.FusedMultiplyAdd(TL.Load8(w, k), Vector256.Load(x + k), a0);
                a1 = Vector256.FusedMultiplyAdd(TL.Load8(w, k + 8), Vector256.Load(x + k + 8), a1);
            }
            for (; k + 8 <= K; k += 8) a0 = Vector256.FusedMultiplyAdd(TL.Load8(w, k), Vector256.Load(x + k), a0);
            sum = Vector256.Sum(a0 + a1);
        }
        for (; k < K; k++) sum += TL.Load1(w, k) * x[k];
        return sum;
    }

    /// <summary>One dot on the default path (element-wise kernels and attention use it).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float Dot<TL>(byte* w, float* x, int K) where TL : IRowLoader => Dot<TL>(w, x, K, CpuIsa.Current);

    /// <summary>One row of a llama.cpp block type times row n of quantized activations.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float QuantDot(DType t, byte* row, QuantizedActivations a, int n, int K, Isa isa) => t switch
    {
        DType.Q8_0 => Q8.Dot(row, a.RowQ(n), a.RowD(n), K, isa),
        DType.Q4_0 => Q4_0.Dot(row, a.RowQ(n), a.RowD(n), a.RowSums(n), K, isa),
        _ => KQuants.Dot(t, row, a.RowQ(n), a.RowD(n), a.RowSums(n), K, isa),
    };

    private const int RowBlock = 16;
    [ThreadStatic] private static Job? _job;

    /// <summary>Multithreaded product on <paramref name="pool"/> on the default path (<see cref="CpuIsa.Current"/>).</summary>
    public static void Run(CpuThreadPool pool, float* x, int N, int K, Tensor w, float* bias, float* y) =>
        Run(pool, x, N, K, w, bias, y, CpuIsa.Current);

    /// <summary>Multithreaded product on the given instruction-set path; same contract as <see cref="Reference"/>.</summary>
    public static void Run(CpuThreadPool pool, float* x, int N, int K, Tensor w, float* bias, float* y, Isa isa)
    {
        if (!CpuIsa.Supports(isa)) throw new ArgumentException($"this CPU cannot run the {CpuIsa.Name(isa)} path");
        if (w.ColumnMajor) { MatMulColumnMajor.Run(pool, x, N, K, w, bias, y, isa); return; }
        int O = w.Shape[0];
        if (N == 0 || O == 0) return;
        if (K == 0) { for (int n = 0; n < N; n++) for (int o = 0; o < O; o++) y[(long)n * O + o] = bias is null ? 0 : bias[o]; return; }
        if (DTypes.IsGgmlBlock(w.DType) && K % DTypes.BlockElements(w.DType) != 0)
            throw new LlmArchInputException($"weight '{w.Name}' is {w.DType} with {K} columns, not a multiple of its block of {DTypes.BlockElements(w.DType)}");
        if (isa != Isa.Scalar && N >= GemmMinTokens(w.DType)) { RunGemm(pool, x, N, K, w, bias, y, isa); return; }
        if (DTypes.IsGgmlBlock(w.DType)) { RunQuant(pool, x, N, K, w, bias, y, isa); return; }
        if (isa != Isa.Scalar && w.DType == DType.BF16 && K % (isa == Isa.Avx512 ? 32 : 16) == 0) { RunBF16(pool, x, N, K, w, bias, y, isa); return; }
        var job = _job ??= new Job();
        job.X = x; job.N = N; job.K = K; job.O = O; job.W = w; job.Bias = bias; job.Y = y; job.Isa = isa;
        int blocks = (O + RowBlock - 1) / RowBlock;
        pool.Run(job, blocks);
        job.W = null!;
    }
}
