using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using LlmArch.Compute;
using LlmArch.Compute.Cpu;

namespace LlmArch.Checkpoints;

/// <summary>
/// A llama.cpp GGUF file as a Hugging Face model: its metadata becomes the config.json the model classes read, and its
/// tensors are served under their Hugging Face names (<see cref="GgufWeights"/>), undoing what llama.cpp's converter
/// did to them (llama's q/k row permutation, Gemma's +1 on norm weights, stacked experts served per expert, the
/// llama3 RoPE frequency factors turned back into rope_parameters). One <see cref="GgufArch"/> per llama.cpp
/// architecture; <see cref="GgufExport"/> writes the same conventions.
/// </summary>
public static class GgufModel
{
    /// <summary>Opens a GGUF file: the config (model_type and HF keys) and the weights under HF names.</summary>
    public static (ModelConfig Config, GgufWeights Weights) Open(string path, DType? quantize = null, bool copy = false)
    {
        var file = new GgufFile(path);
        try
        {
            string archName = file.String("general.architecture") ?? throw new CheckpointFormatException($"{path}: metadata key 'general.architecture' is missing");
            var arch = GgufArch.For(archName)
                ?? throw new LlmArchInputException($"{path}: GGUF architecture '{archName}' is not supported (supported: {string.Join(", ", GgufArch.Names)})");
            var json = arch.Config(file);
            var cfg = ModelConfig.Parse(json.ToJsonString(), path);
            return (cfg, new GgufWeights(file, arch, cfg) { Quantize = quantize, Copy = copy });
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }
}

/// <summary>How one llama.cpp architecture maps to a Hugging Face model_type: config keys and tensor names.</summary>
public abstract class GgufArch
{
    /// <summary>llama.cpp's architecture name (general.architecture).</summary>
    public abstract string Name { get; }
    /// <summary>The Hugging Face model_type it loads as.</summary>
    public abstract string ModelType { get; }
    /// <summary>Whether q/k rows are permuted to llama.cpp's adjacent-pair RoPE (llama, mistral: yes).</summary>
    public virtual bool PermutesQk => false;
    /// <summary>Added to norm weights by the converter (Gemma's (1 + w) RMSNorm is stored as w + 1).</summary>
    public virtual float NormShift => 0f;

    private static readonly GgufArch[] All =
        [new LlamaArch(), new Qwen3Arch(), new Qwen3MoeArch(), new Gemma3Arch(), new GptOssArch(), new Deepseek2Arch(), new Glm4MoeArch()];
    public static IEnumerable<string> Names => All.Select(a => a.Name);
    public static GgufArch? For(string name) => All.FirstOrDefault(a => a.Name == name);
    /// <summary>The architecture a Hugging Face model_type is exported as, or null.</summary>
    public static GgufArch? ForModelType(string? modelType) => modelType switch
    {
        "llama" or "mistral" => For("llama"),
        "qwen3" => For("qwen3"),
        "qwen3_moe" => For("qwen3moe"),
        "gemma3_text" or "gemma3" => For("gemma3"),
        "gpt_oss" => For("gpt-oss"),
        "deepseek_v3" or "kimi_k2" => For("deepseek2"),
        "glm4_moe" => For("glm4moe"),
        _ => null,
    };
    /// <summary>The Hugging Face model_types <see cref="ForModelType"/> accepts (for messages).</summary>
    public const string ExportableModelTypes = "llama, mistral, qwen3, qwen3_moe, gemma3_text, gpt_oss, deepseek_v3, kimi_k2 and glm4_moe";

