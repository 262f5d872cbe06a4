using System.Text;
using System.Text.Json.Nodes;
using LlmArch.Checkpoints;
using LlmArch.Compute;
using LlmArch.Generation;
using LlmArch.Models;

namespace LlmArch.Tests;

/// <summary>
/// GGUF for gpt-oss, DeepSeek V3 (llama.cpp's deepseek2) and GLM-4.5 (glm4moe): export -> load reproduces the
/// safetensors fixtures (F32 exactly up to summation order, BF16 against the bf16-rounded checkpoint, MXFP4 experts kept
/// as ggml MXFP4 blocks byte for byte), the files carry llama.cpp's names, shapes and keys, and bad files get one line.
/// </summary>
public class GgufFamilyTests
{
    public static IEnumerable<object[]> Families() => new[] { "gpt_oss", "gpt_oss_mxfp4", "deepseek_v3", "glm4_moe" }.Select(f => new object[] { f });

    private static readonly Dictionary<(string, DType), string> Exported = new();

    /// <summary>The fixture exported once per type (tests share the files; they only read them).</summary>
    private static string Export(string family, DType type)
    {
        lock (Exported)
        {
            if (Exported.TryGetValue((family, type), out var p)) return p;
            p = Path.Combine(GgufTests.TempDir(), $"{family}-{type}.gguf");
            GgufExport.Export(TestPaths.Fixture(family), p, type);
            return Exported[(family, type)] = p;
        }
    }

    private static readonly int[] Ids = [1, 7, 42, 300, 5, 511, 64, 128, 9, 77, 200, 3, 150, 99];

    private static float[] Logits(CausalLM m, int[] ids)
    {
        var cache = m.CreateCache(1, ids.Length);
        var logits = m.Forward(ids, 1, cache);
        var r = new float[logits.Count];
        m.Backend.Download<float>(logits, r);
        return r;
    }

    private static void AssertClose(float[] want, float[] got, float rel, string what)
    {
        Assert.Equal(want.Length, got.Length);
        float scale = 0;
        foreach (var x in want) scale = Math.Max(scale, Math.Abs(x));
        Assert.True(scale > 0, $"{what}: all logits are zero");
        for (int i = 0; i < want.Length; i++)
            Assert.True(Math.Abs(want[i] - got[i]) <= rel * scale, $"{what}: logit {i} is {got[i]}, expected {want[i]} (scale {scale})");
    }

    /// <summary>F32 export then load passes the fixture, and its logits equal the safetensors model's up to float summation order.</summary>
    [Theory]
    [MemberData(nameof(Families))]
    public void F32RoundTripReproducesTheFixture(string family)
    {
        string gguf = Export(family, DType.F32);
        var r = FixtureVerifier.Verify(TestPaths.Fixture(family), _ => ModelLoader.Load(gguf));
        Assert.True(r.Pass, $"{family}: {r.Error} max_abs={r.MaxAbs} tokens={r.TokensMatched}/{r.TokensTotal}");
        Assert.Equal(r.TokensTotal, r.TokensMatched);
        var direct = FixtureVerifier.Verify(TestPaths.Fixture(family));
        Assert.Equal(direct.MaxAbs, r.MaxAbs, 5);
        AssertClose(Logits(ModelLoader.Load(TestPaths.Fixture(family)), Ids), Logits(ModelLoader.Load(gguf), Ids), 1e-5f, family);
        // the GGUF says what it is: llama.cpp's architecture name
        using var f = new GgufFile(gguf);
        Assert.Equal(family switch { "deepseek_v3" => "deepseek2", "glm4_moe" => "glm4moe", _ => "gpt-oss" }, f.String("general.architecture"));
    }

    /// <summary>--copy moves the mapped weights into process memory; the transposed expert views (gpt-oss) stay transposed.</summary>
    [Theory]
    [MemberData(nameof(Families))]
    public void CopiedWeightsReproduceTheFixture(string family)
    {
        string gguf = Export(family, DType.F32);
        var r = FixtureVerifier.Verify(TestPaths.Fixture(family), _ => ModelLoader.Load(gguf, null, new LoadOptions { Copy = true }));
        Assert.True(r.Pass, $"{family}: {r.Error}");
    }

