using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LlmArch.Compute.Cpu;

/// <summary>
/// Causal scaled-dot-product attention over a KV cache plus the keys of the current step, for every variant the
/// models need: GQA/MQA/MHA, sliding window, chunked (chunk-local) attention, learned sinks, logit softcap, length
/// temperature. q <c>[B, T, Hq, Dk]</c>, new k <c>[B, T, Hkv, Dk]</c>, new v <c>[B, T, Hkv, Dv]</c>, out <c>[B, T, Hq, Dv]</c>.
/// Positions before <c>startPos</c> are read from the cache (slot <c>pos % capacity</c> when it rotates); the new keys
/// are appended after all queries are done, so a ring of <c>window</c> slots is enough.
/// <para>Three paths, one contract:</para>
/// <list type="bullet">
/// <item>Scalar reference: one query row at a time.</item>
/// <item>Decode (T &lt;= 4): the key positions are split into chunks across threads; each chunk reads its cache rows once
/// for every query head (they are contiguous over heads), and the chunks' partial softmaxes are merged with their
/// maxima (log-sum-exp), so a long cache streams sequentially at memory bandwidth.</item>
/// <item>Prefill: per (batch, KV head, block of query positions), every query head of the group at once: keys are
/// transposed once per call to k-major rows, Q·Kᵀ and P·V run as 4-row register tiles (vectors over keys, then over
/// the value dimension), the softmax is vectorized.</item>
/// </list>
/// </summary>
public static unsafe class AttentionKernel
{
    /// <summary>Shared geometry and addressing of one call.</summary>
    private sealed class Geo
    {
        public float* Q, K, V, Out, CK, CV, Sinks;
        public int B, T, Hq, Hkv, Dk, Dv, StartPos, Cap, G;
        public bool Ring, VFromK;
        public AttentionParams P;
        public Isa Isa;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public int Lo(int p)
        {
            int lo = 0;
            if (P.Window > 0) lo = Math.Max(lo, p - P.Window + 1);
            if (P.Chunk > 0) lo = Math.Max(lo, p / P.Chunk * P.Chunk);
            return lo;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public float Temp(int p) => P.TemperatureLength > 0 && p > P.TemperatureLength ? MathF.Log2(p) * (1f / MathF.Log2(P.TemperatureLength)) : 1f;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public float Transform(float dot, float temp)
        {
            float sc = dot * P.Scale;
            if (P.Softcap > 0) sc = P.Softcap * MathF.Tanh(sc / P.Softcap);
            return sc * temp;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public float* QRow(int b, int t, int h) => Q + (((long)b * T + t) * Hq + h) * Dk;
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public float* OutRow(int b, int t, int h) => Out + (((long)b * T + t) * Hq + h) * Dv;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public float* KeyRow(int b, int j, int kh)
        {
            if (j >= StartPos) return K + (((long)b * T + (j - StartPos)) * Hkv + kh) * Dk;
            int slot = Ring ? j % Cap : j;
            return CK + (((long)b * Cap + slot) * Hkv + kh) * Dk;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public float* ValueRow(int b, int j, int kh)
        {
            if (VFromK) return KeyRow(b, j, kh);
            if (j >= StartPos) return V + (((long)b * T + (j - StartPos)) * Hkv + kh) * Dv;
            int slot = Ring ? j % Cap : j;
            return CV + (((long)b * Cap + slot) * Hkv + kh) * Dv;
        }
    }

    // ---------------- scalar reference ----------------

    private sealed class ReferenceJob : IParallelWork
    {
        public Geo G = null!;
        [ThreadStatic] private static float[]? _scores;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int start, int end)
        {
            var g = G;
            int maxKeys = g.StartPos + g.T;
            var sc = _scores is { } s && s.Length >= maxKeys ? s : (_scores = new float[Math.Max(maxKeys * 2, 1024)]);
            fixed (float* scores = sc)
                for (int item = start; item < end; item++) Row(item, scores);
        }

        private void Row(int item, float* scores)
        {
            var g = G;
            int h = item % g.Hq, t = item / g.Hq % g.T, b = item / (g.Hq * g.T);
            int kh = h / g.G, p = g.StartPos + t, lo = g.Lo(p);
            float* q = g.QRow(b, t, h);
            float max = float.NegativeInfinity, temp = g.Temp(p);
            for (int j = lo; j <= p; j++)
            {
                float* k = g.KeyRow(b, j, kh);
                float dot = 0;
                for (int d = 0; d < g.Dk; d++) dot += q[d] * k[d];
                float s = g.Transform(dot, temp);
                scores[j - lo] = s;
                if (s > max) max = s;
            }
            float sink = g.Sinks is null ? float.NegativeInfinity : g.Sinks[h];
            if (sink > max) max = sink;
            float sum = g.Sinks is null ? 0f : MathF.Exp(sink - max);
            for (int i = 0; i < p - lo + 1; i++) { float e = MathF.Exp(scores[i] - max); scores[i] = e; sum += e; }
            float inv = 1f / sum;
            float* o = g.OutRow(b, t, h);
            for (int d = 0; d < g.Dv; d++) o[d] = 0;
            for (int j = lo; j <= p; j++)
            {
                float w = scores[j - lo] * inv;
                float* v = g.ValueRow(b, j, kh);
                for (int d = 0; d < g.Dv; d++) o[d] += w * v[d];
            }
        }
    }

    // ---------------- decode: keys split across threads ----------------

    private const int DecodeMaxT = 4, Chunk = 256;

    private sealed class DecodeJob : IParallelWork
    {
        public Geo G = null!;
        public int Chunks, JMin, JMax, Rows;
        public float[] M = [], L = [], O = [];
        [ThreadStatic] private static float[]? _s;

        /// <summary>Partial-softmax buffers for <paramref name="items"/> (batch, chunk) pairs; sized for the whole cache
        /// at once (<paramref name="maxItems"/>), so a growing context allocates nothing step after step.</summary>
        public void Ensure(int items, int maxItems)
        {
            int rows = items * Rows;
            if (M.Length < rows) { int cap = Math.Max(rows, maxItems * Rows); M = new float[cap]; L = new float[cap]; }
            if (O.Length < (long)rows * G.Dv) O = new float[Math.Max(Math.Max(rows, maxItems * Rows) * (long)G.Dv, 16)];
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int start, int end)
        {
            var g = G;
            var sbuf = _s is { } s && s.Length >= Rows * Chunk ? s : (_s = new float[Rows * Chunk * 2]);
            fixed (float* S = sbuf, mp = M, lp = L, op = O)
                for (int item = start; item < end; item++)
                {
                    int b = item / Chunks, c = item % Chunks;
                    int j0 = JMin + c * Chunk, j1 = Math.Min(JMax, j0 + Chunk - 1), n = j1 - j0 + 1;
                    // Scores of every row (t, h) against the chunk's keys; the rows of one KV head share each key load.
                    for (int j = j0; j <= j1; j++)
                        for (int kh = 0; kh < g.Hkv; kh++)
                        {
                            float* kr = g.KeyRow(b, j, kh);
                            for (int t = 0; t < g.T; t++)
                            {
                                int p = g.StartPos + t;
                                bool valid = j <= p && j >= g.Lo(p);
                                float temp = valid ? g.Temp(p) : 1f;
                                for (int gi = 0; gi < g.G; gi++)
                                {
                                    int h = kh * g.G + gi, r = t * g.Hq + h;
                                    S[(long)r * Chunk + (j - j0)] = valid
                                        ? g.Transform(MatMul.Dot<F32Loader>((byte*)g.QRow(b, t, h), kr, g.Dk, g.Isa), temp)
                                        : float.NegativeInfinity;
                                }
                            }
                        }
                    long baseRow = (long)item * Rows;
                    for (int r = 0; r < Rows; r++)
                    {
                        float* sr = S + (long)r * Chunk;
                        float m = Elementwise.Max(sr, n, g.Isa);
                        mp[baseRow + r] = m;
                        new Span<float>(op + (baseRow + r) * g.Dv, g.Dv).Clear();
                        lp[baseRow + r] = float.IsNegativeInfinity(m) ? 0 : Elementwise.ExpSub(sr, n, m, g.Isa);
                    }
                    for (int j = j0; j <= j1; j++)
                        for (int kh = 0; kh < g.Hkv; kh++)
                        {
                            float* vr = g.ValueRow(b, j, kh);
                            for (int t = 0; t < g.T; t++)
                                for (int gi = 0; gi < g.G; gi++)
                                {
                                    int r = t * g.Hq + kh * g.G + gi;
                                    float w = S[(long)r * Chunk + (j - j0)];
                                    if (w != 0 && !float.IsNegativeInfinity(mp[baseRow + r]))
                                        Elementwise.AddScaled(op + (baseRow + r) * g.Dv, w, vr, g.Dv, g.Isa);
                                }
                        }
                }
        }

        /// <summary>Combines the chunks' partial softmaxes row by row (and the sinks) into the output.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Merge()
        {
            var g = G;
            fixed (float* mp = M, lp = L, op = O)
                for (int b = 0; b < g.B; b++)
                    for (int r = 0; r < Rows; r++)
                    {
                        int t = r / g.Hq, h = r % g.Hq;
                        float mx = g.Sinks is null ? float.NegativeInfinity : g.Sinks[h];
                        for (int c = 0; c < Chunks; c++) mx = MathF.Max(mx, mp[((long)b * Chunks + c) * Rows + r]);
                        float den = g.Sinks is null ? 0f : MathF.Exp(g.Sinks[h] - mx);
                        float* o = g.OutRow(b, t, h);
                        new Span<float>(o, g.Dv).Clear();
                        for (int c = 0; c < Chunks; c++)
                        {
                            long row = ((long)b * Chunks + c) * Rows + r;
                            if (lp[row] == 0) continue;
                            float f = MathF.Exp(mp[row] - mx);
                            den += lp[row] * f;
                            Elementwise.AddScaled(o, f, op + row * g.Dv, g.Dv, g.Isa);
                        }
                        Elementwise.Scale(o, 1f / den, o, g.Dv, g.Isa);
                    }
        }
    }

    // ---------------- prefill: per (batch, KV head, query block) ----------------

    /// <summary>Keys of each (batch, KV head) transposed to k-major rows: Kt[b, kh][d][j - KLo], row stride NS.</summary>
    private sealed class PackKeysJob : IParallelWork
    {
        public Geo G = null!; public float* Kt; public int KLo, N, NS;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int start, int end)
        {
            var g = G;
            for (int item = start; item < end; item++)
            {
                int b = item / g.Hkv, kh = item % g.Hkv;
                float* dst = Kt + (long)item * g.Dk * NS;
                for (int jj = 0; jj < N; jj++)
                {
                    float* k = g.KeyRow(b, KLo + jj, kh);
                    for (int d = 0; d < g.Dk; d++) dst[(long)d * NS + jj] = k[d];
                }
                for (int d = 0; d < g.Dk; d++)
                    for (int jj = N; jj < NS; jj++) dst[(long)d * NS + jj] = 0;
            }
        }
    }

