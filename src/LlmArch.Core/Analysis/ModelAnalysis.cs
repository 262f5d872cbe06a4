using System.Globalization;
using System.Text;
using LlmArch.Checkpoints;
using LlmArch.Compute;
using LlmArch.Models;

namespace LlmArch.Analysis;

/// <summary>Element type of a KV cache, for byte counts.</summary>
public enum KvCacheDType { BF16, FP8, F32 }

public static class KvCacheDTypes
{
    public static int Bytes(KvCacheDType t) => t switch { KvCacheDType.FP8 => 1, KvCacheDType.F32 => 4, _ => 2 };

    public static string Name(KvCacheDType t) => t switch { KvCacheDType.FP8 => "fp8", KvCacheDType.F32 => "f32", _ => "bf16" };

    public static KvCacheDType Parse(string s) => s.ToLowerInvariant() switch
    {
        "bf16" or "bfloat16" or "f16" or "fp16" => KvCacheDType.BF16,
        "fp8" or "f8" or "e4m3" => KvCacheDType.FP8,
        "f32" or "fp32" or "float32" => KvCacheDType.F32,
        _ => throw new LlmArchInputException($"--kv-dtype: '{s}' is not one of bf16, fp8, f32"),
    };
}

/// <summary>Parameters of one group of tensors (by checkpoint name), for <c>info</c>.</summary>
public sealed record ParamGroup(string Name, long Params, long ActiveParams);

/// <summary>
/// Parameter, KV-cache and FLOP accounting of one model, computed from the weight records the model constructor
/// requested (<see cref="WeightSource.Records"/>) and its <see cref="ArchitectureInfo"/>: there is no second copy of
/// the architecture here. Build the model with <see cref="ModelLoader.Describe"/> (shapes only) or load a checkpoint.
///
/// <para><b>Counting rules.</b></para>
/// <list type="bullet">
/// <item><b>Total</b>: every tensor the text stack's constructor asks for, each once: a tied LM head is the
/// embedding (asked for once), MTP modules and vision/audio towers are never asked for, so they are not counted.
/// Norm weights and biases are included.</item>
/// <item><b>Active</b> (our rule): parameters touched per token = every non-expert tensor in full, including the
/// token embedding table(s) and the LM head, plus routed-expert tensors times top-k / experts (shared experts are
/// dense). Two vendor conventions are reported beside it: <i>active without embeddings</i> leaves out the input
/// embedding tables but keeps the LM head (OpenAI's gpt-oss convention; a tied matrix is kept, as it is the
/// head), and <i>active non-embedding</i> leaves out both embeddings and the untied LM head (Qwen3-Next,
/// MiniMax-M2, GLM).</item>
/// <item><b>Embedding</b>: tensors the model requested as <see cref="WeightUse.Embed"/> (token tables, GPT-2's
/// learned positions, per-layer embeddings). The <b>LM head</b> is the tensor named <c>*lm_head.weight</c>; with
/// tied embeddings it is the token table.</item>
/// <item><b>KV cache</b> for one sequence of <c>ctx</c> tokens = Σ over layers that own a cache of
/// <c>KvValuesPerToken × visible + StateValues</c>, times the cache dtype's bytes, where visible = min(ctx, window)
/// for sliding-window layers, min(ctx, chunk) for chunked layers and ctx otherwise; MLA layers cache their latent
/// plus the shared rope key (e.g. DeepSeek-V3: 512 + 64 per layer; DSA layers also their indexer key); linear-attention,
/// state-space and short-convolution layers hold a constant state (counted in the same dtype); compressed layers
/// (DeepSeek-V4 CSA/HCA) add <c>CompressedValuesPerEntry × floor(ctx / rate)</c> for their compressed entries (plus their
/// compressors' constant partial-window state) to the sliding window; layers that reuse another layer's KV
/// (<see cref="LayerInfo.SharesKvOf"/>) store nothing. "Per token" at ctx is that total divided by ctx; "without
/// windows" treats every bound as ctx.</item>
/// <item><b>FLOPs per token</b> for the token decoded at position ctx (forward only) = 2 × active matmul
/// parameters (every active tensor of rank ≥ 2 that is not an embedding lookup, plus the LM head even when tied)
/// + per attention layer 2 × heads × (head_dim + value_dim) × attended keys (the visible span of the cache; chunked
/// layers use the chunk as an upper bound; sparse layers at most top-k: DSA min(ctx, top-k), CSA the window plus
/// min(ctx / rate, top-k) entries, HCA the window plus ctx / rate entries) + per lightning indexer 2 × heads × dim per
/// scored key (every cached token for DSA, every entry for CSA) + per linear-attention, state-space or short-conv
/// layer 6 × StateValues (an estimate: read, update and output of the recurrent state). Norms, activations,
/// softmax, RoPE and routing top-k are not counted.</item>
/// </list>
/// </summary>
public sealed record ModelAnalysis
{
    public string Name { get; init; } = "";
    public string DisplayName { get; init; } = "";
    public string Source { get; init; } = "";
    public string ModelType { get; init; } = "";
    /// <summary>Top-level model_type of a multimodal config whose text_config was analysed (else null).</summary>
    public string? OuterModelType { get; init; }
    public string StoredDType { get; init; } = "";

