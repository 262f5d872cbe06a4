using LlmArch.Analysis;
using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;
using LlmArch.Compute.Cpu;
using LlmArch.Models;

namespace LlmArch.Tests;

/// <summary>
/// The counting rules on a toy model that has every layer kind at once (full MQA + dense MLP, sliding window +
/// MoE with a shared expert, linear attention with constant state, a KV-sharing MoE layer), so the rules are
/// checked by hand on this branch, before the real MoE / hybrid families are merged.
/// </summary>
public class AnalysisRulesTests
{
    private sealed class ToyModel : CausalLM
    {
        public override ArchitectureInfo Info { get; }
        public override int VocabSize => 100;
        public override int MaxPositions => 1000;
        public override int HiddenSize => 8;

        public ToyModel(WeightSource w) : base(ModelConfig.Parse("""{"model_type": "toy"}"""), w, new CpuBackend())
        {
            w.Get("model.embed_tokens.weight", [100, 8], WeightUse.Embed);
            for (int i = 0; i < 4; i++)
            {
                string p = $"model.layers.{i}";
                if (i == 2)
                {
                    w.Get($"{p}.linear_attn.in_proj.weight", 24, 8);
                    w.Get($"{p}.linear_attn.conv1d.weight", 24, 1, 4);
                }
                else
                    foreach (var (n, o) in new[] { ("q_proj", 8), ("k_proj", 4), ("v_proj", 4), ("o_proj", 8) })
                        w.Get($"{p}.self_attn.{n}.weight", n == "o_proj" ? [8, 8] : [o, 8]);
                if (i % 2 == 0)
                    GatedMlp.Load(w, $"{p}.mlp", 8, 16, UnaryOp.Silu);
                else
                {
                    w.Get($"{p}.mlp.gate.weight", 4, 8);
                    for (int e = 0; e < 4; e++) GatedMlp.Load(w, $"{p}.mlp.experts.{e}", 8, 4, UnaryOp.Silu, use: WeightUse.Expert(2, 4));
                    GatedMlp.Load(w, $"{p}.mlp.shared_experts", 8, 4, UnaryOp.Silu);
                }
            }
            w.GetF32("model.norm.weight", 8);
            w.Get("lm_head.weight", 100, 8);
            var attn = new LayerInfo { Heads = 2, KvHeads = 1, HeadDim = 4, ValueDim = 4, KvValuesPerToken = 8 };
            Info = new ArchitectureInfo
            {
                Layers =
                [
                    attn with { Mixer = MixerKind.Full, Ffn = FfnKind.Dense, FfnWidth = 16 },
                    attn with { Mixer = MixerKind.Sliding, Window = 16, Ffn = FfnKind.Moe, Experts = 4, ActiveExperts = 2, SharedExperts = 1, FfnWidth = 4 },
                    new LayerInfo { Mixer = MixerKind.Linear, StateValues = 100, Ffn = FfnKind.Dense, FfnWidth = 16 },
                    attn with { Mixer = MixerKind.Full, SharesKvOf = 0, Ffn = FfnKind.Moe, Experts = 4, ActiveExperts = 2, SharedExperts = 1, FfnWidth = 4 },
                ],
            };
        }

        public override ModelCache CreateCache(int slots, int maxTokens) => throw new NotSupportedException();
        protected override Tensor HiddenStates(StepBatch batch, ModelCache cache) => throw new NotSupportedException();
        protected override Tensor Head(Tensor hidden) => throw new NotSupportedException();
    }

    private static ModelAnalysis Toy() => ModelAnalysis.Of(new ToyModel(new ShapeOnlyWeights("toy")), "toy");

    [Fact]
    public void ParameterRules()
    {
        var a = Toy();
        // embed 800 + head 800 + attention 3x192 + linear 192+96 + dense MLPs 2x384 + MoE layers 2x(router 32 + experts 384 + shared 96) + norm 8
        Assert.Equal(4264, a.TotalParams);
        Assert.Equal(4264 - 2 * 192, a.ActiveParams);             // half of each layer's routed experts run
        Assert.Equal(800, a.EmbeddingParams);
        Assert.Equal(800, a.LmHeadParams);
        Assert.False(a.TiedEmbeddings);
        Assert.Equal(3880 - 800, a.ActiveParamsNoEmbedding);       // OpenAI: head kept
        Assert.Equal(3880 - 1600, a.ActiveParamsNonEmbedding);     // Qwen3-Next / MiniMax: head left out too
        Assert.Equal(3880 - 800 - 8, a.ActiveMatmulParams);        // lookup and norm are not multiplied
        var g = a.Groups.ToDictionary(x => x.Name);
        Assert.Equal(864, g["attention"].Params);
        Assert.Equal(768, g["mlp"].Params);
        Assert.Equal(64, g["router"].Params);
        Assert.Equal(768, g["routed experts"].Params);
        Assert.Equal(384, g["routed experts"].ActiveParams);
        Assert.Equal(192, g["shared experts"].Params);
        Assert.Equal(8, g["norms"].Params);
        Assert.Equal(800, g["lm_head"].Params);
    }

    [Fact]
    public void PatternAndShape()
    {
        var a = Toy();
        Assert.Equal("GSLG", a.AttentionLayers);
        Assert.Equal("GSLG", a.AttentionPattern);
        Assert.Equal("2(DE)", a.FfnPattern);
        Assert.Equal("MQA + SWA 16 + linear", a.AttentionKind);
        Assert.Equal((4, 2, 1, 4, 16), (a.Experts, a.ActiveExperts, a.SharedExperts, a.ExpertWidth, a.DenseWidth));
        Assert.Equal(1, a.KvSharedLayers);
    }

    [Fact]
    public void KvCacheRules()
    {
        var a = Toy();
        Assert.Equal(16, a.KvValuesPerToken);                      // the sharing layer stores nothing
        Assert.Equal(100, a.StateValues);
        Assert.Equal(2L * (8 * 100 + 8 * 16 + 100), a.KvCacheBytes(100));
        Assert.Equal(2L * (8 * 100 + 8 * 100 + 100), a.KvCacheBytes(100, windows: false));
        Assert.Equal(1L * (8 * 10 + 8 * 10 + 100), a.KvCacheBytes(10, KvCacheDType.FP8));
        Assert.Equal(2.0 * (8 * 100 + 8 * 16 + 100) / 100, a.KvCacheBytesPerToken(100));
    }

    [Fact]
    public void FlopRules()
    {
        var a = Toy();
        // 2 x matmul + full layers 2*heads*(d+dv)*ctx (the sharing layer still attends) + window-bounded + 6 x state
        double expected = 2.0 * 3072 + 2 * 2 * 8 * 100 + 2 * 2 * 8 * 16 + 6 * 100 + 2 * 2 * 8 * 100;
        Assert.Equal(expected, a.FlopsPerToken(100));
    }
}