    /// <summary>
    /// BF16 export: every float weight of two or more dims is stored as bf16 (biases, norms, sinks stay F32, MXFP4 stays
    /// MXFP4), so the model equals the safetensors model whose weights are rounded the same way.
    /// </summary>
    [Theory]
    [MemberData(nameof(Families))]
    public void Bf16ExportEqualsTheBf16RoundedCheckpoint(string family)
    {
        string gguf = Export(family, DType.BF16);
        string dir = Bf16Copy(family);
        var want = Logits(ModelLoader.Load(dir), Ids);
        var got = Logits(ModelLoader.Load(gguf), Ids);
        AssertClose(want, got, 1e-4f, family);
        using var f = new GgufFile(gguf);
        Assert.Contains(f.Tensors.Values, t => t.Type == GgmlType.BF16);
        Assert.All(f.Tensors.Values.Where(t => t.Ne.Length == 1), t => Assert.Equal(GgmlType.F32, t.Type));
    }

    /// <summary>The fixture with every float tensor of two or more dims rounded to bf16 (expert biases excepted: GGUF keeps them F32).</summary>
    private static string Bf16Copy(string family)
    {
        string src = TestPaths.Fixture(family), dir = Path.Combine(GgufTests.TempDir(), family + "-bf16");
        Directory.CreateDirectory(dir);
        File.Copy(Path.Combine(src, "config.json"), Path.Combine(dir, "config.json"));
        using var st = new SafeTensorsFile(Path.Combine(src, "model.safetensors"));
        var tensors = new List<(string, Tensor)>();
        foreach (var name in st.Tensors.Keys)
        {
            var t = st.Get(name);
            if (t.DType == DType.F32 && t.Shape.Rank >= 2 && !name.EndsWith("_bias", StringComparison.Ordinal))
            {
                var b = Tensor.Zeros(DType.BF16, t.Shape, name);
                var v = t.ToFloatArray();
                var o = b.AsSpan<ushort>();
                for (int i = 0; i < v.Length; i++) o[i] = Compute.Cpu.Convert.F32ToBF16(v[i]);
                t = b;
            }
            tensors.Add((name, t));
        }
        SafeTensorsFile.Write(Path.Combine(dir, "model.safetensors"), tensors);
        return dir;
    }

    /// <summary>MXFP4 experts stay 4-bit: ggml MXFP4 tensors in the file, and the blocks and scales read back are the checkpoint's bytes.</summary>
    [Fact]
    public void Mxfp4ExpertsStayMxfp4ByteForByte()
    {
        string gguf = Export("gpt_oss_mxfp4", DType.F32);
        using (var f = new GgufFile(gguf))
        {
            foreach (var n in new[] { "ffn_gate_exps", "ffn_up_exps" })
            {
                var t = f.Tensors[$"blk.2.{n}.weight"];
                Assert.Equal(GgmlType.MXFP4, t.Type);
                Assert.Equal(new long[] { 64, 64, 4 }, t.Ne); // [C, I, E]
                Assert.Equal(4L * 64 * 2 * 17, t.Bytes);
                Assert.Equal(GgmlType.F32, f.Tensors[$"blk.2.{n}.bias"].Type);
            }
            Assert.Equal(GgmlType.MXFP4, f.Tensors["blk.2.ffn_down_exps.weight"].Type);
        }
        var (cfg, w) = GgufModel.Open(gguf);
        using (w)
        using (var ck = new CheckpointWeights(TestPaths.Fixture("gpt_oss_mxfp4")))
        {
            Assert.Equal("gpt_oss", cfg.ModelType);
            for (int i = 0; i < 4; i++)
                foreach (var n in new[] { "gate_up_proj_blocks", "gate_up_proj_scales", "down_proj_blocks", "down_proj_scales" })
                {
                    string name = $"model.layers.{i}.mlp.experts.{n}";
                    var a = ck.Raw(name);
                    var b = w.Raw(name);
                    Assert.Equal(a.Shape, b.Shape);
                    Assert.True(a.AsBytes().SequenceEqual(b.AsBytes()), $"{name} differs");
                }
        }
        var r = FixtureVerifier.Verify(TestPaths.Fixture("gpt_oss_mxfp4"), _ => ModelLoader.Load(gguf));
        Assert.True(r.Pass, r.Error);
    }

