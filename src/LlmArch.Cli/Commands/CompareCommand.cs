using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using LlmArch.Analysis;
using LlmArch.Cli.Output;
using LlmArch.Checkpoints;
using LlmArch.Models;

namespace LlmArch.Cli.Commands;

/// <summary>
/// <c>llmarch compare [preset|model-dir|config.json]...</c>: the architecture atlas. Each model is built from
/// shapes only (no weights) and analysed by <see cref="ModelAnalysis"/>; no arguments = every preset whose
/// model_type this build implements.
/// </summary>
public sealed class CompareCommand : ICommand
{
    public string Name => "compare";
    public string Summary => "compare architectures: compare [preset|model-dir]... [--format table|markdown|json|csv] [--context N] [--kv-dtype bf16|fp8|f32] [--html file] [--list]";
    public IReadOnlySet<string> BooleanFlags { get; } = new HashSet<string> { "list" };

    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public int Run(CliArgs args, TextWriter stdout, TextWriter stderr)
    {
        bool list = args.Has("list");
        string format = args.Get("format") ?? "table";
        long context = args.GetLong("context", 32768);
        var dtype = KvCacheDTypes.Parse(args.Get("kv-dtype") ?? "bf16");
        string? html = args.Get("html");
        args.RejectUnknown();
        if (format is not ("table" or "markdown" or "json" or "csv"))
            throw new LlmArchInputException($"--format: '{format}' is not one of table, markdown, json, csv");
        if (context <= 0) throw new LlmArchInputException($"--context: must be positive (got {context})");
        if (list) { WriteList(stdout, format); return 0; }

        var models = new List<ModelAnalysis>();
        if (args.Positionals.Count == 0)
        {
            var skipped = new List<string>();
            foreach (var name in Presets.Names)
            {
                if (!IsImplemented(Presets.Load(name))) { skipped.Add(name); continue; }
                models.Add(ModelAnalysis.ForPreset(name));
            }
            if (skipped.Count > 0)
                stderr.WriteLine($"llmarch compare: note: {skipped.Count} presets skipped (model_type not implemented in this build): {string.Join(", ", skipped)}");
        }
        else
            foreach (var arg in args.Positionals) models.Add(Resolve(arg));

        string text = format switch
        {
            "json" => Json(models, context, dtype),
            "csv" => DataTable(models, context, dtype).RenderCsv(),
            "markdown" => DisplayTable(models, context, dtype).RenderMarkdown() + "\n" + Legend(context, dtype) + "\n",
            _ => DisplayTable(models, context, dtype).RenderText() + Legend(context, dtype) + "\n",
        };
        stdout.Write(text);
        if (html is not null)
        {
            try { File.WriteAllText(html, HtmlReport.Render(models, DisplayTable(models, context, dtype), Legend(context, dtype), dtype)); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException or ArgumentException)
            { throw new LlmArchInputException($"--html {html}: cannot write ({e.Message})"); }
            stderr.WriteLine($"llmarch compare: wrote {html}");
        }
        return 0;
    }