    private sealed class PrefillJob : IParallelWork
    {
        public Geo G = null!; public float* Kt; public int KLo, NS, QB, QBlocks;
        [ThreadStatic] private static float[]? _s;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int start, int end)
        {
            var g = G;
            int maxRows = QB * g.G;
            long need = (long)maxRows * NS;
            var sbuf = _s is { } s && s.Length >= need ? s : (_s = new float[need + 64]);
            float** qp = stackalloc float*[maxRows];
            int* lo = stackalloc int[maxRows]; int* hi = stackalloc int[maxRows];
            float* inv = stackalloc float[maxRows];
            fixed (float* S = sbuf)
                for (int item = start; item < end; item++)
                {
                    int qb = item % QBlocks, kh = item / QBlocks % g.Hkv, b = item / (QBlocks * g.Hkv);
                    int t0 = qb * QB, t1 = Math.Min(g.T, t0 + QB), R = (t1 - t0) * g.G;
                    int jlo = g.Lo(g.StartPos + t0), jhi = g.StartPos + t1 - 1, n = jhi - jlo + 1;
                    for (int r = 0; r < R; r++)
                    {
                        int t = t0 + r / g.G, h = kh * g.G + r % g.G, p = g.StartPos + t;
                        qp[r] = g.QRow(b, t, h);
                        lo[r] = g.Lo(p) - jlo; hi[r] = p - jlo; // valid key columns [lo, hi]
                    }
                    float* kt = Kt + (long)(b * g.Hkv + kh) * g.Dk * NS + (jlo - KLo);
                    Scores(qp, R, kt, n, S);
                    for (int r = 0; r < R; r++)
                    {
                        int t = t0 + r / g.G, h = kh * g.G + r % g.G;
                        inv[r] = Softmax(S + (long)r * NS, n, lo[r], hi[r], g.Temp(g.StartPos + t), h);
                    }
                    Values(b, kh, t0, R, jlo, n, S, inv, lo, hi);
                }
        }