    /// <summary>config.json for this file.</summary>
    public JsonObject Config(GgufFile f)
    {
        var c = new JsonObject { ["model_type"] = ModelType, ["architectures"] = new JsonArray(ModelType + "_from_gguf") };
        string a = Name;
        int hidden = Req(f, $"{a}.embedding_length"), layers = Req(f, $"{a}.block_count"), heads = Req(f, $"{a}.attention.head_count");
        int kv = PerLayerUniform(f, $"{a}.attention.head_count_kv") ?? heads;
        int headDim = (int?)f.Int($"{a}.attention.key_length") ?? hidden / heads;
        c["hidden_size"] = hidden;
        c["num_hidden_layers"] = layers;
        c["num_attention_heads"] = heads;
        c["num_key_value_heads"] = kv;
        c["head_dim"] = headDim;
        if (PerLayerUniform(f, $"{a}.feed_forward_length") is int ff) c["intermediate_size"] = ff;
        c["max_position_embeddings"] = (int?)f.Int($"{a}.context_length") ?? 4096;
        c["rms_norm_eps"] = f.Float($"{a}.attention.layer_norm_rms_epsilon") ?? 1e-6;
        var emb = f.Tensors.GetValueOrDefault("token_embd.weight") ?? throw new CheckpointFormatException($"{f.Path}: tensor 'token_embd.weight' is missing");
        c["vocab_size"] = (int)emb.Shape[0];
        c["tie_word_embeddings"] = !f.Tensors.ContainsKey("output.weight");
        c["attention_bias"] = f.Tensors.ContainsKey("blk.0.attn_q.bias") || f.Tensors.ContainsKey("blk.0.attn_qkv.bias");
        if (f.Int("tokenizer.ggml.bos_token_id") is long bos) c["bos_token_id"] = bos;
        if (f.Int("tokenizer.ggml.eos_token_id") is long eos) c["eos_token_id"] = eos;
        if (f.Int("tokenizer.ggml.padding_token_id") is long pad) c["pad_token_id"] = pad;
        c["rope_parameters"] = Rope(f, headDim);
        c["torch_dtype"] = "float32";
        Customize(f, c, layers, headDim);
        return c;
    }

    /// <summary>Architecture-specific keys.</summary>
    protected virtual void Customize(GgufFile f, JsonObject c, int layers, int headDim) { }

    protected static int Req(GgufFile f, string key)
    {
        long v = f.Int(key) ?? throw new CheckpointFormatException($"{f.Path}: metadata key '{key}' is missing");
        if (v <= 0 || v > int.MaxValue) throw new CheckpointFormatException($"{f.Path}: metadata key '{key}' is {v}; expected a positive integer");
        return (int)v;
    }

    /// <summary>A key that may be a per-layer array; all entries must agree (we build uniform layers).</summary>
    protected internal static int? PerLayerUniform(GgufFile f, string key)
    {
        if (!f.Has(key)) return null;
        if (f.Metadata[key] is long[] arr)
        {
            if (arr.Length == 0 || arr.Any(x => x != arr[0]))
                throw new CheckpointFormatException($"{f.Path}: metadata key '{key}' varies per layer ({string.Join(", ", arr.Take(8))}...), which is not supported");
            return (int)arr[0];
        }
        long v = f.Int(key)!.Value;
        if (v < 0 || v > int.MaxValue) throw new CheckpointFormatException($"{f.Path}: metadata key '{key}' is {v}");
        return (int)v;
    }

    /// <summary>rope_parameters from rope.freq_base, rope.scaling.* and (llama3) the rope_freqs tensor.</summary>
    protected virtual JsonObject Rope(GgufFile f, int headDim)
    {
        string a = Name;
        double theta = f.Float($"{a}.rope.freq_base") ?? 10000.0;
        var r = new JsonObject { ["rope_theta"] = theta, ["rope_type"] = "default" };
        string? type = f.String($"{a}.rope.scaling.type");
        double? factor = f.Float($"{a}.rope.scaling.factor");
        if (type == "linear" && factor is double lf && lf != 1) { r["rope_type"] = "linear"; r["factor"] = lf; }
        else if (type == "yarn" && factor is double yf)
        {
            r["rope_type"] = "yarn"; r["factor"] = yf;
            r["original_max_position_embeddings"] = f.Int($"{a}.rope.scaling.original_context_length") ?? throw new CheckpointFormatException($"{f.Path}: yarn RoPE needs '{a}.rope.scaling.original_context_length'");
            if (f.Float($"{a}.rope.scaling.yarn_beta_fast") is double bf) r["beta_fast"] = bf;
            if (f.Float($"{a}.rope.scaling.yarn_beta_slow") is double bs) r["beta_slow"] = bs;
            if (f.Float($"{a}.rope.scaling.yarn_attn_factor") is double af) r["attention_factor"] = af;
        }
        else if (type is not null and not "none" and not "linear" and not "yarn")
            throw new CheckpointFormatException($"{f.Path}: metadata key '{a}.rope.scaling.type' is '{type}', which is not supported (none, linear, yarn)");
        if (f.Tensors.ContainsKey("rope_freqs.weight")) Llama3FromFactors(f, r, theta, headDim);
        return r;
    }

