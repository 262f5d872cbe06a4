using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Models;

/// <summary>
/// DeepSeek-V4 (<c>model_type</c> "deepseek_v4"; V4-Flash and V4-Pro). Every layer attends over a sliding window with
/// shared-KV MQA, sinks and a grouped low-rank output (<see cref="CompressedAttention"/>); CSA layers add top-k of
/// compressed entries picked by a lightning indexer, HCA layers every heavily compressed entry. The residual is
/// hc_mult streams mixed by manifold-constrained hyper-connections (<see cref="HyperConnection"/>, Sinkhorn) around
/// each sublayer and collapsed by <see cref="HyperHead"/> before the final norm. The FFN is a MoE with sqrt(softplus)
/// scores, correction bias, renormalized and scaled weights, clamped SwiGLU experts and a shared expert; the first
/// layers (<c>mlp_layer_types</c> "hash_moe") pick their experts by token id from a frozen table (<c>tid2eid</c>).
/// Weights use the released names (<c>attn.wq_a</c>, <c>ffn.experts.N.w1</c>, <c>hc_attn_fn</c>, <c>head</c>, ...).
/// Reads the transformers keys and the released ones (<c>compress_ratios</c>, <c>num_hash_layers</c>, <c>rope_scaling</c>).
/// </summary>
[ModelType("deepseek_v4", "DeepseekV4ForCausalLM")]
public sealed class DeepseekV4 : StackModel
{
    // DSA / compressed attention pick keys on the host from positions: steps are not recorded as graphs.
    protected override bool StepGraphsAllowed => false;

    private readonly int _hc;
    private readonly HyperHead _head;
    private readonly string[] _types, _mlpTypes;
    private readonly RouterSpec _router;
    private readonly int _width, _rope;

