using LlmArch.Blocks;
using LlmArch.Compute;
using LlmArch.Compute.Cpu;

namespace LlmArch.Tests;

/// <summary>The shared MoE block: routing rules on hand-made cases, the block against a naive per-token loop, ops parity.</summary>
public unsafe class MoeBlockTests
{
    private static (int[] Idx, float[] W) Route(RouterSpec s, float[] logits, float[]? bias = null)
    {
        int n = logits.Length / s.Experts;
        var idx = new int[n * s.TopK]; var w = new float[n * s.TopK];
        MoeRouting.Route(s, logits, bias ?? [], idx, w);
        return (idx, w);
    }

    [Fact]
    public void SoftmaxTopKRenormalized()
    {
        var s = new RouterSpec { Experts = 4, TopK = 2, NormalizeTopK = true };
        var (idx, w) = Route(s, [0f, 2f, 1f, -1f]);
        Assert.Equal([1, 2], idx);
        Assert.Equal(1 / (1 + MathF.Exp(-1)), w[0], 5);
        Assert.Equal(1f, w[0] + w[1], 5);
    }

    [Fact]
    public void SoftmaxTopKUnnormalizedWithSoftcap()
    {
        var s = new RouterSpec { Experts = 3, TopK = 2, LogitSoftcap = 2f };
        float[] l = [3f, 0f, -3f];
        var (idx, w) = Route(s, l);
        var c = l.Select(v => 2f * MathF.Tanh(v / 2f)).ToArray();
        float z = c.Sum(MathF.Exp);
        Assert.Equal([0, 1], idx);
        Assert.Equal(MathF.Exp(c[0]) / z, w[0], 5);
        Assert.Equal(MathF.Exp(c[1]) / z, w[1], 5);
    }

    [Fact]
    public void TopKSoftmaxOverSelectedLogits()
    {
        var s = new RouterSpec { Experts = 4, TopK = 2, Scoring = RouterScoring.TopKSoftmax };
        var (idx, w) = Route(s, [1f, 5f, 4f, 0f]);
        Assert.Equal([1, 2], idx);
        Assert.Equal(1 / (1 + MathF.Exp(-1)), w[0], 5);
    }

    [Fact]
    public void SigmoidGroupLimitedWithCorrectionBias()
    {
        // 8 experts in 4 groups of 2, keep 2 groups. The bias decides selection; weights use the unbiased sigmoid.
        var s = new RouterSpec
        {
            Experts = 8, TopK = 2, Scoring = RouterScoring.Sigmoid, Groups = 4, TopKGroups = 2,
            CorrectionBias = true, NormalizeTopK = true, RoutedScaling = 2.5f,
        };
        float[] l = [3f, -3f, -1f, 0f, 1f, 1f, 2.5f, -5f];
        float[] bias = [0f, 0f, 0f, 0f, 0f, 0f, 0f, 0f];
        // group sums of sigmoid: g0 = 1.0, g1 = .77, g2 = 1.46, g3 = .93 → groups 2 and 0; experts 0 (.95) and 4 (.73, before 5).
        var (idx, w) = Route(s, l, bias);
        Assert.Equal([0, 4], idx);
        float a = 1 / (1 + MathF.Exp(-3f)), b = 1 / (1 + MathF.Exp(-1f));
        Assert.Equal(2.5f * a / (a + b), w[0], 5);
        // A large bias on expert 7 lifts group 3 and selects expert 7, but its weight stays sigmoid(-5).
        bias[7] = 2f;
        (idx, w) = Route(s, l, bias);
        Assert.Contains(7, idx);
        int k7 = Array.IndexOf(idx, 7), other = 1 - k7;
        float s7 = 1 / (1 + MathF.Exp(5f)), so = 1 / (1 + MathF.Exp(-l[idx[other]]));
        Assert.Equal(2.5f * s7 / (s7 + so), w[k7], 5);
    }

