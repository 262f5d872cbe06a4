using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>
/// GLM-5 (<c>model_type</c> "glm_moe_dsa", Z.ai): DeepSeek-V3.2's architecture (<see cref="DeepseekV32"/>: MLA with a
/// DSA lightning indexer, DeepSeek MoE) with two differences: the indexer ropes its first rope dims in interleaved
/// pairs, and layers marked "shared" in <c>indexer_types</c> run no indexer of their own but reuse the top-k selection
/// of the last layer that did (the pattern may also come as <c>index_topk_pattern</c> "F"/"S", or
/// <c>index_topk_freq</c> / <c>index_skip_topk_offset</c>, as the reference derives it).
/// </summary>
[ModelType("glm_moe_dsa", "GlmMoeDsaForCausalLM")]
public sealed class GlmMoeDsa : DeepseekV32
{
    public GlmMoeDsa(ModelConfig c, WeightSource w, IBackend b) : base(c, w, b, indexerRopeInterleaved: true) { }

    protected override bool[] IndexerShared(ModelConfig c)
    {
        int L = NumLayersConfigured;
        string[] types;
        if (c.Get<string[]>("indexer_types") is { } t) types = t;
        else if (c.Get<string>("index_topk_pattern") is { } pattern)
            types = pattern.Select(ch => ch switch { 'F' => "full", 'S' => "shared", _ => throw c.Invalid("index_topk_pattern", $"has '{ch}'; expected F or S") }).ToArray();
        else
        {
            int freq = Math.Max(c.Get<int?>("index_topk_freq") ?? 1, 1), offset = c.Get<int?>("index_skip_topk_offset") ?? 2;
            types = Enumerable.Range(0, L).Select(i => Math.Max(i - offset + 1, 0) % freq == 0 ? "full" : "shared").ToArray();
        }
        if (types.Length != L) throw c.Invalid("indexer_types", $"has {types.Length} entries but num_hidden_layers is {L}");
        return types.Select((x, i) => x switch
        {
            "full" => false, "shared" => true,
            _ => throw c.Invalid($"indexer_types[{i}]", $"is '{x}'; expected full or shared"),
        }).ToArray();
    }
}
