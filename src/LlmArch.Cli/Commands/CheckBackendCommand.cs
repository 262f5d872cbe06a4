using System.Globalization;
using System.Text.Json;
using LlmArch.Compute;
using LlmArch.Compute.Conformance;

namespace LlmArch.Cli.Commands;

/// <summary>
/// <c>llmarch check-backend [--device NAME] [--op NAME] [--json]</c>: the op-conformance harness on a backend, one line
/// per op and case with its error against the scalar reference; exit 1 if any case fails, 2 on bad input.
/// </summary>
public sealed class CheckBackendCommand : ICommand
{
    public string Name => "check-backend";
    public string Summary => "every op of a backend against the scalar reference: check-backend [--device cpu|cuda[:N]] [--op NAME] [--json]";
    public IReadOnlySet<string> BooleanFlags { get; } = new HashSet<string> { "json" };

    public int Run(CliArgs args, TextWriter stdout, TextWriter stderr)
    {
        bool json = args.Has("json");
        string? device = args.Get("device");
        string? op = args.Get("op");
        args.RejectUnknown();
        if (args.Positionals.Count > 0) throw new LlmArchInputException($"check-backend takes no positional arguments (got '{args.Positionals[0]}')");
        var backend = Backends.Create(device);
        var results = new List<ConformanceResult>();
        foreach (var r in ConformanceSuite.Run(backend, op))
        {
            results.Add(r);
            if (!json)
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{(r.Passed ? "ok  " : "FAIL")} {r.Op,-14} {r.Case}: error {r.MaxError:G3} (tolerance {r.Tolerance:G2}){(r.Error is null ? "" : " - " + r.Error)}"));
        }
        int failed = results.Count(r => !r.Passed);
        if (json)
            stdout.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object?>
            {
                ["backend"] = backend.Name, ["cases"] = results.Count, ["failed"] = failed,
                ["results"] = results.Select(r => new Dictionary<string, object?>
                {
                    ["op"] = r.Op, ["case"] = r.Case, ["max_error"] = double.IsFinite(r.MaxError) ? r.MaxError : null,
                    ["tolerance"] = r.Tolerance, ["passed"] = r.Passed, ["note"] = r.Error,
                }),
            }, new JsonSerializerOptions { WriteIndented = true }));
        else stdout.WriteLine($"{backend.Name}: {results.Count - failed} of {results.Count} cases passed");
        return failed == 0 ? 0 : 1;
    }
}
