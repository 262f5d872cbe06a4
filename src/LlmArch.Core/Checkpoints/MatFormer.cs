using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Checkpoints;

/// <summary>What a MatFormer slice produced.</summary>
public sealed record SliceResult(string OutDir, int Layers, int[] Widths, int KvSharedLayers, long Parameters, long SourceParameters);

/// <summary>
/// MatFormer slicing of a Gemma 3n checkpoint (the E2B-inside-E4B idea): each layer's FFN was trained so that its
/// first k hidden units form a working smaller FFN, so a smaller model is cut out by keeping the first k rows of
/// gate_proj/up_proj and the first k columns of down_proj, and optionally by dropping whole layers. Dropped layers
/// take their slice of the per-layer embeddings with them (columns of embed_tokens_per_layer and rows of
/// per_layer_model_projection), and their entries of layer_types / intermediate_size / activation_sparsity_pattern.
/// KV sharing: dropping a layer inside the shared tail shrinks num_kv_shared_layers; a layer whose KV cache the tail
/// reads cannot be dropped (its consumers would silently read another layer's keys). Everything else is copied.
/// </summary>
public static class MatFormer
{
    /// <summary>Named width presets: fractions of each layer's width, or Google's E2B cut of an E4B model.</summary>
    public static IReadOnlyList<string> Presets { get; } = ["full", "half", "quarter", "e2b"];

    /// <summary>Resolves --ffn-widths (a comma list, one width for every layer or for every kept layer, or a preset)
    /// and --skip-layers against a config; returns the widths of the kept layers and the skipped layer indices.</summary>
    public static (int[] Widths, int[] Skip) Plan(ModelConfig c, string widthsArg, IReadOnlyList<int> skip)
    {
        int L = c.RequirePositive(c.NumHiddenLayers, "num_hidden_layers");
        var orig = Widths(c, L);
        var skipSet = new SortedSet<int>(skip);
        string arg = widthsArg.Trim();
        int[]? perLayer = null;
        switch (arg.ToLowerInvariant())
        {
            case "full": perLayer = orig.ToArray(); break;
            case "half": perLayer = orig.Select(x => Math.Max(1, x / 2)).ToArray(); break;
            case "quarter": perLayer = orig.Select(x => Math.Max(1, x / 4)).ToArray(); break;
            case "e2b":
                // E4B (35 layers, FFN 16384, 15 shared) holds E2B: FFN 8192 and layers 20-24 (the first five shared) dropped.
                if (L != 35 || (c.NumKvSharedLayers ?? 0) != 15)
                    throw new LlmArchInputException($"{c.SourcePath}: preset 'e2b' cuts an E4B-shaped model (35 layers, 15 KV-shared); this one has {L} layers, {c.NumKvSharedLayers ?? 0} shared");
                perLayer = orig.Select(x => Math.Min(x, 8192)).ToArray();
                foreach (var i in new[] { 20, 21, 22, 23, 24 }) skipSet.Add(i);
                break;
        }
        foreach (int s in skipSet)
            if (s < 0 || s >= L) throw new LlmArchInputException($"--skip-layers: layer {s} does not exist (the model has {L} layers)");
        if (skipSet.Count >= L) throw new LlmArchInputException($"--skip-layers: cannot skip all {L} layers");
        var kept = Enumerable.Range(0, L).Where(i => !skipSet.Contains(i)).ToArray();
        if (perLayer is null)
        {
            var parts = arg.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
            var list = new int[parts.Length];
            for (int i = 0; i < parts.Length; i++)
                if (!int.TryParse(parts[i], NumberStyles.Integer, CultureInfo.InvariantCulture, out list[i]))
                    throw new LlmArchInputException($"--ffn-widths: '{parts[i]}' is not an integer or a preset ({string.Join(", ", Presets)})");
            if (list.Length == 1) perLayer = Enumerable.Repeat(list[0], L).ToArray();
            else if (list.Length == L) perLayer = list;
            else if (list.Length == kept.Length) { perLayer = orig.ToArray(); for (int j = 0; j < kept.Length; j++) perLayer[kept[j]] = list[j]; }
            else throw new LlmArchInputException($"--ffn-widths has {list.Length} entries; expected 1, {L} (every layer) or {kept.Length} (every kept layer)");
        }
        var widths = new int[kept.Length];
        for (int j = 0; j < kept.Length; j++)
        {
            int i = kept[j], wdt = perLayer[i];
            if (wdt <= 0) throw new LlmArchInputException($"--ffn-widths: width {wdt} for layer {i} must be positive");
            if (wdt > orig[i]) throw new LlmArchInputException($"--ffn-widths: width {wdt} for layer {i} is larger than the model's {orig[i]} ({c.SourcePath} intermediate_size)");
            widths[j] = wdt;
        }
        return (widths, skipSet.ToArray());
    }