    public DeepseekV4(ModelConfig c, WeightSource w, IBackend b) : base(c, w, b)
    {
        float eps = (float)(c.RmsNormEps ?? 1e-6);
        int L = NumLayersConfigured;
        int heads = c.RequirePositive(c.NumAttentionHeads, "num_attention_heads");
        int headDim = c.RequirePositive(c.HeadDim ?? 512, "head_dim");
        if ((c.NumKeyValueHeads ?? 1) != 1) throw c.Invalid("num_key_value_heads", "must be 1 (DeepSeek-V4 shares one key/value head)");
        _hc = c.RequirePositive(c.Get<int?>("hc_mult") ?? 4, "hc_mult");
        int iters = c.RequirePositive(c.Get<int?>("hc_sinkhorn_iters") ?? 20, "hc_sinkhorn_iters");
        float hcEps = (float)(c.Get<double?>("hc_eps") ?? 1e-6);
        var rates = CompressRates(c);
        _types = LayerKinds(c, L, rates);
        int hash = c.Get<int?>("num_hash_layers") ?? 3;
        _mlpTypes = c.Get<string[]>("mlp_layer_types") ?? Enumerable.Range(0, L).Select(i => i < hash ? "hash_moe" : "moe").ToArray();
        if (_mlpTypes.Length != L) throw c.Invalid("mlp_layer_types", $"has {_mlpTypes.Length} entries but num_hidden_layers is {L}");
        double partial = c.PartialRotaryFactor ?? (c.Get<int?>("qk_rope_head_dim") is int qr ? (double)qr / headDim : 64.0 / 512);
        _rope = (int)(headDim * partial);
        var (main, compress) = RopeParameters(c, partial);
        var mainRope = Rope(RotaryEmbedding.Create(c, main, headDim, _rope));
        var compressRope = Rope(RotaryEmbedding.Create(c, compress, headDim, _rope));
        var mainInverse = Rope(Inverse(mainRope)); var compressInverse = Rope(Inverse(compressRope));

        var (E, key) = MoeLayers.RoutedExperts(c);
        _router = new RouterSpec
        {
            Experts = E, TopK = c.RequirePositive(c.NumExpertsPerTok, "num_experts_per_tok"),
            Scoring = (c.ScoringFunc ?? "sqrtsoftplus") switch
            {
                "sqrtsoftplus" => RouterScoring.SqrtSoftplus, "sigmoid" => RouterScoring.Sigmoid, "softmax" => RouterScoring.Softmax,
                var f => throw c.Invalid("scoring_func", $"'{f}' is not supported (sqrtsoftplus, sigmoid, softmax)"),
            },
            NormalizeTopK = true, CorrectionBias = true, RoutedScaling = (float)(c.RoutedScalingFactor ?? 1.0),
        };
        _router.Validate(c, key);
        _width = c.RequirePositive(c.MoeIntermediateSize ?? c.IntermediateSize?[0], "moe_intermediate_size");
        int shared = c.NSharedExperts ?? 1;
        float limit = (float)(c.Get<double?>("swiglu_limit") ?? 10.0);
        var positions = PositionRange.Load(w, MaxPos);

        Embed = w.Get("model.embed_tokens.weight", [Vocab, Hidden], WeightUse.Embed);
        Stack = new IStackLayer[L];
        for (int i = 0; i < L; i++)
        {
            string p = $"model.layers.{i}";
            var kind = _types[i] switch { "compressed_sparse_attention" => CompressionKind.Sparse, "heavily_compressed_attention" => CompressionKind.Heavy, _ => CompressionKind.None };
            bool sliding = kind == CompressionKind.None;
            var spec = new CompressedAttentionSpec
            {
                Hidden = Hidden, Heads = heads, HeadDim = headDim, QLoraRank = c.RequirePositive(c.Get<int?>("q_lora_rank"), "q_lora_rank"), RopeDim = _rope,
                Window = c.RequirePositive(c.SlidingWindow ?? 128, "sliding_window"),
                OGroups = c.RequirePositive(c.Get<int?>("o_groups"), "o_groups"), OLoraRank = c.RequirePositive(c.Get<int?>("o_lora_rank"), "o_lora_rank"),
                Compression = kind, Rate = kind == CompressionKind.Sparse ? rates.Csa : kind == CompressionKind.Heavy ? rates.Hca : 0,
                IndexHeads = c.Get<int?>("index_n_heads") ?? 64, IndexHeadDim = c.Get<int?>("index_head_dim") ?? 128, IndexTopK = c.Get<int?>("index_topk") ?? 512,
                NormEps = eps,
                Rope = sliding ? mainRope : compressRope, InverseRope = sliding ? mainInverse : compressInverse, CompressRope = compressRope,
            };
            Stack[i] = new Layer
            {
                Mixer = new CompressedAttention(w, $"{p}.attn", spec, L + i, 2 * L + i, 3 * L + i, positions),
                AttnNorm = RmsNorm.Load(w, $"{p}.attn_norm.weight", Hidden, eps),
                FfnNorm = RmsNorm.Load(w, $"{p}.ffn_norm.weight", Hidden, eps),
                AttnHc = new HyperConnection(w, $"{p}.hc_attn", Hidden, _hc, iters, hcEps, eps),
                FfnHc = new HyperConnection(w, $"{p}.hc_ffn", Hidden, _hc, iters, hcEps, eps),
                Moe = new HashableMoe(w, $"{p}.ffn", _router, Hidden, _width, shared, limit, _mlpTypes[i] == "hash_moe", Vocab),
            };
        }
        _head = new HyperHead(w, "model.hc_head", Hidden, _hc, hcEps, eps);
        FinalNorm = RmsNorm.Load(w, "model.norm.weight", Hidden, eps);
        LmHeadWeight = c.TieWordEmbeddings ?? false ? Embed : w.Get("head.weight", Vocab, Hidden);
    }

    private static (int Csa, int Hca) CompressRates(ModelConfig c)
    {
        int csa = c.Get<int?>("compress_rate_csa") ?? 4, hca = c.Get<int?>("compress_rate_hca") ?? 128;
        if (c.Raw["compress_rates"] is System.Text.Json.Nodes.JsonObject r)
        {
            if (r["compressed_sparse_attention"] is { } a) csa = (int)a;
            if (r["heavily_compressed_attention"] is { } h) hca = (int)h;
        }
        if (csa < 1 || hca < 1) throw c.Invalid("compress_rates", $"must be positive (got {csa}, {hca})");
        return (csa, hca);
    }

