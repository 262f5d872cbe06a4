using LlmArch.Compute;
using LlmArch.Compute.Cpu;

namespace LlmArch.Tests;

/// <summary>Every fast CPU kernel against its scalar reference: all lengths (0, odd tails, SIMD multiples), NaN/Inf.</summary>
public unsafe class KernelParityTests
{
    private static readonly CpuThreadPool Pool2 = new(2);

    private static float[] Rand(Random r, long n, float scale = 1f)
    {
        var a = new float[n];
        for (long i = 0; i < n; i++) a[i] = ((float)r.NextDouble() * 2 - 1) * scale;
        return a;
    }

    private static Tensor Weight(DType dtype, int O, int K, Random r)
    {
        var f = Rand(r, (long)O * K, 0.5f);
        switch (dtype)
        {
            case DType.F32: return Tensor.FromFloats(f, new Shape(O, K));
            case DType.BF16:
            {
                var t = Tensor.Zeros(DType.BF16, new Shape(O, K));
                var s = t.AsSpan<ushort>();
                for (int i = 0; i < f.Length; i++) s[i] = LlmArch.Compute.Cpu.Convert.F32ToBF16(f[i]);
                return t;
            }
            case DType.F16:
            {
                var t = Tensor.Zeros(DType.F16, new Shape(O, K));
                var s = t.AsSpan<Half>();
                for (int i = 0; i < f.Length; i++) s[i] = (Half)f[i];
                return t;
            }
            case DType.F8E4M3:
            {
                var t = Tensor.Zeros(DType.F8E4M3, new Shape(O, K));
                var s = t.AsBytes();
                for (int i = 0; i < s.Length; i++) { byte b = (byte)r.Next(256); s[i] = (b & 0x7F) == 0x7F ? (byte)0x38 : b; }
                int br = (O + 127) / 128, bc = (K + 127) / 128;
                return BlockScales.Attach(t, Tensor.FromFloats(Rand(r, br * bc, 0.1f), new Shape(br, bc)), 128, 128);
            }
            case DType.MXFP4:
            {
                var t = Tensor.Zeros(DType.MXFP4, new Shape(O, K));
                r.NextBytes(t.AsBytes());
                var sc = Tensor.Zeros(DType.U8, new Shape(O, (K + 31) / 32));
                var sb = sc.AsBytes();
                for (int i = 0; i < sb.Length; i++) sb[i] = (byte)(120 + r.Next(8));
                return BlockScales.Attach(t, sc, 1, 32);
            }
            case DType.Q8_0: case DType.Q4_0: case DType.Q4_K: case DType.Q5_K: case DType.Q6_K:
                return WeightQuantizer.Quantize(Tensor.FromFloats(f, new Shape(O, K)), dtype);
        }
        throw new ArgumentException(dtype.ToString());
    }

    private static readonly (int N, int K, int O)[] PlainShapes =
        [(1, 0, 3), (0, 32, 5), (1, 1, 1), (1, 31, 7), (1, 32, 5), (1, 33, 9), (3, 64, 17), (4, 96, 16),
         (5, 160, 33), (9, 1024, 21), (17, 64, 70), (1, 3072, 37), (20, 256, 4), (13, 520, 45)];
    private static readonly (int N, int K, int O)[] Block32Shapes = [(1, 32, 5), (3, 64, 17), (5, 160, 33), (6, 96, 16), (9, 1024, 21), (1, 3072, 37), (20, 256, 4), (13, 544, 45)];
    private static readonly (int N, int K, int O)[] Block256Shapes = [(1, 256, 5), (2, 512, 17), (5, 256, 33), (6, 768, 9), (9, 1024, 21), (1, 3072, 37), (25, 256, 40)];

    /// <summary>Every dtype x shape x instruction-set path this CPU supports (AVX-512 cases are reported by <see cref="Avx512PathsRunHere"/>).</summary>
    public static IEnumerable<object[]> MatMulCases()
    {
        foreach (var isa in CpuIsa.Testable())
            foreach (var d in new[] { DType.F32, DType.BF16, DType.F16, DType.F8E4M3, DType.MXFP4, DType.Q8_0, DType.Q4_0, DType.Q4_K, DType.Q5_K, DType.Q6_K })
            {
                var shapes = DTypes.BlockElements(d) switch { 32 => Block32Shapes, 256 => Block256Shapes, _ => PlainShapes };
                foreach (var (n, k, o) in shapes)
                {
                    if (d == DType.MXFP4 && k % 2 != 0) continue; // two values per byte
                    yield return [isa, d, n, k, o];
                }
            }
    }

