using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>
/// MiniMax-01 / MiniMax-M1 (<c>model_type</c> "minimax"): lightning attention (<see cref="LightningAttention"/>:
/// linear attention with fixed per-layer, per-head decay slopes) interleaved with full GQA softmax attention (RoPE,
/// partial where the config says so), a Mixtral-style MoE in every layer (softmax top-k, renormalized; experts
/// <c>w1</c>/<c>w3</c>/<c>w2</c>). The residual is DeepNorm-like: the layer keeps the *normed* input as residual and
/// mixes h = residual·alpha + sublayer·beta with per-kind factors (<c>linear_attn_*</c>, <c>full_attn_*</c>,
/// <c>mlp_*</c>), and the post-attention norm is applied to that sum before the MoE. Layer types come from
/// <c>layer_types</c>, the original <c>attn_type_list</c> (1 = softmax attention), or the reference's alternating default.
/// </summary>
[ModelType("minimax", "minimax_m1", "minimax_text_01", "MiniMaxForCausalLM", "MiniMaxText01ForCausalLM", "MiniMaxM1ForCausalLM")]
public sealed class MiniMax : StackModel
{
    private readonly string[] _types;
    private readonly AttentionSpec _attn;
    private readonly RouterSpec _router;
    private readonly int _width, _blockSize;

    public MiniMax(ModelConfig c, WeightSource w, IBackend b) : base(c, w, b)
    {
        float eps = (float)(c.RmsNormEps ?? 1e-5);
        int heads = c.RequirePositive(c.NumAttentionHeads, "num_attention_heads");
        int kv = c.RequirePositive(c.NumKeyValueHeads ?? heads, "num_key_value_heads");
        if (heads % kv != 0) throw c.Invalid("num_key_value_heads", $"{kv} does not divide num_attention_heads {heads}");
        int headDim = c.RequirePositive(c.HeadDim ?? Hidden / heads, "head_dim");
        var attnTypes = c.Get<int[]>("attn_type_list");
        _types = Types(attnTypes is not null ? i => attnTypes[i] == 1 ? "full_attention" : "linear_attention" : i => (i + 1) % 2 != 0 ? "full_attention" : "linear_attention",
            "full_attention", "linear_attention");
        _blockSize = c.RequirePositive(c.Get<int?>("block_size") ?? 256, "block_size");
        // The published remote-code configs (model_type "minimax_m1" / "minimax_text_01") name the rotary width
        // rotary_dim and the residual factors layernorm_*_alpha/beta; transformers' own "minimax" reads partial rotary
        // only through rope_parameters / partial_rotary_factor and names the factors *_alpha_factor / *_beta_factor.
        bool remote = c.ModelType is "minimax_m1" or "minimax_text_01";
        if (remote && c.Get<bool?>("postnorm") == false)
            throw c.Invalid("postnorm", "false is not supported: only the post-norm residual (the published checkpoints' and transformers' form) is implemented");
        var rope = Rope(RotaryEmbedding.Create(c, c.RopeFor(null), headDim, remote ? c.Get<int?>("rotary_dim") : null));
        _attn = new AttentionSpec { Hidden = Hidden, Heads = heads, KvHeads = kv, HeadDim = headDim, Rope = rope, Window = c.SlidingWindow ?? 0 };
        var (E, key) = MoeLayers.RoutedExperts(c);
        _router = new RouterSpec { Experts = E, TopK = c.RequirePositive(c.NumExpertsPerTok, "num_experts_per_tok"), Scoring = RouterScoring.Softmax, NormalizeTopK = true };
        _router.Validate(c, key);
        _width = c.RequirePositive(c.IntermediateSize?[0], "intermediate_size");
        float F(string k) => (float)(c.Get<double?>(k) ?? c.Get<double?>(RemoteName(k)) ?? 1.0);

        Embed = w.Get("model.embed_tokens.weight", [Vocab, Hidden], WeightUse.Embed);
        Stack = new IStackLayer[NumLayersConfigured];
        for (int i = 0; i < Stack.Length; i++)
        {
            string p = $"model.layers.{i}";
            bool linear = _types[i] == "linear_attention";
            IMixer mixer = linear
                ? new RecurrentMixer(new LightningAttention(w, $"{p}.self_attn", Hidden, heads, headDim, _blockSize, i, Stack.Length))
                : new AttentionMixer(new SelfAttention(w, $"{p}.self_attn", _attn));
            string moe = $"{p}.block_sparse_moe";
            Stack[i] = new Layer
            {
                Mixer = mixer,
                InputNorm = RmsNorm.Load(w, $"{p}.input_layernorm.weight", Hidden, eps),
                PostNorm = RmsNorm.Load(w, $"{p}.post_attention_layernorm.weight", Hidden, eps),
                Moe = new Moe(_router, Linear.Load(w, $"{moe}.gate", Hidden, E, false), null,
                    ExpertSet.LoadPerExpert(w, $"{moe}.experts", E, _router.TopK, Hidden, _width, ExpertActivation.SwiGlu, gate: "w1", up: "w3", down: "w2"))
                { Width = _width },
                AttnAlpha = F(linear ? "linear_attn_alpha_factor" : "full_attn_alpha_factor"),
                AttnBeta = F(linear ? "linear_attn_beta_factor" : "full_attn_beta_factor"),
                MlpAlpha = F("mlp_alpha_factor"), MlpBeta = F("mlp_beta_factor"),
            };
        }
        FinalNorm = RmsNorm.Load(w, "model.norm.weight", Hidden, eps);
        LmHeadWeight = c.TieWordEmbeddings ?? false ? Embed : w.Get("lm_head.weight", Vocab, Hidden);
    }

