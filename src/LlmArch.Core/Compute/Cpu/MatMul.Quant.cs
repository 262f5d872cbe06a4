using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;

namespace LlmArch.Compute.Cpu;

public static unsafe partial class MatMul
{
    /// <summary>
    /// llama.cpp block types, few tokens: the activations are quantized to 8 bits once per call (32-blocks for
    /// Q8_0/Q4_0, q8_K for the k-quants), then each output is one row's integer block dots, scaled. Each thread owns a
    /// contiguous range of rows, one sequential stream, prefetched ahead across 4 KiB page boundaries.
    /// </summary>
    private sealed class QuantJob : IParallelWork
    {
        public QuantizedActivations A = null!; public byte* W; public long RowBytes; public DType T;
        public float* Bias, Y; public int N, K, O; public Isa Isa;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int start, int end)
        {
            int r0 = start * RowBlock, r1 = Math.Min(O, end * RowBlock);
            byte* end1 = W + (long)O * RowBytes;
            for (int o = r0; o < r1; o++)
            {
                byte* row = W + o * RowBytes;
                // One line per 64 bytes of this row, two rows ahead (inside the matrix).
                byte* pf = row + 2 * RowBytes;
                if (pf + RowBytes <= end1)
                    for (long b = 0; b < RowBytes; b += 64) Sse.Prefetch0(pf + b);
                float bias = Bias is null ? 0f : Bias[o];
                for (int n = 0; n < N; n++) Y[(long)n * O + o] = QuantDot(T, row, A, n, K, Isa) + bias;
            }
        }
    }

    [ThreadStatic] private static QuantJob? _quantJob;

    private static void RunQuant(CpuThreadPool pool, float* x, int N, int K, Tensor w, float* bias, float* y, Isa isa)
    {
        var acts = QuantizedActivations.ForThread;
        acts.Quantize(x, N, K, DTypes.BlockElements(w.DType) == 32 ? 32 : 256, isa);
        var job = _quantJob ??= new QuantJob();
        job.A = acts; job.W = (byte*)w.Ptr; job.RowBytes = DTypes.StorageBytes(w.DType, K); job.T = w.DType;
        job.Bias = bias; job.Y = y; job.N = N; job.K = K; job.O = w.Shape[0]; job.Isa = isa;
        pool.Run(job, (job.O + RowBlock - 1) / RowBlock);
    }
}
