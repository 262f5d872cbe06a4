using System.CommandLine;
using System.Globalization;
using LlmArch.Checkpoints;
using LlmArch.Models;

namespace LlmArch.Cli.Commands;

/// <summary>
/// <c>llmarch slice --model &lt;gemma3n-dir&gt; --ffn-widths &lt;list|preset&gt; [--skip-layers &lt;list&gt;] --out &lt;dir&gt;</c>:
/// cuts a smaller runnable MatFormer checkpoint out of a Gemma 3n model.
/// </summary>
public sealed class SliceCommand : Verb
{
    public override string Name => "slice";
    public override string Description => "Cut a smaller runnable MatFormer model out of a Gemma 3n checkpoint.";

    private readonly Option<string> _model = Opt.Model();
    private readonly Option<string?> _widths = Opt.Text("--ffn-widths", "per-layer FFN widths (comma list) or full, half, quarter, e2b", "list", required: true);
    private readonly Option<IdList?> _skip = Opt.IdList("--skip-layers", "layer indices to drop, 1,2,3", "a layer index");
    private readonly Option<string?> _out = Opt.Text("--out", "output directory (created)", "dir", required: true);

    public override int Execute(Invocation inv)
    {
        string model = inv.Get(_model), widths = inv.Get(_widths)!, outDir = inv.Get(_out)!;
        CliFiles.CheckOutputDirectory(outDir, "--out");
        var r = MatFormer.Slice(model, widths, inv.Get(_skip)?.Ids ?? [], outDir);
        inv.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"wrote {r.OutDir}: {r.Layers} layers, ffn widths [{string.Join(",", r.Widths)}], kv-shared layers {r.KvSharedLayers}, {r.Parameters:N0} parameters (from {r.SourceParameters:N0})"));
        return 0;
    }
}
