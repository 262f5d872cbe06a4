using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using LlmArch.Compute;
using LlmArch.Compute.Cpu;

namespace LlmArch.Checkpoints;

// The MoE families whose llama.cpp tensors are not a plain rename of the Hugging Face ones: gpt-oss (fused, transposed
// and MXFP4 experts), DeepSeek V3 (MLA's kv_b split into k_b / v_b) and GLM-4.5. Each class maps the metadata both ways
// and builds, on load, the Hugging Face tensors the model classes read; on export, the llama.cpp tensors from them.

/// <summary>
/// llama.cpp's <c>gpt-oss</c> (Hugging Face <c>gpt_oss</c>). The converter splits the fused, interleaved
/// <c>gate_up_proj</c> into <c>ffn_gate_exps</c> (even channels) and <c>ffn_up_exps</c> (odd), stores every expert
/// <c>[E, out, in]</c> (HF's float experts are <c>[E, in, out]</c>), keeps MXFP4 experts as ggml MXFP4 blocks, calls the
/// router <c>ffn_gate_inp</c> and the sinks <c>attn_sinks</c>. Sliding and full attention alternate (even layers slide),
/// the clamped SwiGLU has llama.cpp's fixed limit 7 and alpha 1.702. On load the experts come back as gpt-oss reads them:
/// MXFP4 as <c>*_blocks</c>/<c>*_scales</c> with rows re-interleaved, float ones as transposed views.
/// </summary>
internal sealed unsafe class GptOssArch : GgufArch
{
    public override string Name => "gpt-oss";
    public override string ModelType => "gpt_oss";
    private const double SwigluLimit = 7.0; // llama.cpp's LLM_FFN_SWIGLU_OAI_MOE

    protected override string? BlockTensor(string what, string kind) => (what, kind) switch
    {
        ("attn_sinks", "weight") => "self_attn.sinks",
        ("post_attention_norm", "weight") => "post_attention_layernorm.weight",
        ("ffn_gate_inp", _) => $"mlp.router.{kind}",
        ("ffn_down_exps", "bias") => "mlp.experts.down_proj_bias",
        ("ffn_norm" or "ffn_gate" or "ffn_up" or "ffn_down" or "attn_q_norm" or "attn_k_norm", _) => null,
        _ => base.BlockTensor(what, kind),
    };

    protected override IEnumerable<string> GgufBlockNames =>
        ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_sinks", "post_attention_norm", "ffn_gate_inp", "ffn_down_exps"];

    public override string? SourceOf(string hf)
    {
        var m = Experts.Match(hf);
        if (!m.Success) return base.SourceOf(hf);
        string b = $"blk.{m.Groups[1].Value}", kind = m.Groups[3].Value == "_bias" ? "bias" : "weight";
        return m.Groups[2].Value == "gate_up_proj" ? $"{b}.ffn_gate_exps.{kind}' + '{b}.ffn_up_exps.{kind}" : $"{b}.ffn_down_exps.{kind}";
    }

    private static readonly Regex Experts = new(@"^model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)(_blocks|_scales|_bias)?$", RegexOptions.CultureInvariant);

    protected override void Customize(GgufFile f, JsonObject c, int layers, int headDim)
    {
        string a = Name;
        c["num_local_experts"] = Req(f, $"{a}.expert_count");
        c["num_experts_per_tok"] = Req(f, $"{a}.expert_used_count");
        c["intermediate_size"] = PerLayerUniform(f, $"{a}.expert_feed_forward_length") ?? PerLayerUniform(f, $"{a}.feed_forward_length")
            ?? throw new CheckpointFormatException($"{f.Path}: metadata key '{a}.expert_feed_forward_length' is missing");
        c["sliding_window"] = Req(f, $"{a}.attention.sliding_window");
        // llama.cpp's load_swa_pattern(ml, 2): per-layer flags, or a period n (layer i slides when i % n < n - 1), default 2
        string pk = $"{a}.attention.sliding_window_pattern";
        bool[]? isSwa = f.Metadata.GetValueOrDefault(pk) is bool[] flags ? flags : null;
        long n = isSwa is null ? f.Int(pk) ?? 2 : 0;
        if (isSwa is null && (n < 0 || n > layers)) throw new CheckpointFormatException($"{f.Path}: metadata key '{pk}' is {n}; expected 0..{layers}");
        var types = new JsonArray();
        for (int i = 0; i < layers; i++)
            types.Add((isSwa is not null ? i < isSwa.Length && isSwa[i] : n == 0 || i % n < n - 1) ? "sliding_attention" : "full_attention");
        c["layer_types"] = types;
        c["swiglu_limit"] = SwigluLimit;
        c["hidden_act"] = "silu";
        if (f.Int($"{a}.rope.dimension_count") is long rot && rot != headDim)
            throw new CheckpointFormatException($"{f.Path}: metadata key '{a}.rope.dimension_count' is {rot}; gpt-oss rotates the whole head of {headDim}");
        // gpt-oss's YaRN does not round its ramp ends (truncate false); llama.cpp has no key for it.
        if (c["rope_parameters"] is JsonObject r && (string?)r["rope_type"] == "yarn") r["truncate"] = false;
    }

