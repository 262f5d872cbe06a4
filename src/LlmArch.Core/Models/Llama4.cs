using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>
/// Llama 4 text stack (<c>model_type</c> "llama4_text"; also the text half of "llama4" multimodal checkpoints).
/// Differences from the Llama recipe:
/// <list type="bullet">
/// <item>RoPE layers (<c>no_rope_layers[i]</c> = 1) attend within chunks of <c>attention_chunk_size</c> (chunk-local
/// cache), use interleaved-pair RoPE (the reference multiplies adjacent pairs as complex numbers) and, with
/// <c>use_qk_norm</c>, a weight-free RMS norm of q and k after RoPE (Llama4TextL2Norm, eps = rms_norm_eps);</item>
/// <item>NoPE layers (every 4th) attend globally, with attention temperature tuning: the queries are scaled by
/// log1p(floor((pos + 1) / floor_scale)) * attn_scale + 1;</item>
/// <item>MoE on <c>moe_layers</c>: top-1 sigmoid router whose score scales the expert input, one shared expert,
/// fused experts stored <c>[E, in, out]</c>; dense layers use <c>intermediate_size_mlp</c>.</item>
/// </list>
/// </summary>
[ModelType("llama4_text", "Llama4ForCausalLM", "llama4", "Llama4ForConditionalGeneration")]
public sealed class Llama4 : DecoderModel
{
    private readonly bool[] _rope;
    private readonly string[] _types;
    private readonly bool[] _moe;
    private readonly int _chunk;
    private readonly bool _qkNorm, _temperature;
    private readonly float _floorScale, _attnScale;
    private readonly string _prefix, _lmHead;

    protected override string Prefix => _prefix;
    protected override string LmHeadName => _lmHead;

    public Llama4(ModelConfig c, WeightSource w, IBackend b) : base(c, w, b)
    {
        // no_rope_layers[i] = 1: layer i uses RoPE (the name is the reference's); default every 4th layer NoPE.
        int interval = c.NoRopeLayerInterval ?? 4;
        if (interval <= 0) throw c.Invalid("no_rope_layer_interval", $"must be positive (got {interval})");
        var flags = c.NoRopeLayers ?? Enumerable.Range(0, Layers).Select(i => (i + 1) % interval != 0 ? 1 : 0).ToArray();
        if (flags.Length != Layers) throw c.Invalid("no_rope_layers", $"has {flags.Length} entries but num_hidden_layers is {Layers}");
        _rope = flags.Select(f => f != 0).ToArray();

        int? chunk = c.AttentionChunkSize;
        if (chunk is <= 0) throw c.Invalid("attention_chunk_size", $"must be positive or null (got {chunk})");
        _types = c.CheckedLayerTypes(Layers)
                 ?? _rope.Select(r => r && chunk is not null ? "chunked_attention" : "full_attention").ToArray();
        foreach (var t in _types)
            if (t is not ("chunked_attention" or "full_attention"))
                throw c.Invalid("layer_types", $"has '{t}'; Llama 4 layers are 'chunked_attention' or 'full_attention'");
        if (_types.Contains("chunked_attention") && chunk is null) throw c.Missing("attention_chunk_size");
        _chunk = chunk ?? 0;

        int step = c.InterleaveMoeLayerStep ?? 1;
        if (step <= 0) throw c.Invalid("interleave_moe_layer_step", $"must be positive (got {step})");
        var moeLayers = c.MoeLayers ?? Enumerable.Range(0, Layers).Where(i => i % step == step - 1).ToArray();
        _moe = new bool[Layers];
        foreach (int i in moeLayers)
            _moe[(uint)i < (uint)Layers ? i : throw c.Invalid("moe_layers", $"has layer {i} outside [0, {Layers})")] = true;

        _qkNorm = c.UseQkNorm ?? true;
        _temperature = c.AttnTemperatureTuning ?? true;
        _floorScale = (float)(c.FloorScale ?? 8192);
        _attnScale = (float)(c.AttnScale ?? 0.1);
        if (_temperature && _floorScale <= 0) throw c.Invalid("floor_scale", $"must be positive (got {_floorScale})");

        // Multimodal checkpoints nest the text model under language_model.
        bool nested = w.HasData && !w.Contains("model.embed_tokens.weight") && w.Contains("language_model.model.embed_tokens.weight");
        _prefix = nested ? "language_model.model" : "model";
        _lmHead = nested ? "language_model.lm_head.weight" : "lm_head.weight";
        Build();
    }

    protected override string? LayerType(int i) => _types[i];

    // One table for all RoPE layers (rope_parameters is a single dict for Llama 4).
    protected override RopeTable? RopeFor(int layer, string? layerType) => _rope[layer] ? SharedRope(null) : null;

    protected override int WindowFor(int i) => 0;

