using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>
/// Nemotron-H (<c>model_type</c> "nemotron_h", NVIDIA; also Nemotron 3 Nano): a stack of single-mixer blocks, each
/// x + mixer(RMSNorm(x)), of four kinds (<c>layers_block_type</c>, or the <c>hybrid_override_pattern</c> string of the
/// released configs: M Mamba2, * attention, - MLP, E MoE): Mamba2 (<see cref="Mamba2Mixer"/>, chunked scan for
/// prefill, recurrence for decode), NoPE GQA attention, a non-gated relu² MLP, and a MoE of non-gated relu² experts
/// with a DeepSeek-style sigmoid router (correction bias, groups, routed scaling), a shared relu² expert and an
/// optional latent projection around the routed experts. Weights live under <c>backbone.</c>.
/// </summary>
[ModelType("nemotron_h", "NemotronHForCausalLM")]
public sealed class NemotronH : StackModel
{
    private readonly string[] _kinds;
    private readonly Mamba2Spec _mamba;
    private readonly AttentionSpec _attn;
    private readonly int _mlp;

    public NemotronH(ModelConfig c, WeightSource w, IBackend b) : base(c, w, b, RawKinds(c).Length)
    {
        float eps = (float)(c.Get<double?>("layer_norm_epsilon") ?? c.RmsNormEps ?? 1e-5);
        _kinds = BlockKinds(c, NumLayersConfigured);
        int heads = c.RequirePositive(c.NumAttentionHeads, "num_attention_heads");
        int kv = c.RequirePositive(c.NumKeyValueHeads ?? heads, "num_key_value_heads");
        if (heads % kv != 0) throw c.Invalid("num_key_value_heads", $"{kv} does not divide num_attention_heads {heads}");
        _attn = new AttentionSpec
        {
            Hidden = Hidden, Heads = heads, KvHeads = kv, HeadDim = c.RequirePositive(c.HeadDim ?? 128, "head_dim"),
            QkvBias = c.AttentionBias ?? false, OutBias = c.AttentionBias ?? false,
        };
        int mambaHeads = c.RequirePositive(c.Get<int?>("mamba_num_heads"), "mamba_num_heads");
        _mamba = new Mamba2Spec
        {
            Hidden = Hidden, Heads = mambaHeads,
            HeadDim = c.RequirePositive(c.Get<int?>("mamba_head_dim"), "mamba_head_dim"),
            StateSize = c.RequirePositive(c.Get<int?>("ssm_state_size"), "ssm_state_size"),
            Groups = c.RequirePositive(c.Get<int?>("n_groups") ?? 1, "n_groups"),
            ConvKernel = c.RequirePositive(c.Get<int?>("conv_kernel") ?? 4, "conv_kernel"),
            ConvBias = c.Get<bool?>("use_conv_bias") ?? true, ProjBias = c.Get<bool?>("use_bias") ?? false,
            NormEps = eps, TimeStepMin = (float)(c.Get<double?>("mamba_dt_min") ?? c.Get<double?>("time_step_min") ?? 0.001),
            ChunkSize = c.RequirePositive(c.Get<int?>("chunk_size") ?? 256, "chunk_size"),
        };
        if (_mamba.Heads % _mamba.Groups != 0) throw c.Invalid("n_groups", $"{_mamba.Groups} does not divide mamba_num_heads {_mamba.Heads}");
        if ((c.Get<string>("mamba_hidden_act") ?? "silu") is not ("silu" or "swish")) throw c.Invalid("mamba_hidden_act", "must be silu");
        var (act, squared) = Activation(c, c.Get<string>("mlp_hidden_act") ?? "relu2", "mlp_hidden_act");
        _mlp = c.IntermediateSize?[0] ?? 0;
        var tables = _kinds.Contains("mamba") ? new Mamba2Scan.Tables(w, _mamba.ChunkSize) : null;

        Embed = w.Get("backbone.embeddings.weight", [Vocab, Hidden], WeightUse.Embed);
        Stack = new IStackLayer[NumLayersConfigured];
        for (int i = 0; i < Stack.Length; i++)
        {
            string p = $"backbone.layers.{i}";
            var norm = RmsNorm.Load(w, $"{p}.norm.weight", Hidden, eps);
            IMixer mixer = _kinds[i] switch
            {
                "mamba" => new RecurrentMixer(new Mamba2Mixer(w, $"{p}.mixer", _mamba, tables!)),
                "attention" => new AttentionMixer(new SelfAttention(w, $"{p}.mixer", _attn)),
                "mlp" => new FeedForwardMixer(new UpDownMlp(Linear.Load(w, $"{p}.mixer.up_proj", Hidden, c.RequirePositive(_mlp, "intermediate_size"), c.MlpBias ?? false),
                    Linear.Load(w, $"{p}.mixer.down_proj", _mlp, Hidden, c.MlpBias ?? false), act, squared)),
                _ => new FeedForwardMixer(LoadMoe(c, w, $"{p}.mixer", act, squared)),
            };
            Stack[i] = new MixerLayer { PreMixerNorm = norm, Mixer = mixer };
        }
        FinalNorm = RmsNorm.Load(w, "backbone.norm_f.weight", Hidden, eps);
        LmHeadWeight = c.TieWordEmbeddings ?? false ? Embed : w.Get("lm_head.weight", Vocab, Hidden);
    }

