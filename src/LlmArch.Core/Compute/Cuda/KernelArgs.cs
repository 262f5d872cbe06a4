using System.Runtime.InteropServices;

namespace LlmArch.Compute.Cuda;

// C# mirrors of the kernels' argument structs (cuda/src/args.cuh), field for field. Device pointers are ulong.
// CudaStructLayoutTests compares every size and offset with cuda/layout.txt, which the build script writes from the
// host compiler's own layout of args.cuh.

[StructLayout(LayoutKind.Sequential)]
internal struct WeightDesc
{
    public ulong Data, Scales;
    public long BatchStride, ScaleBatchStride;
    public int DType, Rows, Cols, Br, Bc, ScaleCols, ColMajor, Pad_;
}

[StructLayout(LayoutKind.Sequential)]
internal unsafe struct BinaryArgs
{
    public ulong A, B, Y;
    public long N;
    public fixed long Sa[4];
    public fixed long Sb[4];
    public fixed int Dy[4];
    public int Op, Mode;
}

[StructLayout(LayoutKind.Sequential)]
internal unsafe struct CopyArgs
{
    public ulong Src, Dst;
    public long N;
    public fixed long SrcStride[4];
    public fixed long DstStride[4];
    public fixed int Dims[4];
    public int Esize, Pad_;
}

[StructLayout(LayoutKind.Sequential)]
internal struct GemvSeg
{
    public WeightDesc W;
    public ulong Y, Bias, Residual;
    public int Rows, Pad_;
}

[StructLayout(LayoutKind.Sequential)]
internal struct GemvArgs
{
    public ulong X, NormW, NormOut, GluOut;
    public GemvSeg Seg0, Seg1, Seg2, Seg3;
    public int M, K, Nseg, Wpr, PairMode, GluKind, NormMode;
    public float NormEps, NormOffset, GluLimit, GluAlpha;
    public int TotalRows, Rpw, Pad_;
}

[StructLayout(LayoutKind.Sequential)]
internal struct GemmArgs
{
    public ulong X, Y, Bias;
    public WeightDesc W;
    public ulong RowMap, TileStart, RowStart, ExpData, ExpScales;
    public long XBatch, YBatch;
    public int M, N, K, XShared, Slots, Experts;
}

[StructLayout(LayoutKind.Sequential)]
internal struct MoeGemvArgs
{
    public ulong X, Y, Bias, Ids, ExpData, ExpScales;
    public WeightDesc W;
    public int Pairs, Slots, XShared, K, O, Experts, Vec, Pad_;
}

[StructLayout(LayoutKind.Sequential)]
internal struct AttnArgs
{
    public ulong Q, K, V, Ck, Cv, Out, PartO, PartML, Pos, Seq, Table, Sinks;
    public float Scale, Softcap;
    public int N, Hq, Hkv, Dk, Dv;
    public int Cap, Ring, VFromK, HasCache;
    public int Window, Chunk, TempLen;
    public int RowsPerBlock, Splits, KeysPerSplit;
    public int Pad_;
}

[StructLayout(LayoutKind.Sequential)]
internal struct SampleArgs
{
    public ulong Logits, Out, Seen, Seed, Step;
    public float InvTemperature, TopP, MinP;
    public int TopK, V, Pad_;
}

[StructLayout(LayoutKind.Sequential)]
internal struct RowProg
{
    public ulong X, Y, W, CosT, SinT, Pos;
    public int Rows, Dim, Norm, Rope, Heads, Rot, Interleaved;
    public float Eps, Offset;
    public int Pad_;
}
