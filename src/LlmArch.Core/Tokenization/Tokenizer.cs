using System.IO.Compression;
using System.Text.Json;

namespace LlmArch.Tokenization;

/// <summary>
/// A Hugging Face <c>tokenizer.json</c> tokenizer (BPE: byte-level with regex pre-tokenizers, or SentencePiece-style
/// with byte fallback), plus the special tokens named in <c>tokenizer_config.json</c>.
/// Encoding follows HF tokenizers: added tokens are split out first (non-normalized ones on the raw text, normalized
/// ones after normalization), then each remaining piece is normalized, pre-tokenized and BPE-encoded.
/// </summary>
public sealed class Tokenizer
{
    private readonly BpeModel _model;
    private readonly Normalizer? _normalizer;
    private readonly PreTokenizer? _preTokenizer;
    private readonly PostProcessor? _postProcessor;
    private readonly Decoder? _decoder;
    private readonly AddedTokenMatcher _rawMatcher = new();
    private readonly AddedTokenMatcher _normalizedMatcher = new();
    private readonly string?[] _idToToken;
    private readonly bool[] _isSpecial;
    private readonly Dictionary<string, int> _addedByContent = new(StringComparer.Ordinal);

    /// <summary>The directory the tokenizer was loaded from.</summary>
    public string Directory { get; }
    /// <summary>Every added token of tokenizer.json (special or not).</summary>
    public IReadOnlyList<AddedToken> AddedTokens { get; }
    /// <summary>tokenizer_config.json's string-valued special tokens (bos_token, eos_token, pad_token, ...).</summary>
    public IReadOnlyDictionary<string, string> SpecialTokens { get; }
    /// <summary>tokenizer_config.json's additional_special_tokens.</summary>
    public IReadOnlyList<string> AdditionalSpecialTokens { get; }

    public string? BosToken => SpecialTokens.GetValueOrDefault("bos_token");
    public string? EosToken => SpecialTokens.GetValueOrDefault("eos_token");
    public string? PadToken => SpecialTokens.GetValueOrDefault("pad_token");
    public string? UnkToken => SpecialTokens.GetValueOrDefault("unk_token");
    public int? BosTokenId => BosToken is null ? null : TokenToId(BosToken);
    public int? EosTokenId => EosToken is null ? null : TokenToId(EosToken);
    public int? PadTokenId => PadToken is null ? null : TokenToId(PadToken);

    /// <summary>Number of ids (model vocabulary and added tokens): one more than the largest id.</summary>
    public int VocabSize => _idToToken.Length;

    private Tokenizer(string directory, BpeModel model, Normalizer? normalizer, PreTokenizer? pre, PostProcessor? post,
        Decoder? decoder, List<AddedToken> added, Dictionary<string, string> specials, List<string> additional)
    {
        Directory = directory;
        _model = model;
        _normalizer = normalizer;
        _preTokenizer = pre;
        _postProcessor = post;
        _decoder = decoder;
        AddedTokens = added;
        SpecialTokens = specials;
        AdditionalSpecialTokens = additional;
        model.ByteLevel = pre?.IsByteLevel ?? false;
        model.Prepare();

        int maxId = -1;
        foreach (var id in model.Vocab.Values) maxId = Math.Max(maxId, id);
        foreach (var t in added) maxId = Math.Max(maxId, t.Id);
        _idToToken = new string?[maxId + 1];
        _isSpecial = new bool[maxId + 1];
        foreach (var (tok, id) in model.Vocab) _idToToken[id] = tok;
        foreach (var t in added)
        {
            _idToToken[t.Id] = t.Content;
            _isSpecial[t.Id] = t.Special;
            _addedByContent[t.Content] = t.Id;
            if (t.Normalized) _normalizedMatcher.Add(normalizer?.Normalize(t.Content) ?? t.Content, t);
            else _rawMatcher.Add(t.Content, t);
        }
    }

