using LlmArch.Compute;

namespace LlmArch.Checkpoints;

/// <summary>
/// The absorbed matrices of multi-head latent attention, derived once at load from kv_b_proj
/// <c>[H * (nope + v), rank]</c>: W_UK transposed per head <c>[H, rank, nope]</c> (folds into the query) and W_UV per head
/// <c>[H, v, rank]</c> (folds into the output). They keep the weights' dtype: F32/BF16/F16 are rearranged exactly;
/// FP8 with block scales stays FP8 when the blocks align with the heads (DeepSeek-V3's 128 x 128 blocks over 128-wide
/// heads and a 512 rank do), the transposed half with its scale grid transposed; anything else (unaligned blocks,
/// Q8_0 from load-time quantization) is dequantized to F32.
/// </summary>
public static unsafe class MlaAbsorb
{
    public static (Tensor Q, Tensor O) Split(Tensor kvB, int heads, int rank, int nope, int v)
    {
        int per = nope + v;
        if (kvB.Shape.Rank != 2 || kvB.Shape[0] != heads * per || kvB.Shape[1] != rank)
            throw new CheckpointFormatException($"tensor '{kvB.Name}' {kvB.Shape}: expected [{heads * per}, {rank}]");
        string name = kvB.Name;
        switch (kvB.DType)
        {
            case DType.F32 or DType.BF16 or DType.F16:
                return (Plain(kvB, heads, rank, nope, v, transpose: true, name + ".absorbed_q"), Plain(kvB, heads, rank, nope, v, transpose: false, name + ".absorbed_o"));
            case DType.F8E4M3 when kvB.Scales is { DType: DType.F32 } sc && kvB.ScaleBlock is var (br, bc) && nope % br == 0 && v % br == 0 && rank % bc == 0:
                return (Fp8(kvB, sc, heads, rank, nope, v, br, bc, transpose: true, name + ".absorbed_q"), Fp8(kvB, sc, heads, rank, nope, v, br, bc, transpose: false, name + ".absorbed_o"));
            default:
            {
                var f = Tensor.FromFloats(kvB.ToFloatArray(), kvB.Shape, name);
                return (Plain(f, heads, rank, nope, v, transpose: true, name + ".absorbed_q"), Plain(f, heads, rank, nope, v, transpose: false, name + ".absorbed_o"));
            }
        }
    }

    /// <summary>transpose: [H, rank, nope] = rows [h*per, h*per+nope) transposed; else [H, v, rank] = rows [h*per+nope, (h+1)*per).</summary>
    private static Tensor Plain(Tensor t, int H, int rank, int nope, int v, bool transpose, string name)
    {
        int per = nope + v, es = DTypes.ElementSize(t.DType);
        var r = Tensor.Zeros(t.DType, transpose ? new Shape(H, rank, nope) : new Shape(H, v, rank), name);
        byte* src = (byte*)t.Ptr, dst = (byte*)r.Ptr;
        for (int h = 0; h < H; h++)
        {
            if (transpose)
            {
                for (int n = 0; n < nope; n++)
                    for (int c = 0; c < rank; c++)
                        Buffer.MemoryCopy(src + (((long)h * per + n) * rank + c) * es, dst + (((long)h * rank + c) * nope + n) * es, es, es);
            }
            else
            {
                long bytes = (long)v * rank * es;
                Buffer.MemoryCopy(src + ((long)h * per + nope) * rank * es, dst + (long)h * bytes, bytes, bytes);
            }
        }
        return r;
    }

    private static Tensor Fp8(Tensor t, Tensor scales, int H, int rank, int nope, int v, int br, int bc, bool transpose, string name)
    {
        int per = nope + v, scaleCols = (rank + bc - 1) / bc;
        var values = Plain(new Tensor(DType.U8, t.Shape, t.Ptr, t.Owner, t.Name), H, rank, nope, v, transpose, name);
        float* sc = (float*)scales.Ptr;
        Tensor s;
        if (transpose)
        {
            // Head h's block (rb, cb) of W_UK becomes block (cb, rb) of its transpose.
            int rb = nope / br;
            s = Tensor.Zeros(DType.F32, new Shape(H, scaleCols, rb), name + "_scale_inv");
            float* d = (float*)s.Ptr;
            for (int h = 0; h < H; h++)
                for (int i = 0; i < rb; i++)
                    for (int j = 0; j < scaleCols; j++)
                        d[((long)h * scaleCols + j) * rb + i] = sc[((long)h * per / br + i) * scaleCols + j];
        }
        else
        {
            int rb = v / br;
            s = Tensor.Zeros(DType.F32, new Shape(H, rb, scaleCols), name + "_scale_inv");
            float* d = (float*)s.Ptr;
            for (int h = 0; h < H; h++)
                for (int i = 0; i < rb; i++)
                    for (int j = 0; j < scaleCols; j++)
                        d[((long)h * rb + i) * scaleCols + j] = sc[(((long)h * per + nope) / br + i) * scaleCols + j];
        }
        var r = new Tensor(DType.F8E4M3, values.Shape, values.Ptr, values.Owner, name);
        return BlockScales.Attach(r, s, transpose ? bc : br, transpose ? br : bc);
    }
}
