using System.Globalization;
using System.Text.Json;
using LlmArch.Generation;

namespace LlmArch.Cli.Commands;

/// <summary><c>llmarch verify &lt;fixture-dir&gt;...</c>: each model against its reference logits and greedy tokens.</summary>
public sealed class VerifyCommand : ICommand
{
    public string Name => "verify";
    public string Summary => "check models against reference fixtures: verify <dir>... [--device cpu|cuda[:N]] [--dtype f32|bf16] [--json]";
    public IReadOnlySet<string> BooleanFlags { get; } = new HashSet<string> { "json" };

    public int Run(CliArgs args, TextWriter stdout, TextWriter stderr)
    {
        bool json = args.Has("json");
        var spec = DeviceOption.Read(args);
        args.RejectUnknown();
        if (args.Positionals.Count == 0) throw new LlmArchInputException("verify needs at least one fixture directory");
        // One backend for every fixture (a GPU's module and scratch are set up once); bf16 runs report their drift.
        var backend = DeviceOption.Create(spec);
        bool drift = spec.DType is "bf16" or "bfloat16";
        Func<string, Models.CausalLM>? loader = backend is null ? null : d => Models.ModelLoader.Load(d, backend);
        var results = new List<VerifyResult>();
        bool badInput = false;
        foreach (var dir in args.Positionals)
        {
            VerifyResult r;
            try { r = FixtureVerifier.Verify(dir, loader); }
            catch (LlmArchInputException e)
            {
                badInput = true;
                r = new VerifyResult(Path.GetFileName(Path.TrimEndingDirectorySeparator(dir)), false, double.NaN, 0, 0, e.Message.ReplaceLineEndings(" "));
                if (!json) stderr.WriteLine($"llmarch verify: error: {r.Error}");
            }
            results.Add(r);
            if (!json && drift && r.TokensTotal > 0)
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"BF16 {r.Name} max_abs={r.MaxAbs:G3} tokens={r.TokensMatched}/{r.TokensTotal}"));
            else if (!json && r.Error is null || !json && r.TokensTotal > 0)
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{(r.Pass ? "PASS" : "FAIL")} {r.Name} max_abs={r.MaxAbs:G3} tokens={r.TokensMatched}/{r.TokensTotal}{(r.Pass ? "" : $" ({r.Error})")}"));
            else if (!json) stdout.WriteLine($"FAIL {r.Name} ({r.Error})");
        }
        if (json)
        {
            var arr = results.Select(r => new Dictionary<string, object?>
            {
                ["name"] = r.Name, ["pass"] = r.Pass, ["max_abs"] = double.IsNaN(r.MaxAbs) ? null : r.MaxAbs,
                ["tokens_match"] = r.TokensMatch, ["error"] = r.Error,
            });
            stdout.WriteLine(JsonSerializer.Serialize(arr, new JsonSerializerOptions { WriteIndented = true }));
        }
        if (badInput) return 2;
        return drift || results.All(r => r.Pass) ? 0 : 1;
    }
}
