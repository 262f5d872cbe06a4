using System.Diagnostics;
using LlmArch.Compute;
using LlmArch.Compute.Cpu;

namespace LlmArch.Generation;

/// <summary>
/// Micro-benchmarks of the kernels at a model's shapes, on one instruction-set path: decode matrix-vector (GB/s of
/// weights, streamed from memory: enough copies of each matrix are cycled that none is in cache), prefill
/// matrix-matrix (GFLOP/s), and attention (decode GB/s of KV cache at a long context, prefill GFLOP/s). Best and
/// median of several runs. This is the profile behind <c>llmarch bench --kernels</c>.
/// </summary>
public static unsafe class KernelBench
{
    public sealed record Line(string What, double Best, double Median, string Unit);

    public static readonly DType[] DefaultTypes = [DType.BF16, DType.Q8_0, DType.Q4_0, DType.Q4_K, DType.Q6_K, DType.F32];

    public static List<Line> Run(int threads, int hidden = 1024, int inter = 3072, int vocab = 151936, int prefillTokens = 512, int reps = 20,
        Isa? isa = null, IReadOnlyList<DType>? types = null, int context = 4096, int heads = 16, int kvHeads = 8, int headDim = 128)
    {
        var path = isa ?? CpuIsa.Current;
        using var pool = new CpuThreadPool(threads);
        var lines = new List<Line>();
        var rng = new Random(7);
        foreach (var dtype in types ?? DefaultTypes)
        {
            foreach (var (o, k) in new[] { (inter, hidden), (hidden, inter), (vocab, hidden) })
            {
                long bytes = DTypes.StorageBytes(dtype, (long)o * k);
                // Cycle through copies totalling >= 512 MB so every call streams from memory, as a decode step does.
                int copies = (int)Math.Clamp((512L << 20) / Math.Max(1, bytes), 1, 64);
                var ws = new Tensor[copies];
                ws[0] = RandomWeight(dtype, o, k, rng);
                for (int c = 1; c < copies; c++) ws[c] = Copy(ws[0]);
                var x = new float[k]; var y = new float[o];
                for (int i = 0; i < k; i++) x[i] = (float)rng.NextDouble() - 0.5f;
                var times = new List<double>();
                fixed (float* xp = x, yp = y)
                    for (int r = 0; r < reps + 3; r++)
                    {
                        var sw = Stopwatch.StartNew();
                        MatMul.Run(pool, xp, 1, k, ws[r % copies], null, yp, path);
                        if (r >= 3) times.Add(sw.Elapsed.TotalSeconds);
                    }
                times.Sort();
                lines.Add(new($"decode {dtype} [{o}x{k}] x [1x{k}]", bytes / times[0] / 1e9, bytes / times[times.Count / 2] / 1e9, "GB/s"));
            }
            {
                int o = inter, k = hidden, n = prefillTokens;
                var w = RandomWeight(dtype, o, k, rng);
                var x = new float[(long)n * k]; var y = new float[(long)n * o];
                for (int i = 0; i < x.Length; i++) x[i] = (float)rng.NextDouble() - 0.5f;
                var times = new List<double>();
                fixed (float* xp = x, yp = y)
                    for (int r = 0; r < 6; r++)
                    {
                        var sw = Stopwatch.StartNew();
                        MatMul.Run(pool, xp, n, k, w, null, yp, path);
                        if (r >= 1) times.Add(sw.Elapsed.TotalSeconds);
                    }
                times.Sort();
                double flops = 2.0 * n * o * k;
                lines.Add(new($"prefill {dtype} [{o}x{k}] x [{n}x{k}]", flops / times[0] / 1e9, flops / times[times.Count / 2] / 1e9, "GFLOP/s"));
            }
        }
        lines.AddRange(Attention(pool, path, context, prefillTokens, heads, kvHeads, headDim, rng));
        return lines;
    }