    /// <summary>
    /// llama.cpp stores llama3 RoPE scaling as per-frequency divisors. They are 1 for short wavelengths, the factor for
    /// long ones, and in between 1 / ((1 - s) / factor + s) with s linear in 1 / wavelength: two points of the ramp
    /// give its slope and offset, hence (with low_freq_factor = 1) the other parameters. The result is checked by
    /// recomputing every divisor.
    /// </summary>
    private static void Llama3FromFactors(GgufFile f, JsonObject r, double theta, int headDim)
    {
        var t = f.Get("rope_freqs.weight");
        if (t.DType != DType.F32 || t.Count != headDim / 2)
            throw new CheckpointFormatException($"{f.Path}: tensor 'rope_freqs.weight' is {t.DType} [{t.Count}]; expected F32 [{headDim / 2}]");
        var fac = t.ToFloatArray();
        double factor = fac.Max();
        if (Math.Abs(factor - Math.Round(factor, 3)) < 1e-5 * factor) factor = Math.Round(factor, 3);
        if (factor <= 1) return; // all ones: plain RoPE
        var wave = Enumerable.Range(0, fac.Length).Select(i => 2 * Math.PI * Math.Pow(theta, 2.0 * i / headDim)).ToArray();
        var ramp = Enumerable.Range(0, fac.Length).Where(i => fac[i] > 1.0001 && fac[i] < factor * 0.9999).ToList();
        double low = 1, high = 4, old = 8192;
        double S(int i) => (1 / fac[i] - 1 / factor) / (1 - 1 / factor);
        if (ramp.Count >= 2)
        {
            // s = (1/f - 1/factor) / (1 - 1/factor) = a / wave + c, with a = old / (high - low) and c = -low / (high - low)
            int i0 = ramp[0], i1 = ramp[^1];
            double aa = (S(i0) - S(i1)) / (1 / wave[i0] - 1 / wave[i1]), cc = S(i0) - aa / wave[i0];
            if (cc < 0) { high = low - low / cc; old = aa * (high - low); }
        }
        else if (ramp.Count == 1)
        {
            // One point of the ramp: with the usual high / low = 4 it fixes the original context.
            int r0 = ramp[0];
            old = wave[r0] * (S(r0) * (high - low) + low);
        }
        else
        {
            // No point on the ramp: any ramp between the last 1 and the first full factor gives these divisors.
            int lastOne = Array.FindLastIndex(fac, x => x <= 1.0001), firstF = Array.FindIndex(fac, x => x >= factor * 0.9999);
            double lo = lastOne >= 0 ? wave[lastOne] * high : 0, hi = firstF >= 0 ? wave[firstF] : double.MaxValue;
            old = lo < hi ? (lastOne >= 0 && firstF >= 0 ? Math.Sqrt(lo * hi) : lastOne >= 0 ? lo * 2 : hi / 2) : old;
        }
        // The divisors are float32: snap to the round values configs use (an integer context, factors to 1/1000).
        if (Math.Abs(old - Math.Round(old)) < 1e-3 * old) old = Math.Round(old);
        if (Math.Abs(high - Math.Round(high, 3)) < 1e-4 * high) high = Math.Round(high, 3);
        for (int i = 0; i < fac.Length; i++)
        {
            double w = wave[i], want;
            if (w < old / high) want = 1;
            else if (w > old / low) want = factor;
            else { double s = (old / w - low) / (high - low); want = 1 / ((1 - s) / factor + s); }
            if (Math.Abs(want - fac[i]) > 1e-3 * fac[i])
                throw new CheckpointFormatException($"{f.Path}: tensor 'rope_freqs.weight' is not a llama3 RoPE scaling (divisor {i} is {fac[i]}, the fitted ramp gives {want})");
        }
        r["rope_type"] = "llama3"; r["factor"] = factor; r["low_freq_factor"] = low; r["high_freq_factor"] = high;
        r["original_max_position_embeddings"] = (int)Math.Round(old);
    }

