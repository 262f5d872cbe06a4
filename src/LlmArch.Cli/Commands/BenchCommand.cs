using System.Globalization;
using System.Text.Json;
using LlmArch.Compute;
using LlmArch.Compute.Cpu;
using LlmArch.Generation;

namespace LlmArch.Cli.Commands;

/// <summary><c>llmarch bench --model &lt;dir&gt;</c>: prefill/decode throughput; <c>--memory</c>: this machine's read bandwidth.</summary>
public sealed class BenchCommand : ICommand
{
    public string Name => "bench";
    public string Summary => "throughput: bench --model <dir> [--prompt-tokens 512] [--gen-tokens 128] [--batch 1] [--threads N] [--quant bf16|q8_0] [--repeat 3] [--copy] [--device cpu|cuda[:N]] [--dtype f32|bf16] [--json] | bench --preset <name> --random [--weights bf16|fp8] [--layers N] ... | bench --memory [--device cuda]";
    public IReadOnlySet<string> BooleanFlags { get; } = new HashSet<string> { "json", "memory", "kernels", "copy", "random" };

    public int Run(CliArgs args, TextWriter stdout, TextWriter stderr)
    {
        bool json = args.Has("json"), memory = args.Has("memory");
        var spec = DeviceOption.Read(args);
        int threads = args.GetInt("threads", CpuThreadPool.DefaultThreads());
        if (threads < 1) throw new LlmArchInputException($"option --threads: must be >= 1 (got {threads})");
        var inv = CultureInfo.InvariantCulture;
        if (args.Has("kernels"))
        {
            args.RejectUnknown();
            foreach (var l in KernelBench.Run(threads))
                stdout.WriteLine(string.Create(inv, $"{l.What,-44} best {l.Best,8:F1}  median {l.Median,8:F1} {l.Unit}"));
            return 0;
        }
        if (memory)
        {
            long mb = args.GetLong("memory-mb", spec.Device is null ? 1024 : 4096);
            args.RejectUnknown();
            if (DeviceOption.Create(spec) is Compute.Cuda.CudaBackend gpu)
            {
                double copyBw = gpu.MeasureCopyBandwidth(mb << 20);
                if (json) stdout.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object> { ["device"] = gpu.Name, ["copy_gb_per_s"] = copyBw / 1e9 }));
                else stdout.WriteLine(string.Create(inv, $"{gpu.Name}: device-to-device copy {copyBw / 1e9:F0} GB/s (bytes read + written, {mb} MiB buffers, best of 10)"));
                return 0;
            }
            if (mb < 16) throw new LlmArchInputException($"option --memory-mb: must be >= 16 (got {mb})");
            double bw = Benchmark.MemoryBandwidth(threads, mb << 20);
            if (json) stdout.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object> { ["threads"] = threads, ["read_gb_per_s"] = bw / 1e9 }));
            else stdout.WriteLine(string.Create(inv, $"memory read bandwidth: {bw / 1e9:F1} GB/s ({threads} threads, {mb} MiB buffer, best of 5)"));
            return 0;
        }
        string? preset = args.Get("preset");
        bool random = args.Has("random");
        string weightsName = args.Get("weights") ?? "bf16";
        int layers = args.GetInt("layers", 0);
        string dir = preset is null ? args.Require("model") : args.Get("model") ?? "";
        int prompt = args.GetInt("prompt-tokens", 512), gen = args.GetInt("gen-tokens", 128), repeat = args.GetInt("repeat", 3), batch = args.GetInt("batch", 1);
        string quantName = args.Get("quant") ?? "none";
        bool copy = args.Has("copy");
        args.RejectUnknown();
        DType? quant = quantName.ToLowerInvariant() switch
        {
            "none" or "bf16" or "f32" or "stored" => null,
            "q8_0" or "q8" => DType.Q8_0,
            _ => throw new LlmArchInputException($"option --quant: '{quantName}' is not one of bf16 (as stored), q8_0"),
        };
        var device = DeviceOption.Create(spec);
        BenchResult r;
        if (preset is not null)
        {
            // bench --preset NAME --random: the preset's shapes with weights generated in memory (no files).
            if (!random) throw new LlmArchInputException("bench --preset needs --random (weights generated in memory)");
            if (dir.Length > 0) throw new LlmArchInputException("give --model or --preset, not both");
            if (!Analysis.Presets.Exists(preset)) throw Analysis.Presets.Unknown(preset);
            bool fp8 = weightsName.ToLowerInvariant() switch
            {
                "bf16" => false, "fp8" => true,
                _ => throw new LlmArchInputException($"option --weights: '{weightsName}' is not one of bf16, fp8"),
            };
            var raw = System.Text.Json.Nodes.JsonNode.Parse(Analysis.Presets.Json(preset))!.AsObject();
            if (layers > 0)
            {
                if (raw["num_hidden_layers"] is null) throw new LlmArchInputException($"preset {preset} has no num_hidden_layers to truncate");
                if (layers > (int)raw["num_hidden_layers"]!) throw new LlmArchInputException($"--layers {layers} exceeds the preset's {raw["num_hidden_layers"]} layers");
                raw["num_hidden_layers"] = layers;
                if (raw["layer_types"] is System.Text.Json.Nodes.JsonArray lt) while (lt.Count > layers) lt.RemoveAt(lt.Count - 1);
                if (raw["mlp_only_layers"] is System.Text.Json.Nodes.JsonArray ml) foreach (var x in ml.ToList()) if ((int)x! >= layers) ml.Remove(x);
            }
            var cfg = Checkpoints.ModelConfig.Parse(raw.ToJsonString(), $"preset:{preset}");
            var sw = System.Diagnostics.Stopwatch.StartNew();
            var model = Models.ModelLoader.Create(cfg, new RandomWeights($"preset:{preset} (random)", DType.BF16, fp8, 1), device ?? Backends.Create("cpu"));
            r = Benchmark.Run(model, sw.Elapsed.TotalSeconds, prompt, gen, repeat, batch: batch) with { Model = $"{preset}{(layers > 0 ? $" ({layers} layers)" : "")} random {weightsName}" };
        }
        else r = Benchmark.Run(dir, threads, quant, prompt, gen, repeat, copy: copy, device: device, batch: batch);
        var gpuMem = (device as Compute.Cuda.CudaBackend)?.MemoryUse();
        if (json)
        {
            stdout.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["model"] = r.Model, ["weights"] = r.WeightDType, ["threads"] = r.Threads, ["prompt_tokens"] = r.PromptTokens,
                ["gen_tokens"] = r.GenTokens, ["repeats"] = r.Repeats, ["load_s"] = r.LoadSeconds,
                ["prefill_tokens_per_s"] = r.PrefillTokensPerSecond, ["prefill_tokens_per_s_median"] = r.PrefillTokensPerSecondMedian,
                ["prefill_gflop_per_s"] = r.PrefillGflopPerSecond,
                ["decode_tokens_per_s"] = r.DecodeTokensPerSecond, ["decode_tokens_per_s_median"] = r.DecodeTokensPerSecondMedian,
                ["decode_gb_per_s"] = r.DecodeGBPerSecond, ["weight_bytes_per_token"] = r.WeightBytesPerToken,
                ["kv_bytes_per_token"] = r.KvBytesPerToken, ["peak_rss_bytes"] = r.PeakRssBytes,
                ["alloc_bytes_per_token"] = r.AllocatedBytesPerToken, ["alloc_bytes_per_token_thread"] = r.AllocatedBytesPerTokenThread,
                ["batch"] = r.Batch, ["device"] = device?.Name ?? "cpu",
                ["gpu_weight_bytes"] = gpuMem?.Weights ?? 0, ["gpu_kv_state_bytes"] = gpuMem?.Persistent ?? 0, ["gpu_workspace_bytes"] = gpuMem?.Scratch ?? 0,
            }, new JsonSerializerOptions { WriteIndented = true }));
        }
        else
        {
            stdout.WriteLine(string.Create(inv, $"model {r.Model} ({r.WeightDType}), {r.Threads} threads, load {r.LoadSeconds:F2}s, best/median of {r.Repeats}"));
            stdout.WriteLine(string.Create(inv, $"prefill {r.PromptTokens} tokens: {r.PrefillTokensPerSecond:F1} tok/s (median {r.PrefillTokensPerSecondMedian:F1}), {r.PrefillGflopPerSecond:F1} GFLOP/s"));
            stdout.WriteLine(string.Create(inv, $"decode {r.GenTokens} tokens: {r.DecodeTokensPerSecond:F2} tok/s (median {r.DecodeTokensPerSecondMedian:F2}), {r.DecodeGBPerSecond:F1} GB/s ({(r.WeightBytesPerToken + r.KvBytesPerToken) / 1e6:F0} MB/token: weights {r.WeightBytesPerToken / 1e6:F0} + KV {r.KvBytesPerToken / 1e6:F1})"));
            stdout.WriteLine(string.Create(inv, $"peak RSS {r.PeakRssBytes / 1e6:F0} MB; managed allocation per decoded token: {r.AllocatedBytesPerToken:F0} B (decode thread {r.AllocatedBytesPerTokenThread:F0} B)"));
            if (device is Compute.Cuda.CudaBackend { Profiling: true } prof)
                foreach (var line in prof.ProfileReport()) stderr.WriteLine(line);
            if (gpuMem is { } g)
                stdout.WriteLine(string.Create(inv, $"{device!.Name}: batch {r.Batch}; GPU memory: weights {g.Weights / 1e9:F2} GB, KV/state {g.Persistent / 1e9:F2} GB, workspace {g.Scratch / 1e9:F2} GB; {g.Free / 1e9:F1} GB free of {g.Total / 1e9:F1} GB"));
        }
        return 0;
    }
}
