using LlmArch.Compute;
using LlmArch.Compute.Conformance;
using LlmArch.Compute.Cpu;
using Xunit.Abstractions;

namespace LlmArch.Tests;

/// <summary>The op-conformance harness on the CPU backend: every op and case agrees with the scalar reference backend.</summary>
public class ConformanceTests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> OpNames() => ConformanceSuite.Ops.Select(o => new object[] { o });

    [Theory]
    [MemberData(nameof(OpNames))]
    public void CpuBackendPassesEveryCase(string op) => Check(new CpuBackend(), op);

    [Theory]
    [InlineData("FusedDeltaRule")]
    [InlineData("MatMulById")]
    [InlineData("Attention")]
    public void CpuBackendWithoutFusedFormsPasses(string op) => Check(new CpuBackend(fused: false), op);

    [Fact]
    public void TheReferenceAgreesWithItself()
    {
        var results = ConformanceSuite.Run(new ReferenceBackend(), "Binary").ToList();
        Assert.NotEmpty(results);
        Assert.All(results, r => Assert.Equal(0, r.MaxError));
    }

    [Fact]
    public void ABrokenBackendIsCaught()
    {
        // A backend whose softmax is off by a little must fail the harness: the harness compares, it does not just run.
        var bad = ConformanceSuite.Run(new BrokenSoftmax(), "Softmax").ToList();
        Assert.Contains(bad, r => !r.Passed);
    }

    [Fact]
    public void UnknownOpIsOneClearError() =>
        Assert.Throws<LlmArchInputException>(() => ConformanceSuite.Run(new CpuBackend(), "NoSuchOp").ToList());

    private void Check(IBackend b, string op)
    {
        var results = ConformanceSuite.Run(b, op).ToList();
        Assert.NotEmpty(results);
        foreach (var r in results) output.WriteLine($"{(r.Passed ? "ok  " : "FAIL")} {r.Op} {r.Case}: max error {r.MaxError:G3} (tolerance {r.Tolerance:G2}){(r.Error is null ? "" : " " + r.Error)}");
        Assert.All(results, r => Assert.True(r.Passed, $"{r.Op} {r.Case}: {r.MaxError:G3} > {r.Tolerance:G2} {r.Error}"));
    }

    /// <summary>The CPU backend with a softmax that is slightly wrong.</summary>
    private sealed class BrokenSoftmax : IBackend
    {
        private readonly CpuBackend _b = new();
        public DeviceKind Device => _b.Device;
        public string Name => "broken";
        public int Threads => 1;
        public Tensor Allocate(DType dtype, Shape shape, string name) => _b.Allocate(dtype, shape, name);
        public void Free(Tensor t) => _b.Free(t);
        public Tensor PlaceWeight(Tensor host) => host;
        public Tensor Empty(Shape shape, DType dtype = DType.F32) => _b.Empty(shape, dtype);
        public void ResetScratch() => _b.ResetScratch();
        public Tensor View(Tensor x, Shape shape, long offset = 0) => _b.View(x, shape, offset);
        public void Upload<T>(ReadOnlySpan<T> values, Tensor x, long offset = 0) where T : unmanaged => _b.Upload(values, x, offset);
        public void Download<T>(Tensor x, Span<T> dst, long offset = 0) where T : unmanaged => _b.Download(x, dst, offset);
        public void Copy(Tensor src, Tensor dst) => _b.Copy(src, dst);
        public void Fill(Tensor x, float value) => _b.Fill(x, value);
        public void Prepare(StepBatch batch) => _b.Prepare(batch);
        public Tensor MatMul(Tensor x, Tensor w, Tensor? bias = null) => _b.MatMul(x, w, bias);
        public Tensor BatchMatMul(Tensor a, Tensor b, bool transposeB) => _b.BatchMatMul(a, b, transposeB);
        public Tensor MatMulById(Tensor x, ExpertWeights w, Tensor ids, Tensor? bias = null) => _b.MatMulById(x, w, ids, bias);
        public Tensor Unary(Tensor x, UnaryOp op, float a = 0, float b = 0) => _b.Unary(x, op, a, b);
        public Tensor Binary(Tensor a, Tensor b, BinaryOp op) => _b.Binary(a, b, op);
        public void BinaryInPlace(Tensor a, Tensor b, BinaryOp op) => _b.BinaryInPlace(a, b, op);
        public Tensor Glu(Tensor gate, Tensor? up, in ExpertActivation act, bool interleaved = false) => _b.Glu(gate, up, act, interleaved);
        public Tensor Cast(Tensor x, DType dtype) => _b.Cast(x, dtype);
        public Tensor RmsNorm(Tensor x, Tensor? w, float eps, float offset = 0) => _b.RmsNorm(x, w, eps, offset);
        public Tensor LayerNorm(Tensor x, Tensor? w, Tensor? b, float eps) => _b.LayerNorm(x, w, b, eps);
        public Tensor Softmax(Tensor x) => _b.Unary(_b.Softmax(x), UnaryOp.Affine, 1.001f);
        public (Tensor Values, Tensor Indices) TopK(Tensor x, int k) => _b.TopK(x, k);
        public Tensor Reduce(Tensor x, ReduceOp op, int axis = -1) => _b.Reduce(x, op, axis);
        public Tensor Gather(Tensor table, Tensor ids) => _b.Gather(table, ids);
        public Tensor TakeAlong(Tensor x, Tensor idx) => _b.TakeAlong(x, idx);
        public void ScatterAdd(Tensor dst, Tensor ids, Tensor src) => _b.ScatterAdd(dst, ids, src);
        public Tensor Slice(Tensor x, int start, int len, int axis = -1) => _b.Slice(x, start, len, axis);
        public Tensor Concat(Tensor a, Tensor b, int axis = -1) => _b.Concat(a, b, axis);
        public Tensor Transpose(Tensor x, int d0, int d1) => _b.Transpose(x, d0, d1);
        public void Rope(Tensor x, StepBatch batch, RopeTable table, bool interleaved) => _b.Rope(x, batch, table, interleaved);
        public Tensor Attention(Tensor q, Tensor k, Tensor? v, KvCache? cache, StepBatch batch, in AttentionParams p) => _b.Attention(q, k, v, cache, batch, p);
        public void CacheWrite(KvCache cache, Tensor k, Tensor? v, StepBatch batch) => _b.CacheWrite(cache, k, v, batch);
        public Tensor CausalConv1d(Tensor x, Tensor weight, Tensor state, StepBatch batch, bool silu) => _b.CausalConv1d(x, weight, state, batch, silu);
        public T? Fused<T>() where T : class => null;
    }
}
