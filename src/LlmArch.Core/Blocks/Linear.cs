using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Blocks;

/// <summary>Anything that maps activations to activations (norms, MLPs, MoE).</summary>
public interface IModule
{
    Tensor Forward(IBackend b, Tensor x);
}

/// <summary>y = x W^T + b with W <c>[out, in]</c> as stored in the checkpoint (<c>{prefix}.weight</c>, <c>{prefix}.bias</c>).</summary>
public sealed class Linear : IModule
{
    public Tensor Weight { get; }
    public Tensor? Bias { get; }
    public int In { get; }
    public int Out { get; }

    public Linear(Tensor weight, Tensor? bias)
    {
        Weight = weight; Bias = bias; Out = weight.Shape[0]; In = weight.Shape[1];
    }

    public static Linear Load(WeightSource w, string prefix, int inFeatures, int outFeatures, bool bias, WeightUse use = default) =>
        new(w.Get(prefix + ".weight", [outFeatures, inFeatures], use),
            bias ? w.GetF32(prefix + ".bias", outFeatures) : null);

    public Tensor Forward(IBackend b, Tensor x) => b.MatMul(x, Weight, Bias);
}

/// <summary>RMSNorm (offset 0: x * w; offset 1: Gemma's x * (1 + w); no weight: L2-style unit RMS).</summary>
public sealed class RmsNorm(Tensor? weight, float eps, float offset = 0f) : IModule
{
    public Tensor? Weight { get; } = weight;
    public float Eps { get; } = eps;
    public float Offset { get; } = offset;

    public static RmsNorm Load(WeightSource w, string name, int dim, float eps, float offset = 0f) =>
        new(w.GetF32(name, dim), eps, offset);

    public Tensor Forward(IBackend b, Tensor x) => b.RmsNorm(x, Weight, Eps, Offset);
}

/// <summary>LayerNorm with weight and bias (<c>{prefix}.weight</c>, <c>{prefix}.bias</c>).</summary>
public sealed class LayerNorm(Tensor? weight, Tensor? bias, float eps) : IModule
{
    public static LayerNorm Load(WeightSource w, string prefix, int dim, float eps, bool bias = true) =>
        new(w.GetF32(prefix + ".weight", dim), bias ? w.GetF32(prefix + ".bias", dim) : null, eps);

    public Tensor Forward(IBackend b, Tensor x) => b.LayerNorm(x, weight, bias, eps);
}
