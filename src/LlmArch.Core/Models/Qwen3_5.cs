using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>
/// Qwen3.5 (<c>model_type</c> "qwen3_5_text" dense, "qwen3_5_moe_text" MoE; the multimodal "qwen3_5" / "qwen3_5_moe"
/// configs through their <c>text_config</c>, weights under <c>model.language_model</c>). The Qwen3-Next recipe:
/// Gated DeltaNet 3:1 with gated attention (q_proj doubled into [query | gate], zero-centred per-head QK-norm,
/// partial RoPE; the text positions of the multimodal RoPE are plain RoPE), zero-centred (1 + w) RMSNorms. The
/// DeltaNet projections are separate (<c>in_proj_qkv</c>, <c>in_proj_z</c>, <c>in_proj_b</c>, <c>in_proj_a</c>). The
/// dense sizes use a SwiGLU MLP; the MoE sizes route softmax top-k over per-expert weights plus a shared expert
/// scaled by sigmoid(<c>shared_expert_gate</c>).
/// </summary>
[ModelType("qwen3_5_text", "qwen3_5_moe_text", "qwen3_5", "qwen3_5_moe",
    "Qwen3_5ForCausalLM", "Qwen3_5MoeForCausalLM", "Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForConditionalGeneration")]
public sealed class Qwen3_5 : StackModel
{
    private readonly DeltaNetSpec _dn;
    private readonly AttentionSpec _attn;
    private readonly bool _moe;

    public Qwen3_5(ModelConfig c, WeightSource w, IBackend b) : base(c, w, b)
    {
        float eps = (float)(c.RmsNormEps ?? 1e-6);
        var types = Types(c.Get<int?>("full_attention_interval") is int every
            ? i => (i + 1) % every == 0 ? "full_attention" : "linear_attention" : null, "linear_attention", "full_attention");
        _moe = (c.NumExperts ?? 0) > 0;
        var shape = Qwen3Next.AttentionShape(c);
        var rope = Rope(RotaryEmbedding.Create(c, c.RopeFor(null), shape.HeadDim));
        _attn = shape with { OutBias = c.AttentionBias ?? false, QkNorm = QkNormKind.PerHead, NormOffset = 1f, NormEps = eps, Rope = rope, OutputGate = true };
        _dn = new DeltaNetSpec
        {
            Hidden = Hidden,
            KeyHeads = c.RequirePositive(c.LinearNumKeyHeads, "linear_num_key_heads"),
            ValueHeads = c.RequirePositive(c.LinearNumValueHeads, "linear_num_value_heads"),
            KeyDim = c.RequirePositive(c.LinearKeyHeadDim, "linear_key_head_dim"),
            ValueDim = c.RequirePositive(c.LinearValueHeadDim, "linear_value_head_dim"),
            ConvKernel = c.RequirePositive(c.LinearConvKernelDim, "linear_conv_kernel_dim"),
            NormEps = eps, SeparateProjections = true,
        };
        if (_dn.ValueHeads % _dn.KeyHeads != 0)
            throw c.Invalid("linear_num_value_heads", $"{_dn.ValueHeads} is not a multiple of linear_num_key_heads {_dn.KeyHeads}");

        // Multimodal checkpoints keep the text stack under model.language_model.
        string p0 = w.HasData && w.Contains("model.language_model.embed_tokens.weight") ? "model.language_model" : "model";
        Embed = w.Get($"{p0}.embed_tokens.weight", [Vocab, Hidden], WeightUse.Embed);
        Stack = new IStackLayer[NumLayersConfigured];
        for (int i = 0; i < Stack.Length; i++)
        {
            string p = $"{p0}.layers.{i}";
            IMixer mixer = types[i] == "linear_attention"
                ? new RecurrentMixer(new DeltaNetBlock(new GatedDeltaNet(w, $"{p}.linear_attn", _dn)))
                : new AttentionMixer(new SelfAttention(w, $"{p}.self_attn", _attn));
            Stack[i] = new MixerLayer
            {
                PreMixerNorm = RmsNorm.Load(w, $"{p}.input_layernorm.weight", Hidden, eps, 1f),
                Mixer = mixer,
                PreFeedForwardNorm = RmsNorm.Load(w, $"{p}.post_attention_layernorm.weight", Hidden, eps, 1f),
                FeedForward = _moe ? LoadMoe(c, w, $"{p}.mlp") : GatedMlp.Load(w, $"{p}.mlp", Hidden, c.RequirePositive(c.IntermediateSize?[0], "intermediate_size"), UnaryOp.Silu),
            };
        }
        FinalNorm = RmsNorm.Load(w, $"{p0}.norm.weight", Hidden, eps, 1f);
        LmHeadWeight = c.TieWordEmbeddings ?? false ? Embed : w.Get("lm_head.weight", Vocab, Hidden);
    }