    /// <summary>
    /// Loads <c>tokenizer.json</c> (or <c>tokenizer.json.gz</c>) and, when present, <c>tokenizer_config.json</c> from a
    /// directory, or a tokenizer.json file given directly.
    /// </summary>
    public static Tokenizer Load(string dirOrFile)
    {
        string file = ResolveTokenizerFile(dirOrFile);
        string dir = Path.GetDirectoryName(Path.GetFullPath(file))!;
        string name = Path.GetFileName(file);
        using var doc = ParseJsonFile(file);
        var root = new JsonConfig(doc.RootElement, name, "");
        if (root.Element.ValueKind != JsonValueKind.Object) throw root.Error("must be a JSON object");

        try
        {
            var model = ParseModel(root.Child("model"));
            var added = root.Has("added_tokens") ? root.Items("added_tokens").Select(ParseAddedToken).ToList() : new List<AddedToken>();
            int limit = MaxId(model.Vocab.Count + added.Count);
            for (int i = 0; i < added.Count; i++)
                if (added[i].Id < 0 || added[i].Id > limit)
                    throw new ConfigException($"{name}: added_tokens[{i}].id {added[i].Id} is out of range (0 to {limit}: ids size a table)");
            var normalizer = Normalizer.FromJson(root.OptionalChild("normalizer"));
            var pre = PreTokenizer.FromJson(root.OptionalChild("pre_tokenizer"));
            var post = PostProcessor.FromJson(root.OptionalChild("post_processor"));
            var decoder = Decoder.FromJson(root.OptionalChild("decoder"));
            var (specials, additional) = LoadSpecialTokens(dir);
            return new Tokenizer(dir, model, normalizer, pre, post, decoder, added, specials, additional);
        }
        catch (Exception e) when (e is InvalidOperationException or KeyNotFoundException or IndexOutOfRangeException or ArgumentException or FormatException)
        {
            // Last line of defence: a value of a type no check above expected (each check names its key; this names the file).
            throw new ConfigException($"{name}: unexpected structure ({e.Message})");
        }
    }

    internal static string ResolveTokenizerFile(string dirOrFile)
    {
        dirOrFile = Checkpoints.ModelLocator.Resolve(dirOrFile, "tokenizer");
        if (File.Exists(dirOrFile)) return dirOrFile;
        if (System.IO.Directory.Exists(dirOrFile))
        {
            foreach (var n in new[] { "tokenizer.json", "tokenizer.json.gz" })
            {
                string p = Path.Combine(dirOrFile, n);
                if (File.Exists(p)) return p;
            }
            throw new LlmArchInputException($"{dirOrFile}: no tokenizer.json or tokenizer.json.gz in this directory");
        }
        throw new LlmArchInputException($"{dirOrFile}: no such tokenizer file or directory");
    }

    /// <summary>Largest tokenizer file read, after decompression (real ones are up to ~35 MB).</summary>
    public const long MaxFileBytes = 512L << 20;

    /// <summary>Reads (and gunzips) a JSON file from a model repository with <see cref="Checkpoints.StrictJson"/>: invalid UTF-8,
    /// lone surrogates, duplicate keys and excessive nesting are errors naming the file and key.</summary>
    internal static JsonDocument ParseJsonFile(string file)
    {
        string name = Path.GetFileName(file);
        byte[] bytes;
        try
        {
            using var fs = File.OpenRead(file);
            Stream s = file.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? new GZipStream(fs, CompressionMode.Decompress) : fs;
            using (s)
            {
                // Read in chunks up to the limit: a gzip bomb or an endless special file stops at the limit, not at OOM.
                using var ms = new MemoryStream();
                var buf = new byte[1 << 16];
                int n;
                while ((n = s.Read(buf, 0, buf.Length)) > 0)
                {
                    if (ms.Length + n > MaxFileBytes) throw new ConfigException($"{name}: larger than the {MaxFileBytes >> 20} MiB limit");
                    ms.Write(buf, 0, n);
                }
                bytes = ms.ToArray();
            }
        }
        catch (InvalidDataException e) { throw new ConfigException($"{name}: not a valid gzip file ({e.Message})"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new ConfigException($"{name}: cannot read ({e.Message})"); }
        return Checkpoints.StrictJson.Parse(bytes, name, maxDepth: 256);
    }

    private static BpeModel ParseModel(JsonConfig m)
    {
        string type = m.Has("type") ? m.String("type") : m.Has("merges") ? "BPE" : "unknown";
        if (type != "BPE") throw m.Error("type", $"'{type}' is not supported (only BPE models are)");
        if (m.Has("dropout") && m.Child("dropout").Element.ValueKind == JsonValueKind.Number && m.Child("dropout").Element.GetDouble() > 0)
            throw m.Error("dropout", "> 0 is not supported");

        var vocabEl = m.Child("vocab");
        if (vocabEl.Element.ValueKind != JsonValueKind.Object) throw m.Error("vocab", "must be an object of token -> id");
        int entries = vocabEl.Element.GetPropertyCount();
        var vocab = new Dictionary<string, int>(entries, StringComparer.Ordinal);
        foreach (var p in vocabEl.Element.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id) || id < 0)
                throw m.Error("vocab", $"entry '{p.Name}' must have a non-negative integer id, got {p.Value}");
            if (id > MaxId(entries)) throw m.Error("vocab", $"entry '{p.Name}' has id {id}, far beyond the {entries} entries (ids size a table; at most {MaxId(entries)})");
            vocab[p.Name] = id;
        }

