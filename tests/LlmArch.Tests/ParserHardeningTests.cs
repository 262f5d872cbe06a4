using System.Diagnostics;
using System.Text;
using LlmArch.Checkpoints;

namespace LlmArch.Tests;

/// <summary>
/// Type-safe parsing of every file a model repository supplies: wrong JSON types, duplicate keys, invalid UTF-8, lone
/// surrogates, numbers that would size something huge, overlapping tensors, out-of-range semantics. Each is one
/// <see cref="LlmArchInputException"/> naming the file and key (and, through the CLI, one line and exit 2).
/// </summary>
public class ParserHardeningTests
{
    private static readonly string Tmp = Directory.CreateTempSubdirectory("llmarch-harden").FullName;

    private static string SafetensorsWithHeader(byte[] header, int dataBytes = 64)
    {
        string path = Path.Combine(Tmp, Guid.NewGuid().ToString("N") + ".safetensors");
        using var fs = File.Create(path);
        fs.Write(BitConverter.GetBytes((ulong)header.Length));
        fs.Write(header);
        fs.Write(new byte[dataBytes]);
        return path;
    }

    private static string SafetensorsWithHeader(string header, int dataBytes = 64) => SafetensorsWithHeader(Encoding.UTF8.GetBytes(header), dataBytes);

    private static CheckpointFormatException HeaderError(string header, int dataBytes = 64) =>
        Assert.Throws<CheckpointFormatException>(() => new SafeTensorsFile(SafetensorsWithHeader(header, dataBytes)).Dispose());

