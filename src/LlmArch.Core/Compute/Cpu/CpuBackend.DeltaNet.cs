namespace LlmArch.Compute.Cpu;

public sealed unsafe partial class CpuBackend : IFusedDeltaRule
{
    public Tensor GatedDeltaRule(Tensor q, Tensor k, Tensor v, Tensor g, Tensor beta, Tensor state, StepBatch batch, int chunkSize)
    {
        int N = q.Shape[0], Hk = q.Shape[1], Dk = q.Shape[2], Hv = v.Shape[1], Dv = v.Shape[2];
        RequireF32(state, "recurrent state");
        if (k.Shape != q.Shape || v.Shape[0] != N || Hv % Hk != 0 || g.Count != (long)N * Hv || beta.Count != g.Count
            || state.Shape.Rank != 4 || state.Shape[1] != Hv || state.Shape[2] != Dk || state.Shape[3] != Dv || N != batch.Tokens)
            throw new ArgumentException($"delta rule: q {q.Shape}, k {k.Shape}, v {v.Shape}, g {g.Shape}, beta {beta.Shape}, state {state.Shape}, {batch.Tokens} tokens");
        var y = Empty(v.Shape);
        for (int s = 0; s < batch.Sequences; s++)
        {
            int off = batch.Offset[s], T = batch.Count[s], slot = batch.Slot[s];
            if ((uint)slot >= (uint)state.Shape[0]) throw new ArgumentException($"slot {slot} outside the state's {state.Shape[0]} slots");
            var dims = new DeltaNetKernels.Dims(1, T, Hk, Hv, Dk, Dv);
            float* st = P(state) + (long)slot * Hv * Dk * Dv;
            long qo = (long)off * Hk * Dk, vo = (long)off * Hv * Dv, go = (long)off * Hv;
            if (chunkSize <= 0 || T == 1) DeltaNetKernels.Recurrent(P(q) + qo, P(k) + qo, P(v) + vo, P(g) + go, P(beta) + go, st, P(y) + vo, dims);
            else DeltaNetKernels.Chunked(P(q) + qo, P(k) + qo, P(v) + vo, P(g) + go, P(beta) + go, st, P(y) + vo, dims, chunkSize);
        }
        return y;
    }
}

/// <summary>
/// Gated DeltaNet kernels. <see cref="RecurrentReference"/> is the plain scalar statement of the rule;
/// <see cref="Recurrent"/> (decode) and <see cref="Chunked"/> (prefill) are the two fast forms the tests hold to it.
/// </summary>
public static unsafe class DeltaNetKernels
{
    public readonly record struct Dims(int B, int T, int Hk, int Hv, int Dk, int Dv);

    [ThreadStatic] private static float[]? _convWindow;

    public static void CausalConv1d(float* x, float* w, float* state, float* y, int B, int T, int ch, int K, bool silu)
    {
        int S = K - 1;
        int need = (S + T) * ch;
        var window = _convWindow is { } cw && cw.Length >= need ? cw : (_convWindow = new float[Math.Max(need, 1)]); // reused: no allocation per decode step
        fixed (float* win = window)
            for (int b = 0; b < B; b++)
            {
                float* st = state + (long)b * S * ch;
                new ReadOnlySpan<float>(st, S * ch).CopyTo(new Span<float>(win, S * ch));
                new ReadOnlySpan<float>(x + (long)b * T * ch, T * ch).CopyTo(new Span<float>(win + S * ch, T * ch));
                for (int t = 0; t < T; t++)
                {
                    float* yr = y + ((long)b * T + t) * ch;
                    for (int c = 0; c < ch; c++)
                    {
                        float acc = 0;
                        for (int j = 0; j < K; j++) acc += w[c * K + j] * win[(t + j) * ch + c];
                        yr[c] = silu ? acc / (1f + MathF.Exp(-acc)) : acc;
                    }
                }
                new ReadOnlySpan<float>(win + T * ch, S * ch).CopyTo(new Span<float>(st, S * ch));
            }
    }

    public static void Decay(float* a, float* aLog, float* dtBias, float* y, long rows, int H)
    {
        for (long r = 0; r < rows; r++)
            for (int h = 0; h < H; h++)
            {
                float z = a[r * H + h] + dtBias[h];
                float softplus = z > 20f ? z : MathF.Log(1f + MathF.Exp(z)); // torch softplus, threshold 20
                y[r * H + h] = -MathF.Exp(aLog[h]) * softplus;
            }
    }

    /// <summary>Scales x <c>[n]</c> to x / sqrt(Σx² + 1e-6) (the FLA l2norm), times s, into dst.</summary>
    private static void L2Norm(float* x, float* dst, int n, float s)
    {
        float inv = 1f / MathF.Sqrt(Elementwise.SumSquares(x, n) + 1e-6f);
        for (int i = 0; i < n; i++) dst[i] = x[i] * inv * s;
    }

