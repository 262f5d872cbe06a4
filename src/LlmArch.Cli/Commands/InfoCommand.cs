using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using LlmArch.Analysis;
using LlmArch.Cli.Output;
using LlmArch.Models;

namespace LlmArch.Cli.Commands;

/// <summary>
/// <c>llmarch info --model &lt;dir&gt;</c> (loads the checkpoint: real weights, memory-mapped, so stored dtypes and
/// shapes are the checkpoint's) or <c>info --preset &lt;name&gt;</c> (shapes only): architecture, parameters by
/// group, dtypes, KV cache and FLOPs.
/// </summary>
public sealed class InfoCommand : Verb
{
    public override string Name => "info";
    public override string Description => "Describe one model: architecture, parameters by group, stored dtypes, KV cache and FLOPs. --model loads the checkpoint (memory-mapped); --preset uses shapes only.";

    private readonly Option<string> _model = Opt.Model(required: false);
    private readonly Option<string?> _preset = Opt.Text("--preset", "a preset instead of a checkpoint (llmarch compare --list)", "name");
    private readonly Option<bool> _json = Opt.Flag("--json", "print one JSON object");
    private readonly Option<long> _context = Opt.Long("--context", "context length the KV cache and FLOPs are computed at", 32768, min: 1, max: CompareCommand.MaxContext);
    private readonly Option<KvCacheDType> _kvDtype = Opt.KvDtype();
    private readonly Option<string?> _device = Opt.Text("--device", "also load the model there and report its GPU memory (weights, KV cache at --context, workspace): cuda or cuda:N", "DEVICE");

    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public override int Execute(Invocation inv)
    {
        string? dir = inv.Get(_model), preset = inv.Get(_preset);
        bool json = inv.Get(_json);
        long context = inv.Get(_context);
        var dtype = inv.Get(_kvDtype);
        if ((dir is null) == (preset is null)) throw new LlmArchInputException("info needs exactly one of --model <dir> or --preset <name>");

        ModelAnalysis a;
        if (preset is not null)
        {
            if (!Presets.Exists(preset)) throw Presets.Unknown(preset);
            a = ModelAnalysis.ForPreset(preset);
        }
        else
        {
            using (Output.Progress.Start(inv, $"loading {Path.GetFileName(Path.TrimEndingDirectorySeparator(dir!))}")) a = LoadDirectory(dir!);
        }

        if (json)
        {
            var o = AnalysisFormat.ToJson(a, context, dtype);
            o["param_groups"] = new JsonObject(a.Groups.Select(g => KeyValuePair.Create(g.Name, (JsonNode?)new JsonObject { ["params"] = g.Params, ["active_params"] = g.ActiveParams })));
            o["params_by_dtype"] = new JsonObject(a.ParamsByDType.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value))));
            o["file_bytes"] = a.FileBytes;
            o["layer_kinds"] = new JsonArray(a.LayerKinds().Select(k => (JsonNode)new JsonObject { ["letter"] = k.Letter.ToString(), ["layers"] = k.Count, ["description"] = k.Description }).ToArray());
            inv.Out.WriteLine(o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            return 0;
        }
        Write(inv.Out, a, context, dtype);
        if (inv.Get(_device) is string device && DeviceOption.Create(device, null) is Compute.Cuda.CudaBackend gpu)
        {
            if (dir is null) throw new LlmArchInputException("--device reports the GPU memory of a loaded model: use --model <dir>");
            WriteGpuMemory(inv.Out, gpu, dir, a, context);
        }
        return 0;
    }

    /// <summary>Loads the model on the GPU with a one-sequence cache of the context and runs one step: what it takes there.</summary>
    private static void WriteGpuMemory(TextWriter w, Compute.Cuda.CudaBackend gpu, string dir, ModelAnalysis a, long context)
    {
        var model = ModelLoader.Load(dir, gpu);
        int tokens = (int)Math.Min(context, model.MaxPositions);
        var before = gpu.MemoryUse();
        var cache = model.CreateCache(1, tokens);
        long kv = gpu.MemoryUse().Persistent - before.Persistent;
        model.Forward(new int[Math.Min(8, tokens)], 1, cache, lastOnly: true);
        var m = gpu.MemoryUse();
        w.WriteLine($"GPU memory ({gpu.Name})");
        w.WriteLine($"  {"weights",-18} {AnalysisFormat.Bytes(m.Weights)}" + (a.FileBytes > 0 ? $" (checkpoint files {AnalysisFormat.Bytes(a.FileBytes)})" : ""));
        w.WriteLine($"  {"KV cache + state",-18} {AnalysisFormat.Bytes(kv)} for one sequence of {tokens} tokens (fp32)");
        w.WriteLine($"  {"workspace",-18} {AnalysisFormat.Bytes(m.Scratch)} (scratch of an 8-token step)");
        w.WriteLine($"  {"device",-18} {AnalysisFormat.Bytes(m.Free)} free of {AnalysisFormat.Bytes(m.Total)}");
    }

    /// <summary>Loads the checkpoint (memory-mapped) and analyses the loaded model's weight records.</summary>
    public static ModelAnalysis LoadDirectory(string dir)
    {
        dir = Checkpoints.ModelLocator.Resolve(dir);
        CliFiles.CheckReadableDirectory(dir, "model");
        if (!File.Exists(Path.Combine(dir, "config.json"))) throw new ConfigException($"{dir}: no config.json in this directory");
        var model = ModelLoader.Load(dir);
        try
        {
            var ckpt = CheckpointSummary.TryRead(dir);
            string name = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir)));
            var a = ModelAnalysis.Of(model, name, name, dir);
            return ckpt is null ? a : a with { FileBytes = ckpt.Bytes };
        }
        finally { (model.Weights as IDisposable)?.Dispose(); }
    }

    private static void Write(TextWriter w, ModelAnalysis a, long context, KvCacheDType dtype)
    {
        string P(long n) => AnalysisFormat.Params(n);
        string Pct(long n) => a.TotalParams == 0 ? "" : ((double)n / a.TotalParams * 100).ToString("0.0", Inv) + "%";
        void Row(string k, string v) => w.WriteLine($"  {k,-18} {v}");

        w.WriteLine($"{a.DisplayName}  ({a.Source})");
        w.WriteLine("architecture");
        Row("model_type", a.ModelType + (a.OuterModelType is { } o ? $" (text stack of {o}; other towers not counted)" : ""));
        Row("layers", $"{a.NumLayers}: attention {a.AttentionPattern}, FFN {a.FfnPattern}");
        foreach (var (letter, count, description) in a.LayerKinds()) Row($"  {letter} x{count}", description);
        string heads = $"{a.Heads} query / {a.KvHeads} KV heads, head dim {a.HeadDim}" + (a.ValueDim != a.HeadDim ? $", value dim {a.ValueDim}" : "");
        Row("attention", $"{a.AttentionKind}; {heads}" + (a.KvSharedLayers > 0 ? $"; {a.KvSharedLayers} layers reuse another layer's KV" : ""));
        Row("norms", $"{a.Norm}; QK-norm: {a.QkNorm}");
        Row("positions", a.Positions);
        Row("feed-forward", a.Experts == 0 ? $"dense, width {a.DenseWidth}"
            : $"MoE: {a.Experts} experts, top-{a.ActiveExperts}" + (a.SharedExperts > 0 ? $", {a.SharedExperts} shared" : "") +
              $", expert width {a.ExpertWidth}" + (a.FfnLayers.Contains('D') ? $"; dense layers width {a.DenseWidth}" : ""));
        Row("hidden / vocab", $"{a.Hidden} / {a.Vocab}, {(a.TiedEmbeddings ? "tied" : "untied")} embeddings, max positions {a.MaxPositions}");
        if (a.Notes.Length > 0) Row("notes", a.Notes);

        w.WriteLine("parameters");
        foreach (var g in a.Groups)
            Row(g.Name, $"{P(g.Params),9} {Pct(g.Params),6}" + (g.ActiveParams != g.Params ? $"   active {P(g.ActiveParams)}" : ""));
        Row("total", $"{P(a.TotalParams),9}   ({a.TotalParams.ToString("N0", Inv)})");
        Row("active / token", $"{P(a.ActiveParams),9}   (without embeddings {P(a.ActiveParamsNoEmbedding)}, without embeddings and head {P(a.ActiveParamsNonEmbedding)})");
        Row("stored dtype", a.ParamsByDType.Count > 0 ? string.Join(", ", a.ParamsByDType.Select(kv => $"{kv.Key} {P(kv.Value)}")) : $"{a.StoredDType} (from the config)");
        if (a.FileBytes > 0) Row("files", AnalysisFormat.Bytes(a.FileBytes));

        string d = KvCacheDTypes.Name(dtype), ctx = AnalysisFormat.Context(context);
        w.WriteLine($"KV cache ({d}, one sequence)");
        Row("per token", $"{AnalysisFormat.Bytes(a.KvValuesPerToken * KvCacheDTypes.Bytes(dtype))} ({a.KvValuesPerToken.ToString("N0", Inv)} values, every layer's full cache)");
        if (a.StateValues > 0) Row("constant state", $"{AnalysisFormat.Bytes(a.StateValues * KvCacheDTypes.Bytes(dtype))} ({a.StateValues.ToString("N0", Inv)} values)");
        long with = a.KvCacheBytes(context, dtype), without = a.KvCacheBytes(context, dtype, windows: false);
        Row($"at {ctx}", AnalysisFormat.Bytes(with) + $" ({AnalysisFormat.Bytes(a.KvCacheBytesPerToken(context, dtype))}/token)" +
            (with != without ? $"; without windows {AnalysisFormat.Bytes(without)}" : ""));
        if (context > a.MaxPositions) Row("note", $"{context} tokens is beyond max_position_embeddings {a.MaxPositions}");
        w.WriteLine("compute");
        Row($"FLOPs/token @{ctx}", $"{AnalysisFormat.Gflops(a.FlopsPerToken(context))} GFLOP (forward; 2 x {P(a.ActiveMatmulParams)} active matmul params + attention)");
    }
}
