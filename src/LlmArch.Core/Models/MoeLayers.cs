using LlmArch.Blocks;
using LlmArch.Checkpoints;

namespace LlmArch.Models;

/// <summary>Shared bits of the MoE model files: reading their config keys, and describing their FFNs for analysis.</summary>
public static class MoeLayers
{
    /// <summary>Fills a layer's FFN fields from the module it actually built (dense MLP, MoE, or dense + MoE).</summary>
    public static LayerInfo WithFfn(this LayerInfo li, IModule ffn) => ffn switch
    {
        Moe m => li with
        {
            Ffn = FfnKind.Moe, Experts = m.Spec.Experts, ActiveExperts = m.Spec.TopK, SharedExperts = m.SharedCount,
            FfnWidth = m.Width,
        },
        DenseAndMoe d => li.WithFfn(d.Moe) with { Ffn = FfnKind.DenseAndMoe, FfnWidth = d.Moe.Width + d.DenseWidth },
        GatedMlp g => li with { Ffn = FfnKind.Dense, FfnWidth = g.Gate.Out },
        _ => li,
    };

    /// <summary>The architecture description of a decoder stack with its FFN kinds filled in.</summary>
    public static ArchitectureInfo WithFfns(this ArchitectureInfo info, DecoderLayer[] stack) =>
        info with { Layers = info.Layers.Select((l, i) => l.WithFfn(stack[i].FeedForward)).ToList() };

    /// <summary>The number of routed experts, whichever key the family uses.</summary>
    public static (int Count, string Key) RoutedExperts(ModelConfig c)
    {
        if (c.NRoutedExperts is int a) return (a, "n_routed_experts");
        if (c.NumExperts is int b) return (b, "num_experts");
        if (c.NumLocalExperts is int d) return (d, "num_local_experts");
        throw c.Missing("num_experts");
    }

    /// <summary>
    /// A shared expert MLP (or n_shared_experts of them fused into one of n times the width, as DeepSeek and GLM
    /// store them at <c>{prefix}.shared_experts</c>).
    /// </summary>
    public static GatedMlp SharedExperts(WeightSource w, string prefix, int hidden, int width) =>
        GatedMlp.Load(w, prefix, hidden, width, Compute.UnaryOp.Silu);
}

/// <summary>A dense MLP and a MoE on the same input, summed and scaled (Grok's residual MoE: (mlp + moe) / sqrt 2).</summary>
public sealed class DenseAndMoe(IModule dense, int denseWidth, Moe moe, float scale) : IModule
{
    public IModule Dense { get; } = dense;
    public int DenseWidth { get; } = denseWidth;
    public Moe Moe { get; } = moe;

    public Compute.Tensor Forward(Compute.IBackend b, Compute.Tensor x)
    {
        var d = Dense.Forward(b, x);
        b.BinaryInPlace(d, Moe.Forward(b, x), Compute.BinaryOp.Add);
        return scale != 1f ? b.Unary(d, Compute.UnaryOp.Affine, scale) : d;
    }
}
