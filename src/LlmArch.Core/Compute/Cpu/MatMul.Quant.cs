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
        public delegate*<byte*, sbyte*, float*, short*, int, float> Dot;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int start, int end)
        {
            int r0 = start * RowBlock, r1 = Math.Min(O, end * RowBlock);
            var dot = Dot;
            long rb = RowBytes;
            byte* stop = W + (long)O * rb;
            // Software prefetch a fixed distance ahead of the stream, one line per 64 bytes consumed: the hardware
            // prefetchers stop at the 4 KiB page boundaries of the memory-mapped weights.
            const int Ahead = 2048;
            // Rows in chunks of 16, every token per chunk: a chunk's rows are read from memory once and from L1/L2 for
            // the other tokens (a few sequences decoding together must not stream the weights once per sequence).
            for (int c0 = r0; c0 < r1; c0 += 16)
            {
                int c1 = Math.Min(r1, c0 + 16);
                for (int n = 0; n < N; n++)
                {
                    sbyte* xq = A.RowQ(n); float* xd = A.RowD(n); short* xs = A.RowSums(n);
                    float* y = Y + (long)n * O;
                    for (int o = c0; o < c1; o++)
                    {
                        byte* row = W + o * rb;
                        if (Pf && n == 0 && row + Ahead + rb <= stop)
                            for (long b = 0; b < rb; b += 64) Sse.Prefetch0(row + Ahead + b);
                        y[o] = dot(row, xq, xd, xs, K) + (Bias is null ? 0f : Bias[o]);
                    }
                }
            }
        }
    }

    /// <summary>The dot kernel of a block type on a path, as one uniform function pointer (no per-row dispatch).</summary>
    internal static delegate*<byte*, sbyte*, float*, short*, int, float> QuantDotKernel(DType t, Isa isa) => t switch
    {
        DType.Q8_0 => isa switch { Isa.Avx512 => &Q8.Dot512U, Isa.Avx2Vnni => &Q8.Dot256VnniU, Isa.Avx2 => &Q8.Dot256U, _ => &Q8.DotReferenceU },
        DType.Q4_0 => isa switch { Isa.Avx512 => &Q4_0.Dot512, Isa.Avx2Vnni => &Q4_0.Dot256Vnni, Isa.Avx2 => &Q4_0.Dot256Plain, _ => &Q4_0.DotReference },
        DType.Q4_K => isa switch { Isa.Avx512 => &KQuants.DotQ4K512, Isa.Avx2 or Isa.Avx2Vnni => &KQuants.DotQ4K256, _ => &KQuants.DotQ4KReference },
        DType.Q5_K => isa switch { Isa.Avx512 => &KQuants.DotQ5K512, Isa.Avx2 or Isa.Avx2Vnni => &KQuants.DotQ5K256, _ => &KQuants.DotQ5KReference },
        DType.Q6_K => isa switch { Isa.Avx512 => &KQuants.DotQ6K512, Isa.Avx2 or Isa.Avx2Vnni => &KQuants.DotQ6K256, _ => &KQuants.DotQ6KReference },
        _ => throw new ArgumentException($"{t} has no integer dot kernel"),
    };

    private static readonly bool Pf = Environment.GetEnvironmentVariable("LLMARCH_PF") != "0";
    [ThreadStatic] private static QuantJob? _quantJob;

    private static void RunQuant(CpuThreadPool pool, float* x, int N, int K, Tensor w, float* bias, float* y, Isa isa)
    {
        var acts = QuantizedActivations.ForThread;
        acts.Quantize(x, N, K, DTypes.BlockElements(w.DType) == 32 ? 32 : 256, isa);
        var job = _quantJob ??= new QuantJob();
        job.A = acts; job.W = (byte*)w.Ptr; job.RowBytes = DTypes.StorageBytes(w.DType, K); job.T = w.DType;
        job.Bias = bias; job.Y = y; job.N = N; job.K = K; job.O = w.Shape[0]; job.Isa = isa; job.Dot = QuantDotKernel(w.DType, isa);
        pool.Run(job, (job.O + RowBlock - 1) / RowBlock);
    }
}
