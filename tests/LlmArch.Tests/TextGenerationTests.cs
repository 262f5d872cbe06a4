using LlmArch.Checkpoints;
using LlmArch.Cli;
using LlmArch.Compute;

namespace LlmArch.Tests;

/// <summary><c>run --prompt</c> and <c>chat</c> end to end: a small Qwen3 model over the real Qwen3 tokenizer and chat template.</summary>
public class TextGenerationTests
{
    private static readonly Lazy<string> ModelDir = new(BuildModel);

    /// <summary>The qwen3 fixture with its embedding table widened (randomly) to the real tokenizer's vocabulary.</summary>
    private static string BuildModel()
    {
        string dir = TestPaths.CopyFixture("qwen3");
        string tokDir = Path.Combine(TestPaths.Root, "tests", "fixtures", "tokenizers", "qwen3");
        foreach (var f in Directory.GetFiles(tokDir)) if (!f.EndsWith("expected.json")) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)), true);
        var tok = LlmArch.Tokenization.Tokenizer.Load(dir);
        int V = tok.VocabSize;
        string st = Path.Combine(dir, "model.safetensors");
        using (var f = new SafeTensorsFile(st))
        {
            var rng = new Random(1);
            var emb = new float[(long)V * 64];
            for (int i = 0; i < emb.Length; i++) emb[i] = (float)(rng.NextDouble() - 0.5);
            var list = f.Tensors.Keys.Where(k => k != "model.embed_tokens.weight").Select(k => (k, f.Get(k))).ToList();
            list.Add(("model.embed_tokens.weight", Tensor.FromFloats(emb, new Shape(V, 64))));
            SafeTensorsFile.Write(st + ".new", list);
        }
        File.Move(st + ".new", st, true);
        string cfg = Path.Combine(dir, "config.json");
        File.WriteAllText(cfg, File.ReadAllText(cfg).Replace("\"vocab_size\": 512", $"\"vocab_size\": {V}").Replace("\"max_position_embeddings\": 256", "\"max_position_embeddings\": 512"));
        return dir;
    }

    [Fact]
    public void RunWithTextPromptStreamsText()
    {
        var (code, stdout, stderr) = CliTests.Run("run", "--model", ModelDir.Value, "--prompt", "Hello, world", "--max-new-tokens", "6");
        Assert.True(code == 0, stderr);
        Assert.False(string.IsNullOrWhiteSpace(stdout));
        Assert.Contains("decode:", stderr);
    }

    [Fact]
    public void RunWithChatTemplate()
    {
        var (code, stdout, stderr) = CliTests.Run("run", "--model", ModelDir.Value, "--prompt", "What is 2+2?", "--chat", "--max-new-tokens", "4", "--temperature", "0.7", "--seed", "3");
        Assert.True(code == 0, stderr);
        Assert.Contains("prefill:", stderr);
    }

    [Fact]
    public void ChatIsMultiTurn()
    {
        var o = new StringWriter(); var e = new StringWriter();
        int code = Program.Run(["chat", "--model", ModelDir.Value, "--max-new-tokens", "3", "--system", "Be terse."], new StringReader("Hi there\nAnd again\n\n"), o, e);
        Assert.True(code == 0, e.ToString());
        // the "> " prompts go to stderr (stdout holds only the replies): three prompts, two turns answered, then the one that read the empty line
        Assert.Equal(4, e.ToString().Split("> ").Length);
        Assert.DoesNotContain("> ", o.ToString());
        var stats = e.ToString().Split('\n').Where(l => l.Contains("prompt tokens")).ToList();
        Assert.Equal(2, stats.Count);
        // the second turn's prompt holds the first exchange, so it is longer
        int First(string l) => int.Parse(l[(l.IndexOf('[') + 1)..].Split(' ')[0]);
        Assert.True(First(stats[1]) > First(stats[0]));
    }

    [Fact]
    public void ChatRejectsABadThinkingSwitch()
    {
        var (code, _, err) = CliTests.Run("chat", "--model", TestPaths.Fixture("qwen3"), "--enable-thinking", "maybe");
        Assert.Equal(2, code);
        Assert.Single(err.Trim().Split('\n'));
        Assert.Contains("--enable-thinking must be true or false (got 'maybe')", err);
    }

    [Fact]
    public void PromptAndIdsAreExclusive()
    {
        var (code, _, err) = CliTests.Run("run", "--model", TestPaths.Fixture("qwen3"), "--prompt", "x", "--prompt-ids", "1");
        Assert.Equal(2, code);
        Assert.Contains("exactly one", err);
    }

    [Fact]
    public void SpeculativeNeedsMtpHead()
    {
        var (code, _, err) = CliTests.Run("run", "--model", TestPaths.Fixture("qwen3_next"), "--prompt-ids", "1,2,3", "--speculative", "mtp");
        Assert.Equal(2, code);
        Assert.Contains("multi-token-prediction", err);
    }

    [Fact]
    public void UnknownSpeculativeMode()
    {
        var (code, _, err) = CliTests.Run("run", "--model", TestPaths.Fixture("qwen3"), "--prompt-ids", "1,2,3", "--speculative", "medusa");
        Assert.Equal(2, code);
        Assert.Contains("'medusa'", err);
    }
}

public class SpeculativeCliTests
{
    [Fact]
    public void RunSpeculativeMtpMatchesGreedyAndReportsAcceptance()
    {
        string dir = SpeculativeDecodingTests.WithMtp(seed: 5);
        var (c1, spec, err) = CliTests.Run("run", "--model", dir, "--prompt-ids", "3,14,15,92,65", "--max-new-tokens", "12", "--speculative", "mtp", "--draft-tokens", "2");
        Assert.True(c1 == 0, err);
        Assert.Contains("acceptance", err);
        var (c2, plain, _) = CliTests.Run("run", "--model", dir, "--prompt-ids", "3,14,15,92,65", "--max-new-tokens", "12", "--greedy");
        Assert.Equal(0, c2);
        Assert.Equal(plain.Trim(), spec.Trim());
    }
}