    /// <summary>Runs every Mamba2 mixer token by token for prefill too (tests compare it with the chunked scan).</summary>
    public bool AlwaysRecurrent
    {
        set { foreach (var l in Stack) if (l.Mixer is RecurrentMixer { Block: Mamba2Mixer m }) m.AlwaysRecurrent = value; }
    }

    /// <summary>Block kinds from layers_block_type (current and earlier names) or hybrid_override_pattern; their count is the layer count.</summary>
    private static string[] RawKinds(ModelConfig c)
    {
        if (c.Get<string[]>("layers_block_type") is { } t) return t;
        if (c.Get<string>("hybrid_override_pattern") is { } pattern)
            return pattern.Select(ch => ch switch { 'M' => "mamba", '*' => "attention", '-' => "mlp", 'E' => "moe", _ => throw c.Invalid("hybrid_override_pattern", $"has '{ch}'; expected M, *, - or E") }).ToArray();
        throw c.Missing("layers_block_type");
    }

    private static string[] BlockKinds(ModelConfig c, int layers)
    {
        var raw = RawKinds(c);
        return raw.Select((k, i) => k switch
        {
            "mamba" or "linear_attention" => "mamba",
            "attention" or "full_attention" => "attention",
            "mlp" => "mlp",
            "moe" => "moe",
            _ => throw c.Invalid($"layers_block_type[{i}]", $"is '{k}'; expected mamba, attention, mlp or moe"),
        }).ToArray();
    }

    private static (UnaryOp Act, bool Squared) Activation(ModelConfig c, string name, string key) =>
        name == "relu2" ? (UnaryOp.Relu, true) : (Activations.Parse(c, name, key), false);

    private LatentMoe LoadMoe(ModelConfig c, WeightSource w, string p, UnaryOp act, bool squared)
    {
        var (E, key) = MoeLayers.RoutedExperts(c);
        int K = c.RequirePositive(c.NumExpertsPerTok, "num_experts_per_tok");
        int width = c.RequirePositive(c.MoeIntermediateSize, "moe_intermediate_size");
        int? latent = c.Get<int?>("moe_latent_size");
        if (latent is <= 0) throw c.Invalid("moe_latent_size", $"must be positive or null (got {latent})");
        var spec = new RouterSpec
        {
            Experts = E, TopK = K, Scoring = RouterScoring.Sigmoid, CorrectionBias = true, NormalizeTopK = c.NormTopkProb ?? true,
            Groups = c.NGroup ?? 1, TopKGroups = c.TopkGroup ?? 1, RoutedScaling = (float)(c.RoutedScalingFactor ?? 1.0),
        };
        spec.Validate(c, key);
        int inner = latent ?? Hidden;
        int sharedWidth = c.Get<int?>("moe_shared_expert_intermediate_size") ?? 0;
        return new LatentMoe
        {
            Spec = spec, Width = width, SharedWidth = sharedWidth,
            Router = Linear.Load(w, $"{p}.gate", Hidden, E, false),
            CorrectionBias = w.GetF32($"{p}.gate.e_score_correction_bias", E),
            Experts = ExpertSet.LoadPerExpertNonGated(w, $"{p}.experts", E, K, inner, width, act, squared),
            Shared = sharedWidth > 0 ? new UpDownMlp(Linear.Load(w, $"{p}.shared_experts.up_proj", Hidden, sharedWidth, c.MlpBias ?? false),
                Linear.Load(w, $"{p}.shared_experts.down_proj", sharedWidth, Hidden, c.MlpBias ?? false), act, squared) : null,
            Down = latent is int l ? Linear.Load(w, $"{p}.fc1_latent_proj", Hidden, l, c.MlpBias ?? false) : null,
            Up = latent is int l2 ? Linear.Load(w, $"{p}.fc2_latent_proj", l2, Hidden, c.MlpBias ?? false) : null,
        };
    }

