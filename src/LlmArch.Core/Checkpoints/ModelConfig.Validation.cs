namespace LlmArch.Checkpoints;

/// <summary>
/// Semantic checks of config.json, run when it is parsed: sizes are positive and within limits generous for any
/// published model (so a lying config fails in microseconds instead of sizing a 5 GB table), norms' eps, RoPE bases
/// and windows are in range, layer types are known. Each error names the file and the key.
/// </summary>
public sealed partial record ModelConfig
{
    /// <summary>Upper limits on sizes, far above every published model (largest: vocab 262k, hidden 16k, 10M context).</summary>
    public static class Limits
    {
        public const int Hidden = 1 << 17, HeadDim = 1 << 13, Heads = 1 << 12, Layers = 1 << 12, Vocab = 1 << 23;
        public const int Intermediate = 1 << 20, Experts = 1 << 16, Positions = 1 << 28, LoraRank = 1 << 16;
    }

    /// <summary>
    /// The layer types the models implement: the classic four, DeepSeek Sparse Attention (DeepSeek-V3.2, GLM-5),
    /// DeepSeek-V4's compressed sparse / heavily compressed attention and LFM2's short-convolution blocks. Each family
    /// checks which of them it accepts.
    /// </summary>
    public static readonly IReadOnlySet<string> KnownLayerTypes =
        new HashSet<string>(StringComparer.Ordinal)
        {
            "full_attention", "sliding_attention", "chunked_attention", "linear_attention",
            "deepseek_sparse_attention", "compressed_sparse_attention", "heavily_compressed_attention", "conv",
        };

