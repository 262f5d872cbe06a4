using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>
/// DeepSeek-V3.2 (<c>model_type</c> "deepseek_v32"): DeepSeek-V3 with DeepSeek Sparse Attention on every layer
/// (<see cref="DsaAttention"/>: MLA whose queries each read only the <c>index_topk</c> cached tokens a lightning indexer
/// picks; the indexer keys are cached beside the MLA latent). The rest is DeepSeek-V3: YaRN with mscale folded into the
/// softmax scale, interleaved RoPE on the decoupled rope dims, dense layers (<c>mlp_layer_types</c> "dense", or the first
/// <c>first_k_dense_replace</c>) then a sigmoid-routed MoE with correction bias, group-limited top-k, routed scaling and
/// shared experts. The indexer ropes its first rope dims half-split. GLM-5 (<see cref="GlmMoeDsa"/>) derives from this.
/// </summary>
[ModelType("deepseek_v32", "DeepseekV32ForCausalLM")]
public class DeepseekV32 : StackModel
{
    // DSA / compressed attention pick keys on the host from positions: steps are not recorded as graphs.
    protected override bool StepGraphsAllowed => false;

    protected readonly MlaSpec MlaShape;
    protected readonly int IndexHeads, IndexDim, IndexTopK;
    private readonly RouterSpec _router;
    private readonly TopKShare _share = new();
    private readonly int _expertWidth, _shared;

    public DeepseekV32(ModelConfig c, WeightSource w, IBackend b) : this(c, w, b, indexerRopeInterleaved: false) { }

    protected DeepseekV32(ModelConfig c, WeightSource w, IBackend b, bool indexerRopeInterleaved) : base(c, w, b)
    {
        float eps = (float)(c.RmsNormEps ?? 1e-6);
        int heads = c.RequirePositive(c.NumAttentionHeads, "num_attention_heads");
        int nope = c.RequirePositive(c.Get<int?>("qk_nope_head_dim"), "qk_nope_head_dim");
        int rope = c.RequirePositive(c.Get<int?>("qk_rope_head_dim"), "qk_rope_head_dim");
        var rp = c.RopeFor(null);
        MlaShape = new MlaSpec
        {
            Hidden = Hidden, Heads = heads, QLoraRank = c.RequirePositive(c.Get<int?>("q_lora_rank"), "q_lora_rank"),
            KvLoraRank = c.RequirePositive(c.Get<int?>("kv_lora_rank"), "kv_lora_rank"),
            NopeDim = nope, RopeDim = rope, ValueDim = c.RequirePositive(c.Get<int?>("v_head_dim"), "v_head_dim"),
            Bias = c.AttentionBias ?? false, NormEps = eps,
            Rope = Rope(RotaryEmbedding.Create(c, rp, rope, rope)), RopeInterleaved = c.Get<bool?>("rope_interleave") ?? true,
            Scale = (float)(1.0 / Math.Sqrt(nope + rope) * RotaryEmbedding.YarnSoftmaxScale(rp)),
        };
        IndexHeads = c.RequirePositive(c.Get<int?>("index_n_heads"), "index_n_heads");
        IndexDim = c.RequirePositive(c.Get<int?>("index_head_dim"), "index_head_dim");
        IndexTopK = c.RequirePositive(c.Get<int?>("index_topk"), "index_topk");
        var (experts, key) = MoeLayers.RoutedExperts(c);
        _router = new RouterSpec
        {
            Experts = experts, TopK = c.RequirePositive(c.NumExpertsPerTok, "num_experts_per_tok"),
            Scoring = (c.ScoringFunc ?? "sigmoid") switch
            {
                "sigmoid" => RouterScoring.Sigmoid, "softmax" => RouterScoring.Softmax,
                var f => throw c.Invalid("scoring_func", $"'{f}' is not supported (sigmoid, softmax)"),
            },
            NormalizeTopK = c.NormTopkProb ?? true, Groups = c.NGroup ?? 1, TopKGroups = c.TopkGroup ?? 1,
            CorrectionBias = (c.TopkMethod ?? "noaux_tc") == "noaux_tc", RoutedScaling = (float)(c.RoutedScalingFactor ?? 1.0),
        };
        _router.Validate(c, key);
        _expertWidth = c.RequirePositive(c.MoeIntermediateSize, "moe_intermediate_size");
        _shared = c.NSharedExperts ?? 0;
        var mlpTypes = c.Get<string[]>("mlp_layer_types");
        if (mlpTypes is not null && mlpTypes.Length != NumLayersConfigured) throw c.Invalid("mlp_layer_types", $"has {mlpTypes.Length} entries for {NumLayersConfigured} layers");
        int dense = c.FirstKDenseReplace ?? 3;
        var sharedIndexer = IndexerShared(c);
        if (sharedIndexer.Length > 0 && sharedIndexer[0]) throw c.Invalid("indexer_types", "starts with a shared layer: the first layer must run its own indexer");
        var positions = PositionRange.Load(w, MaxPos);

        Embed = w.Get("model.embed_tokens.weight", [Vocab, Hidden], WeightUse.Embed);
        Stack = new IStackLayer[NumLayersConfigured];
        for (int i = 0; i < Stack.Length; i++)
        {
            string p = $"model.layers.{i}";
            var dsa = new DsaSpec { Heads = IndexHeads, HeadDim = IndexDim, TopK = IndexTopK, RopeInterleaved = indexerRopeInterleaved, Shared = sharedIndexer.Length > 0 && sharedIndexer[i] };
            bool sparse = mlpTypes is not null ? mlpTypes[i] == "sparse" : i >= dense;
            Stack[i] = new MixerLayer
            {
                PreMixerNorm = RmsNorm.Load(w, $"{p}.input_layernorm.weight", Hidden, eps),
                Mixer = new DsaAttention(w, $"{p}.self_attn", MlaShape, dsa, Stack.Length + i, _share, positions),
                PreFeedForwardNorm = RmsNorm.Load(w, $"{p}.post_attention_layernorm.weight", Hidden, eps),
                FeedForward = sparse ? LoadMoe(w, $"{p}.mlp")
                    : GatedMlp.Load(w, $"{p}.mlp", Hidden, c.RequirePositive(c.IntermediateSize?[0], "intermediate_size"), Activations.Parse(c, c.HiddenAct ?? "silu", "hidden_act"), c.MlpBias ?? false),
            };
        }
        FinalNorm = RmsNorm.Load(w, "model.norm.weight", Hidden, eps);
        LmHeadWeight = c.TieWordEmbeddings ?? false ? Embed : w.Get("lm_head.weight", Vocab, Hidden);
    }

