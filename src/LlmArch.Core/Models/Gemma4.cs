using System.Text.Json.Nodes;
using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>
/// Gemma 4 text stack (<c>model_type</c> "gemma4_text", or "gemma4" through its <c>text_config</c>, weights under
/// <c>model.language_model</c>). Gemma 3's recipe (sandwich norms, embedding scale √C, sliding 5 : global 1, QK-norm,
/// final softcap) with:
/// <list type="bullet">
/// <item>wider global layers: head dim and KV heads per layer from <c>per_layer_config</c> (or <c>global_head_dim</c> /
/// <c>num_global_key_value_heads</c>), proportional partial RoPE on them (the rotated frequencies are spaced over the
/// whole head dim, the rest do not rotate), and with <c>attention_k_eq_v</c> the raw key projection doubling as the
/// values; values are RMS-normalized without a weight and the attention scale is 1;</item>
/// <item>Gemma 3n's per-layer embeddings (PLE) and KV sharing by the last <c>num_kv_shared_layers</c> layers (each reads
/// the last earlier layer of its type), whose MLPs are twice as wide with <c>use_double_wide_mlp</c>;</item>
/// <item>a learned scalar per layer on the layer's output, and an optional MoE block beside the MLP (26B-A4B).</item>
/// </list>
/// Norms are plain x·w RMSNorms.
/// </summary>
[ModelType("gemma4_text", "gemma4", "Gemma4ForCausalLM", "Gemma4ForConditionalGeneration")]
public sealed class Gemma4 : StackModel
{
    private readonly string[] _types;
    private readonly int _ple, _pleVocab;
    private readonly Tensor? _embedPerLayer;
    private readonly Linear? _pleProjection;
    private readonly RmsNorm? _pleNorm;
    private readonly KvShare _share;
    private readonly int?[] _sources;
    private readonly int[] _widths;

