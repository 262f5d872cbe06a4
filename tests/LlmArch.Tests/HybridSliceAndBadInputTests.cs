using System.Text.Json.Nodes;
using LlmArch.Checkpoints;
using LlmArch.Generation;
using LlmArch.Models;

namespace LlmArch.Tests;

/// <summary>MatFormer slicing of Gemma 3n through <c>llmarch slice</c>.</summary>
public class MatFormerSliceTests
{
    private static float[] Logits(CausalLM m, int[] ids)
    {
        var r = new float[ids.Length * m.VocabSize];
        m.Backend.Download(m.Forward(ids, 1, m.CreateCache(1, ids.Length)), r);
        return r;
    }

    private static readonly int[] Ids = [3, 17, 250, 9, 77, 1, 400, 123, 64, 8, 300, 5];

    [Fact]
    public void FullWidthSliceReproducesTheModelExactly()
    {
        string outDir = HybridFixtures.TempDir("slice-full");
        var (code, stdout, err) = CliTests.Run("slice", "--model", HybridFixtures.Dir("gemma3n"), "--ffn-widths", "full", "--out", outDir);
        Assert.True(code == 0, err);
        Assert.Contains("4 layers", stdout);
        var a = Logits(ModelLoader.Load(HybridFixtures.Dir("gemma3n")), Ids);
        var b = Logits(ModelLoader.Load(outDir), Ids);
        Assert.Equal(a, b); // bit-identical
        File.Copy(Path.Combine(HybridFixtures.Dir("gemma3n"), "expected.safetensors"), Path.Combine(outDir, "expected.safetensors"));
        Assert.True(FixtureVerifier.Verify(outDir).Pass);
    }

    [Fact]
    public void SlicedModelRunsAndCountsItsParameters()
    {
        string outDir = HybridFixtures.TempDir("slice-small");
        var (code, _, err) = CliTests.Run("slice", "--model", HybridFixtures.Dir("gemma3n"), "--ffn-widths", "64,48,32", "--skip-layers", "2", "--out", outDir);
        Assert.True(code == 0, err);
        var cfg = ModelConfig.Load(Path.Combine(outDir, "config.json"));
        Assert.Equal(3, cfg.NumHiddenLayers);
        Assert.Equal([64, 48, 32], cfg.IntermediateSize!);
        Assert.Equal(1, cfg.NumKvSharedLayers);
        Assert.Equal(["sliding_attention", "full_attention", "full_attention"], cfg.LayerTypes!);

        var m = (Gemma3n)ModelLoader.Load(outDir);
        Assert.Equal(1, m.KvSourceOf(2));
        var (outs, _) = Generator.Generate(m, [Ids], 6, SamplingOptions.Greedy);
        Assert.Equal(Ids.Length + 6, outs[0].Length);
        Assert.All(Logits(m, Ids), x => Assert.True(float.IsFinite(x)));

        // Parameter count: the loaded model, the shape-only description (what `info` reads) and the file agree,
        // and equal the original less the cut FFN units, the dropped layer and its per-layer-embedding slice.
        long orig = ModelLoader.Load(HybridFixtures.Dir("gemma3n")).Weights.TotalParameters;
        long described = ModelLoader.Describe(cfg).Weights.TotalParameters;
        using var f = new SafeTensorsFile(Path.Combine(outDir, "model.safetensors"));
        long inFile = f.Tensors.Values.Sum(t => t.Shape.Aggregate(1L, (x, y) => x * y));
        Assert.Equal(m.Weights.TotalParameters, described);
        Assert.Equal(inFile, described);
        const int C = 64, P = 8, Vpl = 512;
        long layer2 = ModelLoader.Load(HybridFixtures.Dir("gemma3n")).Weights.Records.Where(r => r.Name.StartsWith("model.layers.2.")).Sum(r => r.Count);
        long cut = 3L * C * ((128 - 64) + (96 - 48) + (96 - 32)) + layer2 + (long)Vpl * P + (long)P * C;
        Assert.Equal(orig - cut, described);
    }