    public long TotalParams { get; init; }
    public long ActiveParams { get; init; }
    public long EmbeddingParams { get; init; }
    /// <summary>Parameters of an untied LM head (0 when tied).</summary>
    public long LmHeadParams { get; init; }
    public bool TiedEmbeddings { get; init; }
    /// <summary>Active without the input embedding tables, LM head kept (OpenAI's convention).</summary>
    public long ActiveParamsNoEmbedding => ActiveParams - EmbeddingParams + (TiedEmbeddings ? HeadMatmulParams : 0);
    /// <summary>Active without embedding tables and without the untied LM head.</summary>
    public long ActiveParamsNonEmbedding => ActiveParams - EmbeddingParams - LmHeadParams;
    public long NonEmbeddingParams => TotalParams - EmbeddingParams - LmHeadParams;
    /// <summary>Active parameters that are multiplied (rank ≥ 2, not a lookup), LM head included.</summary>
    public long ActiveMatmulParams { get; init; }
    /// <summary>Vocab × hidden of the matrix used as LM head (tied or not).</summary>
    public long HeadMatmulParams { get; init; }

    public int Hidden { get; init; }
    public int Vocab { get; init; }
    public int MaxPositions { get; init; }
    public IReadOnlyList<LayerInfo> Layers { get; init; } = [];
    public int NumLayers => Layers.Count;

    /// <summary>One letter per layer: G full (global) attention, S sliding window, C chunked, M MLA, X MLA with DSA
    /// sparse attention, A compressed sparse attention, H heavily compressed attention, L linear attention, R state-space
    /// (Mamba2), V short convolution, - no mixer (a feed-forward block); lowercase = a layer without RoPE in a model whose
    /// other layers use it (NoPE).</summary>
    public string AttentionLayers { get; init; } = "";
    /// <summary>One letter per layer: D dense MLP, E mixture of experts, P dense MLP and MoE in parallel.</summary>
    public string FfnLayers { get; init; } = "";
    public string AttentionPattern => Patterns.Compress(AttentionLayers);
    public string FfnPattern => Patterns.Compress(FfnLayers);

    public string AttentionKind { get; init; } = "";
    public int Heads { get; init; }
    public int KvHeads { get; init; }
    public int HeadDim { get; init; }
    public int ValueDim { get; init; }
    public int SlidingWindow { get; init; }
    public int Chunk { get; init; }
    public int KvSharedLayers { get; init; }

    public int Experts { get; init; }
    public int ActiveExperts { get; init; }
    public int SharedExperts { get; init; }
    public int ExpertWidth { get; init; }
    public int DenseWidth { get; init; }

    public string Norm { get; init; } = "";
    public string QkNorm { get; init; } = "";
    public string Positions { get; init; } = "";
    public string Notes { get; init; } = "";

    public IReadOnlyList<ParamGroup> Groups { get; init; } = [];
    /// <summary>Parameters per stored dtype, from loaded weights or safetensors headers; empty for a preset (see <see cref="StoredDType"/>).</summary>
    public IReadOnlyDictionary<string, long> ParamsByDType { get; init; } = new Dictionary<string, long>();
    /// <summary>Bytes of the checkpoint's safetensors files (0 for a preset).</summary>
    public long FileBytes { get; init; }