    [SkippableFact]
    public void Avx512PathsRunHere()
    {
        if (!CpuIsa.Supports(Isa.Avx512)) throw new SkipTestException($"this CPU has no AVX-512 (best path: {CpuIsa.Name(CpuIsa.Detected)}): the avx512 kernel parity cases are not generated");
        Assert.Contains(Isa.Avx512, CpuIsa.Testable());
    }

    [SkippableFact]
    public void AvxVnniPathsRunHere()
    {
        if (!CpuIsa.Supports(Isa.Avx2Vnni)) throw new SkipTestException("this CPU has no AVX-VNNI: the avx2-vnni kernel parity cases are not generated");
        Assert.Contains(Isa.Avx2Vnni, CpuIsa.Testable());
    }

    /// <summary>
    /// Each path against its reference: plain dtypes and the prefill GEMM (dequantized weights, F32 activations) against
    /// <see cref="MatMul.Reference"/>; the llama.cpp block types on the decode path (activations quantized to 8 bits)
    /// against <see cref="MatMul.QuantizedReference"/>, which does the same integer block dots in scalar code. Sum of
    /// |w x| bounds the rounding of any summation order.
    /// </summary>
    [Theory]
    [MemberData(nameof(MatMulCases))]
    public void MatMulMatchesReference(Isa isa, DType dtype, int N, int K, int O)
    {
        var r = new Random(N * 1000 + K * 7 + O);
        var w = Weight(dtype, O, K, r);
        var x = Rand(r, (long)N * K);
        var bias = Rand(r, O);
        var got = new float[Math.Max(1, N * O)]; var want = new float[Math.Max(1, N * O)];
        bool quantizedPath = DTypes.IsGgmlBlock(dtype) && (isa == Isa.Scalar || N < MatMul.GemmMinTokens(dtype));
        fixed (float* xp = x, bp = bias, g = got, e = want)
        {
            MatMul.Run(Pool2, xp, N, K, w, bp, g, isa);
            if (quantizedPath) MatMul.QuantizedReference(xp, N, K, w, bp, e);
            else MatMul.Reference(xp, N, K, w, bp, e);
        }
        var wf = w.ToFloatArray();
        for (int n = 0; n < N; n++)
            for (int o = 0; o < O; o++)
            {
                double mag = Math.Abs(bias[o]);
                for (int k = 0; k < K; k++) mag += Math.Abs(wf[(long)o * K + k] * x[(long)n * K + k]);
                Assert.True(Math.Abs(got[n * O + o] - want[n * O + o]) <= 2e-5 * mag + 1e-6,
                    $"{isa} {dtype} N={N} K={K} O={O} at ({n},{o}): {got[n * O + o]} vs {want[n * O + o]}");
            }
        // The quantized decode path stays within the activation quantization error of the exact product.
        if (quantizedPath && N > 0)
        {
            var exact = new float[N * O];
            fixed (float* xp = x, bp = bias, e = exact) MatMul.Reference(xp, N, K, w, bp, e);
            for (int n = 0; n < N; n++)
                for (int o = 0; o < O; o++)
                {
                    double mag = 0;
                    for (int k = 0; k < K; k++) mag += Math.Abs(wf[(long)o * K + k]);
                    // |x| <= 1: each activation is off by at most half a step of max|x| / 127 (plus the f16 scale).
                    Assert.True(Math.Abs(got[n * O + o] - exact[n * O + o]) <= mag * 0.6 / 127 + 1e-5, $"{isa} {dtype} ({n},{o}) vs exact");
                }
        }
    }

    public static IEnumerable<object[]> NaNCases() =>
        CpuIsa.Testable().SelectMany(isa => new[] { DType.F32, DType.BF16, DType.Q8_0, DType.Q4_0, DType.Q4_K }
            .SelectMany(d => new[] { 2, 9 }.Select(n => new object[] { isa, d, n })));