    /// <summary>ggml's MXFP4 block: e8m0 scale, then byte j = value j (low nibble) | value j + 16 (high nibble), e2m1 codes.</summary>
    [Fact]
    public void Mxfp4BlocksAreReadInGgmlNibbleOrder()
    {
        float[] e2m1 = [0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0f, -0.5f, -1, -1.5f, -2, -3, -4, -6];
        int Code(int block, int j) => (j * 7 + block * 3 + 1) % 16;
        var data = new byte[2 * 17];
        for (int b = 0; b < 2; b++)
        {
            data[b * 17] = (byte)(126 + 2 * b); // 2^-1, then 2^1
            for (int j = 0; j < 16; j++) data[b * 17 + 1 + j] = (byte)(Code(b, j) | Code(b, j + 16) << 4);
        }
        string p = Path.Combine(GgufTests.TempDir(), "mxfp4.gguf");
        WriteFile(p, [("general.architecture", (object)"llama")], [("t", new long[] { 64 }, GgmlType.MXFP4, data)]);
        using var f = new GgufFile(p);
        var v = f.Get("t").ToFloatArray();
        for (int b = 0; b < 2; b++)
            for (int j = 0; j < 32; j++)
                Assert.Equal(e2m1[Code(b, j)] * MathF.Pow(2, 126 + 2 * b - 127), v[b * 32 + j]);
        // and our layout goes back to ggml's unchanged
        unsafe
        {
            byte* ours = stackalloc byte[16], again = stackalloc byte[17];
            byte scale;
            for (int b = 0; b < 2; b++)
                fixed (byte* blk = &data[b * 17])
                {
                    Mxfp4Blocks.ToOurs(blk, ours, &scale);
                    Mxfp4Blocks.ToGgml(ours, scale, again);
                    for (int k = 0; k < 17; k++) Assert.Equal(blk[k], again[k]);
                }
        }
    }

    /// <summary>llama.cpp's tensor names, shapes (ggml order) and keys for each family.</summary>
    [Fact]
    public void FilesCarryLlamaCppNamesShapesAndKeys()
    {
        using (var f = new GgufFile(Export("gpt_oss", DType.F32)))
        {
            AssertBlock(f, 1, "attn_norm.weight", "attn_q.weight", "attn_q.bias", "attn_k.weight", "attn_k.bias", "attn_v.weight", "attn_v.bias",
                "attn_output.weight", "attn_output.bias", "attn_sinks.weight", "post_attention_norm.weight", "ffn_gate_inp.weight", "ffn_gate_inp.bias",
                "ffn_gate_exps.weight", "ffn_gate_exps.bias", "ffn_up_exps.weight", "ffn_up_exps.bias", "ffn_down_exps.weight", "ffn_down_exps.bias");
            Assert.Equal(new long[] { 64, 64, 4 }, f.Tensors["blk.1.ffn_gate_exps.weight"].Ne);
            Assert.Equal(new long[] { 64, 64, 4 }, f.Tensors["blk.1.ffn_down_exps.weight"].Ne);
            Assert.Equal(new long[] { 64, 4 }, f.Tensors["blk.1.ffn_up_exps.bias"].Ne);
            Assert.Equal(new long[] { 4 }, f.Tensors["blk.1.attn_sinks.weight"].Ne);
            Assert.Equal(4, Int(f, "gpt-oss.expert_count"));
            Assert.Equal(2, Int(f, "gpt-oss.expert_used_count"));
            Assert.Equal(64, Int(f, "gpt-oss.expert_feed_forward_length"));
            Assert.Equal(5, Int(f, "gpt-oss.attention.sliding_window"));
            Assert.Equal("yarn", f.String("gpt-oss.rope.scaling.type"));
            Assert.Equal(32.0, Flt(f, "gpt-oss.rope.scaling.factor"));
            Assert.Equal(16, Int(f, "gpt-oss.rope.scaling.original_context_length"));
        }
        using (var f = new GgufFile(Export("deepseek_v3", DType.F32)))
        {
            AssertBlock(f, 0, "attn_norm.weight", "attn_q_a.weight", "attn_q_a_norm.weight", "attn_q_b.weight", "attn_kv_a_mqa.weight", "attn_kv_a_norm.weight",
                "attn_k_b.weight", "attn_v_b.weight", "attn_output.weight", "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight");
            AssertBlock(f, 1, "attn_norm.weight", "attn_q_a.weight", "attn_q_a_norm.weight", "attn_q_b.weight", "attn_kv_a_mqa.weight", "attn_kv_a_norm.weight",
                "attn_k_b.weight", "attn_v_b.weight", "attn_output.weight", "ffn_norm.weight", "ffn_gate_inp.weight", "exp_probs_b.bias",
                "ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight", "ffn_gate_shexp.weight", "ffn_up_shexp.weight", "ffn_down_shexp.weight");
            Assert.Equal(new long[] { 16, 16, 4 }, f.Tensors["blk.1.attn_k_b.weight"].Ne); // [nope, rank, heads]
            Assert.Equal(new long[] { 16, 16, 4 }, f.Tensors["blk.1.attn_v_b.weight"].Ne); // [rank, v, heads]
            Assert.Equal(new long[] { 64, 24 }, f.Tensors["blk.1.attn_kv_a_mqa.weight"].Ne);
            Assert.Equal(new long[] { 64, 32, 8 }, f.Tensors["blk.1.ffn_gate_exps.weight"].Ne);
            string a = "deepseek2";
            Assert.Equal(1, Int(f, $"{a}.attention.head_count_kv"));
            Assert.Equal(16 + 8, Int(f, $"{a}.attention.key_length"));
            Assert.Equal(16, Int(f, $"{a}.attention.value_length"));
            Assert.Equal(16 + 8, Int(f, $"{a}.attention.key_length_mla"));
            Assert.Equal(16, Int(f, $"{a}.attention.value_length_mla"));
            Assert.Equal(24, Int(f, $"{a}.attention.q_lora_rank"));
            Assert.Equal(16, Int(f, $"{a}.attention.kv_lora_rank"));
            Assert.Equal(8, Int(f, $"{a}.rope.dimension_count"));
            Assert.Equal(1, Int(f, $"{a}.leading_dense_block_count"));
            Assert.Equal(1, Int(f, $"{a}.expert_shared_count"));
            Assert.Equal(2, Int(f, $"{a}.expert_gating_func"));
            Assert.Equal(2.5, Flt(f, $"{a}.expert_weights_scale"));
            Assert.True(f.Bool($"{a}.expert_weights_norm"));
            Assert.Equal(4, Int(f, $"{a}.expert_group_count"));
            Assert.Equal(2, Int(f, $"{a}.expert_group_used_count"));
            Assert.Equal(0.1, f.Float($"{a}.rope.scaling.yarn_log_multiplier")!.Value, 6);
        }
        using (var f = new GgufFile(Export("glm4_moe", DType.F32)))
        {
            AssertBlock(f, 1, "attn_norm.weight", "attn_q.weight", "attn_q.bias", "attn_k.weight", "attn_k.bias", "attn_v.weight", "attn_v.bias",
                "attn_output.weight", "attn_q_norm.weight", "attn_k_norm.weight", "post_attention_norm.weight", "ffn_gate_inp.weight", "exp_probs_b.bias",
                "ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight", "ffn_gate_shexp.weight", "ffn_up_shexp.weight", "ffn_down_shexp.weight");
            Assert.Equal(8, Int(f, "glm4moe.rope.dimension_count")); // partial RoPE: half of the 16-dim head
            Assert.Equal(2, Int(f, "glm4moe.expert_gating_func"));
            Assert.Equal(1, Int(f, "glm4moe.leading_dense_block_count"));
            Assert.Equal(3, Int(f, "glm4moe.block_count"));
            Assert.Equal(8, Int(f, "glm4moe.expert_count"));
        }
    }

