using System.Text;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Tests;

/// <summary>
/// Bad GGUF files: every one gives one clear line on stderr naming the file (and the key or tensor), exit code 2, and
/// no allocation driven by a lying count or length.
/// </summary>
public class GgufBadInputTests
{
    private static readonly Lazy<string> Valid = new(() =>
    {
        string p = Path.Combine(GgufTests.TempDir(), "valid.gguf");
        GgufExport.Export(TestPaths.Fixture("qwen3"), p, DType.F32);
        return p;
    });

    /// <summary>A GGUF file from parts: header counts, metadata, tensor infos, then data at the given alignment.</summary>
    private sealed class Builder
    {
        public uint Magic = GgufFile.Magic, Version = 3;
        public readonly List<Action<BinaryWriter>> Kv = [];
        public readonly List<Action<BinaryWriter>> Infos = [];
        public byte[] Data = new byte[64];
        public int Align = 32;

        public Builder Add(string key, object value) { Kv.Add(bw => { GgufExport.WriteString(bw, key); GgufExport.WriteValue(bw, value); }); return this; }
        public Builder Raw(Action<BinaryWriter> kv) { Kv.Add(kv); return this; }

        public Builder Tensor(string name, ulong[] ne, uint type, ulong offset)
        {
            Infos.Add(bw =>
            {
                GgufExport.WriteString(bw, name);
                bw.Write((uint)ne.Length);
                foreach (var d in ne) bw.Write(d);
                bw.Write(type); bw.Write(offset);
            });
            return this;
        }

        public string Write()
        {
            string p = Path.Combine(GgufTests.TempDir(), "bad.gguf");
            using var fs = File.Create(p);
            using var bw = new BinaryWriter(fs, Encoding.UTF8);
            bw.Write(Magic); bw.Write(Version);
            bw.Write((ulong)Infos.Count); bw.Write((ulong)Kv.Count);
            foreach (var k in Kv) k(bw);
            foreach (var t in Infos) t(bw);
            bw.Flush();
            while (fs.Position % Align != 0) fs.WriteByte(0);
            fs.Write(Data);
            return p;
        }
    }