    /// <summary>The remote-code config's name of a residual factor (full_attn_alpha_factor → layernorm_full_attention_alpha).</summary>
    private static string RemoteName(string key) =>
        "layernorm_" + key.Replace("_factor", "").Replace("attn_", "attention_");

    /// <summary>Runs every lightning layer token by token for prefill too (tests compare it with the block form).</summary>
    public bool AlwaysRecurrent
    {
        set { foreach (var l in Stack) if (l.Mixer is RecurrentMixer { Block: LightningAttention a }) a.AlwaysRecurrent = value; }
    }

    /// <summary>h = norm(x); h = h·α + mixer(h)·β; h = norm₂(h); out = h·α' + moe(h)·β'.</summary>
    private sealed class Layer : IStackLayer
    {
        public required IMixer Mixer { get; init; }
        public required RmsNorm InputNorm { get; init; }
        public required RmsNorm PostNorm { get; init; }
        public required Moe Moe { get; init; }
        public float AttnAlpha { get; init; } = 1f;
        public float AttnBeta { get; init; } = 1f;
        public float MlpAlpha { get; init; } = 1f;
        public float MlpBeta { get; init; } = 1f;

        public Tensor Forward(IBackend b, Tensor x, ModelCache cache, int layer, StepBatch batch)
        {
            var h = InputNorm.Forward(b, x);
            var a = Mixer.Forward(b, h, cache, layer, batch);
            h = Mix(b, h, AttnAlpha, a, AttnBeta);
            h = PostNorm.Forward(b, h);
            return Mix(b, h, MlpAlpha, Moe.Forward(b, h), MlpBeta);
        }

        private static Tensor Mix(IBackend b, Tensor residual, float alpha, Tensor y, float beta)
        {
            var r = alpha == 1f ? residual : b.Unary(residual, UnaryOp.Affine, alpha);
            return b.Binary(r, beta == 1f ? y : b.Unary(y, UnaryOp.Affine, beta), BinaryOp.Add);
        }
    }

    protected override ArchitectureInfo Describe()
    {
        var layers = Stack.Select(l => ((Layer)l).Mixer is AttentionMixer a
            ? AttentionInfo(a.Attention.Spec).WithFfn(((Layer)l).Moe)
            : new LayerInfo
            {
                Mixer = MixerKind.Linear, Heads = _attn.Heads, KvHeads = _attn.Heads, HeadDim = _attn.HeadDim, ValueDim = _attn.HeadDim, Rope = false,
                StateValues = (long)_attn.Heads * _attn.HeadDim * _attn.HeadDim,
            }.WithFfn(((Layer)l).Moe)).ToList();
        int linear = _types.Count(t => t == "linear_attention");
        return new ArchitectureInfo
        {
            Layers = layers, Norm = "pre-norm RMSNorm with scaled residuals (alpha·normed input + beta·sublayer)", QkNorm = "none",
            Positions = $"RoPE (theta {Config.RopeFor(null).RopeTheta ?? Config.RopeTheta ?? 10000:G}, rotary {_attn.Rope!.RotaryDim}/{_attn.HeadDim}) on softmax layers; lightning layers use decay only",
            Notes = $"lightning attention {linear} : softmax attention {_types.Length - linear} (block size {_blockSize})",
        };
    }
}
