using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>
/// Gemma 3n text stack (<c>model_type</c> "gemma3n_text", or "gemma3n" through its <c>text_config</c>).
/// The residual is carried as N AltUp streams packed per token as <c>[rows, N*C]</c>: each layer predicts all
/// streams from a learned per-token mix, runs attention + LAuReL + MLP on the active one, corrects every stream
/// with the innovation, and feeds a gated per-layer embedding (PLE) into streams 1..N-1. The last
/// <c>num_kv_shared_layers</c> layers compute no keys/values: each reads the cache of the last earlier layer of
/// its type (which therefore keeps a full-length, non-ring cache). Norms are plain <c>x * w</c> RMSNorms; v is
/// normalized without a weight; attention scale is 1. The PLE table stays memory-mapped and is read by row.
/// </summary>
[ModelType("gemma3n_text", "gemma3n", "Gemma3nForCausalLM", "Gemma3nForConditionalGeneration")]
public sealed class Gemma3n : CausalLM
{
    private readonly int _hidden, _heads, _kvHeads, _headDim, _vocab, _layers, _maxPos, _ple, _pleVocab, _n, _active;
    private readonly float _eps, _softcap;
    private readonly bool _correctScale;
    private readonly Tensor _embed, _embedPerLayer, _lmHead;
    private readonly Linear _perLayerModelProjection;
    private readonly RmsNorm _perLayerProjectionNorm, _norm;
    private readonly Linear[] _altupProjections, _altupUnembed;
    private readonly Layer[] _stack;
    private readonly KvShare _share;
    private readonly RopeTables _ropes;
    private readonly Tensor _pleVocabTensor;

    public override int VocabSize => _vocab;
    public override int MaxPositions => _maxPos;
    public override int HiddenSize => _hidden;
    public override ArchitectureInfo Info { get; }

    /// <summary>Index of the layer whose KV cache layer i reads, or null when layer i computes its own.</summary>
    public int? KvSourceOf(int i) => _stack[i].Attention.Spec.KvSource;
    public int FfnWidth(int i) => _stack[i].Width;