    public Gemma4(ModelConfig c, WeightSource w, IBackend b) : base(c, w, b)
    {
        float eps = (float)(c.RmsNormEps ?? 1e-6);
        int heads = c.RequirePositive(c.NumAttentionHeads, "num_attention_heads");
        int kv = c.RequirePositive(c.NumKeyValueHeads ?? heads, "num_key_value_heads");
        int headDim = c.RequirePositive(c.HeadDim ?? 256, "head_dim");
        int layers = NumLayersConfigured;
        var types = c.CheckedLayerTypes(layers)?.ToArray()
                    ?? Enumerable.Range(0, layers).Select(i => (i + 1) % (c.SlidingWindowPattern ?? 6) != 0 ? "sliding_attention" : "full_attention").ToArray();
        types[^1] = "full_attention"; // the reference forces the last layer global
        foreach (var (t, i) in types.Select((t, i) => (t, i)))
            if (t is not ("sliding_attention" or "full_attention")) throw c.Invalid($"layer_types[{i}]", $"is '{t}'; expected sliding_attention or full_attention");
        _types = types;
        EmbedScale = MathF.Sqrt(Hidden);
        FinalSoftcap = (float)(c.FinalLogitSoftcapping ?? 0);
        bool kEqV = c.Get<bool?>("attention_k_eq_v") ?? false;
        int shared = c.NumKvSharedLayers ?? 0;
        if (shared < 0 || shared >= layers) throw c.Invalid("num_kv_shared_layers", $"must be in [0, {layers}) (got {shared})");
        int firstShared = layers - shared;
        bool doubleWide = c.Get<bool?>("use_double_wide_mlp") ?? false;
        int inter = c.RequirePositive(c.IntermediateSize?[0], "intermediate_size");
        var actOp = Activations.Parse(c, c.HiddenActivation ?? c.HiddenAct ?? "gelu_pytorch_tanh", "hidden_activation");
        var act = ExpertActivation.Of(actOp);
        _ple = c.HiddenSizePerLayerInput ?? 0;
        _pleVocab = c.VocabSizePerLayerInput ?? Vocab;

        // Multimodal checkpoints keep the text stack under model.language_model.
        string p0 = w.HasData && w.Contains("model.language_model.embed_tokens.weight") ? "model.language_model" : "model";
        Embed = w.Get($"{p0}.embed_tokens.weight", [Vocab, Hidden], WeightUse.Embed);
        if (_ple > 0)
        {
            _embedPerLayer = w.Get($"{p0}.embed_tokens_per_layer.weight", [_pleVocab, (long)layers * _ple], WeightUse.Embed);
            _pleProjection = Linear.Load(w, $"{p0}.per_layer_model_projection", Hidden, layers * _ple, false);
            _pleNorm = RmsNorm.Load(w, $"{p0}.per_layer_projection_norm.weight", _ple, eps);
        }
        _share = new KvShare(layers);
        _sources = new int?[layers];
        _widths = new int[layers];
        var ropes = new Dictionary<(string, int), RopeTable>();
        var sources = new HashSet<int>();
        for (int i = firstShared; i < layers && firstShared > 0; i++)
        {
            int src = Array.LastIndexOf(types, types[i], firstShared - 1);
            if (src < 0) throw c.Invalid("num_kv_shared_layers", $"leaves shared layer {i} ({types[i]}) with no earlier {types[i]} layer to share the KV cache of");
            _sources[i] = src;
            sources.Add(src);
        }
        Stack = new IStackLayer[layers];
        for (int i = 0; i < layers; i++)
        {
            string p = $"{p0}.layers.{i}", type = types[i];
            bool global = type == "full_attention";
            var (hd, kvh) = LayerShape(c, i, type, headDim, kv);
            if (heads % kvh != 0) throw c.Invalid("num_key_value_heads", $"{kvh} (layer {i}) does not divide num_attention_heads {heads}");
            if (!ropes.TryGetValue((type, hd), out var rope)) ropes[(type, hd)] = rope = Rope(RopeFor(c, type, hd));
            var spec = new AttentionSpec
            {
                Hidden = Hidden, Heads = heads, KvHeads = kvh, HeadDim = hd, QkNorm = QkNormKind.PerHead, NormEps = eps, ValueNorm = true,
                Scale = 1f, Rope = rope, Window = global ? 0 : c.RequirePositive(c.SlidingWindow, "sliding_window"),
                ValueIsKey = kEqV && global, KvSource = _sources[i], KvShared = sources.Contains(i),
                QkvBias = c.AttentionBias ?? false, OutBias = c.AttentionBias ?? false,
            };
            _widths[i] = doubleWide && i >= firstShared && firstShared > 0 ? 2 * inter : inter;
            var mlp = GatedMlp.Load(w, $"{p}.mlp", Hidden, _widths[i], actOp);
            IModule ffn = c.Get<bool?>("enable_moe_block") ?? false ? new Gemma4Moe(c, w, p, Hidden, eps, mlp, act) : mlp;
            Stack[i] = new Layer
            {
                Mixer = new AttentionMixer(new SelfAttention(w, $"{p}.self_attn", spec), _share),
                InputNorm = RmsNorm.Load(w, $"{p}.input_layernorm.weight", Hidden, eps),
                PostAttentionNorm = RmsNorm.Load(w, $"{p}.post_attention_layernorm.weight", Hidden, eps),
                PreFfnNorm = RmsNorm.Load(w, $"{p}.pre_feedforward_layernorm.weight", Hidden, eps),
                Ffn = ffn,
                PostFfnNorm = RmsNorm.Load(w, $"{p}.post_feedforward_layernorm.weight", Hidden, eps),
                PleGate = _ple > 0 ? Linear.Load(w, $"{p}.per_layer_input_gate", Hidden, _ple, false) : null,
                PleProjection = _ple > 0 ? Linear.Load(w, $"{p}.per_layer_projection", _ple, Hidden, false) : null,
                PostPleNorm = _ple > 0 ? RmsNorm.Load(w, $"{p}.post_per_layer_input_norm.weight", Hidden, eps) : null,
                Scalar = w.GetF32($"{p}.layer_scalar", 1),
                Act = act, Ple = _ple,
            };
        }
        FinalNorm = RmsNorm.Load(w, $"{p0}.norm.weight", Hidden, eps);
        LmHeadWeight = c.TieWordEmbeddings ?? true ? Embed : w.Get("lm_head.weight", Vocab, Hidden);
    }