    public static void RecurrentReference(float* q, float* k, float* v, float* g, float* beta, float* state, float* y, Dims d)
    {
        int r = d.Hv / d.Hk;
        float scale = 1f / MathF.Sqrt(d.Dk);
        var qn = new float[d.Dk]; var kn = new float[d.Dk];
        for (int b = 0; b < d.B; b++)
            for (int h = 0; h < d.Hv; h++)
            {
                float* S = state + ((long)b * d.Hv + h) * d.Dk * d.Dv;
                for (int t = 0; t < d.T; t++)
                {
                    long qi = (((long)b * d.T + t) * d.Hk + h / r) * d.Dk, vi = (((long)b * d.T + t) * d.Hv + h) * d.Dv, gi = ((long)b * d.T + t) * d.Hv + h;
                    double qs = 0, ks = 0;
                    for (int i = 0; i < d.Dk; i++) { qs += (double)q[qi + i] * q[qi + i]; ks += (double)k[qi + i] * k[qi + i]; }
                    for (int i = 0; i < d.Dk; i++) { qn[i] = (float)(q[qi + i] / Math.Sqrt(qs + 1e-6)) * scale; kn[i] = (float)(k[qi + i] / Math.Sqrt(ks + 1e-6)); }
                    float decay = MathF.Exp(g[gi]);
                    for (int i = 0; i < d.Dk * d.Dv; i++) S[i] *= decay;
                    for (int j = 0; j < d.Dv; j++)
                    {
                        float mem = 0;
                        for (int i = 0; i < d.Dk; i++) mem += S[i * d.Dv + j] * kn[i];
                        float delta = (v[vi + j] - mem) * beta[gi];
                        for (int i = 0; i < d.Dk; i++) S[i * d.Dv + j] += kn[i] * delta;
                    }
                    for (int j = 0; j < d.Dv; j++)
                    {
                        float o = 0;
                        for (int i = 0; i < d.Dk; i++) o += S[i * d.Dv + j] * qn[i];
                        y[vi + j] = o;
                    }
                }
            }
    }

    public static void Recurrent(float* q, float* k, float* v, float* g, float* beta, float* state, float* y, Dims d)
    {
        int r = d.Hv / d.Hk, Dk = d.Dk, Dv = d.Dv;
        float scale = 1f / MathF.Sqrt(Dk);
        float* qn = stackalloc float[Dk]; float* kn = stackalloc float[Dk];
        float* delta = stackalloc float[Dv];
        for (int b = 0; b < d.B; b++)
            for (int h = 0; h < d.Hv; h++)
            {
                float* S = state + ((long)b * d.Hv + h) * Dk * Dv;
                for (int t = 0; t < d.T; t++)
                {
                    long qi = (((long)b * d.T + t) * d.Hk + h / r) * Dk, vi = (((long)b * d.T + t) * d.Hv + h) * Dv, gi = ((long)b * d.T + t) * d.Hv + h;
                    L2Norm(q + qi, qn, Dk, scale); L2Norm(k + qi, kn, Dk, 1f);
                    Elementwise.Scale(S, MathF.Exp(g[gi]), S, (long)Dk * Dv);
                    // delta = β (v - Sᵀk): accumulate Sᵀk row by row of S.
                    new Span<float>(delta, Dv).Clear();
                    for (int i = 0; i < Dk; i++) Elementwise.Axpby(S + i * Dv, kn[i], delta, 1f, delta, Dv);
                    Elementwise.Axpby(v + vi, beta[gi], delta, -beta[gi], delta, Dv);
                    float* o = y + vi;
                    new Span<float>(o, Dv).Clear();
                    for (int i = 0; i < Dk; i++)
                    {
                        Elementwise.Axpby(delta, kn[i], S + i * Dv, 1f, S + i * Dv, Dv);
                        Elementwise.Axpby(S + i * Dv, qn[i], o, 1f, o, Dv);
                    }
                }
            }
    }

