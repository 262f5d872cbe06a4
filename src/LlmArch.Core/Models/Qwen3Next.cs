using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;
using LlmArch.Generation;

namespace LlmArch.Models;

/// <summary>
/// Qwen3-Next (<c>model_type</c> "qwen3_next"): a 3:1 hybrid of Gated DeltaNet linear attention
/// (<c>layer_types</c> "linear_attention", constant-size conv + recurrent state in <see cref="ModelCache.State"/>)
/// and gated full attention (q_proj doubled: per head [query | gate], output × sigmoid(gate), per-head QK-norm,
/// partial RoPE), zero-centred (1 + w) RMSNorms everywhere except the DeltaNet output norm, and a MoE with a
/// shared expert scaled by its own sigmoid gate. Checkpoints with <c>mtp.*</c> weights also load the
/// multi-token-prediction head and offer self-speculative decoding through <see cref="IMtpDraft"/>.
/// </summary>
[ModelType("qwen3_next", "Qwen3NextForCausalLM")]
public sealed class Qwen3Next : CausalLM, IMtpDraft
{
    private readonly int _hidden, _vocab, _layers, _maxPos;
    private readonly float _eps;
    private readonly Tensor _embed, _lmHead;
    private readonly RmsNorm _norm;
    private readonly Layer[] _stack;
    private readonly MtpHead? _mtp;

    public override int VocabSize => _vocab;
    public override int MaxPositions => _maxPos;
    public override int HiddenSize => _hidden;
    public override ArchitectureInfo Info { get; }

    public Qwen3Next(ModelConfig c, WeightSource w, IBackend b) : base(c, w, b)
    {
        _hidden = c.RequirePositive(c.HiddenSize, "hidden_size");
        _vocab = c.RequirePositive(c.VocabSize, "vocab_size");
        _layers = c.RequirePositive(c.NumHiddenLayers, "num_hidden_layers");
        _maxPos = c.RequirePositive(c.MaxPositionEmbeddings, "max_position_embeddings");
        _eps = (float)(c.RmsNormEps ?? 1e-6);
        // Released configs give full_attention_interval instead of layer_types (every interval-th layer is full attention).
        var types = LayerTypes.Resolve(c, _layers,
            i => (i + 1) % (c.Get<int?>("full_attention_interval") ?? throw c.Missing("layer_types")) == 0 ? "full_attention" : "linear_attention",
            "linear_attention", "full_attention")!;
        var rope = RotaryEmbedding.Create(c, c.RopeFor(null), AttentionShape(c).HeadDim);
        _rope = rope;
        var attn = AttentionShape(c) with
        {
            OutBias = c.AttentionBias ?? false, QkNorm = QkNormKind.PerHead, NormOffset = 1f, NormEps = _eps, Rope = rope, OutputGate = true,
        };
        var dn = new DeltaNetSpec
        {
            Hidden = _hidden,
            KeyHeads = c.RequirePositive(c.LinearNumKeyHeads, "linear_num_key_heads"),
            ValueHeads = c.RequirePositive(c.LinearNumValueHeads, "linear_num_value_heads"),
            KeyDim = c.RequirePositive(c.LinearKeyHeadDim, "linear_key_head_dim"),
            ValueDim = c.RequirePositive(c.LinearValueHeadDim, "linear_value_head_dim"),
            ConvKernel = c.RequirePositive(c.LinearConvKernelDim, "linear_conv_kernel_dim"),
            NormEps = _eps,
        };
        if (dn.ValueHeads % dn.KeyHeads != 0)
            throw c.Invalid("linear_num_value_heads", $"{dn.ValueHeads} is not a multiple of linear_num_key_heads {dn.KeyHeads}");

        _embed = w.Get("model.embed_tokens.weight", [_vocab, _hidden], WeightUse.Embed);
        _stack = new Layer[_layers];
        var infos = new List<LayerInfo>();
        for (int i = 0; i < _layers; i++)
        {
            string p = $"model.layers.{i}";
            var layer = new Layer { InputNorm = Norm(w, $"{p}.input_layernorm.weight"), PostNorm = Norm(w, $"{p}.post_attention_layernorm.weight") };
            LayerInfo info;
            switch (types[i])
            {
                case "linear_attention":
                    layer.Linear = new GatedDeltaNet(w, $"{p}.linear_attn", dn);
                    info = new LayerInfo
                    {
                        Mixer = MixerKind.Linear, Heads = dn.ValueHeads, KvHeads = dn.KeyHeads, HeadDim = dn.KeyDim, ValueDim = dn.ValueDim,
                        Rope = false, StateValues = dn.StateValues,
                    };
                    break;
                case "full_attention":
                    layer.Attention = new SelfAttention(w, $"{p}.self_attn", attn);
                    info = new LayerInfo
                    {
                        Mixer = MixerKind.Full, Heads = attn.Heads, KvHeads = attn.KvHeads, HeadDim = attn.HeadDim, ValueDim = attn.HeadDim,
                        KvValuesPerToken = 2L * attn.KvHeads * attn.HeadDim,
                    };
                    break;
                default:
                    throw new InvalidOperationException(types[i]);
            }
            bool moe = !(c.MlpOnlyLayers ?? []).Contains(i) && (c.NumExperts ?? 0) > 0 && (i + 1) % Math.Max(1, c.DecoderSparseStep ?? 1) == 0;
            (layer.Mlp, info) = FeedForward(c, w, $"{p}.mlp", moe, info);
            _stack[i] = layer;
            infos.Add(info);
        }
        _norm = Norm(w, "model.norm.weight");
        _lmHead = c.TieWordEmbeddings ?? false ? _embed : w.Get("lm_head.weight", _vocab, _hidden);
        if (w.Contains("mtp.fc.weight") && w.HasData) _mtp = LoadMtp(w, attn);
        int linear = infos.Count(l => l.Mixer == MixerKind.Linear);
        Info = new ArchitectureInfo
        {
            Layers = infos, Norm = "pre-norm zero-centred RMSNorm (1 + w)", QkNorm = "per-head RMSNorm (1 + w); L2 in DeltaNet",
            Positions = $"RoPE (theta {c.RopeFor(null).RopeTheta ?? c.RopeTheta:G}, partial {rope.RotaryDim}/{attn.HeadDim}) on attention layers; none in DeltaNet",
            Notes = $"Gated DeltaNet {linear} : gated attention {_layers - linear}" + (_mtp is not null ? ", MTP head" : ""),
        };
    }

