using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using LlmArch.Cli.Output;
using LlmArch.Compute.Cpu;
using LlmArch.Generation;

namespace LlmArch.Cli.Commands;

/// <summary><c>llmarch bench --model &lt;dir&gt;</c>: prefill/decode throughput; <c>--memory</c>: this machine's read bandwidth.</summary>
public sealed class BenchCommand : Verb
{
    public override string Name => "bench";
    public override string Description => "Measure prefill and decode throughput of a model (--model), this machine's memory bandwidth (--memory) or the kernels (--kernels).";

    private readonly Option<string> _model = Opt.Model(required: false);
    private readonly Option<int> _prompt = Opt.Int("--prompt-tokens", "prompt length of the prefill measurement", 512, min: 1, max: 1 << 20);
    private readonly Option<int> _gen = Opt.Int("--gen-tokens", "tokens decoded in the decode measurement", 128, min: 1, max: 1 << 20);
    private readonly Option<int?> _threads = Opt.Threads();
    private readonly Option<string> _quant = Opt.Choice("--quant", "weights as stored, or quantized at load", "bf16", [.. QuantNames.LoadTime.Keys]);
    private readonly Option<int> _repeat = Opt.Int("--repeat", "measurements; best and median are reported", 3, min: 1, max: 1000);
    private readonly Option<bool> _copy = Opt.Flag("--copy", "copy weights out of the memory map into huge-page-backed memory at load");
    private readonly Option<bool> _json = Opt.Flag("--json", "print one JSON object");
    private readonly Option<bool> _memory = Opt.Flag("--memory", "measure memory read bandwidth instead of a model");
    private readonly Option<long> _memoryMb = Opt.Long("--memory-mb", "buffer size of --memory, in MiB", 1024, min: 16, max: 1 << 20);
    private readonly Option<bool> _kernels = Opt.Flag("--kernels", "time the CPU kernels on synthetic shapes");
    private readonly Option<int?> _batch = Opt.OptionalInt("--batch", "continuous batching: N ragged prompts (half to 1.5x --prompt-tokens) decoded together in shared steps, against the same prompts one after another", min: 1, max: 4096);

