using System.Text.Json;
using System.Text.Json.Nodes;
using LlmArch.Checkpoints;

namespace LlmArch.Tokenization;

/// <summary>
/// A tokenizer built from a GGUF file's tokenizer metadata, through the same tokenizer.json machinery as a Hugging
/// Face directory: the metadata is turned into the tokenizer.json (and tokenizer_config.json) that describes the same
/// tokenizer, then loaded with <see cref="Tokenizer.Load"/>.
/// <list type="bullet">
/// <item>"gpt2" (byte-level BPE): tokens and merges as they are; the pre-tokenizer from <c>tokenizer.ggml.pre</c>
/// (<see cref="PreTokenizerRegexes"/>); control (type 3) and user-defined (type 4) tokens as added tokens.</item>
/// <item>"llama" (SentencePiece-style BPE with byte fallback): merges derived from the scores as Hugging Face's
/// SentencePiece converter does (every split of a token into two vocabulary tokens, ranked by the token's score),
/// spaces as U+2581, a leading one when <c>tokenizer.ggml.add_space_prefix</c> says so.</item>
/// </list>
/// BOS is added on encode when <c>tokenizer.ggml.add_bos_token</c> is true. The chat template comes from
/// <c>tokenizer.chat_template</c>.
/// </summary>
public static class GgufTokenizer
{
    /// <summary>llama.cpp pre-tokenizer names and the Hugging Face split regexes they stand for (in order).</summary>
    public static readonly IReadOnlyDictionary<string, string[]> PreTokenizerRegexes = new Dictionary<string, string[]>
    {
        ["llama-bpe"] = [@"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"],
        ["qwen2"] = [@"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"],
        ["gpt-4o"] = [@"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"],
        ["deepseek-v3"] = [@"\p{N}{1,3}", "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
            "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"],
    };

    /// <summary>Pre-tokenizer names whose BPE ignores merges for whole-word vocabulary hits (as HF's ignore_merges).</summary>
    private static readonly HashSet<string> IgnoreMerges = ["llama-bpe", "gpt-4o"];

    /// <summary>The tokenizer of a GGUF file (throws a clear error when it has none or an unsupported one).</summary>
    public static Tokenizer Load(string ggufPath)
    {
        using var f = new GgufFile(ggufPath);
        return Load(f);
    }