    internal static AttentionSpec AttentionShape(ModelConfig c)
    {
        int hidden = c.RequirePositive(c.HiddenSize, "hidden_size"), heads = c.RequirePositive(c.NumAttentionHeads, "num_attention_heads");
        int kv = c.RequirePositive(c.NumKeyValueHeads ?? heads, "num_key_value_heads");
        if (heads % kv != 0) throw c.Invalid("num_key_value_heads", $"{kv} does not divide num_attention_heads {heads}");
        return new AttentionSpec { Hidden = hidden, Heads = heads, KvHeads = kv, HeadDim = c.RequirePositive(c.HeadDim ?? hidden / heads, "head_dim"), QkvBias = c.AttentionBias ?? false };
    }

    private RmsNorm Norm(WeightSource w, string name) => RmsNorm.Load(w, name, _hidden, _eps, 1f);

    private (IModule, LayerInfo) FeedForward(ModelConfig c, WeightSource w, string p, bool moe, LayerInfo info)
    {
        if (!moe)
        {
            int inter = c.RequirePositive(c.IntermediateSize?[0], "intermediate_size");
            return (GatedMlp.Load(w, p, _hidden, inter, UnaryOp.Silu), info with { Ffn = FfnKind.Dense, FfnWidth = inter });
        }
        int E = c.RequirePositive(c.NumExperts, "num_experts"), K = c.RequirePositive(c.NumExpertsPerTok, "num_experts_per_tok");
        int width = c.RequirePositive(c.MoeIntermediateSize, "moe_intermediate_size");
        var spec = new RouterSpec { Experts = E, TopK = K, Scoring = RouterScoring.Softmax, NormalizeTopK = c.NormTopkProb ?? true };
        spec.Validate(c, "num_experts");
        ExpertSet experts = w.HasData && w.Contains($"{p}.experts.gate_up_proj")
            ? ExpertSet.FromStacked(w.Get($"{p}.experts.gate_up_proj", [E, 2L * width, _hidden], WeightUse.Expert(K, E)), null,
                w.Get($"{p}.experts.down_proj", [E, _hidden, width], WeightUse.Expert(K, E)), null, ExpertActivation.SwiGlu, false)
            : ExpertSet.LoadPerExpert(w, $"{p}.experts", E, K, _hidden, width, ExpertActivation.SwiGlu);
        int sharedWidth = c.SharedExpertIntermediateSize ?? 0;
        IModule? shared = sharedWidth > 0 ? GatedMlp.Load(w, $"{p}.shared_expert", _hidden, sharedWidth, UnaryOp.Silu) : null;
        Linear? sharedGate = sharedWidth > 0 ? Linear.Load(w, $"{p}.shared_expert_gate", _hidden, 1, false) : null;
        var block = new Moe(spec, Linear.Load(w, $"{p}.gate", _hidden, E, false), null, experts, shared, sharedGate) { Width = width, SharedWidth = sharedWidth, SharedCount = shared is null ? 0 : 1 };
        return (block, info with { Ffn = FfnKind.Moe, Experts = E, ActiveExperts = K, SharedExperts = shared is null ? 0 : 1, FfnWidth = width });
    }