        var mergesCfg = m.Child("merges");
        if (mergesCfg.Element.ValueKind != JsonValueKind.Array) throw m.Error("merges", "must be an array");
        var merges = new PairMap(mergesCfg.Element.GetArrayLength());
        string? prefix = m.OptionalString("continuing_subword_prefix");
        int rank = 0;
        foreach (var e in mergesCfg.Element.EnumerateArray())
        {
            string a, b;
            if (e.ValueKind == JsonValueKind.String)
            {
                string s = e.GetString()!;
                int sp = s.IndexOf(' ', 1);
                if (sp <= 0) throw mergesCfg.Item(e, rank).Error($"merge '{s}' must be two tokens separated by a space");
                a = s[..sp];
                b = s[(sp + 1)..];
            }
            else if (e.ValueKind == JsonValueKind.Array && e.GetArrayLength() == 2
                     && e[0].ValueKind == JsonValueKind.String && e[1].ValueKind == JsonValueKind.String)
            {
                a = e[0].GetString()!;
                b = e[1].GetString()!;
            }
            else throw mergesCfg.Item(e, rank).Error("must be \"a b\" or [\"a\", \"b\"]");

            string merged = a + (!string.IsNullOrEmpty(prefix) && b.StartsWith(prefix, StringComparison.Ordinal) ? b[prefix.Length..] : b);
            if (!vocab.TryGetValue(a, out int ia) || !vocab.TryGetValue(b, out int ib))
                throw mergesCfg.Item(e, rank).Error($"merge '{a} {b}' uses a token that is not in model.vocab");
            if (!vocab.TryGetValue(merged, out int im))
                throw mergesCfg.Item(e, rank).Error($"merge '{a} {b}' produces '{merged}', which is not in model.vocab");
            merges.Set(BpeModel.Pack(ia, ib), ((long)rank << 32) | (uint)im);
            rank++;
        }

