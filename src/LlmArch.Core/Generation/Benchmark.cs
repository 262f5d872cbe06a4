using System.Diagnostics;
using System.Runtime.Intrinsics;
using LlmArch.Checkpoints;
using LlmArch.Compute;
using LlmArch.Compute.Cpu;
using LlmArch.Models;

namespace LlmArch.Generation;

/// <summary>What <see cref="Benchmark.Run"/> measures; times are best-of and median over the repeats.</summary>
public sealed record BenchResult
{
    public required string Model { get; init; }
    public required string WeightDType { get; init; }
    /// <summary>The kernels' instruction-set path (<see cref="CpuIsa.Current"/>), e.g. avx512 or avx2.</summary>
    public string Isa { get; init; } = CpuIsa.Name(CpuIsa.Current);
    public required int Threads { get; init; }
    public required int PromptTokens { get; init; }
    public required int GenTokens { get; init; }
    public required int Repeats { get; init; }
    public required double LoadSeconds { get; init; }
    public required double PrefillTokensPerSecond { get; init; }
    public required double PrefillTokensPerSecondMedian { get; init; }
    public required double PrefillGflopPerSecond { get; init; }
    public required double DecodeTokensPerSecond { get; init; }
    public required double DecodeTokensPerSecondMedian { get; init; }
    public required double DecodeGBPerSecond { get; init; }
    /// <summary>Bytes of weights read per decoded token (every matmul weight once, one embedding row).</summary>
    public required long WeightBytesPerToken { get; init; }
    /// <summary>Mean bytes of KV cache read per decoded token over the decode positions.</summary>
    public required long KvBytesPerToken { get; init; }
    public required double PrefillFlops { get; init; }
    public required long PeakRssBytes { get; init; }
    /// <summary>Managed bytes allocated per decoded token, all threads (GC.GetTotalAllocatedBytes(precise)).</summary>
    public required double AllocatedBytesPerToken { get; init; }
    /// <summary>Managed bytes allocated per decoded token on the decoding thread.</summary>
    public required double AllocatedBytesPerTokenThread { get; init; }
    public required int[] FirstTokens { get; init; }
    /// <summary>Sequences decoded together (throughputs are aggregate over them).</summary>
    public int Batch { get; init; } = 1;
}

/// <summary>
/// Prefill and decode throughput of a model directory on the CPU backend, measured the way llama.cpp's
/// llama-bench does (a prompt of P random tokens, then G greedy decode steps with the KV cache), plus the bytes
/// each decode step must read, peak resident memory and managed allocations per decoded token.
/// </summary>
public static class Benchmark
{
    /// <param name="device">the backend to run on (a GPU); null: a CPU backend with <paramref name="threads"/> threads.</param>
    /// <param name="batch">sequences decoded together (the same prompt each; throughput is aggregate).</param>
    public static BenchResult Run(string dir, int threads, DType? quant, int promptTokens, int genTokens, int repeats = 3, ulong seed = 1, bool copy = false,
        IBackend? device = null, int batch = 1)
    {
        if (promptTokens < 1) throw new LlmArchInputException($"prompt tokens must be >= 1 (got {promptTokens})");
        if (genTokens < 1) throw new LlmArchInputException($"gen tokens must be >= 1 (got {genTokens})");
        if (threads < 1) throw new LlmArchInputException($"threads must be >= 1 (got {threads})");
        if (repeats < 1) throw new LlmArchInputException($"repeats must be >= 1 (got {repeats})");
        if (batch < 1) throw new LlmArchInputException($"batch must be >= 1 (got {batch})");
        using var pool = device is null ? new CpuThreadPool(threads) : null;
        var backend = device ?? new CpuBackend(pool);
        var sw = Stopwatch.StartNew();
        var model = ModelLoader.Load(dir, backend, new LoadOptions { Quantize = quant, Copy = copy });
        return Run(model, sw.Elapsed.TotalSeconds, promptTokens, genTokens, repeats, seed, batch) with { Model = dir, Threads = device is null ? threads : backend.Threads };
    }