    /// <summary>Values per token summed over the layers that own a cache, windows ignored.</summary>
    public long KvValuesPerToken => Layers.Where(l => l.SharesKvOf is null).Sum(l => l.KvValuesPerToken);
    /// <summary>Constant-size state values (linear attention), independent of context.</summary>
    public long StateValues => Layers.Where(l => l.SharesKvOf is null).Sum(l => l.StateValues);

    /// <summary>KV-cache bytes of one sequence of <paramref name="ctx"/> tokens; see the counting rules.</summary>
    public long KvCacheBytes(long ctx, KvCacheDType dtype = KvCacheDType.BF16, bool windows = true)
    {
        long values = 0;
        foreach (var l in Layers)
        {
            if (l.SharesKvOf is not null) continue;
            values += l.KvValuesPerToken * Visible(l, ctx, windows) + l.StateValues;
            if (l.CompressRate > 0) values += l.CompressedValuesPerEntry * (ctx / l.CompressRate);
        }
        return values * KvCacheDTypes.Bytes(dtype);
    }

    /// <summary>KV-cache bytes per token at <paramref name="ctx"/>: the whole cache divided by ctx.</summary>
    public double KvCacheBytesPerToken(long ctx, KvCacheDType dtype = KvCacheDType.BF16, bool windows = true) =>
        ctx <= 0 ? 0 : (double)KvCacheBytes(ctx, dtype, windows) / ctx;

    /// <summary>Forward FLOPs for the token at position <paramref name="ctx"/>; see the counting rules.</summary>
    public double FlopsPerToken(long ctx)
    {
        double flops = 2.0 * ActiveMatmulParams;
        foreach (var l in Layers)
        {
            if (IsStateMixer(l.Mixer)) { flops += 6.0 * l.StateValues; continue; }
            if (l.Mixer == MixerKind.None) continue;
            double keys = Visible(l, ctx, true), scored = 0;
            if (l.Mixer == MixerKind.SparseMla) { scored = ctx; keys = l.SparseTopK > 0 ? Math.Min(ctx, l.SparseTopK) : ctx; }
            if (l.CompressRate > 0)
            {
                long entries = ctx / l.CompressRate;
                scored = l.IndexerMacsPerKey > 0 ? entries : 0;
                keys += l.SparseTopK > 0 ? Math.Min(entries, l.SparseTopK) : entries;
            }
            flops += 2.0 * l.Heads * (l.HeadDim + l.ValueDim) * keys + 2.0 * l.IndexerMacsPerKey * scored;
        }
        return flops;
    }

    /// <summary>Mixers whose memory is a constant state rather than a per-token cache.</summary>
    public static bool IsStateMixer(MixerKind k) => k is MixerKind.Linear or MixerKind.Ssm or MixerKind.Conv;

    private static long Visible(LayerInfo l, long ctx, bool windows) =>
        IsStateMixer(l.Mixer) || l.Mixer == MixerKind.None ? 0 : windows && l.Window > 0 ? Math.Min(ctx, l.Window) : ctx;

    /// <summary>The letter of a layer kind in <see cref="AttentionLayers"/>.</summary>
    public static char Letter(MixerKind k) => k switch
    {
        MixerKind.Sliding => 'S', MixerKind.Chunked => 'C', MixerKind.Mla => 'M', MixerKind.Linear => 'L', MixerKind.SparseMla => 'X',
        MixerKind.CompressedSparse => 'A', MixerKind.HeavilyCompressed => 'H', MixerKind.Ssm => 'R', MixerKind.Conv => 'V', MixerKind.None => '-',
        _ => 'G',
    };