    private static long Int(GgufFile f, string key) => f.Int(key) ?? throw new Xunit.Sdk.XunitException($"metadata key '{key}' is missing");
    private static double Flt(GgufFile f, string key) => f.Float(key) ?? throw new Xunit.Sdk.XunitException($"metadata key '{key}' is missing");

    private static void AssertBlock(GgufFile f, int layer, params string[] names)
    {
        var have = f.Tensors.Keys.Where(k => k.StartsWith($"blk.{layer}.", StringComparison.Ordinal)).Select(k => k[$"blk.{layer}.".Length..]).Order().ToArray();
        Assert.Equal(names.Order().ToArray(), have);
    }

    /// <summary>GGUF -> GGUF export rebuilds the same llama.cpp tensors from the ones served under HF names: the same file.</summary>
    [Theory]
    [MemberData(nameof(Families))]
    public void GgufToGgufExportIsTheSameFile(string family)
    {
        string a = Export(family, DType.F32), b = Path.Combine(GgufTests.TempDir(), "again.gguf");
        GgufExport.Export(a, b, DType.F32);
        Assert.Equal(File.ReadAllBytes(a), File.ReadAllBytes(b));
    }

    /// <summary>
    /// A Q8_0 export: every tensor read back (experts split and transposed, MLA's k_b / v_b joined, routers) is the F32
    /// export's within Q8_0's rounding (half a step of amax / 127 per block of 32, the step itself in f16; F16 where rows are not whole blocks),
    /// and the model runs. (Logits are not compared: a tiny random MoE's routing flips on such rounding.)
    /// </summary>
    [Theory]
    [MemberData(nameof(Families))]
    public void Q8ExportReadsBackWithinQ8Rounding(string family)
    {
        string q8 = Export(family, DType.Q8_0), f32 = Export(family, DType.F32);
        using (var f = new GgufFile(q8)) Assert.Contains(f.Tensors.Values, t => t.Type == GgmlType.Q8_0);
        var (_, a) = GgufModel.Open(f32);
        var (_, b) = GgufModel.Open(q8);
        using (a)
        using (b)
        {
            int compared = 0;
            foreach (var name in a.Names)
            {
                Tensor x = a.Raw(name), y = b.Raw(name);
                Assert.Equal(x.Shape, y.Shape);
                var xv = new float[x.Count];
                var yv = new float[y.Count];
                Compute.Cpu.Convert.ToF32Raw(x, 0, xv);
                Compute.Cpu.Convert.ToF32Raw(y, 0, yv);
                float amax = 0;
                foreach (var v in xv) amax = Math.Max(amax, Math.Abs(v));
                float tol = y.DType == DType.U8 ? 0 : amax / 127 * 0.6f + 1e-6f; // d / 2, plus d rounded to f16 times up to 127
                for (int i = 0; i < xv.Length; i++)
                    Assert.True(Math.Abs(xv[i] - yv[i]) <= tol, $"{family} {name}[{i}]: {yv[i]} vs {xv[i]} (tolerance {tol})");
                compared++;
            }
            Assert.True(compared > 20, $"{compared} tensors");
        }
        var logits = Logits(ModelLoader.Load(q8), Ids);
        Assert.All(logits, v => Assert.True(float.IsFinite(v)));
    }