    // ---------------- tensor names ----------------

    /// <summary>Hugging Face name of a GGUF tensor of this architecture, or null when it is not a model weight.</summary>
    public virtual string? HfName(string gguf)
    {
        switch (gguf)
        {
            case "token_embd.weight": return "model.embed_tokens.weight";
            case "output_norm.weight": return "model.norm.weight";
            case "output.weight": return "lm_head.weight";
            case "rope_freqs.weight": return null;
        }
        var m = BlockName.Match(gguf);
        if (!m.Success) return null;
        string i = m.Groups[1].Value, what = m.Groups[2].Value, kind = m.Groups[3].Value;
        string? hf = BlockTensor(what, kind);
        return hf is null ? null : $"model.layers.{i}.{hf}";
    }

    /// <summary>
    /// GGUF block tensor <c>what.kind</c> (without blk.N.) to its HF name without <c>model.layers.N.</c>; the default is the
    /// module path of <see cref="BlockSuffix"/> plus the kind. Families whose HF names are not module.weight (gpt-oss sinks,
    /// DeepSeek's e_score_correction_bias) override it.
    /// </summary>
    protected virtual string? BlockTensor(string what, string kind) => BlockSuffix(what) is { } hf ? $"{hf}.{kind}" : null;

    private static readonly Regex BlockName = new(@"^blk\.(\d+)\.([a-z_0-9]+)\.(weight|bias)$", RegexOptions.CultureInvariant);

    /// <summary>GGUF block tensor (without blk.N. and .weight) to HF module path (without model.layers.N. and .weight).</summary>
    protected virtual string? BlockSuffix(string what) => what switch
    {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj", "attn_k" => "self_attn.k_proj", "attn_v" => "self_attn.v_proj", "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm", "attn_k_norm" => "self_attn.k_norm",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj", "ffn_up" => "mlp.up_proj", "ffn_down" => "mlp.down_proj",
        "ffn_gate_inp" => "mlp.gate",
        _ => null,
    };

    /// <summary>Stacked expert tensors: GGUF block suffix to the per-expert HF suffix (experts.{e}.X).</summary>
    public virtual IReadOnlyDictionary<string, string> StackedExperts => NoExperts;
    private static readonly Dictionary<string, string> NoExperts = new();

    /// <summary>The inverse of <see cref="HfName"/> for export (HF name to GGUF name), built from the same tables.</summary>
    public string? GgufName(string hf)
    {
        switch (hf)
        {
            case "model.embed_tokens.weight": return "token_embd.weight";
            case "model.norm.weight": return "output_norm.weight";
            case "lm_head.weight": return "output.weight";
        }
        var m = HfBlock.Match(hf);
        if (!m.Success) return null;
        foreach (var what in GgufBlockNames)
            foreach (var kind in Kinds)
                if (BlockTensor(what, kind) == m.Groups[2].Value) return $"blk.{m.Groups[1].Value}.{what}.{kind}";
        return null;
    }

    private static readonly string[] Kinds = ["weight", "bias"];
    private static readonly Regex HfBlock = new(@"^model\.layers\.(\d+)\.(.+)$", RegexOptions.CultureInvariant);

    /// <summary>
    /// The GGUF tensor(s) a Hugging Face name is read from, for error messages: the name map, a stacked expert tensor, or
    /// what <see cref="Synthesize"/> builds it from; null when the name has no GGUF source.
    /// </summary>
    public virtual string? SourceOf(string hf)
    {
        if (GgufName(hf) is { } g) return g;
        var parts = hf.Split('.');
        // model.layers.{i}.mlp.experts.{e}.{proj}.weight
        if (parts.Length == 8 && parts[3] == "mlp" && parts[4] == "experts" && StackedExperts.FirstOrDefault(kv => kv.Value == parts[6]).Key is { } what)
            return $"blk.{parts[2]}.{what}.weight";
        return null;
    }

