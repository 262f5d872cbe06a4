namespace LlmArch.Compute.Cpu;

public sealed unsafe partial class CpuBackend
{
    private int[] _moeCount = [], _moeRows = [];

    public Tensor MatMulById(Tensor x, ExpertWeights w, Tensor ids, Tensor? bias = null)
    {
        RequireI32(ids, "expert ids"); RequireF32(x, "expert input"); RequireF32(bias, "expert bias");
        if (ids.Shape.Rank != 2 || x.Shape.Rank != 3 || x.Shape[0] != ids.Shape[0] || (x.Shape[1] != 1 && x.Shape[1] != ids.Shape[1]) || x.Shape[2] != w.In)
            throw new ArgumentException($"expert matmul: x {x.Shape}, ids {ids.Shape}, experts [{w.Count}, {w.Out}, {w.In}]");
        if (bias is not null && (bias.Shape.Rank != 2 || bias.Shape[0] != w.Count || bias.Shape[1] != w.Out))
            throw new ArgumentException($"expert bias {bias.Shape} for [{w.Count}, {w.Out}]");
        int N = ids.Shape[0], S = ids.Shape[1], E = w.Count, K = w.In, O = w.Out;
        bool shared = x.Shape[1] == 1;
        var y = Empty(new Shape(N, S, O));
        if (N == 0) return y;
        // Counting sort of the (token, slot) pairs by expert, then one matmul per expert over its gathered rows.
        if (_moeCount.Length < E + 1) _moeCount = new int[E + 1];
        if (_moeRows.Length < N * S) _moeRows = new int[N * S];
        var count = _moeCount.AsSpan(0, E + 1);
        count.Clear();
        int* id = I(ids);
        bool skipped = false;
        for (int i = 0; i < N * S; i++)
        {
            if (id[i] == -1) { skipped = true; continue; } // owned by another device: a zero row
            if ((uint)id[i] >= (uint)E) throw new ArgumentException($"expert id {id[i]} outside {E}");
            count[id[i] + 1]++;
        }
        if (skipped) new Span<float>(P(y), checked((int)y.Count)).Clear();
        for (int e = 0; e < E; e++) count[e + 1] += count[e];
        Span<int> fill = E <= 1024 ? stackalloc int[E] : new int[E];
        count[..E].CopyTo(fill);
        for (int i = 0; i < N * S; i++) if (id[i] >= 0) _moeRows[fill[id[i]]++] = i;
        int maxRows = 0;
        for (int e = 0; e < E; e++) maxRows = Math.Max(maxRows, count[e + 1] - count[e]);
        var xs = Empty(new Shape(maxRows, K));
        var ys = Empty(new Shape(maxRows, O));
        for (int e = 0; e < E; e++)
        {
            int start = count[e], n = count[e + 1] - start;
            if (n == 0) continue;
            for (int j = 0; j < n; j++)
            {
                int pair = _moeRows[start + j];
                long src = shared ? pair / S : pair;
                new ReadOnlySpan<float>(P(x) + src * K, K).CopyTo(new Span<float>(P(xs) + (long)j * K, K));
            }
            Cpu.MatMul.Run(Pool, P(xs), n, K, w.Experts[e], bias is null ? null : P(bias) + (long)e * O, P(ys));
            for (int j = 0; j < n; j++)
                new ReadOnlySpan<float>(P(ys) + (long)j * O, O).CopyTo(new Span<float>(P(y) + (long)_moeRows[start + j] * O, O));
        }
        return y;
    }
}

/// <summary>Gated activations of expert MLPs, strided so fused and interleaved gate_up layouts need no copy.</summary>
public static unsafe class MoeKernels
{
    public static float GluOne(float g, float u, in ExpertActivation a)
    {
        switch (a.Kind)
        {
            case GluKind.SwiGlu: return Elementwise.Apply(Activation.Silu, g) * u;
            case GluKind.GeGluTanh: return Elementwise.Apply(Activation.GeluTanh, g) * u;
            case GluKind.GeGlu: return Elementwise.Apply(Activation.Gelu, g) * u;
            case GluKind.ReGlu: return MathF.Max(0f, g) * u;
            default:
                g = MathF.Min(g, a.Limit);
                u = Math.Clamp(u, -a.Limit, a.Limit);
                return (u + 1f) * (g / (1f + MathF.Exp(-g * a.Alpha)));
        }
    }

    /// <summary>Scalar reference: y[r, i] = glu(gate[r*rowStride + i*step], up[r*rowStride + i*step]); y is dense [rows, I].</summary>
    public static void GluReference(float* gate, int gateStep, float* up, int upStep, float* y, long rows, int I, int rowStride, in ExpertActivation a)
    {
        for (long r = 0; r < rows; r++)
            for (int i = 0; i < I; i++)
                y[r * I + i] = GluOne(gate[r * rowStride + (long)i * gateStep], up[r * rowStride + (long)i * upStep], a);
    }

    /// <summary>Same contract as <see cref="GluReference"/>; the contiguous SwiGLU/GeGLU case uses the vectorized gated kernel.</summary>
    public static void Glu(float* gate, int gateStep, float* up, int upStep, float* y, long rows, int I, int rowStride, in ExpertActivation a)
    {
        if (gateStep == 1 && upStep == 1 && a.Kind != GluKind.ClampedSwiGlu)
        {
            var act = a.Kind switch { GluKind.SwiGlu => Activation.Silu, GluKind.GeGluTanh => Activation.GeluTanh, GluKind.ReGlu => Activation.Relu, _ => Activation.Gelu };
            if (rowStride == I) { Elementwise.Gated(gate, up, y, rows * I, act); return; }
            for (long r = 0; r < rows; r++) Elementwise.Gated(gate + r * rowStride, up + r * rowStride, y + r * I, I, act);
            return;
        }
        GluReference(gate, gateStep, up, upStep, y, rows, I, rowStride, a);
    }
}