    // ---------------- bad input ----------------

    /// <summary>Rewrites a GGUF file: metadata edited, tensors dropped or given another shape (same bytes).</summary>
    private static string Rewrite(string src, Action<List<(string Key, object Value)>>? kv = null, Func<string, long[]?>? tensor = null, string? drop = null)
    {
        using var f = new GgufFile(src);
        var meta = f.Metadata.Keys.Select(k => (k, f.TypedValue(k))).ToList();
        kv?.Invoke(meta);
        var bytes = File.ReadAllBytes(src);
        var list = new List<(string, long[], uint, byte[])>();
        foreach (var n in f.TensorOrder)
        {
            if (n == drop) continue;
            var t = f.Tensors[n];
            var data = bytes.AsSpan((int)(f.DataStart + t.Offset), (int)t.Bytes).ToArray();
            list.Add((n, tensor?.Invoke(n) ?? t.Ne, t.Type, data));
        }
        string p = Path.Combine(GgufTests.TempDir(), "bad.gguf");
        WriteFile(p, meta, list);
        return p;
    }

    /// <summary>A GGUF v3 file: metadata, then tensors (ggml order ne, type, raw bytes) at 32-byte alignment.</summary>
    private static void WriteFile(string path, List<(string Key, object Value)> kv, List<(string Name, long[] Ne, uint Type, byte[] Data)> tensors)
    {
        using var fs = File.Create(path);
        using var bw = new BinaryWriter(fs, Encoding.UTF8);
        bw.Write(GgufFile.Magic); bw.Write(3u); bw.Write((ulong)tensors.Count); bw.Write((ulong)kv.Count);
        foreach (var (k, v) in kv) { GgufExport.WriteString(bw, k); GgufExport.WriteValue(bw, v); }
        long offset = 0;
        foreach (var (name, ne, type, data) in tensors)
        {
            GgufExport.WriteString(bw, name);
            bw.Write((uint)ne.Length);
            foreach (var d in ne) bw.Write((ulong)d);
            bw.Write(type); bw.Write((ulong)offset);
            offset += (data.Length + 31) / 32 * 32;
        }
        bw.Flush();
        while (fs.Position % 32 != 0) fs.WriteByte(0);
        foreach (var t in tensors)
        {
            fs.Write(t.Data);
            while (fs.Position % 32 != 0) fs.WriteByte(0);
        }
    }

    private static void Set(List<(string Key, object Value)> kv, string key, object? value)
    {
        int i = kv.FindIndex(x => x.Key == key);
        Assert.True(i >= 0 || value is not null, key);
        if (value is null) kv.RemoveAt(i);
        else if (i >= 0) kv[i] = (key, value);
        else kv.Add((key, value));
    }

    private static void AssertBad(string path, params string[] mentions)
    {
        var e = Assert.ThrowsAny<LlmArchInputException>(() => ModelLoader.Load(path));
        Assert.Contains(path, e.Message);
        foreach (var m in mentions) Assert.Contains(m, e.Message);
        var (code, _, err) = CliTests.Run("run", "--model", path, "--prompt-ids", "1,2");
        Assert.Equal(2, code);
        Assert.Single(err.Trim().Split('\n'));
        foreach (var m in mentions) Assert.Contains(m, err);
    }

    [Fact]
    public void MissingExpertTensorIsNamed() =>
        AssertBad(Rewrite(Export("gpt_oss", DType.F32), drop: "blk.1.ffn_up_exps.weight"), "blk.1.ffn_up_exps.weight");