    [Fact]
    public void MaskedGroupsScoreZeroNotMinusInfinity()
    {
        // All biased scores in the kept group are negative: the reference's masked_fill(0) lets a dropped expert win.
        var s = new RouterSpec { Experts = 4, TopK = 2, Scoring = RouterScoring.Sigmoid, Groups = 2, TopKGroups = 1, CorrectionBias = true };
        var (idx, _) = Route(s, [0f, 0f, -10f, -10f], [-0.6f, -0.7f, -2f, -2f]);
        Assert.Equal([2, 3], idx); // masked 0.0 beats the kept group's -0.1 and -0.2
    }

    [Fact]
    public void SpecValidationNamesKey()
    {
        var cfg = LlmArch.Checkpoints.ModelConfig.Parse("{}", "x/config.json");
        var e = Assert.Throws<ConfigException>(() => new RouterSpec { Experts = 4, TopK = 5 }.Validate(cfg, "num_local_experts"));
        Assert.Contains("num_experts_per_tok", e.Message);
    }

    private static Tensor Rand(Random r, params int[] shape)
    {
        var s = shape.Length == 2 ? new Shape(shape[0], shape[1]) : shape.Length == 3 ? new Shape(shape[0], shape[1], shape[2]) : new Shape(shape[0]);
        var v = new float[s.Count];
        for (int i = 0; i < v.Length; i++) v[i] = (float)(r.NextDouble() * 2 - 1) * 0.5f;
        return Tensor.FromFloats(v, s);
    }

    private static float[] MatVec(Tensor w, Tensor? bias, float[] x)
    {
        int O = w.Shape[0], K = w.Shape[1];
        var wf = w.ToFloatArray(); var bf = bias?.ToFloatArray();
        var y = new float[O];
        for (int o = 0; o < O; o++)
        {
            double acc = bf?[o] ?? 0;
            for (int k = 0; k < K; k++) acc += (double)wf[o * K + k] * x[k];
            y[o] = (float)acc;
        }
        return y;
    }

    public static IEnumerable<object[]> Variants() =>
    [
        ["softmax-norm", RouterScoring.Softmax, true, false, false, false, GluKind.SwiGlu],
        ["sigmoid-grouped-shared", RouterScoring.Sigmoid, true, true, true, false, GluKind.SwiGlu],
        ["topk-softmax-clamped-interleaved", RouterScoring.TopKSoftmax, false, false, false, false, GluKind.ClampedSwiGlu],
        ["sigmoid-input-scaled-gated-shared", RouterScoring.Sigmoid, false, false, true, true, GluKind.GeGluTanh],
    ];