    /// <summary>Decode attention over a cache of <paramref name="context"/> positions (GB/s of K and V read) and a
    /// causal prefill of <paramref name="prompt"/> tokens (GFLOP/s of QK^T and PV).</summary>
    private static List<Line> Attention(CpuThreadPool pool, Isa path, int context, int prompt, int Hq, int Hkv, int D, Random rng)
    {
        var lines = new List<Line>();
        var p = new AttentionParams { Scale = 1f / MathF.Sqrt(D) };
        {
            var be = new CpuBackend(pool);
            var cache = new KvCache(be, 1, context + 1, Hkv, D, D);
            Fill(cache.K, rng); Fill(cache.V!, rng);
            var batch = new StepBatch();
            batch.Add(0, context, [0]);
            be.Prepare(batch);
            var q = Rand(new Shape(1, Hq, D), rng); var k = Rand(new Shape(1, Hkv, D), rng); var v = Rand(new Shape(1, Hkv, D), rng);
            var o = Tensor.Zeros(DType.F32, new Shape(1, Hq, D));
            var times = new List<double>();
            for (int r = 0; r < 13; r++)
            {
                var sw = Stopwatch.StartNew();
                AttentionKernel.Run(pool, q, k, v, o, cache, batch, p, path);
                if (r >= 3) times.Add(sw.Elapsed.TotalSeconds);
            }
            times.Sort();
            double bytes = 2.0 * context * Hkv * D * 4;
            lines.Add(new($"attention decode at {context} ({Hq}/{Hkv}x{D})", bytes / times[0] / 1e9, bytes / times[times.Count / 2] / 1e9, "GB/s"));
        }
        {
            var be = new CpuBackend(pool);
            var cache = new KvCache(be, 1, prompt, Hkv, D, D);
            var batch = new StepBatch();
            batch.Add(0, 0, new int[prompt]);
            be.Prepare(batch);
            var q = Rand(new Shape(prompt, Hq, D), rng); var k = Rand(new Shape(prompt, Hkv, D), rng); var v = Rand(new Shape(prompt, Hkv, D), rng);
            var o = Tensor.Zeros(DType.F32, new Shape(prompt, Hq, D));
            var times = new List<double>();
            for (int r = 0; r < 6; r++)
            {
                var sw = Stopwatch.StartNew();
                AttentionKernel.Run(pool, q, k, v, o, cache, batch, p, path);
                if (r >= 1) times.Add(sw.Elapsed.TotalSeconds);
            }
            times.Sort();
            double flops = 2.0 * Hq * 2 * D * (prompt * (prompt + 1) / 2.0);
            lines.Add(new($"attention prefill {prompt} ({Hq}/{Hkv}x{D})", flops / times[0] / 1e9, flops / times[times.Count / 2] / 1e9, "GFLOP/s"));
        }
        return lines;
    }

    private static Tensor Rand(Shape s, Random rng) { var t = Tensor.Zeros(DType.F32, s); Fill(t, rng); return t; }

    private static void Fill(Tensor t, Random rng)
    {
        var f = t.AsFloats();
        for (int i = 0; i < f.Length; i++) f[i] = (float)rng.NextDouble() - 0.5f;
    }

    private static Tensor Copy(Tensor t)
    {
        var c = Tensor.Zeros(t.DType, t.Shape);
        t.AsBytes().CopyTo(c.AsBytes());
        return c;
    }

    /// <summary>A random [o, k] weight in <paramref name="dtype"/> (block types quantized from F32 values).</summary>
    public static Tensor RandomWeight(DType dtype, int o, int k, Random rng)
    {
        var f = Tensor.Zeros(DType.F32, new Shape(o, k));
        var s = f.AsFloats();
        for (int i = 0; i < s.Length; i++) s[i] = ((float)rng.NextDouble() - 0.5f) * 0.04f;
        if (dtype == DType.F32) return f;
        if (DTypes.IsGgmlBlock(dtype)) return WeightQuantizer.Quantize(f, dtype);
        var b = Tensor.Zeros(dtype, new Shape(o, k));
        if (dtype == DType.F16) { var hs = b.AsSpan<Half>(); for (int i = 0; i < s.Length; i++) hs[i] = (Half)s[i]; return b; }
        var bs = b.AsSpan<ushort>();
        for (int i = 0; i < s.Length; i++) bs[i] = Compute.Cpu.Convert.F32ToBF16(s[i]);
        return b;
    }
}
