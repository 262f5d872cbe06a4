using LlmArch.Tokenization;

namespace LlmArch.Serving.Tests;

public static class TestData
{
    public static string Root { get; } = FindRoot();

    private static string FindRoot()
    {
        var d = new DirectoryInfo(AppContext.BaseDirectory);
        while (d is not null && !File.Exists(Path.Combine(d.FullName, "LlmArch.sln"))) d = d.Parent;
        return d?.FullName ?? throw new InvalidOperationException("repository root not found");
    }

    public static string Fixture(string name) => Path.Combine(Root, "tests", "fixtures", "hf", name);
    public static string TokenizerDir(string name) => Path.Combine(Root, "tests", "fixtures", "tokenizers", name);
    public static string TemplatePath(string file) => Path.Combine(Root, "tests", "LlmArch.Serving.Tests", "Templates", file);

    private static readonly Dictionary<string, Tokenizer> Tokenizers = new();

    /// <summary>A real published tokenizer from tests/fixtures/tokenizers (loaded once per test run).</summary>
    public static Tokenizer RealTokenizer(string name)
    {
        lock (Tokenizers)
        {
            if (!Tokenizers.TryGetValue(name, out var t)) Tokenizers[name] = t = Tokenizer.Load(TokenizerDir(name));
            return t;
        }
    }
}