    [Theory]
    [MemberData(nameof(Variants))]
    public void BlockMatchesNaivePerTokenLoop(string name, RouterScoring scoring, bool norm, bool grouped, bool shared, bool scaleInput, GluKind glu)
    {
        _ = name;
        var r = new Random(7);
        int C = 16, I = 8, E = 8, K = scaleInput ? 1 : 2, N = 11;
        var spec = new RouterSpec
        {
            Experts = E, TopK = K, Scoring = scoring, NormalizeTopK = norm, Groups = grouped ? 4 : 1, TopKGroups = 2,
            CorrectionBias = grouped, RoutedScaling = grouped ? 1.5f : 1f, ScaleInput = scaleInput,
            LogitSoftcap = scoring == RouterScoring.Softmax ? 3f : 0f,
        };
        var act = new ExpertActivation(glu, Limit: 0.3f, Alpha: 1.702f);
        bool fused = glu == GluKind.ClampedSwiGlu;
        var router = new Linear(Rand(r, E, C), fused ? Rand(r, E) : null);
        var cb = grouped ? Rand(r, E) : null;
        Tensor gu = Rand(r, E, 2 * I, C), gub = Rand(r, E, 2 * I), dn = Rand(r, E, C, I), dnb = Rand(r, E, C);
        Tensor g = Rand(r, E, I, C), u = Rand(r, E, I, C);
        var experts = fused ? ExpertSet.FromStacked(gu, gub, dn, dnb, act, interleaved: true) : ExpertSet.FromStacked(g, u, dn, act);
        var sh = shared ? new GatedMlp(new Linear(Rand(r, I, C), null), new Linear(Rand(r, I, C), null), new Linear(Rand(r, C, I), null), UnaryOp.Silu) : null;
        var shAct = ExpertActivation.SwiGlu;
        Linear? shGate = scaleInput ? new Linear(Rand(r, 1, C), null) : null;
        var moe = new Moe(spec, router, cb, experts, sh, shGate);

        var b = new CpuBackend();
        var x = Rand(r, 1, N, C);
        var xs = x.ToFloatArray();
        var got = new float[N * C];
        b.ResetScratch();
        b.Download(moe.Forward(b, b.View(x, new Shape(N, C))), got);

        float[] Expert(int e, float[] v)
        {
            float[] h = new float[I];
            if (fused)
            {
                var a = MatVec(gu.Index0(e), gub.Index0(e), v);
                for (int i = 0; i < I; i++) h[i] = MoeKernels.GluOne(a[2 * i], a[2 * i + 1], act);
                return MatVec(dn.Index0(e), dnb.Index0(e), h);
            }
            var ga = MatVec(g.Index0(e), null, v); var ua = MatVec(u.Index0(e), null, v);
            for (int i = 0; i < I; i++) h[i] = MoeKernels.GluOne(ga[i], ua[i], act);
            return MatVec(dn.Index0(e), null, h);
        }

        for (int n = 0; n < N; n++)
        {
            var v = xs.AsSpan(n * C, C).ToArray();
            var logits = MatVec(router.Weight, router.Bias, v);
            var (idx, w) = Route(spec, logits, cb?.ToFloatArray());
            var want = new float[C];
            for (int k = 0; k < K; k++)
            {
                var inp = scaleInput ? v.Select(q => q * w[k]).ToArray() : v;
                var o = Expert(idx[k], inp);
                for (int c = 0; c < C; c++) want[c] += (scaleInput ? 1f : w[k]) * o[c];
            }
            if (sh is not null)
            {
                var ga = MatVec(sh.Gate.Weight, null, v); var ua = MatVec(sh.Up.Weight, null, v);
                var h = new float[I];
                for (int i = 0; i < I; i++) h[i] = MoeKernels.GluOne(ga[i], ua[i], shAct);
                var so = MatVec(sh.Down.Weight, null, h);
                float gate = shGate is null ? 1f : 1f / (1f + MathF.Exp(-MatVec(shGate.Weight, null, v)[0]));
                for (int c = 0; c < C; c++) want[c] += gate * so[c];
            }
            for (int c = 0; c < C; c++) Assert.True(MathF.Abs(want[c] - got[n * C + c]) < 1e-5f, $"token {n} channel {c}: {got[n * C + c]} vs {want[c]}");
        }
    }

    [Theory]
    [InlineData(GluKind.SwiGlu, false)]
    [InlineData(GluKind.GeGluTanh, false)]
    [InlineData(GluKind.ClampedSwiGlu, false)]
    [InlineData(GluKind.SwiGlu, true)]
    [InlineData(GluKind.ClampedSwiGlu, true)]
    public void GluFusedMatchesReference(GluKind kind, bool interleaved)
    {
        var r = new Random(3);
        var b = new CpuBackend();
        foreach (int I in new[] { 0, 1, 7, 16, 33 })
        {
            int rows = 3;
            var v = Enumerable.Range(0, rows * 2 * I).Select(_ => (float)(r.NextDouble() * 20 - 10)).ToArray();
            if (v.Length > 2) { v[0] = float.NaN; v[1] = float.PositiveInfinity; }
            var gu = Tensor.FromFloats(v, new Shape(rows, 2 * I));
            var act = new ExpertActivation(kind);
            var y = new float[rows * I];
            b.ResetScratch();
            b.Download(b.Glu(gu, null, act, interleaved), y);
            var want = new float[rows * I];
            fixed (float* p = v, w = want)
                MoeKernels.GluReference(p, interleaved ? 2 : 1, interleaved ? p + 1 : p + I, interleaved ? 2 : 1, w, rows, I, 2 * I, act);
            for (int i = 0; i < want.Length; i++)
                Assert.True(want[i].Equals(y[i]) || MathF.Abs(want[i] - y[i]) <= 1e-5f * MathF.Max(1, MathF.Abs(want[i])), $"I={I} i={i}: {y[i]} vs {want[i]}");
        }
    }