    private readonly RopeTable _rope;

    public override ModelCache CreateCache(int slots, int maxTokens)
    {
        var cache = new ModelCache(Backend, _layers, slots, maxTokens);
        for (int i = 0; i < _layers; i++)
        {
            if (_stack[i].Linear is { } dn) cache.State[i] = dn.CreateState(Backend, slots);
            else cache.Kv[i] = _stack[i].Attention!.CreateCache(Backend, slots, maxTokens);
        }
        _rope.Ensure(Backend, maxTokens);
        return cache;
    }

    protected override Tensor HiddenStates(StepBatch batch, ModelCache cache)
    {
        var b = Backend;
        var x = b.Gather(_embed, batch.Ids!);
        for (int i = 0; i < _layers; i++) x = _stack[i].Forward(b, x, cache, i, batch);
        return _norm.Forward(b, x);
    }

    protected override Tensor Head(Tensor hidden) => Backend.MatMul(hidden, _lmHead);

    /// <summary>One decoder layer: pre-norm mixer (DeltaNet or gated attention) and pre-norm MLP/MoE, both residual.</summary>
    private sealed class Layer
    {
        public required RmsNorm InputNorm { get; init; }
        public required RmsNorm PostNorm { get; init; }
        public GatedDeltaNet? Linear { get; set; }
        public SelfAttention? Attention { get; set; }
        public IModule Mlp { get; set; } = null!;

        public Tensor Forward(IBackend b, Tensor x, ModelCache cache, int i, StepBatch batch)
        {
            var h = InputNorm.Forward(b, x);
            b.BinaryInPlace(x, Linear is not null ? Linear.Forward(b, h, (RecurrentState)cache.State[i]!, batch) : Attention!.Forward(b, h, cache.Kv[i], batch), BinaryOp.Add);
            b.BinaryInPlace(x, Mlp.Forward(b, PostNorm.Forward(b, x)), BinaryOp.Add);
            return x;
        }
    }

    // ---------------- multi-token prediction ----------------

    /// <summary>
    /// The MTP head (<c>mtp.*</c>): fc over [pre_fc_norm_embedding(embed(next token)) | pre_fc_norm_hidden(hidden)], one
    /// gated-attention decoder layer with its own KV cache, a final (1 + w) norm, and the shared LM head.
    /// </summary>
    private MtpHead LoadMtp(WeightSource w, AttentionSpec attn)
    {
        var c = Config;
        int layers = c.MtpNumHiddenLayers ?? 1;
        if (layers != 1) throw c.Invalid("mtp_num_hidden_layers", $"is {layers}; only one MTP layer is supported");
        bool moe = w.Contains("mtp.layers.0.mlp.gate.weight") && (c.NumExperts ?? 0) > 0;
        return new MtpHead
        {
            EmbedNorm = Norm(w, "mtp.pre_fc_norm_embedding.weight"),
            HiddenNorm = Norm(w, "mtp.pre_fc_norm_hidden.weight"),
            Fc = Linear.Load(w, "mtp.fc", 2 * _hidden, _hidden, false),
            Layer = new DecoderLayer
            {
                Placement = NormPlacement.Pre,
                InputNorm = Norm(w, "mtp.layers.0.input_layernorm.weight"),
                Attention = new SelfAttention(w, "mtp.layers.0.self_attn", attn),
                PreFeedForwardNorm = Norm(w, "mtp.layers.0.post_attention_layernorm.weight"),
                FeedForward = FeedForward(c, w, "mtp.layers.0.mlp", moe, new LayerInfo()).Item1,
            },
            FinalNorm = Norm(w, "mtp.norm.weight"),
            Embed = _embed,
            LmHead = _lmHead,
        };
    }

    public bool HasDraftHead => _mtp is not null;

    public ModelCache CreateDraftCache(int maxTokens) =>
        (_mtp ?? throw new LlmArchInputException($"{Config.SourcePath}: this checkpoint has no mtp.* weights (no multi-token-prediction head)")).CreateCache(Backend, maxTokens);

    public void ForwardBase(ReadOnlySpan<int> ids, ModelCache cache, Span<float> logits, Span<float> hidden) =>
        MtpDraft.ForwardBase(this, ids, cache, logits, hidden);

    public void ForwardDraft(ReadOnlySpan<float> hidden, ReadOnlySpan<int> nextTokens, ModelCache draftCache, Span<float> logits, Span<float> outHidden) =>
        MtpDraft.ForwardDraft(this, _mtp ?? throw new LlmArchInputException($"{Config.SourcePath}: this checkpoint has no mtp.* weights"),
            hidden, nextTokens, draftCache, logits, outHidden);
}