    [Theory]
    [InlineData("""{"t": {"dtype": 7, "shape": [2], "data_offsets": [0, 8]}}""", "dtype must be a string")]
    [InlineData("""{"t": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}}""", "shape must be an array")]
    [InlineData("""{"t": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}}""", "invalid shape")]
    [InlineData("""{"t": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}}""", "invalid shape")]
    [InlineData("""{"t": {"dtype": "F32", "shape": [2], "data_offsets": "0-8"}}""", "invalid data_offsets")]
    [InlineData("""{"t": {"dtype": "F32", "shape": [2], "data_offsets": ["0", 8]}}""", "invalid data_offsets")]
    [InlineData("""{"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 16]}}""", "invalid data_offsets")]
    [InlineData("""{"t": [1, 2]}""", "must be an object")]
    [InlineData("""{"__metadata__": [1], "t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}""", "__metadata__ must be an object")]
    [InlineData("""{"__metadata__": {"format": 1}}""", "__metadata__.format must be a string")]
    [InlineData("""{"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "t": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}""", "duplicate key 't'")]
    [InlineData("""{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}""", "overlap")]
    [InlineData("""{"t\ud800": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}""", "lone surrogate")]
    [InlineData("""{"t": {"dtype": "F32", "shape": [1,1,1,1,1,1,1,1,1], "data_offsets": [0, 4]}}""", "9 dimensions")]
    [InlineData("""{"t": {"dtype": "F32", "shape": [4294967296, 4294967296, 4294967296], "data_offsets": [0, 8]}}""", "overflows")]
    [InlineData("""{"t": {"dtype": "F32", "shape": [2147483648, 2147483648], "data_offsets": [0, 8]}}""", "too many bytes")]
    [InlineData("""[{"t": 1}]""", "not a JSON object")]
    [InlineData("""{"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}""", "not valid JSON")]
    public void SafetensorsHeaderValuesAreTypeChecked(string header, string message)
    {
        var e = HeaderError(header);
        Assert.Contains(".safetensors", e.Message);
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void SafetensorsHeaderWithInvalidUtf8NamesTheByte()
    {
        var bytes = Encoding.UTF8.GetBytes("""{"tX": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}""");
        bytes[3] = 0xC3; // a lead byte followed by '"': not UTF-8
        var e = Assert.Throws<CheckpointFormatException>(() => new SafeTensorsFile(SafetensorsWithHeader(bytes)).Dispose());
        Assert.Contains("not valid UTF-8 (at byte 3)", e.Message);
    }

    [Fact]
    public void DeeplyNestedHeaderIsAnErrorNotAStackOverflow()
    {
        string deep = "{\"__metadata__\": " + new string('[', 100_000) + new string(']', 100_000) + "}";
        Assert.Contains("not valid JSON", HeaderError(deep).Message);
    }

    private static string ModelDirWithConfig(Func<string, string> edit)
    {
        string dir = TestPaths.CopyFixture("qwen3");
        string cfg = Path.Combine(dir, "config.json");
        File.WriteAllText(cfg, edit(File.ReadAllText(cfg)));
        return dir;
    }

    private static void AssertCliError(string dir, params string[] parts)
    {
        var (code, _, err) = CliTests.Run("run", "--model", dir, "--prompt-ids", "1,2", "--max-new-tokens", "1");
        Assert.Equal(2, code);
        Assert.Single(err.Trim().Split('\n'));
        Assert.DoesNotContain("   at ", err);
        foreach (var p in parts) Assert.Contains(p, err);
    }

    [Theory]
    [InlineData("\"head_dim\": 16", "\"head_dim\": 1000000000", "head_dim", "exceeds the limit")]
    [InlineData("\"vocab_size\": 512", "\"vocab_size\": -5", "vocab_size", "must be positive")]
    [InlineData("\"rope_theta\": 1000000", "\"rope_theta\": 0", "rope_theta", "positive number")]
    [InlineData("\"rope_theta\": 1000000", "\"rope_theta\": -10000", "rope_theta", "positive number")]
    [InlineData("\"rms_norm_eps\": 1e-06", "\"rms_norm_eps\": 0", "rms_norm_eps", "positive number")]
    [InlineData("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3", "num_key_value_heads", "must divide")]
    [InlineData("\"max_position_embeddings\": 256", "\"max_position_embeddings\": 2000000000", "max_position_embeddings", "exceeds")]
    [InlineData("\"hidden_size\": 64", "\"hidden_size\": \"wide\"", "hidden_size", "unexpected value")]
    [InlineData("\"hidden_size\": 64", "\"hidden_size\": 64, \"hidden_size\": 128", "duplicate key 'hidden_size'", "config.json")]
    [InlineData("\"model_type\": \"qwen3\"", "\"model_type\": \"qwen3\\udc00\"", "model_type", "lone surrogate")]
    [InlineData("\"layer_types\": [", "\"layer_types\": [\"warp_attention\", ", "layer_types[0]", "warp_attention")]
    [InlineData("\"sliding_window\": null", "\"sliding_window\": -4096", "sliding_window", "positive")]
    public void ConfigValuesAreCheckedBeforeTheyAreUsed(string find, string replace, params string[] parts)
    {
        string dir = ModelDirWithConfig(j => j.Contains(find) ? j.Replace(find, replace) : throw new InvalidOperationException(find));
        var sw = Stopwatch.StartNew();
        AssertCliError(dir, ["config.json", .. parts]);
        Assert.True(sw.Elapsed.TotalSeconds < 10, "a lying config must fail before it sizes anything");
    }

    [Fact]
    public void ConfigWithInvalidUtf8()
    {
        string dir = TestPaths.CopyFixture("qwen3");
        string cfg = Path.Combine(dir, "config.json");
        var bytes = File.ReadAllBytes(cfg).ToList();
        bytes.InsertRange(bytes.IndexOf((byte)'q'), [0xFF, 0xFE]);
        File.WriteAllBytes(cfg, bytes.ToArray());
        AssertCliError(dir, "config.json", "not valid UTF-8");
    }

    [Theory]
    [InlineData("{\"top_p\": 2.0}", "top_p", "(0, 1]")]
    [InlineData("{\"temperature\": -1}", "temperature", ">= 0")]
    [InlineData("{\"temperature\": \"hot\"}", "temperature", "unexpected value")]
    [InlineData("{\"eos_token_id\": [1, \"x\"]}", "eos_token_id", "unexpected value")]
    [InlineData("{\"eos_token_id\": -3}", "eos_token_id", "token id")]
    [InlineData("{\"top_k\": 5, \"top_k\": 6}", "duplicate key 'top_k'")]
    [InlineData("[1]", "not a JSON object")]
    public void GenerationConfigIsChecked(string json, params string[] parts)
    {
        string dir = TestPaths.CopyFixture("qwen3");
        File.WriteAllText(Path.Combine(dir, "generation_config.json"), json);
        AssertCliError(dir, ["generation_config.json", .. parts]);
    }

    private static string TokenizerDir(string tokenizerJson, string? tokenizerConfig = null)
    {
        string dir = Path.Combine(Tmp, "tok-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), tokenizerJson);
        if (tokenizerConfig is not null) File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), tokenizerConfig);
        return dir;
    }

    private const string Tiny = """
        {"added_tokens": [{"id": 3, "content": "<s>", "special": true}],
         "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}, "decoder": {"type": "ByteLevel"},
         "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}
        """;

