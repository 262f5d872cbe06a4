using LlmArch.Checkpoints;
using LlmArch.Compute;
using LlmArch.Generation;
using LlmArch.Generation.Tools;

namespace LlmArch.Serving.Tests;

/// <summary>A llama.cpp GGUF file serves as a model directory does: its vocabulary and chat template come from the
/// file's metadata (what `serve --model file.gguf` and `chat --model file.gguf` rely on).</summary>
public class GgufServingTests
{
    private static string ModelWithTokenizer()
    {
        string dir = Path.Combine(Path.GetTempPath(), "llmarch-serving-gguf-src-" + Environment.ProcessId);
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(TinyModels.ModelDir)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)), true);
        foreach (var f in Directory.GetFiles(TinyModels.TokenizerDir)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)), true);
        return dir;
    }

    [Fact]
    public async Task AGgufFileLoadsWithItsOwnTokenizerAndTemplateAndGeneratesAsTheDirectory()
    {
        string dir = ModelWithTokenizer();
        string gguf = Path.Combine(dir, "..", $"llmarch-serving-{Environment.ProcessId}.gguf");
        GgufExport.Export(dir, gguf, DType.F32);
        using var fromDir = LlmModel.Load(dir, new LlmModelOptions { Context = 512, Parallel = 1, Threads = 1 });
        using var fromGguf = LlmModel.Load(gguf, new LlmModelOptions { Context = 512, Parallel = 1, Threads = 1 });
        var turns = new[] { new ChatTurn { Role = "user", Content = "hello" } };
        string rendered = fromDir.RenderChat(turns);
        Assert.Equal(rendered, fromGguf.RenderChat(turns));
        var a = fromDir.CreateSession(); a.Append(fromDir.Tokenizer.Encode(rendered, addSpecialTokens: false));
        var b = fromGguf.CreateSession(); b.Append(fromGguf.Tokenizer.Encode(rendered, addSpecialTokens: false));
        Assert.Equal(a.Tokens.ToArray(), b.Tokens.ToArray());
        var ta = new List<int>(); var tb = new List<int>();
        await foreach (var t in a.GenerateAsync(12, SamplingOptions.Greedy)) if (t.Id >= 0) ta.Add(t.Id);
        await foreach (var t in b.GenerateAsync(12, SamplingOptions.Greedy)) if (t.Id >= 0) tb.Add(t.Id);
        Assert.NotEmpty(ta);
        Assert.Equal(ta, tb);
        Assert.Equal(Path.GetFileName(gguf), fromGguf.Name);
    }

    [Fact]
    public void AMissingGgufFileIsOneClearError()
    {
        var e = Assert.Throws<LlmArchInputException>(() => LlmModel.Load("/nonexistent/model.gguf"));
        Assert.Contains("model.gguf", e.Message);
    }
}