    /// <summary>Throws a <see cref="ConfigException"/> naming the first key whose value is out of range.</summary>
    public void Validate()
    {
        Size(VocabSize, "vocab_size", Limits.Vocab);
        Size(HiddenSize, "hidden_size", Limits.Hidden);
        Size(NEmbd, "n_embd", Limits.Hidden);
        if (IntermediateSize is { } inter)
            for (int i = 0; i < inter.Length; i++) Size(inter[i], inter.Length == 1 ? "intermediate_size" : $"intermediate_size[{i}]", Limits.Intermediate, allowZero: true);
        Size(NInner, "n_inner", Limits.Intermediate);
        Size(MoeIntermediateSize, "moe_intermediate_size", Limits.Intermediate);
        Size(SharedExpertIntermediateSize, "shared_expert_intermediate_size", Limits.Intermediate, allowZero: true);
        Size(IntermediateSizeMlp, "intermediate_size_mlp", Limits.Intermediate);
        Size(NumHiddenLayers, "num_hidden_layers", Limits.Layers);
        Size(NLayer, "n_layer", Limits.Layers);
        Size(NumAttentionHeads, "num_attention_heads", Limits.Heads);
        Size(NHead, "n_head", Limits.Heads);
        Size(NumKeyValueHeads, "num_key_value_heads", Limits.Heads);
        Size(HeadDim, "head_dim", Limits.HeadDim);
        Size(MaxPositionEmbeddings, "max_position_embeddings", Limits.Positions);
        Size(NPositions, "n_positions", Limits.Positions);
        Size(NCtx, "n_ctx", Limits.Positions);
        if (NumAttentionHeads is int h && NumKeyValueHeads is int kv && h % kv != 0)
            throw Invalid("num_key_value_heads", $"({kv}) must divide num_attention_heads ({h})");
        foreach (var (v, k) in new[] { (NumLocalExperts, "num_local_experts"), (NumExperts, "num_experts"), (NRoutedExperts, "n_routed_experts") })
            Size(v, k, Limits.Experts, allowZero: true);
        int? experts = NumLocalExperts ?? NumExperts ?? NRoutedExperts;
        Size(NumExpertsPerTok, "num_experts_per_tok", Limits.Experts, allowZero: true);
        if (NumExpertsPerTok is int k2 && experts is int e && e > 0 && k2 > e)
            throw Invalid("num_experts_per_tok", $"({k2}) exceeds the number of experts ({e})");
        Size(NSharedExperts, "n_shared_experts", Limits.Experts, allowZero: true);
        Size(NGroup, "n_group", Limits.Experts);
        Size(TopkGroup, "topk_group", Limits.Experts);
        Size(FirstKDenseReplace, "first_k_dense_replace", Limits.Layers, allowZero: true);
        Size(DecoderSparseStep, "decoder_sparse_step", Limits.Layers, allowZero: true);
        Size(MoeLayerFreq, "moe_layer_freq", Limits.Layers, allowZero: true);
        Size(InterleaveMoeLayerStep, "interleave_moe_layer_step", Limits.Layers, allowZero: true);
        Size(NoRopeLayerInterval, "no_rope_layer_interval", Limits.Layers, allowZero: true);
        Size(MaxWindowLayers, "max_window_layers", Limits.Layers, allowZero: true);
        Size(SlidingWindowPattern, "sliding_window_pattern", Limits.Layers, allowZero: true);
        Size(SlidingWindowPatternPrivate, "_sliding_window_pattern", Limits.Layers, allowZero: true);
        Size(AttentionChunkSize, "attention_chunk_size", Limits.Positions);
        if (SlidingWindow is int w && w < 0) throw Invalid("sliding_window", $"must be positive (got {w})");
        Size(SlidingWindow, "sliding_window", Limits.Positions, allowZero: true);
        // Hybrid and on-device families
        Size(HiddenSizePerLayerInput, "hidden_size_per_layer_input", Limits.Hidden, allowZero: true);   // Gemma 4 26B/31B publish 0: no per-layer embeddings
        Size(VocabSizePerLayerInput, "vocab_size_per_layer_input", Limits.Vocab);
        Size(AltupNumInputs, "altup_num_inputs", 64);
        Size(LaurelRank, "laurel_rank", Limits.LoraRank);
        Size(NumKvSharedLayers, "num_kv_shared_layers", Limits.Layers, allowZero: true);
        Size(LinearConvKernelDim, "linear_conv_kernel_dim", 1024);
        Size(LinearKeyHeadDim, "linear_key_head_dim", Limits.HeadDim);
        Size(LinearValueHeadDim, "linear_value_head_dim", Limits.HeadDim);
        Size(LinearNumKeyHeads, "linear_num_key_heads", Limits.Heads);
        Size(LinearNumValueHeads, "linear_num_value_heads", Limits.Heads);
        Size(NumNextnPredictLayers, "num_nextn_predict_layers", 64, allowZero: true);
        Size(MtpNumHiddenLayers, "mtp_num_hidden_layers", 64, allowZero: true);

        Positive(RmsNormEps, "rms_norm_eps", 1);
        Positive(LayerNormEps, "layer_norm_eps", 1);
        Positive(LayerNormEpsilon, "layer_norm_epsilon", 1);
        Positive(RopeTheta, "rope_theta", 1e15);
        Positive(RopeLocalBaseFreq, "rope_local_base_freq", 1e15);
        if (PartialRotaryFactor is double prf && !(prf > 0 && prf <= 1)) throw Invalid("partial_rotary_factor", $"must be in (0, 1] (got {prf})");
        Positive(AttnLogitSoftcapping, "attn_logit_softcapping", 1e6);
        Positive(FinalLogitSoftcapping, "final_logit_softcapping", 1e6);
        Positive(QueryPreAttnScalar, "query_pre_attn_scalar", 1e9);
        Positive(RoutedScalingFactor, "routed_scaling_factor", 1e6);
        if (RopeScaling is { } rs) CheckRope(rs, "rope_scaling");
        if (RopeParameters is { } map)
            foreach (var (k, rp) in map) CheckRope(rp, k.Length == 0 ? "rope_parameters" : $"rope_parameters.{k}");

        if (LayerTypes is { } types)
        {
            if (types.Length > Limits.Layers) throw Invalid("layer_types", $"has {types.Length} entries (at most {Limits.Layers})");
            for (int i = 0; i < types.Length; i++)
                if (types[i] is null || !KnownLayerTypes.Contains(types[i]))
                    throw Invalid($"layer_types[{i}]", $"'{types[i]}' is not a known layer type ({string.Join(", ", KnownLayerTypes)})");
        }
        foreach (var (list, key) in new[] { (NoRopeLayers, "no_rope_layers"), (MlpOnlyLayers, "mlp_only_layers"), (MoeLayers, "moe_layers") })
            if (list is { } l)
            {
                if (l.Length > Limits.Layers) throw Invalid(key, $"has {l.Length} entries (at most {Limits.Layers})");
                for (int i = 0; i < l.Length; i++)
                    if (l[i] < 0 || l[i] > Limits.Layers) throw Invalid($"{key}[{i}]", $"must be between 0 and {Limits.Layers} (got {l[i]})");
            }
        foreach (var (ids, key) in new[] { (BosTokenId, "bos_token_id"), (EosTokenId, "eos_token_id"), (PadTokenId, "pad_token_id") })
            if (ids is { } a)
                foreach (var id in a)
                    if (id < -1) throw Invalid(key, $"must be a token id (got {id})");
        if (ActivationSparsityPattern is { } sp)
            for (int i = 0; i < sp.Length; i++)
                if (!(sp[i] >= 0 && sp[i] < 1)) throw Invalid($"activation_sparsity_pattern[{i}]", $"must be in [0, 1) (got {sp[i]})");
    }

    private void Size(int? value, string key, int max, bool allowZero = false)
    {
        if (value is not int v) return;
        if (v < 0 || (v == 0 && !allowZero)) throw Invalid(key, $"must be {(allowZero ? "non-negative" : "positive")} (got {v})");
        if (v > max) throw Invalid(key, $"({v}) exceeds the limit of {max}");
    }

    private void Positive(double? value, string key, double max)
    {
        if (value is not double v) return;
        if (!(v > 0) || !double.IsFinite(v)) throw Invalid(key, $"must be a positive number (got {v})");
        if (v > max) throw Invalid(key, $"({v}) exceeds the limit of {max}");
    }

    private void CheckRope(RopeParameters rp, string key)
    {
        Positive(rp.RopeTheta, key + ".rope_theta", 1e15);
        Positive(rp.Factor, key + ".factor", 1e6);
        Positive(rp.LowFreqFactor, key + ".low_freq_factor", 1e6);
        Positive(rp.HighFreqFactor, key + ".high_freq_factor", 1e6);
        Size(rp.OriginalMaxPositionEmbeddings, key + ".original_max_position_embeddings", Limits.Positions);
        Positive(rp.BetaFast, key + ".beta_fast", 1e6);
        Positive(rp.BetaSlow, key + ".beta_slow", 1e6);
        if (rp.PartialRotaryFactor is double p && !(p > 0 && p <= 1)) throw Invalid(key + ".partial_rotary_factor", $"must be in (0, 1] (got {p})");
    }
}