    public override void ExportMetadata(ModelConfig cfg, List<(string Key, object Value)> kv)
    {
        string a = Name, src = cfg.SourcePath;
        int layers = cfg.NumHiddenLayers!.Value;
        var types = cfg.CheckedLayerTypes(layers);
        for (int i = 0; types is not null && i < layers; i++)
            if (types[i] != (i % 2 == 0 ? "sliding_attention" : "full_attention"))
                throw new LlmArchInputException($"{src}: layer_types[{i}] is '{types[i]}'; llama.cpp's gpt-oss slides on even layers and attends fully on odd ones");
        if ((cfg.SwigluLimit ?? SwigluLimit) != SwigluLimit)
            throw new LlmArchInputException($"{src}: swiglu_limit {cfg.SwigluLimit} is not llama.cpp's fixed gpt-oss limit {SwigluLimit}");
        var rp = cfg.RopeFor(null);
        if (rp.Kind == "yarn" && rp.Truncate != false)
            throw new LlmArchInputException($"{src}: rope_parameters.truncate must be false for a gpt-oss GGUF (llama.cpp's files are read as gpt-oss's unrounded YaRN)");
        int experts = cfg.NumLocalExperts ?? cfg.NumExperts ?? throw cfg.Missing("num_local_experts");
        kv.Add(($"{a}.expert_count", (uint)experts));
        kv.Add(($"{a}.expert_used_count", (uint)(cfg.NumExpertsPerTok ?? throw cfg.Missing("num_experts_per_tok"))));
        kv.Add(($"{a}.expert_feed_forward_length", (uint)(cfg.IntermediateSize is [var ff] ? ff : throw cfg.Missing("intermediate_size"))));
        kv.Add(($"{a}.attention.sliding_window", (uint)(cfg.SlidingWindow ?? throw cfg.Missing("sliding_window"))));
    }

    // ---------------- load: the experts as gpt-oss reads them ----------------

    public override void Synthesize(GgufFile f, ModelConfig cfg, Action<string, Func<Tensor>> add)
    {
        for (int i = 0; i < cfg.NumHiddenLayers; i++)
        {
            string b = $"blk.{i}", x = $"model.layers.{i}.mlp.experts";
            string gn = $"{b}.ffn_gate_exps.weight", un = $"{b}.ffn_up_exps.weight", dn = $"{b}.ffn_down_exps.weight";
            if (!f.Tensors.ContainsKey(gn) && !f.Tensors.ContainsKey(un) && !f.Tensors.ContainsKey(dn)) continue; // the model reports them missing
            if (f.Tensors.ContainsKey($"{b}.ffn_gate_up_exps.weight"))
                throw new CheckpointFormatException($"{f.Path}: tensor '{b}.ffn_gate_up_exps.weight': fused gate_up experts are not supported (convert without --fuse-gate-up-exps)");
            var g = f.Info(gn);
            var u = f.Info(un);
            var d = f.Info(dn);
            if (g.Ne.Length != 3) throw new CheckpointFormatException($"{f.Path}: tensor '{gn}' has shape [{string.Join(", ", g.Shape)}]; expected [experts, width, hidden]");
            int E = (int)g.Ne[2], I = (int)g.Ne[1], C = (int)g.Ne[0];
            ExpectShape(f, u, [E, I, C]);
            ExpectShape(f, d, [E, C, I]);
            int mx = new[] { g, u, d }.Count(t => t.Type == GgmlType.MXFP4);
            if (mx is 1 or 2)
                throw new CheckpointFormatException($"{f.Path}: tensors '{gn}', '{un}', '{dn}' mix MXFP4 and other types ({GgmlType.Name(g.Type)}, {GgmlType.Name(u.Type)}, {GgmlType.Name(d.Type)}); gpt-oss reads all or none as MXFP4");
            if (mx == 3)
            {
                var gateUp = new Lazy<(Tensor B, Tensor S)>(() => HfMxfp4(f, [g, u], E, I, C, $"{x}.gate_up_proj"));
                add($"{x}.gate_up_proj_blocks", () => gateUp.Value.B);
                add($"{x}.gate_up_proj_scales", () => gateUp.Value.S);
                var down = new Lazy<(Tensor B, Tensor S)>(() => HfMxfp4(f, [d], E, C, I, $"{x}.down_proj"));
                add($"{x}.down_proj_blocks", () => down.Value.B);
                add($"{x}.down_proj_scales", () => down.Value.S);
            }
            else
            {
                add($"{x}.gate_up_proj", () => InterleavedTransposed(f, gn, un, E, I, C, $"{x}.gate_up_proj"));
                add($"{x}.down_proj", () => Transposed(f, dn, E, C, I, $"{x}.down_proj"));
            }
            string gb = $"{b}.ffn_gate_exps.bias", ub = $"{b}.ffn_up_exps.bias";
            if (f.Tensors.ContainsKey(gb) || f.Tensors.ContainsKey(ub))
            {
                ExpectShape(f, f.Info(gb), [E, I]);
                ExpectShape(f, f.Info(ub), [E, I]);
                add($"{x}.gate_up_proj_bias", () => InterleavedBias(f, gb, ub, E, I, $"{x}.gate_up_proj_bias"));
            }
        }
    }

    internal static void ExpectShape(GgufFile f, GgufTensorInfo t, long[] shape)
    {
        if (!t.Shape.SequenceEqual(shape))
            throw new CheckpointFormatException($"{f.Path}: tensor '{t.Name}' has shape [{string.Join(", ", t.Shape)}]; expected [{string.Join(", ", shape)}]");
    }

