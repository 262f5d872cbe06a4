using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>
/// Grok-1 / Grok-2.5 (<c>model_type</c> "git", <c>architectures</c> ["Grok1ForCausalLM"]; no transformers model — the
/// reference is SGLang's <c>models/grok.py</c>):
/// <list type="bullet">
/// <item>four RMSNorms per layer (pre/post attention, pre/post MoE: sandwich placement);</item>
/// <item>attention logits scaled by 1/sqrt(head_dim), softcapped (<c>attn_logit_softcapping</c>), then multiplied by
/// log2(p)/log2(L) for a query at position p > L = <c>attn_temperature_len</c>;</item>
/// <item>plain half-split RoPE (<c>rope_type</c> "original");</item>
/// <item>the FFN is a residual MoE when <c>residual_moe</c>: (dense GeGLU MLP + MoE) / sqrt 2; the MoE softcaps its
/// router logits (<c>router_logit_softcapping</c>) and weights the top-k experts by their softmax probabilities over all
/// experts, not renormalized; experts are GeGLU (tanh) with Mixtral names <c>w1/w3/w2</c>;</item>
/// <item>embeddings times <c>embedding_multiplier_scale</c>, logits times <c>output_multiplier_scale</c>, then the
/// final softcap (<c>final_logit_softcapping</c>).</item>
/// </list>
/// Only the Hugging Face-style single-file layout (<c>model.layers.N...</c>) is loaded. xAI's Grok-2 release ships
/// tensor-parallel shards (<c>*-TP-common</c>, <c>*-TP-NNN</c>) that SGLang loads pre-sharded; they are not merged here.
/// </summary>
[ModelType("git", "grok-1", "Grok1ForCausalLM", "Grok1ModelForCausalLM")]
public sealed class Grok2 : DecoderModel
{
    private readonly RouterSpec _router;
    private readonly int _expertWidth;
    private readonly bool _residualMoe;
    private readonly float _outputScale;

    public Grok2(ModelConfig c, WeightSource w, IBackend b) : base(c, w, b)
    {
        var (experts, key) = MoeLayers.RoutedExperts(c);
        _router = new RouterSpec
        {
            Experts = experts, TopK = c.Require(c.NumExpertsPerTok, "num_experts_per_tok"),
            Scoring = RouterScoring.Softmax, NormalizeTopK = false,
            LogitSoftcap = (float)(c.Get<double?>("router_logit_softcapping") ?? 30.0),
        };
        _router.Validate(c, key);
        _expertWidth = c.RequirePositive(c.MoeIntermediateSize ?? c.IntermediateSize?[0], "moe_intermediate_size");
        _residualMoe = c.Get<bool?>("residual_moe") ?? false;
        EmbedScale = (float)(c.Get<double?>("embedding_multiplier_scale") ?? 1.0);
        _outputScale = (float)(c.Get<double?>("output_multiplier_scale") ?? 1.0);
        FinalSoftcap = (float)(c.FinalLogitSoftcapping ?? 0);
        var ropeType = c.Get<string>("rope_type");
        if (ropeType is not (null or "original" or "default"))
            throw c.Invalid("rope_type", $"'{ropeType}' is not supported (original)");
        if (c.Get<int?>("sliding_window_size") is > 0)
            throw c.Invalid("sliding_window_size", "> 0 (sliding-window Grok layers) is not supported");
        Build();
    }

    protected override AttentionSpec AttentionSpecFor(int i) => base.AttentionSpecFor(i) with
    {
        QkvBias = false, OutBias = false,
        Softcap = (float)Math.Max(Config.AttnLogitSoftcapping ?? 30.0, 0),
        TemperatureLength = Math.Max(Config.Get<int?>("attn_temperature_len") ?? 0, 0),
    };

    protected override DecoderLayer BuildLayer(int i, string prefix) => new()
    {
        Placement = NormPlacement.Sandwich,
        InputNorm = BuildNorm($"{prefix}.pre_attn_norm.weight", Hidden),
        Attention = new SelfAttention(Weights, $"{prefix}.self_attn", AttentionSpecFor(i)),
        PostAttentionNorm = BuildNorm($"{prefix}.post_attn_norm.weight", Hidden),
        PreFeedForwardNorm = BuildNorm($"{prefix}.pre_moe_norm.weight", Hidden),
        FeedForward = BuildFeedForward(i, prefix),
        PostFeedForwardNorm = BuildNorm($"{prefix}.post_moe_norm.weight", Hidden),
    };

    protected override IModule BuildFeedForward(int i, string prefix)
    {
        string p = $"{prefix}.block_sparse_moe";
        var router = Linear.Load(Weights, $"{p}.gate", Hidden, _router.Experts, false);
        var experts = ExpertSet.LoadPerExpert(Weights, $"{p}.experts", _router.Experts, _router.TopK, Hidden, _expertWidth,
            ExpertActivation.GeGluTanh, gate: "w1", up: "w3", down: "w2");
        var moe = new Moe(_router, router, null, experts) { Width = _expertWidth };
        if (!_residualMoe) return moe;
        int width = IntermediateFor(i);
        var dense = GatedMlp.Load(Weights, $"{prefix}.mlp", Hidden, width, UnaryOp.GeluTanh);
        return new DenseAndMoe(dense, width, moe, 1f / MathF.Sqrt(2f));
    }

    protected override Tensor Head(Tensor hidden)
    {
        var logits = Backend.MatMul(hidden, LmHead);
        if (_outputScale != 1f) logits = Backend.Unary(logits, UnaryOp.Affine, _outputScale);
        if (FinalSoftcap > 0) logits = Backend.Unary(logits, UnaryOp.Softcap, FinalSoftcap);
        return logits;
    }

    protected override ArchitectureInfo Describe() => base.Describe().WithFfns(Stack) with
    {
        Notes = $"attention softcap {Stack.FirstOrDefault()?.Attention.Spec.Softcap:G}, length temperature {Config.Get<int?>("attn_temperature_len") ?? 0}; " +
                $"router softcap {_router.LogitSoftcap:G}; final softcap {FinalSoftcap:G}" + (_residualMoe ? "; residual MoE (dense + MoE) / sqrt 2" : ""),
    };
}
