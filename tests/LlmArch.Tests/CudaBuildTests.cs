using System.Reflection;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using LlmArch.Compute;
using LlmArch.Compute.Cuda;
using LlmArch.Native;

namespace LlmArch.Tests;

/// <summary>
/// What can be checked of the CUDA backend without a GPU: the committed fatbin and its manifest match the committed
/// kernel sources, the C# argument structs match the compiler's layout, cuBLASLt is searched where it lives, and the
/// kernels' view of each weight dtype (block scales, vectorized paths) is right.
/// </summary>
public class CudaBuildTests
{
    private static string CudaDir => Path.Combine(TestPaths.Root, "cuda");

    private static string Sha256(byte[] b) => Convert.ToHexString(SHA256.HashData(b)).ToLowerInvariant();

    private static Dictionary<string, string> Manifest() => File.ReadAllLines(Path.Combine(CudaDir, "manifest.txt"))
        .Where(l => l.Length > 0 && !l.StartsWith('#')).Select(l => l.Split(' ')).ToDictionary(p => p[0], p => p[1]);

    [Fact]
    public void ManifestMatchesTheCommittedKernelSources()
    {
        var m = Manifest();
        var sources = Directory.GetFiles(Path.Combine(CudaDir, "src")).Select(f => "src/" + Path.GetFileName(f)).OrderBy(f => f, StringComparer.Ordinal).ToList();
        Assert.Equal(sources, m.Keys.Where(k => k.StartsWith("src/", StringComparison.Ordinal)).OrderBy(k => k, StringComparer.Ordinal).ToList());
        foreach (var f in sources)
            Assert.True(m[f] == Sha256(File.ReadAllBytes(Path.Combine(CudaDir, f))), $"{f} changed since cuda/build.sh built the fatbin: run cuda/build.sh");
        Assert.Equal(m["llmarch.fatbin"], Sha256(File.ReadAllBytes(Path.Combine(CudaDir, "llmarch.fatbin"))));
        Assert.Equal(m["layout.txt"], Sha256(File.ReadAllBytes(Path.Combine(CudaDir, "layout.txt"))));
    }

    [Fact]
    public void EmbeddedFatbinIsTheCommittedOne()
    {
        using var s = typeof(CudaBackend).Assembly.GetManifestResourceStream("llmarch.fatbin");
        Assert.NotNull(s);
        var bytes = new byte[s!.Length];
        s.ReadExactly(bytes);
        Assert.Equal(Manifest()["llmarch.fatbin"], Sha256(bytes));
        // A fatbin (magic 0xBA55ED50) with SASS for every target and PTX for newer GPUs.
        Assert.Equal(0xBA55ED50u, BitConverter.ToUInt32(bytes, 0));
    }

    [Fact]
    public void ArgumentStructsMatchTheCompilersLayout()
    {
        var asm = typeof(CudaBackend).Assembly;
        int checkedFields = 0;
        foreach (var line in File.ReadAllLines(Path.Combine(CudaDir, "layout.txt")))
        {
            var p = line.Split(' ');
            if (p.Length == 3 && p[1] == "size")
            {
                var t = asm.GetType("LlmArch.Compute.Cuda." + p[0]) ?? throw new Xunit.Sdk.XunitException($"no C# mirror of {p[0]}");
                Assert.True(Marshal.SizeOf(t) == int.Parse(p[2]), $"{p[0]}: C# size {Marshal.SizeOf(t)}, C {p[2]}");
                continue;
            }
            var (structName, field) = (p[0][..p[0].IndexOf('.')], p[0][(p[0].IndexOf('.') + 1)..]);
            var type = asm.GetType("LlmArch.Compute.Cuda." + structName)!;
            string cs = field switch { "seg" => "Seg0", "dtype" => "DType", _ => char.ToUpperInvariant(field[0]) + field[1..] };
            Assert.True(type.GetField(cs, BindingFlags.Instance | BindingFlags.Public) is not null, $"{structName}.{field}: no field {cs}");
            Assert.True((long)Marshal.OffsetOf(type, cs) == long.Parse(p[1]), $"{structName}.{field}: C# offset {Marshal.OffsetOf(type, cs)}, C {p[1]}");
            checkedFields++;
        }
        Assert.True(checkedFields > 100, $"only {checkedFields} fields in layout.txt");
    }

