// Argument structs of the kernels, passed by value (cuLaunchKernel copies them into the parameter space). Each has a
// C# mirror in src/LlmArch.Core/Compute/Cuda/KernelArgs.cs with the same field order; cuda/layout.txt records the
// compiler's offsets and CudaStructLayoutTests compares them with the C# layout. Pointers first, then 64-bit, then
// 32-bit fields, padded to 8 bytes, so both sides agree without packing pragmas.
#pragma once
#include <stdint.h>

// A weight (or any table) as the kernels read it: element (row, col) of a [rows, cols] matrix, or of a batch of such
// matrices `batchStride` elements apart. colMajor: logical [rows, cols] stored as [cols, rows] (x @ W checkpoints).
// Scales: FP8 float32 [ceil(rows/br), scaleCols] per matrix; MXFP4 e8m0 bytes and Q8_0 float32 [rows, scaleCols].
struct WeightDesc {
    const void* data;
    const void* scales;
    long long batchStride;       // elements between matrices of a batch (0: one matrix)
    long long scaleBatchStride;  // scale entries between matrices of a batch
    int dtype;
    int rows;
    int cols;
    int br;          // scale block rows
    int bc;          // scale block cols
    int scaleCols;   // scale entries per scale row
    int colMajor;
    int pad_;
};

// Output dims dy[4] (right-aligned, leading 1s); sa/sb element strides per output dim (0 where broadcast).
struct BinaryArgs {
    const float* a;
    const float* b;
    float* y;
    long long n;
    long long sa[4];
    long long sb[4];
    int dy[4];
    int op;
    int mode; // 0 general, 1 same shape, 2 b is a row vector repeated over rows of length dy[3]
};

// dst[o] = src[map(o)] over up to 4 dims: dims are the copy's dims; srcStride/dstStride in elements; esize bytes.
struct CopyArgs {
    const uint8_t* src;
    uint8_t* dst;
    long long n;
    long long srcStride[4];
    long long dstStride[4];
    int dims[4];
    int esize;
    int pad_;
};

struct GemvSeg {
    WeightDesc w;
    float* y;            // [M, rows]
    const float* bias;   // [rows] or null
    float* residual;     // [M, rows] or null: residual += y (after y is written)
    int rows;
    int pad_;
};

struct GemvArgs {
    const float* x;        // [M, K]
    const float* normW;    // RMSNorm weight [K] (normMode 2) or null
    float* normOut;        // [M, K]: the normalized x, written by block 0 (normMode != 0)
    float* gluOut;         // pair mode: [M, rows] act(seg0) * seg1
    GemvSeg seg[4];
    int M;
    int K;
    int nseg;
    int wpr;               // warps per output row (1, 2, 4, 8)
    int pairMode;
    int gluKind;
    int normMode;          // 0 none, 1 RMSNorm without weight, 2 with weight
    float normEps;
    float normOffset;
    float gluLimit;
    float gluAlpha;
    int totalRows;         // rows of the grid (seg0.rows in pair mode, Σ rows otherwise)
    int rpw;               // rows per warp group (per matrix in pair mode), vectorized kernels
    int pad_;
};

struct GemmArgs {
    const float* x;          // [Bt, M, K] (batch stride xBatch), or gathered rows (rowMap)
    float* y;                // [Bt, M, N] (batch stride yBatch), or scattered rows (rowMap)
    const float* bias;       // [N] (or [E, N] with experts: + e * N)
    WeightDesc w;            // logical [N, K] per batch
    const int* rowMap;       // grouped mode: pair index of each sorted row
    const int* tileStart;    // grouped mode: [E + 1] first tile of each expert
    const int* rowStart;     // grouped mode: [E + 1] first sorted row of each expert
    const void* const* expData;    // grouped mode: per-expert weight data pointers
    const void* const* expScales;  // grouped mode: per-expert scale pointers
    long long xBatch;
    long long yBatch;
    int M;
    int N;
    int K;
    int xShared;             // grouped mode: x row = pair / slots (shared input) instead of pair
    int slots;
    int experts;             // grouped mode when > 0
};

struct MoeGemvArgs {
    const float* x;          // [N, xSlots, K]
    float* y;                // [N, S, O]
    const float* bias;       // [E, O] or null
    const int* ids;          // [N, S]
    const void* const* expData;
    const void* const* expScales;
    WeightDesc w;            // dtype/shape/scale layout shared by every expert (data/scales replaced per expert)
    int pairs;               // N * S
    int slots;               // S
    int xShared;             // x is [N, 1, K]
    int K;
    int O;
    int experts;
    int vec;                 // 1: 16-byte chunk loads
    int pad_;
};

struct AttnArgs {
    const float* q;       // [N, Hq, Dk]
    const float* k;       // [N, Hkv, Dk] (this step's keys)
    const float* v;       // [N, Hkv, Dv] or null (values in keys)
    const float* ck;      // cache keys [slots, cap, Hkv, Dk] or null
    const float* cv;      // cache values or null
    float* out;           // [N, Hq, Dv] (splits == 1)
    float* partO;         // [N, Hq, splits, Dv] (splits > 1)
    float* partML;        // [N, Hq, splits, 2]
    const int* pos;
    const int* seq;
    const int* table;     // [S, 4] slot, start, count, offset
    const float* sinks;   // [Hq] or null
    float scale;
    float softcap;
    int N, Hq, Hkv, Dk, Dv;
    int cap, ring, vFromK, hasCache;
    int window, chunk, tempLen;
    int rowsPerBlock;     // query heads per block (a chunk of one kv head's group)
    int splits, keysPerSplit;
};

struct SampleArgs {
    const float* logits;   // [S, V] (penalty already applied)
    int* out;              // [S]
    uint8_t* seen;         // [S, V] or null
    unsigned long long seed;
    unsigned long long step;
    float invTemperature;
    float topP;            // 1 = off
    float minP;            // 0 = off
    int topK;              // 0 = off
    int V;
    int pad_;
};

// One tensor of k_rowprog: optional RMSNorm x -> y, then optional RoPE in place on y (rows = tokens x heads).
struct RowProg {
    const float* x;
    float* y;
    const float* w;
    const float* cosT;
    const float* sinT;
    const int* pos;
    int rows, dim, norm, rope, heads, rot, interleaved;
    float eps, offset;
    int pad_;
};