    /// <summary>
    /// MXFP4 experts as the Hugging Face checkpoint stores them: blocks U8 <c>[E, P * rows, cols / 32, 16]</c> and e8m0
    /// scales U8 <c>[E, P * rows, cols / 32]</c>, row <c>r * P + p</c> of expert e being row r of part p (gate_up: P = 2,
    /// gate then up, interleaved; down: P = 1).
    /// </summary>
    private static (Tensor Blocks, Tensor Scales) HfMxfp4(GgufFile f, GgufTensorInfo[] parts, int E, int rows, int cols, string name)
    {
        int P = parts.Length, G = cols / 32;
        var blocks = Tensor.Zeros(DType.U8, new Shape(E, P * rows, G, 16), name + "_blocks");
        var scales = Tensor.Zeros(DType.U8, new Shape(E, P * rows, G), name + "_scales");
        byte* ob = (byte*)blocks.Ptr, os = (byte*)scales.Ptr;
        for (int p = 0; p < P; p++)
        {
            byte* src = f.Data(parts[p]);
            for (long e = 0; e < E; e++)
                for (long r = 0; r < rows; r++)
                {
                    byte* s = src + (e * rows + r) * G * Mxfp4Blocks.GgmlBytes;
                    long o = ((e * rows + r) * P + p) * G;
                    for (int g = 0; g < G; g++) Mxfp4Blocks.ToOurs(s + g * Mxfp4Blocks.GgmlBytes, ob + (o + g) * 16, os + o + g);
                }
        }
        return (blocks, scales);
    }

    private static bool Plain(DType t) => t is DType.F32 or DType.F16 or DType.BF16;

    /// <summary>
    /// gate <c>[E, I, C]</c> and up <c>[E, I, C]</c> as gpt-oss's <c>gate_up_proj</c> <c>[E, C, 2I]</c> (gate the even
    /// channels), held as its transpose (rows interleaved, <see cref="Tensor.ColumnMajor"/>): the model's transposed view
    /// of it is then plain row-major. Plain dtypes are copied as they are, others dequantized to F32.
    /// </summary>
    private static Tensor InterleavedTransposed(GgufFile f, string gn, string un, int E, int I, int C, string name)
    {
        Tensor g = f.Get(gn), u = f.Get(un);
        var dt = g.DType == u.DType && Plain(g.DType) ? g.DType : DType.F32;
        var t = Tensor.Zeros(dt, new Shape(E, 2 * I, C), name);
        long rowBytes = DTypes.StorageBytes(dt, C);
        for (long e = 0; e < E; e++)
            for (long i = 0; i < I; i++)
                for (int p = 0; p < 2; p++)
                {
                    var src = p == 0 ? g : u;
                    long from = e * I + i, to = (e * I + i) * 2 + p;
                    if (src.DType == dt) Buffer.MemoryCopy((byte*)src.Ptr + from * rowBytes, (byte*)t.Ptr + to * rowBytes, rowBytes, rowBytes);
                    else Compute.Cpu.Convert.ToF32(src, from * C, new Span<float>((float*)t.Ptr + to * C, C));
                }
        t.Shape = new Shape(E, C, 2 * I);
        t.ColumnMajor = true;
        return t;
    }

    /// <summary>down <c>[E, C, I]</c> as gpt-oss's <c>down_proj</c> <c>[E, I, C]</c>: a transposed view of the mapping (plain dtypes) or of an F32 copy.</summary>
    private static Tensor Transposed(GgufFile f, string dn, int E, int C, int I, string name)
    {
        var d = f.Get(dn);
        Tensor t;
        if (Plain(d.DType)) t = new Tensor(d.DType, new Shape(E, I, C), d.Ptr, d.Owner, name);
        else
        {
            t = Tensor.Zeros(DType.F32, new Shape(E, I, C), name);
            long n = (long)E * C * I;
            for (long o = 0; o < n; o += I) Compute.Cpu.Convert.ToF32(d, o, new Span<float>((float*)t.Ptr + o, I)); // rows of I
        }
        t.ColumnMajor = true;
        return t;
    }

    private static Tensor InterleavedBias(GgufFile f, string gb, string ub, int E, int I, string name)
    {
        var g = f.Get(gb).ToFloatArray();
        var u = f.Get(ub).ToFloatArray();
        var t = Tensor.Zeros(DType.F32, new Shape(E, 2 * I), name);
        var o = t.AsFloats();
        for (int k = 0; k < E * I; k++) { o[2 * k] = g[k]; o[2 * k + 1] = u[k]; }
        return t;
    }

    // ---------------- export: llama.cpp's expert tensors ----------------

