using System.Reflection;
using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;
using LlmArch.Models;

namespace LlmArch.Tests;

/// <summary>The MXFP4 checkpoint stays 4-bit in memory: expert weights are views of the mapped block bytes.</summary>
public class GptOssMxfp4MemoryTests
{
    private static DecoderLayer[] StackOf(CausalLM m) =>
        (DecoderLayer[])typeof(DecoderModel).GetField("Stack", BindingFlags.NonPublic | BindingFlags.Instance)!.GetValue(m)!;

    [Fact]
    public void ExpertsStayMxfp4AtCheckpointSize()
    {
        string dir = AttnFixtures.Dir("gpt_oss_mxfp4");
        var m = ModelLoader.Load(dir);
        using var st = new SafeTensorsFile(Path.Combine(dir, "model.safetensors"));
        long checkpointExpertBytes = st.Tensors.Where(kv => kv.Key.EndsWith("_blocks") || kv.Key.EndsWith("_scales"))
            .Sum(kv => st.Get(kv.Key).ByteCount);
        long held = 0, logical = 0;
        foreach (var layer in StackOf(m))
        {
            var moe = Assert.IsType<Moe>(layer.FeedForward);
            foreach (var w in new[] { moe.Experts.GateUp!.Stacked!, moe.Experts.Down.Stacked! })
                {
                    Assert.Equal(DType.MXFP4, w.DType);
                    Assert.Equal((1, 32), w.ScaleBlock);
                    held += w.ByteCount + w.Scales!.ByteCount;
                    logical += w.Count;
                }
        }
        Assert.Equal(checkpointExpertBytes, held);              // 4.25 bits per weight, as in the file
        Assert.Equal(logical / 2 + logical / 32, held);
    }

    /// <summary>Packed 4-bit experts count as their logical values; scales are not parameters.</summary>
    [Fact]
    public void Mxfp4CheckpointCountsTheSameParametersAsTheUnquantizedOne()
    {
        var q = ModelLoader.Load(AttnFixtures.Dir("gpt_oss_mxfp4"));
        var f = ModelLoader.Load(AttnFixtures.Dir("gpt_oss"));
        Assert.Equal(f.Weights.TotalParameters, q.Weights.TotalParameters);
        Assert.Equal(f.Weights.Records.Sum(r => r.Count * r.Use.ActiveFraction), q.Weights.Records.Sum(r => r.Count * r.Use.ActiveFraction), 3);
    }
}