    [Theory]
    [MemberData(nameof(NaNCases))]
    public void MatMulPropagatesNaNAndInf(Isa isa, DType dtype, int N)
    {
        var r = new Random(11);
        int K = 256, O = 9;
        var w = Weight(dtype, O, K, r);
        var x = Rand(r, N * K);
        int infRow = N - 1;
        x[1 * K + 3] = float.NaN; x[infRow * K + 10] = float.PositiveInfinity;
        var got = new float[N * O]; var want = new float[N * O];
        fixed (float* xp = x, g = got, e = want)
        {
            MatMul.Run(Pool2, xp, N, K, w, null, g, isa);
            MatMul.Reference(xp, N, K, w, null, e);
        }
        bool quantizedActs = DTypes.IsGgmlBlock(dtype) && (isa == Isa.Scalar || N < MatMul.GemmMinTokens(dtype));
        for (int o = 0; o < O; o++)
        {
            Assert.True(float.IsNaN(got[1 * O + o]), $"row 1 col {o} should be NaN");
            // An infinite activation makes its 8-bit block scale infinite (0 * inf in the block dot): NaN, never a finite value.
            if (quantizedActs) Assert.False(float.IsFinite(got[infRow * O + o]));
            else Assert.Equal(want[infRow * O + o], got[infRow * O + o]);
            Assert.False(float.IsNaN(got[0 * O + o]));
        }
    }

    public static IEnumerable<object[]> Dims() =>
        new[] { 0, 1, 7, 15, 16, 17, 33, 128, 1000 }.SelectMany(d => new[] { 0, 1, 3 }.Select(rows => new object[] { rows, d }));

    [Theory]
    [MemberData(nameof(Dims))]
    public void RmsNormMatchesReference(int rows, int dim)
    {
        var r = new Random(rows * 31 + dim);
        var x = Rand(r, rows * dim, 3f); var w = Rand(r, dim);
        foreach (float offset in new[] { 0f, 1f })
            foreach (bool withW in new[] { true, false })
            {
                var a = new float[Math.Max(1, rows * dim)]; var b = new float[Math.Max(1, rows * dim)];
                fixed (float* xp = x, wp = w, ap = a, bp = b)
                {
                    Elementwise.RmsNorm(xp, withW ? wp : null, ap, rows, dim, 1e-6f, offset);
                    Elementwise.RmsNormReference(xp, withW ? wp : null, bp, rows, dim, 1e-6f, offset);
                }
                AssertClose(b, a, 1e-5);
            }
    }

    [Theory]
    [MemberData(nameof(Dims))]
    public void LayerNormMatchesReference(int rows, int dim)
    {
        var r = new Random(rows * 17 + dim);
        var x = Rand(r, rows * dim, 3f); var w = Rand(r, dim); var bias = Rand(r, dim);
        var a = new float[Math.Max(1, rows * dim)]; var b = new float[Math.Max(1, rows * dim)];
        fixed (float* xp = x, wp = w, bp = bias, ap = a, ep = b)
        {
            Elementwise.LayerNorm(xp, wp, bp, ap, rows, dim, 1e-5f);
            Elementwise.LayerNormReference(xp, wp, bp, ep, rows, dim, 1e-5f);
        }
        AssertClose(b, a, 1e-4);
    }

    [Fact]
    public void NormsPropagateNaN()
    {
        var x = new float[] { 1, 2, float.NaN, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17 };
        var y = new float[x.Length];
        fixed (float* xp = x, yp = y) Elementwise.RmsNorm(xp, null, yp, 1, x.Length, 1e-6f, 0);
        Assert.All(y, v => Assert.True(float.IsNaN(v)));
    }

    public static IEnumerable<object[]> ActivationCases() =>
        Enum.GetValues<Activation>().SelectMany(a => new[] { 0, 1, 15, 16, 17, 100 }.Select(n => new object[] { a, n }));

    [Theory]
    [MemberData(nameof(ActivationCases))]
    public void ActivationsMatchReference(Activation act, int n)
    {
        var r = new Random(n + (int)act);
        var x = Rand(r, n + 4, 8f);
        if (n >= 4) { x[0] = float.NaN; x[1] = float.PositiveInfinity; x[2] = float.NegativeInfinity; x[3] = 0f; }
        var up = Rand(r, n + 4);
        var a = new float[n + 4]; var b = new float[n + 4];
        fixed (float* xp = x, upp = up, ap = a, bp = b)
        {
            Elementwise.Activate(xp, ap, n, act);
            Elementwise.ActivateReference(xp, bp, n, act);
            AssertClose(b.AsSpan(0, n).ToArray(), a.AsSpan(0, n).ToArray(), 1e-5);
            Elementwise.Gated(xp, upp, ap, n, act);
            Elementwise.GatedReference(xp, upp, bp, n, act);
            AssertClose(b.AsSpan(0, n).ToArray(), a.AsSpan(0, n).ToArray(), 1e-5);
        }
    }

