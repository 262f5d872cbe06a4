using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>
/// gpt-oss (<c>model_type</c> "gpt_oss", gpt-oss-20b / 120b). Differences from the Llama recipe:
/// <list type="bullet">
/// <item>attention with q/k/v/o biases and a learned per-head sink logit in the softmax denominator; sliding
/// window on alternate layers (<c>layer_types</c>); YaRN RoPE (half-split pairs);</item>
/// <item>every layer is MoE: router with bias, softmax over the k chosen logits, experts with biases and the
/// clamped SwiGLU (limit <c>swiglu_limit</c>, alpha 1.702, (up + 1) * gate * sigmoid(alpha * gate)) over a fused
/// gate_up whose gate is the even and up the odd channels.</item>
/// </list>
/// Experts come as bf16/f32 stacked <c>[E, in, out]</c> (transposed once at load) or as the published MXFP4
/// checkpoint: <c>*_blocks</c> U8 <c>[E, out, in/32, 16]</c> (two e2m1 per byte, low nibble first) and
/// <c>*_scales</c> U8 e8m0 <c>[E, out, in/32]</c>, already <c>[out, in]</c> per expert. Those stay 4-bit: the block
/// bytes are used in place from the memory map as an MXFP4 tensor <c>[E, out, in]</c> with (1, 32) block scales,
/// dequantized row by row inside the matmul.
/// </summary>
[ModelType("gpt_oss", "GptOssForCausalLM")]
public sealed class GptOss : DecoderModel
{
    private readonly string[] _types;
    private readonly RouterSpec _router;
    private readonly string _routerKey;
    private readonly int _width;
    private readonly ExpertActivation _act;

    public GptOss(ModelConfig c, WeightSource w, IBackend b) : base(c, w, b)
    {
        _types = c.CheckedLayerTypes(Layers)
                 ?? Enumerable.Range(0, Layers).Select(i => (i + 1) % 2 != 0 ? "sliding_attention" : "full_attention").ToArray();
        foreach (var t in _types)
            if (t is not ("sliding_attention" or "full_attention"))
                throw c.Invalid("layer_types", $"has '{t}'; gpt-oss layers are 'sliding_attention' or 'full_attention'");
        var (experts, key) = MoeLayers.RoutedExperts(c);
        _router = new RouterSpec { Experts = experts, TopK = c.Require(c.NumExpertsPerTok, "num_experts_per_tok"), Scoring = RouterScoring.TopKSoftmax };
        _router.Validate(c, key);
        _routerKey = key;
        _width = c.RequirePositive(c.IntermediateSize?.Length == 1 ? c.IntermediateSize[0] : null, "intermediate_size");
        double limit = c.SwigluLimit ?? 7.0;
        if (!(limit > 0)) throw c.Invalid("swiglu_limit", $"must be positive (got {limit})");
        _act = ExpertActivation.GptOss((float)limit);
        Build();
    }

    protected override string? LayerType(int i) => _types[i];

    protected override AttentionSpec AttentionSpecFor(int i) => base.AttentionSpecFor(i) with { Sinks = true };

    protected override IModule BuildFeedForward(int i, string prefix)
    {
        string p = $"{prefix}.mlp", x = $"{p}.experts";
        int E = _router.Experts, C = Hidden, I = _width;
        var use = WeightUse.Expert(_router.TopK, E);
        Tensor gateUp, down;
        if (Weights.HasData && (Weights.Contains($"{x}.gate_up_proj_blocks") || !Weights.Contains($"{x}.gate_up_proj") && IsMxfp4Config()))
        {
            foreach (var (v, k) in new[] { (C, "hidden_size"), (I, "intermediate_size") })
                if (v % 32 != 0) throw Config.Invalid(k, $"is {v}; MXFP4 experts need a multiple of 32 (one e8m0 scale per 32 values)");
            gateUp = Mxfp4(x, "gate_up_proj", E, 2 * I, C, use);
            down = Mxfp4(x, "down_proj", E, C, I, use);
        }
        else
        {
            // Stored [E, in, out] (the reference multiplies x @ W): transposed once into [E, out, in].
            gateUp = Weights.Place(StackedWeightTransforms.TransposedView(Weights.GetHost($"{x}.gate_up_proj", [E, C, 2 * I], use)));
            down = Weights.Place(StackedWeightTransforms.TransposedView(Weights.GetHost($"{x}.down_proj", [E, I, C], use)));
        }
        var routed = ExpertSet.FromStacked(gateUp, Weights.GetF32($"{x}.gate_up_proj_bias", E, 2 * I),
            down, Weights.GetF32($"{x}.down_proj_bias", E, C), _act, interleaved: true);
        var router = Linear.Load(Weights, $"{p}.router", C, E, bias: true);
        return new Moe(_router, router, null, routed) { Width = I };
    }

    private bool IsMxfp4Config() => Config.Raw["quantization_config"]?["quant_method"]?.GetValue<string>() == "mxfp4";

    /// <summary>
    /// An MXFP4 expert stack <c>[E, rows, cols]</c> over the checkpoint's block bytes (no copy) with its e8m0 scales.
    /// transformers' loader dequantizes the same bytes to <c>[E, rows, cols]</c> and transposes to its x @ W layout;
    /// our Linear wants <c>[out, in]</c>, which is the stored order.
    /// </summary>
    private Tensor Mxfp4(string prefix, string proj, int E, int rows, int cols, WeightUse use)
    {
        int groups = cols / 32;
        string bn = $"{prefix}.{proj}_blocks", sn = $"{prefix}.{proj}_scales";
        var blocks = Weights.GetHost(bn, [E, rows, groups, 16], use, countAs: [E, rows, cols]); // 4-bit pairs count as their values
        var scales = Weights.GetHost(sn, [E, rows, groups], use, countAs: []); // quantization scales are not parameters
        if (blocks.DType != DType.U8) throw new CheckpointFormatException($"{Weights.Location}: tensor '{bn}' is {blocks.DType}; expected U8 (packed e2m1 pairs)");
        if (scales.DType != DType.U8) throw new CheckpointFormatException($"{Weights.Location}: tensor '{sn}' is {scales.DType}; expected U8 (e8m0 exponents)");
        return Weights.Place(BlockScales.Attach(new Tensor(DType.MXFP4, new Shape(E, rows, cols), blocks.Ptr, blocks.Owner, $"{prefix}.{proj}"), scales, 1, 32));
    }

    protected override ArchitectureInfo Describe() => base.Describe().WithFfns(Stack) with
    {
        Notes = $"attention sinks; q/k/v/o biases; sliding window {Stack.Select(l => l.Attention.Spec.Window).DefaultIfEmpty(0).Max()} on " +
                $"{Stack.Count(l => l.Attention.Spec.Window > 0)} of {Stack.Length} layers; router with bias, softmax over top-{_router.TopK} of {_router.Experts} ({_routerKey}); " +
                $"clamped SwiGLU (limit {_act.Limit:G}, alpha {_act.Alpha:G})",
    };
}