    [Fact]
    public void MissingMxfp4ExpertTensorIsNamed() =>
        AssertBad(Rewrite(Export("gpt_oss_mxfp4", DType.F32), drop: "blk.3.ffn_down_exps.weight"), "blk.3.ffn_down_exps.weight");

    [Fact]
    public void MissingSinksAreNamed() =>
        AssertBad(Rewrite(Export("gpt_oss", DType.F32), drop: "blk.2.attn_sinks.weight"), "blk.2.attn_sinks.weight", "model.layers.2.self_attn.sinks", "missing");

    [Fact]
    public void WrongSinkShapeIsNamed() =>
        AssertBad(Rewrite(Export("gpt_oss", DType.F32), tensor: n => n == "blk.0.attn_sinks.weight" ? new long[] { 2, 2 } : null),
            "blk.0.attn_sinks.weight", "expected [4]");

    [Fact]
    public void WrongExpertShapeIsNamed() =>
        AssertBad(Rewrite(Export("gpt_oss", DType.F32), tensor: n => n == "blk.0.ffn_up_exps.weight" ? new long[] { 32, 128, 4 } : null),
            "blk.0.ffn_up_exps.weight", "expected [4, 64, 64]");

    [Fact]
    public void MixedMxfp4ExpertsAreRefused()
    {
        // an MXFP4 gate with F32 up and down: rewrite up/down as MXFP4-typed would change sizes, so drop in an F32 file's gate instead
        string mx = Export("gpt_oss_mxfp4", DType.F32), fl = Export("gpt_oss", DType.F32);
        using var fm = new GgufFile(mx);
        var g = fm.Tensors["blk.0.ffn_gate_exps.weight"];
        var gateBytes = File.ReadAllBytes(mx).AsSpan((int)(fm.DataStart + g.Offset), (int)g.Bytes).ToArray();
        using var ff = new GgufFile(fl);
        var meta = ff.Metadata.Keys.Select(k => (k, ff.TypedValue(k))).ToList();
        var bytes = File.ReadAllBytes(fl);
        var list = ff.TensorOrder.Select(n =>
        {
            var t = ff.Tensors[n];
            return n == "blk.0.ffn_gate_exps.weight" ? (n, g.Ne, g.Type, gateBytes) : (n, t.Ne, t.Type, bytes.AsSpan((int)(ff.DataStart + t.Offset), (int)t.Bytes).ToArray());
        }).ToList();
        string p = Path.Combine(GgufTests.TempDir(), "mixed.gguf");
        WriteFile(p, meta, list);
        AssertBad(p, "blk.0.ffn_gate_exps.weight", "MXFP4");
    }

    [Fact]
    public void MissingStackedExpertsAreNamed() =>
        AssertBad(Rewrite(Export("glm4_moe", DType.F32), drop: "blk.2.ffn_up_exps.weight"), "blk.2.ffn_up_exps.weight", "model.layers.2.mlp.experts.0.up_proj.weight");

    [Fact]
    public void MissingCorrectionBiasIsNamed() =>
        AssertBad(Rewrite(Export("glm4_moe", DType.F32), drop: "blk.1.exp_probs_b.bias"), "blk.1.exp_probs_b.bias");

    [Fact]
    public void MissingKvBHalfIsNamed() =>
        AssertBad(Rewrite(Export("deepseek_v3", DType.F32), drop: "blk.2.attn_v_b.weight"), "blk.2.attn_v_b.weight");

    [Fact]
    public void WrongKbShapeIsNamed() =>
        AssertBad(Rewrite(Export("deepseek_v3", DType.F32), tensor: n => n == "blk.1.attn_k_b.weight" ? new long[] { 8, 32, 4 } : null),
            "blk.1.attn_k_b.weight", "expected [4, 16, 16]");

    [Fact]
    public void UnknownGatingFunctionIsNamed() =>
        AssertBad(Rewrite(Export("deepseek_v3", DType.F32), kv => Set(kv, "deepseek2.expert_gating_func", 3u)), "deepseek2.expert_gating_func", "3");

    [Fact]
    public void GlmWithSoftmaxRouterIsRefused() =>
        AssertBad(Rewrite(Export("glm4_moe", DType.F32), kv => Set(kv, "glm4moe.expert_gating_func", 1u)), "glm4moe.expert_gating_func");