    internal override bool ExportTensor(WeightRecord r, GgufExportContext ctx, List<GgufEntry> list)
    {
        var m = Experts.Match(r.Name);
        if (!m.Success) return false;
        string b = $"blk.{m.Groups[1].Value}", src = r.Name;
        var s = r.Shape;
        switch (m.Groups[2].Value, m.Groups[3].Value)
        {
            case ("gate_up_proj", ""):
            {
                // [E, C, 2I], x @ W: gate is the even output channels, up the odd
                long E = s[0], C = s[1], I = s[2] / 2;
                var type = ctx.TypeFor([I, C]);
                for (int p = 0; p < 2; p++)
                {
                    int part = p;
                    list.Add(new GgufEntry($"{b}.ffn_{(p == 0 ? "gate" : "up")}_exps.weight", [E, I, C], type, [src])
                    { Rows = raw => GateUpRows(raw(src), part) });
                }
                return true;
            }
            case ("down_proj", ""):
            {
                long E = s[0], I = s[1], C = s[2]; // [E, I, C], x @ W
                list.Add(new GgufEntry($"{b}.ffn_down_exps.weight", [E, C, I], ctx.TypeFor([C, I]), [src]) { Rows = raw => DownRows(raw(src)) });
                return true;
            }
            case ("gate_up_proj", "_bias"):
            {
                long E = s[0], I = s[1] / 2;
                for (int p = 0; p < 2; p++)
                {
                    int part = p;
                    list.Add(new GgufEntry($"{b}.ffn_{(p == 0 ? "gate" : "up")}_exps.bias", [E, I], DType.F32, [src])
                    { Rows = raw => BiasRows(raw(src), part) });
                }
                return true;
            }
            case ("down_proj", "_bias"):
                list.Add(new GgufEntry($"{b}.ffn_down_exps.bias", s, DType.F32, [src])); // [E, C], rows as they are
                return true;
            case ("gate_up_proj", "_blocks"):
            {
                long E = s[0], I = s[1] / 2, C = s[2]; // counted as [E, 2I, C]
                for (int p = 0; p < 2; p++)
                {
                    int part = p;
                    list.Add(new GgufEntry($"{b}.ffn_{(p == 0 ? "gate" : "up")}_exps.weight", [E, I, C], DType.MXFP4, [src])
                    { Bytes = (raw, fs) => WriteMxfp4(raw, src, part, 2, fs) });
                }
                return true;
            }
            case ("down_proj", "_blocks"):
                list.Add(new GgufEntry($"{b}.ffn_down_exps.weight", s, DType.MXFP4, [src]) { Bytes = (raw, fs) => WriteMxfp4(raw, src, 0, 1, fs) });
                return true;
            default:
                return false;
        }
    }

    /// <summary>Expert e of a stacked <c>[E, X, Y]</c> tensor as F32 <c>[X, Y]</c>, whatever its storage order.</summary>
    internal static float[] Expert(Tensor t, int e)
    {
        int X = t.Shape[1], Y = t.Shape[2];
        var m = new float[X * Y];
        if (!t.ColumnMajor) { Compute.Cpu.Convert.ToF32(t, (long)e * X * Y, m); return m; }
        var st = new float[X * Y]; // stored [Y, X]
        Compute.Cpu.Convert.ToF32Raw(t, (long)e * X * Y, st);
        for (int y = 0; y < Y; y++)
            for (int x = 0; x < X; x++) m[x * Y + y] = st[y * X + x];
        return m;
    }

    private static IEnumerable<float[]> GateUpRows(Tensor t, int part)
    {
        int E = t.Shape[0], C = t.Shape[1], I2 = t.Shape[2];
        var row = new float[C];
        for (int e = 0; e < E; e++)
        {
            var w = Expert(t, e); // [C, 2I]
            for (int i = 0; i < I2 / 2; i++)
            {
                for (int c = 0; c < C; c++) row[c] = w[c * I2 + 2 * i + part];
                yield return row;
            }
        }
    }

    private static IEnumerable<float[]> DownRows(Tensor t)
    {
        int E = t.Shape[0], I = t.Shape[1], C = t.Shape[2];
        var row = new float[I];
        for (int e = 0; e < E; e++)
        {
            var w = Expert(t, e); // [I, C]
            for (int c = 0; c < C; c++)
            {
                for (int i = 0; i < I; i++) row[i] = w[i * C + c];
                yield return row;
            }
        }
    }

    private static IEnumerable<float[]> BiasRows(Tensor t, int part)
    {
        var v = t.ToFloatArray();
        int E = t.Shape[0], I = t.Shape[1] / 2;
        var row = new float[I];
        for (int e = 0; e < E; e++)
        {
            for (int i = 0; i < I; i++) row[i] = v[e * 2 * I + 2 * i + part];
            yield return row;
        }
    }

    /// <summary>Rows <c>r * step + part</c> of HF MXFP4 blocks/scales as ggml blocks (scale, then ggml's nibble order).</summary>
    private static void WriteMxfp4(Func<string, Tensor> raw, string blocksName, int part, int step, Stream fs)
    {
        var blocks = raw(blocksName);
        var scales = raw(blocksName[..^"_blocks".Length] + "_scales");
        if (blocks.DType != DType.U8 || blocks.Shape.Rank != 4 || blocks.Shape[3] != 16 || scales.DType != DType.U8 || scales.Count * 16 != blocks.Count)
            throw new LlmArchInputException($"tensor '{blocksName}' {blocks.Shape} / its scales {scales.Shape}: not MXFP4 blocks [E, rows, groups, 16] with scales [E, rows, groups]");
        long rows = blocks.Shape[0] * (long)blocks.Shape[1];
        int G = blocks.Shape[2];
        var buf = new byte[G * Mxfp4Blocks.GgmlBytes];
        byte* pb = (byte*)blocks.Ptr, ps = (byte*)scales.Ptr;
        fixed (byte* o = buf)
            for (long r = part; r < rows; r += step)
            {
                for (int g = 0; g < G; g++)
                    Mxfp4Blocks.ToGgml(pb + (r * G + g) * 16, ps[r * G + g], o + g * Mxfp4Blocks.GgmlBytes);
                fs.Write(buf);
            }
    }
}

