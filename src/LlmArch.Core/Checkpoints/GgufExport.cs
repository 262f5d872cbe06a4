using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using LlmArch.Compute;
using LlmArch.Compute.Cpu;
using LlmArch.Models;

namespace LlmArch.Checkpoints;

/// <summary>
/// Writes a model (a Hugging Face directory, or a GGUF file) as a GGUF v3 file that llama.cpp loads, for the
/// architectures of <see cref="GgufArch"/>: llama.cpp's metadata keys and tensor names, its block layouts (Q8_0, Q4_0,
/// Q4_K, Q6_K exactly as ggml stores them), its RoPE row permutation of llama q/k weights (llama.cpp rotates adjacent
/// pairs where HF rotates halves), Gemma's norm weights stored as w + 1, experts stacked <c>[E, out, in]</c>, llama3 RoPE
/// frequency factors as <c>rope_freqs.weight</c>, and the tokenizer: tokenizer.json as llama.cpp's "gpt2" (byte-level
/// BPE) or "llama" (SentencePiece-style BPE with byte fallback, scores from the merge ranks) vocabulary, with the chat
/// template of tokenizer_config.json. Without a tokenizer a synthetic byte-level vocabulary of vocab_size tokens is
/// written so llama.cpp can load and benchmark the file. Quantized types follow <see cref="WeightQuantizer"/>: q4_0 and
/// q4_k keep the output head in Q6_K; rows that are not whole blocks fall back to Q8_0, then F16.
/// </summary>
public static unsafe class GgufExport
{
    private const int Align = 32;

    public static void Export(string model, string outPath, DType outType)
    {
        if (outType is not (DType.BF16 or DType.F32 or DType.F16 or DType.Q8_0 or DType.Q4_0 or DType.Q4_K))
            throw new LlmArchInputException($"GGUF export supports bf16, f16, f32, q8_0, q4_0 and q4_k, not {outType}");
        bool fromGguf = GgufFile.Exists(model);
        ModelConfig cfg;
        WeightSource w;
        Func<string, Tensor> raw;
        if (fromGguf)
        {
            var (c, g) = GgufModel.Open(model);
            cfg = c; w = g; raw = g.Raw;
        }
        else
        {
            if (!Directory.Exists(model)) throw new LlmArchInputException($"{model}: model directory not found");
            cfg = ModelConfig.Load(Path.Combine(model, "config.json"));
            var cw = new CheckpointWeights(model);
            w = cw; raw = cw.Raw;
        }
        try
        {
            var arch = GgufArch.ForModelType(cfg.ModelType)
                ?? throw new LlmArchInputException($"{cfg.SourcePath}: GGUF export supports model_type {GgufArch.ExportableModelTypes} (got '{cfg.ModelType}')");
            var m = ModelLoader.Create(cfg, w, new CpuBackend()); // validates every tensor's shape and records what the model uses
            var kv = Metadata(cfg, arch, m, outType, model, fromGguf ? ((GgufWeights)w).File : null);
            var entries = Entries(cfg, arch, w, m, outType, raw);
            WriteFile(outPath, kv, entries, raw);
        }
        finally { (w as IDisposable)?.Dispose(); }
    }

    // ---------------- tensors ----------------

