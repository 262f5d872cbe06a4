using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using LlmArch.Compute;
using LlmArch.Compute.Cpu;
using LlmArch.Models;

namespace LlmArch.Checkpoints;

/// <summary>
/// Writes a Hugging Face model directory as a GGUF v3 file that llama.cpp loads (llama/mistral as
/// <c>llama</c>, qwen3 as <c>qwen3</c>): llama.cpp's metadata keys and tensor names, its block layouts
/// (Q8_0 = f16 scale + 32 int8 per block), its RoPE row permutation of llama q/k weights (llama.cpp rotates
/// adjacent pairs where HF rotates halves; qwen3 uses NEOX-style RoPE and is not permuted), llama3 RoPE
/// frequency factors as <c>rope_freqs.weight</c>, and tokenizer metadata from tokenizer.json. Without a
/// tokenizer.json a synthetic byte-level vocabulary of vocab_size tokens is written so llama.cpp can load and
/// benchmark the file (it cannot tokenize real text sensibly).
/// </summary>
public static unsafe class GgufExport
{
    // ggml tensor types and llama file types
    private const uint GgmlF32 = 0, GgmlF16 = 1, GgmlQ8_0 = 8, GgmlBF16 = 30;

    private sealed record Entry(string Name, string Source, long[] Dims /* HF order [rows, cols] */, uint Type, int PermuteHeads = 0, float[]? Data = null);