    [Theory]
    [InlineData(false, 64, 64)]
    [InlineData(true, 64, 64)]
    [InlineData(false, 128, 32)] // partial rotary
    [InlineData(true, 10, 10)]
    public void RopeMatchesNaiveRotation(bool interleaved, int D, int rotary)
    {
        var r = new Random(D + rotary);
        int B = 2, T = 3, H = 3, start = 5;
        var inv = Enumerable.Range(0, rotary / 2).Select(i => (float)Math.Pow(10000, -2.0 * i / rotary)).ToArray();
        var table = new RopeTable(inv, 1f);
        var be = new CpuBackend();
        table.Ensure(be, start + T);
        var x = Rand(r, B * T * H * D);
        var yt = Tensor.FromFloats(x, new Shape(B * T, H, D));
        be.Rope(yt, TestBatches.Uniform(be, B, T, start), table, interleaved);
        var y = yt.AsFloats().ToArray();
        int half = rotary / 2;
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                for (int h = 0; h < H; h++)
                {
                    int o = ((b * T + t) * H + h) * D;
                    for (int i = 0; i < half; i++)
                    {
                        double ang = (start + t) * (double)inv[i];
                        int i0 = interleaved ? o + 2 * i : o + i, i1 = interleaved ? o + 2 * i + 1 : o + i + half;
                        double e0 = x[i0] * Math.Cos(ang) - x[i1] * Math.Sin(ang), e1 = x[i1] * Math.Cos(ang) + x[i0] * Math.Sin(ang);
                        Assert.True(Math.Abs(y[i0] - e0) < 1e-4 && Math.Abs(y[i1] - e1) < 1e-4, $"pair {i} of ({b},{t},{h})");
                    }
                    for (int d = rotary; d < D; d++) Assert.Equal(x[o + d], y[o + d]);
                }
    }

    public static IEnumerable<object[]> AttentionCases() => new[]
    {
        new object[] { 4, 2, 16, 5, 0, 0, 0, 0f, false },  // GQA prefill
        new object[] { 4, 4, 17, 3, 6, 0, 0, 0f, false },  // MHA with cache, odd head dim
        new object[] { 6, 2, 32, 1, 9, 0, 0, 0f, false },  // decode step
        new object[] { 2, 1, 8, 7, 4, 3, 0, 0f, false },   // MQA sliding window
        new object[] { 2, 2, 8, 6, 5, 0, 4, 0f, false },   // chunked
        new object[] { 2, 2, 8, 4, 2, 0, 0, 5f, true },    // softcap + sinks
        new object[] { 2, 1, 0, 3, 0, 0, 0, 0f, false },   // zero head dim
    };

