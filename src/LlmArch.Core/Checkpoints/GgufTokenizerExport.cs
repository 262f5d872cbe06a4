using System.Text.Json;
using System.Text.Json.Nodes;
using LlmArch.Tokenization;

namespace LlmArch.Checkpoints;

/// <summary>
/// Tokenizer metadata for GGUF export, from a model directory's tokenizer.json / tokenizer_config.json:
/// byte-level BPE as llama.cpp's "gpt2" model (tokens, merges, the pre-tokenizer named by its regex), BPE with byte
/// fallback as llama.cpp's "llama" (SentencePiece) model with scores that rank each token by the first merge that makes
/// it (so the merges derived back from the scores are the same), token types (normal, control, user-defined, byte,
/// unused), special token ids, add_bos, and the chat template. Without a tokenizer.json: a synthetic byte-level
/// vocabulary (the 256 byte symbols, then placeholders) so llama.cpp can load and benchmark the file.
/// </summary>
public static class GgufTokenizerExport
{
    private const int Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, ByteToken = 6;

    public static void Add(List<(string Key, object Value)> kv, string dir, ModelConfig cfg, int vocab, GgufArch arch)
    {
        string? path = Directory.Exists(dir)
            ? new[] { "tokenizer.json", "tokenizer.json.gz" }.Select(n => Path.Combine(dir, n)).FirstOrDefault(File.Exists)
            : null;
        var tokens = new string[vocab];
        var types = new int[vocab];
        JsonDocument? config = null;
        if (Directory.Exists(dir) && File.Exists(Path.Combine(dir, "tokenizer_config.json")))
            config = Tokenizer.ParseJsonFile(Path.Combine(dir, "tokenizer_config.json"));
        using (config)
        {
            if (path is null)
            {
                var bytes = ByteSymbols();
                for (int i = 0; i < vocab; i++) { tokens[i] = i < 256 ? bytes[i] : $"<t{i}>"; types[i] = Normal; }
                kv.Add(("tokenizer.ggml.model", "gpt2"));
                kv.Add(("tokenizer.ggml.pre", "default"));
                kv.Add(("tokenizer.ggml.tokens", tokens));
                kv.Add(("tokenizer.ggml.token_type", types));
                kv.Add(("tokenizer.ggml.merges", Array.Empty<string>()));
                AddIds(kv, cfg, null, vocab, null);
                kv.Add(("tokenizer.ggml.add_bos_token", false));
                return;
            }
            using var doc = Tokenizer.ParseJsonFile(path);
            var root = doc.RootElement;
            string file = Path.GetFileName(path);
            if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object) throw new ConfigException($"{file}: key 'model' is missing");
            if (model.TryGetProperty("type", out var mt) && mt.GetString() is { } t && t != "BPE") throw new ConfigException($"{file}: key 'model.type' is '{t}'; GGUF export handles BPE tokenizers");
            if (!model.TryGetProperty("vocab", out var v) || v.ValueKind != JsonValueKind.Object) throw new ConfigException($"{file}: key 'model.vocab' is missing");
            var ids = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (var p in v.EnumerateObject())
            {
                if (!p.Value.TryGetInt32(out int id)) throw new ConfigException($"{file}: vocab entry '{p.Name}' has no integer id");
                ids[p.Name] = id;
                if ((uint)id < (uint)vocab) { tokens[id] = p.Name; types[id] = Normal; }
            }
            var merges = new List<string>();
            if (model.TryGetProperty("merges", out var m) && m.ValueKind == JsonValueKind.Array)
                foreach (var e in m.EnumerateArray())
                    merges.Add(e.ValueKind == JsonValueKind.Array ? $"{e[0].GetString()} {e[1].GetString()}" : e.GetString() ?? "");
            if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
                foreach (var a in added.EnumerateArray())
                {
                    int id = a.GetProperty("id").GetInt32();
                    if ((uint)id >= (uint)vocab) continue;
                    tokens[id] = a.GetProperty("content").GetString() ?? "";
                    types[id] = a.TryGetProperty("special", out var sp) && sp.ValueKind == JsonValueKind.True ? Control : UserDefined;
                    ids[tokens[id]] = id;
                }
            for (int i = 0; i < vocab; i++)
                if (tokens[i] is null) { tokens[i] = $"[PAD{i}]"; types[i] = Unused; }

            bool byteFallback = model.TryGetProperty("byte_fallback", out var bf) && bf.ValueKind == JsonValueKind.True;
            string? unk = model.TryGetProperty("unk_token", out var u) && u.ValueKind == JsonValueKind.String ? u.GetString() : null;
            if (byteFallback)
            {
                // SentencePiece-style: scores that rank each merged piece by the first merge producing it.
                var scores = new float[vocab];
                for (int i = 0; i < vocab; i++) scores[i] = -1e9f;
                for (int r = merges.Count - 1; r >= 0; r--)
                {
                    int sp = merges[r].IndexOf(' ', 1);
                    if (sp > 0 && ids.TryGetValue(merges[r][..sp] + merges[r][(sp + 1)..], out int id) && (uint)id < (uint)vocab) scores[id] = -r;
                }
                for (int i = 0; i < vocab; i++)
                {
                    if (tokens[i].Length == 6 && tokens[i].StartsWith("<0x", StringComparison.Ordinal) && tokens[i].EndsWith('>')) types[i] = ByteToken;
                    if (unk is not null && tokens[i] == unk) types[i] = Unknown;
                }
                bool prefix = Prepends(root);
                kv.Add(("tokenizer.ggml.model", "llama"));
                kv.Add(("tokenizer.ggml.pre", "default"));
                kv.Add(("tokenizer.ggml.tokens", tokens));
                kv.Add(("tokenizer.ggml.scores", scores));
                kv.Add(("tokenizer.ggml.token_type", types));
                kv.Add(("tokenizer.ggml.add_space_prefix", prefix));
            }
            else
            {
                kv.Add(("tokenizer.ggml.model", "gpt2"));
                kv.Add(("tokenizer.ggml.pre", PreName(root, file)));
                kv.Add(("tokenizer.ggml.tokens", tokens));
                kv.Add(("tokenizer.ggml.token_type", types));
                kv.Add(("tokenizer.ggml.merges", merges.ToArray()));
            }
            AddIds(kv, cfg, config, vocab, ids);
            if (unk is not null && ids.TryGetValue(unk, out int unkId) && unkId < vocab) kv.Add(("tokenizer.ggml.unknown_token_id", (uint)unkId));
            kv.Add(("tokenizer.ggml.add_bos_token", AddBos(root, config)));
            kv.Add(("tokenizer.ggml.add_eos_token", false));
        }
        if (ChatTemplateSource(dir) is { } tpl) kv.Add(("tokenizer.chat_template", tpl));
    }

    private static void AddIds(List<(string, object)> kv, ModelConfig cfg, JsonDocument? config, int vocab, Dictionary<string, int>? ids)
    {
        int? Lookup(string key)
        {
            if (config is null || ids is null || !config.RootElement.TryGetProperty(key, out var e)) return null;
            return Tokenizer.TokenContent(e) is { } s && ids.TryGetValue(s, out int id) ? id : null;
        }
        int? bos = Lookup("bos_token") ?? (cfg.BosTokenId is [var b, ..] ? b : null);
        int? eos = Lookup("eos_token") ?? (cfg.EosTokenId is [var e2, ..] ? e2 : null);
        int? pad = Lookup("pad_token") ?? (cfg.PadTokenId is [var p, ..] ? p : null);
        if (bos is int bi && bi < vocab && bi >= 0) kv.Add(("tokenizer.ggml.bos_token_id", (uint)bi));
        if (eos is int ei && ei < vocab && ei >= 0) kv.Add(("tokenizer.ggml.eos_token_id", (uint)ei));
        if (pad is int pi && pi < vocab && pi >= 0) kv.Add(("tokenizer.ggml.padding_token_id", (uint)pi));
    }

    /// <summary>tokenizer_config.json's add_bos_token, else whether the post-processor's template starts with a special token.</summary>
    private static bool AddBos(JsonElement root, JsonDocument? config)
    {
        if (config is not null && config.RootElement.TryGetProperty("add_bos_token", out var a) && a.ValueKind is JsonValueKind.True or JsonValueKind.False)
            return a.GetBoolean();
        return root.TryGetProperty("post_processor", out var pp) && pp.ValueKind == JsonValueKind.Object
            && pp.TryGetProperty("type", out var t) && t.GetString() == "TemplateProcessing"
            && pp.TryGetProperty("single", out var s) && s.ValueKind == JsonValueKind.Array && s.GetArrayLength() > 0
            && s[0].TryGetProperty("SpecialToken", out _);
    }

    /// <summary>Whether the normalizer prepends U+2581 (SentencePiece's add_dummy_prefix).</summary>
    private static bool Prepends(JsonElement root) =>
        root.TryGetProperty("normalizer", out var n) && n.ValueKind == JsonValueKind.Object && n.GetRawText().Contains("\"Prepend\"", StringComparison.Ordinal);

    /// <summary>llama.cpp's pre-tokenizer name for the split regexes of a byte-level tokenizer.json.</summary>
    private static string PreName(JsonElement root, string file)
    {
        if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind != JsonValueKind.Object) return "default";
        var regexes = new List<string>();
        void Walk(JsonElement e)
        {
            if (e.ValueKind != JsonValueKind.Object) return;
            string? type = e.TryGetProperty("type", out var t) ? t.GetString() : null;
            if (type == "Sequence" && e.TryGetProperty("pretokenizers", out var items)) foreach (var i in items.EnumerateArray()) Walk(i);
            else if (type == "Split" && e.TryGetProperty("pattern", out var p) && p.TryGetProperty("Regex", out var r)) regexes.Add(r.GetString() ?? "");
        }
        Walk(pre);
        if (regexes.Count == 0) return "default";
        foreach (var (name, known) in GgufTokenizer.PreTokenizerRegexes)
            if (known.SequenceEqual(regexes)) return name;
        throw new LlmArchInputException($"{file}: the pre-tokenizer regex has no llama.cpp name (known: {string.Join(", ", GgufTokenizer.PreTokenizerRegexes.Keys)})");
    }

    private static string? ChatTemplateSource(string dir)
    {
        if (!Directory.Exists(dir)) return null;
        try { return ChatTemplate.Load(dir).Source; }
        catch (LlmArchInputException) { return null; }
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
}