    private static void AssertTokenizerError(string dir, params string[] parts)
    {
        var (code, _, err) = CliTests.Run("tokenize", "--tokenizer", dir, "--text", "ab");
        Assert.Equal(2, code);
        Assert.Single(err.Trim().Split('\n'));
        Assert.DoesNotContain("   at ", err);
        foreach (var p in parts) Assert.Contains(p, err);
    }

    [Theory]
    [InlineData("\"id\": 3", "\"id\": -1", "added_tokens[0].id -1")]
    [InlineData("\"id\": 3", "\"id\": 2000000000", "added_tokens[0].id 2000000000")]
    [InlineData("\"ab\": 2", "\"ab\": 2000000000", "id 2000000000")]
    [InlineData("\"ab\": 2", "\"ab\": 2, \"ab\": 3", "duplicate key 'model.vocab.ab'")]
    [InlineData("\"b\": 1", "\"b\\ud800\": 1", "lone surrogate", "model.vocab")]
    [InlineData("\"content\": \"<s>\"", "\"content\": \"<s\\udfff>\"", "lone surrogate", "added_tokens[0].content")]
    [InlineData("\"decoder\": {\"type\": \"ByteLevel\"}", "\"decoder\": {\"type\": \"ByteLevel\"}, \"post_processor\": {\"type\": \"BertProcessing\", \"cls\": [\"<s>\", \"x\"], \"sep\": [\"<s>\", 3]}", "cls", "[token, id]")]
    [InlineData("\"decoder\": {\"type\": \"ByteLevel\"}", "\"decoder\": {\"type\": \"ByteLevel\"}, \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [], \"special_tokens\": [1]}", "special_tokens", "must be an object")]
    [InlineData("\"merges\": [\"a b\"]", "\"merges\": {\"a\": \"b\"}", "merges", "must be an array")]
    [InlineData("{\"a\": 0, \"b\": 1, \"ab\": 2}", "[\"a\", \"b\", \"ab\"]", "vocab", "must be an object")]
    public void TokenizerJsonIsTypeChecked(string find, string replace, params string[] parts)
    {
        Assert.Contains(find, Tiny);
        AssertTokenizerError(TokenizerDir(Tiny.Replace(find, replace)), ["tokenizer.json", .. parts]);
    }

    [Fact]
    public void TokenizerJsonWithInvalidUtf8()
    {
        string dir = TokenizerDir(Tiny);
        var bytes = File.ReadAllBytes(Path.Combine(dir, "tokenizer.json"));
        bytes[Array.IndexOf(bytes, (byte)'<') + 1] = 0x80;
        File.WriteAllBytes(Path.Combine(dir, "tokenizer.json"), bytes);
        AssertTokenizerError(dir, "tokenizer.json", "not valid UTF-8");
    }

    [Theory]
    [InlineData("{\"eos_token\": \"<s>\", \"eos_token\": \"</s>\"}", "duplicate key 'eos_token'")]
    [InlineData("{\"eos_token\": \"\\ud800\"}", "lone surrogate", "eos_token")]
    public void TokenizerConfigIsChecked(string config, params string[] parts) =>
        AssertTokenizerError(TokenizerDir(Tiny, config), ["tokenizer_config.json", .. parts]);

    [Fact]
    public void CatastrophicSplitRegexIsAnErrorNotAHang()
    {
        // (a|aa)+$ backtracks exponentially on "aaaa...b"; with a lookahead it cannot run on the linear engine.
        string json = Tiny.Replace("\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}",
            "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(?=a)(a|aa)+$\"}, \"behavior\": \"Isolated\"}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": false}]}");
        string dir = TokenizerDir(json);
        var sw = Stopwatch.StartNew();
        var (code, _, err) = CliTests.Run("tokenize", "--tokenizer", dir, "--text", new string('a', 60) + "b");
        Assert.Equal(2, code);
        Assert.Contains("catastrophic backtracking", err);
        Assert.True(sw.Elapsed.TotalSeconds < 30);
    }

    [Fact]
    public void LinearEngineServesPatternsWithoutLookarounds()
    {
        // The same exponential pattern without the lookahead runs on the non-backtracking engine: instant, same matches.
        string json = Tiny.Replace("\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}",
            "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(a|aa)+$\"}, \"behavior\": \"Isolated\"}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": false}]}");
        var (code, o, err) = CliTests.Run("tokenize", "--tokenizer", TokenizerDir(json), "--text", new string('a', 5000) + "b");
        Assert.True(code == 0, err);
        Assert.StartsWith("[0,0,0", o);
    }
}