    /// <summary>Head dim and KV heads of layer i: per_layer_config (by index, then by type), else the global_* keys for full layers.</summary>
    private static (int HeadDim, int KvHeads) LayerShape(ModelConfig c, int i, string type, int headDim, int kv)
    {
        var plc = c.Raw["per_layer_config"] as JsonObject;
        var entry = plc?[i.ToString(System.Globalization.CultureInfo.InvariantCulture)] as JsonObject ?? plc?[type] as JsonObject;
        if (plc is null && type == "full_attention")
        {
            int gh = c.Get<int?>("global_head_dim") ?? 512;
            int? gkv = (c.Get<bool?>("attention_k_eq_v") ?? false) ? c.Get<int?>("num_global_key_value_heads") : null;
            return (gh, gkv ?? kv);
        }
        int hd = entry?["head_dim"] is { } h ? (int)h : headDim;
        int kvh = entry?["num_key_value_heads"] is { } k ? (int)k : kv;
        if (hd <= 0 || kvh <= 0) throw c.Invalid($"per_layer_config.{i}", $"gives head_dim {hd}, num_key_value_heads {kvh}; both must be positive");
        return (hd, kvh);
    }

    /// <summary>The layer type's RoPE: default/linear/yarn via the shared builder, or proportional (Gemma 4's global layers).</summary>
    public static RopeTable RopeFor(ModelConfig c, string type, int headDim)
    {
        var rp = c.RopeParameters is { Count: > 0 } ? c.RopeFor(type)
            : type == "sliding_attention" ? new RopeParameters { RopeType = "default", RopeTheta = 10000 }
            : new RopeParameters { RopeType = "proportional", RopeTheta = 1e6, PartialRotaryFactor = 0.25 };
        if (rp.Kind != "proportional") return RotaryEmbedding.Create(c, rp, headDim);
        // Proportional: rope_angles = floor(partial·D/2) frequencies 1/θ^(2i/D) over the whole head dim, the rest zero (no rotation).
        double theta = rp.RopeTheta ?? 1e6, partial = rp.PartialRotaryFactor ?? 1.0, factor = rp.Factor ?? 1.0;
        int angles = (int)(partial * headDim / 2);
        var inv = new float[headDim / 2];
        for (int i = 0; i < angles; i++) inv[i] = (float)(1.0 / Math.Pow(theta, (float)(2 * i) / headDim) / factor);
        return new RopeTable(inv, 1f);
    }

    public override ModelCache CreateCache(int slots, int maxTokens)
    {
        var cache = base.CreateCache(slots, maxTokens);
        // Consumers point at their source's storage (ModelCache counts and frees each KvCache once).
        for (int i = 0; i < _sources.Length; i++) if (_sources[i] is int s) cache.Kv[i] = cache.Kv[s];
        return cache;
    }

    protected override Tensor HiddenStates(StepBatch batch, ModelCache cache)
    {
        var b = Backend;
        var x = EmbedInput(batch);
        Tensor? perLayer = null;
        if (_ple > 0)
        {
            // (norm(proj(x)/√C) + table[id]·√P) / √2, [N, L·P]; ids past the PLE vocabulary read row 0.
            int N = batch.Tokens, L = Stack.Length;
            var ids = batch.Ids!;
            if (_pleVocab < Vocab)
            {
                var idf = b.Cast(ids, DType.F32);
                var limit = b.Empty(new Shape(1)); b.Fill(limit, _pleVocab);
                ids = b.Cast(b.Binary(idf, b.Binary(idf, b.Binary(idf, limit, BinaryOp.GreaterEqual), BinaryOp.Mul), BinaryOp.Sub), DType.I32);
            }
            var table = b.Unary(b.Gather(_embedPerLayer!, ids), UnaryOp.Affine, MathF.Sqrt(_ple));
            var proj = b.Unary(_pleProjection!.Forward(b, x), UnaryOp.Affine, 1f / MathF.Sqrt(Hidden));
            proj = b.View(_pleNorm!.Forward(b, b.View(proj, new Shape(N * L, _ple))), new Shape(N, L * _ple));
            perLayer = b.Unary(b.Binary(proj, table, BinaryOp.Add), UnaryOp.Affine, 1f / MathF.Sqrt(2f));
        }
        _share.Clear();
        for (int i = 0; i < Stack.Length; i++)
        {
            var layer = (Layer)Stack[i];
            layer.PerLayerInput = perLayer is null ? null : b.Slice(perLayer, i * _ple, _ple);
            x = layer.Forward(b, x, cache, i, batch);
        }
        return FinalNorm.Forward(b, x);
    }

