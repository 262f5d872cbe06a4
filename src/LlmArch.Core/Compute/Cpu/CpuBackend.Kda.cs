namespace LlmArch.Compute.Cpu;

public sealed unsafe partial class CpuBackend : IFusedKda
{
    private KdaJob? _kdaJob;

    /// <summary>
    /// Kimi Delta Attention's rule on the CPU: the recurrence for every token, vectorized over the value dim (per token
    /// and head O(Dk·Dv), the same order as a chunked form; <paramref name="chunkSize"/> only selects the composition's
    /// form elsewhere). Heads run in parallel.
    /// </summary>
    public Tensor KdaRule(Tensor q, Tensor k, Tensor v, Tensor g, Tensor beta, Tensor state, StepBatch batch, int chunkSize)
    {
        int N = q.Shape[0], H = q.Shape[1], Dk = q.Shape[2], Dv = v.Shape[2];
        RequireF32(state, "recurrent state");
        if (k.Shape != q.Shape || g.Shape != q.Shape || v.Shape[0] != N || v.Shape[1] != H || beta.Count != (long)N * H
            || state.Shape.Rank != 4 || state.Shape[1] != H || state.Shape[2] != Dk || state.Shape[3] != Dv || N != batch.Tokens)
            throw new ArgumentException($"KDA rule: q {q.Shape}, k {k.Shape}, v {v.Shape}, g {g.Shape}, beta {beta.Shape}, state {state.Shape}, {batch.Tokens} tokens");
        var y = Empty(v.Shape);
        for (int s = 0; s < batch.Sequences; s++)
            if ((uint)batch.Slot[s] >= (uint)state.Shape[0]) throw new ArgumentException($"slot {batch.Slot[s]} outside the state's {state.Shape[0]} slots");
        var job = _kdaJob ??= new KdaJob();     // reused: no allocation per decode step
        job.Q = P(q); job.K = P(k); job.V = P(v); job.G = P(g); job.Beta = P(beta); job.State = P(state); job.Y = P(y);
        job.Dims = new KdaKernels.Dims(H, Dk, Dv);
        job.SetBatch(batch);
        Pool.Run(job, batch.Sequences * H);
        return y;
    }

    /// <summary>One (sequence, head) per index: heads and sequences are independent.</summary>
    private sealed class KdaJob : IParallelWork
    {
        public float* Q, K, V, G, Beta, State, Y;
        public KdaKernels.Dims Dims;
        public int[] Offset = [], Count = [], Slot = [];

        public void SetBatch(StepBatch batch)
        {
            int n = batch.Sequences;
            if (Offset.Length < n) { Offset = new int[n]; Count = new int[n]; Slot = new int[n]; }
            batch.Offset.CopyTo(Offset); batch.Count.CopyTo(Count); batch.Slot.CopyTo(Slot);
        }

        public void Execute(int start, int end)
        {
            int H = Dims.H;
            for (int job = start; job < end; job++)
            {
                int s = job / H, h = job % H;
                float* S = State + ((long)Slot[s] * H + h) * Dims.Dk * Dims.Dv;
                KdaKernels.Recurrent(Q, K, V, G, Beta, S, Y, Offset[s], Count[s], h, Dims);
            }
        }
    }
}

/// <summary>
/// KDA kernels: <see cref="RecurrentReference"/> is the scalar statement of the rule (S = diag(e^g) S; S += k ⊗ β(v - Sᵀk);
/// o = Sᵀq, with q and k L2-normalized, q scaled by 1/sqrt(Dk)); <see cref="Recurrent"/> the vectorized form the tests hold to it.
/// </summary>
public static unsafe class KdaKernels
{
    public readonly record struct Dims(int H, int Dk, int Dv);

    /// <summary>x / sqrt(Σx² + 1e-6) · s (FLA's l2norm, as DeltaRule.L2Norm composes it).</summary>
    private static void L2Norm(float* x, float* dst, int n, float s)
    {
        float inv = 1f / MathF.Sqrt(Elementwise.SumSquares(x, n) + 1e-6f);
        for (int i = 0; i < n; i++) dst[i] = x[i] * inv * s;
    }

    /// <summary>Tokens [off, off + T) of head h; S is that head's <c>[Dk, Dv]</c> state.</summary>
    public static void Recurrent(float* q, float* k, float* v, float* g, float* beta, float* S, float* y, int off, int T, int h, Dims d)
    {
        int Dk = d.Dk, Dv = d.Dv;
        float scale = 1f / MathF.Sqrt(Dk);
        float* qn = stackalloc float[Dk]; float* kn = stackalloc float[Dk];
        float* delta = stackalloc float[Dv];
        for (int t = 0; t < T; t++)
        {
            long n = off + t, qi = (n * d.H + h) * Dk, vi = (n * d.H + h) * Dv;
            L2Norm(q + qi, qn, Dk, scale); L2Norm(k + qi, kn, Dk, 1f);
            // Decay row i of S by e^{g_i}, then Sᵀk.
            new Span<float>(delta, Dv).Clear();
            for (int i = 0; i < Dk; i++)
            {
                Elementwise.Scale(S + i * Dv, MathF.Exp(g[qi + i]), S + i * Dv, Dv);
                Elementwise.Axpby(S + i * Dv, kn[i], delta, 1f, delta, Dv);
            }
            float bt = beta[n * d.H + h];
            Elementwise.Axpby(v + vi, bt, delta, -bt, delta, Dv);                   // β(v - Sᵀk)
            float* o = y + vi;
            new Span<float>(o, Dv).Clear();
            for (int i = 0; i < Dk; i++)
            {
                Elementwise.Axpby(delta, kn[i], S + i * Dv, 1f, S + i * Dv, Dv);
                Elementwise.Axpby(S + i * Dv, qn[i], o, 1f, o, Dv);
            }
        }
    }

    /// <summary>The scalar rule for tokens [off, off + T) of head h (double-precision norms).</summary>
    public static void RecurrentReference(float* q, float* k, float* v, float* g, float* beta, float* S, float* y, int off, int T, int h, Dims d)
    {
        int Dk = d.Dk, Dv = d.Dv;
        var qn = new float[Dk]; var kn = new float[Dk];
        for (int t = 0; t < T; t++)
        {
            long n = off + t, qi = (n * d.H + h) * Dk, vi = (n * d.H + h) * Dv;
            double qs = 0, ks = 0;
            for (int i = 0; i < Dk; i++) { qs += (double)q[qi + i] * q[qi + i]; ks += (double)k[qi + i] * k[qi + i]; }
            for (int i = 0; i < Dk; i++)
            {
                qn[i] = (float)(q[qi + i] / Math.Sqrt(qs + 1e-6) / Math.Sqrt(Dk));
                kn[i] = (float)(k[qi + i] / Math.Sqrt(ks + 1e-6));
            }
            for (int i = 0; i < Dk; i++) { float e = MathF.Exp(g[qi + i]); for (int j = 0; j < Dv; j++) S[i * Dv + j] *= e; }
            float bt = beta[n * d.H + h];
            for (int j = 0; j < Dv; j++)
            {
                float mem = 0;
                for (int i = 0; i < Dk; i++) mem += S[i * Dv + j] * kn[i];
                float dl = (v[vi + j] - mem) * bt;
                for (int i = 0; i < Dk; i++) S[i * Dv + j] += kn[i] * dl;
            }
            for (int j = 0; j < Dv; j++)
            {
                float o = 0;
                for (int i = 0; i < Dk; i++) o += S[i * Dv + j] * qn[i];
                y[vi + j] = o;
            }
        }
    }
}