    [Fact]
    public void CublasLtIsSearchedInEveryUsualPlace()
    {
        var files = new HashSet<string>
        {
            "/cuda/lib64/libcublasLt.so.12",
            "/venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcublasLt.so.13",
            "/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cublas/lib/libcublasLt.so.12",
        };
        var dirs = new Dictionary<string, string[]>
        {
            ["/venv/lib"] = ["/venv/lib/python3.12"],
            ["/venv/lib/python3.12/site-packages/nvidia"] = ["/venv/lib/python3.12/site-packages/nvidia/cu13"],
            ["/opt"] = ["/opt/torch"],
            ["/opt/torch/.venv/lib"] = ["/opt/torch/.venv/lib/python3.12"],
            ["/opt/torch/.venv/lib/python3.12/site-packages/nvidia"] = ["/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cublas"],
        };
        var env = new Dictionary<string, string> { ["LLMARCH_CUBLASLT"] = "/explicit/libcublasLt.so", ["CUDA_HOME"] = "/cuda", ["VIRTUAL_ENV"] = "/venv" };
        var c = CublasLt.Candidates(k => env.GetValueOrDefault(k), d => dirs.GetValueOrDefault(d) ?? [], files.Contains).ToList();
        Assert.Equal("/explicit/libcublasLt.so", c[0]);
        Assert.Equal("/cuda/lib64/libcublasLt.so.12", c[1]);
        Assert.Contains("libcublasLt.so.13", c); // the loader's own search path
        Assert.Contains("/venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcublasLt.so.13", c);
        Assert.Contains("/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cublas/lib/libcublasLt.so.12", c);
        Assert.True(c.IndexOf("libcublasLt.so.13") < c.IndexOf("/venv/lib/python3.12/site-packages/nvidia/cu13/lib/libcublasLt.so.13"));
        Assert.Equal(c.Count, c.Distinct().Count());
    }

    private static object Desc(Tensor w, int rows, int cols) =>
        typeof(CudaBackend).GetMethod("Desc", BindingFlags.Static | BindingFlags.NonPublic)!.Invoke(null, [w, rows, cols])!;

    private static int Field(object d, string name) => (int)d.GetType().GetField(name)!.GetValue(d)!;

    [Fact]
    public void KernelsSeeEachWeightDtypeWithItsBlockScales()
    {
        var r = new Random(3);
        var fp8 = CudaOpCheck.Weight(DType.F8E4M3, 300, 260, r);
        var d = Desc(fp8, 300, 260);
        Assert.Equal((128, 128, 3), (Field(d, "Br"), Field(d, "Bc"), Field(d, "ScaleCols")));
        var mx = CudaOpCheck.Weight(DType.MXFP4, 40, 96, r);
        d = Desc(mx, 40, 96);
        Assert.Equal((1, 32, 3, (int)DType.MXFP4), (Field(d, "Br"), Field(d, "Bc"), Field(d, "ScaleCols"), Field(d, "DType")));
        // Q8_0 arrives in llama.cpp's 34-byte blocks and is split at upload into int8 values + F32 scales per 32
        var q8 = CudaBackend.SplitQ8(CudaOpCheck.Weight(DType.Q8_0, 7, 96, r));
        Assert.Equal(DType.I8, q8.DType);
        Assert.Equal((1, 32, 3, (int)DType.Q8_0), (Field(Desc(q8, 7, 96), "Br"), Field(Desc(q8, 7, 96), "Bc"), Field(Desc(q8, 7, 96), "ScaleCols"), Field(Desc(q8, 7, 96), "DType")));
        var blocks = CudaOpCheck.Weight(DType.Q8_0, 7, 96, new Random(5));
        var split = CudaBackend.SplitQ8(blocks);
        var want = new float[7 * 96];
        LlmArch.Compute.Cpu.Convert.ToF32(blocks, 0, want);
        var qv = split.AsSpan<sbyte>(); var sv = split.Scales!.AsSpan<float>();
        for (int i = 0; i < want.Length; i++) Assert.Equal(want[i], qv[i] * sv[i / 32]);
        // Block-quantized weights without scales are bad input (except FP8, whose scales are optional), one clear error.
        var bare = new Tensor(DType.Q8_0, new Shape(4, 32), q8.Ptr, q8.Owner, "model.layers.0.mlp.down_proj.weight");
        var e = Assert.Throws<TargetInvocationException>(() => Desc(bare, 4, 32));
        Assert.IsType<LlmArchInputException>(e.InnerException);
        Assert.Contains("down_proj", e.InnerException!.Message);
    }