    /// <summary>Sandwich-normed attention and feed-forward, the PLE gate, then the layer scalar.</summary>
    private sealed class Layer : IStackLayer
    {
        public required IMixer Mixer { get; init; }
        public required RmsNorm InputNorm { get; init; }
        public required RmsNorm PostAttentionNorm { get; init; }
        public required RmsNorm PreFfnNorm { get; init; }
        public required IModule Ffn { get; init; }
        public required RmsNorm PostFfnNorm { get; init; }
        public Linear? PleGate { get; init; }
        public Linear? PleProjection { get; init; }
        public RmsNorm? PostPleNorm { get; init; }
        public required Tensor Scalar { get; init; }
        public ExpertActivation Act { get; init; }
        public int Ple { get; init; }
        public Tensor? PerLayerInput { get; set; }

        public Tensor Forward(IBackend b, Tensor x, ModelCache cache, int layer, StepBatch batch)
        {
            var a = PostAttentionNorm.Forward(b, Mixer.Forward(b, InputNorm.Forward(b, x), cache, layer, batch));
            var h = b.Binary(x, a, BinaryOp.Add);
            var f = Ffn is Gemma4Moe moe ? moe.Forward(b, h, PreFfnNorm) : Ffn.Forward(b, PreFfnNorm.Forward(b, h));
            b.BinaryInPlace(h, PostFfnNorm.Forward(b, f), BinaryOp.Add);
            if (PerLayerInput is not null)
            {
                var g = b.Glu(PleGate!.Forward(b, h), PerLayerInput, Act);
                b.BinaryInPlace(h, PostPleNorm!.Forward(b, PleProjection!.Forward(b, g)), BinaryOp.Add);
            }
            return b.Binary(h, Scalar, BinaryOp.Mul);
        }
    }

    protected override ArchitectureInfo Describe()
    {
        var layers = Stack.Select((l, i) =>
        {
            var spec = ((AttentionMixer)((Layer)l).Mixer).Attention.Spec;
            var info = AttentionInfo(spec) with { Ffn = FfnKind.Dense, FfnWidth = _widths[i] };
            if (spec.KvSource is int s) info = info with { SharesKvOf = s, KvValuesPerToken = 0 };
            else if (spec.ValueIsKey) info = info with { KvValuesPerToken = (long)spec.KvHeads * 2 * spec.HeadDim };
            return ((Layer)l).Ffn is Gemma4Moe m ? info with { Ffn = FfnKind.DenseAndMoe, Experts = m.Experts, ActiveExperts = m.TopK, FfnWidth = _widths[i] + m.Width } : info;
        }).ToList();
        var g = layers.First(l => l.Window == 0);
        return new ArchitectureInfo
        {
            Layers = layers, Norm = "sandwich RMSNorm (x·w), per-layer scalar", QkNorm = "per-head RMSNorm (v: weight-free)",
            Positions = $"RoPE: local theta {Config.RopeFor("sliding_attention").RopeTheta ?? 10000:G}, global proportional (head dim {g.HeadDim})",
            Notes = $"{_types.Count(t => t == "sliding_attention")} sliding : {_types.Count(t => t == "full_attention")} global"
                    + (_ple > 0 ? $", per-layer embeddings {Stack.Length}x{_ple}" : "")
                    + (_sources.Any(s => s is not null) ? $", KV shared by the last {_sources.Count(s => s is not null)} layers" : "")
                    + (Config.Get<bool?>("attention_k_eq_v") ?? false ? ", global K = V" : "")
                    + (FinalSoftcap > 0 ? $", final softcap {FinalSoftcap:G}" : ""),
        };
    }
}

