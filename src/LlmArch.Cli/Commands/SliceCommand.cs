using System.Globalization;
using LlmArch.Checkpoints;
using LlmArch.Models;

namespace LlmArch.Cli.Commands;

/// <summary>
/// <c>llmarch slice --model &lt;gemma3n-dir&gt; --ffn-widths &lt;list|preset&gt; [--skip-layers &lt;list&gt;] --out &lt;dir&gt;</c>:
/// cuts a smaller runnable MatFormer checkpoint out of a Gemma 3n model.
/// </summary>
public sealed class SliceCommand : ICommand
{
    public string Name => "slice";
    public string Summary => "MatFormer-slice a Gemma 3n model: slice --model <dir> --ffn-widths <list|full|half|quarter|e2b> [--skip-layers <list>] --out <dir>";
    public IReadOnlySet<string> BooleanFlags { get; } = new HashSet<string>();

    public int Run(CliArgs args, TextWriter stdout, TextWriter stderr)
    {
        string model = args.Require("model"), widths = args.Require("ffn-widths"), outDir = args.Require("out");
        string? skipArg = args.Get("skip-layers");
        args.RejectUnknown();
        var skip = new List<int>();
        foreach (var part in (skipArg ?? "").Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            if (!int.TryParse(part, NumberStyles.Integer, CultureInfo.InvariantCulture, out int i))
                throw new LlmArchInputException($"--skip-layers: '{part}' is not a layer index");
            skip.Add(i);
        }
        var r = MatFormer.Slice(model, widths, skip, outDir);
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"wrote {r.OutDir}: {r.Layers} layers, ffn widths [{string.Join(",", r.Widths)}], kv-shared layers {r.KvSharedLayers}, {r.Parameters:N0} parameters (from {r.SourceParameters:N0})"));
        return 0;
    }
}