    /// <summary>
    /// Tensors served under Hugging Face names that are built from several GGUF tensors (gpt-oss's fused gate_up experts,
    /// DeepSeek's kv_b_proj from the split k_b / v_b): <paramref name="add"/>(hf name, builder). Builders run on first use.
    /// </summary>
    public virtual void Synthesize(GgufFile f, ModelConfig cfg, Action<string, Func<Tensor>> add) { }

    /// <summary>
    /// Export of a tensor the model read that is not a plain name map (fused, transposed or split tensors): appends the
    /// GGUF entries for it and returns true, or returns false to use the name map.
    /// </summary>
    internal virtual bool ExportTensor(WeightRecord r, GgufExportContext ctx, List<GgufEntry> list) => false;

    /// <summary>
    /// The HF tensors inside a fused GGUF tensor (convert_hf_to_gguf.py's --fuse-qkv: <c>attn_qkv</c> = q, k, v rows;
    /// --fuse-gate-up-exps: <c>ffn_gate_up_exps</c> = per expert the gate rows, then the up rows), as (HF name, expert,
    /// first row, rows); empty for any other tensor.
    /// </summary>
    public IEnumerable<(string Hf, int Expert, int Row0, int Rows)> Fused(GgufFile f, GgufTensorInfo info, ModelConfig cfg)
    {
        var m = BlockName.Match(info.Name);
        if (!m.Success) return [];
        string i = m.Groups[1].Value, what = m.Groups[2].Value, kind = m.Groups[3].Value;
        if (what == "attn_qkv" && BlockTensor("attn_q", kind) is { } q && BlockTensor("attn_k", kind) is { } k && BlockTensor("attn_v", kind) is { } v)
        {
            int heads = cfg.NumAttentionHeads ?? 0, kv = cfg.NumKeyValueHeads ?? heads, d = cfg.HeadDim ?? (cfg.HiddenSize ?? 0) / Math.Max(1, heads);
            int nq = heads * d, nk = kv * d;
            if (info.Shape[0] != nq + 2 * nk || (kind == "weight") != (info.Ne.Length == 2))
                throw new CheckpointFormatException($"{f.Path}: fused tensor '{info.Name}' has shape [{string.Join(", ", info.Shape)}]; expected {nq} + {nk} + {nk} rows of q, k and v");
            string p = $"model.layers.{i}.";
            return [(p + q, -1, 0, nq), (p + k, -1, nq, nk), (p + v, -1, nq + nk, nk)];
        }
        if (what == "ffn_gate_up_exps" && kind == "weight" && StackedExperts.TryGetValue("ffn_gate_exps", out var gate) && StackedExperts.TryGetValue("ffn_up_exps", out var up))
        {
            if (info.Ne.Length != 3 || info.Ne[1] % 2 != 0)
                throw new CheckpointFormatException($"{f.Path}: fused tensor '{info.Name}' has shape [{string.Join(", ", info.Shape)}]; expected [experts, 2 * width, hidden]");
            int width = (int)(info.Ne[1] / 2);
            var list = new List<(string, int, int, int)>();
            for (int e = 0; e < info.Ne[2]; e++)
            {
                list.Add(($"model.layers.{i}.mlp.experts.{e}.{gate}.weight", e, 0, width));
                list.Add(($"model.layers.{i}.mlp.experts.{e}.{up}.weight", e, width, width));
            }
            return list;
        }
        return [];
    }

    /// <summary>Replaces the value of a metadata key written before (or adds it).</summary>
    protected static void Set(List<(string Key, object Value)> kv, string key, object value)
    {
        int i = kv.FindIndex(x => x.Key == key);
        if (i >= 0) kv[i] = (key, value); else kv.Add((key, value));
    }
    protected virtual IEnumerable<string> GgufBlockNames =>
        ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_q_norm", "attn_k_norm", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down",
         "ffn_gate_inp", "post_attention_norm", "post_ffw_norm"];