/// <summary>
/// llama.cpp's <c>deepseek2</c> (Hugging Face <c>deepseek_v3</c>, Kimi K2; V2 files load as softmax-routed V3).
/// MLA is stored as llama.cpp's absorbed form: <c>kv_b_proj</c> <c>[H * (nope + v), rank]</c> split into
/// <c>attn_k_b</c> <c>[H, rank, nope]</c> (transposed) and <c>attn_v_b</c> <c>[H, v, rank]</c>, with key_length /
/// value_length describing the latent cache and key_length_mla / value_length_mla the heads; older files keep one
/// <c>attn_kv_b</c>. No q/k permutation (DeepSeek's RoPE is interleaved, llama.cpp's NORM mode). YaRN's mscale_all_dim is
/// stored as yarn_log_multiplier = 0.1 * mscale_all_dim; the router's correction bias is <c>exp_probs_b.bias</c>.
/// </summary>
internal sealed class Deepseek2Arch : GgufArch
{
    public override string Name => "deepseek2";
    public override string ModelType => "deepseek_v3";

    protected override string? BlockTensor(string what, string kind) => (what, kind) switch
    {
        ("attn_q_a", "weight") => "self_attn.q_a_proj.weight",
        ("attn_q_a_norm", "weight") => "self_attn.q_a_layernorm.weight",
        ("attn_q_b", "weight") => "self_attn.q_b_proj.weight",
        ("attn_kv_a_mqa", "weight") => "self_attn.kv_a_proj_with_mqa.weight",
        ("attn_kv_a_norm", "weight") => "self_attn.kv_a_layernorm.weight",
        ("attn_kv_b", "weight") => "self_attn.kv_b_proj.weight",
        ("exp_probs_b", "bias") => "mlp.gate.e_score_correction_bias",
        ("ffn_gate_shexp" or "ffn_up_shexp" or "ffn_down_shexp", "weight") => $"mlp.shared_experts.{what[4..^6]}_proj.weight",
        ("attn_k" or "attn_v" or "attn_q_norm" or "attn_k_norm", _) => null,
        _ => base.BlockTensor(what, kind),
    };

    protected override IEnumerable<string> GgufBlockNames =>
        ["attn_norm", "attn_q", "attn_q_a", "attn_q_a_norm", "attn_q_b", "attn_kv_a_mqa", "attn_kv_a_norm", "attn_kv_b", "attn_output",
         "ffn_norm", "ffn_gate", "ffn_up", "ffn_down", "ffn_gate_inp", "exp_probs_b", "ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp"];

    private static readonly Dictionary<string, string> Stacked = new()
    {
        ["ffn_gate_exps"] = "gate_proj", ["ffn_up_exps"] = "up_proj", ["ffn_down_exps"] = "down_proj",
    };
    public override IReadOnlyDictionary<string, string> StackedExperts => Stacked;

    public override string? SourceOf(string hf) =>
        hf.EndsWith(".self_attn.kv_b_proj.weight", StringComparison.Ordinal) && hf.Split('.') is { Length: 6 } p
            ? $"blk.{p[2]}.attn_k_b.weight' + 'blk.{p[2]}.attn_v_b.weight' or 'blk.{p[2]}.attn_kv_b.weight"
            : base.SourceOf(hf);

    protected override JsonObject Rope(GgufFile f, int headDim)
    {
        var r = base.Rope(f, headDim);
        // [TAG_DEEPSEEK2_YARN_LOG_MUL_FIX] in llama.cpp: the converter writes 0.1 * mscale_all_dim; mscale equals it in every release.
        if ((string?)r["rope_type"] == "yarn" && f.Float($"{Name}.rope.scaling.yarn_log_multiplier") is double lm && lm != 0)
        {
            double m = Math.Round(lm / 0.1, 5);
            r["mscale"] = m; r["mscale_all_dim"] = m;
        }
        return r;
    }

    protected override void Customize(GgufFile f, JsonObject c, int layers, int headDim)
    {
        string a = Name;
        int heads = (int)c["num_attention_heads"]!;
        int rope = Req(f, $"{a}.rope.dimension_count");
        bool mla = f.Has($"{a}.attention.key_length_mla");
        int qk = Req(f, mla ? $"{a}.attention.key_length_mla" : $"{a}.attention.key_length");
        int v = Req(f, mla ? $"{a}.attention.value_length_mla" : $"{a}.attention.value_length");
        if (qk <= rope) throw new CheckpointFormatException($"{f.Path}: metadata key '{a}.attention.key_length{(mla ? "_mla" : "")}' is {qk}; it must exceed the RoPE dims {rope}");
        c["qk_rope_head_dim"] = rope;
        c["qk_nope_head_dim"] = qk - rope;
        c["qk_head_dim"] = qk;
        c["v_head_dim"] = v;
        c["head_dim"] = rope;
        c["kv_lora_rank"] = Req(f, $"{a}.attention.kv_lora_rank");
        c["q_lora_rank"] = f.Int($"{a}.attention.q_lora_rank") is long q && q > 0 ? (int)q : null;
        c["num_key_value_heads"] = heads; // MLA's heads; llama.cpp writes 1 (one latent)
        c["rope_interleave"] = true;
        c["num_hidden_layers"] = layers = MainLayers(f, a, layers);
        MoeKeys.Read(f, a, c, layers, defaultGating: 1);
    }

    /// <summary>block_count less the next-token-prediction layers some converters append.</summary>
    internal static int MainLayers(GgufFile f, string a, int blocks)
    {
        long nextn = f.Int($"{a}.nextn_predict_layers") ?? 0;
        if (nextn < 0 || nextn >= blocks)
            throw new CheckpointFormatException($"{f.Path}: metadata key '{a}.nextn_predict_layers' is {nextn}; it must be less than '{a}.block_count' {blocks}");
        return blocks - (int)nextn;
    }