    protected override AttentionSpec AttentionSpecFor(int i) => base.AttentionSpecFor(i) with
    {
        Chunk = _types[i] == "chunked_attention" ? _chunk : 0,
        RopeInterleaved = true,
        QkNorm = _qkNorm && _rope[i] ? QkNormKind.L2 : QkNormKind.None,
    };

    protected override DecoderLayer BuildLayer(int i, string prefix)
    {
        var spec = AttentionSpecFor(i);
        return new DecoderLayer
        {
            Placement = NormPlacement.Pre,
            InputNorm = BuildNorm($"{prefix}.input_layernorm.weight", Hidden),
            Attention = _temperature && !_rope[i]
                ? new TemperatureTunedAttention(Weights, $"{prefix}.self_attn", spec, _floorScale, _attnScale)
                : new SelfAttention(Weights, $"{prefix}.self_attn", spec),
            PreFeedForwardNorm = BuildNorm($"{prefix}.post_attention_layernorm.weight", Hidden),
            FeedForward = BuildFeedForward(i, prefix),
        };
    }

    private ExpertActivation ExpertAct() => (Config.HiddenAct ?? "silu") switch
    {
        "silu" or "swish" => ExpertActivation.SwiGlu,
        "gelu_pytorch_tanh" or "gelu_new" => ExpertActivation.GeGluTanh,
        var a => throw Config.Invalid("hidden_act", $"'{a}' is not a supported Llama 4 expert activation"),
    };

    protected override IModule BuildFeedForward(int i, string prefix)
    {
        string p = $"{prefix}.feed_forward";
        var act = Activations.Parse(Config, Config.HiddenAct ?? "silu", "hidden_act");
        if (!_moe[i])
            return GatedMlp.Load(Weights, p, Hidden, Config.RequirePositive(Config.IntermediateSizeMlp, "intermediate_size_mlp"), act);
        var (experts, key) = MoeLayers.RoutedExperts(Config);
        var spec = new RouterSpec
        {
            Experts = experts, TopK = Config.Require(Config.NumExpertsPerTok, "num_experts_per_tok"),
            Scoring = RouterScoring.Sigmoid, ScaleInput = true,
        };
        spec.Validate(Config, key);
        int width = IntermediateFor(i);
        var use = WeightUse.Expert(spec.TopK, experts);
        // Stored [E, in, out] (the reference multiplies x @ W): transposed once into [E, out, in].
        var gateUp = Weights.Place(StackedWeightTransforms.TransposedView(Weights.GetHost($"{p}.experts.gate_up_proj", [experts, Hidden, 2 * width], use)));
        var down = Weights.Place(StackedWeightTransforms.TransposedView(Weights.GetHost($"{p}.experts.down_proj", [experts, width, Hidden], use)));
        var routed = ExpertSet.FromStacked(gateUp, null, down, null, ExpertAct(), interleaved: false);
        var shared = GatedMlp.Load(Weights, $"{p}.shared_expert", Hidden, width, act);
        return new Moe(spec, Linear.Load(Weights, $"{p}.router", Hidden, experts, false), null, routed, shared)
        { Width = width, SharedWidth = width, SharedCount = 1 };
    }

    protected override ArchitectureInfo Describe() => base.Describe().WithFfns(Stack) with
    {
        QkNorm = _qkNorm ? "L2 (weight-free RMS) after RoPE, RoPE layers only" : "none",
        Positions = DescribePositions() + " (interleaved pairs)",
        Notes = $"chunked attention ({_chunk}) on {_types.Count(t => t == "chunked_attention")} of {Layers} layers" +
                (_temperature ? $"; NoPE query temperature log1p(floor((p+1)/{_floorScale:G}))*{_attnScale:G}+1" : "") +
                $"; MoE on {_moe.Count(m => m)} of {Layers} layers (top-1 sigmoid, input-scaled, shared expert)",
    };

    /// <summary>NoPE-layer attention with Llama 4's position-dependent query temperature.</summary>
    private sealed class TemperatureTunedAttention(WeightSource w, string prefix, AttentionSpec s, float floorScale, float attnScale)
        : SelfAttention(w, prefix, s)
    {
        private readonly Tensor _floorScale = w.Place(Tensor.FromFloats([floorScale], new Shape(1), "floor_scale"));

        /// <summary>q · (log1p(floor((p + 1) / floor_scale)) · attn_scale + 1), per token position p, computed on the device.</summary>
        protected override Tensor AdjustQuery(IBackend b, Tensor q, StepBatch batch)
        {
            int N = q.Shape[0];
            var p1 = b.Unary(b.Cast(batch.Positions!, DType.F32), UnaryOp.Affine, 1f, 1f);
            var f = b.Unary(b.Binary(p1, _floorScale, BinaryOp.Div), UnaryOp.Floor);
            var scale = b.Unary(b.Unary(f, UnaryOp.Log1p), UnaryOp.Affine, attnScale, 1f);
            return b.Binary(q, b.View(scale, new Shape(N, 1, 1)), BinaryOp.Mul);
        }
    }
}