    public override int Execute(Invocation inv)
    {
        bool json = inv.Get(_json);
        int threads = inv.Get(_threads) ?? CpuThreadPool.DefaultThreads();
        var inv0 = CultureInfo.InvariantCulture;
        if (inv.Get(_kernels))
        {
            using (Progress.Start(inv, "timing kernels"))
                foreach (var l in KernelBench.Run(threads))
                    inv.Out.WriteLine(string.Create(inv0, $"{l.What,-44} best {l.Best,8:F1}  median {l.Median,8:F1} {l.Unit}"));
            return 0;
        }
        if (inv.Get(_memory))
        {
            long mb = inv.Get(_memoryMb);
            double bw;
            using (Progress.Start(inv, "measuring memory bandwidth")) bw = Benchmark.MemoryBandwidth(threads, mb << 20);
            if (json) inv.Out.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object> { ["threads"] = threads, ["read_gb_per_s"] = bw / 1e9 }));
            else inv.Out.WriteLine(string.Create(inv0, $"memory read bandwidth: {bw / 1e9:F1} GB/s ({threads} threads, {mb} MiB buffer, best of 5)"));
            return 0;
        }
        string dir = inv.Get(_model) ?? throw new LlmArchInputException("bench needs --model <dir>, --memory or --kernels");
        var quant = QuantNames.LoadTime[inv.Get(_quant)];
        if (inv.Get(_batch) is int n)
        {
            var model = Models.ModelLoader.Load(dir, null, new Models.LoadOptions { Quantize = quant, Copy = inv.Get(_copy) });
            BatchBenchResult b;
            using (Progress.Start(inv, $"benchmarking a batch of {n}")) b = BatchBench.Run(model, n, inv.Get(_prompt), inv.Get(_gen));
            if (json)
                inv.Out.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
                {
                    ["sequences"] = b.Sequences, ["prompt_lengths"] = b.PromptLengths, ["gen_tokens"] = b.GenTokens,
                    ["batched_decode_tokens_per_s"] = b.BatchedDecodeTokensPerSecond, ["sequential_decode_tokens_per_s"] = b.SequentialDecodeTokensPerSecond,
                    ["speedup"] = b.Speedup, ["batched_wall_s"] = b.BatchedWallSeconds, ["sequential_wall_s"] = b.SequentialWallSeconds,
                }, new JsonSerializerOptions { WriteIndented = true }));
            else
                inv.Out.WriteLine(string.Create(inv0, $"{b.Sequences} ragged prompts ({string.Join("/", b.PromptLengths)} tokens), {b.GenTokens} new tokens each: batched {b.BatchedDecodeTokensPerSecond:F1} tok/s decode ({b.BatchedWallSeconds:F1}s in all), one after another {b.SequentialDecodeTokensPerSecond:F1} tok/s ({b.SequentialWallSeconds:F1}s): {b.Speedup:F2}x"));
            return 0;
        }
        BenchResult r;
        using (Progress.Start(inv, $"benchmarking {Path.GetFileName(Path.TrimEndingDirectorySeparator(dir))}"))
            r = Benchmark.Run(dir, threads, quant, inv.Get(_prompt), inv.Get(_gen), inv.Get(_repeat), copy: inv.Get(_copy));
        if (json)
        {
            inv.Out.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["model"] = r.Model, ["weights"] = r.WeightDType, ["threads"] = r.Threads, ["prompt_tokens"] = r.PromptTokens,
                ["gen_tokens"] = r.GenTokens, ["repeats"] = r.Repeats, ["load_s"] = r.LoadSeconds,
                ["prefill_tokens_per_s"] = r.PrefillTokensPerSecond, ["prefill_tokens_per_s_median"] = r.PrefillTokensPerSecondMedian,
                ["prefill_gflop_per_s"] = r.PrefillGflopPerSecond,
                ["decode_tokens_per_s"] = r.DecodeTokensPerSecond, ["decode_tokens_per_s_median"] = r.DecodeTokensPerSecondMedian,
                ["decode_gb_per_s"] = r.DecodeGBPerSecond, ["weight_bytes_per_token"] = r.WeightBytesPerToken,
                ["kv_bytes_per_token"] = r.KvBytesPerToken, ["peak_rss_bytes"] = r.PeakRssBytes,
                ["alloc_bytes_per_token"] = r.AllocatedBytesPerToken, ["alloc_bytes_per_token_thread"] = r.AllocatedBytesPerTokenThread,
            }, new JsonSerializerOptions { WriteIndented = true }));
        }
        else
        {
            inv.Out.WriteLine(string.Create(inv0, $"model {r.Model} ({r.WeightDType}), {r.Threads} threads, load {r.LoadSeconds:F2}s, best/median of {r.Repeats}"));
            inv.Out.WriteLine(string.Create(inv0, $"prefill {r.PromptTokens} tokens: {r.PrefillTokensPerSecond:F1} tok/s (median {r.PrefillTokensPerSecondMedian:F1}), {r.PrefillGflopPerSecond:F1} GFLOP/s"));
            inv.Out.WriteLine(string.Create(inv0, $"decode {r.GenTokens} tokens: {r.DecodeTokensPerSecond:F2} tok/s (median {r.DecodeTokensPerSecondMedian:F2}), {r.DecodeGBPerSecond:F1} GB/s ({(r.WeightBytesPerToken + r.KvBytesPerToken) / 1e6:F0} MB/token: weights {r.WeightBytesPerToken / 1e6:F0} + KV {r.KvBytesPerToken / 1e6:F1})"));
            inv.Out.WriteLine(string.Create(inv0, $"peak RSS {r.PeakRssBytes / 1e6:F0} MB; managed allocation per decoded token: {r.AllocatedBytesPerToken:F0} B (decode thread {r.AllocatedBytesPerTokenThread:F0} B)"));
        }
        return 0;
    }
}