    private static int[] Widths(ModelConfig c, int L)
    {
        var w = c.IntermediateSize ?? throw c.Missing("intermediate_size");
        return w.Length == 1 ? Enumerable.Repeat(w[0], L).ToArray() : w.Length == L ? w : throw c.Invalid("intermediate_size", $"has {w.Length} entries for {L} layers");
    }

    /// <summary>Writes the sliced checkpoint (config.json, model.safetensors, tokenizer files) to outDir.</summary>
    public static SliceResult Slice(string modelDir, string widthsArg, IReadOnlyList<int> skip, string outDir)
    {
        if (!Directory.Exists(modelDir)) throw new LlmArchInputException($"{modelDir}: model directory not found");
        string cfgPath = Path.Combine(modelDir, "config.json");
        var cfg = ModelConfig.Load(cfgPath);
        if (cfg.ModelType is not ("gemma3n_text" or "gemma3n"))
            throw new LlmArchInputException($"{cfgPath}: model_type '{cfg.ModelType}' is not a MatFormer (Gemma 3n) model");
        int L = cfg.RequirePositive(cfg.NumHiddenLayers, "num_hidden_layers");
        int P = cfg.RequirePositive(cfg.HiddenSizePerLayerInput, "hidden_size_per_layer_input");
        var types = cfg.CheckedLayerTypes(L) ?? throw cfg.Missing("layer_types");
        var (widths, skipped) = Plan(cfg, widthsArg, skip);
        var skipSet = skipped.ToHashSet();
        var kept = Enumerable.Range(0, L).Where(i => !skipSet.Contains(i)).ToArray();

        // KV sharing: consumers are the last num_kv_shared_layers; each reads the last earlier non-shared layer of its type.
        int shared = cfg.NumKvSharedLayers ?? 0, firstShared = L - shared;
        if (shared > 0)
            foreach (int s in skipped.Where(s => s < firstShared))
                if (Enumerable.Range(firstShared, shared).Any(i => types[i] == types[s] && Array.LastIndexOf(types, types[s], firstShared - 1) == s))
                    throw new LlmArchInputException($"--skip-layers: layer {s} is the KV-cache source of the shared layers of type {types[s]}; it cannot be skipped");
        int newShared = shared - skipped.Count(s => s >= firstShared);

        using var src = new CheckpointWeights(modelDir);
        string textPrefix = src.Contains("model.language_model.embed_tokens.weight") ? "model.language_model" : "model";
        var layerName = new Regex("^" + Regex.Escape(textPrefix) + @"\.layers\.(\d+)\.(.*)$", RegexOptions.CultureInvariant);
        var newIndex = new Dictionary<int, int>();
        for (int j = 0; j < kept.Length; j++) newIndex[kept[j]] = j;

        var outputs = new List<OutTensor>();
        long sourceParams = 0, outParams = 0;
        foreach (var name in src.Names.OrderBy(n => n, StringComparer.Ordinal))
        {
            var info = src.Info(name);
            sourceParams += info.Shape.Aggregate(1L, (a, b) => a * b);
            var t = src.Raw(name);
            OutTensor? o;
            var m = layerName.Match(name);
            if (m.Success)
            {
                int i = int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
                if (!newIndex.TryGetValue(i, out int j)) continue;
                string rest = m.Groups[2].Value, outName = $"{textPrefix}.layers.{j}.{rest}";
                int k = widths[j];
                o = rest switch
                {
                    "mlp.gate_proj.weight" or "mlp.up_proj.weight" => OutTensor.Rows(outName, t, [.. Enumerable.Range(0, k)]),
                    "mlp.down_proj.weight" => OutTensor.Columns(outName, t, [(0, k)]),
                    _ => OutTensor.Whole(outName, t),
                };
            }
            else if (name == $"{textPrefix}.embed_tokens_per_layer.weight")
                o = OutTensor.Columns(name, t, kept.Select(i => (i * P, P)).ToArray());
            else if (name == $"{textPrefix}.per_layer_model_projection.weight")
                o = OutTensor.Rows(name, t, kept.SelectMany(i => Enumerable.Range(i * P, P)).ToArray());
            else o = OutTensor.Whole(name, t);
            outputs.Add(o);
            outParams += o.Shape.Aggregate(1L, (a, b) => a * b);
        }

        Directory.CreateDirectory(outDir);
        WriteSafetensors(Path.Combine(outDir, "model.safetensors"), outputs);
        WriteConfig(cfgPath, Path.Combine(outDir, "config.json"), kept, widths, newShared);
        foreach (var f in Directory.GetFiles(modelDir))
        {
            string n = Path.GetFileName(f);
            if (n.StartsWith("tokenizer", StringComparison.Ordinal) || n is "generation_config.json" or "special_tokens_map.json" or "chat_template.jinja" or "chat_template.json")
                File.Copy(f, Path.Combine(outDir, n), overwrite: true);
        }
        return new SliceResult(outDir, kept.Length, widths, newShared, outParams, sourceParams);
    }

