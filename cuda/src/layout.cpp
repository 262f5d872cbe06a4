// Prints the size and field offsets of every argument struct passed by value to a kernel, one line per field
// ("Struct.field offset" and "Struct size N"); cuda/layout.txt is this output, compared with the C# mirrors by a test.
#include <cstdio>
#include <cstddef>
#include "args.cuh"
#define F(S, f) printf("%s.%s %zu\n", #S, #f, offsetof(S, f))
#define SZ(S) printf("%s size %zu\n", #S, sizeof(S))

int main() {
    SZ(WeightDesc); F(WeightDesc, data); F(WeightDesc, scales); F(WeightDesc, batchStride); F(WeightDesc, scaleBatchStride);
    F(WeightDesc, dtype); F(WeightDesc, rows); F(WeightDesc, cols); F(WeightDesc, br); F(WeightDesc, bc); F(WeightDesc, scaleCols); F(WeightDesc, colMajor);
    SZ(BinaryArgs); F(BinaryArgs, n); F(BinaryArgs, sa); F(BinaryArgs, sb); F(BinaryArgs, dy); F(BinaryArgs, op); F(BinaryArgs, mode);
    SZ(CopyArgs); F(CopyArgs, n); F(CopyArgs, srcStride); F(CopyArgs, dstStride); F(CopyArgs, dims); F(CopyArgs, esize);
    SZ(GemvSeg); F(GemvSeg, w); F(GemvSeg, y); F(GemvSeg, bias); F(GemvSeg, residual); F(GemvSeg, rows);
    SZ(GemvArgs); F(GemvArgs, x); F(GemvArgs, normW); F(GemvArgs, normOut); F(GemvArgs, gluOut); F(GemvArgs, seg); F(GemvArgs, M); F(GemvArgs, K);
    F(GemvArgs, nseg); F(GemvArgs, wpr); F(GemvArgs, pairMode); F(GemvArgs, gluKind); F(GemvArgs, normMode); F(GemvArgs, normEps);
    F(GemvArgs, normOffset); F(GemvArgs, gluLimit); F(GemvArgs, gluAlpha); F(GemvArgs, totalRows); F(GemvArgs, rpw);
    SZ(GemmArgs); F(GemmArgs, x); F(GemmArgs, y); F(GemmArgs, bias); F(GemmArgs, w); F(GemmArgs, rowMap); F(GemmArgs, tileStart); F(GemmArgs, rowStart);
    F(GemmArgs, expData); F(GemmArgs, expScales); F(GemmArgs, xBatch); F(GemmArgs, yBatch); F(GemmArgs, M); F(GemmArgs, N); F(GemmArgs, K);
    F(GemmArgs, xShared); F(GemmArgs, slots); F(GemmArgs, experts);
    SZ(MoeGemvArgs); F(MoeGemvArgs, x); F(MoeGemvArgs, y); F(MoeGemvArgs, bias); F(MoeGemvArgs, ids); F(MoeGemvArgs, expData); F(MoeGemvArgs, expScales);
    F(MoeGemvArgs, w); F(MoeGemvArgs, pairs); F(MoeGemvArgs, slots); F(MoeGemvArgs, xShared); F(MoeGemvArgs, K); F(MoeGemvArgs, O); F(MoeGemvArgs, experts); F(MoeGemvArgs, vec);
    SZ(AttnArgs); F(AttnArgs, q); F(AttnArgs, k); F(AttnArgs, v); F(AttnArgs, ck); F(AttnArgs, cv); F(AttnArgs, out); F(AttnArgs, partO); F(AttnArgs, partML);
    F(AttnArgs, pos); F(AttnArgs, seq); F(AttnArgs, table); F(AttnArgs, sinks); F(AttnArgs, scale); F(AttnArgs, softcap); F(AttnArgs, N); F(AttnArgs, Hq);
    F(AttnArgs, Hkv); F(AttnArgs, Dk); F(AttnArgs, Dv); F(AttnArgs, cap); F(AttnArgs, ring); F(AttnArgs, vFromK); F(AttnArgs, hasCache); F(AttnArgs, window);
    F(AttnArgs, chunk); F(AttnArgs, tempLen); F(AttnArgs, rowsPerBlock); F(AttnArgs, splits); F(AttnArgs, keysPerSplit);
    SZ(SampleArgs); F(SampleArgs, logits); F(SampleArgs, out); F(SampleArgs, seen); F(SampleArgs, seed); F(SampleArgs, step); F(SampleArgs, invTemperature);
    F(SampleArgs, topP); F(SampleArgs, minP); F(SampleArgs, topK); F(SampleArgs, V);
    SZ(RowProg); F(RowProg, x); F(RowProg, y); F(RowProg, w); F(RowProg, cosT); F(RowProg, sinT); F(RowProg, pos); F(RowProg, rows); F(RowProg, dim);
    F(RowProg, norm); F(RowProg, rope); F(RowProg, heads); F(RowProg, rot); F(RowProg, interleaved); F(RowProg, eps); F(RowProg, offset);
    return 0;
}