    /// <summary>
    /// One line per kind of layer the model has (letter, count, what it is and what it keeps per sequence), for
    /// <c>info</c>; cache sizes in values (multiply by the cache dtype's bytes).
    /// </summary>
    public IReadOnlyList<(char Letter, int Count, string Description)> LayerKinds()
    {
        var list = new List<(char, int, string)>();
        foreach (var g in Layers.GroupBy(l => (l.Mixer, l.Window, l.CompressRate, l.SparseTopK, l.SharesKvOf is null)))
        {
            var l = g.First();
            string heads = $"{l.Heads} heads x {l.HeadDim}" + (l.ValueDim != l.HeadDim && l.ValueDim > 0 ? $"/{l.ValueDim}" : "");
            string kv = l.SharesKvOf is not null ? "no cache of its own (reads an earlier layer's KV)" : $"{l.KvValuesPerToken} values/token";
            string d = l.Mixer switch
            {
                MixerKind.Full => $"full attention, {heads}, {l.KvHeads} KV heads; {kv}",
                MixerKind.Sliding when l.CompressRate == 0 => $"sliding-window attention ({l.Window}), {heads}, {l.KvHeads} KV heads; {kv} for the last {l.Window} tokens",
                MixerKind.Chunked => $"chunked attention ({l.Window}), {heads}; {kv} within the chunk",
                MixerKind.Mla => $"multi-head latent attention, {l.Heads} heads; {kv} (latent + shared key)",
                MixerKind.SparseMla => $"MLA with DeepSeek Sparse Attention: a lightning indexer ({l.IndexerMacsPerKey} MACs per scored token) picks top-{l.SparseTopK} cached tokens per query; {kv} (latent + key + indexer key)"
                    .Replace("(0 MACs per scored token)", "(shared with an earlier layer)", StringComparison.Ordinal),
                MixerKind.CompressedSparse => $"compressed sparse attention: window {l.Window} of shared K=V plus one compressed entry per {l.CompressRate} tokens (overlapping windows of {2 * l.CompressRate}), a lightning indexer picks top-{l.SparseTopK} entries; {kv} in the window, {l.CompressedValuesPerEntry} values per entry, {l.StateValues} values of compressor state",
                MixerKind.HeavilyCompressed => $"heavily compressed attention: window {l.Window} of shared K=V plus every compressed entry (one per {l.CompressRate} tokens); {kv} in the window, {l.CompressedValuesPerEntry} values per entry, {l.StateValues} values of compressor state",
                MixerKind.Linear => $"linear attention (recurrent), {l.Heads} heads x {l.HeadDim}/{l.ValueDim}; constant state of {l.StateValues} values",
                MixerKind.Ssm => $"state-space (Mamba2) scan, {l.Heads} heads x {l.HeadDim}, state size {l.ValueDim}; constant state of {l.StateValues} values",
                MixerKind.Conv => $"gated short convolution (kernel {l.HeadDim}); constant state of {l.StateValues} values",
                MixerKind.None => "no token mixer (a feed-forward block)",
                _ => l.Mixer.ToString(),
            };
            char c = Letter(l.Mixer);
            list.Add((l.Rope || IsStateMixer(l.Mixer) || l.Mixer == MixerKind.None || !Layers.Any(x => x.Rope) ? c : char.ToLowerInvariant(c), g.Count(), d + (l.Rope || IsStateMixer(l.Mixer) || l.Mixer == MixerKind.None ? "" : ", no RoPE")));
        }
        return list;
    }

    // ---------------------------------------------------------------- construction

    /// <summary>Analysis of a preset (shape-only model).</summary>
    public static ModelAnalysis ForPreset(string name)
    {
        var cfg = Presets.Load(name);
        var info = Presets.Info(name);
        return Of(ModelLoader.Describe(cfg), name, info.DisplayName, info.Source, ConfigDType(cfg));
    }

    /// <summary>Analysis of a config record (shape-only model).</summary>
    public static ModelAnalysis FromConfig(ModelConfig cfg, string name) =>
        Of(ModelLoader.Describe(cfg), name, name, cfg.SourcePath, ConfigDType(cfg));

    /// <summary>
    /// Analysis of a Hugging Face model directory from its config.json (shape-only model, no weights read); the
    /// stored dtypes and file size come from the safetensors headers when the directory has them.
    /// </summary>
    public static ModelAnalysis ForDirectory(string dir)
    {
        if (!Directory.Exists(dir)) throw new LlmArchInputException($"{dir}: model directory not found");
        string config = Path.Combine(dir, "config.json");
        if (!File.Exists(config)) throw new ConfigException($"{dir}: no config.json in this directory");
        var cfg = ModelConfig.Load(config);
        var ckpt = CheckpointSummary.TryRead(dir);
        var a = Of(ModelLoader.Describe(cfg), DirName(dir), DirName(dir), dir, ckpt?.DTypeText ?? ConfigDType(cfg));
        return ckpt is null ? a : a with { FileBytes = ckpt.Bytes, ParamsByDType = ckpt.ParamsByDType };
    }