    [Fact]
    public void WidthsLargerThanTheModelAreRejected()
    {
        var (code, _, err) = CliTests.Run("slice", "--model", HybridFixtures.Dir("gemma3n"), "--ffn-widths", "64,200,64,64", "--out", HybridFixtures.TempDir("slice-bad"));
        Assert.Equal(2, code);
        Assert.Contains("larger than the model's 96", err);
        Assert.Single(err.TrimEnd().Split('\n'));
    }

    [Theory]
    [InlineData("1,2,3", "--ffn-widths has 3 entries")]
    [InlineData("e2b", "E4B-shaped")]
    [InlineData("wide", "not an integer or a preset")]
    public void BadWidthListsAreRejected(string widths, string message)
    {
        var (code, _, err) = CliTests.Run("slice", "--model", HybridFixtures.Dir("gemma3n"), "--ffn-widths", widths, "--out", HybridFixtures.TempDir("slice-bad"));
        Assert.Equal(2, code);
        Assert.Contains(message, err);
    }

    [Fact]
    public void SkippingAKvSourceLayerIsRejected()
    {
        var (code, _, err) = CliTests.Run("slice", "--model", HybridFixtures.Dir("gemma3n"), "--ffn-widths", "full", "--skip-layers", "1", "--out", HybridFixtures.TempDir("slice-bad"));
        Assert.Equal(2, code);
        Assert.Contains("KV-cache source", err);
    }

    [Fact]
    public void SlicingANonMatFormerModelIsRejected()
    {
        var (code, _, err) = CliTests.Run("slice", "--model", HybridFixtures.Dir("qwen3_next"), "--ffn-widths", "full", "--out", HybridFixtures.TempDir("slice-bad"));
        Assert.Equal(2, code);
        Assert.Contains("not a MatFormer", err);
    }
}

/// <summary>Bad checkpoints of the hybrid family: one clear line, exit code 2.</summary>
public class HybridBadInputTests
{
    private static string VerifyFails(string dir)
    {
        var (code, _, err) = CliTests.Run("verify", dir);
        Assert.Equal(2, code);
        Assert.Single(err.TrimEnd().Split('\n'));
        return err;
    }

    [Fact]
    public void InconsistentLinearAttentionHeadCounts()
    {
        string dir = HybridFixtures.Copy("qwen3_next", c => c["linear_num_value_heads"] = 3);
        Assert.Contains("linear_num_value_heads", VerifyFails(dir));
        Assert.Contains("not a multiple of linear_num_key_heads 2", VerifyFails(dir));
    }

    [Fact]
    public void ConvKernelSizeMismatch()
    {
        string dir = HybridFixtures.Copy("qwen3_next", c => c["linear_conv_kernel_dim"] = 3);
        var err = VerifyFails(dir);
        Assert.Contains("conv1d.weight", err);
        Assert.Contains("kernel size 4 but linear_conv_kernel_dim is 3", err);
    }

    [Fact]
    public void MtpWeightsOfTheWrongShape()
    {
        string dir = SpeculativeDecodingTests.WithMtp(5, (name, shape) => name == "mtp.fc.weight" ? [64, 64] : shape);
        var err = VerifyFails(dir);
        Assert.Contains("mtp.fc.weight", err);
        Assert.Contains("expected [64, 128]", err);
    }

    [Fact]
    public void KvSharingWithNoSourceLayer()
    {
        string dir = HybridFixtures.Copy("gemma3n", c =>
            c["layer_types"] = new JsonArray("sliding_attention", "sliding_attention", "full_attention", "full_attention"));
        Assert.Contains("no earlier full_attention layer", VerifyFails(dir));
    }

    [Fact]
    public void SparsityPatternOfTheWrongLength()
    {
        string dir = HybridFixtures.Copy("gemma3n", c => c["activation_sparsity_pattern"] = new JsonArray(0.95, 0.0));
        Assert.Contains("activation_sparsity_pattern", VerifyFails(dir));
    }
}
