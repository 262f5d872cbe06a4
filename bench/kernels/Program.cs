// Single-core timings of the CPU kernels, measured in thread CPU time (CLOCK_THREAD_CPUTIME_ID) so that other jobs on a
// shared machine inflate them much less than wall-clock time: best of R runs.
//   dotnet run --project bench/kernels -c Release -- [isa ...] [--only gemm|gemv|attn]
using System.Runtime.InteropServices;
using LlmArch.Compute;
using LlmArch.Compute.Cpu;
using LlmArch.Generation;

if (args.FirstOrDefault() == "check")
{
    // every 2-D tensor of a GGUF file: one token through each path against the quantized scalar reference
    using var f = new LlmArch.Checkpoints.GgufFile(args[1]);
    using var p1 = new CpuThreadPool(1);
    var r1 = new Random(3);
    foreach (var name in f.TensorOrder.Take(int.Parse(args.ElementAtOrDefault(2) ?? "1000")))
    {
        var w = f.Get(name);
        if (w.Shape.Rank != 2) continue;
        int O = w.Shape[0], K = w.Shape[1];
        var x = new float[K]; for (int i = 0; i < K; i++) x[i] = (float)r1.NextDouble() - 0.5f;
        var want = new float[O];
        unsafe { fixed (float* xp = x, wp = want) MatMul.QuantizedReference(xp, 1, K, w, null, wp); }
        foreach (var i in CpuIsa.Testable())
        {
            var got = new float[O];
            unsafe { fixed (float* xp = x, gp = got) MatMul.Run(p1, xp, 1, K, w, null, gp, i); }
            double worst = 0; int at = -1;
            for (int o = 0; o < O; o++) { double d = Math.Abs(got[o] - want[o]) / (Math.Abs(want[o]) + 1e-3); if (d > worst) { worst = d; at = o; } }
            if (worst > 1e-3) Console.WriteLine($"{name} {w.DType} [{O}x{K}] {CpuIsa.Name(i)}: worst rel diff {worst:E2} at row {at} ({got[at]} vs {want[at]})");
        }
    }
    Console.WriteLine("checked");
    return;
}
var isas = args.TakeWhile(a => !a.StartsWith("--")).Select(a => Enum.Parse<Isa>(a, true)).DefaultIfEmpty(CpuIsa.Current).ToList();
string only = args.SkipWhile(a => a != "--only").Skip(1).FirstOrDefault() ?? "all";
using var pool = new CpuThreadPool(1);
var rng = new Random(1);
foreach (var isa in isas)
{
    Console.WriteLine($"== {CpuIsa.Name(isa)} (1 thread, thread CPU time, best of runs)");
    if (only is "all" or "gemm")
        foreach (var dt in new[] { DType.BF16, DType.F32, DType.Q8_0, DType.Q4_0, DType.Q4_K, DType.Q6_K })
        {
            int O = 3072, K = 1024, N = 512;
            var w = KernelBench.RandomWeight(dt, O, K, rng);
            var x = new float[(long)N * K]; var y = new float[(long)N * O];
            for (int i = 0; i < x.Length; i++) x[i] = (float)rng.NextDouble() - 0.5f;
            double best = Time(() => { unsafe { fixed (float* xp = x, yp = y) MatMul.Run(pool, xp, N, K, w, null, yp, isa); } }, 4);
            Console.WriteLine($"gemm {dt,-5} [{O}x{K}] x {N}: {2.0 * N * O * K / best / 1e9,7:F1} GFLOP/s");
        }
    if (only is "all" or "gemv")
        foreach (var dt in new[] { DType.BF16, DType.Q8_0, DType.Q4_0, DType.Q4_K, DType.Q6_K, DType.F32 })
        {
            int O = 3072, K = 1024;
            var w0 = KernelBench.RandomWeight(dt, O, K, rng);
            long bytes = DTypes.StorageBytes(dt, (long)O * K);
            int copies = (int)Math.Max(1, (256L << 20) / bytes);
            var ws = Enumerable.Range(0, copies).Select(_ => { var c = Tensor.Zeros(w0.DType, w0.Shape); w0.AsBytes().CopyTo(c.AsBytes()); return c; }).ToArray();
            var x = new float[K]; var y = new float[O];
            for (int i = 0; i < K; i++) x[i] = (float)rng.NextDouble() - 0.5f;
            int k = 0;
            double best = Time(() => { unsafe { fixed (float* xp = x, yp = y) MatMul.Run(pool, xp, 1, K, ws[k++ % copies], null, yp, isa); } }, 30);
            double hot = Time(() => { unsafe { fixed (float* xp = x, yp = y) MatMul.Run(pool, xp, 1, K, ws[0], null, yp, isa); } }, 30);
            Console.WriteLine($"gemv {dt,-5} [{O}x{K}]: cold {bytes / best / 1e9,6:F1} GB/s, in cache {bytes / hot / 1e9,6:F1} GB/s ({O * (double)K / hot / 1e9:F1} Gweights/s)");
        }
    if (only is "crossover")
        foreach (var dt in new[] { DType.BF16, DType.Q8_0, DType.Q4_K, DType.Q4_0 })
        {
            int O = 3072, K = 1024;
            var w = KernelBench.RandomWeight(dt, O, K, rng);
            foreach (int N in new[] { 2, 4, 6, 8, 12, 16, 24, 32 })
            {
                var x = new float[(long)N * K]; var y = new float[(long)N * O];
                for (int i = 0; i < x.Length; i++) x[i] = (float)rng.NextDouble() - 0.5f;
                double t = Time(() => { unsafe { fixed (float* xp = x, yp = y) MatMul.Run(pool, xp, N, K, w, null, yp, isa); } }, 10);
                Console.WriteLine($"{dt,-5} N={N,3}: {t / N * 1e6,8:F1} us/token ({(N >= MatMul.GemmMinTokens(dt) ? "gemm" : "gemv")})");
            }
        }
    if (only is "all" or "acts")
        foreach (int block in new[] { 32, 256 })
        {
            int K = 1024;
            var x = new float[K]; for (int i = 0; i < K; i++) x[i] = (float)rng.NextDouble() - 0.5f;
            var qa = new QuantizedActivations();
            double best = Time(() => { unsafe { fixed (float* xp = x) for (int r = 0; r < 100; r++) qa.Quantize(xp, 1, K, block, isa); } }, 20) / 100;
            Console.WriteLine($"quantize activations, {block}-blocks, K={K}: {best * 1e9:F0} ns ({K / best / 1e9:F2} values/ns)");
        }
    if (only is "all" or "attn")
    {
        int Hq = 16, Hkv = 8, D = 128;
        var p = new AttentionParams { Scale = 1f / MathF.Sqrt(D) };
        foreach (int ctx in new[] { 512, 4096 })
        {
            var be = new CpuBackend(pool);
            var cache = new KvCache(be, 1, ctx + 1, Hkv, D, D);
            Fill(cache.K); Fill(cache.V!);
            var batch = new StepBatch(); batch.Add(0, ctx, [0]); be.Prepare(batch);
            var q = Rand(new Shape(1, Hq, D)); var kk = Rand(new Shape(1, Hkv, D)); var v = Rand(new Shape(1, Hkv, D));
            var o = Tensor.Zeros(DType.F32, new Shape(1, Hq, D));
            double best = Time(() => AttentionKernel.Run(pool, q, kk, v, o, cache, batch, p, isa), 10);
            Console.WriteLine($"attention decode at {ctx}: {2.0 * ctx * Hkv * D * 4 / best / 1e9,6:F1} GB/s of KV");
        }
        {
            int T = 512;
            var be = new CpuBackend(pool);
            var cache = new KvCache(be, 1, T, Hkv, D, D);
            var batch = new StepBatch(); batch.Add(0, 0, new int[T]); be.Prepare(batch);
            var q = Rand(new Shape(T, Hq, D)); var kk = Rand(new Shape(T, Hkv, D)); var v = Rand(new Shape(T, Hkv, D));
            var o = Tensor.Zeros(DType.F32, new Shape(T, Hq, D));
            double best = Time(() => AttentionKernel.Run(pool, q, kk, v, o, cache, batch, p, isa), 3);
            Console.WriteLine($"attention prefill {T}: {2.0 * Hq * 2 * D * (T * (T + 1) / 2.0) / best / 1e9,6:F1} GFLOP/s");
        }
    }
}

