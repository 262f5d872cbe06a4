using System.CommandLine;
using LlmArch.Checkpoints;
using LlmArch.Generation;

namespace LlmArch.Cli;

/// <summary>The sampling flags of <c>run</c> and <c>chat</c>; defaults come from generation_config.json.</summary>
public sealed class SamplingGroup : IOptionGroup
{
    public readonly Option<bool> Greedy = Opt.Flag("--greedy", "decode greedily, ignoring generation_config.json's sampling defaults");
    public readonly Option<double?> Temperature = Opt.Number("--temperature", "sampling temperature, 0 = greedy (default: generation_config.json, else greedy)",
        v => v >= 0 && v <= 100 ? null : "between 0 and 100");
    public readonly Option<int?> TopK = Opt.OptionalInt("--top-k", "keep the K most likely tokens, 0 = all", min: 0);
    public readonly Option<double?> TopP = Opt.Number("--top-p", "nucleus sampling: keep the smallest set with probability >= P", v => v > 0 && v <= 1 ? null : "in (0, 1]");
    public readonly Option<double?> MinP = Opt.Number("--min-p", "drop tokens below P x the top probability", v => v >= 0 && v <= 1 ? null : "in [0, 1]");
    public readonly Option<double?> RepetitionPenalty = Opt.Number("--repetition-penalty", "divide the logits of seen tokens by R (1 = off)",
        v => v > 0 && v <= 100 ? null : "in (0, 100]", "R");
    public readonly Option<int?> Seed = Opt.OptionalInt("--seed", "sampling seed (default: random)", min: 0);

    public IEnumerable<Symbol> Symbols => [Greedy, Temperature, TopK, TopP, MinP, RepetitionPenalty, Seed];

    /// <summary>The sampling options: flags over generation_config.json (greedy unless it says do_sample).</summary>
    public SamplingOptions Resolve(Invocation inv, GenerationConfig? gen)
    {
        bool greedy = inv.Get(Greedy);
        bool sample = gen?.DoSample == true && !greedy;
        var o = new SamplingOptions
        {
            Temperature = greedy ? 0 : inv.Get(Temperature) ?? (sample ? gen!.Temperature ?? 1.0 : 0.0),
            TopK = inv.Get(TopK) ?? (sample ? gen!.TopK ?? 0 : 0),
            TopP = inv.Get(TopP) ?? (sample ? gen!.TopP ?? 1.0 : 1.0),
            MinP = inv.Get(MinP) ?? (sample ? gen!.MinP ?? 0 : 0),
            RepetitionPenalty = inv.Get(RepetitionPenalty) ?? gen?.RepetitionPenalty ?? 1.0,
            Seed = inv.Get(Seed),
        };
        o.Validate();
        return o;
    }
}