    public override void ExportMetadata(ModelConfig cfg, List<(string Key, object Value)> kv)
    {
        string a = Name, src = cfg.SourcePath;
        if (cfg.AttentionBias == true) throw new LlmArchInputException($"{src}: llama.cpp's deepseek2 has no attention biases (attention_bias is true)");
        if (cfg.Get<bool?>("rope_interleave") == false) throw new LlmArchInputException($"{src}: llama.cpp's deepseek2 rotates interleaved pairs (rope_interleave is false)");
        int rope = cfg.RequirePositive(cfg.Get<int?>("qk_rope_head_dim"), "qk_rope_head_dim");
        int nope = cfg.RequirePositive(cfg.Get<int?>("qk_nope_head_dim"), "qk_nope_head_dim");
        int v = cfg.RequirePositive(cfg.Get<int?>("v_head_dim"), "v_head_dim");
        int rank = cfg.RequirePositive(cfg.Get<int?>("kv_lora_rank"), "kv_lora_rank");
        Set(kv, $"{a}.attention.head_count_kv", 1u);
        Set(kv, $"{a}.attention.key_length", (uint)(rank + rope));
        Set(kv, $"{a}.attention.value_length", (uint)rank);
        Set(kv, $"{a}.rope.dimension_count", (uint)rope);
        kv.Add(($"{a}.attention.key_length_mla", (uint)(nope + rope)));
        kv.Add(($"{a}.attention.value_length_mla", (uint)v));
        if (cfg.Get<int?>("q_lora_rank") is int q) kv.Add(($"{a}.attention.q_lora_rank", (uint)q));
        kv.Add(($"{a}.attention.kv_lora_rank", (uint)rank));
        string method = cfg.TopkMethod ?? "noaux_tc";
        if (method is not ("noaux_tc" or "greedy")) throw new LlmArchInputException($"{src}: topk_method '{method}' has no llama.cpp form (noaux_tc, greedy)");
        uint gating = (cfg.ScoringFunc ?? "sigmoid") switch
        {
            "sigmoid" => 2u, "softmax" => 1u,
            var s => throw new LlmArchInputException($"{src}: scoring_func '{s}' has no llama.cpp form (sigmoid, softmax)"),
        };
        MoeKeys.Write(cfg, a, kv, gating, cfg.NormTopkProb ?? true);
        var rp = cfg.RopeFor(null);
        if (rp.Kind == "yarn")
        {
            if (rp.Truncate == false) throw new LlmArchInputException($"{src}: llama.cpp's YaRN rounds its ramp ends (rope_parameters.truncate is false)");
            if (rp.MscaleAllDim is not double m || m == 0 || rp.Mscale is not double ms || ms != m)
                throw new LlmArchInputException($"{src}: llama.cpp's deepseek2 YaRN needs rope_parameters.mscale equal to mscale_all_dim (got {rp.Mscale?.ToString() ?? "none"} and {rp.MscaleAllDim?.ToString() ?? "none"})");
            kv.Add(($"{a}.rope.scaling.yarn_log_multiplier", (float)(0.1 * m)));
        }
    }

    // ---------------- MLA's kv_b, split for llama.cpp and joined back ----------------

    public override void Synthesize(GgufFile f, ModelConfig cfg, Action<string, Func<Tensor>> add)
    {
        int H = cfg.NumAttentionHeads ?? 0, nope = cfg.Get<int?>("qk_nope_head_dim") ?? 0, v = cfg.Get<int?>("v_head_dim") ?? 0, rank = cfg.Get<int?>("kv_lora_rank") ?? 0;
        for (int i = 0; i < cfg.NumHiddenLayers; i++)
        {
            string b = $"blk.{i}", kn = $"{b}.attn_k_b.weight", vn = $"{b}.attn_v_b.weight";
            if (f.Tensors.ContainsKey($"{b}.attn_kv_b.weight") || !f.Tensors.ContainsKey(kn) && !f.Tensors.ContainsKey(vn)) continue;
            GptOssArch.ExpectShape(f, f.Info(kn), [H, rank, nope]);
            GptOssArch.ExpectShape(f, f.Info(vn), [H, v, rank]);
            add($"model.layers.{i}.self_attn.kv_b_proj.weight", () => JoinKvB(f, kn, vn, H, nope, v, rank, $"model.layers.{i}.self_attn.kv_b_proj.weight"));
        }
    }

    /// <summary>kv_b <c>[H * (nope + v), rank]</c>: per head, the nope rows of k_b (stored transposed) then the v rows of v_b.</summary>
    private static unsafe Tensor JoinKvB(GgufFile f, string kn, string vn, int H, int nope, int v, int rank, string name)
    {
        Tensor kt = f.Get(kn), vt = f.Get(vn);
        var k = new float[(long)H * rank * nope];
        var vv = new float[(long)H * v * rank];
        Compute.Cpu.Convert.ToF32(kt, 0, k);
        Compute.Cpu.Convert.ToF32(vt, 0, vv);
        // keep a plain dtype both parts share (bf16 -> f32 -> bf16 is exact), else F32
        var dt = kt.DType == vt.DType && kt.DType is DType.F16 or DType.BF16 ? kt.DType : DType.F32;
        var t = Tensor.Zeros(dt, new Shape(H * (nope + v), rank), name);
        var row = new float[rank];
        for (int h = 0; h < H; h++)
            for (int j = 0; j < nope + v; j++)
            {
                if (j < nope) for (int c = 0; c < rank; c++) row[c] = k[((long)h * rank + c) * nope + j];
                else Array.Copy(vv, ((long)h * v + j - nope) * rank, row, 0, rank);
                long at = (long)h * (nope + v) + j;
                switch (dt)
                {
                    case DType.F32: row.CopyTo(new Span<float>((float*)t.Ptr + at * rank, rank)); break;
                    case DType.BF16: for (int c = 0; c < rank; c++) ((ushort*)t.Ptr)[at * rank + c] = Compute.Cpu.Convert.F32ToBF16(row[c]); break;
                    default: for (int c = 0; c < rank; c++) ((ushort*)t.Ptr)[at * rank + c] = Fp16.FromF32(row[c]); break;
                }
            }
        return t;
    }