    /// <summary>layer_types, or the released per-layer compress_ratios (0 sliding, the CSA rate, the HCA rate), or the V4-Pro default.</summary>
    private static string[] LayerKinds(ModelConfig c, int L, (int Csa, int Hca) rates)
    {
        var t = c.CheckedLayerTypes(L);
        if (t is null && c.Get<int[]>("compress_ratios") is { } ratios)
        {
            if (ratios.Length < L) throw c.Invalid("compress_ratios", $"has {ratios.Length} entries for {L} layers");
            t = ratios.Take(L).Select((r, i) => r == 0 ? "sliding_attention" : r == rates.Csa ? "compressed_sparse_attention" : r == rates.Hca ? "heavily_compressed_attention"
                : throw c.Invalid($"compress_ratios[{i}]", $"is {r}; expected 0, {rates.Csa} or {rates.Hca}")).ToArray();
        }
        t ??= Enumerable.Range(0, L).Select(i => i < 2 ? "heavily_compressed_attention" : (i - 2) % 2 == 1 ? "compressed_sparse_attention" : "heavily_compressed_attention").ToArray();
        for (int i = 0; i < t.Length; i++)
            if (t[i] is not ("sliding_attention" or "compressed_sparse_attention" or "heavily_compressed_attention"))
                throw c.Invalid($"layer_types[{i}]", $"is '{t[i]}'; expected sliding_attention, compressed_sparse_attention or heavily_compressed_attention");
        return t;
    }

    /// <summary>The "main" (sliding layers) and "compress" (CSA/HCA and their compressors) RoPE parameters, nested or legacy.</summary>
    private static (RopeParameters Main, RopeParameters Compress) RopeParameters(ModelConfig c, double partial)
    {
        if (c.RopeParameters is { } map && map.TryGetValue("main", out var m) && map.TryGetValue("compress", out var k)) return (m, k);
        var yarn = c.RopeParameters is { } flat && flat.TryGetValue("", out var f) ? f : c.RopeScaling;
        var main = new RopeParameters { RopeType = "default", RopeTheta = c.RopeTheta ?? 10000, PartialRotaryFactor = partial };
        var compress = (yarn ?? new RopeParameters()) with { RopeTheta = c.Get<double?>("compress_rope_theta") ?? 160000, PartialRotaryFactor = partial };
        if (compress.Kind == "yarn" && compress.AttentionFactor is null) compress = compress with { AttentionFactor = 1.0 };
        return (main, compress.RopeType is null && compress.Type is null ? compress with { RopeType = "default" } : compress);
    }

    /// <summary>The same rotation backwards (negated frequencies: cos unchanged, sin negated), for the output's rope dims.</summary>
    private static RopeTable Inverse(RopeTable t) => new(t.InverseFrequencies.ToArray().Select(f => -f).ToArray(), t.AttentionScaling);

    protected override Tensor HiddenStates(StepBatch batch, ModelCache cache)
    {
        var b = Backend;
        var x = EmbedInput(batch);
        int N = batch.Tokens;
        var zeros = b.Empty(new Shape(N, _hc, Hidden)); b.Fill(zeros, 0f);
        var streams = b.View(b.Binary(zeros, b.View(x, new Shape(N, 1, Hidden)), BinaryOp.Add), new Shape(N, _hc * Hidden));
        for (int i = 0; i < Stack.Length; i++) streams = ((Layer)Stack[i]).Forward(b, streams, cache, i, batch);
        return FinalNorm.Forward(b, _head.Forward(b, streams));
    }

    /// <summary>Runs CSA layers densely with the indexer's selection as a mask (tests compare it with the gathered form).</summary>
    public bool DenseMasked
    {
        set { foreach (var l in Stack) ((CompressedAttention)((Layer)l).Mixer).DenseMasked = value; }
    }

    /// <summary>Four cache entries per layer: the window ring, the compressor's raw ring, the compressed entries, the indexer's entries.</summary>
    protected override int CacheEntries => 4 * Stack.Length;