    public Gemma3n(ModelConfig c, WeightSource w, IBackend b) : base(c, w, b)
    {
        _hidden = c.RequirePositive(c.HiddenSize, "hidden_size");
        _heads = c.RequirePositive(c.NumAttentionHeads, "num_attention_heads");
        _kvHeads = c.RequirePositive(c.NumKeyValueHeads ?? _heads, "num_key_value_heads");
        if (_heads % _kvHeads != 0) throw c.Invalid("num_key_value_heads", $"{_kvHeads} does not divide num_attention_heads {_heads}");
        _headDim = c.RequirePositive(c.HeadDim ?? _hidden / _heads, "head_dim");
        _vocab = c.RequirePositive(c.VocabSize, "vocab_size");
        _layers = c.RequirePositive(c.NumHiddenLayers, "num_hidden_layers");
        _maxPos = c.RequirePositive(c.MaxPositionEmbeddings, "max_position_embeddings");
        _ple = c.RequirePositive(c.HiddenSizePerLayerInput, "hidden_size_per_layer_input");
        _pleVocab = c.RequirePositive(c.VocabSizePerLayerInput ?? _vocab, "vocab_size_per_layer_input");
        _n = c.RequirePositive(c.AltupNumInputs ?? 4, "altup_num_inputs");
        _active = c.AltupActiveIdx ?? 0;
        if ((uint)_active >= (uint)_n) throw c.Invalid("altup_active_idx", $"{_active} is not below altup_num_inputs {_n}");
        _correctScale = c.AltupCorrectScale ?? true;
        _eps = (float)(c.RmsNormEps ?? 1e-6);
        _softcap = (float)(c.FinalLogitSoftcapping ?? 0);
        int laurelRank = c.RequirePositive(c.LaurelRank ?? 64, "laurel_rank");
        var types = LayerTypes.Resolve(c, _layers, null, "sliding_attention", "full_attention") ?? throw c.Missing("layer_types");
        int shared = c.NumKvSharedLayers ?? 0;
        if (shared < 0 || shared >= _layers) throw c.Invalid("num_kv_shared_layers", $"must be in [0, {_layers}) (got {shared})");
        var widths = c.IntermediateSize ?? throw c.Missing("intermediate_size");
        if (widths.Length != 1 && widths.Length != _layers) throw c.Invalid("intermediate_size", $"has {widths.Length} entries for {_layers} layers");
        var sparsity = c.ActivationSparsityPattern ?? new double[_layers];
        if (sparsity.Length != _layers) throw c.Invalid("activation_sparsity_pattern", $"has {sparsity.Length} entries for {_layers} layers");
        var act = ExpertActivation.Of(Activations.Parse(c, c.HiddenActivation ?? c.HiddenAct ?? "gelu_pytorch_tanh", "hidden_activation"));
        float clip = (float)(c.AltupCoefClip ?? 0);

        // Multimodal checkpoints keep the text stack under model.language_model.
        string p = w.HasData && w.Contains("model.language_model.embed_tokens.weight") ? "model.language_model" : "model";
        _embed = w.Get($"{p}.embed_tokens.weight", [_vocab, _hidden], WeightUse.Embed);
        _embedPerLayer = w.Get($"{p}.embed_tokens_per_layer.weight", [_pleVocab, (long)_layers * _ple], WeightUse.Embed);
        _perLayerModelProjection = Linear.Load(w, $"{p}.per_layer_model_projection", _hidden, _layers * _ple, false);
        _perLayerProjectionNorm = RmsNorm.Load(w, $"{p}.per_layer_projection_norm.weight", _ple, _eps);
        _altupProjections = Enumerable.Range(0, _n - 1).Select(i => Linear.Load(w, $"{p}.altup_projections.{i}", _hidden, _hidden, false)).ToArray();
        _altupUnembed = Enumerable.Range(0, _n - 1).Select(i => Linear.Load(w, $"{p}.altup_unembed_projections.{i}", _hidden, _hidden, false)).ToArray();

        int firstShared = _layers - shared;
        _ropes = new RopeTables(c, _headDim, t => RopeFor(c, t!));
        _stack = new Layer[_layers];
        _share = new KvShare(_layers);
        _pleVocabTensor = w.Place(Tensor.FromFloats([_pleVocab], new Shape(1), "vocab_size_per_layer_input"));
        var sources = new HashSet<int>();
        for (int i = firstShared; i < _layers && firstShared > 0; i++)
            if (Array.LastIndexOf(types, types[i], firstShared - 1) is int src and >= 0) sources.Add(src);
        var infos = new List<LayerInfo>();
        for (int i = 0; i < _layers; i++)
        {
            string type = types[i];
            int? source = null;
            if (i >= firstShared && firstShared > 0)
            {
                int s = Array.LastIndexOf(types, type, firstShared - 1);
                if (s < 0) throw c.Invalid("num_kv_shared_layers", $"leaves shared layer {i} ({type}) with no earlier {type} layer to share the KV cache of");
                source = s;
            }
            var rope = _ropes.For(type);
            int window = type == "sliding_attention" ? c.RequirePositive(c.SlidingWindow, "sliding_window") : 0;
            int width = c.RequirePositive(widths.Length == 1 ? widths[0] : widths[i], $"intermediate_size[{i}]");
            double sp = sparsity[i];
            if (!(sp >= 0 && sp < 1)) throw c.Invalid($"activation_sparsity_pattern[{i}]", $"must be in [0, 1) (got {sp})");
            var spec = new AttentionSpec
            {
                Hidden = _hidden, Heads = _heads, KvHeads = _kvHeads, HeadDim = _headDim, QkNorm = QkNormKind.PerHead, NormEps = _eps,
                ValueNorm = true, Scale = 1f, Rope = rope, Window = window, KvSource = source, KvShared = sources.Contains(i),
            };
            _stack[i] = new Layer(w, $"{p}.layers.{i}", this, spec, width,
                sp > 0 ? (float)SpecialFunctions.NormalInverseCdf((float)sp) : null, act, laurelRank, clip);
            infos.Add(new LayerInfo
            {
                Mixer = window > 0 ? MixerKind.Sliding : MixerKind.Full, Heads = _heads, KvHeads = _kvHeads, HeadDim = _headDim,
                ValueDim = _headDim, Window = window, KvValuesPerToken = source is null ? 2L * _kvHeads * _headDim : 0,
                SharesKvOf = source, Ffn = FfnKind.Dense, FfnWidth = width,
            });
        }
        _norm = RmsNorm.Load(w, $"{p}.norm.weight", _hidden, _eps);
        _lmHead = c.TieWordEmbeddings ?? true ? _embed : w.Get("lm_head.weight", _vocab, _hidden);
        Info = new ArchitectureInfo
        {
            Layers = infos, Norm = "sandwich RMSNorm (x·w) + LAuReL + AltUp", QkNorm = "per-head RMSNorm (v: weight-free)",
            Positions = $"RoPE (local theta {RopeFor(c, "sliding_attention").RopeTheta:G}, global theta {RopeFor(c, "full_attention").RopeTheta:G})",
            Notes = $"AltUp {_n} streams, per-layer embeddings {_layers}x{_ple} (vocab {_pleVocab}), KV shared by the last {shared} layers"
                    + (_softcap > 0 ? $", final softcap {_softcap:G}" : ""),
        };
    }

