using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Blocks;

/// <summary>
/// The front of the flash-linear-attention layers (OLMo hybrid's Gated DeltaNet, Kimi Delta Attention): separate
/// q_proj / k_proj / v_proj, then a causal depthwise conv + SiLU over [q | k | v] with a rolling per-slot state. The
/// checkpoints store the conv as q_conv1d / k_conv1d / v_conv1d (or one conv1d); they are joined into one
/// <c>[2·Kt + Vt, K]</c> weight at load, which is the same depthwise conv. x <c>[N, C]</c> → q, k <c>[N, Hk, Dk]</c>,
/// v <c>[N, Hv, Dv]</c>.
/// </summary>
public sealed class QkvShortConv
{
    public int KeyHeads { get; }
    public int ValueHeads { get; }
    public int KeyDim { get; }
    public int ValueDim { get; }
    public int Kernel { get; }
    private readonly Linear _q, _k, _v;
    private readonly Tensor _conv;

    public int KeyTotal => KeyHeads * KeyDim;
    public int ValueTotal => ValueHeads * ValueDim;
    public int ConvDim => 2 * KeyTotal + ValueTotal;
    public long ConvStateValues => (long)(Kernel - 1) * ConvDim;

    public QkvShortConv(WeightSource w, string prefix, int hidden, int keyHeads, int keyDim, int valueHeads, int valueDim, int kernel)
    {
        if (keyHeads <= 0 || keyDim <= 0 || valueHeads <= 0 || valueDim <= 0)
            throw new ConfigException($"{w.Location}: linear attention at {prefix} needs positive heads and head dims (got {keyHeads}x{keyDim} keys, {valueHeads}x{valueDim} values)");
        if (valueHeads % keyHeads != 0)
            throw new ConfigException($"{w.Location}: linear attention at {prefix}: {valueHeads} value heads are not a multiple of {keyHeads} key heads");
        if (kernel < 2) throw new ConfigException($"{w.Location}: linear attention at {prefix}: conv kernel must be at least 2 (got {kernel})");
        KeyHeads = keyHeads; KeyDim = keyDim; ValueHeads = valueHeads; ValueDim = valueDim; Kernel = kernel;
        _q = Linear.Load(w, $"{prefix}.q_proj", hidden, KeyTotal, false);
        _k = Linear.Load(w, $"{prefix}.k_proj", hidden, KeyTotal, false);
        _v = Linear.Load(w, $"{prefix}.v_proj", hidden, ValueTotal, false);
        Tensor conv;
        if (w.Contains($"{prefix}.q_conv1d.weight") && (!w.HasData || !w.Contains($"{prefix}.conv1d.weight")))
        {
            // The published layout splits the one [ConvDim, 1, K] conv into three parts (not necessarily at the q/k/v
            // boundaries: transformers saves equal thirds); joined again they are the conv over [q | k | v].
            var parts = new[] { "q_conv1d", "k_conv1d", "v_conv1d" }.Select(n => PartRows(w, $"{prefix}.{n}.weight", kernel)).ToArray();
            if (parts.Sum(p => p.Shape[0]) != ConvDim)
                throw new CheckpointFormatException($"{w.Location}: {prefix}.q/k/v_conv1d hold {parts.Sum(p => p.Shape[0])} channels; expected {ConvDim} (2 x {KeyTotal} + {ValueTotal})");
            conv = FrontierWeightTransforms.ConcatRowsF32($"{prefix}.conv1d.weight", parts);
        }
        else conv = w.GetF32Host($"{prefix}.conv1d.weight", ConvDim, 1, kernel).Reshape(new Shape(ConvDim, kernel));
        _conv = w.Place(conv);
    }

    /// <summary>One stored part of the split conv, <c>[rows, 1, K]</c> as <c>[rows, K]</c>; a shape-only source splits evenly.</summary>
    private Tensor PartRows(WeightSource w, string name, int kernel)
    {
        long rows = w is CheckpointWeights cw ? cw.Info(name).Shape[0] : ConvDim / 3 + (name.Contains("v_conv1d") ? ConvDim % 3 : 0);
        return w.GetF32Host(name, rows, 1, kernel).Reshape(new Shape((int)rows, kernel));
    }

    /// <summary>The conv part of a state: <c>(name, [K-1, ConvDim])</c>.</summary>
    public (string, Shape) StatePart => ("conv_state", new Shape(Kernel - 1, ConvDim));

    public (Tensor Q, Tensor K, Tensor V) Forward(IBackend b, Tensor x, Tensor convState, StepBatch batch)
    {
        int N = x.Shape[0];
        var qkv = b.Concat(b.Concat(_q.Forward(b, x), _k.Forward(b, x)), _v.Forward(b, x));
        var mixed = b.CausalConv1d(qkv, _conv, convState, batch, silu: true);
        return (b.View(b.Slice(mixed, 0, KeyTotal), new Shape(N, KeyHeads, KeyDim)),
                b.View(b.Slice(mixed, KeyTotal, KeyTotal), new Shape(N, KeyHeads, KeyDim)),
                b.View(b.Slice(mixed, 2 * KeyTotal, ValueTotal), new Shape(N, ValueHeads, ValueDim)));
    }
}