        /// <summary>S[r][j] = q_r · k_j (raw dots) for j in [0, n), 4 rows x 2 vectors of keys per register tile.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Scores(float** qp, int R, float* kt, int n, float* S)
        {
            var g = G;
            int D = g.Dk;
            int r = 0;
            for (; r + 4 <= R; r += 4)
            {
                float* q0 = qp[r], q1 = qp[r + 1], q2 = qp[r + 2], q3 = qp[r + 3];
                float* s0 = S + (long)r * NS;
                if (g.Isa == Isa.Avx512)
                    for (int j = 0; j < n; j += 32)
                    {
                        Vector512<float> a00 = default, a01 = default, a10 = default, a11 = default, a20 = default, a21 = default, a30 = default, a31 = default;
                        for (int d = 0; d < D; d++)
                        {
                            float* kd = kt + (long)d * NS + j;
                            var k0 = Vector512.Load(kd); var k1 = Vector512.Load(kd + 16);
                            var v = Vector512.Create(q0[d]); a00 = Vector512.FusedMultiplyAdd(v, k0, a00); a01 = Vector512.FusedMultiplyAdd(v, k1, a01);
                            v = Vector512.Create(q1[d]); a10 = Vector512.FusedMultiplyAdd(v, k0, a10); a11 = Vector512.FusedMultiplyAdd(v, k1, a11);
                            v = Vector512.Create(q2[d]); a20 = Vector512.FusedMultiplyAdd(v, k0, a20); a21 = Vector512.FusedMultiplyAdd(v, k1, a21);
                            v = Vector512.Create(q3[d]); a30 = Vector512.FusedMultiplyAdd(v, k0, a30); a31 = Vector512.FusedMultiplyAdd(v, k1, a31);
                        }
                        a00.Store(s0 + j); a01.Store(s0 + j + 16); a10.Store(s0 + NS + j); a11.Store(s0 + NS + j + 16);
                        a20.Store(s0 + 2 * NS + j); a21.Store(s0 + 2 * NS + j + 16); a30.Store(s0 + 3 * NS + j); a31.Store(s0 + 3 * NS + j + 16);
                    }
                else
                    for (int j = 0; j < n; j += 16)
                    {
                        Vector256<float> a00 = default, a01 = default, a10 = default, a11 = default, a20 = default, a21 = default, a30 = default, a31 = default;
                        for (int d = 0; d < D; d++)
                        {
                            float* kd = kt + (long)d * NS + j;
                            var k0 = Vector256.Load(kd); var k1 = Vector256.Load(kd + 8);
                            var v = Vector256.Create(q0[d]); a00 = Vector256.FusedMultiplyAdd(v, k0, a00); a01 = Vector256.FusedMultiplyAdd(v, k1, a01);
                            v = Vector256.Create(q1[d]); a10 = Vector256.FusedMultiplyAdd(v, k0, a10); a11 = Vector256.FusedMultiplyAdd(v, k1, a11);
                            v = Vector256.Create(q2[d]); a20 = Vector256.FusedMultiplyAdd(v, k0, a20); a21 = Vector256.FusedMultiplyAdd(v, k1, a21);
                            v = Vector256.Create(q3[d]); a30 = Vector256.FusedMultiplyAdd(v, k0, a30); a31 = Vector256.FusedMultiplyAdd(v, k1, a31);
                        }
                        a00.Store(s0 + j); a01.Store(s0 + j + 8); a10.Store(s0 + NS + j); a11.Store(s0 + NS + j + 8);
                        a20.Store(s0 + 2 * NS + j); a21.Store(s0 + 2 * NS + j + 8); a30.Store(s0 + 3 * NS + j); a31.Store(s0 + 3 * NS + j + 8);
                    }
            }
            for (; r < R; r++)
            {
                float* q0 = qp[r], s0 = S + (long)r * NS;
                if (g.Isa == Isa.Avx512)
                    for (int j = 0; j < n; j += 16)
                    {
                        Vector512<float> a = default;
                        for (int d = 0; d < D; d++) a = Vector512.FusedMultiplyAdd(Vector512.Create(q0[d]), Vector512.Load(kt + (long)d * NS + j), a);
                        a.Store(s0 + j);
                    }
                else
                    for (int j = 0; j < n; j += 8)
                    {
                        Vector256<float> a = default;
                        for (int d = 0; d < D; d++) a = Vector256.FusedMultiplyAdd(Vector256.Create(q0[d]), Vector256.Load(kt + (long)d * NS + j), a);
                        a.Store(s0 + j);
                    }
            }
        }