    [Fact]
    public void VectorizedGemvIsUsedOnlyWhereSixteenByteLoadsLineUp()
    {
        var m = typeof(CudaBackend).GetMethod("GemvVectorizable", BindingFlags.Static | BindingFlags.NonPublic)!;
        bool V(Tensor w, int K, nint x) => (bool)m.Invoke(null, [w, K, x])!;
        var r = new Random(4);
        nint aligned = 4096;
        Assert.True(V(Aligned(CudaOpCheck.Weight(DType.BF16, 8, 96, r)), 96, aligned));
        Assert.False(V(Aligned(CudaOpCheck.Weight(DType.BF16, 8, 100, r)), 100, aligned));       // rows not 16-byte multiples
        Assert.False(V(Aligned(CudaOpCheck.Weight(DType.BF16, 8, 96, r)), 96, aligned + 4));     // x misaligned
        Assert.True(V(Aligned(CudaOpCheck.Weight(DType.MXFP4, 8, 96, r)), 96, aligned));
        Assert.False(V(Aligned(CudaOpCheck.Weight(DType.MXFP4, 8, 80, r)), 80, aligned));        // 32-value blocks only
        Assert.True(V(Aligned(CudaOpCheck.Weight(DType.F8E4M3, 8, 256, r)), 256, aligned));
        Assert.True(V(Aligned(CudaBackend.SplitQ8(CudaOpCheck.Weight(DType.Q8_0, 8, 64, r))), 64, aligned));
        var cm = Aligned(CudaOpCheck.Weight(DType.BF16, 96, 8, r));
        typeof(Tensor).GetProperty(nameof(Tensor.ColumnMajor))!.GetSetMethod(nonPublic: true)!.Invoke(cm, [true]);
        Assert.False(V(cm, 96, aligned));
    }

    /// <summary>The tensor with a 16-byte-aligned stand-in address (the decision looks at addresses only).</summary>
    private static Tensor Aligned(Tensor t)
    {
        var a = new Tensor(t.DType, t.Shape, 1 << 20, t.Owner, t.Name);
        if (t.Scales is not null) BlockScales.Attach(a, t.Scales, t.ScaleBlock.Rows, t.ScaleBlock.Cols);
        return a;
    }

    [Fact]
    public void OpCheckHarnessAgreesWithTheCpuBackend()
    {
        // The GPU conformance cases are themselves checked here: the CPU backend passes all of them (except Q8_0
        // matmuls, where the CPU quantizes activations to int8 by design and the scalar reference does not).
        var results = CudaOpCheck.Run(new Compute.Cpu.CpuBackend());
        var failed = results.Where(r => !r.Passed && !r.Case.Contains("Q8_0")).ToList();
        Assert.True(failed.Count == 0, string.Join("; ", failed.Select(f => $"{f.Op} {f.Case}: {f.MaxError} {f.Error}")));
        Assert.True(results.Count > 300, $"{results.Count} cases");
    }

    [Fact]
    public void ContextBucketsArePowersOfTwoFrom256()
    {
        var m = typeof(CudaBackend).GetMethod("ContextBucket", BindingFlags.Static | BindingFlags.NonPublic)!;
        int B(int n) => (int)m.Invoke(null, [n])!;
        Assert.Equal(256, B(1));
        Assert.Equal(256, B(256));
        Assert.Equal(512, B(257));
        Assert.Equal(8192, B(4097));
    }
}