    public static Tokenizer Load(GgufFile f)
    {
        var (tokenizerJson, config) = ToJson(f);
        string dir = Path.Combine(Path.GetTempPath(), "llmarch-gguf-tok-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            File.WriteAllText(Path.Combine(dir, "tokenizer.json"), tokenizerJson.ToJsonString());
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), config.ToJsonString());
            try { return Tokenizer.Load(dir); }
            catch (Exception e) when (e is ConfigException or LlmArchInputException)
            { throw new CheckpointFormatException($"{f.Path}: tokenizer metadata does not form a valid tokenizer ({e.Message})"); }
        }
        finally { try { Directory.Delete(dir, recursive: true); } catch (IOException) { } }
    }

    /// <summary>The chat template of a GGUF file (tokenizer.chat_template), with its special tokens, or null.</summary>
    public static ChatTemplate? LoadChatTemplate(string ggufPath)
    {
        using var f = new GgufFile(ggufPath);
        if (f.String("tokenizer.chat_template") is not { } src) return null;
        var (_, config) = ToJson(f);
        var specials = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (k, v) in config) if (k.EndsWith("_token", StringComparison.Ordinal) && v is JsonValue jv && jv.TryGetValue(out string? s)) specials[k] = s;
        return ChatTemplate.FromString(src, specials);
    }

    /// <summary>tokenizer.json and tokenizer_config.json equivalent to the file's tokenizer metadata.</summary>
    public static (JsonObject Tokenizer, JsonObject Config) ToJson(GgufFile f)
    {
        string model = f.String("tokenizer.ggml.model") ?? throw new CheckpointFormatException($"{f.Path}: no tokenizer (metadata key 'tokenizer.ggml.model' is missing)");
        var tokens = f.Array<string>("tokenizer.ggml.tokens") ?? throw new CheckpointFormatException($"{f.Path}: metadata key 'tokenizer.ggml.tokens' is missing");
        var types = f.Array<long>("tokenizer.ggml.token_type");
        if (types is not null && types.Length != tokens.Length)
            throw new CheckpointFormatException($"{f.Path}: 'tokenizer.ggml.token_type' has {types.Length} entries for {tokens.Length} tokens");
        long Type(int i) => types?[i] ?? 1;

        var vocab = new JsonObject();
        var added = new JsonArray();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < tokens.Length; i++)
        {
            if (!seen.Add(tokens[i])) continue; // duplicates (unused placeholders) keep their first id
            vocab[tokens[i]] = i;
            if (Type(i) is 3 or 4)
                added.Add(new JsonObject
                {
                    ["id"] = i, ["content"] = tokens[i], ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                    ["normalized"] = false, ["special"] = Type(i) == 3,
                });
        }
        var tj = new JsonObject { ["version"] = "1.0", ["added_tokens"] = added };
        var bpe = new JsonObject { ["type"] = "BPE", ["vocab"] = vocab };
        bool addBos = f.Bool("tokenizer.ggml.add_bos_token") ?? model == "llama";
        string? Tok(string key)
        {
            if (f.Int(key) is not long id) return null;
            if (id < 0 || id >= tokens.Length) throw new CheckpointFormatException($"{f.Path}: metadata key '{key}' is {id}, outside the {tokens.Length} tokens");
            return tokens[id];
        }
        string? bos = Tok("tokenizer.ggml.bos_token_id"), eos = Tok("tokenizer.ggml.eos_token_id");
        string? unk = Tok("tokenizer.ggml.unknown_token_id"), pad = Tok("tokenizer.ggml.padding_token_id");

        switch (model)
        {
            case "gpt2":
            {
                var merges = f.Array<string>("tokenizer.ggml.merges") ?? throw new CheckpointFormatException($"{f.Path}: metadata key 'tokenizer.ggml.merges' is missing");
                bpe["merges"] = new JsonArray(merges.Select(m => (JsonNode?)JsonValue.Create(m)).ToArray());
                string pre = f.String("tokenizer.ggml.pre") ?? "default";
                bpe["ignore_merges"] = IgnoreMerges.Contains(pre);
                var byteLevel = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false };
                if (pre is "default" or "gpt2") tj["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = true };
                else if (PreTokenizerRegexes.TryGetValue(pre, out var regexes))
                {
                    var seq = new JsonArray();
                    foreach (var r in regexes)
                        seq.Add(new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = r }, ["behavior"] = "Isolated", ["invert"] = false });
                    seq.Add(byteLevel);
                    tj["pre_tokenizer"] = new JsonObject { ["type"] = "Sequence", ["pretokenizers"] = seq };
                }
                else throw new CheckpointFormatException($"{f.Path}: tokenizer.ggml.pre '{pre}' is not supported (supported: default, {string.Join(", ", PreTokenizerRegexes.Keys)})");
                if (pre == "qwen2") tj["normalizer"] = new JsonObject { ["type"] = "NFC" }; // Qwen's tokenizer.json normalizes to NFC
                tj["decoder"] = byteLevel.DeepClone();
                break;
            }
            case "llama":
            {
                var scores = f.Array<double>("tokenizer.ggml.scores") ?? throw new CheckpointFormatException($"{f.Path}: metadata key 'tokenizer.ggml.scores' is missing");
                if (scores.Length != tokens.Length) throw new CheckpointFormatException($"{f.Path}: 'tokenizer.ggml.scores' has {scores.Length} entries for {tokens.Length} tokens");
                bpe["merges"] = SentencePieceMerges(tokens, scores);
                bpe["byte_fallback"] = true;
                bpe["fuse_unk"] = true;
                if (unk is not null) bpe["unk_token"] = unk;
                bool prefix = f.Bool("tokenizer.ggml.add_space_prefix") ?? true;
                var replace = new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = "\u2581" };
                tj["normalizer"] = prefix
                    ? new JsonObject { ["type"] = "Sequence", ["normalizers"] = new JsonArray(new JsonObject { ["type"] = "Prepend", ["prepend"] = "\u2581" }, replace) }
                    : replace;
                var decoders = new JsonArray(
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = "\u2581" }, ["content"] = " " },
                    new JsonObject { ["type"] = "ByteFallback" }, new JsonObject { ["type"] = "Fuse" });
                if (prefix) decoders.Add(new JsonObject { ["type"] = "Strip", ["content"] = " ", ["start"] = 1, ["stop"] = 0 });
                tj["decoder"] = new JsonObject { ["type"] = "Sequence", ["decoders"] = decoders };
                break;
            }
            default:
                throw new CheckpointFormatException($"{f.Path}: tokenizer.ggml.model '{model}' is not supported (supported: gpt2, llama)");
        }
        tj["model"] = bpe;
        if (addBos && bos is not null)
            tj["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = bos, ["type_id"] = 0 } },
                                           new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } }),
                ["pair"] = new JsonArray(new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = bos, ["type_id"] = 0 } },
                                         new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } },
                                         new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "B", ["type_id"] = 1 } }),
                ["special_tokens"] = new JsonObject { [bos] = new JsonObject { ["id"] = bos, ["ids"] = new JsonArray((int)f.Int("tokenizer.ggml.bos_token_id")!.Value), ["tokens"] = new JsonArray(bos) } },
            };
        var config = new JsonObject { ["add_bos_token"] = addBos };
        if (bos is not null) config["bos_token"] = bos;
        if (eos is not null) config["eos_token"] = eos;
        if (unk is not null) config["unk_token"] = unk;
        if (pad is not null) config["pad_token"] = pad;
        return (tj, config);
    }

    /// <summary>
    /// BPE merges equivalent to a SentencePiece vocabulary: every split of a normal token into two vocabulary tokens
    /// is a merge, ranked by the merged token's score (highest first; ties by the ids of the two halves).
    /// </summary>
    internal static JsonArray SentencePieceMerges(string[] tokens, double[] scores)
    {
        var ids = new Dictionary<string, int>(tokens.Length, StringComparer.Ordinal);
        for (int i = 0; i < tokens.Length; i++) ids.TryAdd(tokens[i], i);
        var merges = new List<(double Score, int Token, int L, int R)>();
        for (int t = 0; t < tokens.Length; t++)
        {
            // Every piece, as Hugging Face's SentencePiece converter does (llama.cpp's bigram search has no type filter either).
            string s = tokens[t];
            for (int k = 1; k < s.Length; k++)
            {
                if (char.IsLowSurrogate(s[k])) continue;
                if (ids.TryGetValue(s[..k], out int l) && ids.TryGetValue(s[k..], out int r)) merges.Add((scores[t], t, l, r));
            }
        }
        merges.Sort((a, b) => a.Score != b.Score ? b.Score.CompareTo(a.Score) : a.Token != b.Token ? a.Token.CompareTo(b.Token)
            : a.L != b.L ? a.L.CompareTo(b.L) : a.R.CompareTo(b.R));
        var arr = new JsonArray();
        foreach (var m in merges) arr.Add(new JsonArray(tokens[m.L], tokens[m.R]));
        return arr;
    }
}