    [Fact]
    public void MissingRequiredKeysAreNamed()
    {
        AssertBad(Rewrite(Export("gpt_oss", DType.F32), kv => Set(kv, "gpt-oss.expert_count", null)), "gpt-oss.expert_count", "missing");
        AssertBad(Rewrite(Export("gpt_oss", DType.F32), kv => Set(kv, "gpt-oss.attention.sliding_window", null)), "gpt-oss.attention.sliding_window", "missing");
        AssertBad(Rewrite(Export("glm4_moe", DType.F32), kv => Set(kv, "glm4moe.expert_feed_forward_length", null)), "glm4moe.expert_feed_forward_length", "missing");
        AssertBad(Rewrite(Export("deepseek_v3", DType.F32), kv => Set(kv, "deepseek2.attention.kv_lora_rank", null)), "deepseek2.attention.kv_lora_rank", "missing");
    }

    [Fact]
    public void LyingLayerCountsAreNamed()
    {
        AssertBad(Rewrite(Export("glm4_moe", DType.F32), kv => Set(kv, "glm4moe.nextn_predict_layers", 3u)), "glm4moe.nextn_predict_layers");
        AssertBad(Rewrite(Export("deepseek_v3", DType.F32), kv => Set(kv, "deepseek2.leading_dense_block_count", 9u)), "deepseek2.leading_dense_block_count");
        AssertBad(Rewrite(Export("deepseek_v3", DType.F32), kv => Set(kv, "deepseek2.expert_used_count", 9u)), "deepseek2.expert_used_count");
    }

    [Fact]
    public void GlmNextnLayersAreSkipped()
    {
        // block_count counts the next-token-prediction layers llama.cpp's converter appends; they are not loaded
        string p = Rewrite(Export("glm4_moe", DType.F32), kv => { Set(kv, "glm4moe.block_count", 4u); Set(kv, "glm4moe.nextn_predict_layers", 1u); });
        var r = FixtureVerifier.Verify(TestPaths.Fixture("glm4_moe"), _ => ModelLoader.Load(p));
        Assert.True(r.Pass, r.Error);
    }

    /// <summary>
    /// convert_hf_to_gguf.py's --fuse-qkv and --fuse-gate-up-exps: one attn_qkv (q, k, v rows; weight and bias) and one
    /// ffn_gate_up_exps (per expert the gate rows, then the up rows) are read as the separate tensors.
    /// </summary>
    [Theory]
    [InlineData("llama3", false)]
    [InlineData("qwen3_moe", true)]
    [InlineData("glm4_moe", true)]
    [InlineData("gpt_oss", false)]
    public void FusedQkvAndGateUpExpertsLoad(string family, bool fuseExperts)
    {
        string src = Export(family, DType.F32);
        using var f = new GgufFile(src);
        var meta = f.Metadata.Keys.Select(k => (k, f.TypedValue(k))).ToList();
        var bytes = File.ReadAllBytes(src);
        byte[] Data(GgufTensorInfo t) => bytes.AsSpan((int)(f.DataStart + t.Offset), (int)t.Bytes).ToArray();
        var list = new List<(string, long[], uint, byte[])>();
        int fusedQkv = 0, fusedExperts = 0;
        foreach (var n in f.TensorOrder)
        {
            var t = f.Tensors[n];
            var p = n.Split('.');
            if (p.Length == 4 && (p[2] is "attn_q" or "attn_k" or "attn_v"))
            {
                if (p[2] != "attn_q") continue; // written with q
                string b = $"blk.{p[1]}", kind = p[3];
                GgufTensorInfo q = f.Tensors[$"{b}.attn_q.{kind}"], k = f.Tensors[$"{b}.attn_k.{kind}"], v = f.Tensors[$"{b}.attn_v.{kind}"];
                long[] ne = q.Ne.Length == 2 ? new[] { q.Ne[0], q.Ne[1] + k.Ne[1] + v.Ne[1] } : new[] { q.Ne[0] + k.Ne[0] + v.Ne[0] };
                list.Add(($"{b}.attn_qkv.{kind}", ne, q.Type, Data(q).Concat(Data(k)).Concat(Data(v)).ToArray()));
                fusedQkv++;
                continue;
            }
            if (fuseExperts && p.Length == 4 && (p[2] is "ffn_gate_exps" or "ffn_up_exps") && p[3] == "weight")
            {
                if (p[2] == "ffn_up_exps") continue; // written with gate
                var u = f.Tensors[$"blk.{p[1]}.ffn_up_exps.weight"];
                byte[] gd = Data(t), ud = Data(u), fused = new byte[gd.Length * 2];
                int E = (int)t.Ne[2], per = gd.Length / E;
                for (int e = 0; e < E; e++)
                {
                    Array.Copy(gd, e * per, fused, 2 * e * per, per);
                    Array.Copy(ud, e * per, fused, (2 * e + 1) * per, per);
                }
                list.Add(($"blk.{p[1]}.ffn_gate_up_exps.weight", new[] { t.Ne[0], 2 * t.Ne[1], t.Ne[2] }, t.Type, fused));
                fusedExperts++;
                continue;
            }
            list.Add((n, t.Ne, t.Type, Data(t)));
        }
        Assert.True(fusedQkv > 0 && (fusedExperts > 0 || !fuseExperts));
        string path = Path.Combine(GgufTests.TempDir(), "fused.gguf");
        WriteFile(path, meta, list);
        var r = FixtureVerifier.Verify(TestPaths.Fixture(family), _ => ModelLoader.Load(path));
        Assert.True(r.Pass, $"{family}: {r.Error}");
    }