    /// <summary>As <see cref="Run(string, int, DType?, int, int, int, ulong, bool, IBackend?, int)"/> on a model already built (random weights of a preset).</summary>
    public static BenchResult Run(CausalLM model, double loadSeconds, int promptTokens, int genTokens, int repeats = 3, ulong seed = 1, int batch = 1)
    {
        if (promptTokens < 1 || genTokens < 1 || repeats < 1 || batch < 1) throw new LlmArchInputException("prompt tokens, gen tokens, repeats and batch must be >= 1");
        var backend = model.Backend;
        double load = loadSeconds;
        if (promptTokens + genTokens > model.MaxPositions)
            throw new LlmArchInputException($"{promptTokens} + {genTokens} tokens exceed max_position_embeddings {model.MaxPositions}");

        int V = model.VocabSize;
        var rng = new Random((int)seed);
        var prompt = new int[promptTokens];
        for (int i = 0; i < prompt.Length; i++) prompt[i] = rng.Next(Math.Min(V, 32000));
        var row = new float[V];
        var step = new int[batch];
        var cache = model.CreateCache(batch, promptTokens + genTokens);
        // On a GPU the next tokens are picked on the device (only the ids come back).
        using var sampler = backend.Fused<IFusedSampling>()?.CreateSampler(batch, V, DeviceSamplingOptions.Greedy);

        // Warm-up: let the JIT reach its optimized tier on every kernel (short runs, a pause for tier-up).
        for (int w = 0; w < 3; w++)
        {
            for (int s = 0; s < cache.Slots; s++) cache.Clear(s);
            Decode(model, cache, prompt.AsSpan(0, Math.Min(promptTokens, 32)), Math.Min(genTokens, 8), row, step, null, sampler);
            Thread.Sleep(150);
        }

        var prefill = new List<double>(); var decode = new List<double>();
        long allocAll = 0, allocThread = 0;
        int[] first = new int[Math.Min(genTokens, 16)];
        for (int r = 0; r < repeats; r++)
        {
            for (int s = 0; s < cache.Slots; s++) cache.Clear(s);
            var (p, d, aAll, aThread) = Decode(model, cache, prompt, genTokens, row, step, r == 0 ? first : null, sampler);
            prefill.Add(p); decode.Add(d);
            if (r == 0) { allocAll = aAll; allocThread = aThread; }
        }

        var (weightBytes, linearParams) = WeightTraffic(model);
        long kvBytes = KvTraffic(model, promptTokens, genTokens);
        double flops = 2.0 * linearParams * promptTokens + AttentionFlops(model, promptTokens) + 2.0 * model.VocabSize * HiddenOf(model);
        double bestPre = prefill.Min(), bestDec = decode.Min();
        return new BenchResult
        {
            Model = model.Config.SourcePath, WeightDType = WeightDTypes(model), Threads = backend.Threads, PromptTokens = promptTokens, GenTokens = genTokens,
            Repeats = repeats, LoadSeconds = load,
            PrefillTokensPerSecond = batch * promptTokens / bestPre, PrefillTokensPerSecondMedian = batch * promptTokens / Median(prefill),
            PrefillGflopPerSecond = batch * flops / bestPre / 1e9, PrefillFlops = flops,
            DecodeTokensPerSecond = batch * genTokens / bestDec, DecodeTokensPerSecondMedian = batch * genTokens / Median(decode),
            DecodeGBPerSecond = (weightBytes + batch * kvBytes) * (double)genTokens / bestDec / 1e9, Batch = batch,
            WeightBytesPerToken = weightBytes, KvBytesPerToken = kvBytes,
            PeakRssBytes = PeakRss(), AllocatedBytesPerToken = (double)allocAll / genTokens,
            AllocatedBytesPerTokenThread = (double)allocThread / genTokens, FirstTokens = first,
        };
    }

    /// <summary>Prefill then <paramref name="gen"/> greedy decode steps of step.Length sequences: (prefill s, decode s, bytes allocated all threads / this thread during decode).</summary>
    private static (double, double, long, long) Decode(CausalLM model, Blocks.ModelCache cache, ReadOnlySpan<int> prompt, int gen,
        float[] row, int[] step, int[]? record, DeviceSampler? sampler)
    {
        int B = step.Length;
        var ids = B == 1 ? prompt : Repeat(prompt, B);
        var sw = Stopwatch.StartNew();
        var logits = model.Forward(ids, B, cache, lastOnly: true);
        Pick(model, logits, row, step, sampler);
        double pre = sw.Elapsed.TotalSeconds;
        long a0 = GC.GetTotalAllocatedBytes(true), t0 = GC.GetAllocatedBytesForCurrentThread();
        sw.Restart();
        for (int i = 0; i < gen; i++)
        {
            if (record is not null && i < record.Length) record[i] = step[0];
            logits = model.Forward(step, B, cache, lastOnly: true);
            Pick(model, logits, row, step, sampler);
        }
        double dec = sw.Elapsed.TotalSeconds;
        long t1 = GC.GetAllocatedBytesForCurrentThread(), a1 = GC.GetTotalAllocatedBytes(true);
        return (pre, dec, a1 - a0, t1 - t0);
    }

    private static int[] Repeat(ReadOnlySpan<int> prompt, int times)
    {
        var r = new int[prompt.Length * times];
        for (int b = 0; b < times; b++) prompt.CopyTo(r.AsSpan(b * prompt.Length));
        return r;
    }

    /// <summary>The greedy next token of each sequence: on the device when the backend samples there, else from the downloaded rows.</summary>
    private static void Pick(CausalLM model, Compute.Tensor logits, float[] row, int[] step, DeviceSampler? sampler)
    {
        if (sampler is not null) { sampler.Sample(logits, step); return; }
        for (int b = 0; b < step.Length; b++)
        {
            model.Backend.Download(logits, row, (long)b * row.Length);
            step[b] = Sampler.ArgMax(row);
        }
    }

    private static double Median(List<double> v)
    {
        var s = v.OrderBy(x => x).ToList();
        return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
    }