    internal override bool ExportTensor(WeightRecord r, GgufExportContext ctx, List<GgufEntry> list)
    {
        var p = r.Name.Split('.');
        if (p is not ["model", "layers", _, "self_attn", "kv_b_proj", "weight"]) return false;
        var cfg = ctx.Config;
        int H = cfg.NumAttentionHeads!.Value, nope = cfg.Get<int?>("qk_nope_head_dim")!.Value, v = cfg.Get<int?>("v_head_dim")!.Value;
        long rank = r.Shape[1];
        string src = r.Name, b = $"blk.{p[2]}";
        list.Add(new GgufEntry($"{b}.attn_k_b.weight", [H, rank, nope], ctx.TypeFor([rank, nope]), [src]) { Rows = raw => KbRows(raw(src), H, nope, v) });
        list.Add(new GgufEntry($"{b}.attn_v_b.weight", [H, v, rank], ctx.TypeFor([v, rank]), [src]) { Rows = raw => VbRows(raw(src), H, nope, v) });
        return true;
    }

    private static IEnumerable<float[]> KbRows(Tensor kvb, int H, int nope, int v)
    {
        int rank = kvb.Shape[1];
        var head = new float[nope * rank];
        var row = new float[nope];
        for (int h = 0; h < H; h++)
        {
            Compute.Cpu.Convert.ToF32(kvb, (long)h * (nope + v) * rank, head); // the nope rows of head h, [nope, rank]
            for (int c = 0; c < rank; c++)
            {
                for (int j = 0; j < nope; j++) row[j] = head[j * rank + c];
                yield return row;
            }
        }
    }

    private static IEnumerable<float[]> VbRows(Tensor kvb, int H, int nope, int v)
    {
        int rank = kvb.Shape[1];
        var row = new float[rank];
        for (int h = 0; h < H; h++)
            for (int j = 0; j < v; j++)
            {
                Compute.Cpu.Convert.ToF32(kvb, ((long)h * (nope + v) + nope + j) * rank, row);
                yield return row;
            }
    }
}

/// <summary>
/// llama.cpp's <c>glm4moe</c> (Hugging Face <c>glm4_moe</c>, GLM-4.5 / 4.6): GQA with q/k/v biases, optional QK-norm,
/// partial RoPE (rope.dimension_count of the head, NeoX halves as HF), the pre-FFN norm named <c>post_attention_norm</c>,
/// sigmoid router with <c>exp_probs_b</c>, shared experts, leading dense layers. block_count includes the next-token
/// prediction layers (nextn_predict_layers), which are not loaded.
/// </summary>
internal sealed class Glm4MoeArch : GgufArch
{
    public override string Name => "glm4moe";
    public override string ModelType => "glm4_moe";

    protected override string? BlockTensor(string what, string kind) => (what, kind) switch
    {
        ("post_attention_norm", "weight") => "post_attention_layernorm.weight",
        ("exp_probs_b", "bias") => "mlp.gate.e_score_correction_bias",
        ("ffn_gate_shexp" or "ffn_up_shexp" or "ffn_down_shexp", "weight") => $"mlp.shared_experts.{what[4..^6]}_proj.weight",
        ("ffn_norm", _) => null,
        _ => base.BlockTensor(what, kind),
    };

    protected override IEnumerable<string> GgufBlockNames =>
        ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_q_norm", "attn_k_norm", "post_attention_norm",
         "ffn_gate", "ffn_up", "ffn_down", "ffn_gate_inp", "exp_probs_b", "ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp"];

    private static readonly Dictionary<string, string> Stacked = new()
    {
        ["ffn_gate_exps"] = "gate_proj", ["ffn_up_exps"] = "up_proj", ["ffn_down_exps"] = "down_proj",
    };
    public override IReadOnlyDictionary<string, string> StackedExperts => Stacked;

    protected override void Customize(GgufFile f, JsonObject c, int layers, int headDim)
    {
        string a = Name;
        c["num_hidden_layers"] = layers = Deepseek2Arch.MainLayers(f, a, layers);
        c["num_nextn_predict_layers"] = 0; // present in the file but not loaded
        int rot = (int?)f.Int($"{a}.rope.dimension_count") ?? headDim;
        double partial = (double)rot / headDim;
        if (rot <= 0 || rot > headDim || rot % 2 != 0 || (int)(headDim * partial) != rot)
            throw new CheckpointFormatException($"{f.Path}: metadata key '{a}.rope.dimension_count' is {rot}; expected an even number of dims up to the head dim {headDim}");
        c["partial_rotary_factor"] = partial;
        ((JsonObject)c["rope_parameters"]!)["partial_rotary_factor"] = partial;
        c["use_qk_norm"] = f.Tensors.ContainsKey("blk.0.attn_q_norm.weight");
        c["hidden_act"] = "silu";
        MoeKeys.Read(f, a, c, layers, defaultGating: 2);
        if ((string)c["scoring_func"]! != "sigmoid")
            throw new CheckpointFormatException($"{f.Path}: metadata key '{a}.expert_gating_func' is {f.Int($"{a}.expert_gating_func")}; GLM-4.5's router is sigmoid (2)");
        c.Remove("scoring_func");
        c.Remove("topk_method");
    }

    public override void ExportMetadata(ModelConfig cfg, List<(string Key, object Value)> kv)
    {
        int heads = cfg.NumAttentionHeads!.Value, headDim = cfg.HeadDim ?? cfg.HiddenSize!.Value / heads;
        var rp = cfg.RopeFor(null);
        double partial = rp.PartialRotaryFactor ?? cfg.PartialRotaryFactor ?? 1.0;
        Set(kv, $"{Name}.rope.dimension_count", (uint)(int)(headDim * partial));
        MoeKeys.Write(cfg, Name, kv, gating: 2u, cfg.NormTopkProb ?? true);
    }
}