    /// <summary>Architecture-specific metadata for export (after the common keys); throws when llama.cpp cannot express the config.</summary>
    public virtual void ExportMetadata(ModelConfig cfg, List<(string Key, object Value)> kv) { }

    /// <summary>Whether a HF tensor is one of the norm weights the converter shifts by <see cref="NormShift"/>.</summary>
    public virtual bool IsShiftedNorm(string hf) => NormShift != 0 && hf.EndsWith("norm.weight", StringComparison.Ordinal);
}

internal sealed class LlamaArch : GgufArch
{
    public override string Name => "llama";
    public override string ModelType => "llama";
    public override bool PermutesQk => true;
}

internal sealed class Qwen3Arch : GgufArch
{
    public override string Name => "qwen3";
    public override string ModelType => "qwen3";
    protected override void Customize(GgufFile f, JsonObject c, int layers, int headDim) => c["use_sliding_window"] = false;

    public override void ExportMetadata(ModelConfig cfg, List<(string Key, object Value)> kv)
    {
        if (cfg.UseSlidingWindow == true) throw new LlmArchInputException($"{cfg.SourcePath}: llama.cpp's qwen3 has no sliding window (use_sliding_window is true)");
    }
}

internal sealed class Qwen3MoeArch : GgufArch
{
    public override string Name => "qwen3moe";
    public override string ModelType => "qwen3_moe";

    protected override void Customize(GgufFile f, JsonObject c, int layers, int headDim)
    {
        c["use_sliding_window"] = false;
        c["num_experts"] = Req(f, "qwen3moe.expert_count");
        c["num_experts_per_tok"] = Req(f, "qwen3moe.expert_used_count");
        c["moe_intermediate_size"] = PerLayerUniform(f, "qwen3moe.expert_feed_forward_length") ?? throw new CheckpointFormatException($"{f.Path}: metadata key 'qwen3moe.expert_feed_forward_length' is missing");
        c["norm_topk_prob"] = true; // llama.cpp always renormalizes qwen3moe's top-k weights
        c["decoder_sparse_step"] = 1;
        c["mlp_only_layers"] = new JsonArray();
        c["intermediate_size"] ??= c["moe_intermediate_size"]!.DeepClone();
    }

    public override void ExportMetadata(ModelConfig cfg, List<(string Key, object Value)> kv)
    {
        if (cfg.NormTopkProb != true) throw new LlmArchInputException($"{cfg.SourcePath}: llama.cpp's qwen3moe always renormalizes the top-k weights (norm_topk_prob is not true)");
        if ((cfg.DecoderSparseStep ?? 1) != 1 || cfg.MlpOnlyLayers is { Length: > 0 })
            throw new LlmArchInputException($"{cfg.SourcePath}: llama.cpp's qwen3moe has experts in every layer (decoder_sparse_step / mlp_only_layers)");
        if (cfg.UseSlidingWindow == true) throw new LlmArchInputException($"{cfg.SourcePath}: llama.cpp's qwen3moe has no sliding window");
        kv.Add(("qwen3moe.expert_count", (uint)(cfg.NumExperts ?? cfg.NumLocalExperts ?? 0)));
        kv.Add(("qwen3moe.expert_used_count", (uint)(cfg.NumExpertsPerTok ?? 0)));
        kv.Add(("qwen3moe.expert_feed_forward_length", (uint)(cfg.MoeIntermediateSize ?? 0)));
    }

    private static readonly Dictionary<string, string> Experts = new()
    {
        ["ffn_gate_exps"] = "gate_proj", ["ffn_up_exps"] = "up_proj", ["ffn_down_exps"] = "down_proj",
    };
    public override IReadOnlyDictionary<string, string> StackedExperts => Experts;
}

internal sealed class Gemma3Arch : GgufArch
{
    public override string Name => "gemma3";
    public override string ModelType => "gemma3_text";
    public override float NormShift => 1f;