    /// <summary>Analysis of a loaded model; its weight records carry the stored dtypes.</summary>
    public static ModelAnalysis Of(CausalLM model, string name, string? displayName = null, string? source = null, string? storedDType = null)
    {
        var cfg = model.Config;
        var records = model.Weights.Records;
        var layers = model.Info.Layers;
        var info = model.Info;

        long total = 0, active = 0, embed = 0, head = 0, matmul = 0;
        foreach (var r in records)
        {
            long n = r.Count;
            total += n;
            active += ActiveCount(r);
            if (r.Use.Embedding) embed += n;
            else
            {
                if (IsLmHead(r.Name)) head += n;
                if (r.Shape.Length >= 2) matmul += ActiveCount(r);
            }
        }
        bool tied = head == 0;
        var tokenTable = records.Where(r => r.Use.Embedding && r.Shape.Length == 2 && r.Shape[0] == model.VocabSize)
            .OrderByDescending(r => r.Name.Contains("embed_tokens", StringComparison.Ordinal) || r.Name.Contains("wte", StringComparison.Ordinal))
            .FirstOrDefault();
        long headMatmul = tied ? tokenTable?.Count ?? 0 : head;
        if (tied) matmul += headMatmul;
        int hidden = (int)(tokenTable?.Shape[1] ?? 0);

        bool mixedRope = layers.Any(l => l.Rope) && layers.Any(l => !l.Rope && !IsStateMixer(l.Mixer) && l.Mixer != MixerKind.None);
        var attnLetters = new StringBuilder();
        var ffnLetters = new StringBuilder();
        foreach (var l in layers)
        {
            char c = Letter(l.Mixer);
            if (mixedRope && !l.Rope && !IsStateMixer(l.Mixer) && l.Mixer != MixerKind.None) c = char.ToLowerInvariant(c);
            attnLetters.Append(c);
            ffnLetters.Append(l.Ffn switch { FfnKind.Moe => 'E', FfnKind.DenseAndMoe => 'P', FfnKind.None => '-', _ => 'D' });
        }

        var attnLayers = layers.Where(l => !IsStateMixer(l.Mixer) && l.Mixer != MixerKind.None).ToList();
        var main = attnLayers.FirstOrDefault(l => l.Mixer is MixerKind.Full or MixerKind.Mla or MixerKind.SparseMla or MixerKind.CompressedSparse or MixerKind.HeavilyCompressed)
                   ?? attnLayers.FirstOrDefault() ?? layers.FirstOrDefault() ?? new LayerInfo();
        var moe = layers.Where(l => l.Ffn != FfnKind.Dense && l.Experts > 0).MaxBy(l => l.Experts);
        var dense = layers.FirstOrDefault(l => l.Ffn is FfnKind.Dense or FfnKind.DenseAndMoe);
        int window = layers.Where(l => l.Mixer is MixerKind.Sliding or MixerKind.CompressedSparse or MixerKind.HeavilyCompressed).Select(l => l.Window).DefaultIfEmpty(0).Max();
        int chunk = layers.Where(l => l.Mixer == MixerKind.Chunked).Select(l => l.Window).DefaultIfEmpty(0).Max();

        // A shape-only source has placeholder dtypes: report none (StoredDType then comes from the config).
        var byDType = !model.Weights.HasData ? new Dictionary<string, long>() : records.GroupBy(r => DTypeName(r.DType))
            .OrderByDescending(g => g.Sum(r => r.Count)).ToDictionary(g => g.Key, g => g.Sum(r => r.Count));
        string outer = cfg.Raw["outer_model_type"]?.ToString() ?? "";

        return new ModelAnalysis
        {
            Name = name, DisplayName = displayName ?? name, Source = source ?? cfg.SourcePath,
            ModelType = cfg.ModelType ?? cfg.Architectures?.FirstOrDefault() ?? "?",
            OuterModelType = outer.Length > 0 && outer != cfg.ModelType ? outer : null,
            StoredDType = storedDType ?? (byDType.Count > 0 ? string.Join("+", byDType.Keys) : ConfigDType(cfg)),
            TotalParams = total, ActiveParams = active, EmbeddingParams = embed, LmHeadParams = head,
            TiedEmbeddings = tied, ActiveMatmulParams = matmul, HeadMatmulParams = headMatmul,
            Hidden = hidden, Vocab = model.VocabSize, MaxPositions = model.MaxPositions, Layers = layers,
            AttentionLayers = attnLetters.ToString(), FfnLayers = ffnLetters.ToString(),
            AttentionKind = DescribeAttention(layers, attnLayers, window, chunk),
            Heads = main.Heads, KvHeads = main.KvHeads, HeadDim = main.HeadDim, ValueDim = main.ValueDim,
            SlidingWindow = window, Chunk = chunk, KvSharedLayers = layers.Count(l => l.SharesKvOf is not null),
            Experts = moe?.Experts ?? 0, ActiveExperts = moe?.ActiveExperts ?? 0, SharedExperts = moe?.SharedExperts ?? 0,
            ExpertWidth = moe?.FfnWidth ?? 0, DenseWidth = dense?.FfnWidth ?? 0,
            Norm = info.Norm, QkNorm = info.QkNorm, Positions = info.Positions, Notes = info.Notes,
            Groups = GroupParams(records), ParamsByDType = byDType,
        };
    }

