using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Blocks;

/// <summary>Maps HF activation names to ops.</summary>
public static class Activations
{
    public static UnaryOp Parse(ModelConfig cfg, string? name, string key) => name switch
    {
        "silu" or "swish" => UnaryOp.Silu,
        "gelu" => UnaryOp.Gelu,
        "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" or "gelu_tanh" => UnaryOp.GeluTanh,
        "relu" => UnaryOp.Relu,
        null => throw cfg.Missing(key),
        _ => throw cfg.Invalid(key, $"'{name}' is not a supported activation"),
    };
}

/// <summary>Gated MLP: down(act(gate(x)) * up(x)) — SwiGLU with silu, GeGLU with gelu.</summary>
public sealed class GatedMlp : IModule
{
    public Linear Gate { get; }
    public Linear Up { get; }
    public Linear Down { get; }
    public UnaryOp Act { get; }
    private readonly ExpertActivation _glu;

    public GatedMlp(Linear gate, Linear up, Linear down, UnaryOp act) { Gate = gate; Up = up; Down = down; Act = act; _glu = ExpertActivation.Of(act); }

    public static GatedMlp Load(WeightSource w, string prefix, int hidden, int inter, UnaryOp act, bool bias = false,
        WeightUse use = default, string gate = "gate_proj", string up = "up_proj", string down = "down_proj") =>
        new(Linear.Load(w, $"{prefix}.{gate}", hidden, inter, bias, use),
            Linear.Load(w, $"{prefix}.{up}", hidden, inter, bias, use),
            Linear.Load(w, $"{prefix}.{down}", inter, hidden, bias, use), act);

    public Tensor Forward(IBackend b, Tensor x) => Down.Forward(b, b.Glu(Gate.Forward(b, x), Up.Forward(b, x), _glu));
}

/// <summary>Plain MLP: fc_out(act(fc_in(x))) (GPT-2).</summary>
public sealed class PlainMlp(Linear fcIn, Linear fcOut, UnaryOp act) : IModule
{
    public Tensor Forward(IBackend b, Tensor x) => fcOut.Forward(b, b.Unary(fcIn.Forward(b, x), act));
}