    /// <summary>rope_parameters per layer type, or the legacy rope_theta / rope_local_base_freq pair.</summary>
    private static RopeParameters RopeFor(ModelConfig c, string type)
    {
        if (c.RopeParameters is { Count: > 0 }) return c.RopeFor(type);
        var r = c.RopeFor(null);
        return type == "sliding_attention" ? new RopeParameters { RopeType = "default", RopeTheta = c.RopeLocalBaseFreq ?? 10000.0 } : r;
    }

    public override ModelCache CreateCache(int slots, int maxTokens)
    {
        var cache = new ModelCache(Backend, _layers, slots, maxTokens);
        for (int i = 0; i < _layers; i++) cache.Kv[i] = _stack[i].Attention.CreateCache(Backend, slots, maxTokens);
        // Consumers point at their source's storage: they own none, and ModelCache.Bytes counts each once.
        for (int i = 0; i < _layers; i++)
            if (_stack[i].Attention.Spec.KvSource is int s) cache.Kv[i] = cache.Kv[s];
        _ropes.Ensure(Backend, maxTokens);
        return cache;
    }

    protected override Tensor HiddenStates(StepBatch batch, ModelCache cache)
    {
        var b = Backend;
        int rows = batch.Tokens, C = _hidden;
        var x = b.Unary(b.Gather(_embed, batch.Ids!), UnaryOp.Affine, MathF.Sqrt(C)); // [rows, C]

        // Per-layer inputs: (norm(proj(x) / sqrt(C)) + table[id] * sqrt(P)) / sqrt(2), [rows, L*P].
        // Ids past the PLE vocabulary (multimodal tokens) read row 0: id · (id < V).
        var idf = b.Cast(batch.Ids!, DType.F32);
        var pleIds = b.Cast(b.Binary(idf, b.Binary(idf, b.Binary(idf, _pleVocabTensor, BinaryOp.GreaterEqual), BinaryOp.Mul), BinaryOp.Sub), DType.I32);
        var pleTable = b.Unary(b.Gather(_embedPerLayer, pleIds), UnaryOp.Affine, MathF.Sqrt(_ple));
        var proj = b.Unary(_perLayerModelProjection.Forward(b, x), UnaryOp.Affine, 1f / MathF.Sqrt(C));
        proj = b.View(_perLayerProjectionNorm.Forward(b, b.View(proj, new Shape(rows * _layers, _ple))), new Shape(rows, _layers * _ple));
        var perLayer = b.Unary(b.Binary(proj, pleTable, BinaryOp.Add), UnaryOp.Affine, 1f / MathF.Sqrt(2f));

        // Stream 0 is the embedding; the others are its projections rescaled to its magnitude.
        var streams = x;
        foreach (var ap in _altupProjections) streams = b.Concat(streams, AltUp.MatchMagnitude(b, ap.Forward(b, x), x, 1e-5f));

        _share.Clear();
        for (int i = 0; i < _layers; i++)
            streams = _stack[i].Forward(b, streams, b.Slice(perLayer, i * _ple, _ple), cache.Kv[i], batch, _share, i);

        var s0 = b.Slice(streams, 0, C);
        var sum = b.Slice(streams, 0, C);
        for (int i = 1; i < _n; i++) b.BinaryInPlace(sum, AltUp.MatchMagnitude(b, _altupUnembed[i - 1].Forward(b, b.Slice(streams, i * C, C)), s0, 1e-5f), BinaryOp.Add);
        return _norm.Forward(b, b.Unary(sum, UnaryOp.Affine, 1f / _n));
    }

    protected override Tensor Head(Tensor hidden)
    {
        var logits = Backend.MatMul(hidden, _lmHead);
        return _softcap > 0 ? Backend.Unary(logits, UnaryOp.Softcap, _softcap) : logits;
    }

    /// <summary>One Gemma 3n decoder layer with its AltUp, LAuReL, attention, MLP and PLE gate.</summary>
    private sealed class Layer
    {
        private readonly Gemma3n _m;
        private readonly RmsNorm _inputNorm, _postAttnNorm, _preFfnNorm, _postFfnNorm, _postPleNorm, _routerNorm, _laurelNorm;
        private readonly Linear _gate, _up, _down, _router, _predictionCoefs, _correctionCoefs, _laurelLeft, _laurelRight, _pleGate, _pleProjection;
        private readonly Tensor _correctOutputScale;
        private readonly float? _stdMultiplier;
        private readonly ExpertActivation _act;
        public SelfAttention Attention { get; }
        public int Width { get; }

