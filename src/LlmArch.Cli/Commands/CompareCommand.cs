using System.CommandLine;
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
public sealed class CompareCommand : Verb
{
    public override string Name => "compare";
    public override string Description => "Compare architectures side by side: parameters, attention and FFN layout, KV cache and FLOPs (no arguments: every implemented preset).";

    /// <summary>Largest --context: beyond it KV-cache byte counts of the largest presets would overflow 64 bits.</summary>
    public const long MaxContext = 1L << 32;

    private readonly Argument<string[]> _models = new("models")
    {
        Description = "presets (compare --list), model directories or config.json files; none = every implemented preset",
        Arity = ArgumentArity.ZeroOrMore,
    };
    private readonly Option<string> _format = Opt.Choice("--format", "output format", "table", "table", "markdown", "json", "csv");
    private readonly Option<long> _context = Opt.Long("--context", "context length the KV cache and FLOPs are computed at", 32768, min: 1, max: MaxContext);
    private readonly Option<KvCacheDType> _kvDtype = Opt.KvDtype();
    private readonly Option<string?> _html = Opt.Text("--html", "also write a self-contained HTML report with charts to this file", "file");
    private readonly Option<bool> _list = Opt.Flag("--list", "list the presets and exit");

    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public override int Execute(Invocation inv)
    {
        string format = inv.Get(_format);
        long context = inv.Get(_context);
        var dtype = inv.Get(_kvDtype);
        string? html = inv.Get(_html);
        var positionals = inv.Get(_models) ?? [];
        if (inv.Get(_list))
        {
            if (positionals.Length > 0) throw new LlmArchInputException($"--list takes no models (got '{positionals[0]}')");
            WriteList(inv.Out, format);
            return 0;
        }
        if (html is not null) CliFiles.CheckOutputFile(html, "--html");

        var models = new List<ModelAnalysis>();
        if (positionals.Length == 0)
        {
            var skipped = new List<string>();
            foreach (var name in Presets.Names)
            {
                if (!IsImplemented(Presets.Load(name))) { skipped.Add(name); continue; }
                models.Add(ModelAnalysis.ForPreset(name));
            }
            if (skipped.Count > 0)
                inv.Note($"note: {skipped.Count} presets skipped (model_type not implemented in this build): {string.Join(", ", skipped)}");
        }
        else
            foreach (var arg in positionals) models.Add(Resolve(arg));

        string text = format switch
        {
            "json" => Json(models, context, dtype),
            "csv" => DataTable(models, context, dtype).RenderCsv(),
            "markdown" => DisplayTable(models, context, dtype).RenderMarkdown() + "\n" + Legend(context, dtype) + "\n",
            _ => DisplayTable(models, context, dtype).RenderText() + Legend(context, dtype) + "\n",
        };
        inv.Out.Write(text);
        if (html is not null)
        {
            try { File.WriteAllText(html, HtmlReport.Render(models, DisplayTable(models, context, dtype), Legend(context, dtype), dtype)); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException or ArgumentException)
            { throw new LlmArchInputException($"--html {html}: cannot write ({e.Message})"); }
            inv.Note($"wrote {html}");
        }
        return 0;
    }

    /// <summary>A model directory, a config.json file, or a preset name.</summary>
    public static ModelAnalysis Resolve(string arg)
    {
        if (Directory.Exists(arg))
        {
            arg = ModelLocator.Resolve(arg);
            CliFiles.CheckReadableDirectory(arg, "model");
            return ModelAnalysis.ForDirectory(arg);
        }
        if (File.Exists(arg))
        {
            if (!arg.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
                throw new LlmArchInputException($"{arg}: expected a model directory, a config.json or a preset name");
            var cfg = ModelConfig.Load(arg);
            string name = Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath(arg))) ?? arg;
            return ModelAnalysis.FromConfig(cfg, name);
        }
        if (Presets.Exists(arg)) return ModelAnalysis.ForPreset(arg);
        if (ModelLocator.LooksLikeRepoId(arg) && !File.Exists(arg)) return ModelAnalysis.ForDirectory(ModelLocator.Resolve(arg));
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
