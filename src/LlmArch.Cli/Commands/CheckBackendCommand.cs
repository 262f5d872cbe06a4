using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using LlmArch.Compute;
using LlmArch.Compute.Conformance;

namespace LlmArch.Cli.Commands;

/// <summary>
/// <c>llmarch check-backend [--device NAME] [--op NAME] [--json]</c>: the op-conformance harness on a backend, one line
/// per op and case with its error against the scalar reference; exit 1 if any case fails, 2 on bad input.
/// </summary>
public sealed class CheckBackendCommand : Verb
{
    public override string Name => "check-backend";
    public override string Description => "Run every op of a backend against the scalar reference backend (every dtype and layout, odd sizes, NaN/Inf); exit 1 when a case fails.";

    private readonly Option<string?> _device = Opt.Text("--device", "the backend to check: cpu (default), cuda or cuda:N", "DEVICE");
    private readonly Option<string?> _op = Opt.Text("--op", $"only this op ({string.Join(", ", ConformanceSuite.Ops)})", "NAME");
    private readonly Option<bool> _json = Opt.Flag("--json", "print one JSON document with every case");

    public override int Execute(Invocation inv)
    {
        bool json = inv.Get(_json);
        var backend = Backends.Create(inv.Get(_device));
        var results = new List<ConformanceResult>();
        foreach (var r in ConformanceSuite.Run(backend, inv.Get(_op)))
        {
            results.Add(r);
            if (!json)
                inv.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{(r.Passed ? "ok  " : "FAIL")} {r.Op,-14} {r.Case}: error {r.MaxError:G3} (tolerance {r.Tolerance:G2}){(r.Error is null ? "" : " - " + r.Error)}"));
        }
        int failed = results.Count(r => !r.Passed);
        if (json)
            inv.Out.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object?>
            {
                ["backend"] = backend.Name, ["cases"] = results.Count, ["failed"] = failed,
                ["results"] = results.Select(r => new Dictionary<string, object?>
                {
                    ["op"] = r.Op, ["case"] = r.Case, ["max_error"] = double.IsFinite(r.MaxError) ? r.MaxError : null,
                    ["tolerance"] = r.Tolerance, ["passed"] = r.Passed, ["note"] = r.Error,
                }),
            }, new JsonSerializerOptions { WriteIndented = true }));
        else inv.Out.WriteLine($"{backend.Name}: {results.Count - failed} of {results.Count} cases passed");
        return failed == 0 ? 0 : 1;
    }
}
