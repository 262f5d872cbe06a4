namespace LlmArch.Compute;

/// <summary>
/// One projection of all E experts of a MoE layer, each <c>[Out, In]</c>: a stacked tensor <c>[E, Out, In]</c> (fused
/// checkpoint layouts, read in place, quantized or column-major as stored) or one tensor per expert (per-expert
/// checkpoint names). <see cref="IBackend.MatMulById"/> reads it by expert id.
/// </summary>
public sealed class ExpertWeights
{
    public int Count { get; }
    public int Out { get; }
    public int In { get; }
    /// <summary>The stacked tensor when the checkpoint stores one; null for per-expert tensors.</summary>
    public Tensor? Stacked { get; }
    /// <summary>Expert e's <c>[Out, In]</c> weight (views into <see cref="Stacked"/> when stacked).</summary>
    public IReadOnlyList<Tensor> Experts { get; }
    /// <summary>What a backend builds once for its own kernels (a device table of pointers on a GPU).</summary>
    public object? DeviceData { get; set; }

    private ExpertWeights(Tensor? stacked, Tensor[] experts)
    {
        if (experts.Length == 0) throw new ArgumentException("no experts");
        Stacked = stacked; Experts = experts; Count = experts.Length;
        Out = experts[0].Shape[0]; In = experts[0].Shape[1];
        foreach (var e in experts)
            if (e.Shape.Rank != 2 || e.Shape[0] != Out || e.Shape[1] != In || e.DType != experts[0].DType || e.Device != experts[0].Device)
                throw new ArgumentException($"expert weight '{e.Name}' {e.DType}{e.Shape} differs from '{experts[0].Name}' {experts[0].DType}{experts[0].Shape}");
    }

    /// <summary>From a stacked <c>[E, Out, In]</c> tensor (views per expert, block scales included).</summary>
    public static ExpertWeights FromStacked(Tensor stacked)
    {
        if (stacked.Shape.Rank != 3) throw new ArgumentException($"stacked experts '{stacked.Name}' {stacked.Shape}: expected [E, out, in]");
        var e = new Tensor[stacked.Shape[0]];
        for (int i = 0; i < e.Length; i++) e[i] = stacked.Index0(i);
        return new ExpertWeights(stacked, e);
    }

    /// <summary>From one <c>[Out, In]</c> tensor per expert.</summary>
    public static ExpertWeights FromList(IReadOnlyList<Tensor> experts) => new(null, experts.ToArray());

    public DType DType => Experts[0].DType;
}