    protected override string? BlockSuffix(string what) => what switch
    {
        "ffn_norm" => "pre_feedforward_layernorm",
        "post_attention_norm" => "post_attention_layernorm",
        "post_ffw_norm" => "post_feedforward_layernorm",
        _ => base.BlockSuffix(what),
    };

    public override void ExportMetadata(ModelConfig cfg, List<(string Key, object Value)> kv)
    {
        int layers = cfg.NumHiddenLayers!.Value, hidden = cfg.HiddenSize!.Value, heads = cfg.NumAttentionHeads!.Value;
        int headDim = cfg.HeadDim ?? hidden / heads;
        double q = cfg.QueryPreAttnScalar ?? headDim;
        double llamaCpp = layers == 62 ? hidden / heads : headDim;
        if (Math.Abs(q - llamaCpp) > 1e-9)
            throw new LlmArchInputException($"{cfg.SourcePath}: query_pre_attn_scalar {q} is not what llama.cpp's gemma3 uses for {layers} layers ({llamaCpp})");
        if (cfg.AttnLogitSoftcapping is > 0) throw new LlmArchInputException($"{cfg.SourcePath}: llama.cpp's gemma3 has no attention logit softcapping");
        if (cfg.FinalLogitSoftcapping is double cap && cap > 0) kv.Add(("gemma3.final_logit_softcapping", (float)cap));
        var types = cfg.CheckedLayerTypes(layers);
        bool anySliding = types?.Any(t => t == "sliding_attention") ?? false;
        if (anySliding)
        {
            kv.Add(("gemma3.attention.sliding_window", (uint)(cfg.SlidingWindow ?? 0)));
            // llama.cpp's pattern n: layer i slides when i % n < n - 1; else write the per-layer flags.
            int n = Array.IndexOf(types!, "full_attention") + 1;
            bool periodic = n > 0 && Enumerable.Range(0, layers).All(i => (types![i] == "sliding_attention") == (i % n < n - 1));
            if (periodic) kv.Add(("gemma3.attention.sliding_window_pattern", (uint)n));
            else kv.Add(("gemma3.attention.sliding_window_pattern", types!.Select(t => t == "sliding_attention").ToArray()));
            kv.Add(("gemma3.rope.freq_base_swa", (float)(cfg.RopeFor("sliding_attention").RopeTheta ?? 10000.0)));
        }
    }

    protected override JsonObject Rope(GgufFile f, int headDim)
    {
        var global = base.Rope(f, headDim);
        var local = new JsonObject { ["rope_theta"] = f.Float("gemma3.rope.freq_base_swa") ?? 10000.0, ["rope_type"] = "default" };
        return new JsonObject { ["full_attention"] = global, ["sliding_attention"] = local };
    }

    protected override void Customize(GgufFile f, JsonObject c, int layers, int headDim)
    {
        c["hidden_activation"] = "gelu_pytorch_tanh";
        int hidden = (int)c["hidden_size"]!, heads = (int)c["num_attention_heads"]!;
        // llama.cpp scales queries by 1/sqrt(head_dim), except Gemma 3 27B (62 layers): 1/sqrt(hidden / heads).
        c["query_pre_attn_scalar"] = layers == 62 ? hidden / heads : headDim;
        if (f.Float("gemma3.final_logit_softcapping") is double cap) c["final_logit_softcapping"] = cap;
        int window = (int?)f.Int("gemma3.attention.sliding_window") ?? 0;
        var types = new JsonArray();
        if (window > 0)
        {
            c["sliding_window"] = window;
            bool[]? isSwa = f.Metadata.GetValueOrDefault("gemma3.attention.sliding_window_pattern") is bool[] b ? b : null;
            int pattern = isSwa is null ? (int?)f.Int("gemma3.attention.sliding_window_pattern") ?? 6 : 0;
            for (int i = 0; i < layers; i++)
            {
                bool swa = isSwa is not null ? i < isSwa.Length && isSwa[i] : pattern == 0 || i % pattern < pattern - 1; // llama.cpp's set_swa_pattern
                types.Add(swa ? "sliding_attention" : "full_attention");
            }
        }
        else for (int i = 0; i < layers; i++) types.Add("full_attention");
        c["layer_types"] = types;
    }
}
