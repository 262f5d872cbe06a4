using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Blocks;

/// <summary>
/// LFM2's gated short convolution: in_proj x → [B | C | x'] (<c>[N, 3C]</c>), a causal depthwise conv of kernel L over
/// B·x' (rolling state of the last L-1 inputs per slot), y = C · conv, out_proj. Optional biases on the projections
/// and the conv (<c>conv_bias</c>). x <c>[N, C]</c> → <c>[N, C]</c>. The conv is the generic <see cref="IBackend.CausalConv1d"/>;
/// its recurrence over decode steps is exact, so the prefill and token-by-token paths agree by construction.
/// </summary>
public sealed class ShortConv : IRecurrentBlock
{
    public int Hidden { get; }
    public int Kernel { get; }
    private readonly Linear _in, _out;
    private readonly Tensor _conv;
    private readonly Tensor? _convBias;

    public ShortConv(WeightSource w, string prefix, int hidden, int kernel, bool bias)
    {
        if (kernel < 1) throw new ConfigException($"{w.Location}: conv_L_cache must be positive (got {kernel})");
        Hidden = hidden; Kernel = kernel;
        _in = Linear.Load(w, $"{prefix}.in_proj", hidden, 3 * hidden, bias);
        _out = Linear.Load(w, $"{prefix}.out_proj", hidden, hidden, bias);
        _conv = w.Place(w.GetF32Host($"{prefix}.conv.weight", hidden, 1, kernel).Reshape(new Shape(hidden, kernel)));
        _convBias = bias ? w.GetF32($"{prefix}.conv.bias", hidden) : null;
    }

    /// <summary>Per slot: the last L-1 inputs of the conv, <c>[L-1, C]</c>.</summary>
    public long StateValues => (long)(Kernel - 1) * Hidden;

    public RecurrentState CreateState(IBackend b, int slots) => new(b, slots, ("conv_state", new Shape(Math.Max(1, Kernel - 1), Hidden)));

    public Tensor Forward(IBackend b, Tensor x, RecurrentState state, StepBatch batch)
    {
        int C = Hidden;
        var bcx = _in.Forward(b, x);                                           // [N, 3C]
        var bx = b.Binary(b.Slice(bcx, 0, C), b.Slice(bcx, 2 * C, C), BinaryOp.Mul);
        var conv = Kernel > 1 ? b.CausalConv1d(bx, _conv, state.Parts[0], batch, silu: false) : b.Binary(bx, b.View(_conv, new Shape(C)), BinaryOp.Mul);
        if (_convBias is not null) conv = b.Binary(conv, _convBias, BinaryOp.Add);
        return _out.Forward(b, b.Binary(b.Slice(bcx, C, C), conv, BinaryOp.Mul));
    }
}