/// <summary>
/// Gemma 4's MoE block beside the dense MLP: router = proj(rms(x)·scale/√C), softmax, top-k renormalized, times a learned
/// per-expert scale; experts (fused gate_up, GeGLU) on pre_feedforward_layernorm_2(x). Output
/// post_1(mlp(pre(x))) + post_2(experts), the caller's post-feedforward norm applied after.
/// </summary>
public sealed class Gemma4Moe : IModule
{
    private readonly GatedMlp _mlp;
    private readonly RmsNorm _post1, _pre2, _post2;
    private readonly Linear _router;
    private readonly Tensor _scale, _perExpertScale;
    private readonly ExpertSet _experts;
    private readonly RouterSpec _spec;
    private readonly float _eps;
    public int Experts => _spec.Experts;
    public int TopK => _spec.TopK;
    public int Width { get; }

    public Gemma4Moe(ModelConfig c, WeightSource w, string p, int hidden, float eps, GatedMlp mlp, ExpertActivation act)
    {
        _mlp = mlp; _eps = eps;
        int E = c.RequirePositive(c.NumExperts, "num_experts"), K = c.RequirePositive(c.Get<int?>("top_k_experts"), "top_k_experts");
        Width = c.RequirePositive(c.MoeIntermediateSize, "moe_intermediate_size");
        _spec = new RouterSpec { Experts = E, TopK = K, Scoring = RouterScoring.Softmax, NormalizeTopK = true };
        _spec.Validate(c, "num_experts", "top_k_experts");
        _post1 = RmsNorm.Load(w, $"{p}.post_feedforward_layernorm_1.weight", hidden, eps);
        _pre2 = RmsNorm.Load(w, $"{p}.pre_feedforward_layernorm_2.weight", hidden, eps);
        _post2 = RmsNorm.Load(w, $"{p}.post_feedforward_layernorm_2.weight", hidden, eps);
        _router = Linear.Load(w, $"{p}.router.proj", hidden, E, false);
        _scale = w.GetF32($"{p}.router.scale", hidden);
        _perExpertScale = w.Place(w.GetF32Host($"{p}.router.per_expert_scale", E).Reshape(new Shape(E, 1)));
        _experts = ExpertSet.FromStacked(w.Get($"{p}.experts.gate_up_proj", [E, 2L * Width, hidden], WeightUse.Expert(K, E)), null,
            w.Get($"{p}.experts.down_proj", [E, hidden, Width], WeightUse.Expert(K, E)), null, act, false);
    }

    public Tensor Forward(IBackend b, Tensor x) => throw new InvalidOperationException("Gemma4Moe needs the layer's pre-feedforward norm");

    /// <summary>x: the residual after attention <c>[N, C]</c>; preNorm: the dense MLP's input norm.</summary>
    public Tensor Forward(IBackend b, Tensor x, RmsNorm preNorm)
    {
        int N = x.Shape[0], C = x.Shape[1], K = _spec.TopK;
        var dense = _post1.Forward(b, _mlp.Forward(b, preNorm.Forward(b, x)));
        var r = b.Binary(b.RmsNorm(x, null, _eps), b.Unary(_scale, UnaryOp.Affine, 1f / MathF.Sqrt(C)), BinaryOp.Mul);
        var (ids, wts) = Moe.Route(b, _spec, _router.Forward(b, r), null);
        wts = b.Binary(wts, b.View(b.Gather(_perExpertScale, b.View(ids, new Shape(N * K))), new Shape(N, K)), BinaryOp.Mul);
        var y = b.Binary(_experts.Forward(b, b.View(_pre2.Forward(b, x), new Shape(N, 1, C)), ids), b.View(wts, new Shape(N, K, 1)), BinaryOp.Mul);
        var moe = _post2.Forward(b, b.View(b.Reduce(y, ReduceOp.Sum, axis: 1), new Shape(N, C)));
        b.BinaryInPlace(dense, moe, BinaryOp.Add);
        return dense;
    }
}
