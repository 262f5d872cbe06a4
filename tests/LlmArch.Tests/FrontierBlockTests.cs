using LlmArch.Blocks;
using LlmArch.Checkpoints;
using LlmArch.Compute;
using LlmArch.Compute.Cpu;
using LlmArch.Models;

namespace LlmArch.Tests;

/// <summary>
/// The frontier blocks against plain scalar loops written here from the reference formulas (independent of the op
/// compositions): KDA's per-channel delta rule, the Mamba2 recurrence, lightning attention, the short convolution,
/// Sinkhorn hyper-connections, sqrt(softplus) routing and hash routing.
/// </summary>
public class FrontierBlockTests
{
    private static float[] Rand(Random r, int n, float scale = 1f) => Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1) * scale).ToArray();

    private static Tensor Up(IBackend b, float[] v, params int[] shape)
    {
        var t = b.Allocate(DType.F32, Shape.Of(shape.Select(x => (long)x).ToArray()), "t");
        b.Upload<float>(v, t);
        return t;
    }

    private static float[] Down(IBackend b, Tensor t)
    {
        var r = new float[t.Count];
        b.Download(t, r);
        return r;
    }

    private static void Close(float[] want, float[] got, double tol)
    {
        Assert.Equal(want.Length, got.Length);
        double d = 0;
        for (int i = 0; i < want.Length; i++) d = Math.Max(d, Math.Abs(want[i] - got[i]));
        Assert.True(d < tol, $"max diff {d}");
    }

    /// <summary>Two sequences in slots 1 and 0 of lengths 5 and 3 (continuing from earlier state in slot 0).</summary>
    private static StepBatch Batch(IBackend b)
    {
        var s = new StepBatch();
        s.Add(1, 0, new int[5]); s.Add(0, 2, new int[3]);
        b.Prepare(s);
        return s;
    }

    private static float[] L2(float[] x, int off, int d, float scale)
    {
        double ss = 0;
        for (int i = 0; i < d; i++) ss += x[off + i] * x[off + i];
        float inv = (float)(1 / Math.Sqrt(ss + 1e-6)) * scale;
        return Enumerable.Range(0, d).Select(i => x[off + i] * inv).ToArray();
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void KdaRuleMatchesScalarRecurrence(bool fused)
    {
        var b = new CpuBackend(fused: fused);
        var r = new Random(3);
        int N = 8, H = 2, Dk = 4, Dv = 3, slots = 2;
        var q = Rand(r, N * H * Dk); var k = Rand(r, N * H * Dk); var v = Rand(r, N * H * Dv);
        var g = Rand(r, N * H * Dk).Select(x => -Math.Abs(x)).ToArray(); var beta = Rand(r, N * H).Select(x => Math.Abs(x)).ToArray();
        var s0 = Rand(r, slots * H * Dk * Dv, 0.5f);
        var batch = Batch(b);
        var state = Up(b, s0, slots, H, Dk, Dv);
        var y = b.Fused<IFusedKda>() is { } f
            ? f.KdaRule(Up(b, q, N, H, Dk), Up(b, k, N, H, Dk), Up(b, v, N, H, Dv), Up(b, g, N, H, Dk), Up(b, beta, N, H), state, batch, 4)
            : KdaRule.Composed(b, Up(b, q, N, H, Dk), Up(b, k, N, H, Dk), Up(b, v, N, H, Dv), Up(b, g, N, H, Dk), Up(b, beta, N, H), state, batch);
        // Scalar: S = diag(e^g) S; S += k ⊗ β(v - Sᵀk); o = Sᵀq.
        var S = (float[])s0.Clone();
        var want = new float[N * H * Dv];
        for (int sq = 0; sq < 2; sq++)
            for (int t = 0; t < batch.Count[sq]; t++)
            {
                int n = batch.Offset[sq] + t, slot = batch.Slot[sq];
                for (int h = 0; h < H; h++)
                {
                    var qn = L2(q, (n * H + h) * Dk, Dk, 1f / MathF.Sqrt(Dk)); var kn = L2(k, (n * H + h) * Dk, Dk, 1f);
                    int sb = ((slot * H) + h) * Dk * Dv;
                    for (int i = 0; i < Dk; i++) for (int j = 0; j < Dv; j++) S[sb + i * Dv + j] *= MathF.Exp(g[(n * H + h) * Dk + i]);
                    for (int j = 0; j < Dv; j++)
                    {
                        float mem = 0; for (int i = 0; i < Dk; i++) mem += S[sb + i * Dv + j] * kn[i];
                        float delta = (v[(n * H + h) * Dv + j] - mem) * beta[n * H + h];
                        for (int i = 0; i < Dk; i++) S[sb + i * Dv + j] += kn[i] * delta;
                    }
                    for (int j = 0; j < Dv; j++) { float o = 0; for (int i = 0; i < Dk; i++) o += S[sb + i * Dv + j] * qn[i]; want[(n * H + h) * Dv + j] = o; }
                }
            }
        Close(want, Down(b, y), 1e-4);
        Close(S, Down(b, state), 1e-4);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    public void Mamba2ScanMatchesScalarRecurrence(int chunk)
    {
        var b = new CpuBackend();
        var r = new Random(5);
        int N = 8, H = 2, P = 3, Ns = 4, slots = 2;
        var x = Rand(r, N * H * P); var dt = Rand(r, N * H).Select(d => 0.1f + Math.Abs(d)).ToArray(); var a = new[] { -0.5f, -1.5f };
        var B = Rand(r, N * H * Ns); var C = Rand(r, N * H * Ns); var s0 = Rand(r, slots * H * P * Ns, 0.5f);
        var batch = Batch(b);
        var state = Up(b, s0, slots, H, P, Ns);
        var tables = new Mamba2Scan.Tables(new ShapeOnlyWeights("tables"), 4);   // shape-only sources keep the host tables
        var y = Mamba2Scan.Run(b, Up(b, x, N, H, P), Up(b, dt, N, H), Up(b, a, H), Up(b, B, N, H, Ns), Up(b, C, N, H, Ns), state, batch, chunk, tables);
        var S = (float[])s0.Clone(); var want = new float[N * H * P];
        for (int sq = 0; sq < 2; sq++)
            for (int t = 0; t < batch.Count[sq]; t++)
            {
                int n = batch.Offset[sq] + t, slot = batch.Slot[sq];
                for (int h = 0; h < H; h++)
                {
                    float d = dt[n * H + h], decay = MathF.Exp(d * a[h]);
                    for (int p = 0; p < P; p++)
                    {
                        float o = 0;
                        for (int i = 0; i < Ns; i++)
                        {
                            int si = (((slot * H) + h) * P + p) * Ns + i;
                            S[si] = S[si] * decay + d * x[(n * H + h) * P + p] * B[(n * H + h) * Ns + i];
                            o += S[si] * C[(n * H + h) * Ns + i];
                        }
                        want[(n * H + h) * P + p] = o;
                    }
                }
            }
        Close(want, Down(b, y), 1e-4);
        Close(S, Down(b, state), 1e-4);
    }

    [Fact]
    public void SinkhornCombIsDoublyStochasticAndMatchesScalarMath()
    {
        var b = new CpuBackend();
        var r = new Random(7);
        int N = 3, hc = 3, C = 4, mix = (2 + hc) * hc;
        var fn = Rand(r, mix * hc * C); var bas = Rand(r, mix); var scale = new[] { 0.7f, 1.3f, 0.9f };
        string dir = Path.Combine(Path.GetTempPath(), "llmarch-hc-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        SafeTensorsFile.Write(Path.Combine(dir, "model.safetensors"), [
            ("l.hc_attn_fn", Tensor.FromFloats(fn, new Shape(mix, hc * C))), ("l.hc_attn_base", Tensor.FromFloats(bas, new Shape(mix))),
            ("l.hc_attn_scale", Tensor.FromFloats(scale, new Shape(3)))]);
        var hcBlock = new HyperConnection(new CheckpointWeights(dir) { Backend = b }, "l.hc_attn", C, hc, 20, 1e-6f, 1e-6f);
        var xs = Rand(r, N * hc * C);
        var (collapsed, post, comb) = hcBlock.Pre(b, Up(b, xs, N, hc * C));
        var combV = Down(b, comb); var postV = Down(b, post); var colV = Down(b, collapsed);
        for (int n = 0; n < N; n++)
        {
            // Scalar: m = fn · rms(x); pre = σ(m·s0 + b) + ε; post = 2σ(m·s1 + b); comb = Sinkhorn(softmax(m·s2 + b) + ε).
            var row = xs.AsSpan(n * hc * C, hc * C).ToArray();
            double ms = 0; foreach (var v in row) ms += v * v;
            float inv = (float)(1 / Math.Sqrt(ms / row.Length + 1e-6));
            var m = Enumerable.Range(0, mix).Select(o => { double acc = 0; for (int i = 0; i < hc * C; i++) acc += fn[o * hc * C + i] * row[i] * inv; return (float)acc; }).ToArray();
            var pre = Enumerable.Range(0, hc).Select(i => 1 / (1 + MathF.Exp(-(m[i] * scale[0] + bas[i]))) + 1e-6f).ToArray();
            for (int i = 0; i < hc; i++) Assert.Equal(2 / (1 + MathF.Exp(-(m[hc + i] * scale[1] + bas[hc + i]))), postV[n * hc + i], 1e-4f);
            var cm = new double[hc, hc];
            for (int i = 0; i < hc; i++)
            {
                var logits = Enumerable.Range(0, hc).Select(j => m[2 * hc + i * hc + j] * scale[2] + bas[2 * hc + i * hc + j]).ToArray();
                double mx = logits.Max(), z = logits.Sum(l => Math.Exp(l - mx));
                for (int j = 0; j < hc; j++) cm[i, j] = Math.Exp(logits[j] - mx) / z + 1e-6;
            }
            void Cols() { for (int j = 0; j < hc; j++) { double s = 0; for (int i = 0; i < hc; i++) s += cm[i, j]; for (int i = 0; i < hc; i++) cm[i, j] /= s + 1e-6; } }
            void Rows() { for (int i = 0; i < hc; i++) { double s = 0; for (int j = 0; j < hc; j++) s += cm[i, j]; for (int j = 0; j < hc; j++) cm[i, j] /= s + 1e-6; } }
            Cols(); for (int it = 1; it < 20; it++) { Rows(); Cols(); }
            for (int i = 0; i < hc; i++)
            {
                double rs = 0, cs = 0;
                for (int j = 0; j < hc; j++) { Assert.Equal(cm[i, j], combV[(n * hc + i) * hc + j], 1e-4); rs += combV[(n * hc + i) * hc + j]; cs += combV[(n * hc + j) * hc + i]; }
                Assert.Equal(1.0, rs, 2e-3); Assert.Equal(1.0, cs, 2e-3);   // doubly stochastic
            }
            for (int c = 0; c < C; c++)
            {
                double want = 0; for (int i = 0; i < hc; i++) want += pre[i] * row[i * C + c];
                Assert.Equal(want, colV[n * C + c], 1e-4);
            }
        }
        // Post: stream j becomes post_j·y + Σ_i comb_ij·X_i.
        var y = Rand(r, N * C);
        var outV = Down(b, hcBlock.Post(b, Up(b, xs, N, hc * C), Up(b, y, N, C), post, comb));
        for (int n = 0; n < N; n++)
            for (int j = 0; j < hc; j++)
                for (int c = 0; c < C; c++)
                {
                    double want = postV[n * hc + j] * y[n * C + c];
                    for (int i = 0; i < hc; i++) want += combV[(n * hc + i) * hc + j] * xs[n * hc * C + i * C + c];
                    Assert.Equal(want, outV[n * hc * C + j * C + c], 1e-4);
                }
    }

    [Fact]
    public void SqrtSoftplusRoutingOnTheDeviceMatchesTheHostReference()
    {
        var b = new CpuBackend();
        var r = new Random(11);
        var spec = new RouterSpec { Experts = 8, TopK = 3, Scoring = RouterScoring.SqrtSoftplus, NormalizeTopK = true, CorrectionBias = true, RoutedScaling = 1.5f };
        int N = 6;
        var logits = Rand(r, N * 8, 4f); logits[5] = 30f; // past softplus's threshold
        var bias = Rand(r, 8, 0.3f);
        var ids = new int[N * 3]; var w = new float[N * 3];
        MoeRouting.Route(spec, logits, bias, ids, w);
        var (dIds, dW) = Moe.Route(b, spec, Up(b, logits, N, 8), Up(b, bias, 8));
        var gotIds = new int[N * 3]; b.Download<int>(dIds, gotIds);
        Assert.Equal(ids, gotIds);
        Close(w, Down(b, dW), 1e-5);
        // The weights are sqrt(softplus) of the chosen logits, renormalized and scaled.
        for (int n = 0; n < N; n++)
        {
            var s = Enumerable.Range(0, 3).Select(k => Math.Sqrt(Math.Log(1 + Math.Exp(Math.Min(logits[n * 8 + ids[n * 3 + k]], 700))))).ToArray();
            for (int k = 0; k < 3; k++) Assert.Equal(1.5 * s[k] / s.Sum(), w[n * 3 + k], 1e-4);
        }
    }

    [Fact]
    public void HashRoutedExpertsFollowTheTokenTable()
    {
        // The tiny DeepSeek-V4's first layer routes by token: outputs of tokens that share the table row and hidden
        // state share the experts, so swapping the table changes the logits of exactly the hash layer's choice.
        var m = FrontierModels.Load("deepseek_v4");
        var ids = new[] { 5, 6, 7, 8 };
        var a = AttentionFamilyCacheTests.Run(m, ids, 1, m.CreateCache(1, 4));
        string dir = FrontierModels.Dir("deepseek_v4");
        var edited = Path.Combine(Path.GetTempPath(), "llmarch-hash-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(edited);
        File.Copy(Path.Combine(dir, "config.json"), Path.Combine(edited, "config.json"));
        List<(string, Tensor)> tensors;
        using (var f = new SafeTensorsFile(Path.Combine(dir, "model.safetensors")))
            tensors = f.Tensors.Keys.Select(n => { var t = f.Get(n); var c = Tensor.Zeros(t.DType, t.Shape, n); t.AsBytes().CopyTo(c.AsBytes()); return (n, c); }).ToList();
        var table = tensors.First(t => t.Item1.EndsWith("tid2eid", StringComparison.Ordinal)).Item2.AsSpan<long>();
        for (int k = 0; k < 2; k++) (table[6 * 2 + k], table[7 * 2 + k]) = (table[7 * 2 + k], table[6 * 2 + k]); // tokens 6 and 7 swap experts
        SafeTensorsFile.Write(Path.Combine(edited, "model.safetensors"), tensors);
        var m2 = ModelLoader.Load(edited);
        var c2 = AttentionFamilyCacheTests.Run(m2, ids, 1, m2.CreateCache(1, 4));
        int V = m.VocabSize;
        Assert.True(a.AsSpan(0, V).SequenceEqual(c2.AsSpan(0, V)));             // token 5 routes as before
        Assert.False(a.AsSpan(V, V).SequenceEqual(c2.AsSpan(V, V)));            // token 6 now uses token 7's experts
        // An expert id outside [0, E) in the table is bad input.
        table[0] = 99;
        var bad = Path.Combine(Path.GetTempPath(), "llmarch-hash-bad-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(bad);
        File.Copy(Path.Combine(dir, "config.json"), Path.Combine(bad, "config.json"));
        SafeTensorsFile.Write(Path.Combine(bad, "model.safetensors"), tensors);
        var e = Assert.Throws<CheckpointFormatException>(() => ModelLoader.Load(bad));
        Assert.Contains("tid2eid", e.Message);
    }

    [Fact]
    public void ShortConvMatchesScalarConvolution()
    {
        var b = new CpuBackend();
        var r = new Random(13);
        int C = 4, K = 3, T = 6;
        var inW = Rand(r, 3 * C * C); var outW = Rand(r, C * C); var conv = Rand(r, C * K);
        string dir = Path.Combine(Path.GetTempPath(), "llmarch-conv-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        SafeTensorsFile.Write(Path.Combine(dir, "model.safetensors"), [
            ("c.in_proj.weight", Tensor.FromFloats(inW, new Shape(3 * C, C))), ("c.out_proj.weight", Tensor.FromFloats(outW, new Shape(C, C))),
            ("c.conv.weight", Tensor.FromFloats(conv, new Shape(C, 1, K)))]);
        var block = new ShortConv(new CheckpointWeights(dir) { Backend = b }, "c", C, K, false);
        var x = Rand(r, T * C);
        var batch = new StepBatch(); batch.Add(0, 0, new int[T]); b.Prepare(batch);
        var y = Down(b, block.Forward(b, Up(b, x, T, C), block.CreateState(b, 1), batch));
        var bx = new float[T * C]; var gate = new float[T * C];
        for (int t = 0; t < T; t++)
            for (int o = 0; o < C; o++)
            {
                float pb = 0, pc = 0, px = 0;
                for (int i = 0; i < C; i++) { pb += inW[o * C + i] * x[t * C + i]; pc += inW[(C + o) * C + i] * x[t * C + i]; px += inW[(2 * C + o) * C + i] * x[t * C + i]; }
                bx[t * C + o] = pb * px; gate[t * C + o] = pc;
            }
        var want = new float[T * C];
        for (int t = 0; t < T; t++)
        {
            var h = new float[C];
            for (int c = 0; c < C; c++)
            {
                float s = 0;
                for (int j = 0; j < K; j++) { int src = t - (K - 1) + j; if (src >= 0) s += conv[c * K + j] * bx[src * C + c]; }
                h[c] = gate[t * C + c] * s;
            }
            for (int o = 0; o < C; o++) { float s = 0; for (int i = 0; i < C; i++) s += outW[o * C + i] * h[i]; want[t * C + o] = s; }
        }
        Close(want, y, 1e-4);
    }

    /// <summary>The vectorized KDA kernel against its scalar reference at sizes that are not multiples of the vector width.</summary>
    [Theory]
    [InlineData(3, 5, 7)]
    [InlineData(2, 16, 37)]
    [InlineData(1, 128, 128)]
    public unsafe void KdaKernelMatchesReference(int H, int Dk, int Dv)
    {
        var r = new Random(Dk * 31 + Dv);
        int T = 9;
        var q = Rand(r, T * H * Dk); var k = Rand(r, T * H * Dk); var v = Rand(r, T * H * Dv);
        var g = Rand(r, T * H * Dk).Select(x => -Math.Abs(x)).ToArray(); var beta = Rand(r, T * H).Select(x => Math.Abs(x)).ToArray();
        var s0 = Rand(r, H * Dk * Dv, 0.5f);
        var (sFast, sRef) = ((float[])s0.Clone(), (float[])s0.Clone());
        var (yFast, yRef) = (new float[T * H * Dv], new float[T * H * Dv]);
        var d = new KdaKernels.Dims(H, Dk, Dv);
        fixed (float* pq = q, pk = k, pv = v, pg = g, pb = beta, sf = sFast, sr = sRef, yf = yFast, yr = yRef)
            for (int h = 0; h < H; h++)
            {
                KdaKernels.Recurrent(pq, pk, pv, pg, pb, sf + (long)h * Dk * Dv, yf, 0, T, h, d);
                KdaKernels.RecurrentReference(pq, pk, pv, pg, pb, sr + (long)h * Dk * Dv, yr, 0, T, h, d);
            }
        Close(yRef, yFast, 1e-4);
        Close(sRef, sFast, 1e-4);
    }
}