    /// <summary>
    /// Chunked form: within a chunk the delta-rule updates are solved at once, T = (I + strictly-lower(diag(β) K Kᵀ ⊙ decay))⁻¹,
    /// U = T·diag(β)V and W = T·diag(β e^γ)K; across chunks the state carries over. γ is the within-chunk cumulative log decay.
    /// </summary>
    public static void Chunked(float* q, float* k, float* v, float* g, float* beta, float* state, float* y, Dims d, int chunk)
    {
        int r = d.Hv / d.Hk, Dk = d.Dk, Dv = d.Dv, L = Math.Min(chunk, Math.Max(d.T, 1));
        float scale = 1f / MathF.Sqrt(Dk);
        var qc = new float[L * Dk]; var kc = new float[L * Dk]; var gam = new float[L]; var bt = new float[L];
        var A = new float[L * L]; var U = new float[L * Dv]; var W = new float[L * Dk]; var tmp = new float[Dv];
        fixed (float* Q = qc, Kc = kc, G = gam, Bt = bt, Am = A, Um = U, Wm = W, Tmp = tmp)
            for (int b = 0; b < d.B; b++)
                for (int h = 0; h < d.Hv; h++)
                {
                    float* S = state + ((long)b * d.Hv + h) * Dk * Dv;
                    for (int t0 = 0; t0 < d.T; t0 += L)
                    {
                        int n = Math.Min(L, d.T - t0);
                        float acc = 0;
                        for (int i = 0; i < n; i++)
                        {
                            int t = t0 + i;
                            long qi = (((long)b * d.T + t) * d.Hk + h / r) * Dk, gi = ((long)b * d.T + t) * d.Hv + h;
                            L2Norm(q + qi, Q + i * Dk, Dk, scale); L2Norm(k + qi, Kc + i * Dk, Dk, 1f);
                            acc += g[gi]; G[i] = acc; Bt[i] = beta[gi];
                        }
                        float* V(int i) => v + (((long)b * d.T + t0 + i) * d.Hv + h) * Dv;
                        // A[i, j] = -β_i (k_i·k_j) e^(γ_i - γ_j) for j < i, then forward substitution gives T - I.
                        for (int i = 0; i < n; i++)
                            for (int j = 0; j < n; j++)
                                Am[i * L + j] = j < i ? -Bt[i] * Elementwise.Dot(Kc + i * Dk, Kc + j * Dk, Dk) * MathF.Exp(G[i] - G[j]) : 0f;
                        for (int i = 1; i < n; i++)
                            for (int j = 0; j < i; j++)
                            {
                                float s = Am[i * L + j];
                                for (int m = j + 1; m < i; m++) s += Am[i * L + m] * Am[m * L + j];
                                Am[i * L + j] = s;
                            }
                        // U = T (β V), W = T (β e^γ K); T = I + A.
                        for (int i = 0; i < n; i++)
                        {
                            float* ui = Um + i * Dv; float* wi = Wm + i * Dk;
                            Elementwise.Scale(V(i), Bt[i], ui, Dv);
                            Elementwise.Scale(Kc + i * Dk, Bt[i] * MathF.Exp(G[i]), wi, Dk);
                            for (int j = 0; j < i; j++)
                            {
                                float a = Am[i * L + j];
                                if (a == 0f) continue;
                                Elementwise.Axpby(V(j), a * Bt[j], ui, 1f, ui, Dv);
                                Elementwise.Axpby(Kc + j * Dk, a * Bt[j] * MathF.Exp(G[j]), wi, 1f, wi, Dk);
                            }
                        }
                        // v_new = U - W S (in place in U).
                        for (int i = 0; i < n; i++)
                            for (int kk = 0; kk < Dk; kk++) Elementwise.Axpby(S + kk * Dv, -Wm[i * Dk + kk], Um + i * Dv, 1f, Um + i * Dv, Dv);
                        // o_i = e^γ_i q_i S + Σ_{j<=i} (q_i·k_j) e^(γ_i-γ_j) v_new_j.
                        for (int i = 0; i < n; i++)
                        {
                            float* o = y + (((long)b * d.T + t0 + i) * d.Hv + h) * Dv;
                            new Span<float>(Tmp, Dv).Clear();
                            float ei = MathF.Exp(G[i]);
                            for (int kk = 0; kk < Dk; kk++) Elementwise.Axpby(S + kk * Dv, Q[i * Dk + kk] * ei, Tmp, 1f, Tmp, Dv);
                            for (int j = 0; j <= i; j++)
                                Elementwise.Axpby(Um + j * Dv, Elementwise.Dot(Q + i * Dk, Kc + j * Dk, Dk) * MathF.Exp(G[i] - G[j]), Tmp, 1f, Tmp, Dv);
                            new ReadOnlySpan<float>(Tmp, Dv).CopyTo(new Span<float>(o, Dv));
                        }
                        // S = e^γ_last S + Σ_i e^(γ_last - γ_i) k_i ⊗ v_new_i.
                        float last = G[n - 1];
                        Elementwise.Scale(S, MathF.Exp(last), S, (long)Dk * Dv);
                        for (int i = 0; i < n; i++)
                        {
                            float e = MathF.Exp(last - G[i]);
                            for (int kk = 0; kk < Dk; kk++) Elementwise.Axpby(Um + i * Dv, Kc[i * Dk + kk] * e, S + kk * Dv, 1f, S + kk * Dv, Dv);
                        }
                    }
                }
    }
}