Tensor Rand(Shape s) { var t = Tensor.Zeros(DType.F32, s); Fill(t); return t; }
void Fill(Tensor t) { var f = t.AsFloats(); for (int i = 0; i < f.Length; i++) f[i] = (float)rng.NextDouble() - 0.5f; }

static double Time(Action a, int reps)
{
    // Let tiered compilation reach its optimized tier (and see initialized statics): run a while, pause, run again.
    var sw = System.Diagnostics.Stopwatch.StartNew();
    while (sw.ElapsedMilliseconds < 300) a();
    Thread.Sleep(300);
    for (int i = 0; i < 3; i++) a();
    double best = double.MaxValue;
    for (int r = 0; r < reps; r++)
    {
        double t0 = Cpu.Now();
        a();
        best = Math.Min(best, Cpu.Now() - t0);
    }
    return best;
}

static partial class Cpu
{
    [StructLayout(LayoutKind.Sequential)] private struct Timespec { public long Sec, Nsec; }
    [LibraryImport("libc", EntryPoint = "clock_gettime")] private static partial int ClockGetTime(int clock, out Timespec ts);
    /// <summary>This thread's CPU time in seconds.</summary>
    public static double Now() { ClockGetTime(3, out var t); return t.Sec + t.Nsec * 1e-9; }
}
