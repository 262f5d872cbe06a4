using System.Runtime.Intrinsics;

namespace LlmArch.Compute.Cpu;

/// <summary>
/// Causal scaled-dot-product attention of a ragged step over the KV cache plus the step's own keys, for every variant
/// the models need: GQA/MQA/MHA, sliding window, chunked (chunk-local) attention, learned sinks, logit softcap, Grok's
/// length temperature, values as a key prefix (MLA). q <c>[N, Hq, Dk]</c>, new k <c>[N, Hkv, Dk]</c>, new v
/// <c>[N, Hkv, Dv]</c>, out <c>[N, Hq, Dv]</c>. A token of sequence s at position p reads positions before
/// Start[s] from s's cache slot (slot row <c>pos % capacity</c> when it rotates) and positions from Start[s] on from
/// the step's rows. Work is split over (token, head) items.
/// </summary>
public static unsafe class AttentionKernel
{
    private sealed class Job : IParallelWork
    {
        public float* Q, K, V, Out, CK, CV, Sinks;
        public int* Pos, Seq, Table;
        public int Hq, Hkv, Dk, Dv, Cap, MaxEnd;
        public bool Ring, VFromK;
        public AttentionParams P;
        [ThreadStatic] private static float[]? _scores;

        public void Execute(int start, int end)
        {
            // Grown geometrically: a decode step needs one more slot each time, and must not allocate each time.
            var sc = _scores is { } s && s.Length >= MaxEnd ? s : (_scores = new float[Math.Max(MaxEnd * 2, 1024)]);
            fixed (float* scores = sc)
                for (int item = start; item < end; item++) Row(item, scores);
        }

        private void Row(int item, float* scores)
        {
            int h = item % Hq, n = item / Hq;
            int kh = h / (Hq / Hkv);
            int p = Pos[n], s = Seq[n];
            int slot = Table[4 * s], seqStart = Table[4 * s + 1], offset = Table[4 * s + 3];
            int lo = 0;
            if (P.Window > 0) lo = Math.Max(lo, p - P.Window + 1);
            if (P.Chunk > 0) lo = Math.Max(lo, p / P.Chunk * P.Chunk);
            float* q = Q + ((long)n * Hq + h) * Dk;
            int count = p - lo + 1;
            float max = float.NegativeInfinity;
            float temp = P.TemperatureLength > 0 && p > P.TemperatureLength ? MathF.Log2(p) * (1f / MathF.Log2(P.TemperatureLength)) : 1f;
            for (int j = lo; j <= p; j++)
            {
                float* k = KeyRow(j, kh, slot, seqStart, offset);
                float sc = Elementwise.Dot(q, k, Dk) * P.Scale;
                if (P.Softcap > 0) sc = P.Softcap * MathF.Tanh(sc / P.Softcap);
                sc *= temp;
                scores[j - lo] = sc;
                if (sc > max) max = sc;
            }
            float sink = Sinks is null ? float.NegativeInfinity : Sinks[h];
            if (sink > max) max = sink;
            float sum = Sinks is null ? 0f : MathF.Exp(sink - max);
            for (int i = 0; i < count; i++) { float e = MathF.Exp(scores[i] - max); scores[i] = e; sum += e; }
            float inv = 1f / sum;
            float* o = Out + ((long)n * Hq + h) * Dv;
            new Span<float>(o, Dv).Clear();
            for (int j = lo; j <= p; j++)
            {
                float w = scores[j - lo] * inv;
                float* v = ValueRow(j, kh, slot, seqStart, offset);
                int d = 0;
                if (Vector512.IsHardwareAccelerated)
                {
                    var vw = Vector512.Create(w);
                    for (; d + 16 <= Dv; d += 16) Vector512.FusedMultiplyAdd(vw, Vector512.Load(v + d), Vector512.Load(o + d)).Store(o + d);
                }
                else if (Vector256.IsHardwareAccelerated)
                {
                    var vw = Vector256.Create(w);
                    for (; d + 8 <= Dv; d += 8) Vector256.FusedMultiplyAdd(vw, Vector256.Load(v + d), Vector256.Load(o + d)).Store(o + d);
                }
                for (; d < Dv; d++) o[d] += w * v[d];
            }
        }

        private float* KeyRow(int j, int kh, int slot, int seqStart, int offset)
        {
            if (j >= seqStart) return K + ((long)(offset + j - seqStart) * Hkv + kh) * Dk;
            int row = Ring ? j % Cap : j;
            return CK + (((long)slot * Cap + row) * Hkv + kh) * Dk;
        }

        private float* ValueRow(int j, int kh, int slot, int seqStart, int offset)
        {
            if (VFromK) return KeyRow(j, kh, slot, seqStart, offset);
            if (j >= seqStart) return V + ((long)(offset + j - seqStart) * Hkv + kh) * Dv;
            int row = Ring ? j % Cap : j;
            return CV + (((long)slot * Cap + row) * Hkv + kh) * Dv;
        }
    }

    [ThreadStatic] private static Job? _job;

    /// <summary>Checks the operands against the batch and the cache (shared by the fast kernel and the reference).</summary>
    public static void Validate(Tensor q, Tensor k, Tensor? v, Tensor output, KvCache? cache, StepBatch batch, in AttentionParams p)
    {
        int N = q.Shape[0], Hq = q.Shape[1], Hkv = k.Shape[1];
        if (q.Shape.Rank != 3 || k.Shape.Rank != 3 || k.Shape[0] != N || k.Shape[2] != q.Shape[2] || N != batch.Tokens)
            throw new ArgumentException($"attention: q {q.Shape}, k {k.Shape} for {batch.Tokens} tokens");
        if (Hq % Hkv != 0) throw new ArgumentException($"{Hq} query heads are not a multiple of {Hkv} key/value heads");
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

    public static void Run(CpuThreadPool pool, Tensor q, Tensor k, Tensor? v, Tensor output, KvCache? cache, StepBatch batch, in AttentionParams p)
    {
        Validate(q, k, v, output, cache, batch, p);
        int N = q.Shape[0], Hq = q.Shape[1];
        var job = _job ??= new Job();
        job.Q = (float*)q.Ptr; job.K = (float*)k.Ptr; job.V = v is null ? null : (float*)v.Ptr; job.Out = (float*)output.Ptr;
        job.CK = cache is null ? null : (float*)cache.K.Ptr; job.CV = cache?.V is null ? null : (float*)cache.V.Ptr;
        job.Sinks = p.Sinks is null ? null : (float*)p.Sinks.Ptr;
        job.Pos = (int*)batch.Positions!.Ptr; job.Seq = (int*)batch.TokenSequences!.Ptr; job.Table = (int*)batch.SequenceTable!.Ptr;
        job.Hq = Hq; job.Hkv = k.Shape[1]; job.Dk = q.Shape[2]; job.Dv = output.Shape[2]; job.MaxEnd = batch.MaxEnd;
        job.Cap = cache?.Capacity ?? 0; job.Ring = cache?.Ring ?? false; job.VFromK = p.ValueIsKeyPrefix; job.P = p;
        pool.Run(job, N * Hq);
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
