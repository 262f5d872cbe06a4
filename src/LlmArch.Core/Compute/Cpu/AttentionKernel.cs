using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LlmArch.Compute.Cpu;

/// <summary>
/// Causal scaled-dot-product attention of a ragged step over the KV cache plus the step's own keys, for every variant
/// the models need: GQA/MQA/MHA, sliding window, chunked (chunk-local) attention, learned sinks, logit softcap, Grok's
/// length temperature, values as a key prefix (MLA). q <c>[N, Hq, Dk]</c>, new k <c>[N, Hkv, Dk]</c>, new v
/// <c>[N, Hkv, Dv]</c>, out <c>[N, Hq, Dv]</c>. Sequence s of the step has Count[s] tokens at rows Offset[s].. and
/// positions Start[s]..; it reads positions before Start[s] from its cache slot (slot row <c>pos % capacity</c> when
/// it rotates) and positions from Start[s] on from the step's rows. The cache is written by a separate op.
/// <para>Three paths, one contract:</para>
/// <list type="bullet">
/// <item>Scalar reference: one query row at a time.</item>
/// <item>Decode (a sequence of at most 4 tokens in the step): the key positions are split into chunks across threads; each chunk reads its cache rows once
/// for every query head (they are contiguous over heads), and the chunks' partial softmaxes are merged with their
/// maxima (log-sum-exp), so a long cache streams sequentially at memory bandwidth.</item>
/// <item>Prefill (the other sequences): per (sequence, KV head, block of query positions), every query head of the group at once: keys are
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
        public int Hq, Hkv, Dk, Dv, Cap, G;
        public bool Ring, VFromK;
        /// <summary>Per sequence of the step: cache slot, first position, token count, first row.</summary>
        public int[] Slot = [], Start = [], Count = [], Offset = [];
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
        public float* QRow(int s, int t, int h) => Q + (((long)Offset[s] + t) * Hq + h) * Dk;
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public float* OutRow(int s, int t, int h) => Out + (((long)Offset[s] + t) * Hq + h) * Dv;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public float* KeyRow(int s, int j, int kh)
        {
            int st = Start[s];
            if (j >= st) return K + (((long)Offset[s] + (j - st)) * Hkv + kh) * Dk;
            int row = Ring ? j % Cap : j;
            return CK + (((long)Slot[s] * Cap + row) * Hkv + kh) * Dk;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public float* ValueRow(int s, int j, int kh)
        {
            if (VFromK) return KeyRow(s, j, kh);
            int st = Start[s];
            if (j >= st) return V + (((long)Offset[s] + (j - st)) * Hkv + kh) * Dv;
            int row = Ring ? j % Cap : j;
            return CV + (((long)Slot[s] * Cap + row) * Hkv + kh) * Dv;
        }
    }

    // ---------------- scalar reference ----------------

    private sealed class ReferenceJob : IParallelWork
    {
        public Geo G = null!;
        public int* Pos, Seq;
        public int MaxEnd;
        [ThreadStatic] private static float[]? _scores;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int start, int end)
        {
            int maxKeys = MaxEnd;
            var sc = _scores is { } s && s.Length >= maxKeys ? s : (_scores = new float[Math.Max(maxKeys * 2, 1024)]);
            fixed (float* scores = sc)
                for (int item = start; item < end; item++) Row(item, scores);
        }

        private void Row(int item, float* scores)
        {
            var g = G;
            int h = item % g.Hq, n = item / g.Hq, b = Seq[n], p = Pos[n], t = p - g.Start[b];
            int kh = h / g.G, lo = g.Lo(p);
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

    /// <summary>Grows an index array geometrically (a step of the same shape allocates nothing).</summary>
    private static int[] Grow(int[] a, int n) => a.Length >= n ? a : new int[Math.Max(n, a.Length * 2)];

    private sealed class DecodeJob : IParallelWork
    {
        public Geo G = null!;
        /// <summary>Rows per item (DecodeMaxT x Hq): a sequence of T tokens uses the first T x Hq.</summary>
        public int Rows;
        /// <summary>Per decode sequence: its index in the step, first and last key position, chunks, first item.</summary>
        public int[] Seqs = [], JMin = [], JMax = [], Chunks = [], ItemBase = [];
        /// <summary>Per item: which decode sequence and which chunk of its keys.</summary>
        public int[] ItemSeq = [], ItemChunk = [];
        public int Count, Items;
        public float[] M = [], L = [], O = [];
        [ThreadStatic] private static float[]? _s;

        /// <summary>Partial-softmax buffers for the items; sized for the whole cache at once (<paramref name="maxItems"/>),
        /// so a growing context allocates nothing step after step.</summary>
        public void Ensure(int items, int maxItems)
        {
            long rows = (long)items * Rows, cap = Math.Max(rows, (long)maxItems * Rows);
            if (M.Length < rows) { M = new float[cap]; L = new float[cap]; }
            if (O.Length < rows * G.Dv) O = new float[Math.Max(cap * G.Dv, 16)];
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int start, int end)
        {
            var g = G;
            var sbuf = _s is { } s && s.Length >= Rows * Chunk ? s : (_s = new float[Rows * Chunk * 2]);
            fixed (float* S = sbuf, mp = M, lp = L, op = O)
                for (int item = start; item < end; item++)
                {
                    int i = ItemSeq[item], c = ItemChunk[item], b = Seqs[i];
                    int T = g.Count[b], startPos = g.Start[b], rows = T * g.Hq;
                    int j0 = JMin[i] + c * Chunk, j1 = Math.Min(JMax[i], j0 + Chunk - 1), n = j1 - j0 + 1;
                    // Scores of every row (t, h) against the chunk's keys; the rows of one KV head share each key load.
                    for (int j = j0; j <= j1; j++)
                        for (int kh = 0; kh < g.Hkv; kh++)
                        {
                            float* kr = g.KeyRow(b, j, kh);
                            for (int t = 0; t < T; t++)
                            {
                                int p = startPos + t;
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
                    for (int r = 0; r < rows; r++)
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
                            for (int t = 0; t < T; t++)
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
                for (int i = 0; i < Count; i++)
                {
                    int b = Seqs[i], rows = g.Count[b] * g.Hq, chunks = Chunks[i];
                    long first = ItemBase[i];
                    for (int r = 0; r < rows; r++)
                    {
                        int t = r / g.Hq, h = r % g.Hq;
                        float mx = g.Sinks is null ? float.NegativeInfinity : g.Sinks[h];
                        for (int c = 0; c < chunks; c++) mx = MathF.Max(mx, mp[(first + c) * Rows + r]);
                        float den = g.Sinks is null ? 0f : MathF.Exp(g.Sinks[h] - mx);
                        float* o = g.OutRow(b, t, h);
                        new Span<float>(o, g.Dv).Clear();
                        for (int c = 0; c < chunks; c++)
                        {
                            long row = (first + c) * Rows + r;
                            if (lp[row] == 0) continue;
                            float f = MathF.Exp(mp[row] - mx);
                            den += lp[row] * f;
                            Elementwise.AddScaled(o, f, op + row * g.Dv, g.Dv, g.Isa);
                        }
                        Elementwise.Scale(o, 1f / den, o, g.Dv, g.Isa);
                    }
                }
        }
    }

    // ---------------- prefill: per (sequence, KV head, query block) ----------------

    /// <summary>Keys of each (prefill sequence, KV head) transposed to k-major rows: Kt[i, kh][d][j - KLo[i]], row stride NS.</summary>
    private sealed class PackKeysJob : IParallelWork
    {
        public Geo G = null!; public float* Kt; public int NS;
        public int[] Seqs = [], KLo = [], N = [];

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Execute(int start, int end)
        {
            var g = G;
            for (int item = start; item < end; item++)
            {
                int i = item / g.Hkv, kh = item % g.Hkv, b = Seqs[i], n = N[i], klo = KLo[i];
                float* dst = Kt + (long)item * g.Dk * NS;
                for (int jj = 0; jj < n; jj++)
                {
                    float* k = g.KeyRow(b, klo + jj, kh);
                    for (int d = 0; d < g.Dk; d++) dst[(long)d * NS + jj] = k[d];
                }
                for (int d = 0; d < g.Dk; d++)
                    for (int jj = n; jj < NS; jj++) dst[(long)d * NS + jj] = 0;
            }
        }
    }

    private sealed class PrefillJob : IParallelWork
    {
        public Geo G = null!; public float* Kt; public int NS, QB;
        /// <summary>Per prefill sequence: its index in the step, first key position, query blocks, first item.</summary>
        public int[] Seqs = [], KLo = [], QBlocks = [], ItemBase = [];
        public int Count;
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
                    int i = Array.BinarySearch(ItemBase, 0, Count, item);
                    if (i < 0) i = ~i - 1;
                    int local = item - ItemBase[i], qblocks = QBlocks[i], b = Seqs[i];
                    int qb = local % qblocks, kh = local / qblocks;
                    int T = g.Count[b], startPos = g.Start[b];
                    int t0 = qb * QB, t1 = Math.Min(T, t0 + QB), R = (t1 - t0) * g.G;
                    int jlo = g.Lo(startPos + t0), jhi = startPos + t1 - 1, n = jhi - jlo + 1;
                    for (int r = 0; r < R; r++)
                    {
                        int t = t0 + r / g.G, h = kh * g.G + r % g.G, p = startPos + t;
                        qp[r] = g.QRow(b, t, h);
                        lo[r] = g.Lo(p) - jlo; hi[r] = p - jlo; // valid key columns [lo, hi]
                    }
                    float* kt = Kt + ((long)i * g.Hkv + kh) * g.Dk * NS + (jlo - KLo[i]);
                    Scores(qp, R, kt, n, S);
                    for (int r = 0; r < R; r++)
                    {
                        int t = t0 + r / g.G, h = kh * g.G + r % g.G;
                        inv[r] = Softmax(S + (long)r * NS, n, lo[r], hi[r], g.Temp(startPos + t), h);
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

    /// <summary>Checks the operands against the batch and the cache (shared by the fast kernel and the reference).</summary>
    public static void Validate(Tensor q, Tensor k, Tensor? v, Tensor output, KvCache? cache, StepBatch batch, in AttentionParams p)
    {
        int N = q.Shape[0], Hq = q.Shape[1], Hkv = k.Shape[1];
        if (q.Shape.Rank != 3 || k.Shape.Rank != 3 || k.Shape[0] != N || k.Shape[2] != q.Shape[2] || N != batch.Tokens)
            throw new ArgumentException($"attention: q {q.Shape}, k {k.Shape} for {batch.Tokens} tokens");
        if (Hkv == 0 || Hq % Hkv != 0) throw new ArgumentException($"{Hq} query heads are not a multiple of {Hkv} key/value heads");
        if (p.ValueIsKeyPrefix ? p.ValueDim <= 0 || p.ValueDim > k.Shape[2] : v is null || v.Shape[0] != N || v.Shape[1] != Hkv)
            throw new ArgumentException($"attention values: v {(v is null ? "null" : v.Shape.ToString())}, value dim {p.ValueDim}");
        if (p.Sinks is not null && p.Sinks.Count != Hq) throw new ArgumentException($"sinks {p.Sinks.Shape} for {Hq} heads");
        if (cache is null)
        {
            if (!batch.AllFromStart) throw new ArgumentException("attention over earlier positions needs a cache");
            return;
        }
        if (cache.KvHeads != Hkv || cache.KeyDim != k.Shape[2]) throw new ArgumentException($"cache [{cache.KvHeads}, {cache.KeyDim}] for keys {k.Shape}");
        for (int s = 0; s < batch.Sequences; s++)
        {
            if ((uint)batch.Slot[s] >= (uint)cache.Slots) throw new ArgumentException($"slot {batch.Slot[s]} outside the cache's {cache.Slots} slots");
            if (!cache.Ring && batch.Start[s] + batch.Count[s] > cache.Capacity)
                throw new LlmArchInputException($"sequence of {batch.Start[s] + batch.Count[s]} tokens exceeds the KV cache capacity of {cache.Capacity}");
        }
        if (cache.Ring && Math.Max(p.Window - 1, p.Chunk) > cache.Capacity)
            throw new ArgumentException($"ring KV cache of {cache.Capacity} slots is smaller than the window {p.Window} / chunk {p.Chunk}");
    }

    public static void Run(CpuThreadPool pool, Tensor q, Tensor k, Tensor? v, Tensor output, KvCache? cache, StepBatch batch, in AttentionParams p) =>
        Run(pool, q, k, v, output, cache, batch, p, CpuIsa.Current);

    /// <summary>Attention on the given path (<see cref="Isa.Scalar"/> is the threaded float reference). The cache is
    /// only read: the step's keys and values come from k and v.</summary>
    public static void Run(CpuThreadPool pool, Tensor q, Tensor k, Tensor? v, Tensor output, KvCache? cache, StepBatch batch, in AttentionParams p, Isa isa)
    {
        Validate(q, k, v, output, cache, batch, p);
        if (!CpuIsa.Supports(isa)) throw new ArgumentException($"this CPU cannot run the {CpuIsa.Name(isa)} path");
        int N = q.Shape[0], Hq = q.Shape[1], Hkv = k.Shape[1];
        var g = _geo ??= new Geo();
        g.Q = (float*)q.Ptr; g.K = (float*)k.Ptr; g.V = v is null ? null : (float*)v.Ptr; g.Out = (float*)output.Ptr;
        g.CK = cache is null ? null : (float*)cache.K.Ptr; g.CV = cache?.V is null ? null : (float*)cache.V.Ptr;
        g.Sinks = p.Sinks is null ? null : (float*)p.Sinks.Ptr;
        g.Hq = Hq; g.Hkv = Hkv; g.Dk = q.Shape[2]; g.Dv = output.Shape[2]; g.G = Hq / Hkv;
        g.Cap = cache?.Capacity ?? 0; g.Ring = cache?.Ring ?? false; g.VFromK = p.ValueIsKeyPrefix; g.P = p; g.Isa = isa;
        int S = batch.Sequences;
        g.Slot = Grow(g.Slot, S); g.Start = Grow(g.Start, S); g.Count = Grow(g.Count, S); g.Offset = Grow(g.Offset, S);
        batch.Slot.CopyTo(g.Slot); batch.Start.CopyTo(g.Start); batch.Count.CopyTo(g.Count); batch.Offset.CopyTo(g.Offset);
        if (N * Hq == 0) return;
        if (isa == Isa.Scalar)
        {
            var r = _reference ??= new ReferenceJob();
            r.G = g; r.Pos = (int*)batch.Positions!.Ptr; r.Seq = (int*)batch.TokenSequences!.Ptr; r.MaxEnd = batch.MaxEnd;
            pool.Run(r, N * Hq);
            return;
        }
        RunDecode(pool, g, S);
        RunPrefill(pool, g, S);
    }

    private static void RunDecode(CpuThreadPool pool, Geo g, int sequences)
    {
        var job = _decode ??= new DecodeJob();
        job.G = g;
        job.Rows = DecodeMaxT * g.Hq;
        int count = 0, items = 0;
        for (int b = 0; b < sequences; b++) if (g.Count[b] is > 0 and <= DecodeMaxT) count++;
        if (count == 0) return;
        job.Seqs = Grow(job.Seqs, count); job.JMin = Grow(job.JMin, count); job.JMax = Grow(job.JMax, count);
        job.Chunks = Grow(job.Chunks, count); job.ItemBase = Grow(job.ItemBase, count);
        int i = 0;
        for (int b = 0; b < sequences; b++)
        {
            if (g.Count[b] is <= 0 or > DecodeMaxT) continue;
            job.Seqs[i] = b; job.JMin[i] = g.Lo(g.Start[b]); job.JMax[i] = g.Start[b] + g.Count[b] - 1;
            job.Chunks[i] = (job.JMax[i] - job.JMin[i] + Chunk) / Chunk;
            job.ItemBase[i] = items; items += job.Chunks[i];
            i++;
        }
        job.Count = count; job.Items = items;
        job.ItemSeq = Grow(job.ItemSeq, items); job.ItemChunk = Grow(job.ItemChunk, items);
        for (i = 0; i < count; i++)
            for (int c = 0; c < job.Chunks[i]; c++) { job.ItemSeq[job.ItemBase[i] + c] = i; job.ItemChunk[job.ItemBase[i] + c] = c; }
        int perSeq = (g.Cap + Chunk - 1) / Chunk + 1;
        job.Ensure(items, Math.Max(items, count * perSeq));
        pool.Run(job, items);
        job.Merge();
    }

    private static void RunPrefill(CpuThreadPool pool, Geo g, int sequences)
    {
        var job = _prefill ??= new PrefillJob();
        var pack = _pack ??= new PackKeysJob();
        int count = 0, ns = 0;
        for (int b = 0; b < sequences; b++) if (g.Count[b] > DecodeMaxT) count++;
        if (count == 0) return;
        job.Seqs = Grow(job.Seqs, count); job.KLo = Grow(job.KLo, count); job.QBlocks = Grow(job.QBlocks, count); job.ItemBase = Grow(job.ItemBase, count);
        pack.N = Grow(pack.N, count);
        job.QB = Math.Max(1, 32 / g.G);
        int i = 0, items = 0;
        for (int b = 0; b < sequences; b++)
        {
            if (g.Count[b] <= DecodeMaxT) continue;
            int klo = g.Lo(g.Start[b]), n = g.Start[b] + g.Count[b] - klo;
            job.Seqs[i] = b; job.KLo[i] = klo; pack.N[i] = n;
            ns = Math.Max(ns, (n + 31) / 32 * 32 + 32); // room for whole vectors past the last key
            job.QBlocks[i] = (g.Count[b] + job.QB - 1) / job.QB;
            job.ItemBase[i] = items; items += g.Hkv * job.QBlocks[i];
            i++;
        }
        job.Count = count;
        pack.Seqs = job.Seqs; pack.KLo = job.KLo;
        long need = (long)count * g.Hkv * g.Dk * ns;
        if (_kt is null || _kt.Length < need) _kt = GC.AllocateUninitializedArray<float>(checked((int)Math.Max(need, 1024)), pinned: true);
        fixed (float* kt = _kt)
        {
            pack.G = g; pack.Kt = kt; pack.NS = ns;
            pool.Run(pack, count * g.Hkv);
            job.G = g; job.Kt = kt; job.NS = ns;
            pool.Run(job, items);
        }
    }

    /// <summary>Scalar reference with the same contract (double accumulation, no threads).</summary>
    public static void Reference(Tensor q, Tensor k, Tensor? v, Tensor output, KvCache? cache, StepBatch batch, in AttentionParams prm)
    {
        Validate(q, k, v, output, cache, batch, prm);
        var p = prm;
        int Hq = q.Shape[1], Hkv = k.Shape[1], Dk = q.Shape[2], Dv = output.Shape[2];
        var pos = batch.TokenPositions; var seq = batch.TokenSequence;
        float* Q = (float*)q.Ptr, Kn = (float*)k.Ptr, Vn = v is null ? null : (float*)v.Ptr, O = (float*)output.Ptr;
        float* CK = cache is null ? null : (float*)cache.K.Ptr, CV = cache?.V is null ? null : (float*)cache.V.Ptr;
        int cap = cache?.Capacity ?? 0;
        for (int n = 0; n < batch.Tokens; n++)
            for (int h = 0; h < Hq; h++)
            {
                int kh = h / (Hq / Hkv), pp = pos[n], s = seq[n], slot = batch.Slot[s], st = batch.Start[s], off = batch.Offset[s];
                int lo = 0;
                if (p.Window > 0) lo = Math.Max(lo, pp - p.Window + 1);
                if (p.Chunk > 0) lo = Math.Max(lo, pp / p.Chunk * p.Chunk);
                float* KeyAt(int j) => j >= st ? Kn + ((long)(off + j - st) * Hkv + kh) * Dk : CK + (((long)slot * cap + (cache!.Ring ? j % cap : j)) * Hkv + kh) * Dk;
                float* ValAt(int j) => p.ValueIsKeyPrefix ? KeyAt(j)
                    : j >= st ? Vn + ((long)(off + j - st) * Hkv + kh) * Dv : CV + (((long)slot * cap + (cache!.Ring ? j % cap : j)) * Hkv + kh) * Dv;
                var sc = new double[pp - lo + 1];
                double max = double.NegativeInfinity;
                double temp = p.TemperatureLength > 0 && pp > p.TemperatureLength ? Math.Log2(pp) / Math.Log2(p.TemperatureLength) : 1;
                float* qr = Q + ((long)n * Hq + h) * Dk;
                for (int j = lo; j <= pp; j++)
                {
                    float* kr = KeyAt(j);
                    double d = 0;
                    for (int i = 0; i < Dk; i++) d += (double)qr[i] * kr[i];
                    d *= p.Scale;
                    if (p.Softcap > 0) d = p.Softcap * Math.Tanh(d / p.Softcap);
                    d *= temp;
                    sc[j - lo] = d; max = Math.Max(max, d);
                }
                double sink = p.Sinks is null ? double.NegativeInfinity : ((float*)p.Sinks.Ptr)[h];
                max = Math.Max(max, sink);
                double sum = p.Sinks is null ? 0 : Math.Exp(sink - max);
                for (int i = 0; i < sc.Length; i++) { sc[i] = Math.Exp(sc[i] - max); sum += sc[i]; }
                float* o = O + ((long)n * Hq + h) * Dv;
                for (int d = 0; d < Dv; d++)
                {
                    double acc = 0;
                    for (int j = lo; j <= pp; j++) acc += sc[j - lo] / sum * ValAt(j)[d];
                    o[d] = (float)acc;
                }
            }
    }
}