    public static void Export(string modelDir, string outPath, DType outType)
    {
        if (outType is not (DType.BF16 or DType.F32 or DType.F16 or DType.Q8_0))
            throw new LlmArchInputException($"GGUF export supports bf16, f16, f32 and q8_0, not {outType}");
        var cfg = ModelConfig.Load(Path.Combine(modelDir, "config.json"));
        string arch = cfg.ModelType switch
        {
            "llama" or "mistral" => "llama",
            "qwen3" => "qwen3",
            _ => throw new LlmArchInputException($"{cfg.SourcePath}: GGUF export supports model_type llama, mistral and qwen3 (got '{cfg.ModelType}')"),
        };
        using var w = new CheckpointWeights(modelDir);
        var model = ModelLoader.Create(cfg, w, new CpuBackend()); // validates every tensor's shape, and tells us tying
        int layers = cfg.NumHiddenLayers!.Value, hidden = cfg.HiddenSize!.Value, heads = cfg.NumAttentionHeads!.Value;
        int kvHeads = cfg.NumKeyValueHeads ?? heads, headDim = cfg.HeadDim ?? hidden / heads, vocab = model.VocabSize;
        int inter = cfg.IntermediateSize![0];
        bool tied = !w.Contains("lm_head.weight");
        bool permute = arch == "llama";

        uint Mat(long cols) => outType switch
        {
            DType.F32 => GgmlF32, DType.F16 => GgmlF16, DType.BF16 => GgmlBF16,
            _ => cols % 32 == 0 ? GgmlQ8_0 : GgmlF16,
        };
        var list = new List<Entry>
        {
            new("token_embd.weight", "model.embed_tokens.weight", [vocab, hidden], Mat(hidden)),
            new("output_norm.weight", "model.norm.weight", [hidden], GgmlF32),
        };
        if (!tied) list.Add(new("output.weight", "lm_head.weight", [vocab, hidden], Mat(hidden)));
        var ropeFactors = Llama3RopeFactors(cfg, headDim);
        if (ropeFactors is not null) list.Add(new("rope_freqs.weight", "", [ropeFactors.Length], GgmlF32, 0, ropeFactors));
        for (int i = 0; i < layers; i++)
        {
            string p = $"model.layers.{i}", b = $"blk.{i}";
            list.Add(new($"{b}.attn_norm.weight", $"{p}.input_layernorm.weight", [hidden], GgmlF32));
            list.Add(new($"{b}.attn_q.weight", $"{p}.self_attn.q_proj.weight", [heads * headDim, hidden], Mat(hidden), permute ? heads : 0));
            list.Add(new($"{b}.attn_k.weight", $"{p}.self_attn.k_proj.weight", [kvHeads * headDim, hidden], Mat(hidden), permute ? kvHeads : 0));
            list.Add(new($"{b}.attn_v.weight", $"{p}.self_attn.v_proj.weight", [kvHeads * headDim, hidden], Mat(hidden)));
            list.Add(new($"{b}.attn_output.weight", $"{p}.self_attn.o_proj.weight", [hidden, heads * headDim], Mat(heads * headDim)));
            if (arch == "qwen3")
            {
                list.Add(new($"{b}.attn_q_norm.weight", $"{p}.self_attn.q_norm.weight", [headDim], GgmlF32));
                list.Add(new($"{b}.attn_k_norm.weight", $"{p}.self_attn.k_norm.weight", [headDim], GgmlF32));
            }
            list.Add(new($"{b}.ffn_norm.weight", $"{p}.post_attention_layernorm.weight", [hidden], GgmlF32));
            list.Add(new($"{b}.ffn_gate.weight", $"{p}.mlp.gate_proj.weight", [inter, hidden], Mat(hidden)));
            list.Add(new($"{b}.ffn_up.weight", $"{p}.mlp.up_proj.weight", [inter, hidden], Mat(hidden)));
            list.Add(new($"{b}.ffn_down.weight", $"{p}.mlp.down_proj.weight", [hidden, inter], Mat(inter)));
        }
        foreach (var e in list)
            if (e.Data is null && !w.Contains(e.Source)) throw new CheckpointFormatException($"{modelDir}: tensor '{e.Source}' is missing (needed for GGUF {e.Name})");
        if (cfg.AttentionBias == true || cfg.MlpBias == true)
            throw new LlmArchInputException($"{cfg.SourcePath}: GGUF export does not write attention/MLP biases yet");

        var kv = new List<(string Key, object Value)>
        {
            ("general.architecture", arch),
            ("general.name", Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(modelDir)))),
            ("general.file_type", (uint)(outType switch { DType.F32 => 0, DType.F16 => 1, DType.Q8_0 => 7, _ => 32 })),
            ("general.alignment", 32u),
            ($"{arch}.context_length", (uint)cfg.MaxPositionEmbeddings!.Value),
            ($"{arch}.embedding_length", (uint)hidden),
            ($"{arch}.block_count", (uint)layers),
            ($"{arch}.feed_forward_length", (uint)inter),
            ($"{arch}.attention.head_count", (uint)heads),
            ($"{arch}.attention.head_count_kv", (uint)kvHeads),
            ($"{arch}.attention.key_length", (uint)headDim),
            ($"{arch}.attention.value_length", (uint)headDim),
            ($"{arch}.rope.dimension_count", (uint)headDim),
            ($"{arch}.rope.freq_base", (float)(cfg.RopeFor(null).RopeTheta ?? cfg.RopeTheta ?? 10000.0)),
            ($"{arch}.attention.layer_norm_rms_epsilon", (float)(cfg.RmsNormEps ?? 1e-6)),
            ($"{arch}.vocab_size", (uint)vocab),
        };
        AddTokenizer(kv, modelDir, cfg, vocab, arch);

        WriteFile(outPath, kv, list, w, outType, headDim);
    }

    /// <summary>llama3 RoPE scaling as llama.cpp wants it: per-frequency divisors in <c>rope_freqs.weight</c>.</summary>
    private static float[]? Llama3RopeFactors(ModelConfig cfg, int headDim)
    {
        var rp = cfg.RopeFor(null);
        if (rp.Kind != "llama3") return null;
        double theta = rp.RopeTheta ?? cfg.RopeTheta ?? 10000.0;
        double factor = rp.Factor ?? 8, low = rp.LowFreqFactor ?? 1, high = rp.HighFreqFactor ?? 4;
        double old = rp.OriginalMaxPositionEmbeddings ?? 8192;
        double lowWave = old / low, highWave = old / high;
        var f = new float[headDim / 2];
        for (int i = 0; i < f.Length; i++)
        {
            double freq = 1.0 / Math.Pow(theta, 2.0 * i / headDim);
            double wave = 2 * Math.PI / freq;
            if (wave < highWave) f[i] = 1;
            else if (wave > lowWave) f[i] = (float)factor;
            else
            {
                double smooth = (old / wave - low) / (high - low);
                f[i] = (float)(1 / ((1 - smooth) / factor + smooth));
            }
        }
        return f;
    }

    private static void AddTokenizer(List<(string, object)> kv, string dir, ModelConfig cfg, int vocab, string arch)
    {
        string path = Path.Combine(dir, "tokenizer.json");
        var tokens = new string[vocab];
        var types = new int[vocab];
        var merges = new List<string>();
        string pre = "default";
        if (File.Exists(path))
        {
            JsonNode root;
            try { root = JsonNode.Parse(File.ReadAllText(path)) ?? throw new ConfigException($"{path}: empty"); }
            catch (JsonException e) { throw new ConfigException($"{path}: malformed JSON ({e.Message})"); }
            var model = root["model"] as JsonObject ?? throw new ConfigException($"{path}: key 'model' is missing");
            if ((string?)model["type"] is { } t && t != "BPE") throw new ConfigException($"{path}: key 'model.type' is '{t}'; GGUF export handles BPE tokenizers");
            if (model["vocab"] is not JsonObject v) throw new ConfigException($"{path}: key 'model.vocab' is missing");
            foreach (var (tok, idNode) in v)
            {
                int id = (int)idNode!;
                if ((uint)id < (uint)vocab) { tokens[id] = tok; types[id] = 1; }
            }
            if (model["merges"] is JsonArray m)
                foreach (var e in m)
                    merges.Add(e is JsonArray pair ? $"{(string?)pair[0]} {(string?)pair[1]}" : (string?)e ?? "");
            if (root["added_tokens"] is JsonArray added)
                foreach (var a in added)
                {
                    int id = (int)a!["id"]!;
                    if ((uint)id >= (uint)vocab) continue;
                    tokens[id] = (string?)a["content"] ?? "";
                    types[id] = (bool?)a["special"] == true ? 3 : 4;
                }
            for (int i = 0; i < vocab; i++)
                if (tokens[i] is null) { tokens[i] = $"[PAD{i}]"; types[i] = 5; }
            pre = arch == "qwen3" ? "qwen2" : "llama-bpe";
        }
        else
        {
            // Synthetic byte-level vocabulary: the 256 GPT-2 byte symbols first (so any text tokenizes), then placeholders.
            var bytes = ByteSymbols();
            for (int i = 0; i < vocab; i++) { tokens[i] = i < 256 ? bytes[i] : $"<t{i}>"; types[i] = 1; }
        }
        kv.Add(("tokenizer.ggml.model", "gpt2"));
        kv.Add(("tokenizer.ggml.pre", pre));
        kv.Add(("tokenizer.ggml.tokens", tokens));
        kv.Add(("tokenizer.ggml.token_type", types));
        kv.Add(("tokenizer.ggml.merges", merges.ToArray()));
        if (cfg.BosTokenId is [var bos, ..] && bos < vocab) kv.Add(("tokenizer.ggml.bos_token_id", (uint)bos));
        if (cfg.EosTokenId is [var eos, ..] && eos < vocab) kv.Add(("tokenizer.ggml.eos_token_id", (uint)eos));
        if (cfg.PadTokenId is [var pad, ..] && pad < vocab) kv.Add(("tokenizer.ggml.padding_token_id", (uint)pad));
        kv.Add(("tokenizer.ggml.add_bos_token", false));
    }

    /// <summary>GPT-2's byte-to-unicode table: printable bytes map to themselves, the rest to U+0100 onwards.</summary>
    private static string[] ByteSymbols()
    {
        var r = new string[256];
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            r[b] = printable ? ((char)b).ToString() : ((char)(256 + n++)).ToString();
        }
        return r;
    }

    private static long TensorBytes(Entry e)
    {
        long count = e.Dims.Aggregate(1L, (a, b) => a * b);
        return e.Type switch { GgmlF32 => count * 4, GgmlF16 or GgmlBF16 => count * 2, GgmlQ8_0 => count / 32 * 34, _ => throw new InvalidOperationException() };
    }

    private static void WriteFile(string outPath, List<(string Key, object Value)> kv, List<Entry> list, CheckpointWeights w, DType outType, int headDim)
    {
        const int Align = 32;
        string? parent = Path.GetDirectoryName(Path.GetFullPath(outPath));
        if (parent is not null) Directory.CreateDirectory(parent);
        using var fs = new FileStream(outPath, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        using var bw = new BinaryWriter(fs, Encoding.UTF8, leaveOpen: true);
        bw.Write(0x46554747u); // "GGUF"
        bw.Write(3u);
        bw.Write((ulong)list.Count);
        bw.Write((ulong)kv.Count);
        foreach (var (key, value) in kv) { WriteString(bw, key); WriteValue(bw, value); }
        long offset = 0;
        foreach (var e in list)
        {
            WriteString(bw, e.Name);
            bw.Write((uint)e.Dims.Length);
            for (int d = e.Dims.Length - 1; d >= 0; d--) bw.Write((ulong)e.Dims[d]); // ggml order: innermost first
            bw.Write(e.Type);
            bw.Write((ulong)offset);
            offset += (TensorBytes(e) + Align - 1) / Align * Align;
        }
        bw.Flush();
        Pad(fs, Align);
        foreach (var e in list)
        {
            WriteTensor(fs, e, w, headDim);
            Pad(fs, Align);
        }
    }

    private static void Pad(Stream s, int align)
    {
        long pad = (align - s.Position % align) % align;
        for (long i = 0; i < pad; i++) s.WriteByte(0);
    }

    private static void WriteTensor(Stream fs, Entry e, CheckpointWeights w, int headDim)
    {
        if (e.Data is not null)
        {
            fixed (float* p = e.Data) fs.Write(new ReadOnlySpan<byte>(p, e.Data.Length * 4));
            return;
        }
        var t = w.Raw(e.Source);
        int rows = e.Dims.Length == 1 ? 1 : (int)e.Dims[0], cols = (int)e.Dims[^1];
        var row = new float[cols];
        int outRowBytes = e.Type switch { GgmlF32 => cols * 4, GgmlF16 or GgmlBF16 => cols * 2, _ => cols / 32 * 34 };
        var buf = new byte[outRowBytes];
        for (int r = 0; r < rows; r++)
        {
            int src = r;
            if (e.PermuteHeads > 0)
            {
                // HF rotate-half rows (h, j, i) → llama.cpp pair rows (h, i, j): new h*D + 2i + j = old h*D + j*D/2 + i
                int h = r / headDim, within = r % headDim, i = within / 2, j = within % 2;
                src = h * headDim + j * (headDim / 2) + i;
            }
            Compute.Cpu.Convert.ToF32(t, (long)src * cols, row);
            fixed (byte* o = buf) fixed (float* x = row)
            {
                switch (e.Type)
                {
                    case GgmlF32: new ReadOnlySpan<float>(x, cols).CopyTo(new Span<float>(o, cols)); break;
                    case GgmlF16: for (int c = 0; c < cols; c++) ((Half*)o)[c] = (Half)x[c]; break;
                    case GgmlBF16: for (int c = 0; c < cols; c++) ((ushort*)o)[c] = Compute.Cpu.Convert.F32ToBF16(x[c]); break;
                    default:
                        Q8.QuantizeRow(x, cols, o);
                        break;
                }
            }
            fs.Write(buf);
        }
    }

    private static void WriteString(BinaryWriter bw, string s)
    {
        var b = Encoding.UTF8.GetBytes(s);
        bw.Write((ulong)b.Length);
        bw.Write(b);
    }

    private static void WriteValue(BinaryWriter bw, object v)
    {
        switch (v)
        {
            case uint u: bw.Write(4u); bw.Write(u); break;
            case int i: bw.Write(5u); bw.Write(i); break;
            case float f: bw.Write(6u); bw.Write(f); break;
            case bool b: bw.Write(7u); bw.Write(b ? (byte)1 : (byte)0); break;
            case string s: bw.Write(8u); WriteString(bw, s); break;
            case string[] a: bw.Write(9u); bw.Write(8u); bw.Write((ulong)a.Length); foreach (var s in a) WriteString(bw, s); break;
            case int[] a: bw.Write(9u); bw.Write(5u); bw.Write((ulong)a.Length); foreach (var x in a) bw.Write(x); break;
            default: throw new ArgumentException($"GGUF value type {v.GetType()}");
        }
    }
}