    /// <summary>Per layer, whether it reuses an earlier layer's top-k instead of running its own indexer (none for V3.2).</summary>
    protected virtual bool[] IndexerShared(ModelConfig c) => [];

    /// <summary>Two cache entries per layer: the MLA latent at [i], the indexer keys at [layers + i].</summary>
    protected override int CacheEntries => 2 * Stack.Length;

    /// <summary>Runs every layer's sparse attention densely with its selection as a mask (tests compare it with the gathered form).</summary>
    public bool DenseMasked
    {
        set { foreach (var l in Stack) ((DsaAttention)((MixerLayer)l).Mixer).DenseMasked = value; }
    }

    protected override Tensor HiddenStates(StepBatch batch, ModelCache cache)
    {
        _share.Clear();
        return base.HiddenStates(batch, cache);
    }

    private Moe LoadMoe(WeightSource w, string p)
    {
        var router = Linear.Load(w, $"{p}.gate", Hidden, _router.Experts, false);
        var bias = _router.CorrectionBias ? w.GetF32($"{p}.gate.e_score_correction_bias", _router.Experts) : null;
        var experts = ExpertSet.LoadPerExpert(w, $"{p}.experts", _router.Experts, _router.TopK, Hidden, _expertWidth, ExpertActivation.SwiGlu);
        var shared = _shared > 0 ? MoeLayers.SharedExperts(w, $"{p}.shared_experts", Hidden, _expertWidth * _shared) : null;
        return new Moe(_router, router, bias, experts, shared) { Width = _expertWidth, SharedWidth = _expertWidth * _shared, SharedCount = _shared };
    }

    protected override ArchitectureInfo Describe()
    {
        var m = MlaShape;
        var layers = Stack.Select(l =>
        {
            var dsa = ((DsaAttention)((MixerLayer)l).Mixer).Spec;
            return new LayerInfo
            {
                Mixer = MixerKind.SparseMla, Heads = m.Heads, KvHeads = 1, HeadDim = m.QkHeadDim, ValueDim = m.ValueDim,
                KvValuesPerToken = m.CacheDim + (dsa.Shared ? 0 : IndexDim), SparseTopK = IndexTopK,
                IndexerMacsPerKey = dsa.Shared ? 0 : (long)IndexHeads * IndexDim,
            }.WithFfn(((MixerLayer)l).FeedForward!);
        }).ToList();
        var rp = Config.RopeFor(null);
        return new ArchitectureInfo
        {
            Layers = layers, Norm = "pre-norm RMSNorm", QkNorm = "none (MLA latent norms)",
            Positions = $"decoupled RoPE on {m.RopeDim} of {m.QkHeadDim} q/k dims ({rp.Kind}, theta {rp.RopeTheta ?? Config.RopeTheta ?? 10000:G})",
            Notes = $"MLA + DSA: lightning indexer {IndexHeads}x{IndexDim} picks top-{IndexTopK} tokens per query; latent {m.KvLoraRank} + rope key {m.RopeDim} + indexer key {IndexDim} cached per token"
                    + (layers.Any(l => l.IndexerMacsPerKey == 0) ? $"; {layers.Count(l => l.IndexerMacsPerKey == 0)} layers reuse an earlier layer's selection" : ""),
        };
    }
}
