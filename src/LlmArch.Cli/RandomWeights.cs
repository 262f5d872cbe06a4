using System.Runtime.InteropServices;
using LlmArch.Checkpoints;
using LlmArch.Compute;

namespace LlmArch.Cli;

/// <summary>
/// Random weights generated tensor by tensor as the model asks for them, never written to disk (bench --preset NAME
/// --random: the big MoE presets do not fit a disk as files). Every tensor the model asks for exists, with the shape it
/// asks for (as for shape-only analysis). Norms are 1, biases and sinks 0, everything else uniform with the std of
/// HF's initializer (0.02); with <c>fp8</c> the linear layers (not embeddings, LM head, routers) are FP8 e4m3 with
/// 128x128 block scales, and gpt-oss's MXFP4 blocks and e8m0 scales are random bytes of sane magnitude.
/// </summary>
internal sealed unsafe class RandomWeights(string location, DType dtype, bool fp8, ulong seed) : WeightSource
{
    private ulong _n;
    public override bool HasData => true;
    public override string Location => location;
    public override bool Contains(string name) => true;

    protected override Tensor Fetch(string name, long[] expected)
    {
        var shape = Shape.Of(expected.Length <= 4 ? expected : [expected.Aggregate(1L, (a, b) => a * b)]);
        ulong state = seed ^ (++_n * 0x9E3779B97F4A7C15UL);
        if (name.EndsWith("_blocks", StringComparison.Ordinal) || name.EndsWith("_scales", StringComparison.Ordinal))
        {
            var u = Tensor.Zeros(DType.U8, shape, name);
            bool scales = name.EndsWith("_scales", StringComparison.Ordinal);
            Fill(u.AsBytes(), state, scales ? (byte)118 : (byte)0, scales ? (byte)8 : (byte)0);
            return u;
        }
        if (shape.Rank == 1)
        {
            float v = name.Contains("norm", StringComparison.Ordinal) || name.Contains("ln_", StringComparison.Ordinal) ? 1f : 0f;
            var t = Tensor.Zeros(DType.F32, shape, name);
            t.AsFloats().Fill(v);
            return t;
        }
        bool linear = name.EndsWith("proj.weight", StringComparison.Ordinal) || name.Contains("experts", StringComparison.Ordinal) && name.EndsWith("weight", StringComparison.Ordinal);
        // FP8 checkpoints quantize every linear layer, stacked experts included ([E, out, in] with [E, out/128, in/128] scales)
        bool stackedExperts = shape.Rank == 3 && name.Contains("experts", StringComparison.Ordinal);
        if (fp8 && (linear && shape.Rank == 2 || stackedExperts))
        {
            var q = Tensor.Zeros(DType.F8E4M3, shape, name);
            // e4m3 magnitudes 2^-3 .. 2^0 (never the NaN codes), random signs; block scales ~0.02.
            FillParallel((byte*)q.Ptr, q.ByteCount, state);
            int rows = shape[shape.Rank - 2], cols = shape[shape.Rank - 1];
            int br = (rows + 127) / 128, bc = (cols + 127) / 128;
            var s = Tensor.Zeros(DType.F32, shape.Rank == 3 ? new Shape(shape[0], br, bc) : new Shape(br, bc), name + "_scale_inv");
            s.AsFloats().Fill(0.02f);
            return BlockScales.Attach(q, s, 128, 128);
        }
        var w = Tensor.Zeros(dtype, shape, name);
        long n = shape.Count;
        int chunks = (int)Math.Min(64, (n + (1 << 20) - 1) >> 20);
        byte* p = (byte*)w.Ptr;
        Parallel.For(0, Math.Max(chunks, 1), c =>
        {
            long a = n * c / chunks, b = n * (c + 1) / chunks;
            ulong s = state ^ ((ulong)c * 0xBF58476D1CE4E5B9UL);
            for (long i = a; i < b; i++)
            {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                float v = ((s >> 40) * (1f / 16777216f) - 0.5f) * 0.0693f; // uniform, std 0.02
                if (dtype == DType.F32) ((float*)p)[i] = v;
                else if (dtype == DType.F16) ((Half*)p)[i] = (Half)v;
                else ((ushort*)p)[i] = (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16);
            }
        });
        return w;
    }

    /// <summary>FP8 codes as <see cref="Fill"/> makes them, in parallel chunks (an 80B checkpoint is 80 GB of them).</summary>
    private static void FillParallel(byte* p, long n, ulong state)
    {
        const long chunk = 1L << 24;
        Parallel.For(0, (n + chunk - 1) / chunk, c =>
        {
            long a = c * chunk, len = Math.Min(chunk, n - a);
            Fill(new Span<byte>(p + a, (int)len), state ^ ((ulong)c * 0xBF58476D1CE4E5B9UL), 0, 0, fp8Values: true);
        });
    }

    private static void Fill(Span<byte> bytes, ulong state, byte baseValue, byte range, bool fp8Values = false)
    {
        ulong s = state | 1;
        for (int i = 0; i < bytes.Length; i++)
        {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            byte r = (byte)(s >> 32);
            bytes[i] = fp8Values ? (byte)((r & 0x80) | (0x30 + (r & 0x0F))) : range == 0 ? r : (byte)(baseValue + r % range);
        }
    }
}