    [Theory]
    [MemberData(nameof(AttentionCases))]
    public void AttentionMatchesNaiveSoftmax(int Hq, int Hkv, int D, int T, int start, int window, int chunk, float softcap, bool sinks)
    {
        var r = new Random(Hq * 100 + D * 10 + T + start);
        int B = 2, total = start + T;
        var kAll = Rand(r, B * total * Hkv * D); var vAll = Rand(r, B * total * Hkv * D);
        var q = Rand(r, B * T * Hq * D);
        var sinkVals = Rand(r, Hq);
        var be = new CpuBackend(Pool2);
        var cache = new KvCache(be, B, Math.Max(total, 1), Hkv, Math.Max(D, 1), Math.Max(D, 1));
        var cf = cache.K.AsFloats(); var cv = cache.V!.AsFloats();
        for (int b = 0; b < B; b++)
            for (int p = 0; p < start; p++)
                for (int i = 0; i < Hkv * D; i++)
                {
                    cf[(b * total + p) * Hkv * D + i] = kAll[(b * total + p) * Hkv * D + i];
                    cv[(b * total + p) * Hkv * D + i] = vAll[(b * total + p) * Hkv * D + i];
                }
        float[] New(float[] all)
        {
            var n = new float[B * T * Hkv * D];
            for (int b = 0; b < B; b++)
                for (int t = 0; t < T; t++)
                    Array.Copy(all, (b * total + start + t) * Hkv * D, n, (b * T + t) * Hkv * D, Hkv * D);
            return n;
        }
        var qt = Tensor.FromFloats(q, new Shape(B * T, Hq, D));
        var kt = Tensor.FromFloats(New(kAll), new Shape(B * T, Hkv, D));
        var vt = Tensor.FromFloats(New(vAll), new Shape(B * T, Hkv, D));
        var outT = Tensor.Zeros(DType.F32, new Shape(B * T, Hq, D));
        float scale = 1f / MathF.Sqrt(Math.Max(D, 1));
        var p0 = new AttentionParams { Scale = scale, Window = window, Chunk = chunk, Softcap = softcap,
            Sinks = sinks ? Tensor.FromFloats(sinkVals, new Shape(Hq)) : null };
        if (D == 0) return; // a zero head dim has no cache to allocate; nothing to attend
        AttentionKernel.Run(Pool2, qt, kt, vt, outT, cache, TestBatches.Uniform(be, B, T, start), p0);
        var got = outT.AsFloats();
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                for (int h = 0; h < Hq; h++)
                {
                    int pos = start + t, kh = h / (Hq / Hkv);
                    var s = new List<(int j, double v)>();
                    for (int j = 0; j <= pos; j++)
                    {
                        if (window > 0 && j <= pos - window) continue;
                        if (chunk > 0 && j / chunk != pos / chunk) continue;
                        double dot = 0;
                        for (int d = 0; d < D; d++) dot += q[((b * T + t) * Hq + h) * D + d] * kAll[((b * total + j) * Hkv + kh) * D + d];
                        dot *= scale;
                        if (softcap > 0) dot = softcap * Math.Tanh(dot / softcap);
                        s.Add((j, dot));
                    }
                    double max = s.Max(e => e.v);
                    if (sinks) max = Math.Max(max, sinkVals[h]);
                    double sum = s.Sum(e => Math.Exp(e.v - max)) + (sinks ? Math.Exp(sinkVals[h] - max) : 0);
                    for (int d = 0; d < D; d++)
                    {
                        double o = s.Sum(e => Math.Exp(e.v - max) / sum * vAll[((b * total + e.j) * Hkv + kh) * D + d]);
                        Assert.True(Math.Abs(got[((b * T + t) * Hq + h) * D + d] - o) < 1e-5, $"({b},{t},{h},{d}): {got[((b * T + t) * Hq + h) * D + d]} vs {o}");
                    }
                }
    }

    [Fact]
    public void ThreadPoolRunsEveryIndexOnceAndSurvivesErrors()
    {
        using var pool = new CpuThreadPool(3);
        foreach (int count in new[] { 0, 1, 2, 7, 64, 1001 })
            for (int rep = 0; rep < 50; rep++)
            {
                var w = new CountWork(count);
                pool.Run(w, count);
                Assert.All(w.Hits, h => Assert.Equal(1, h));
            }
        Assert.Throws<AggregateException>(() => pool.Run(new ThrowWork(), 64));
        var after = new CountWork(100);
        pool.Run(after, 100);
        Assert.All(after.Hits, h => Assert.Equal(1, h));
    }

    private sealed class CountWork(int n) : IParallelWork
    {
        public readonly int[] Hits = new int[n];
        public void Execute(int start, int end) { for (int i = start; i < end; i++) Interlocked.Increment(ref Hits[i]); }
    }

    private sealed class ThrowWork : IParallelWork
    {
        public void Execute(int start, int end) { if (start >= 32) throw new InvalidOperationException("boom"); }
    }

    private static void AssertClose(float[] want, float[] got, double rel)
    {
        Assert.Equal(want.Length, got.Length);
        for (int i = 0; i < want.Length; i++)
        {
            if (float.IsNaN(want[i])) { Assert.True(float.IsNaN(got[i]), $"[{i}] {got[i]} should be NaN"); continue; }
            if (float.IsInfinity(want[i])) { Assert.Equal(want[i], got[i]); continue; }
            Assert.True(Math.Abs(want[i] - got[i]) <= rel * (Math.Abs(want[i]) + 1), $"[{i}] {got[i]} vs {want[i]}");
        }
    }
}