    protected override ArchitectureInfo Describe()
    {
        var layers = Stack.Select(l => l.Mixer switch
        {
            AttentionMixer a => AttentionInfo(a.Attention.Spec) with { Ffn = FfnKind.None, FfnWidth = 0 },
            RecurrentMixer => new LayerInfo { Mixer = MixerKind.Ssm, Heads = _mamba.Heads, HeadDim = _mamba.HeadDim, ValueDim = _mamba.StateSize, Rope = false, StateValues = _mamba.StateValues, Ffn = FfnKind.None },
            FeedForwardMixer { Module: LatentMoe m } => new LayerInfo { Mixer = MixerKind.None, Rope = false, Ffn = FfnKind.Moe, Experts = m.Spec.Experts, ActiveExperts = m.Spec.TopK, SharedExperts = m.Shared is null ? 0 : 1, FfnWidth = m.Width },
            _ => new LayerInfo { Mixer = MixerKind.None, Rope = false, Ffn = FfnKind.Dense, FfnWidth = _mlp },
        }).ToList();
        return new ArchitectureInfo
        {
            Layers = layers, Norm = "pre-norm RMSNorm, one mixer per block", QkNorm = "none",
            Positions = "NoPE (order from the Mamba2 layers)",
            Notes = $"blocks: Mamba2 {_kinds.Count(k => k == "mamba")}, attention {_kinds.Count(k => k == "attention")}, MLP {_kinds.Count(k => k == "mlp")}, MoE {_kinds.Count(k => k == "moe")}; relu² MLPs",
        };
    }
}

/// <summary>A feed-forward block in a mixer-only stack (Nemotron-H's MLP and MoE blocks): no cache.</summary>
public sealed class FeedForwardMixer(IModule module) : IMixer
{
    public IModule Module { get; } = module;
    public Tensor Forward(IBackend b, Tensor x, ModelCache cache, int layer, StepBatch batch) => Module.Forward(b, x);
    public void CreateCache(IBackend b, ModelCache cache, int layer, int slots, int maxTokens) { }
}

/// <summary>
/// Nemotron-H's MoE: routing on x (sigmoid scores, correction bias for selection, groups, renormalized, scaled), the
/// routed experts on a latent projection of x when the config has one (fc1 down, fc2 back up), plus a shared expert on x.
/// </summary>
public sealed class LatentMoe : IModule
{
    public required RouterSpec Spec { get; init; }
    public required Linear Router { get; init; }
    public Tensor? CorrectionBias { get; init; }
    public required ExpertSet Experts { get; init; }
    public IModule? Shared { get; init; }
    public Linear? Down { get; init; }
    public Linear? Up { get; init; }
    public int Width { get; init; }
    public int SharedWidth { get; init; }

    public Tensor Forward(IBackend b, Tensor x)
    {
        int N = x.Shape[0], K = Spec.TopK;
        var (ids, w) = Moe.Route(b, Spec, Router.Forward(b, x), CorrectionBias);
        var xin = Down is null ? x : Down.Forward(b, x);
        int C = xin.Shape.Last;
        var y = b.Binary(Experts.Forward(b, b.View(xin, new Shape(N, 1, C)), ids), b.View(w, new Shape(N, K, 1)), BinaryOp.Mul);
        var sum = b.View(b.Reduce(y, ReduceOp.Sum, axis: 1), new Shape(N, C));
        if (Up is not null) sum = Up.Forward(b, sum);
        if (Shared is not null) b.BinaryInPlace(sum, Shared.Forward(b, x), BinaryOp.Add);
        return sum;
    }
}
