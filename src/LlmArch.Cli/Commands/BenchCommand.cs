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
    private readonly Option<string?> _device = Opt.Text("--device", "where to run: cpu (default), cuda or cuda:N", "DEVICE");
    private readonly Option<string?> _dtype = Opt.Text("--dtype", "GPU compute precision: f32 (exact, default) or bf16 (prefill GEMMs on the tensor cores)", "f32|bf16");
    private readonly Option<int> _sequences = Opt.Int("--sequences", "N copies of the prompt prefilled and decoded together in lockstep (aggregate tokens/s)", 1, min: 1, max: 4096);
    private readonly Option<string?> _preset = Opt.Text("--preset", "a preset's shapes with random weights generated in memory (with --random; no files)", "name");
    private readonly Option<bool> _random = Opt.Flag("--random", "with --preset: random weights");
    private readonly Option<string> _weights = Opt.Choice("--weights", "with --preset: bf16, or fp8 e4m3 linear layers with 128x128 block scales", "bf16", "bf16", "fp8");
    private readonly Option<int?> _layers = Opt.OptionalInt("--layers", "with --preset: keep only the first N layers", min: 1, max: 1000);

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
        var device = DeviceOption.Create(inv.Get(_device), inv.Get(_dtype));
        if (inv.Get(_memory) && device is Compute.Cuda.CudaBackend mgpu)
        {
            long gmb = inv.Given(_memoryMb) ? inv.Get(_memoryMb) : 4096;
            double copyBw = mgpu.MeasureCopyBandwidth(gmb << 20);
            if (json) inv.Out.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object> { ["device"] = mgpu.Name, ["copy_gb_per_s"] = copyBw / 1e9 }));
            else inv.Out.WriteLine(string.Create(inv0, $"{mgpu.Name}: device-to-device copy {copyBw / 1e9:F0} GB/s (bytes read + written, {gmb} MiB buffers, best of 10)"));
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
        string? preset = inv.Get(_preset);
        if (preset is not null && inv.Get(_model) is not null) throw new LlmArchInputException("give --model or --preset, not both");
        string dir = preset is not null ? "" : inv.Get(_model) ?? throw new LlmArchInputException("bench needs --model <dir>, --preset <name> --random, --memory or --kernels");
        var quant = QuantNames.LoadTime[inv.Get(_quant)];
        if (inv.Get(_batch) is int n && preset is null)
        {
            var model = Models.ModelLoader.Load(dir, device, new Models.LoadOptions { Quantize = quant, Copy = inv.Get(_copy) });
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
        int sequences = inv.Get(_sequences);
        if (preset is not null)
        {
            if (!inv.Get(_random)) throw new LlmArchInputException("bench --preset needs --random (weights generated in memory)");
            var model = PresetModel(preset, inv.Get(_weights) == "fp8", inv.Get(_layers), device ?? Compute.Backends.Create("cpu"), out double load);
            using (Progress.Start(inv, $"benchmarking {preset}"))
                r = Benchmark.Run(model, load, inv.Get(_prompt), inv.Get(_gen), inv.Get(_repeat), batch: sequences)
                    with { Model = $"{preset}{(inv.Get(_layers) is int l ? $" ({l} layers)" : "")} random {inv.Get(_weights)}" };
        }
        else
            using (Progress.Start(inv, $"benchmarking {Path.GetFileName(Path.TrimEndingDirectorySeparator(dir))}"))
                r = Benchmark.Run(dir, threads, quant, inv.Get(_prompt), inv.Get(_gen), inv.Get(_repeat), copy: inv.Get(_copy), device: device, batch: sequences);
        var gpu = device as Compute.Cuda.CudaBackend;
        var gpuMem = gpu?.MemoryUse();
        if (json)
        {
            inv.Out.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["model"] = r.Model, ["weights"] = r.WeightDType, ["isa"] = r.Isa, ["threads"] = r.Threads, ["prompt_tokens"] = r.PromptTokens,
                ["gen_tokens"] = r.GenTokens, ["repeats"] = r.Repeats, ["load_s"] = r.LoadSeconds,
                ["prefill_tokens_per_s"] = r.PrefillTokensPerSecond, ["prefill_tokens_per_s_median"] = r.PrefillTokensPerSecondMedian,
                ["prefill_gflop_per_s"] = r.PrefillGflopPerSecond,
                ["decode_tokens_per_s"] = r.DecodeTokensPerSecond, ["decode_tokens_per_s_median"] = r.DecodeTokensPerSecondMedian,
                ["decode_gb_per_s"] = r.DecodeGBPerSecond, ["weight_bytes_per_token"] = r.WeightBytesPerToken,
                ["kv_bytes_per_token"] = r.KvBytesPerToken, ["peak_rss_bytes"] = r.PeakRssBytes,
                ["alloc_bytes_per_token"] = r.AllocatedBytesPerToken, ["alloc_bytes_per_token_thread"] = r.AllocatedBytesPerTokenThread,
                ["sequences"] = r.Batch, ["device"] = device?.Name ?? "cpu",
                ["gpu_weight_bytes"] = gpuMem?.Weights ?? 0, ["gpu_kv_state_bytes"] = gpuMem?.Persistent ?? 0, ["gpu_workspace_bytes"] = gpuMem?.Scratch ?? 0,
            }, new JsonSerializerOptions { WriteIndented = true }));
        }
        else
        {
            inv.Out.WriteLine(string.Create(inv0, $"model {r.Model} ({r.WeightDType}, {r.Isa}), {r.Threads} threads, load {r.LoadSeconds:F2}s, best/median of {r.Repeats}"));
            inv.Out.WriteLine(string.Create(inv0, $"prefill {r.PromptTokens} tokens: {r.PrefillTokensPerSecond:F1} tok/s (median {r.PrefillTokensPerSecondMedian:F1}), {r.PrefillGflopPerSecond:F1} GFLOP/s"));
            inv.Out.WriteLine(string.Create(inv0, $"decode {r.GenTokens} tokens: {r.DecodeTokensPerSecond:F2} tok/s (median {r.DecodeTokensPerSecondMedian:F2}), {r.DecodeGBPerSecond:F1} GB/s ({(r.WeightBytesPerToken + r.KvBytesPerToken) / 1e6:F0} MB/token: weights {r.WeightBytesPerToken / 1e6:F0} + KV {r.KvBytesPerToken / 1e6:F1})"));
            inv.Out.WriteLine(string.Create(inv0, $"peak RSS {r.PeakRssBytes / 1e6:F0} MB; managed allocation per decoded token: {r.AllocatedBytesPerToken:F0} B (decode thread {r.AllocatedBytesPerTokenThread:F0} B)"));
            if (gpuMem is { } g)
                inv.Out.WriteLine(string.Create(inv0, $"{gpu!.Name}: {r.Batch} sequence(s); GPU memory: weights {g.Weights / 1e9:F2} GB, KV/state {g.Persistent / 1e9:F2} GB, workspace {g.Scratch / 1e9:F2} GB; {g.Free / 1e9:F1} GB free of {g.Total / 1e9:F1} GB"));
        }
        if (gpu is { Profiling: true })
            foreach (var line in gpu.ProfileReport()) inv.Err.WriteLine(line);
        return 0;
    }

    /// <summary>A preset's model with weights generated in memory (optionally truncated to its first layers).</summary>
    private static Models.CausalLM PresetModel(string preset, bool fp8, int? layers, Compute.IBackend backend, out double loadSeconds)
    {
        if (!Analysis.Presets.Exists(preset)) throw Analysis.Presets.Unknown(preset);
        var raw = System.Text.Json.Nodes.JsonNode.Parse(Analysis.Presets.Json(preset))!.AsObject();
        if (layers is int n)
        {
            if (raw["num_hidden_layers"] is null) throw new LlmArchInputException($"preset {preset} has no num_hidden_layers to truncate");
            if (n > (int)raw["num_hidden_layers"]!) throw new LlmArchInputException($"--layers {n} exceeds the preset's {raw["num_hidden_layers"]} layers");
            raw["num_hidden_layers"] = n;
            if (raw["layer_types"] is System.Text.Json.Nodes.JsonArray lt) while (lt.Count > n) lt.RemoveAt(lt.Count - 1);
        }
        var cfg = Checkpoints.ModelConfig.Parse(raw.ToJsonString(), $"preset:{preset}");
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var model = Models.ModelLoader.Create(cfg, new RandomWeights($"preset:{preset} (random)", Compute.DType.BF16, fp8, 1), backend);
        loadSeconds = sw.Elapsed.TotalSeconds;
        return model;
    }
}