        public Layer(WeightSource w, string p, Gemma3n m, AttentionSpec attention, int width, float? stdMultiplier,
            ExpertActivation act, int laurelRank, float clip)
        {
            _m = m; Width = width; _stdMultiplier = stdMultiplier; _act = act;
            int C = m._hidden, n = m._n;
            float eps = m._eps;
            _inputNorm = RmsNorm.Load(w, $"{p}.input_layernorm.weight", C, eps);
            _postAttnNorm = RmsNorm.Load(w, $"{p}.post_attention_layernorm.weight", C, eps);
            _preFfnNorm = RmsNorm.Load(w, $"{p}.pre_feedforward_layernorm.weight", C, eps);
            _postFfnNorm = RmsNorm.Load(w, $"{p}.post_feedforward_layernorm.weight", C, eps);
            Attention = new SelfAttention(w, $"{p}.self_attn", attention);
            _gate = Linear.Load(w, $"{p}.mlp.gate_proj", C, width, false);
            _up = Linear.Load(w, $"{p}.mlp.up_proj", C, width, false);
            _down = Linear.Load(w, $"{p}.mlp.down_proj", width, C, false);
            _router = Linear.Load(w, $"{p}.altup.modality_router", C, n, false);
            _routerNorm = RmsNorm.Load(w, $"{p}.altup.router_norm.weight", C, eps);
            _predictionCoefs = Linear.Load(w, $"{p}.altup.prediction_coefs", n, n * n, false);
            var corr = w.GetHost($"{p}.altup.correction_coefs.weight", [n, n]);
            // The reference clamps the correction coefficients to ±altup_coef_clip before every use.
            _correctionCoefs = new Linear(w.Place(clip > 0 ? HybridWeightTransforms.ClampF32(corr, clip) : corr), null);
            _correctOutputScale = w.GetF32($"{p}.altup.correct_output_scale", C);
            _laurelLeft = Linear.Load(w, $"{p}.laurel.linear_left", C, laurelRank, false);
            _laurelRight = Linear.Load(w, $"{p}.laurel.linear_right", laurelRank, C, false);
            _laurelNorm = RmsNorm.Load(w, $"{p}.laurel.post_laurel_norm.weight", C, eps);
            _pleGate = Linear.Load(w, $"{p}.per_layer_input_gate", C, m._ple, false);
            _pleProjection = Linear.Load(w, $"{p}.per_layer_projection", m._ple, C, false);
            _postPleNorm = RmsNorm.Load(w, $"{p}.post_per_layer_input_norm.weight", C, eps);
        }

        /// <summary>tanh(router(norm(x) / C)): per-token mixing weights of the streams, [rows, N].</summary>
        private Tensor Modalities(IBackend b, Tensor x)
        {
            var r = b.Unary(_routerNorm.Forward(b, x), UnaryOp.Affine, 1f / _m._hidden);
            return b.Unary(_router.Forward(b, r), UnaryOp.Tanh);
        }

        /// <summary>streams <c>[rows, N*C]</c> → updated streams; perLayer <c>[rows, P]</c>.</summary>
        public Tensor Forward(IBackend b, Tensor streams, Tensor perLayer, KvCache? cache, StepBatch batch, KvShare share, int index)
        {
            int C = _m._hidden, n = _m._n, a = _m._active;
            var predictions = AltUp.Predict(b, streams, _predictionCoefs.Forward(b, Modalities(b, b.Slice(streams, a * C, C))), n);
            var active = b.Slice(predictions, a * C, C);
            var normed = _inputNorm.Forward(b, active);
            var laurel = b.Binary(normed, _laurelNorm.Forward(b, _laurelRight.Forward(b, _laurelLeft.Forward(b, normed))), BinaryOp.Add);

            var attn = _postAttnNorm.Forward(b, Attention.Forward(b, normed, cache, batch, share, index));
            var h = b.Binary(active, attn, BinaryOp.Add);
            b.BinaryInPlace(h, laurel, BinaryOp.Add);
            h = b.Unary(h, UnaryOp.Affine, 1f / MathF.Sqrt(2f));

            var f = _preFfnNorm.Forward(b, h);
            var gate = _gate.Forward(b, f);
            if (_stdMultiplier is float k) gate = AltUp.GaussianTopK(b, gate, k);
            f = _postFfnNorm.Forward(b, _down.Forward(b, b.Glu(gate, _up.Forward(b, f), _act)));
            b.BinaryInPlace(h, f, BinaryOp.Add);

            var corrected = AltUp.Correct(b, predictions, h, _correctionCoefs.Forward(b, Modalities(b, h)), n, a);
            var first = b.Slice(corrected, a * C, C);
            if (_m._correctScale) first = b.Binary(first, _correctOutputScale, BinaryOp.Mul);
            var g = b.Glu(_pleGate.Forward(b, first), perLayer, _act);
            return AltUp.AddToStreams(b, corrected, _postPleNorm.Forward(b, _pleProjection.Forward(b, g)), n, 1);
        }
    }
}
