namespace LlmArch.Compute;

/// <summary>
/// cos/sin of position x inverse frequency (times the attention factor, YaRN's mscale), <c>[Positions, RotaryDim/2]</c>
/// each, computed on the host in float32 as the reference does and held on the device that runs the model. Sized once
/// per cache (<see cref="Ensure"/> from CreateCache), so decode steps never grow it.
/// </summary>
public sealed class RopeTable
{
    private readonly float[] _invFreq;
    private readonly float _scaling;
    private IBackend? _owner;

    public int RotaryDim { get; }
    /// <summary>cos table <c>[Positions, RotaryDim/2]</c> on the owning device (null until <see cref="Ensure"/>).</summary>
    public Tensor? Cos { get; private set; }
    public Tensor? Sin { get; private set; }
    public int Positions { get; private set; }

    /// <param name="invFreq">RotaryDim/2 inverse frequencies.</param>
    /// <param name="attentionScaling">multiplier of cos and sin (YaRN's mscale), 1 otherwise.</param>
    public RopeTable(float[] invFreq, float attentionScaling)
    {
        _invFreq = invFreq; _scaling = attentionScaling; RotaryDim = invFreq.Length * 2;
    }

    public ReadOnlySpan<float> InverseFrequencies => _invFreq;
    public float AttentionScaling => _scaling;

    /// <summary>Makes the table cover positions [0, n) on <paramref name="b"/> (grows geometrically; thread-safe).</summary>
    public void Ensure(IBackend b, int n)
    {
        lock (_invFreq)
        {
            if (n <= Positions && ReferenceEquals(b, _owner)) return;
            int cap = Math.Max(n, Math.Max(64, ReferenceEquals(b, _owner) ? Positions * 2 : 0));
            int half = _invFreq.Length;
            var c = new float[(long)cap * half]; var s = new float[(long)cap * half];
            Compute(c, s, cap);
            var cos = b.Allocate(DType.F32, new Shape(cap, half), "rope.cos");
            var sin = b.Allocate(DType.F32, new Shape(cap, half), "rope.sin");
            b.Upload<float>(c, cos);
            b.Upload<float>(s, sin);
            if (_owner is not null) { _owner.Free(Cos!); _owner.Free(Sin!); }
            Cos = cos; Sin = sin; Positions = cap; _owner = b;
        }
    }

    /// <summary>The table's values for positions [0, positions) on the host (reference kernels, tests).</summary>
    public void Compute(Span<float> cos, Span<float> sin, int positions)
    {
        int half = _invFreq.Length;
        for (int p = 0; p < positions; p++)
            for (int i = 0; i < half; i++)
            {
                float f = p * _invFreq[i]; // float32 product, as the reference computes it
                cos[p * half + i] = (float)Math.Cos(f) * _scaling;
                sin[p * half + i] = (float)Math.Sin(f) * _scaling;
            }
    }
}