    [Fact]
    public void Index0SlicesBlockScales()
    {
        // [2, 4, 4] FP8 with one scale per expert block: expert 1 dequantizes with scale 3.
        var data = Tensor.Zeros(DType.F8E4M3, new Shape(2, 4, 4), "w");
        data.AsBytes().Fill(0x38); // 1.0 in e4m3
        var scales = Tensor.FromFloats([2f, 3f], new Shape(2, 1, 1), "w_scale_inv");
        var t = new Tensor(DType.F8E4M3, data.Shape, data.Ptr, data, "w") { };
        typeof(Tensor).GetProperty("Scales")!.SetValue(t, scales);
        typeof(Tensor).GetProperty("ScaleBlock")!.SetValue(t, (128, 128));
        var e1 = t.Index0(1);
        Assert.Equal(new Shape(4, 4), e1.Shape);
        Assert.All(e1.ToFloatArray(), v => Assert.Equal(3f, v));
        Assert.All(t.Index0(0).ToFloatArray(), v => Assert.Equal(2f, v));
    }

    /// <summary>The routing computed by ops on the device equals the host reference decision, for every router kind.</summary>
    [Theory]
    [MemberData(nameof(Variants))]
    public void DeviceRoutingMatchesHostReference(string name, RouterScoring scoring, bool norm, bool grouped, bool shared, bool scaleInput, GluKind glu)
    {
        _ = name; _ = shared; _ = glu;
        var r = new Random(name.Length * 7919 + (int)scoring);
        int E = 16, K = scaleInput ? 1 : 4, N = 37;
        var spec = new RouterSpec
        {
            Experts = E, TopK = K, Scoring = scoring, NormalizeTopK = norm, Groups = grouped ? 4 : 1, TopKGroups = 2,
            CorrectionBias = grouped, RoutedScaling = grouped ? 2.5f : 1f, ScaleInput = scaleInput,
            LogitSoftcap = scoring == RouterScoring.Softmax ? 3f : 0f,
        };
        var logits = Enumerable.Range(0, N * E).Select(_ => (float)(r.NextDouble() * 8 - 4)).ToArray();
        var bias = Enumerable.Range(0, E).Select(_ => (float)(r.NextDouble() - 0.5)).ToArray();
        var wantIdx = new int[N * K]; var wantW = new float[N * K];
        MoeRouting.Route(spec, logits, grouped ? bias : default, wantIdx, wantW);
        foreach (var b in new IBackend[] { new CpuBackend(), new Compute.Conformance.ReferenceBackend() })
        {
            b.ResetScratch();
            var (ids, w) = Moe.Route(b, spec, b.View(Tensor.FromFloats(logits, new Shape(N, E)), new Shape(N, E)), grouped ? Tensor.FromFloats(bias, new Shape(E)) : null);
            var gotIdx = new int[N * K]; var gotW = new float[N * K];
            b.Download(ids, gotIdx); b.Download(w, gotW);
            Assert.Equal(wantIdx, gotIdx);
            for (int i = 0; i < gotW.Length; i++) Assert.True(MathF.Abs(gotW[i] - wantW[i]) < 1e-6f, $"{b.Name} weight {i}: {gotW[i]} vs {wantW[i]}");
        }
    }
}
