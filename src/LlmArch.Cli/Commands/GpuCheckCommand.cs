using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using LlmArch.Compute;
using LlmArch.Compute.Cuda;
using LlmArch.Generation;
using LlmArch.Models;

namespace LlmArch.Cli.Commands;

/// <summary>
/// <c>llmarch gpu-check [--device cuda:N] [--op NAME] [--models DIR...] [--json]</c>: every op of the CUDA backend against
/// the scalar reference (odd sizes, every dtype and layout), then for each model directory given: greedy decoding with
/// CUDA graphs against the same decoding without them (bit for bit), with and without the fused kernels, and against
/// the CPU backend.
/// </summary>
public sealed class GpuCheckCommand : Verb
{
    public override string Name => "gpu-check";
    public override string Description => "CUDA backend conformance: every op against the scalar reference, then per model directory: graph replay vs eager (bit for bit), fused vs plain kernels, CUDA vs CPU logits and greedy tokens; exit 1 when a check fails.";

    private readonly Option<string?> _device = Opt.Text("--device", "the GPU: cuda (default) or cuda:N", "DEVICE");
    private readonly Option<string?> _op = Opt.Text("--op", "only this op group (unary, binary, matmul, attention, ...); 'none' runs no op checks", "NAME");
    private readonly Option<string?> _models = Opt.Text("--models", "model directories for the model-level checks, comma-separated", "dir,dir");
    private readonly Option<int> _steps = Opt.Int("--steps", "decode steps of the model-level checks", 12, min: 1, max: 1000);
    private readonly Option<bool> _json = Opt.Flag("--json", "also print one JSON document with every result");