    /// <summary>A fraction of 0 is <c>default(WeightUse)</c> (dense), never an expert that never runs.</summary>
    private static long ActiveCount(WeightRecord r) =>
        r.Use.ActiveFraction is >= 1.0 or <= 0.0 ? r.Count : (long)Math.Round(r.Count * r.Use.ActiveFraction);

    private static bool IsLmHead(string name) => name is "lm_head.weight" or "head.weight" || name.EndsWith(".lm_head.weight", StringComparison.Ordinal);

    private static string DirName(string dir) => Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir)));

    private static string DTypeName(DType t) => t switch
    {
        DType.F8E4M3 => "F8_E4M3", DType.MXFP4 => "MXFP4", DType.Q8_0 => "Q8_0", _ => DTypes.SafetensorsName(t),
    };

    /// <summary>The stored dtype a config declares (dtype / torch_dtype, plus quantization_config.quant_method).</summary>
    public static string ConfigDType(ModelConfig cfg)
    {
        string d = cfg.Dtype ?? cfg.TorchDtype ?? "?";
        d = d switch { "bfloat16" => "bf16", "float16" => "f16", "float32" => "f32", _ => d };
        string? q = cfg.Raw["quantization_config"]?["quant_method"]?.ToString();
        return q is null ? d : $"{d}+{q}";
    }

    private static string DescribeAttention(IReadOnlyList<LayerInfo> all, List<LayerInfo> attn, int window, int chunk)
    {
        string kind;
        if (attn.Count == 0) kind = all.Any(l => l.Mixer == MixerKind.Linear) ? "linear" : all.Any(l => l.Mixer == MixerKind.Ssm) ? "SSM" : "conv";
        else if (attn.Any(l => l.Mixer is MixerKind.Mla or MixerKind.SparseMla)) kind = "MLA";
        else if (attn.All(l => l.KvHeads == l.Heads)) kind = "MHA";
        else if (attn.All(l => l.KvHeads == 1)) kind = "MQA";
        else kind = "GQA";
        var parts = new List<string> { kind };
        if (attn.FirstOrDefault(l => l.Mixer == MixerKind.SparseMla) is { } dsa) parts.Add(string.Create(CultureInfo.InvariantCulture, $"DSA top-{dsa.SparseTopK}"));
        if (window > 0) parts.Add(string.Create(CultureInfo.InvariantCulture, $"SWA {window}"));
        if (chunk > 0) parts.Add(string.Create(CultureInfo.InvariantCulture, $"chunked {chunk}"));
        if (attn.FirstOrDefault(l => l.Mixer == MixerKind.CompressedSparse) is { } csa) parts.Add(string.Create(CultureInfo.InvariantCulture, $"CSA {csa.CompressRate}/top-{csa.SparseTopK}"));
        if (attn.FirstOrDefault(l => l.Mixer == MixerKind.HeavilyCompressed) is { } hca) parts.Add(string.Create(CultureInfo.InvariantCulture, $"HCA {hca.CompressRate}"));
        if (attn.Count > 0 && all.Any(l => l.Mixer == MixerKind.Linear)) parts.Add("linear");
        if (attn.Count > 0 && all.Any(l => l.Mixer == MixerKind.Ssm)) parts.Add("Mamba2");
        if (attn.Count > 0 && all.Any(l => l.Mixer == MixerKind.Conv)) parts.Add("short conv");
        return string.Join(" + ", parts);
    }

    /// <summary>
    /// Groups tensors by checkpoint-name patterns: embeddings (WeightUse.Embed), lm_head, norms (any "norm" or
    /// GPT-2's ln_*), routed experts (".experts"), shared experts ("shared_expert"), router (".gate.weight",
    /// "router", correction bias), attention ("attn"/"attention"/"mixer"), mlp ("mlp"/"feed_forward"/"ffn"), other.
    /// </summary>
    public static string GroupOf(WeightRecord r)
    {
        if (r.Use.Embedding) return "embeddings";
        string n = r.Name;
        if (IsLmHead(n)) return "lm_head";
        string last = n.Split('.').Where(s => s != "weight" && s != "bias").LastOrDefault() ?? n;
        if (last.Contains("norm", StringComparison.Ordinal) || last.StartsWith("ln", StringComparison.Ordinal)) return "norms";
        if (n.Contains("shared_expert", StringComparison.Ordinal)) return "shared experts";
        if (n.Contains(".experts", StringComparison.Ordinal)) return "routed experts";
        if (n.EndsWith(".gate.weight", StringComparison.Ordinal) || n.Contains("router", StringComparison.Ordinal) || n.Contains("correction_bias", StringComparison.Ordinal)) return "router";
        if (n.Contains("attn", StringComparison.Ordinal) || n.Contains("attention", StringComparison.Ordinal) || n.Contains("mixer", StringComparison.Ordinal)) return "attention";
        if (n.Contains("mlp", StringComparison.Ordinal) || n.Contains("feed_forward", StringComparison.Ordinal) || n.Contains("ffn", StringComparison.Ordinal)) return "mlp";
        return "other";
    }

    private static readonly string[] GroupOrder = ["embeddings", "attention", "mlp", "router", "routed experts", "shared experts", "norms", "lm_head", "other"];

    private static IReadOnlyList<ParamGroup> GroupParams(IReadOnlyList<WeightRecord> records) =>
        records.GroupBy(GroupOf)
            .Select(g => new ParamGroup(g.Key, g.Sum(r => r.Count), g.Sum(ActiveCount)))
            .OrderBy(g => Array.IndexOf(GroupOrder, g.Name)).ToList();
}