    /// <summary>A model directory, a config.json file, or a preset name.</summary>
    public static ModelAnalysis Resolve(string arg)
    {
        if (Directory.Exists(arg)) return ModelAnalysis.ForDirectory(arg);
        if (File.Exists(arg))
        {
            if (!arg.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
                throw new LlmArchInputException($"{arg}: expected a model directory, a config.json or a preset name");
            var cfg = ModelConfig.Load(arg);
            string name = Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath(arg))) ?? arg;
            return ModelAnalysis.FromConfig(cfg, name);
        }
        if (Presets.Exists(arg)) return ModelAnalysis.ForPreset(arg);
        if (arg.Contains('/') || arg.Contains('\\'))
            throw new LlmArchInputException($"{arg}: no such directory or file (and not a preset; presets: {string.Join(", ", Presets.Names)})");
        throw Presets.Unknown(arg);
    }

    public static bool IsImplemented(ModelConfig cfg)
    {
        try { ModelLoader.Resolve(cfg); return true; }
        catch (ConfigException) { return false; }
    }

    private static void WriteList(TextWriter stdout, string format)
    {
        var t = new TextTable(["name", "display name", "model_type", "implemented", "source"]);
        foreach (var n in Presets.Names)
        {
            var info = Presets.Info(n);
            var cfg = Presets.Load(n);
            t.Add(n, info.DisplayName, cfg.ModelType ?? "?", IsImplemented(cfg) ? "yes" : "no", info.Source);
        }
        if (format == "json")
        {
            var arr = new JsonArray(t.Rows.Select(r => (JsonNode)new JsonObject
            { ["name"] = r[0], ["display_name"] = r[1], ["model_type"] = r[2], ["implemented"] = r[3] == "yes", ["source"] = r[4] }).ToArray());
            stdout.WriteLine(arr.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        }
        else stdout.Write(format switch { "markdown" => t.RenderMarkdown(), "csv" => t.RenderCsv(), _ => t.RenderText() });
    }

    /// <summary>The human table (text, markdown, HTML).</summary>
    public static TextTable DisplayTable(IReadOnlyList<ModelAnalysis> models, long context, KvCacheDType dtype)
    {
        string ctx = AnalysisFormat.Context(context);
        var t = new TextTable(
            ["model", "type", "total", "active", "embed", "layers", "attention layers", "FFN layers", "attention", "heads",
             "experts", $"KV/token@{ctx}", $"KV@{ctx}", $"GFLOP/token@{ctx}"],
            [false, false, true, true, true, true, false, false, false, false, false, true, true, true]);
        foreach (var a in models)
        {
            string beyond = context > a.MaxPositions && a.MaxPositions > 0 ? "*" : "";
            t.Add(a.Name, a.ModelType, AnalysisFormat.Params(a.TotalParams), AnalysisFormat.Params(a.ActiveParams),
                AnalysisFormat.Params(a.EmbeddingParams), a.NumLayers.ToString(Inv), a.AttentionPattern, a.FfnPattern,
                a.AttentionKind, AnalysisFormat.Heads(a), AnalysisFormat.Experts(a),
                AnalysisFormat.Bytes(a.KvCacheBytesPerToken(context, dtype)) + beyond, AnalysisFormat.Bytes(a.KvCacheBytes(context, dtype)) + beyond,
                AnalysisFormat.Gflops(a.FlopsPerToken(context)) + beyond);
        }
        return t;
    }

    public static string Legend(long context, KvCacheDType dtype) =>
        $"attention layers: G full, S sliding window, C chunked, M MLA, X MLA + DSA sparse, A compressed sparse (CSA), H heavily compressed (HCA), L linear attention, R Mamba2, V short conv, - none, lowercase = NoPE; " +
        $"FFN layers: D dense, E mixture of experts, P both, - none; nX = n repeats. heads: query/KV x head dim. " +
        $"experts: routed/active+shared. active counts embeddings and LM head. " +
        $"KV cache: {KvCacheDTypes.Name(dtype)}, one sequence of {context} tokens (windows bounded); GFLOP: forward, token at position {context}; * = beyond the model's max_position_embeddings.";

    /// <summary>Raw numbers (CSV).</summary>
    public static TextTable DataTable(IReadOnlyList<ModelAnalysis> models, long context, KvCacheDType dtype)
    {
        var objs = models.Select(a => AnalysisFormat.ToJson(a, context, dtype)).ToList();
        var first = AnalysisFormat.ToJson(models.Count > 0 ? models[0] : EmptyAnalysis, context, dtype);
        var headers = new List<string>();
        foreach (var (k, v) in first)
        {
            if (v is JsonObject o) headers.AddRange(o.Select(kv => $"{k}_{kv.Key}"));
            else headers.Add(k);
        }
        var t = new TextTable(headers);
        foreach (var obj in objs)
        {
            var cells = new List<string>();
            foreach (var (_, v) in obj)
            {
                if (v is JsonObject o) cells.AddRange(o.Select(kv => Cell(kv.Value)));
                else cells.Add(Cell(v));
            }
            t.Add(cells.ToArray());
        }
        return t;
    }

    private static readonly ModelAnalysis EmptyAnalysis = new();

    private static string Cell(JsonNode? v) => v switch
    {
        null => "",
        JsonValue jv when jv.TryGetValue<string>(out var s) => s,
        _ => v.ToJsonString(),
    };

    private static string Json(IReadOnlyList<ModelAnalysis> models, long context, KvCacheDType dtype) =>
        new JsonArray(models.Select(a => (JsonNode)AnalysisFormat.ToJson(a, context, dtype)).ToArray())
            .ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";
}
