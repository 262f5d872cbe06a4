using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using LlmArch.Generation;

namespace LlmArch.Cli.Commands;

/// <summary><c>llmarch verify &lt;fixture-dir&gt;...</c>: each model against its reference logits and greedy tokens.</summary>
public sealed class VerifyCommand : Verb
{
    public override string Name => "verify";
    public override string Description => "Check models against reference fixtures (logits within tolerance, identical greedy tokens); exit 1 when one fails.";

    private readonly Argument<string[]> _dirs = new("fixtures") { Description = "fixture directories (config, weights, expected.safetensors)", Arity = ArgumentArity.OneOrMore };
    private readonly Option<bool> _json = Opt.Flag("--json", "print a JSON array of results");
    private readonly DeviceGroup _device = new();

    public override int Execute(Invocation inv)
    {
        bool json = inv.Get(_json);
        var stdout = inv.Out;
        var stderr = inv.Err;
        var results = new List<VerifyResult>();
        bool badInput = false;
        // --dtype bf16 (GPU): the drift from the fp32 reference is reported, not judged against the fp32 tolerance.
        bool drift = inv.Get(_device.DType) is "bf16" or "bfloat16";
        foreach (var dir in inv.Get(_dirs))
        {
            VerifyResult r;
            try
            {
                using var pool = inv.Get(_device.Threads) is int t ? new Compute.Cpu.CpuThreadPool(t) : null;
                r = FixtureVerifier.Verify(dir, d => Models.ModelLoader.Load(d, _device.Resolve(inv, pool)));
            }
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
