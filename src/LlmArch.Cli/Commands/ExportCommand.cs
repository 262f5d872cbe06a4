using System.Diagnostics;
using System.Globalization;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Cli.Commands;

/// <summary><c>llmarch export --model &lt;dir&gt; --format gguf [--quant bf16|q8_0|f32|f16] --out &lt;file&gt;</c>.</summary>
public sealed class ExportCommand : ICommand
{
    public string Name => "export";
    public string Summary => "convert a model directory or GGUF file: export --model <dir|file.gguf> --format gguf [--quant bf16|f16|f32|q8_0|q4_0|q4_k] --out <file>";
    public IReadOnlySet<string> BooleanFlags { get; } = new HashSet<string>();

    public int Run(CliArgs args, TextWriter stdout, TextWriter stderr)
    {
        string dir = args.Require("model");
        string format = args.Get("format") ?? "gguf";
        string quant = args.Get("quant") ?? "bf16";
        string outPath = args.Require("out");
        args.RejectUnknown();
        if (format != "gguf") throw new LlmArchInputException($"option --format: '{format}' is not supported (supported: gguf)");
        var type = quant.ToLowerInvariant() switch
        {
            "bf16" => DType.BF16, "f32" => DType.F32, "f16" => DType.F16, "q8_0" or "q8" => DType.Q8_0,
            "q4_0" => DType.Q4_0, "q4_k" or "q4_k_m" or "q4_k_s" => DType.Q4_K,
            _ => throw new LlmArchInputException($"option --quant: '{quant}' is not one of bf16, f16, f32, q8_0, q4_0, q4_k"),
        };
        if (!Directory.Exists(dir) && !(dir.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase) && File.Exists(dir)))
            throw new LlmArchInputException($"{dir}: model directory or GGUF file not found");
        var sw = Stopwatch.StartNew();
        GgufExport.Export(dir, outPath, type);
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"wrote {outPath} ({new FileInfo(outPath).Length / 1e9:F2} GB, {type}) in {sw.Elapsed.TotalSeconds:F1}s{(File.Exists(dir) || File.Exists(Path.Combine(dir, "tokenizer.json")) ? "" : "; no tokenizer.json: synthetic vocabulary")}"));
        return 0;
    }
}