/// <summary>Run-length compression of per-layer letter strings.</summary>
public static class Patterns
{
    /// <summary>
    /// Compresses a per-layer string into space-separated tokens "&lt;count&gt;&lt;unit&gt;", where a unit is one
    /// letter or a parenthesised group of up to 8 letters and a count of 1 is omitted: "SSSSSG" x10 + "SS" →
    /// "10(SSSSSG) 2S"; "DDD" + 58 "E" → "3D 58E". Greedy: at each position the repetition covering the most layers.
    /// </summary>
    public static string Compress(string s)
    {
        var tokens = new List<string>();
        var literal = new StringBuilder();
        int i = 0;
        while (i < s.Length)
        {
            int bestP = 0, bestK = 0;
            for (int p = 1; p <= 8 && i + 2 * p <= s.Length; p++)
            {
                int k = 1;
                while (i + (k + 1) * p <= s.Length && string.CompareOrdinal(s, i, s, i + k * p, p) == 0) k++;
                if (k >= 2 && p * k > bestP * bestK) { bestP = p; bestK = k; }
            }
            if (bestK == 0) { literal.Append(s[i]); i++; continue; }
            if (literal.Length > 0) { tokens.Add(literal.ToString()); literal.Clear(); }
            string unit = s.Substring(i, bestP);
            tokens.Add(bestK.ToString(CultureInfo.InvariantCulture) + (bestP == 1 ? unit : $"({unit})"));
            i += bestP * bestK;
        }
        if (literal.Length > 0) tokens.Add(literal.ToString());
        return string.Join(" ", tokens);
    }
}
