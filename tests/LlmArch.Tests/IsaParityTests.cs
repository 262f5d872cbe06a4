using LlmArch.Compute;
using LlmArch.Compute.Cpu;

namespace LlmArch.Tests;

/// <summary>
/// Every SIMD path this CPU supports (scalar, AVX2, AVX2 + VNNI, AVX-512; forced per call, as LLMARCH_ISA forces it for
/// a process) against the scalar reference: element-wise ops, norms, RoPE, attention (decode and prefill paths, every
/// variant), the llama.cpp block formats (layouts, quantizers, activation quantization, dequantization).
/// </summary>
public unsafe class IsaParityTests
{
    private static readonly CpuThreadPool Pool2 = new(2);
    private static readonly CpuBackend Cpu = new(Pool2);

    private static float[] Rand(Random r, long n, float scale = 1f)
    {
        var a = new float[n];
        for (long i = 0; i < n; i++) a[i] = ((float)r.NextDouble() * 2 - 1) * scale;
        return a;
    }

    public static IEnumerable<object[]> Paths() => CpuIsa.Testable().Where(i => i != Isa.Scalar).Select(i => new object[] { i });

    private static void Close(float want, float got, double rel, string what)
    {
        if (float.IsNaN(want)) { Assert.True(float.IsNaN(got), $"{what}: {got} should be NaN"); return; }
        if (float.IsInfinity(want)) { Assert.Equal(want, got); return; }
        Assert.True(Math.Abs(want - got) <= rel * (Math.Abs(want) + 1), $"{what}: {got} vs {want}");
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void ElementwiseOpsMatchTheScalarPath(Isa isa)
    {
        var r = new Random(5);
        foreach (int n in new[] { 0, 1, 7, 8, 15, 16, 17, 33, 100, 1027 })
        {
            var a = Rand(r, n + 1, 4); var b = Rand(r, n + 1, 4);
            if (n > 3) { a[0] = float.NaN; a[1] = float.PositiveInfinity; a[2] = float.NegativeInfinity; }
            var want = new float[n + 1]; var got = new float[n + 1];
            fixed (float* ap = a, bp = b, wp = want, gp = got)
            {
                var ops = new List<string> { "add", "mul", "axpby", "scale" };
                foreach (var act in Enum.GetValues<Activation>()) { ops.Add("activate " + act); ops.Add("gated " + act); }
                foreach (var op in ops)
                {
                    Op(op, ap, bp, wp, n, Isa.Scalar); Op(op, ap, bp, gp, n, isa);
                    for (int i = 0; i < n; i++) Close(want[i], got[i], 1e-6, $"{op} n={n} [{i}]");
                }
                foreach (var act in Enum.GetValues<Activation>())
                {
                    Elementwise.ActivateReference(ap, wp, n, act);
                    Elementwise.Activate(ap, gp, n, act, isa);
                    for (int i = 0; i < n; i++) Close(want[i], got[i], 1e-5, $"{act} vs reference [{i}]");
                }
                Close(Elementwise.Max(bp, n, Isa.Scalar), Elementwise.Max(bp, n, isa), 0, $"max n={n}");
                Close(Elementwise.Sum(bp, n, Isa.Scalar), Elementwise.Sum(bp, n, isa), 1e-5, $"sum n={n}");
                Close(Elementwise.SumSquares(bp, n, Isa.Scalar), Elementwise.SumSquares(bp, n, isa), 1e-5, $"sumsq n={n}");
                b.AsSpan(0, n).CopyTo(want); b.AsSpan(0, n).CopyTo(got);
                float sw = Elementwise.ExpSub(wp, n, 1f, Isa.Scalar), sg = Elementwise.ExpSub(gp, n, 1f, isa);
                Close(sw, sg, 1e-5, $"expsub sum n={n}");
                for (int i = 0; i < n; i++) Close(want[i], got[i], 1e-6, $"expsub [{i}]");
            }
        }
    }

    private static void Op(string op, float* a, float* b, float* y, int n, Isa isa)
    {
        switch (op)
        {
            case "add": Elementwise.Add(a, b, y, n, isa); break;
            case "mul": Elementwise.Mul(a, b, y, n, isa); break;
            case "axpby": Elementwise.Axpby(a, 0.5f, b, -2f, y, n, isa); break;
            case "scale": Elementwise.Scale(a, 3f, y, n, isa); break;
            default:
                var act = Enum.Parse<Activation>(op.Split(' ')[1]);
                if (op.StartsWith("gated")) Elementwise.Gated(a, b, y, n, act, isa);
                else Elementwise.Activate(a, y, n, act, isa);
                break;
        }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void NormsMatchTheirReferences(Isa isa)
    {
        var r = new Random(9);
        foreach (int dim in new[] { 1, 7, 16, 33, 128, 1000 })
        {
            int rows = 3;
            var x = Rand(r, rows * dim, 3); var w = Rand(r, dim); var b = Rand(r, dim);
            var want = new float[rows * dim]; var got = new float[rows * dim];
            fixed (float* xp = x, wp = w, bp = b, e = want, g = got)
            {
                foreach (float offset in new[] { 0f, 1f })
                {
                    Elementwise.RmsNormReference(xp, wp, e, rows, dim, 1e-6f, offset);
                    Elementwise.RmsNorm(xp, wp, g, rows, dim, 1e-6f, offset, isa);
                    for (int i = 0; i < want.Length; i++) Close(want[i], got[i], 1e-5, $"rmsnorm {dim} [{i}]");
                }
                Elementwise.LayerNormReference(xp, wp, bp, e, rows, dim, 1e-5f);
                Elementwise.LayerNorm(xp, wp, bp, g, rows, dim, 1e-5f, isa);
                for (int i = 0; i < want.Length; i++) Close(want[i], got[i], 1e-4, $"layernorm {dim} [{i}]");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Paths))]
    public void RopeMatchesTheScalarPath(Isa isa)
    {
        var r = new Random(3);
        foreach (var (D, rot, inter) in new[] { (64, 64, false), (128, 64, false), (80, 80, false), (64, 64, true), (10, 10, false) })
        {
            var table = new RopeTable(Enumerable.Range(0, rot / 2).Select(i => (float)Math.Pow(10000, -2.0 * i / rot)).ToArray(), 1f);
            table.Ensure(Cpu, 40);
            var x = Rand(r, 2 * 5 * 3 * D);
            var a = (float[])x.Clone(); var b = (float[])x.Clone();
            var pos = Enumerable.Range(0, 10).Select(n => n < 5 ? 7 + n : 30 + n).ToArray(); // two ragged sequences
            fixed (float* ap = a, bp = b)
            fixed (int* pp = pos)
            {
                float* c = (float*)table.Cos!.Ptr, s = (float*)table.Sin!.Ptr;
                RopeKernel.Apply(ap, 10, 3, D, pp, c, s, rot, inter, Isa.Scalar);
                RopeKernel.Apply(bp, 10, 3, D, pp, c, s, rot, inter, isa);
            }
            for (int i = 0; i < a.Length; i++) Close(a[i], b[i], 1e-6, $"rope D={D} rot={rot} [{i}]");
        }
    }

    public static IEnumerable<object[]> AttentionCases()
    {
        // Hq, Hkv, Dk, Dv, T, start, window, chunk, softcap, sinks, temperatureLength, ring, valueFromKey
        var cases = new (int, int, int, int, int, int, int, int, float, bool, int, bool, bool)[]
        {
            (16, 8, 128, 128, 1, 300, 0, 0, 0f, false, 0, false, false),   // decode, GQA, long cache (two key chunks)
            (4, 2, 16, 16, 3, 9, 0, 0, 0f, false, 0, false, false),        // short decode batch
            (8, 2, 64, 64, 37, 0, 0, 0, 0f, false, 0, false, false),       // prefill, group 4
            (6, 6, 17, 17, 9, 5, 0, 0, 0f, false, 0, false, false),        // MHA, odd head dim, prefill over a cache
            (4, 1, 32, 32, 21, 0, 5, 0, 0f, false, 0, false, false),       // MQA sliding window prefill
            (4, 1, 32, 32, 2, 40, 7, 0, 0f, false, 0, true, false),        // sliding window decode on a ring
            (4, 2, 16, 16, 19, 3, 0, 8, 0f, false, 0, false, false),       // chunked
            (4, 2, 24, 24, 11, 0, 0, 0, 5f, true, 0, false, false),        // softcap + sinks (prefill)
            (4, 2, 24, 24, 1, 12, 0, 0, 5f, true, 0, false, false),        // softcap + sinks (decode)
            (4, 4, 16, 16, 6, 30, 0, 0, 30f, false, 8, false, false),      // Grok's length temperature
            (8, 1, 96, 64, 7, 0, 0, 0, 0f, false, 0, false, true),         // MLA: values are the keys' first channels
            (2, 1, 0, 8, 5, 0, 0, 0, 0f, false, 0, false, false),          // zero key dim
        };
        foreach (var isa in CpuIsa.Testable().Where(i => i != Isa.Scalar))
            foreach (var c in cases)
                yield return [isa, c.Item1, c.Item2, c.Item3, c.Item4, c.Item5, c.Item6, c.Item7, c.Item8, c.Item9, c.Item10, c.Item11, c.Item12, c.Item13];
    }

    /// <summary>The decode (keys split across threads, merged by log-sum-exp) and prefill (tiled) paths against the scalar reference.</summary>
    [Theory]
    [MemberData(nameof(AttentionCases))]
    public void AttentionMatchesTheReference(Isa isa, int Hq, int Hkv, int Dk, int Dv, int T, int start, int window, int chunk,
        float softcap, bool sinks, int tempLen, bool ring, bool vFromK)
    {
        var r = new Random(Hq + Dk + T * 7 + start);
        // Two sequences in one ragged step: the second one token shorter and one position earlier (so a step can mix
        // the decode and prefill paths), in cache slots 1 and 0.
        int T2 = Math.Max(1, T - 1), start2 = Math.Max(0, start - 1);
        int cap = ring ? Math.Max(window - 1, chunk) + 3 : start + T;
        var batch = new StepBatch();
        batch.Add(1, start, new int[T]);
        batch.Add(0, start2, new int[T2]);
        Cpu.Prepare(batch);
        int N = T + T2;
        // (a zero key dim has no cache: both sequences start at 0)
        var c = Dk == 0 ? null : new KvCache(Cpu, 2, cap, Hkv, Dk, Dv, ring, bound: ring ? Math.Max(window - 1, chunk) : 0, valuesInKeys: vFromK);
        if (c is not null)
        {
            var rr = new Random(77);
            var k = c.K.AsFloats(); for (int i = 0; i < k.Length; i++) k[i] = (float)rr.NextDouble() - 0.5f;
            if (c.V is not null) { var v = c.V.AsFloats(); for (int i = 0; i < v.Length; i++) v[i] = (float)rr.NextDouble() - 0.5f; }
        }
        var q = Tensor.FromFloats(Rand(r, N * Hq * Dk), new Shape(N, Hq, Dk));
        var kNew = Tensor.FromFloats(Rand(r, N * Hkv * Dk), new Shape(N, Hkv, Dk));
        var vNew = vFromK ? null : Tensor.FromFloats(Rand(r, N * Hkv * Dv), new Shape(N, Hkv, Dv));
        var p = new AttentionParams
        {
            Scale = 1f / MathF.Sqrt(Math.Max(Dk, 1)), Window = window, Chunk = chunk, Softcap = softcap,
            Sinks = sinks ? Tensor.FromFloats(Rand(r, Hq), new Shape(Hq)) : null, TemperatureLength = tempLen, ValueIsKeyPrefix = vFromK,
            ValueDim = vFromK ? Dv : 0,
        };
        var want = Tensor.Zeros(DType.F32, new Shape(N, Hq, Dv));
        var got = Tensor.Zeros(DType.F32, new Shape(N, Hq, Dv));
        var exact = Tensor.Zeros(DType.F32, new Shape(N, Hq, Dv));
        AttentionKernel.Run(Pool2, q, kNew, vNew, want, c, batch, p, Isa.Scalar);
        AttentionKernel.Run(Pool2, q, kNew, vNew, got, c, batch, p, isa);
        AttentionKernel.Reference(q, kNew, vNew, exact, c, batch, p);
        var w = want.AsFloats(); var g = got.AsFloats(); var e = exact.AsFloats();
        for (int i = 0; i < w.Length; i++)
        {
            Close(e[i], w[i], 2e-5, $"attention scalar path [{i}]");
            Close(e[i], g[i], 2e-5, $"attention {isa} [{i}]");
        }
    }

    // ---------------- llama.cpp block formats ----------------

    [Fact]
    public void HalfConversionIsExactForEveryValue()
    {
        for (int h = 0; h < 65536; h++)
        {
            float want = (float)BitConverter.UInt16BitsToHalf((ushort)h);
            float got = Fp16.ToF32((ushort)h);
            Assert.True(BitConverter.SingleToInt32Bits(want) == BitConverter.SingleToInt32Bits(got) || (float.IsNaN(want) && float.IsNaN(got)), $"half 0x{h:X4}: {got} vs {want}");
            Assert.True(BitConverter.SingleToInt32Bits(Fp16.Table[h]) == BitConverter.SingleToInt32Bits(got) || float.IsNaN(got));
        }
        var all = Enumerable.Range(0, 65536).Select(i => (ushort)i).ToArray();
        var v = new float[65536];
        fixed (ushort* s = all) fixed (float* d = v) LlmArch.Compute.Cpu.Convert.F16ToF32((Half*)s, d, 65536);
        for (int h = 0; h < 65536; h++) Assert.True(BitConverter.SingleToInt32Bits(v[h]) == BitConverter.SingleToInt32Bits(Fp16.ToF32((ushort)h)) || float.IsNaN(v[h]));
    }

    /// <summary>
    /// Blocks built byte by byte from llama.cpp's struct layouts (ggml-common.h) and decoded with the formulas of its
    /// dequantize_row_* functions, written out here independently of the kernels.
    /// </summary>
    [Fact]
    public void BlockLayoutsDecodeAsLlamaCppDefinesThem()
    {
        var r = new Random(1);
        byte[] Rnd(int n) { var b = new byte[n]; r.NextBytes(b); return b; }
        void SetHalf(byte[] b, int at, float v) => BitConverter.GetBytes(BitConverter.HalfToUInt16Bits((Half)v)).CopyTo(b, at);
        float Half(byte[] b, int at) => (float)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(b, at));

        // Q8_0: { half d; int8 qs[32]; }
        var q8 = Rnd(34); SetHalf(q8, 0, 0.013f);
        Check(DType.Q8_0, q8, 32, i => Half(q8, 0) * (sbyte)q8[2 + i]);
        // Q4_0: { half d; uint8 qs[16]; } x[j] = (qs[j] & 15) - 8, x[j + 16] = (qs[j] >> 4) - 8
        var q4 = Rnd(18); SetHalf(q4, 0, -0.07f);
        Check(DType.Q4_0, q4, 32, i => Half(q4, 0) * (i < 16 ? (q4[2 + i] & 15) - 8 : (q4[2 + i - 16] >> 4) - 8));
        // Q4_K: { half d, dmin; uint8 scales[12]; uint8 qs[128]; }
        var k4 = Rnd(144); SetHalf(k4, 0, 0.02f); SetHalf(k4, 2, 0.011f);
        Check(DType.Q4_K, k4, 256, i =>
        {
            int j = i / 32; var (sc, m) = ScaleMin(k4, 4, j);
            int byteIdx = 16 + 32 * (j / 2) + i % 32;
            int q = j % 2 == 0 ? k4[byteIdx] & 15 : k4[byteIdx] >> 4;
            return Half(k4, 0) * sc * q - Half(k4, 2) * m;
        });
        // Q5_K: { half d, dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128]; }
        var k5 = Rnd(176); SetHalf(k5, 0, 0.02f); SetHalf(k5, 2, 0.011f);
        Check(DType.Q5_K, k5, 256, i =>
        {
            int j = i / 32, l = i % 32; var (sc, m) = ScaleMin(k5, 4, j);
            int byteIdx = 48 + 32 * (j / 2) + l;
            int q = (j % 2 == 0 ? k5[byteIdx] & 15 : k5[byteIdx] >> 4) + ((k5[16 + l] >> j) & 1) * 16;
            return Half(k5, 0) * sc * q - Half(k5, 2) * m;
        });
        // Q6_K: { uint8 ql[128]; uint8 qh[64]; int8 scales[16]; half d; }
        var k6 = Rnd(210); SetHalf(k6, 208, 0.004f);
        Check(DType.Q6_K, k6, 256, i =>
        {
            int half = i / 128, within = i % 128, quarter = within / 32, l = within % 32;
            int qlByte = 64 * half + l + (quarter % 2 == 1 ? 32 : 0);
            int low4 = quarter < 2 ? k6[qlByte] & 15 : k6[qlByte] >> 4;
            int high2 = (k6[128 + 32 * half + l] >> (2 * quarter)) & 3;
            int scale = (sbyte)k6[192 + 8 * half + l / 16 + 2 * quarter];
            return Half(k6, 208) * scale * ((low4 | high2 << 4) - 32);
        });
    }

    private static (int Scale, int Min) ScaleMin(byte[] b, int at, int j) => j < 4
        ? (b[at + j] & 63, b[at + j + 4] & 63)
        : ((b[at + j + 4] & 15) | ((b[at + j - 4] >> 6) << 4), (b[at + j + 4] >> 4) | ((b[at + j] >> 6) << 4));

    private static void Check(DType t, byte[] block, int n, Func<int, float> want)
    {
        var tensor = Tensor.Zeros(t, new Shape(1, n));
        block.CopyTo(tensor.AsBytes());
        var got = tensor.ToFloatArray();
        for (int i = 0; i < n; i++) Assert.True(Math.Abs(got[i] - want(i)) <= 1e-6f * (1 + Math.Abs(want(i))), $"{t} value {i}: {got[i]} vs {want(i)}");
    }

    public static IEnumerable<object[]> QuantTypes() => new[] { DType.Q8_0, DType.Q4_0, DType.Q4_K, DType.Q5_K, DType.Q6_K }.Select(t => new object[] { t });

    /// <summary>Quantize then dequantize: the error stays within what the format can represent.</summary>
    [Theory]
    [MemberData(nameof(QuantTypes))]
    public void QuantizationRoundTripsWithinTheFormatsPrecision(DType t)
    {
        var r = new Random(2);
        int rows = 16, K = 512;
        var f = new float[rows * K];
        for (int i = 0; i < f.Length; i++) f[i] = (float)(r.NextDouble() - 0.5) * (i % 97 == 0 ? 8 : 1); // some outliers
        for (int i = 256; i < 512; i++) f[i] = 0; // an all-zero super-block
        var q = WeightQuantizer.Quantize(Tensor.FromFloats(f, new Shape(rows, K)), t);
        var back = q.ToFloatArray();
        double se = 0, ss = 0;
        for (int i = 0; i < f.Length; i++) { se += (back[i] - f[i]) * (double)(back[i] - f[i]); ss += (double)f[i] * f[i]; }
        double rel = Math.Sqrt(se / ss);
        double bound = t switch { DType.Q8_0 => 0.01, DType.Q6_K => 0.03, DType.Q5_K => 0.05, DType.Q4_K => 0.1, _ => 0.15 };
        Assert.True(rel < bound, $"{t}: relative RMS error {rel:F4} >= {bound}");
        for (int i = 256; i < 512; i++) Assert.Equal(0f, back[i]);
        if (t == DType.Q8_0)
        {
            // llama.cpp's rule: d = max|v| / 127, q = round(v / d), d stored as f16: within half a step plus q times
            // the f16 rounding of d
            for (int b = 0; b < f.Length / 32; b++)
            {
                float amax = 0; for (int i = 0; i < 32; i++) amax = Math.Max(amax, Math.Abs(f[b * 32 + i]));
                float d = amax / 127, d16 = (float)(Half)d;
                for (int i = 0; i < 32; i++)
                    Assert.True(Math.Abs(back[b * 32 + i] - f[b * 32 + i]) <= 0.5f * d + 127 * Math.Abs(d16 - d) + 1e-6f * amax, $"Q8_0 value {b * 32 + i}");
            }
        }
    }

    /// <summary>The SIMD activation quantizers produce exactly the scalar ones' codes, scales and sums.</summary>
    [Theory]
    [MemberData(nameof(Paths))]
    public void ActivationQuantizationIsIdenticalOnEveryPath(Isa isa)
    {
        var r = new Random(4);
        foreach (int block in new[] { 32, 256 })
        {
            int N = 3, K = 1024;
            var x = Rand(r, N * K, 5);
            x[7] = 0.5f * (x[3] = 1.27f); // values landing on .5 after scaling exercise round-half-even
            var a = new QuantizedActivations(); var b = new QuantizedActivations();
            fixed (float* xp = x)
            {
                a.Quantize(xp, N, K, block, Isa.Scalar);
                b.Quantize(xp, N, K, block, isa);
            }
            Assert.True(new ReadOnlySpan<sbyte>(a.Q, N * K).SequenceEqual(new ReadOnlySpan<sbyte>(b.Q, N * K)), $"block {block}: codes differ");
            Assert.True(new ReadOnlySpan<float>(a.D, N * a.ScalesPerRow).SequenceEqual(new ReadOnlySpan<float>(b.D, N * b.ScalesPerRow)), $"block {block}: scales differ");
            Assert.True(new ReadOnlySpan<short>(a.Sums, N * a.SumsPerRow).SequenceEqual(new ReadOnlySpan<short>(b.Sums, N * b.SumsPerRow)), $"block {block}: sums differ");
        }
    }

    /// <summary>Load-time quantization picks llama.cpp's types: q4_k keeps the head in Q6_K; rows that are not whole blocks fall back.</summary>
    [Fact]
    public void WeightQuantizerFollowsLlamaCppRecipes()
    {
        Assert.Equal(DType.Q4_K, WeightQuantizer.TypeFor(DType.Q4_K, DType.BF16, 2, 1024, head: false));
        Assert.Equal(DType.Q6_K, WeightQuantizer.TypeFor(DType.Q4_K, DType.BF16, 2, 1024, head: true));
        Assert.Equal(DType.Q6_K, WeightQuantizer.TypeFor(DType.Q4_0, DType.BF16, 2, 1024, head: true));
        Assert.Equal(DType.Q8_0, WeightQuantizer.TypeFor(DType.Q4_K, DType.BF16, 2, 96, head: false));
        Assert.Null(WeightQuantizer.TypeFor(DType.Q4_K, DType.BF16, 2, 33, head: false));
        Assert.Null(WeightQuantizer.TypeFor(DType.Q4_K, DType.BF16, 1, 1024, head: false));
        Assert.Equal(DType.Q8_0, WeightQuantizer.TypeFor(DType.Q8_0, DType.F32, 2, 1024, head: true));
    }
}