    /// <summary>Files from before llama.cpp split MLA's kv_b (one attn_kv_b, key/value lengths of the heads) load too.</summary>
    [Fact]
    public void LegacyUnsplitKvBLoads()
    {
        string src = Export("deepseek_v3", DType.F32);
        using var st = new SafeTensorsFile(Path.Combine(TestPaths.Fixture("deepseek_v3"), "model.safetensors"));
        using var f = new GgufFile(src);
        var meta = f.Metadata.Keys.Select(k => (k, f.TypedValue(k))).ToList();
        Set(meta, "deepseek2.attention.key_length", 24u);
        Set(meta, "deepseek2.attention.value_length", 16u);
        Set(meta, "deepseek2.attention.head_count_kv", 4u);
        Set(meta, "deepseek2.attention.key_length_mla", null);
        Set(meta, "deepseek2.attention.value_length_mla", null);
        var bytes = File.ReadAllBytes(src);
        var list = new List<(string, long[], uint, byte[])>();
        foreach (var n in f.TensorOrder)
        {
            var t = f.Tensors[n];
            if (n.EndsWith(".attn_v_b.weight", StringComparison.Ordinal)) continue;
            if (n.EndsWith(".attn_k_b.weight", StringComparison.Ordinal))
            {
                string layer = n.Split('.')[1];
                var kvb = st.Get($"model.layers.{layer}.self_attn.kv_b_proj.weight"); // [H * (nope + v), rank] F32
                list.Add(($"blk.{layer}.attn_kv_b.weight", new long[] { kvb.Shape[1], kvb.Shape[0] }, GgmlType.F32, kvb.AsBytes().ToArray()));
                continue;
            }
            list.Add((n, t.Ne, t.Type, bytes.AsSpan((int)(f.DataStart + t.Offset), (int)t.Bytes).ToArray()));
        }
        string p = Path.Combine(GgufTests.TempDir(), "legacy.gguf");
        WriteFile(p, meta, list);
        var r = FixtureVerifier.Verify(TestPaths.Fixture("deepseek_v3"), _ => ModelLoader.Load(p));
        Assert.True(r.Pass, r.Error);
    }

    /// <summary>Configs llama.cpp cannot express are refused at export with one line naming the key.</summary>
    [Fact]
    public void ExportRefusesWhatLlamaCppCannotExpress()
    {
        void Refused(string family, Action<JsonObject> edit, string mention)
        {
            string dir = Path.Combine(GgufTests.TempDir(), family);
            Directory.CreateDirectory(dir);
            string src = TestPaths.Fixture(family);
            File.Copy(Path.Combine(src, "model.safetensors"), Path.Combine(dir, "model.safetensors"));
            var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(src, "config.json")))!.AsObject();
            edit(cfg);
            File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());
            string outPath = Path.Combine(dir, "out.gguf");
            var e = Assert.ThrowsAny<LlmArchInputException>(() => GgufExport.Export(dir, outPath, DType.F32));
            Assert.Contains(mention, e.Message);
            Assert.False(File.Exists(outPath));
            var (code, _, err) = CliTests.Run("export", "--model", dir, "--out", outPath);
            Assert.Equal(2, code);
            Assert.Single(err.Trim().Split('\n'));
        }
        Refused("gpt_oss", c => c["layer_types"] = new JsonArray("full_attention", "sliding_attention", "full_attention", "sliding_attention"), "layer_types[0]");
        Refused("gpt_oss", c => c["swiglu_limit"] = 5.0, "swiglu_limit");
        Refused("gpt_oss", c => c["rope_parameters"]!["truncate"] = true, "truncate");
        Refused("deepseek_v3", c => c["rope_interleave"] = false, "rope_interleave");
        Refused("deepseek_v3", c => c["rope_parameters"]!["mscale"] = 0.5, "mscale");
    }
}