        int? unkId = null;
        if (m.OptionalString("unk_token") is { } unk)
            unkId = vocab.TryGetValue(unk, out int u) ? u : throw m.Error("unk_token", $"'{unk}' is not in model.vocab");
        var model = new BpeModel
        {
            Vocab = vocab,
            Merges = merges,
            UnkId = unkId,
            FuseUnk = m.Bool("fuse_unk", false),
            ByteFallback = m.Bool("byte_fallback", false),
            IgnoreMerges = m.Bool("ignore_merges", false),
            ContinuingSubwordPrefix = m.OptionalString("continuing_subword_prefix"),
            EndOfWordSuffix = m.OptionalString("end_of_word_suffix"),
        };
        return model;
    }

    /// <summary>Largest id accepted for a vocabulary of <paramref name="entries"/> tokens: ids may leave gaps, but an id sizes
    /// the id-to-token table, so it stays within a million of the entry count.</summary>
    internal static int MaxId(int entries) => entries + (1 << 20);

    private static AddedToken ParseAddedToken(JsonConfig t) => new(
        t.Int("id"), t.String("content"), t.Bool("special", false), t.Bool("normalized", !t.Bool("special", false)),
        t.Bool("lstrip", false), t.Bool("rstrip", false), t.Bool("single_word", false));

    private static (Dictionary<string, string>, List<string>) LoadSpecialTokens(string dir)
    {
        var specials = new Dictionary<string, string>(StringComparer.Ordinal);
        var additional = new List<string>();
        string path = Path.Combine(dir, "tokenizer_config.json");
        if (!File.Exists(path)) return (specials, additional);
        using var doc = ParseJsonFile(path);
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new ConfigException("tokenizer_config.json: must be a JSON object");
        foreach (var p in doc.RootElement.EnumerateObject())
        {
            if (p.Name == "additional_special_tokens" && p.Value.ValueKind == JsonValueKind.Array)
            {
                foreach (var e in p.Value.EnumerateArray()) if (TokenContent(e) is { } s) additional.Add(s);
            }
            else if (p.Name.EndsWith("_token", StringComparison.Ordinal) && TokenContent(p.Value) is { } s)
                specials[p.Name] = s;
        }
        return (specials, additional);
    }

    /// <summary>A token given as "text" or as {"content": "text", ...} (an AddedToken dump).</summary>
    internal static string? TokenContent(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => e.GetString(),
        JsonValueKind.Object when e.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
        _ => null,
    };

    /// <summary>Token text for an id (model vocabulary or added token).</summary>
    public string IdToToken(int id)
    {
        if ((uint)id >= (uint)_idToToken.Length || _idToToken[id] is not { } t)
            throw new LlmArchInputException($"token id {id} is out of range (vocabulary has {VocabSize} ids)");
        return t;
    }

    /// <summary>Id of a token text (added tokens first, then the model vocabulary), or null.</summary>
    public int? TokenToId(string token) =>
        _addedByContent.TryGetValue(token, out int a) ? a : _model.Vocab.TryGetValue(token, out int v) ? v : null;

    /// <summary>True for added tokens marked special (skipped by <c>Decode(..., skipSpecialTokens: true)</c>).</summary>
    public bool IsSpecial(int id) => (uint)id < (uint)_isSpecial.Length && _isSpecial[id];

    /// <summary>Encodes text; <paramref name="addSpecialTokens"/> applies the post-processor (BOS/EOS templates).</summary>
    public int[] Encode(string text, bool addSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 4);
        var rawSegments = new List<AddedTokenMatcher.Segment>();
        var normSegments = new List<AddedTokenMatcher.Segment>();
        var pieces = new List<PreTokenizer.Piece>();
        _rawMatcher.Split(text, rawSegments);
        foreach (var seg in rawSegments)
        {
            if (seg.Token is not null) { ids.Add(seg.Token.Id); continue; }
            string part = text[seg.Start..seg.End];
            string normalized = _normalizer?.Normalize(part) ?? part;
            _normalizedMatcher.Split(normalized, normSegments);
            foreach (var ns in normSegments)
            {
                if (ns.Token is not null) { ids.Add(ns.Token.Id); continue; }
                pieces.Clear();
                pieces.Add(new PreTokenizer.Piece(normalized[ns.Start..ns.End], seg.Start == 0 && ns.Start == 0));
                _preTokenizer?.Apply(pieces);
                foreach (var p in pieces) _model.Encode(p.Text, ids);
            }
        }
        if (addSpecialTokens && _postProcessor is not null) ids = _postProcessor.Process(ids);
        return ids.ToArray();
    }

    /// <summary>Decodes ids to text with the tokenizer.json decoder; ids outside the vocabulary are an error.</summary>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens = false)
    {
        var tokens = new List<string>(ids.Length);
        foreach (int id in ids)
        {
            string t = IdToToken(id);
            if (skipSpecialTokens && _isSpecial[id]) continue;
            tokens.Add(t);
        }
        if (_decoder is null) return string.Join(" ", tokens);
        return string.Concat(_decoder.DecodeChain(tokens));
    }

    /// <summary>A detokenizer that turns ids into text incrementally as they are generated.</summary>
    public StreamingDetokenizer CreateStreamingDetokenizer(bool skipSpecialTokens = false) => new(this, skipSpecialTokens);
}