    private Moe LoadMoe(ModelConfig c, WeightSource w, string p)
    {
        int E = c.RequirePositive(c.NumExperts, "num_experts"), K = c.RequirePositive(c.NumExpertsPerTok, "num_experts_per_tok");
        int width = c.RequirePositive(c.MoeIntermediateSize, "moe_intermediate_size");
        var spec = new RouterSpec { Experts = E, TopK = K, Scoring = RouterScoring.Softmax, NormalizeTopK = c.NormTopkProb ?? true };
        spec.Validate(c, "num_experts");
        // Per-expert tensors as published, or the stacked layout transformers writes.
        var experts = w.HasData && w.Contains($"{p}.experts.gate_up_proj")
            ? ExpertSet.FromStacked(w.Get($"{p}.experts.gate_up_proj", [E, 2L * width, Hidden], WeightUse.Expert(K, E)), null,
                w.Get($"{p}.experts.down_proj", [E, Hidden, width], WeightUse.Expert(K, E)), null, ExpertActivation.SwiGlu, false)
            : ExpertSet.LoadPerExpert(w, $"{p}.experts", E, K, Hidden, width, ExpertActivation.SwiGlu);
        int shared = c.SharedExpertIntermediateSize ?? 0;
        var sharedMlp = shared > 0 ? GatedMlp.Load(w, $"{p}.shared_expert", Hidden, shared, UnaryOp.Silu) : null;
        var sharedGate = shared > 0 ? Linear.Load(w, $"{p}.shared_expert_gate", Hidden, 1, false) : null;
        return new Moe(spec, Linear.Load(w, $"{p}.gate", Hidden, E, false), null, experts, sharedMlp, sharedGate)
        { Width = width, SharedWidth = shared, SharedCount = sharedMlp is null ? 0 : 1 };
    }

    protected override ArchitectureInfo Describe()
    {
        var layers = Stack.Select(l => (l.Mixer is AttentionMixer a
            ? AttentionInfo(a.Attention.Spec) with { ValueDim = a.Attention.Spec.HeadDim }
            : new LayerInfo
            {
                Mixer = MixerKind.Linear, Heads = _dn.ValueHeads, KvHeads = _dn.KeyHeads, HeadDim = _dn.KeyDim, ValueDim = _dn.ValueDim,
                Rope = false, StateValues = _dn.StateValues,
            }).WithFfn(((MixerLayer)l).FeedForward!)).ToList();
        int linear = layers.Count(l => l.Mixer == MixerKind.Linear);
        return new ArchitectureInfo
        {
            Layers = layers, Norm = "pre-norm zero-centred RMSNorm (1 + w)", QkNorm = "per-head RMSNorm (1 + w); L2 in DeltaNet",
            Positions = $"RoPE (theta {Config.RopeFor(null).RopeTheta ?? Config.RopeTheta:G}, partial {_attn.Rope!.RotaryDim}/{_attn.HeadDim}) on attention layers; none in DeltaNet",
            Notes = $"Gated DeltaNet {linear} : gated attention {layers.Count - linear}",
        };
    }
}