    private static List<GgufEntry> Entries(ModelConfig cfg, GgufArch arch, WeightSource w, CausalLM m, DType outType, Func<string, Tensor> raw)
    {
        var recs = w.Records.GroupBy(r => r.Name).Select(g => g.First()).ToList();
        bool tied = !recs.Any(r => r.Name == "lm_head.weight");
        int heads = cfg.NumAttentionHeads ?? 1, kvHeads = cfg.NumKeyValueHeads ?? heads;
        var list = new List<GgufEntry>();
        var stacked = new Dictionary<string, List<(int E, WeightRecord R)>>();
        var ctx = new GgufExportContext(cfg, outType, raw);
        foreach (var r in recs)
        {
            if (arch.ExportTensor(r, ctx, list)) continue;
            var parts = r.Name.Split('.');
            // model.layers.{i}.mlp.experts.{e}.{proj}.weight
            if (parts.Length == 8 && parts[3] == "mlp" && parts[4] == "experts" && int.TryParse(parts[5], out int e))
            {
                string? what = arch.StackedExperts.FirstOrDefault(kv => kv.Value == parts[6]).Key;
                if (what is null) throw new LlmArchInputException($"{cfg.SourcePath}: tensor '{r.Name}' has no GGUF name for architecture {arch.Name}");
                string key = $"blk.{parts[2]}.{what}.weight";
                if (!stacked.TryGetValue(key, out var l)) stacked[key] = l = [];
                l.Add((e, r));
                continue;
            }
            string name = arch.GgufName(r.Name) ?? throw new LlmArchInputException($"{cfg.SourcePath}: tensor '{r.Name}' has no GGUF name for architecture {arch.Name}");
            bool head = name == "output.weight" || (name == "token_embd.weight" && tied);
            int permute = !arch.PermutesQk ? 0 : r.Name.Contains(".self_attn.q_proj.") ? heads : r.Name.Contains(".self_attn.k_proj.") ? kvHeads : 0;
            list.Add(new GgufEntry(name, r.Shape, TypeFor(outType, r.Shape, head), [r.Name], permute, arch.IsShiftedNorm(r.Name) ? arch.NormShift : 0f));
        }
        foreach (var (name, l) in stacked)
        {
            l.Sort((a, b) => a.E.CompareTo(b.E));
            for (int i = 0; i < l.Count; i++)
                if (l[i].E != i) throw new LlmArchInputException($"{cfg.SourcePath}: expert {i} of '{name}' is missing");
            var s = l[0].R.Shape;
            list.Add(new GgufEntry(name, [l.Count, s[0], s[1]], TypeFor(outType, s, false), l.Select(x => x.R.Name).ToArray()));
        }
        if (Llama3RopeFactors(cfg, cfg.HeadDim ?? cfg.HiddenSize!.Value / heads) is { } factors)
            list.Add(new GgufEntry("rope_freqs.weight", [factors.Length], DType.F32, [], 0, 0, factors));
        // llama.cpp does not care about order; globals first reads best.
        int Rank(string n) => n switch { "token_embd.weight" => 0, "output_norm.weight" => 1, "output.weight" => 2, "rope_freqs.weight" => 3, _ => 4 };
        return list.OrderBy(e => Rank(e.Name)).ThenBy(e => BlockIndex(e.Name)).ToList();
    }

    private static int BlockIndex(string n) => n.StartsWith("blk.", StringComparison.Ordinal) && int.TryParse(n.Split('.')[1], out int i) ? i : -1;