    /// <summary>Hyper-connected attention and MoE sublayers over the packed streams <c>[N, hc·C]</c>.</summary>
    private sealed class Layer : IStackLayer
    {
        public required IMixer Mixer { get; init; }
        public required RmsNorm AttnNorm { get; init; }
        public required RmsNorm FfnNorm { get; init; }
        public required HyperConnection AttnHc { get; init; }
        public required HyperConnection FfnHc { get; init; }
        public required HashableMoe Moe { get; init; }

        public Tensor Forward(IBackend b, Tensor streams, ModelCache cache, int layer, StepBatch batch)
        {
            var (x, post, comb) = AttnHc.Pre(b, streams);
            streams = AttnHc.Post(b, streams, Mixer.Forward(b, AttnNorm.Forward(b, x), cache, layer, batch), post, comb);
            (x, post, comb) = FfnHc.Pre(b, streams);
            return FfnHc.Post(b, streams, Moe.Forward(b, FfnNorm.Forward(b, x), batch.Ids!), post, comb);
        }
    }

    protected override ArchitectureInfo Describe()
    {
        var layers = Stack.Select((l, i) =>
        {
            var s = ((CompressedAttention)((Layer)l).Mixer).Spec;
            var info = new LayerInfo
            {
                Mixer = s.Compression switch { CompressionKind.Sparse => MixerKind.CompressedSparse, CompressionKind.Heavy => MixerKind.HeavilyCompressed, _ => MixerKind.Sliding },
                Heads = s.Heads, KvHeads = 1, HeadDim = s.HeadDim, ValueDim = s.HeadDim, Window = s.Window,
                KvValuesPerToken = s.HeadDim, CompressRate = s.Rate,
                CompressedValuesPerEntry = s.Compression == CompressionKind.None ? 0 : s.HeadDim + (s.Compression == CompressionKind.Sparse ? s.IndexHeadDim : 0),
                // The compressors' partial windows: the projected rows of up to two windows.
                StateValues = s.Compression == CompressionKind.None ? 0 : 2L * s.Rate * s.RawWidth,
                SparseTopK = s.Compression == CompressionKind.Sparse ? s.IndexTopK : 0,
                IndexerMacsPerKey = s.Compression == CompressionKind.Sparse ? (long)s.IndexHeads * s.IndexHeadDim : 0,
            };
            return info with { Ffn = FfnKind.Moe, Experts = _router.Experts, ActiveExperts = _router.TopK, SharedExperts = ((Layer)l).Moe.SharedCount, FfnWidth = _width };
        }).ToList();
        var first = ((CompressedAttention)((Layer)Stack[0]).Mixer).Spec;
        return new ArchitectureInfo
        {
            Layers = layers, Norm = $"pre-norm RMSNorm in {_hc} hyper-connected streams (Sinkhorn mixing)", QkNorm = "q per-head RMS (weight-free), kv RMSNorm",
            Positions = $"interleaved RoPE on the last {_rope} of {first.HeadDim} dims (main theta {Config.RopeTheta ?? 10000:G} on sliding layers, compress theta {Config.Get<double?>("compress_rope_theta") ?? 160000:G} on CSA/HCA), inverse RoPE on the output",
            Notes = $"sliding window {first.Window} on every layer; CSA {_types.Count(t => t == "compressed_sparse_attention")} (top-{first.IndexTopK}), HCA {_types.Count(t => t == "heavily_compressed_attention")}; "
                    + $"hash-routed MoE {_mlpTypes.Count(t => t == "hash_moe")} then learned; shared-KV MQA with sinks, grouped output {first.OGroups}x{first.OLoraRank}",
        };
    }
}

/// <summary>
/// DeepSeek-V4's MoE: scores sqrt(softplus(logits)); the experts are the top-k of scores + correction bias (learned
/// routing) or a fixed token → experts table (hash routing, <c>gate.tid2eid</c>); weights are the chosen scores
/// renormalized times routed_scaling_factor; experts are SwiGLU with gate clamped above and up clamped to ±limit; a
/// shared expert, clamped the same way, is added. x <c>[N, C]</c>, ids <c>[N]</c> → <c>[N, C]</c>.
/// </summary>
public sealed class HashableMoe
{
    private readonly RouterSpec _spec;
    private readonly Linear _router;
    private readonly Tensor? _bias, _table;
    private readonly ExpertWeights _w1, _w3, _w2;
    private readonly GatedMlp? _shared;
    private readonly float _limit;
    public int SharedCount { get; }

