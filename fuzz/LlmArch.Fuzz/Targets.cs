using System.Text;
using LlmArch.Checkpoints;
using LlmArch.Tokenization;
using LlmArch.Tokenization.Jinja;

namespace LlmArch.Fuzz;

/// <summary>
/// The fuzz targets: each takes one input and must either succeed or throw an <see cref="LlmArchInputException"/>
/// (the documented "bad input" outcome). Anything else escaping is a crash; running past the fuzzer's timeout is a hang.
/// Adding a target (GGUF, the server's request parser) is one entry here, a seed folder fuzz/corpus/NAME, and nothing else.
/// </summary>
public static class Targets
{
    public static readonly IReadOnlyDictionary<string, Action<byte[]>> All = new Dictionary<string, Action<byte[]>>(StringComparer.Ordinal)
    {
        ["safetensors"] = SafetensorsHeader,
        ["config"] = Config,
        ["model"] = ModelFromConfig,
        ["genconfig"] = GenerationConfigJson,
        ["tokenizer"] = TokenizerJson,
        ["jinja"] = Jinja,
    };

    private static readonly string Scratch = Path.Combine(Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath(), $"llmarch-fuzz-{Environment.ProcessId}");

    private static string ScratchFile(string name, byte[] data)
    {
        Directory.CreateDirectory(Scratch);
        string p = Path.Combine(Scratch, name);
        File.WriteAllBytes(p, data);
        return p;
    }

    /// <summary>The input is a header; the file is 8-byte length + header + 256 bytes of data, opened as the loader opens it.</summary>
    private static void SafetensorsHeader(byte[] header)
    {
        var file = new byte[8 + header.Length + 256];
        BitConverter.TryWriteBytes(file.AsSpan(0, 8), (ulong)header.Length);
        header.CopyTo(file, 8);
        using var f = new SafeTensorsFile(ScratchFile("model.safetensors", file));
        foreach (var name in f.Tensors.Keys) f.Get(name);
    }

    private static void Config(byte[] json)
    {
        var cfg = ModelConfig.Parse(json, "config.json");
        _ = cfg.RopeFor();
        if (cfg.NumHiddenLayers is int n) cfg.CheckedLayerTypes(n);
    }

    /// <summary>The input is config.json; the model is built from its shapes (no weights) and analysed, as <c>compare</c> does.</summary>
    private static void ModelFromConfig(byte[] json)
    {
        var cfg = ModelConfig.Parse(json, "config.json");
        try { Models.ModelLoader.Resolve(cfg); }
        catch (ConfigException) { cfg = cfg with { ModelType = "qwen3", Architectures = null }; } // unknown types: build as a common one
        Analysis.ModelAnalysis.FromConfig(cfg, "fuzz");
    }

    private static void GenerationConfigJson(byte[] json) => GenerationConfig.Parse(json, "generation_config.json");

    /// <summary>The input is tokenizer.json; the tokenizer must also encode and decode a fixed mixed-script text.</summary>
    private static void TokenizerJson(byte[] json)
    {
        ScratchFile("tokenizer.json", json);
        var tok = Tokenizer.Load(Scratch);
        var ids = tok.Encode("Hello, world! 123 héllo 世界 🙂\n\t  <s>x</s>", addSpecialTokens: true);
        tok.Decode(ids.Where(i => i >= 0 && i < tok.VocabSize).ToArray());
    }

    private static readonly Dictionary<string, object?> Vars = new(StringComparer.Ordinal)
    {
        ["messages"] = new List<object?>
        {
            new Dictionary<string, object?> { ["role"] = "system", ["content"] = "Be brief." },
            new Dictionary<string, object?> { ["role"] = "user", ["content"] = "What is 2+2?" },
            new Dictionary<string, object?> { ["role"] = "assistant", ["content"] = "4", ["tool_calls"] = new List<object?> { new Dictionary<string, object?> { ["function"] = new Dictionary<string, object?> { ["name"] = "add", ["arguments"] = new Dictionary<string, object?> { ["a"] = 2L, ["b"] = 2L } } } } },
            new Dictionary<string, object?> { ["role"] = "tool", ["content"] = "4" },
        },
        ["tools"] = new List<object?> { new Dictionary<string, object?> { ["type"] = "function", ["function"] = new Dictionary<string, object?> { ["name"] = "add", ["parameters"] = new Dictionary<string, object?> { ["type"] = "object" } } } },
        ["add_generation_prompt"] = true, ["bos_token"] = "<s>", ["eos_token"] = "</s>", ["enable_thinking"] = false,
    };

    /// <summary>The input is a template (UTF-8, invalid bytes replaced), rendered with a conversation that has tool calls.</summary>
    private static void Jinja(byte[] source) =>
        JinjaTemplate.Parse(Encoding.UTF8.GetString(source)).Render(Vars);
}