    internal static DType TypeFor(DType outType, long[] shape, bool head)
    {
        if (shape.Length < 2) return DType.F32;
        int cols = (int)shape[^1];
        return outType switch
        {
            DType.F32 or DType.F16 or DType.BF16 => outType,
            _ => WeightQuantizer.TypeFor(outType, DType.F32, 2, cols, head) ?? DType.F16,
        };
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

    // ---------------- metadata ----------------

    private static List<(string Key, object Value)> Metadata(ModelConfig cfg, GgufArch arch, CausalLM m, DType outType, string model, GgufFile? src)
    {
        string a = arch.Name;
        int layers = cfg.NumHiddenLayers!.Value, hidden = cfg.HiddenSize!.Value, heads = cfg.NumAttentionHeads!.Value;
        int kvHeads = cfg.NumKeyValueHeads ?? heads, headDim = cfg.HeadDim ?? hidden / heads;
        if (cfg.MlpBias == true) throw new LlmArchInputException($"{cfg.SourcePath}: GGUF export does not write MLP biases");
        uint fileType = outType switch { DType.F32 => 0u, DType.F16 => 1u, DType.Q8_0 => 7u, DType.Q4_0 => 2u, DType.Q4_K => 14u, _ => 32u };
        var kv = new List<(string, object)>
        {
            ("general.architecture", a),
            ("general.name", src?.String("general.name") ?? Path.GetFileNameWithoutExtension(Path.TrimEndingDirectorySeparator(Path.GetFullPath(model)))),
            ("general.file_type", fileType),
            ("general.alignment", (uint)Align),
        };
        if (DTypes.IsGgmlBlock(outType)) kv.Add(("general.quantization_version", 2u));
        kv.Add(($"{a}.context_length", (uint)(cfg.MaxPositionEmbeddings ?? 4096)));
        kv.Add(($"{a}.embedding_length", (uint)hidden));
        kv.Add(($"{a}.block_count", (uint)layers));
        if (cfg.IntermediateSize is [var ff, ..]) kv.Add(($"{a}.feed_forward_length", (uint)ff));
        kv.Add(($"{a}.attention.head_count", (uint)heads));
        kv.Add(($"{a}.attention.head_count_kv", (uint)kvHeads));
        kv.Add(($"{a}.attention.key_length", (uint)headDim));
        kv.Add(($"{a}.attention.value_length", (uint)headDim));
        kv.Add(($"{a}.rope.dimension_count", (uint)headDim));
        kv.Add(($"{a}.attention.layer_norm_rms_epsilon", (float)(cfg.RmsNormEps ?? 1e-6)));
        kv.Add(($"{a}.vocab_size", (uint)m.VocabSize));
        var rp = cfg.RopeFor("full_attention");
        kv.Add(($"{a}.rope.freq_base", (float)(rp.RopeTheta ?? cfg.RopeTheta ?? 10000.0)));
        switch (rp.Kind)
        {
            case "default" or "llama3": break;
            case "linear":
                kv.Add(($"{a}.rope.scaling.type", "linear"));
                kv.Add(($"{a}.rope.scaling.factor", (float)(rp.Factor ?? 1)));
                break;
            case "yarn":
                kv.Add(($"{a}.rope.scaling.type", "yarn"));
                kv.Add(($"{a}.rope.scaling.factor", (float)(rp.Factor ?? 1)));
                kv.Add(($"{a}.rope.scaling.original_context_length", (uint)(rp.OriginalMaxPositionEmbeddings ?? cfg.MaxPositionEmbeddings ?? 4096)));
                if (rp.BetaFast is double bf) kv.Add(($"{a}.rope.scaling.yarn_beta_fast", (float)bf));
                if (rp.BetaSlow is double bs) kv.Add(($"{a}.rope.scaling.yarn_beta_slow", (float)bs));
                if (rp.AttentionFactor is double af) kv.Add(($"{a}.rope.scaling.yarn_attn_factor", (float)af));
                break;
            default: throw new LlmArchInputException($"{cfg.SourcePath}: RoPE type '{rp.Kind}' has no GGUF form");
        }
        arch.ExportMetadata(cfg, kv);
        if (src is not null)
            foreach (var k in src.Metadata.Keys.Where(k => k.StartsWith("tokenizer.", StringComparison.Ordinal)))
                kv.Add((k, src.TypedValue(k)));
        else GgufTokenizerExport.Add(kv, model, cfg, m.VocabSize, arch);
        return kv;
    }

    // ---------------- writing ----------------

    /// <summary>Bytes of a tensor as ggml stores it (MXFP4 with its scales inside the 17-byte blocks).</summary>
    private static long TensorBytes(GgufEntry e)
    {
        var (bv, bb) = GgmlType.Block(GgmlType.FromDType(e.Type));
        return e.Dims.Aggregate(1L, (x, y) => x * y) / bv * bb;
    }

    private static void WriteFile(string outPath, List<(string Key, object Value)> kv, List<GgufEntry> list, Func<string, Tensor> raw)
    {
        string? parent = Path.GetDirectoryName(Path.GetFullPath(outPath));
        if (parent is not null) Directory.CreateDirectory(parent);
        string tmp = outPath + ".partial";
        try
        {
            using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
            {
                using (var bw = new BinaryWriter(fs, Encoding.UTF8, leaveOpen: true))
                {
                    bw.Write(GgufFile.Magic);
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
                        bw.Write(GgmlType.FromDType(e.Type));
                        bw.Write((ulong)offset);
                        offset += (TensorBytes(e) + Align - 1) / Align * Align;
                    }
                }
                Pad(fs);
                foreach (var e in list)
                {
                    long start = fs.Position;
                    WriteTensor(fs, e, raw);
                    if (fs.Position - start != TensorBytes(e))
                        throw new InvalidOperationException($"GGUF export wrote {fs.Position - start} bytes for '{e.Name}'; its header says {TensorBytes(e)}");
                    Pad(fs);
                }
            }
            File.Move(tmp, outPath, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { }
            throw;
        }
    }

    private static void Pad(Stream s)
    {
        long pad = (Align - s.Position % Align) % Align;
        for (long i = 0; i < pad; i++) s.WriteByte(0);
    }

    private static void WriteTensor(Stream fs, GgufEntry e, Func<string, Tensor> raw)
    {
        if (e.Data is not null)
        {
            fixed (float* p = e.Data) fs.Write(new ReadOnlySpan<byte>(p, e.Data.Length * 4));
            return;
        }
        if (e.Bytes is not null) { e.Bytes(raw, fs); return; }
        int cols = (int)e.Dims[^1];
        var buf = new byte[DTypes.StorageBytes(e.Type, cols)];
        if (e.Rows is not null)
        {
            foreach (var computed in e.Rows(raw))
            {
                if (computed.Length != cols) throw new InvalidOperationException($"GGUF export: a row of '{e.Name}' has {computed.Length} values, not {cols}");
                Encode(computed, e.Type, buf);
                fs.Write(buf);
            }
            return;
        }
        var row = new float[cols];
        foreach (var source in e.Sources)
        {
            var t = raw(source);
            if (e.Dims.Length == 1 && e.PermuteHeads > 0)
            {
                // a q/k bias: the same permutation over its elements
                var v = t.ToFloatArray();
                int D = v.Length / e.PermuteHeads;
                for (int k = 0; k < v.Length; k++)
                {
                    int h = k / D, within = k % D, i = within / 2, j = within % 2;
                    row[k] = v[h * D + j * (D / 2) + i];
                }
                Encode(row, e.Type, buf);
                fs.Write(buf);
                continue;
            }
            int rows = checked((int)(t.Shape.Count / Math.Max(1, cols)));
            int headDim = e.PermuteHeads > 0 ? rows / e.PermuteHeads : 0;
            for (int r = 0; r < rows; r++)
            {
                int src = r;
                if (e.PermuteHeads > 0)
                {
                    // HF rotate-half rows (h, j, i) -> llama.cpp pair rows (h, i, j): new h*D + 2i + j = old h*D + j*D/2 + i
                    int h = r / headDim, within = r % headDim, i = within / 2, j = within % 2;
                    src = h * headDim + j * (headDim / 2) + i;
                }
                Compute.Cpu.Convert.ToF32(t, (long)src * cols, row);
                if (e.Shift != 0) for (int c = 0; c < cols; c++) row[c] += e.Shift;
                Encode(row, e.Type, buf);
                fs.Write(buf);
            }
        }
    }

    internal static void Encode(float[] row, DType type, byte[] buf)
    {
        int cols = row.Length;
        fixed (byte* o = buf) fixed (float* x = row)
            switch (type)
            {
                case DType.F32: new ReadOnlySpan<float>(x, cols).CopyTo(new Span<float>(o, cols)); break;
                case DType.F16: for (int c = 0; c < cols; c++) ((ushort*)o)[c] = Fp16.FromF32(x[c]); break;
                case DType.BF16: for (int c = 0; c < cols; c++) ((ushort*)o)[c] = Compute.Cpu.Convert.F32ToBF16(x[c]); break;
                default: Q8.QuantizeRow(type, x, cols, o); break;
            }
    }

    public static void WriteString(BinaryWriter bw, string s)
    {
        var b = Encoding.UTF8.GetBytes(s);
        bw.Write((ulong)b.Length);
        bw.Write(b);
    }

    public static void WriteValue(BinaryWriter bw, object v)
    {
        switch (v)
        {
            case uint u: bw.Write(4u); bw.Write(u); break;
            case int i: bw.Write(5u); bw.Write(i); break;
            case float f: bw.Write(6u); bw.Write(f); break;
            case bool b: bw.Write(7u); bw.Write(b ? (byte)1 : (byte)0); break;
            case string s: bw.Write(8u); WriteString(bw, s); break;
            case long l: bw.Write(11u); bw.Write(l); break;
            case ulong ul: bw.Write(10u); bw.Write(ul); break;
            case double d: bw.Write(12u); bw.Write(d); break;
            case string[] a: bw.Write(9u); bw.Write(8u); bw.Write((ulong)a.Length); foreach (var s in a) WriteString(bw, s); break;
            case int[] a: bw.Write(9u); bw.Write(5u); bw.Write((ulong)a.Length); foreach (var x in a) bw.Write(x); break;
            case float[] a: bw.Write(9u); bw.Write(6u); bw.Write((ulong)a.Length); foreach (var x in a) bw.Write(x); break;
            case bool[] a: bw.Write(9u); bw.Write(7u); bw.Write((ulong)a.Length); foreach (var x in a) bw.Write(x ? (byte)1 : (byte)0); break;
            case long[] a: bw.Write(9u); bw.Write(11u); bw.Write((ulong)a.Length); foreach (var x in a) bw.Write(x); break;
            case ulong[] a: bw.Write(9u); bw.Write(10u); bw.Write((ulong)a.Length); foreach (var x in a) bw.Write(x); break;
            case double[] a: bw.Write(9u); bw.Write(12u); bw.Write((ulong)a.Length); foreach (var x in a) bw.Write(x); break;
            default: throw new ArgumentException($"GGUF value type {v.GetType()}");
        }
    }
}

/// <summary>
/// One tensor of a GGUF export. <see cref="Dims"/> is our order (outermost first). The data comes from
/// <see cref="Sources"/> (HF tensors concatenated, optionally row-permuted or shifted), <see cref="Data"/> (F32 values),
/// <see cref="Rows"/> (computed rows of <c>Dims[^1]</c> values, encoded as <see cref="Type"/>) or <see cref="Bytes"/>
/// (raw ggml bytes, for MXFP4 kept as it is).
/// </summary>
internal sealed record GgufEntry(string Name, long[] Dims, DType Type, string[] Sources,
    int PermuteHeads = 0, float Shift = 0f, float[]? Data = null)
{
    public Func<Func<string, Tensor>, IEnumerable<float[]>>? Rows { get; init; }
    public Action<Func<string, Tensor>, Stream>? Bytes { get; init; }
}

/// <summary>What a family's <see cref="GgufArch.ExportTensor"/> needs: the config, the requested type, the source tensors.</summary>
internal sealed record GgufExportContext(ModelConfig Config, DType OutType, Func<string, Tensor> Raw)
{
    /// <summary>The GGUF type of a weight of this shape (plain float types as asked; quantized per row width).</summary>
    public DType TypeFor(long[] shape, bool head = false) => GgufExport.TypeFor(OutType, shape, head);
}