    public HashableMoe(WeightSource w, string p, RouterSpec spec, int hidden, int width, int shared, float limit, bool hash, int vocab)
    {
        _spec = spec; _limit = limit; SharedCount = shared;
        int E = spec.Experts, K = spec.TopK;
        _router = Linear.Load(w, $"{p}.gate", hidden, E, false);
        if (hash)
        {
            // A frozen lookup, not a learned weight: not counted as parameters.
            var t = w.GetHost($"{p}.gate.tid2eid", [vocab, K], WeightUse.Dense, countAs: []);
            _table = w.Place(FrontierWeightTransforms.IndexTableF32(t, E, "token → expert table"));
        }
        else _bias = w.GetF32($"{p}.gate.bias", E);
        var use = WeightUse.Expert(K, E);
        var g = new Tensor[E]; var u = new Tensor[E]; var d = new Tensor[E];
        for (int e = 0; e < E; e++)
        {
            g[e] = w.Get($"{p}.experts.{e}.w1.weight", [width, hidden], use);
            u[e] = w.Get($"{p}.experts.{e}.w3.weight", [width, hidden], use);
            d[e] = w.Get($"{p}.experts.{e}.w2.weight", [hidden, width], use);
        }
        _w1 = ExpertWeights.FromList(g); _w3 = ExpertWeights.FromList(u); _w2 = ExpertWeights.FromList(d);
        if (shared > 0) _shared = GatedMlp.Load(w, $"{p}.shared_experts", hidden, width * shared, UnaryOp.Silu, gate: "w1", up: "w3", down: "w2");
    }

    public Tensor Forward(IBackend b, Tensor x, Tensor tokenIds)
    {
        int N = x.Shape[0], C = x.Shape[1], K = _spec.TopK;
        Tensor ids, wts;
        var logits = _router.Forward(b, x);
        if (_table is null) (ids, wts) = Moe.Route(b, _spec, logits, _bias);
        else
        {
            var scores = b.Unary(b.Unary(logits, UnaryOp.Softplus), UnaryOp.Sqrt);
            ids = b.Cast(b.Gather(_table, tokenIds), DType.I32);                                       // [N, K]
            wts = b.TakeAlong(scores, ids);
            wts = b.Binary(wts, b.Unary(b.Reduce(wts, ReduceOp.Sum), UnaryOp.Affine, 1f, 1e-20f), BinaryOp.Div);
            if (_spec.RoutedScaling != 1f) wts = b.Unary(wts, UnaryOp.Affine, _spec.RoutedScaling);
        }
        var xin = b.View(x, new Shape(N, 1, C));
        var gate = b.Unary(b.MatMulById(xin, _w1, ids), UnaryOp.Clamp, float.NegativeInfinity, _limit);
        var up = b.Unary(b.MatMulById(xin, _w3, ids), UnaryOp.Clamp, -_limit, _limit);
        var y = b.MatMulById(b.Glu(gate, up, ExpertActivation.SwiGlu), _w2, ids);                      // [N, K, C]
        var sum = b.View(b.Reduce(b.Binary(y, b.View(wts, new Shape(N, K, 1)), BinaryOp.Mul), ReduceOp.Sum, axis: 1), new Shape(N, C));
        if (_shared is not null)
        {
            // The shared expert clamps like the routed ones.
            var sg = b.Unary(_shared.Gate.Forward(b, x), UnaryOp.Clamp, float.NegativeInfinity, _limit);
            var su = b.Unary(_shared.Up.Forward(b, x), UnaryOp.Clamp, -_limit, _limit);
            b.BinaryInPlace(sum, _shared.Down.Forward(b, b.Glu(sg, su, ExpertActivation.SwiGlu)), BinaryOp.Add);
        }
        return sum;
    }
}