    private static long StorageBytes(WeightRecord r) => r.DType switch
    {
        DType.MXFP4 => r.Count / 2 + r.Count / 32,
        _ => DTypes.StorageBytes(r.DType, r.Count),
    };

    /// <summary>
    /// Bytes of weights one decode step reads, and the parameter count of the matmuls (for FLOPs). Embedding tables
    /// are read one row per token, except the table that doubles as the LM head (tied), which is read whole.
    /// </summary>
    public static (long Bytes, long LinearParams) WeightTraffic(CausalLM model)
    {
        var recs = model.Weights.Records.GroupBy(r => r.Name).Select(g => g.First()).ToList();
        bool untied = recs.Any(r => r.Name == "lm_head.weight");
        long bytes = 0, linear = 0;
        foreach (var r in recs)
        {
            bool head = r.Use.Embedding && !untied && r.Shape.Length == 2 && r.Shape[0] == model.VocabSize;
            if (r.Use.Embedding && !head) { bytes += StorageBytes(r) / Math.Max(1, r.Shape[0]); continue; }
            bytes += StorageBytes(r);
            if (r.Shape.Length == 2 && !head && r.Name != "lm_head.weight") linear += r.Count;
        }
        return (bytes, linear);
    }

    private static int HiddenOf(CausalLM m) => m.Config.HiddenSize ?? m.Config.NEmbd ?? 0;

    /// <summary>KV cache bytes (F32) read per decode step, averaged over positions P .. P+G-1.</summary>
    public static long KvTraffic(CausalLM model, int prompt, int gen)
    {
        double avgPos = prompt + (gen - 1) / 2.0 + 1;
        double perPos = 0;
        foreach (var l in model.Info.Layers)
            perPos += l.KvValuesPerToken * 4.0 * (l.Window > 0 ? Math.Min(avgPos, l.Window) : avgPos) / avgPos;
        return (long)(perPos * avgPos);
    }

    /// <summary>QK^T and AV FLOPs of a causal prefill of T tokens.</summary>
    public static double AttentionFlops(CausalLM model, int T)
    {
        double f = 0;
        foreach (var l in model.Info.Layers)
        {
            double pairs = (double)T * (T + 1) / 2;
            if (l.Window > 0 && l.Window < T) pairs = (double)l.Window * T;
            f += 2.0 * l.Heads * (l.HeadDim + l.ValueDim) * pairs;
        }
        return f;
    }

    private static string WeightDTypes(CausalLM m) =>
        string.Join("+", m.Weights.Records.Where(r => r.Shape.Length == 2).GroupBy(r => r.DType).OrderByDescending(g => g.Sum(r => r.Count)).Select(g => g.Key));

    /// <summary>VmHWM of this process from /proc/self/status (0 where unavailable).</summary>
    public static long PeakRss()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                    return long.Parse(line.AsSpan(6).Trim().ToString().Split(' ')[0]) * 1024;
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return 0;
    }

    /// <summary>
    /// This machine's read bandwidth: every thread of the pool streams its share of a large buffer (summing it with
    /// the widest vectors); best of <paramref name="repeats"/> passes, in bytes per second.
    /// </summary>
    public static unsafe double MemoryBandwidth(int threads, long bytes = 1L << 30, int repeats = 5)
    {
        using var pool = new CpuThreadPool(threads);
        long n = bytes / 64 * 64;
        byte* buf = (byte*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)n, 64);
        try
        {
            new Span<byte>(buf, (int)Math.Min(n, int.MaxValue)).Fill(1);
            if (n > int.MaxValue) new Span<byte>(buf + int.MaxValue, (int)(n - int.MaxValue)).Fill(1);
            var job = new ReadJob { Buf = buf, Bytes = n, Parts = threads * 16 };
            double best = 0;
            for (int r = 0; r < repeats + 1; r++)
            {
                var sw = Stopwatch.StartNew();
                pool.Run(job, job.Parts);
                double s = sw.Elapsed.TotalSeconds;
                if (r > 0) best = Math.Max(best, n / s);
            }
            return best;
        }
        finally { System.Runtime.InteropServices.NativeMemory.AlignedFree(buf); }
    }

    private sealed unsafe class ReadJob : IParallelWork
    {
        public byte* Buf; public long Bytes; public int Parts;
        public float Sink;
        public void Execute(int start, int end)
        {
            long per = Bytes / Parts / 256 * 256;
            for (int p = start; p < end; p++)
            {
                float* f = (float*)(Buf + p * per);
                long count = (p == Parts - 1 ? Bytes - p * per : per) / 4;
                Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
                long i = 0;
                for (; i + 64 <= count; i += 64)
                {
                    a0 += Vector512.LoadAligned(f + i); a1 += Vector512.LoadAligned(f + i + 16);
                    a2 += Vector512.LoadAligned(f + i + 32); a3 += Vector512.LoadAligned(f + i + 48);
                }
                Sink += Vector512.Sum(a0 + a1 + a2 + a3);
            }
        }
    }
}