    private static void WriteConfig(string srcPath, string dstPath, int[] kept, int[] widths, int newShared)
    {
        var root = JsonNode.Parse(File.ReadAllText(srcPath)) as JsonObject ?? throw new ConfigException($"{srcPath}: not a JSON object");
        var text = root["text_config"] as JsonObject ?? root;
        static JsonArray Pick(JsonNode? n, int[] kept) => new(kept.Select(i => n is JsonArray a && i < a.Count ? a[i]?.DeepClone() : null).ToArray());
        if (text["layer_types"] is JsonArray) text["layer_types"] = Pick(text["layer_types"], kept);
        if (text["activation_sparsity_pattern"] is JsonArray) text["activation_sparsity_pattern"] = Pick(text["activation_sparsity_pattern"], kept);
        text["intermediate_size"] = new JsonArray(widths.Select(w => (JsonNode?)JsonValue.Create(w)).ToArray());
        text["num_hidden_layers"] = kept.Length;
        text["num_kv_shared_layers"] = newShared;
        File.WriteAllText(dstPath, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>One output tensor: the source and which of its rows, or column ranges of every row, to keep.</summary>
    private sealed class OutTensor
    {
        public required string Name { get; init; }
        public required Tensor Source { get; init; }
        public required long[] Shape { get; init; }
        public int[]? KeepRows { get; init; }
        public (int Start, int Len)[]? KeepCols { get; init; }
        public long Bytes => Shape.Aggregate(1L, (a, b) => a * b) * DTypes.ElementSize(Source.DType);

        public static OutTensor Whole(string name, Tensor t) => new() { Name = name, Source = t, Shape = [.. t.Shape.ToArray().Select(x => (long)x)] };

        public static OutTensor Rows(string name, Tensor t, int[] rows)
        {
            Check(t);
            if (rows.Any(r => r >= t.Shape[0])) throw new CheckpointFormatException($"tensor '{t.Name}' {t.Shape} has fewer rows than the slice needs ({rows.Max() + 1})");
            return new() { Name = name, Source = t, Shape = [rows.Length, t.Shape[1]], KeepRows = rows };
        }

        public static OutTensor Columns(string name, Tensor t, (int Start, int Len)[] cols)
        {
            Check(t);
            if (cols.Any(c => c.Start + c.Len > t.Shape[1])) throw new CheckpointFormatException($"tensor '{t.Name}' {t.Shape} has fewer columns than the slice needs");
            return new() { Name = name, Source = t, Shape = [t.Shape[0], cols.Sum(c => (long)c.Len)], KeepCols = cols };
        }

        private static void Check(Tensor t)
        {
            if (t.Shape.Rank != 2) throw new CheckpointFormatException($"tensor '{t.Name}' is {t.Shape}; expected a matrix to slice");
            if (DTypes.IsQuantized(t.DType)) throw new CheckpointFormatException($"tensor '{t.Name}' is {t.DType}; slicing supports plain dtypes");
        }

        public unsafe void WriteTo(Stream s)
        {
            byte* p = (byte*)Source.Ptr;
            if (KeepRows is null && KeepCols is null) { Copy(s, p, Source.ByteCount); return; }
            int es = DTypes.ElementSize(Source.DType);
            long rowBytes = (long)Source.Shape[1] * es;
            if (KeepRows is not null) { foreach (int r in KeepRows) Copy(s, p + r * rowBytes, rowBytes); return; }
            for (long r = 0; r < Source.Shape[0]; r++)
                foreach (var (start, len) in KeepCols!) Copy(s, p + r * rowBytes + (long)start * es, (long)len * es);
        }

        private static unsafe void Copy(Stream s, byte* p, long n)
        {
            while (n > 0) { int c = (int)Math.Min(n, 1 << 24); s.Write(new ReadOnlySpan<byte>(p, c)); p += c; n -= c; }
        }
    }

    /// <summary>Streams tensors into a safetensors file without materializing them (the header comes from shapes).</summary>
    private static void WriteSafetensors(string path, List<OutTensor> tensors)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            w.WriteStartObject("__metadata__"); w.WriteString("format", "pt"); w.WriteString("sliced_by", "llmarch slice"); w.WriteEndObject();
            long off = 0;
            foreach (var t in tensors)
            {
                w.WriteStartObject(t.Name);
                w.WriteString("dtype", DTypes.SafetensorsName(t.Source.DType));
                w.WriteStartArray("shape"); foreach (var d in t.Shape) w.WriteNumberValue(d); w.WriteEndArray();
                w.WriteStartArray("data_offsets"); w.WriteNumberValue(off); w.WriteNumberValue(off + t.Bytes); w.WriteEndArray();
                w.WriteEndObject();
                off += t.Bytes;
            }
            w.WriteEndObject();
        }
        while (ms.Length % 8 != 0) ms.WriteByte((byte)' ');
        string tmp = path + ".tmp";
        using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        {
            fs.Write(BitConverter.GetBytes((ulong)ms.Length));
            ms.Position = 0; ms.CopyTo(fs);
            foreach (var t in tensors) t.WriteTo(fs);
        }
        File.Move(tmp, path, overwrite: true);
    }
}