    public override int Execute(Invocation inv)
    {
        string device = inv.Get(_device) ?? "cuda";
        string? op = inv.Get(_op), models = inv.Get(_models);
        bool json = inv.Get(_json);
        int steps = inv.Get(_steps);
        var stdout = inv.Out;
        int index = device == "cuda" ? 0 : device.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(device.AsSpan(5), out int i) && i >= 0 ? i
            : throw new LlmArchInputException($"--device '{device}': expected cuda or cuda:N");
        var ci = CultureInfo.InvariantCulture;
        var gpu = CudaBackend.Create(index, CudaOptions.FromEnvironment() with { Graphs = false });
        stdout.WriteLine($"device {gpu.Name}, driver {Native.CudaDriver.Version()}, cuBLASLt {(Native.CublasLt.TryLoad() ? Native.CublasLt.LoadedFrom : Native.CublasLt.LoadError)}");
        var results = CudaOpCheck.RunOn(gpu, op);
        foreach (var g in results.GroupBy(r => r.Op))
        {
            int pass = g.Count(r => r.Passed);
            stdout.WriteLine(string.Create(ci, $"{(pass == g.Count() ? "PASS" : "FAIL")} {g.Key,-14} {pass}/{g.Count()} cases, worst error {g.Where(r => !double.IsNaN(r.MaxError)).Select(r => r.MaxError).DefaultIfEmpty(0).Max():G3} of tolerance"));
            foreach (var r in g.Where(r => !r.Passed)) stdout.WriteLine(string.Create(ci, $"     {r.Case}: error {r.MaxError:G3}{(r.Error is null ? "" : " - " + r.Error)}"));
        }
        bool ok = results.All(r => r.Passed);
        var modelResults = new List<Dictionary<string, object?>>();
        foreach (var dir in (models ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var m = CheckModel(dir, index, steps);
            modelResults.Add(m);
            ok &= (bool)m["pass"]!;
            stdout.WriteLine(string.Create(ci, $"{((bool)m["pass"]! ? "PASS" : "FAIL")} model {m["name"]}: graph replays {m.GetValueOrDefault("replays")}, graph vs eager bitwise {m.GetValueOrDefault("graph_bitwise")}, fused vs plain {m.GetValueOrDefault("fused_vs_plain"):G3}, cuda vs cpu {m.GetValueOrDefault("cuda_vs_cpu"):G3}, tokens equal {m.GetValueOrDefault("tokens_equal")}{(m.TryGetValue("error", out var e) ? " - " + e : "")}"));
        }
        if (json)
            stdout.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object?>
            {
                ["ops"] = results.Select(r => new Dictionary<string, object?> { ["op"] = r.Op, ["case"] = r.Case, ["max_error"] = double.IsFinite(r.MaxError) ? r.MaxError : null, ["passed"] = r.Passed, ["error"] = r.Error }),
                ["models"] = modelResults,
            }));
        stdout.WriteLine(ok ? "all checks passed" : "some checks FAILED");
        return ok ? 0 : 1;
    }

    /// <summary>Greedy decoding of one model's fixture prompt, logits of every step kept, on several configurations.</summary>
    private static Dictionary<string, object?> CheckModel(string dir, int index, int steps)
    {
        string name = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir)));
        var r = new Dictionary<string, object?> { ["name"] = name };
        try
        {
            int[] prompt = FixturePrompt(dir);
            var graphs = Decode(dir, CudaBackend.Create(index, CudaOptions.FromEnvironment() with { Graphs = true }), prompt, steps, out long replays, out bool graphable);
            var eager = Decode(dir, CudaBackend.Create(index, CudaOptions.FromEnvironment() with { Graphs = false }), prompt, steps, out _, out _);
            var plain = Decode(dir, CudaBackend.Create(index, CudaOptions.FromEnvironment() with { Graphs = false, Fuse = false }), prompt, steps, out _, out _);
            var cpu = Decode(dir, null, prompt, steps, out _, out _);
            bool bitwise = graphs.Logits.Zip(eager.Logits).All(p => p.First.AsSpan().SequenceEqual(p.Second));
            double fused = MaxDiff(eager.Logits, plain.Logits), vsCpu = MaxDiff(eager.Logits, cpu.Logits);
            bool tokens = graphs.Tokens.SequenceEqual(cpu.Tokens) && plain.Tokens.SequenceEqual(cpu.Tokens);
            // models that decide on the host from positions opt out of graphs: no replays expected
            r["replays"] = graphable ? replays : "off (model opts out)"; r["graph_bitwise"] = bitwise; r["fused_vs_plain"] = fused; r["cuda_vs_cpu"] = vsCpu; r["tokens_equal"] = tokens;
            r["pass"] = bitwise && tokens && fused <= 1e-3 && vsCpu <= 1e-3 && (replays > 0 || !graphable);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            r["pass"] = false; r["error"] = $"{e.GetType().Name}: {e.Message}";
        }
        return r;
    }

    private static int[] FixturePrompt(string dir)
    {
        string path = Path.Combine(dir, "expected.safetensors");
        if (!File.Exists(path)) return [1, 2, 3, 4, 5, 6, 7, 8];
        using var f = new Checkpoints.SafeTensorsFile(path);
        var ids = f.Get("input_ids");
        return ids.ToFloatArray().Take(ids.Shape[1]).Select(x => (int)x).ToArray();
    }

    private static double MaxDiff(List<float[]> a, List<float[]> b)
    {
        double m = 0;
        for (int s = 0; s < Math.Min(a.Count, b.Count); s++)
            for (int i = 0; i < a[s].Length; i++) m = Math.Max(m, Math.Abs(a[s][i] - b[s][i]));
        return m;
    }

    private static (List<float[]> Logits, List<int> Tokens) Decode(string dir, IBackend? backend, int[] prompt, int steps, out long replays, out bool graphable)
    {
        var model = ModelLoader.Load(dir, backend);
        graphable = model.UsesStepGraphs;
        var cache = model.CreateCache(1, prompt.Length + steps + 1);
        var logits = new List<float[]>();
        var tokens = new List<int>();
        var l = model.Forward(prompt, 1, cache, lastOnly: true);
        for (int s = 0; s <= steps; s++)
        {
            var row = new float[model.VocabSize];
            model.Backend.Download(l, row);
            logits.Add(row);
            int t = Sampler.ArgMax(row);
            tokens.Add(t);
            if (s == steps) break;
            l = model.Forward([t], 1, cache, lastOnly: true);
        }
        replays = model.Backend is CudaBackend cb ? cb.GraphStats.Replays : 0;
        return (logits, tokens);
    }
}