/// <summary>The MoE keys deepseek2 and glm4moe share (llama.cpp reads the same names for both).</summary>
internal static class MoeKeys
{
    public static void Read(GgufFile f, string a, JsonObject c, int layers, int defaultGating)
    {
        // fallback null: a required key; per-layer arrays (llama.cpp's get_key_or_arr) must be uniform
        int Int(string key, long? fallback, long min)
        {
            long v = GgufArch.PerLayerUniform(f, $"{a}.{key}") ?? fallback ?? throw new CheckpointFormatException($"{f.Path}: metadata key '{a}.{key}' is missing");
            if (v < min || v > int.MaxValue) throw new CheckpointFormatException($"{f.Path}: metadata key '{a}.{key}' is {v}; expected at least {min}");
            return (int)v;
        }
        int experts = Int("expert_count", null, 1), dense = Int("leading_dense_block_count", 0, 0);
        if (dense > layers) throw new CheckpointFormatException($"{f.Path}: metadata key '{a}.leading_dense_block_count' is {dense}, more than the {layers} layers");
        int used = Int("expert_used_count", null, 1);
        if (used > experts) throw new CheckpointFormatException($"{f.Path}: metadata key '{a}.expert_used_count' is {used}, more than the {experts} experts");
        c["n_routed_experts"] = experts;
        c["num_experts_per_tok"] = used;
        c["moe_intermediate_size"] = Int("expert_feed_forward_length", null, 1);
        c["n_shared_experts"] = Int("expert_shared_count", 0, 0);
        c["first_k_dense_replace"] = dense;
        double scale = f.Float($"{a}.expert_weights_scale") ?? 0;
        c["routed_scaling_factor"] = scale == 0 ? 1.0 : scale; // llama.cpp: 0 (absent) means no scaling
        c["norm_topk_prob"] = f.Bool($"{a}.expert_weights_norm") ?? false;
        c["n_group"] = Int("expert_group_count", 1, 1);
        c["topk_group"] = Int("expert_group_used_count", 1, 1);
        long gating = f.Int($"{a}.expert_gating_func") ?? defaultGating;
        c["scoring_func"] = gating switch
        {
            1 => "softmax", 2 => "sigmoid",
            _ => throw new CheckpointFormatException($"{f.Path}: metadata key '{a}.expert_gating_func' is {gating}; supported: 1 (softmax), 2 (sigmoid)"),
        };
        // the correction bias is there exactly when the router uses one (noaux_tc)
        c["topk_method"] = dense < layers && f.Tensors.ContainsKey($"blk.{dense}.exp_probs_b.bias") ? "noaux_tc" : "greedy";
        c["intermediate_size"] ??= c["moe_intermediate_size"]!.DeepClone();
    }

    public static void Write(ModelConfig cfg, string a, List<(string Key, object Value)> kv, uint gating, bool norm)
    {
        int experts = cfg.NRoutedExperts ?? cfg.NumExperts ?? cfg.NumLocalExperts ?? throw cfg.Missing("n_routed_experts");
        kv.Add(($"{a}.expert_count", (uint)experts));
        kv.Add(($"{a}.expert_used_count", (uint)(cfg.NumExpertsPerTok ?? throw cfg.Missing("num_experts_per_tok"))));
        kv.Add(($"{a}.expert_feed_forward_length", (uint)(cfg.MoeIntermediateSize ?? throw cfg.Missing("moe_intermediate_size"))));
        kv.Add(($"{a}.expert_shared_count", (uint)(cfg.NSharedExperts ?? 0)));
        kv.Add(($"{a}.leading_dense_block_count", (uint)(cfg.FirstKDenseReplace ?? 0)));
        kv.Add(($"{a}.expert_weights_scale", (float)(cfg.RoutedScalingFactor ?? 1.0)));
        kv.Add(($"{a}.expert_weights_norm", norm));
        kv.Add(($"{a}.expert_gating_func", gating));
        // llama.cpp asserts 0 < used < groups when groups > 1; all groups used is no grouping at all
        if ((cfg.NGroup ?? 1) > 1 && (cfg.TopkGroup ?? 1) < cfg.NGroup)
        {
            kv.Add(($"{a}.expert_group_count", (uint)cfg.NGroup!.Value));
            kv.Add(($"{a}.expert_group_used_count", (uint)(cfg.TopkGroup ?? 1)));
        }
    }
}