    private static void AssertBad(string path, params string[] mentions)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.ThrowsAny<LlmArchInputException>(() => { using var f = new GgufFile(path); _ = Models.ModelLoader.Load(path); });
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated < 16 << 20, $"{allocated} bytes allocated reading a bad header ({e.Message})");
        Assert.Contains(path, e.Message);
        foreach (var m in mentions) Assert.Contains(m, e.Message);
        var (code, _, err) = CliTests.Run("run", "--model", path, "--prompt-ids", "1,2");
        Assert.Equal(2, code);
        Assert.Single(err.Trim().Split('\n'));
        Assert.Contains(Path.GetFileName(path), err);
    }

    private static string Patched(Action<byte[]> patch, int? length = null)
    {
        var b = File.ReadAllBytes(Valid.Value);
        if (length is int n) b = b[..n];
        patch(b);
        string p = Path.Combine(GgufTests.TempDir(), "patched.gguf");
        File.WriteAllBytes(p, b);
        return p;
    }

    [Fact] public void EmptyFile() => AssertBad(Patched(_ => { }, 0), "truncated");
    [Fact] public void TruncatedHeader() => AssertBad(Patched(_ => { }, 200), "truncated");
    [Fact] public void TruncatedData() => AssertBad(Patched(_ => { }, (int)new FileInfo(Valid.Value).Length - 100), "lies outside");
    [Fact] public void BadMagic() => AssertBad(Patched(b => b[0] = (byte)'X'), "not a GGUF file");
    [Fact] public void UnsupportedVersion() => AssertBad(Patched(b => BitConverter.GetBytes(7u).CopyTo(b, 4)), "version 7");
    [Fact] public void LyingTensorCount() => AssertBad(Patched(b => BitConverter.GetBytes(1UL << 60).CopyTo(b, 8)), "tensor_count");
    [Fact] public void LyingKvCount() => AssertBad(Patched(b => BitConverter.GetBytes(1UL << 58).CopyTo(b, 16)), "metadata_kv_count");
    [Fact] public void HugeKeyLength() => AssertBad(Patched(b => BitConverter.GetBytes(1UL << 62).CopyTo(b, 24)), "string length");

    [Fact] public void HugeStringArray() => AssertBad(new Builder().Raw(bw => { GgufExport.WriteString(bw, "tokenizer.ggml.tokens"); bw.Write(9u); bw.Write(8u); bw.Write(1UL << 50); }).Write(), "tokenizer.ggml.tokens", "elements");
    [Fact] public void HugeIntArray() => AssertBad(new Builder().Raw(bw => { GgufExport.WriteString(bw, "x.list"); bw.Write(9u); bw.Write(4u); bw.Write(1UL << 40); }).Write(), "x.list");
    [Fact] public void UnknownValueType() => AssertBad(new Builder().Raw(bw => { GgufExport.WriteString(bw, "odd.key"); bw.Write(99u); bw.Write(1u); }).Write(), "odd.key", "unknown value type 99");
    [Fact] public void NestedArray() => AssertBad(new Builder().Raw(bw => { GgufExport.WriteString(bw, "nest"); bw.Write(9u); bw.Write(9u); bw.Write(1UL); bw.Write(4u); bw.Write(0UL); }).Write(), "nest", "nests arrays");
    [Fact] public void BadBool() => AssertBad(new Builder().Raw(bw => { GgufExport.WriteString(bw, "flag"); bw.Write(7u); bw.Write((byte)2); }).Write(), "flag");
    [Fact] public void InvalidUtf8() => AssertBad(new Builder().Raw(bw => { GgufExport.WriteString(bw, "s"); bw.Write(8u); bw.Write(2UL); bw.Write((byte)0xC3); bw.Write((byte)0x28); }).Write(), "UTF-8");
    [Fact] public void DuplicateKey() => AssertBad(new Builder().Add("general.architecture", "llama").Add("general.architecture", "qwen3").Write(), "general.architecture", "twice");
    [Fact] public void BadAlignment() => AssertBad(new Builder().Add("general.alignment", 24u).Write(), "general.alignment");
    [Fact] public void MissingArchitecture() => AssertBad(new Builder().Add("general.name", "x").Write(), "general.architecture");
    [Fact] public void UnsupportedArchitecture() => AssertBad(new Builder().Add("general.architecture", "rwkv7").Write(), "rwkv7");
    [Fact] public void WrongMetadataType() => AssertBad(new Builder().Add("general.architecture", "llama").Add("llama.embedding_length", "big").Write(), "llama.embedding_length");

    [Fact] public void UnknownTensorType() => AssertBad(new Builder().Tensor("t", [32], 77, 0).Write(), "'t'", "unknown ggml type 77");
    [Fact] public void TooManyDims() => AssertBad(new Builder().Tensor("t", [1, 1, 1, 1, 1], 0, 0).Write(), "'t'", "dimensions");
    [Fact] public void ZeroDim() => AssertBad(new Builder().Tensor("t", [0], 0, 0).Write(), "'t'", "dimension 0");
    [Fact] public void HugeDim() => AssertBad(new Builder().Tensor("t", [1UL << 40], 0, 0).Write(), "'t'");
    [Fact] public void ShapeOverflow() => AssertBad(new Builder().Tensor("t", [int.MaxValue, int.MaxValue, int.MaxValue, int.MaxValue], 0, 0).Write(), "'t'", "overflows");
    [Fact] public void RowNotWholeBlocks() => AssertBad(new Builder().Tensor("t", [100, 2], GgmlType.Q4_K, 0).Write(), "'t'", "block of 256");
    [Fact] public void MisalignedOffset() => AssertBad(new Builder().Tensor("t", [4], 0, 3).Write(), "'t'", "alignment");
    [Fact] public void OffsetOutsideData() => AssertBad(new Builder().Tensor("t", [16], 0, 1 << 20).Write(), "'t'", "lies outside");
    [Fact] public void OverlappingTensors() => AssertBad(new Builder().Tensor("a", [16], 0, 0).Tensor("b", [8], 0, 32).Write(), "overlap");
    [Fact] public void DuplicateTensor() => AssertBad(new Builder().Tensor("a", [8], 0, 0).Tensor("a", [8], 0, 32).Write(), "'a'", "twice");

    [Fact]
    public void UnsupportedTensorTypeNamesTheTensor()
    {
        // A valid file, except one weight is Q3_K: the loader names it when the model asks for it.
        var p = new Builder { Data = new byte[110 * 4] }
            .Add("general.architecture", "llama").Add("llama.embedding_length", 256u).Add("llama.block_count", 1u)
            .Add("llama.attention.head_count", 4u).Add("llama.feed_forward_length", 256u)
            .Tensor("token_embd.weight", [256, 4], GgmlType.Q3_K, 0).Write();
        AssertBad(p, "token_embd.weight", "Q3_K");
    }

    [Fact]
    public void MissingTensorIsNamed()
    {
        var b = File.ReadAllBytes(Valid.Value);
        int i = IndexOf(b, Encoding.UTF8.GetBytes("blk.1.attn_q.weight"));
        b[i + 4] = (byte)'9'; // blk.1.attn_q -> blk.9.attn_q: layer 1 has no q_proj, and the file has a stray tensor
        string p = Path.Combine(GgufTests.TempDir(), "missing.gguf");
        File.WriteAllBytes(p, b);
        AssertBad(p, "model.layers.1.self_attn.q_proj.weight");
    }

    [Fact]
    public void WrongTensorShapeIsNamed()
    {
        var b = File.ReadAllBytes(Valid.Value);
        int i = IndexOf(b, Encoding.UTF8.GetBytes("output_norm.weight"));
        // name, n_dims (1), ne0 = 64 -> 32 (the data shrinks, so the file stays consistent)
        int ne0 = i + "output_norm.weight".Length + 4;
        Assert.Equal(64UL, BitConverter.ToUInt64(b, ne0));
        BitConverter.GetBytes(32UL).CopyTo(b, ne0);
        string p = Path.Combine(GgufTests.TempDir(), "shape.gguf");
        File.WriteAllBytes(p, b);
        AssertBad(p, "model.norm.weight");
    }

    private static int IndexOf(byte[] hay, byte[] needle)
    {
        for (int i = 0; i + needle.Length <= hay.Length; i++)
            if (hay.AsSpan(i, needle.Length).SequenceEqual(needle)) return i;
        throw new InvalidOperationException("not found");
    }
}