        /// <summary>Softmax numerators of one row over its valid columns [lo, hi] (zero elsewhere); returns 1 / denominator.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private float Softmax(float* s, int n, int lo, int hi, float temp, int h)
        {
            var g = G;
            int len = hi - lo + 1;
            float* v = s + lo;
            if (g.P.Softcap > 0 || temp != 1f) for (int i = 0; i < len; i++) v[i] = g.Transform(v[i], temp);
            else Elementwise.Scale(v, g.P.Scale, v, len, g.Isa);
            float max = Elementwise.Max(v, len, g.Isa);
            float sink = g.Sinks is null ? float.NegativeInfinity : g.Sinks[h];
            if (sink > max) max = sink;
            float sum = Elementwise.ExpSub(v, len, max, g.Isa) + (g.Sinks is null ? 0f : MathF.Exp(sink - max));
            for (int i = 0; i < lo; i++) s[i] = 0;
            for (int i = hi + 1; i < n; i++) s[i] = 0;
            return 1f / sum;
        }

        /// <summary>out_r = inv_r * sum_j P[r][j] v_j: 4 rows x 2 vectors of the value dimension per register tile.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Values(int b, int kh, int t0, int R, int jlo, int n, float* S, float* inv, int* lo, int* hi)
        {
            var g = G;
            int Dv = g.Dv, w = g.Isa == Isa.Avx512 ? 32 : 16;
            int r = 0;
            for (; r < R; r += 4)
            {
                int rows = Math.Min(4, R - r);
                int ja = lo[r], jb = hi[r];
                for (int i = 1; i < rows; i++) { ja = Math.Min(ja, lo[r + i]); jb = Math.Max(jb, hi[r + i]); }
                float* s0 = S + (long)r * NS, s1 = rows > 1 ? s0 + NS : s0, s2 = rows > 2 ? s0 + 2 * NS : s0, s3 = rows > 3 ? s0 + 3 * NS : s0;
                float* o0 = Out(b, t0, kh, r), o1 = rows > 1 ? Out(b, t0, kh, r + 1) : null;
                float* o2 = rows > 2 ? Out(b, t0, kh, r + 2) : null, o3 = rows > 3 ? Out(b, t0, kh, r + 3) : null;
                float i0 = inv[r], i1 = rows > 1 ? inv[r + 1] : 0, i2 = rows > 2 ? inv[r + 2] : 0, i3 = rows > 3 ? inv[r + 3] : 0;
                int d = 0;
                for (; d + w <= Dv; d += w)
                {
                    if (g.Isa == Isa.Avx512)
                    {
                        Vector512<float> a00 = default, a01 = default, a10 = default, a11 = default, a20 = default, a21 = default, a30 = default, a31 = default;
                        for (int j = ja; j <= jb; j++)
                        {
                            float* vr = g.ValueRow(b, jlo + j, kh) + d;
                            var v0 = Vector512.Load(vr); var v1 = Vector512.Load(vr + 16);
                            var p = Vector512.Create(s0[j]); a00 = Vector512.FusedMultiplyAdd(p, v0, a00); a01 = Vector512.FusedMultiplyAdd(p, v1, a01);
                            p = Vector512.Create(s1[j]); a10 = Vector512.FusedMultiplyAdd(p, v0, a10); a11 = Vector512.FusedMultiplyAdd(p, v1, a11);
                            p = Vector512.Create(s2[j]); a20 = Vector512.FusedMultiplyAdd(p, v0, a20); a21 = Vector512.FusedMultiplyAdd(p, v1, a21);
                            p = Vector512.Create(s3[j]); a30 = Vector512.FusedMultiplyAdd(p, v0, a30); a31 = Vector512.FusedMultiplyAdd(p, v1, a31);
                        }
                        (a00 * i0).Store(o0 + d); (a01 * i0).Store(o0 + d + 16);
                        if (rows > 1) { (a10 * i1).Store(o1 + d); (a11 * i1).Store(o1 + d + 16); }
                        if (rows > 2) { (a20 * i2).Store(o2 + d); (a21 * i2).Store(o2 + d + 16); }
                        if (rows > 3) { (a30 * i3).Store(o3 + d); (a31 * i3).Store(o3 + d + 16); }
                    }
                    else
                    {
                        Vector256<float> a00 = default, a01 = default, a10 = default, a11 = default, a20 = default, a21 = default, a30 = default, a31 = default;
                        for (int j = ja; j <= jb; j++)
                        {
                            float* vr = g.ValueRow(b, jlo + j, kh) + d;
                            var v0 = Vector256.Load(vr); var v1 = Vector256.Load(vr + 8);
                            var p = Vector256.Create(s0[j]); a00 = Vector256.FusedMultiplyAdd(p, v0, a00); a01 = Vector256.FusedMultiplyAdd(p, v1, a01);
                            p = Vector256.Create(s1[j]); a10 = Vector256.FusedMultiplyAdd(p, v0, a10); a11 = Vector256.FusedMultiplyAdd(p, v1, a11);
                            p = Vector256.Create(s2[j]); a20 = Vector256.FusedMultiplyAdd(p, v0, a20); a21 = Vector256.FusedMultiplyAdd(p, v1, a21);
                            p = Vector256.Create(s3[j]); a30 = Vector256.FusedMultiplyAdd(p, v0, a30); a31 = Vector256.FusedMultiplyAdd(p, v1, a31);
                        }
                        (a00 * i0).Store(o0 + d); (a01 * i0).Store(o0 + d + 8);
                        if (rows > 1) { (a10 * i1).Store(o1 + d); (a11 * i1).Store(o1 + d + 8); }
                        if (rows > 2) { (a20 * i2).Store(o2 + d); (a21 * i2).Store(o2 + d + 8); }
                        if (rows > 3) { (a30 * i3).Store(o3 + d); (a31 * i3).Store(o3 + d + 8); }
                    }
                }
                for (; d < Dv; d++)
                    for (int i = 0; i < rows; i++)
                    {
                        float* si = S + (long)(r + i) * NS;
                        float acc = 0;
                        for (int j = ja; j <= jb; j++) acc += si[j] * g.ValueRow(b, jlo + j, kh)[d];
                        Out(b, t0, kh, r + i)[d] = acc * inv[r + i];
                    }
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private float* Out(int b, int t0, int kh, int r) => G.OutRow(b, t0 + r / G.G, kh * G.G + r % G.G);
    }

    [ThreadStatic] private static ReferenceJob? _reference;
    [ThreadStatic] private static DecodeJob? _decode;
    [ThreadStatic] private static PrefillJob? _prefill;
    [ThreadStatic] private static PackKeysJob? _pack;
    [ThreadStatic] private static Geo? _geo;
    [ThreadStatic] private static float[]? _kt;

    public static void Run(CpuThreadPool pool, Tensor q, Tensor k, Tensor? v, Tensor output, KvBuffer? cache, int startPos, in AttentionParams p) =>
        Run(pool, q, k, v, output, cache, startPos, p, CpuIsa.Current);

    /// <summary>Attention on the given path (<see cref="Isa.Scalar"/> is the reference); appends k/v to the cache.</summary>
    public static void Run(CpuThreadPool pool, Tensor q, Tensor k, Tensor? v, Tensor output, KvBuffer? cache, int startPos, in AttentionParams p, Isa isa)
    {
        int B = q.Shape[0], T = q.Shape[1], Hq = q.Shape[2], Dk = q.Shape[3];
        int Hkv = k.Shape[2], Dv = output.Shape[3];
        if (Hkv == 0 || Hq % Hkv != 0) throw new ArgumentException($"{Hq} query heads are not a multiple of {Hkv} key/value heads");
        if (cache is not null)
        {
            if (!cache.Ring && startPos + T > cache.Capacity)
                throw new LlmArchInputException($"sequence of {startPos + T} tokens exceeds the KV cache capacity of {cache.Capacity}");
            if (cache.Ring && Math.Max(p.Window - 1, p.Chunk) > cache.Capacity)
                throw new ArgumentException($"ring KV cache of {cache.Capacity} slots is smaller than the window {p.Window} / chunk {p.Chunk}");
        }
        else if (startPos != 0) throw new ArgumentException("startPos > 0 needs a cache");
        if (!CpuIsa.Supports(isa)) throw new ArgumentException($"this CPU cannot run the {CpuIsa.Name(isa)} path");

        var g = _geo ??= new Geo();
        g.Q = (float*)q.Ptr; g.K = (float*)k.Ptr; g.V = v is null ? null : (float*)v.Ptr; g.Out = (float*)output.Ptr;
        g.CK = cache is null ? null : (float*)cache.K.Ptr; g.CV = cache?.V is null ? null : (float*)cache.V.Ptr;
        g.Sinks = p.Sinks is null ? null : (float*)p.Sinks.Ptr;
        g.B = B; g.T = T; g.Hq = Hq; g.Hkv = Hkv; g.Dk = Dk; g.Dv = Dv; g.StartPos = startPos; g.G = Hq / Hkv;
        g.Cap = cache?.Capacity ?? 0; g.Ring = cache?.Ring ?? false; g.VFromK = p.ValueIsKeyPrefix; g.P = p; g.Isa = isa;

        if (B * T * Hq > 0)
        {
            if (isa == Isa.Scalar) { var r = _reference ??= new ReferenceJob(); r.G = g; pool.Run(r, B * T * Hq); }
            else if (T <= DecodeMaxT) RunDecode(pool, g);
            else RunPrefill(pool, g);
        }
        cache?.Append(k, p.ValueIsKeyPrefix ? null : v, startPos);
    }

    private static void RunDecode(CpuThreadPool pool, Geo g)
    {
        var job = _decode ??= new DecodeJob();
        job.G = g;
        job.JMin = g.Lo(g.StartPos); job.JMax = g.StartPos + g.T - 1;
        job.Chunks = (job.JMax - job.JMin + Chunk) / Chunk;
        job.Rows = g.T * g.Hq;
        job.Ensure(g.B * job.Chunks, g.B * Math.Max(job.Chunks, (g.Cap + Chunk - 1) / Chunk + 1));
        pool.Run(job, g.B * job.Chunks);
        job.Merge();
    }

    private static void RunPrefill(CpuThreadPool pool, Geo g)
    {
        int kLo = g.Lo(g.StartPos), n = g.StartPos + g.T - kLo;
        int ns = (n + 31) / 32 * 32 + 32; // room for whole vectors past the last key
        long need = (long)g.B * g.Hkv * g.Dk * ns;
        if (_kt is null || _kt.Length < need) _kt = GC.AllocateUninitializedArray<float>(checked((int)Math.Max(need, 1024)), pinned: true);
        fixed (float* kt = _kt)
        {
            var pack = _pack ??= new PackKeysJob();
            pack.G = g; pack.Kt = kt; pack.KLo = kLo; pack.N = n; pack.NS = ns;
            pool.Run(pack, g.B * g.Hkv);
            var job = _prefill ??= new PrefillJob();
            job.G = g; job.Kt = kt; job.KLo = kLo; job.NS = ns;
            job.QB = Math.Max(1, 32 / g.G);
            job.QBlocks = (g.T + job.QB - 1) / job.QB;
            pool.Run(job, g.B * g.Hkv * job.QBlocks);
        }
    }
}
