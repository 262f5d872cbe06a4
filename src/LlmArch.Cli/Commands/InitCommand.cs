using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using LlmArch.Analysis;
using LlmArch.Checkpoints;
using LlmArch.Cli.Output;
using LlmArch.Compute;
using LlmArch.Models;

namespace LlmArch.Cli.Commands;

/// <summary><c>llmarch init --preset &lt;name&gt; --random --dtype bf16|f32 [--seed N] --out &lt;dir&gt;</c>.</summary>
public sealed class InitCommand : Verb
{
    public override string Name => "init";
    public override string Description => "Write a random-weight model with a preset's exact shapes (for benchmarks and tests; refuses when the disk is too small unless --force).";

    private readonly Option<string?> _preset = Opt.Text("--preset", "preset name (llmarch compare --list)", "name", required: true);
    private readonly Option<bool> _random = Opt.Flag("--random", "random weights (the only source init writes; required)");
    private readonly Option<string> _dtype = Opt.Choice("--dtype", "weight dtype (also bfloat16, float32, float16)", "bf16", "bf16", "f32", "f16", "bfloat16", "float32", "float16");
    private readonly Option<long> _seed = Opt.Long("--seed", "random seed", 0, min: 0);
    private readonly Option<string?> _out = Opt.Text("--out", "output directory (created)", "dir", required: true);
    private readonly Option<bool> _force = Opt.Flag("--force", "overwrite an existing model.safetensors, and write even when the disk looks too small");

    public override int Execute(Invocation inv)
    {
        string preset = inv.Get(_preset)!, outDir = inv.Get(_out)!;
        long seed = inv.Get(_seed);
        bool force = inv.Get(_force);
        if (!inv.Get(_random)) throw new LlmArchInputException("init needs --random (random weights are the only source it writes)");
        var dtype = inv.Get(_dtype) switch { "f32" or "float32" => DType.F32, "f16" or "float16" => DType.F16, _ => DType.BF16 };
        CliFiles.CheckOutputDirectory(outDir, "--out");
        string st = Path.Combine(outDir, "model.safetensors");
        if (!force && File.Exists(st)) throw new LlmArchInputException($"{outDir}: already holds a model.safetensors (pass --force to overwrite)");
        var cfg = Presets.Load(preset);
        long bytes = ModelLoader.Describe(cfg).Weights.Records.DistinctBy(r => r.Name).Sum(r => r.Count) * DTypes.ElementSize(dtype);
        if (!force && FreeBytes(outDir) is long free && bytes > free - (64L << 20))
            throw new LlmArchInputException(string.Create(CultureInfo.InvariantCulture,
                $"{preset} as {dtype} needs {bytes / 1e9:F2} GB but {outDir} has {free / 1e9:F2} GB free (pass --force to try anyway, or pick a smaller preset or --dtype)"));
        var sw = Stopwatch.StartNew();
        using (Progress.Start(inv, $"writing {preset}", Progress.FileGrowth(st, bytes)))
            RandomCheckpoint.Write(cfg, outDir, dtype, (ulong)seed);
        long written = new FileInfo(st).Length;
        inv.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"wrote {outDir}: {preset} random {dtype} seed {seed}, {written / 1e9:F2} GB in {sw.Elapsed.TotalSeconds:F1}s"));
        return 0;
    }

    /// <summary>Free bytes on the file system that will hold <paramref name="dir"/> (its nearest existing ancestor); null when unknown.</summary>
    public static long? FreeBytes(string dir)
    {
        try
        {
            string? d = Path.GetFullPath(dir);
            while (d is not null && !Directory.Exists(d)) d = Path.GetDirectoryName(d);
            return d is null ? null : new DriveInfo(d).AvailableFreeSpace;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException) { return null; }
    }
}
