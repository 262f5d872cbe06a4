using LlmArch.Checkpoints;
using LlmArch.Compute;
using LlmArch.Models;

namespace LlmArch.Generation;

/// <summary>Outcome of checking one reference fixture.</summary>
public sealed record VerifyResult(string Name, bool Pass, double MaxAbs, int TokensMatched, int TokensTotal, string? Error)
{
    public bool TokensMatch => TokensTotal > 0 && TokensMatched == TokensTotal;
}

/// <summary>
/// Checks a model directory against its reference outputs (<c>expected.safetensors</c>: input_ids, logits,
/// generated): the full forward pass over the prompt, and greedy decoding with the KV cache.
/// </summary>
public static class FixtureVerifier
{
    public const double Tolerance = 1e-3;

    public static VerifyResult Verify(string dir, Func<string, CausalLM>? loader = null)
    {
        string name = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir)));
        string expectedPath = Path.Combine(dir, "expected.safetensors");
        if (!File.Exists(expectedPath)) throw new LlmArchInputException($"{expectedPath}: file not found (a fixture directory needs expected.safetensors)");
        using var expected = new SafeTensorsFile(expectedPath);
        var idsT = Require(expected, "input_ids");
        var logitsT = Require(expected, "logits");
        var genT = Require(expected, "generated");
        if (idsT.Shape.Rank != 2 || genT.Shape.Rank != 2 || logitsT.Shape.Rank != 3)
            throw new CheckpointFormatException($"{expectedPath}: expected input_ids [B, T], logits [B, T, V], generated [B, T + N]");
        int B = idsT.Shape[0], T = idsT.Shape[1], V = logitsT.Shape[2], G = genT.Shape[1];
        if (logitsT.Shape[0] != B || logitsT.Shape[1] != T || genT.Shape[0] != B || G < T)
            throw new CheckpointFormatException($"{expectedPath}: shapes disagree (input_ids {idsT.Shape}, logits {logitsT.Shape}, generated {genT.Shape})");
        var ids = idsT.ToFloatArray().Select(f => (int)f).ToArray();
        var gen = genT.ToFloatArray().Select(f => (int)f).ToArray();
        var want = logitsT.ToFloatArray();

        var model = (loader ?? (d => ModelLoader.Load(d)))(dir);
        if (model.VocabSize != V) return new VerifyResult(name, false, double.NaN, 0, 0, $"vocab {model.VocabSize} != fixture logits vocab {V}");

        // Full forward over the prompt.
        var cache = model.CreateCache(B, T);
        var logits = model.Forward(ids, B, cache);
        var got = new float[(long)B * T * V];
        model.Backend.Download(logits, got);
        double maxAbs = 0;
        for (long i = 0; i < got.Length; i++)
        {
            double d = Math.Abs(got[i] - want[i]);
            if (double.IsNaN(d)) { maxAbs = double.NaN; break; }
            maxAbs = Math.Max(maxAbs, d);
        }

        // Greedy generation with the cache.
        int newTokens = G - T;
        var prompts = Enumerable.Range(0, B).Select(b => ids.AsSpan(b * T, T).ToArray()).ToList();
        var (outs, _) = Generator.Generate(model, prompts, newTokens, SamplingOptions.Greedy);
        int matched = 0;
        for (int b = 0; b < B; b++)
            for (int t = T; t < G; t++)
                if (t < outs[b].Length && outs[b][t] == gen[b * G + t]) matched++;
        int total = B * newTokens;
        bool pass = !double.IsNaN(maxAbs) && maxAbs <= Tolerance && matched == total;
        string? why = pass ? null : !(maxAbs <= Tolerance) ? $"max |logit diff| {maxAbs:G4} > {Tolerance}" : $"greedy tokens differ ({matched}/{total} match)";
        return new VerifyResult(name, pass, maxAbs, matched, total, why);
    }

    private static Tensor Require(SafeTensorsFile f, string name) =>
        f.Tensors.ContainsKey(name) ? f.Get(name) : throw new CheckpointFormatException($"{f.Path}: tensor '{name}' is missing");
}
