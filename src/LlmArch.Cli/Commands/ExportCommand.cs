using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using LlmArch.Analysis;
using LlmArch.Checkpoints;
using LlmArch.Cli.Output;
using LlmArch.Compute;

namespace LlmArch.Cli.Commands;

/// <summary><c>llmarch export --model &lt;dir&gt; --format gguf [--quant bf16|f16|f32|q8_0|q4_0|q4_k] --out &lt;file&gt;</c>.</summary>
public sealed class ExportCommand : Verb
{
    public override string Name => "export";
    public override string Description => "Convert a model directory or a GGUF file to GGUF (for llama.cpp), optionally quantized.";

    private readonly Option<string> _model = Opt.Model();
    private readonly Option<string> _format = Opt.Choice("--format", "output format", "gguf", "gguf");
    private readonly Option<string> _quant = Opt.Choice("--quant", "tensor type written for the weight matrices", "bf16", [.. QuantNames.Export.Keys]);
    private readonly Option<string?> _out = Opt.Text("--out", "the file to write", "file", required: true);

    public override int Execute(Invocation inv)
    {
        string dir = inv.Get(_model), outPath = inv.Get(_out)!;
        var type = QuantNames.Export[inv.Get(_quant)];
        if (!Directory.Exists(dir) && !GgufFile.Exists(dir))
            throw new LlmArchInputException($"{dir}: model directory or GGUF file not found");
        CliFiles.CheckOutputFile(outPath, "--out");
        var sw = Stopwatch.StartNew();
        using (Progress.Start(inv, $"exporting {Path.GetFileName(outPath)}", Progress.FileGrowth(outPath, EstimatedBytes(dir, type))))
            GgufExport.Export(dir, outPath, type);
        inv.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"wrote {outPath} ({new FileInfo(outPath).Length / 1e9:F2} GB, {type}) in {sw.Elapsed.TotalSeconds:F1}s{(File.Exists(dir) || File.Exists(Path.Combine(dir, "tokenizer.json")) ? "" : "; no tokenizer.json: synthetic vocabulary")}"));
        return 0;
    }

    /// <summary>About the size of the output (for the progress bar): every parameter in the output type; 0 when unknown.</summary>
    private static long EstimatedBytes(string dir, DType type)
    {
        try
        {
            long pars = CheckpointSummary.TryRead(dir)?.ParamsByDType.Values.Sum() ?? 0;
            return type switch { DType.Q8_0 => pars / 32 * 34, DType.Q4_0 => pars / 32 * 18, DType.Q4_K => pars / 256 * 144, DType.F32 => pars * 4, _ => pars * 2 };
        }
        catch (LlmArchInputException) { return 0; } // the export itself reports the problem
    }
}
