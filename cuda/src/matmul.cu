// Matrix products. y = x · Wᵀ (+ bias) for activations x [M, K] F32 and weights W [O, K] in any stored dtype.
//   k_gemv_*     M <= 8 (decode): one or more warps per output row, weights streamed once with 16-byte loads and
//                dequantized in registers; up to 4 weight segments sharing x in one launch (q/k/v, gate/up), an
//                optional RMSNorm prologue (x normalized on the fly, block 0 also writes the normalized x), an
//                optional residual epilogue (r += y) and a gate/up pair mode (writes act(gate) · up as well).
//                k_gemv_generic is the same contract with one scalar load per element (odd sizes, column-major).
//   k_gemm       M > 8: 128x128 tiles, 8x8 per thread, FFMA in fp32 (exact mode; TF32 never used); batched over
//                blockIdx.z (BatchMatMul) and with gathered rows (MoE prefill, grouped by expert).
//   k_moe_*      expert routing helpers: per-pair GEMV for decode, sort-by-expert + grouped GEMM for prefill.
// Sums run in a fixed order per output (no atomics): replays are bit-identical.
#include "common.cuh"

#define GEMV_THREADS 256
#define GEMV_MAXM 8



// ---- 16-byte chunk decoders: VPC values of row `row` starting at chunk `c` (chunk = 16 bytes of storage) ----

template <int DT> struct Chunk;

template <> struct Chunk<DT_F32> {
    static constexpr int VPC = 4;
    __device__ static __forceinline__ void load(const WeightDesc& w, long long row, long long c, float* v) {
        float4 r = __ldg((const float4*)((const float*)w.data + row * (long long)w.cols) + c);
        v[0] = r.x; v[1] = r.y; v[2] = r.z; v[3] = r.w;
    }
};

template <> struct Chunk<DT_BF16> {
    static constexpr int VPC = 8;
    __device__ static __forceinline__ void load(const WeightDesc& w, long long row, long long c, float* v) {
        uint4 r = __ldg((const uint4*)((const uint16_t*)w.data + row * (long long)w.cols) + c);
        uint32_t u[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
        for (int i = 0; i < 4; i++) { v[2 * i] = __uint_as_float(u[i] << 16); v[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u); }
    }
};

template <> struct Chunk<DT_F16> {
    static constexpr int VPC = 8;
    __device__ static __forceinline__ void load(const WeightDesc& w, long long row, long long c, float* v) {
        uint4 r = __ldg((const uint4*)((const __half*)w.data + row * (long long)w.cols) + c);
        uint32_t u[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            __half2 h = *reinterpret_cast<__half2*>(&u[i]);
            float2 f = __half22float2(h);
            v[2 * i] = f.x; v[2 * i + 1] = f.y;
        }
    }
};

template <> struct Chunk<DT_F8E4M3> {
    static constexpr int VPC = 16;
    __device__ static __forceinline__ void load(const WeightDesc& w, long long row, long long c, float* v) {
        uint4 r = __ldg((const uint4*)((const uint8_t*)w.data + row * (long long)w.cols) + c);
        uint32_t u[4] = {r.x, r.y, r.z, r.w};
        float s = w.scales ? ((const float*)w.scales)[(row / w.br) * w.scaleCols + (c * 16) / w.bc] : 1.f;
#pragma unroll
        for (int i = 0; i < 16; i++) v[i] = fp8e4m3_to_f32((u[i >> 2] >> ((i & 3) * 8)) & 0xFF) * s;
    }
};

template <> struct Chunk<DT_Q8_0> {
    static constexpr int VPC = 16;
    __device__ static __forceinline__ void load(const WeightDesc& w, long long row, long long c, float* v) {
        uint4 r = __ldg((const uint4*)((const int8_t*)w.data + row * (long long)w.cols) + c);
        uint32_t u[4] = {r.x, r.y, r.z, r.w};
        float s = ((const float*)w.scales)[row * w.scaleCols + (c * 16) / w.bc];
#pragma unroll
        for (int i = 0; i < 16; i++) v[i] = (float)(int8_t)((u[i >> 2] >> ((i & 3) * 8)) & 0xFF) * s;
    }
};

template <> struct Chunk<DT_MXFP4> {
    static constexpr int VPC = 32;
    __device__ static __forceinline__ void load(const WeightDesc& w, long long row, long long c, float* v) {
        uint4 r = __ldg((const uint4*)((const uint8_t*)w.data + row * (long long)(w.cols / 2)) + c);
        uint32_t u[4] = {r.x, r.y, r.z, r.w};
        float s = e8m0_to_f32(((const uint8_t*)w.scales)[row * w.scaleCols + (c * 32) / w.bc]);
#pragma unroll
        for (int i = 0; i < 16; i++) {
            uint32_t b = (u[i >> 2] >> ((i & 3) * 8)) & 0xFF;
            v[2 * i] = fp4_to_f32(b & 0xF) * s;
            v[2 * i + 1] = fp4_to_f32(b >> 4) * s;
        }
    }
};

// ---- raw 16-byte chunks kept in registers, decoded at use (4 registers per chunk in flight, any dtype) ----

// One weight row being streamed by a warp: its first 16-byte chunk and, for block-quantized dtypes, its scale row.
struct RowStream {
    const uint4* p;
    const void* sc;
    long long srow;   // index of the row's first scale
    int bc;
    int ok;
};

__device__ __forceinline__ RowStream row_stream(const WeightDesc& w, long long row, bool ok) {
    RowStream s;
    long long rowBytes = w.dtype == DT_MXFP4 ? w.cols / 2 : (long long)w.cols * (w.dtype == DT_F32 ? 4 : (w.dtype == DT_BF16 || w.dtype == DT_F16) ? 2 : 1);
    s.p = (const uint4*)((const uint8_t*)w.data + (ok ? row : 0) * rowBytes);
    s.sc = w.scales;
    s.srow = w.dtype == DT_F8E4M3 ? (row / w.br) * w.scaleCols : row * w.scaleCols;
    s.bc = w.bc;
    s.ok = ok;
    return s;
}

template <int DT> struct Raw;
template <> struct Raw<DT_F32> {
    static constexpr int V = 4;
    __device__ static __forceinline__ void decode(uint4 r, const RowStream&, long long, float* v) {
        v[0] = __uint_as_float(r.x); v[1] = __uint_as_float(r.y); v[2] = __uint_as_float(r.z); v[3] = __uint_as_float(r.w);
    }
};
template <> struct Raw<DT_BF16> {
    static constexpr int V = 8;
    __device__ static __forceinline__ void decode(uint4 r, const RowStream&, long long, float* v) {
        uint32_t u[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
        for (int i = 0; i < 4; i++) { v[2 * i] = __uint_as_float(u[i] << 16); v[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u); }
    }
};
template <> struct Raw<DT_F16> {
    static constexpr int V = 8;
    __device__ static __forceinline__ void decode(uint4 r, const RowStream&, long long, float* v) {
        uint32_t u[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
        for (int i = 0; i < 4; i++) { float2 f = __half22float2(*reinterpret_cast<__half2*>(&u[i])); v[2 * i] = f.x; v[2 * i + 1] = f.y; }
    }
};
template <> struct Raw<DT_F8E4M3> {
    static constexpr int V = 16;
    __device__ static __forceinline__ void decode(uint4 r, const RowStream& s, long long c, float* v) {
        uint32_t u[4] = {r.x, r.y, r.z, r.w};
        float sc = s.sc ? ((const float*)s.sc)[s.srow + (c * 16) / s.bc] : 1.f;
#pragma unroll
        for (int i = 0; i < 16; i++) v[i] = fp8e4m3_to_f32((u[i >> 2] >> ((i & 3) * 8)) & 0xFF) * sc;
    }
};
template <> struct Raw<DT_Q8_0> {
    static constexpr int V = 16;
    __device__ static __forceinline__ void decode(uint4 r, const RowStream& s, long long c, float* v) {
        uint32_t u[4] = {r.x, r.y, r.z, r.w};
        float sc = ((const float*)s.sc)[s.srow + (c * 16) / s.bc];
#pragma unroll
        for (int i = 0; i < 16; i++) v[i] = (float)(int8_t)((u[i >> 2] >> ((i & 3) * 8)) & 0xFF) * sc;
    }
};
template <> struct Raw<DT_MXFP4> {
    static constexpr int V = 32;
    __device__ static __forceinline__ void decode(uint4 r, const RowStream& s, long long c, float* v) {
        uint32_t u[4] = {r.x, r.y, r.z, r.w};
        float sc = e8m0_to_f32(((const uint8_t*)s.sc)[s.srow + (c * 32) / s.bc]);
#pragma unroll
        for (int i = 0; i < 16; i++) {
            uint32_t b = (u[i >> 2] >> ((i & 3) * 8)) & 0xFF;
            v[2 * i] = fp4_to_f32(b & 0xF) * sc;
            v[2 * i + 1] = fp4_to_f32(b >> 4) * sc;
        }
    }
};

// Maps a grid row to (segment, local row).
__device__ __forceinline__ int seg_of(const GemvArgs& a, int gr, int* local) {
    int s = 0;
    while (s < a.nseg - 1 && gr >= a.seg[s].rows) { gr -= a.seg[s].rows; s++; }
    *local = gr;
    return s;
}

// (segment, local row) of a grid row, without taking any address (keeps everything in registers).
__device__ __forceinline__ int2 seg_map(const GemvArgs& a, int gr) {
    // Walk the segments in order: a row past segment s's rows belongs to a later segment.
    if (a.nseg > 1 && gr >= a.seg[0].rows) {
        gr -= a.seg[0].rows;
        if (a.nseg > 2 && gr >= a.seg[1].rows) {
            gr -= a.seg[1].rows;
            if (a.nseg > 3 && gr >= a.seg[2].rows) return make_int2(3, gr - a.seg[2].rows);
            return make_int2(2, gr);
        }
        return make_int2(1, gr);
    }
    return make_int2(0, gr);
}

// Segment s's weight by value (a constant index per case keeps the kernel parameters out of local memory).
__device__ __forceinline__ WeightDesc pick_w(const GemvArgs& a, int s) {
    switch (s) { case 0: return a.seg[0].w; case 1: return a.seg[1].w; case 2: return a.seg[2].w; default: return a.seg[3].w; }
}

// Per-row RMSNorm factors of x for the prologue: inv[m] = 1 / sqrt(mean(x[m]²) + eps).
__device__ __forceinline__ void gemv_norm_prologue(const GemvArgs& a, float* inv /* smem [GEMV_MAXM] */, float* sh) {
    for (int m = 0; m < a.M; m++) {
        float s = 0.f;
        const float* xr = a.x + (long long)m * a.K;
        for (int i = threadIdx.x; i < a.K; i += blockDim.x) { float v = xr[i]; s += v * v; }
        s = block_sum(s, sh);
        if (threadIdx.x == 0) inv[m] = 1.f / sqrtf(s / a.K + a.normEps);
    }
    __syncthreads();
    if (blockIdx.x == 0 && a.normOut) {
        for (int m = 0; m < a.M; m++)
            for (int i = threadIdx.x; i < a.K; i += blockDim.x) {
                float v = a.x[(long long)m * a.K + i] * inv[m];
                if (a.normMode == 2) v *= a.normOffset + a.normW[i];
                a.normOut[(long long)m * a.K + i] = v;
            }
    }
}

__device__ __forceinline__ float gemv_x(const GemvArgs& a, const float* inv, int m, int k) {
    float v = a.x[(long long)m * a.K + k];
    if (a.normMode) { v *= inv[m]; if (a.normMode == 2) v *= a.normOffset + a.normW[k]; }
    return v;
}

// Writes one finished output (sum over K) with bias and the residual epilogue.
__device__ __forceinline__ void gemv_store(const GemvSeg& s, int m, int o, float v) {
    if (s.bias) v += s.bias[o];
    long long i = (long long)m * s.rows + o;
    s.y[i] = v;
    if (s.residual) s.residual[i] += v;
}

// Combines the per-warp partial sums of a row (wpr > 1) in a fixed order; returns true in the thread that stores.
// part: smem [8 warps][2][GEMV_MAXM].
__device__ __forceinline__ void gemv_finish(const GemvArgs& a, float (*acc)[GEMV_MAXM], int nrow, float* part, int gr) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int rowInBlock = warp / a.wpr, wInRow = warp % a.wpr;
#pragma unroll
    for (int r = 0; r < 2; r++)
#pragma unroll
        for (int m = 0; m < GEMV_MAXM; m++) acc[r][m] = warp_sum(acc[r][m]);
    if (a.wpr > 1) {
        if (lane == 0) {
#pragma unroll
            for (int r = 0; r < 2; r++)
#pragma unroll
                for (int m = 0; m < GEMV_MAXM; m++) part[(warp * 2 + r) * GEMV_MAXM + m] = acc[r][m];
        }
        __syncthreads();
        if (wInRow != 0) return;
#pragma unroll
        for (int r = 0; r < 2; r++)
#pragma unroll
            for (int m = 0; m < GEMV_MAXM; m++) {
                float s = 0.f;
                for (int j = 0; j < a.wpr; j++) s += part[((rowInBlock * a.wpr + j) * 2 + r) * GEMV_MAXM + m];
                acc[r][m] = s;
            }
    }
    if (lane != 0 || gr >= a.totalRows) return;
    if (a.pairMode) {
        float bg = a.seg[0].bias ? a.seg[0].bias[gr] : 0.f, bu = a.seg[1].bias ? a.seg[1].bias[gr] : 0.f;
#pragma unroll
        for (int m = 0; m < GEMV_MAXM; m++) {
            if (m >= a.M) break;
            gemv_store(a.seg[0], m, gr, acc[0][m]);
            gemv_store(a.seg[1], m, gr, acc[1][m]);
            a.gluOut[(long long)m * a.seg[0].rows + gr] = glu_one(a.gluKind, acc[0][m] + bg, acc[1][m] + bu, a.gluLimit, a.gluAlpha);
        }
    } else {
        int local; int s = seg_of(a, gr, &local);
        GemvSeg sg;
        switch (s) { case 0: sg = a.seg[0]; break; case 1: sg = a.seg[1]; break; case 2: sg = a.seg[2]; break; default: sg = a.seg[3]; }
#pragma unroll
        for (int m = 0; m < GEMV_MAXM; m++) { if (m >= a.M) break; gemv_store(sg, m, local, acc[0][m]); }
    }
}

// Vectorized GEMV: each warp streams NS weight rows (rpw rows, or rpw gate + rpw up rows in pair mode) over its K
// slice, U 16-byte chunks per row in flight per lane before the first use, x read once per chunk for all the rows.
template <int DT, int MM>
__device__ __forceinline__ void gemv_vec_impl(const GemvArgs& a) {
    using R = Raw<DT>;
    constexpr int V = R::V;
    constexpr int U = V <= 8 ? 4 : 2;
    constexpr int NS = MM <= 2 ? 4 : 2;   // rows per warp: fewer with more activation rows (register budget)
    __shared__ float inv[GEMV_MAXM];
    __shared__ float sh[32];
    __shared__ float part[8 * NS * MM];
    if (a.normMode) gemv_norm_prologue(a, inv, sh);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int groupsPerBlock = 8 / a.wpr;
    int g = blockIdx.x * groupsPerBlock + warp / a.wpr;
    int wInRow = warp % a.wpr;
    int rpw = a.rpw, ns = a.pairMode ? 2 * rpw : rpw;
    RowStream st[NS];
#pragma unroll
    for (int s = 0; s < NS; s++) {
        int r = a.pairMode ? (s % rpw) : s;
        int gr = g * rpw + r;
        bool ok = s < ns && gr < a.totalRows;
        int2 sl = a.pairMode ? make_int2(s < rpw ? 0 : 1, gr) : ok ? seg_map(a, gr) : make_int2(0, 0);
        switch (sl.x) {
        case 0: st[s] = row_stream(a.seg[0].w, sl.y, ok); break;
        case 1: st[s] = row_stream(a.seg[1].w, sl.y, ok); break;
        case 2: st[s] = row_stream(a.seg[2].w, sl.y, ok); break;
        default: st[s] = row_stream(a.seg[3].w, sl.y, ok); break;
        }
    }
    float acc[NS][MM];
#pragma unroll
    for (int s = 0; s < NS; s++)
#pragma unroll
        for (int m = 0; m < MM; m++) acc[s][m] = 0.f;
    long long chunks = a.K / V;
    int step = 32 * a.wpr;
    for (long long c0 = wInRow * 32 + lane; c0 < chunks; c0 += (long long)U * step) {
        uint4 raw[U][NS];
#pragma unroll
        for (int u = 0; u < U; u++) {
            long long c = c0 + (long long)u * step;
#pragma unroll
            for (int s = 0; s < NS; s++)
                if (st[s].ok && c < chunks) raw[u][s] = __ldg(st[s].p + c);
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            long long c = c0 + (long long)u * step;
            if (c >= chunks) break;
            int k0 = (int)(c * V);
#pragma unroll
            for (int m = 0; m < MM; m++) {
                if (m >= a.M) break;
                const float4* xp = (const float4*)(a.x + (long long)m * a.K + k0);
                float xv[V];
#pragma unroll
                for (int i = 0; i < V / 4; i++) { float4 t = __ldg(xp + i); xv[4 * i] = t.x; xv[4 * i + 1] = t.y; xv[4 * i + 2] = t.z; xv[4 * i + 3] = t.w; }
                if (a.normMode) {
                    float f = inv[m];
                    if (a.normMode == 2) {
                        const float4* wp = (const float4*)(a.normW + k0);
#pragma unroll
                        for (int i = 0; i < V / 4; i++) {
                            float4 t = __ldg(wp + i);
                            xv[4 * i] *= f * (a.normOffset + t.x); xv[4 * i + 1] *= f * (a.normOffset + t.y);
                            xv[4 * i + 2] *= f * (a.normOffset + t.z); xv[4 * i + 3] *= f * (a.normOffset + t.w);
                        }
                    } else {
#pragma unroll
                        for (int i = 0; i < V; i++) xv[i] *= f;
                    }
                }
#pragma unroll
                for (int s = 0; s < NS; s++) {
                    if (!st[s].ok) continue;
                    float wv[V];
                    R::decode(raw[u][s], st[s], c, wv);
                    float d = 0.f;
#pragma unroll
                    for (int i = 0; i < V; i++) d = fmaf(wv[i], xv[i], d);
                    acc[s][m] += d;
                }
            }
        }
    }
    // Reduce: lanes, then the warps of a row group (fixed order), then store each row (and act(gate)·up in pair mode).
#pragma unroll
    for (int s = 0; s < NS; s++)
#pragma unroll
        for (int m = 0; m < MM; m++) acc[s][m] = warp_sum(acc[s][m]);
    if (a.wpr > 1) {
        if (lane == 0)
#pragma unroll
            for (int s = 0; s < NS; s++)
#pragma unroll
                for (int m = 0; m < MM; m++) part[(warp * NS + s) * MM + m] = acc[s][m];
        __syncthreads();
        if (wInRow != 0) return;
        int first = (warp / a.wpr) * a.wpr;
#pragma unroll
        for (int s = 0; s < NS; s++)
#pragma unroll
            for (int m = 0; m < MM; m++) {
                float t = 0.f;
                for (int j = 0; j < a.wpr; j++) t += part[((first + j) * NS + s) * MM + m];
                acc[s][m] = t;
            }
    }
    if (lane != 0) return;
#pragma unroll
    for (int s = 0; s < NS; s++) {
        if (!st[s].ok) continue;
        if (a.pairMode) {
            if (s >= rpw) continue;
            int gr = g * rpw + s;
            float bg = a.seg[0].bias ? a.seg[0].bias[gr] : 0.f, bu = a.seg[1].bias ? a.seg[1].bias[gr] : 0.f;
#pragma unroll
            for (int m = 0; m < MM; m++) {
                if (m >= a.M) break;
                float gv = 0.f, uv = 0.f;
#pragma unroll
                for (int t = 0; t < NS; t++) { if (t == s) gv = acc[t][m]; if (t == s + rpw) uv = acc[t][m]; }
                gemv_store(a.seg[0], m, gr, gv);
                gemv_store(a.seg[1], m, gr, uv);
                a.gluOut[(long long)m * a.seg[0].rows + gr] = glu_one(a.gluKind, gv + bg, uv + bu, a.gluLimit, a.gluAlpha);
            }
        } else {
            int2 sl = seg_map(a, g * rpw + s);
            int sgi = sl.x, local = sl.y;
#pragma unroll
            for (int m = 0; m < MM; m++) {
                if (m >= a.M) break;
                switch (sgi) {
                case 0: gemv_store(a.seg[0], m, local, acc[s][m]); break;
                case 1: gemv_store(a.seg[1], m, local, acc[s][m]); break;
                case 2: gemv_store(a.seg[2], m, local, acc[s][m]); break;
                default: gemv_store(a.seg[3], m, local, acc[s][m]); break;
                }
            }
        }
    }
}

// Same contract, one scalar (dequantizing) load per weight element: any K, any alignment, column-major storage.
extern "C" __global__ void __launch_bounds__(GEMV_THREADS) k_gemv_generic(GemvArgs a) {
    __shared__ float inv[GEMV_MAXM];
    __shared__ float sh[32];
    __shared__ float part[8 * 2 * GEMV_MAXM];
    if (a.normMode) gemv_norm_prologue(a, inv, sh);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int rowsPerBlock = 8 / a.wpr;
    int gr = blockIdx.x * rowsPerBlock + warp / a.wpr;
    int wInRow = warp % a.wpr;
    float acc[2][GEMV_MAXM];
#pragma unroll
    for (int r = 0; r < 2; r++)
#pragma unroll
        for (int m = 0; m < GEMV_MAXM; m++) acc[r][m] = 0.f;
    int nrow = a.pairMode ? 2 : 1;
    if (gr < a.totalRows) {
        int local = gr, s = a.pairMode ? 0 : seg_of(a, gr, &local);
        WeightDesc w0 = pick_w(a, s), w1 = a.pairMode ? a.seg[1].w : w0;
        long long row = local;
        for (int k = wInRow * 32 + lane; k < a.K; k += 32 * a.wpr) {
            float v0 = load_weight(w0, 0, row, k);
            float v1 = a.pairMode ? load_weight(w1, 0, row, k) : 0.f;
#pragma unroll
            for (int m = 0; m < GEMV_MAXM; m++) {
                if (m >= a.M) break;
                float xv = gemv_x(a, inv, m, k);
                acc[0][m] = fmaf(v0, xv, acc[0][m]);
                if (a.pairMode) acc[1][m] = fmaf(v1, xv, acc[1][m]);
            }
        }
    }
    gemv_finish(a, acc, nrow, part, gr);
}

extern "C" __global__ void __launch_bounds__(GEMV_THREADS) k_gemv_f32(GemvArgs a) { gemv_vec_impl<DT_F32, 8>(a); }
extern "C" __global__ void __launch_bounds__(GEMV_THREADS) k_gemv_f32_m2(GemvArgs a) { gemv_vec_impl<DT_F32, 2>(a); }
extern "C" __global__ void __launch_bounds__(GEMV_THREADS) k_gemv_bf16(GemvArgs a) { gemv_vec_impl<DT_BF16, 8>(a); }
extern "C" __global__ void __launch_bounds__(GEMV_THREADS) k_gemv_bf16_m2(GemvArgs a) { gemv_vec_impl<DT_BF16, 2>(a); }
extern "C" __global__ void __launch_bounds__(GEMV_THREADS) k_gemv_f16(GemvArgs a) { gemv_vec_impl<DT_F16, 8>(a); }
extern "C" __global__ void __launch_bounds__(GEMV_THREADS) k_gemv_f16_m2(GemvArgs a) { gemv_vec_impl<DT_F16, 2>(a); }
extern "C" __global__ void __launch_bounds__(GEMV_THREADS) k_gemv_fp8(GemvArgs a) { gemv_vec_impl<DT_F8E4M3, 8>(a); }
extern "C" __global__ void __launch_bounds__(GEMV_THREADS) k_gemv_fp8_m2(GemvArgs a) { gemv_vec_impl<DT_F8E4M3, 2>(a); }
extern "C" __global__ void __launch_bounds__(GEMV_THREADS) k_gemv_q8(GemvArgs a) { gemv_vec_impl<DT_Q8_0, 8>(a); }
extern "C" __global__ void __launch_bounds__(GEMV_THREADS) k_gemv_q8_m2(GemvArgs a) { gemv_vec_impl<DT_Q8_0, 2>(a); }
extern "C" __global__ void __launch_bounds__(GEMV_THREADS) k_gemv_mxfp4(GemvArgs a) { gemv_vec_impl<DT_MXFP4, 8>(a); }
extern "C" __global__ void __launch_bounds__(GEMV_THREADS) k_gemv_mxfp4_m2(GemvArgs a) { gemv_vec_impl<DT_MXFP4, 2>(a); }

// Column-major weights ([K, O] in memory) for a few rows: one thread per output column, coalesced over o.
extern "C" __global__ void k_gemv_colmajor(const float* x, WeightDesc w, const float* bias, float* y, int M, int K, int O) {
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= O) return;
    float acc[GEMV_MAXM];
#pragma unroll
    for (int m = 0; m < GEMV_MAXM; m++) acc[m] = 0.f;
    for (int k = 0; k < K; k++) {
        float wv = load_weight(w, 0, o, k);
#pragma unroll
        for (int m = 0; m < GEMV_MAXM; m++) if (m < M) acc[m] = fmaf(wv, x[(long long)m * K + k], acc[m]);
    }
#pragma unroll
    for (int m = 0; m < GEMV_MAXM; m++) if (m < M) y[(long long)m * O + o] = acc[m] + (bias ? bias[o] : 0.f);
}

// ---------------- tiled SGEMM ----------------

#define BM 128
#define BN 128
#define BK 8


// C tile = A tile · B tileᵀ with A rows from arow[] (-1: zero row) and B = weight rows n0.. of wd.
__device__ __forceinline__ void gemm_tile(const GemmArgs& a, const WeightDesc& wd, long long batch, const long long* arow,
                                          int n0, float (*acc)[8], float (*As)[BM + 4], float (*Bs)[BN + 4]) {
    int t = threadIdx.x;
    int tx = t & 15, ty = t >> 4;
    for (int k0 = 0; k0 < a.K; k0 += BK) {
        // A: BM x BK, k fastest (contiguous in x).
#pragma unroll
        for (int i = 0; i < (BM * BK) / 256; i++) {
            int e = t + i * 256;
            int m = e / BK, k = e % BK;
            long long r = arow[m];
            As[k][m] = (r >= 0 && k0 + k < a.K) ? a.x[r * a.K + k0 + k] : 0.f;
        }
        // B: BN x BK; row-major weights read k fastest, column-major n fastest.
#pragma unroll
        for (int i = 0; i < (BN * BK) / 256; i++) {
            int e = t + i * 256;
            int n, k;
            if (wd.colMajor) { k = e / BN; n = e % BN; } else { n = e / BK; k = e % BK; }
            Bs[k][n] = (n0 + n < a.N && k0 + k < a.K) ? load_weight(wd, batch, n0 + n, k0 + k) : 0.f;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; k++) {
            float av[8], bv[8];
            float4 a0 = *(const float4*)&As[k][ty * 4], a1 = *(const float4*)&As[k][ty * 4 + 64];
            float4 b0 = *(const float4*)&Bs[k][tx * 4], b1 = *(const float4*)&Bs[k][tx * 4 + 64];
            av[0] = a0.x; av[1] = a0.y; av[2] = a0.z; av[3] = a0.w; av[4] = a1.x; av[5] = a1.y; av[6] = a1.z; av[7] = a1.w;
            bv[0] = b0.x; bv[1] = b0.y; bv[2] = b0.z; bv[3] = b0.w; bv[4] = b1.x; bv[5] = b1.y; bv[6] = b1.z; bv[7] = b1.w;
#pragma unroll
            for (int i = 0; i < 8; i++)
#pragma unroll
                for (int j = 0; j < 8; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        __syncthreads();
    }
}

__device__ __forceinline__ int tile_row(int i) { return (i < 4 ? i : 60 + i); }   // thread-local row i -> ty*4 + ...

extern "C" __global__ void __launch_bounds__(256) k_gemm(GemmArgs a) {
    __shared__ __align__(16) float As[BK][BM + 4];
    __shared__ __align__(16) float Bs[BK][BN + 4];
    __shared__ long long arow[BM];
    __shared__ long long yrow[BM];
    __shared__ int expert;
    int t = threadIdx.x, tx = t & 15, ty = t >> 4;
    int n0 = blockIdx.y * BN;
    long long batch = 0;
    WeightDesc wd = a.w;
    if (a.experts > 0) {
        // Grouped (MoE prefill): tile blockIdx.x of the expert whose tiles cover it.
        int tile = blockIdx.x;
        if (tile >= a.tileStart[a.experts]) return;
        if (t == 0) {
            int lo = 0, hi = a.experts - 1;
            while (lo < hi) { int mid = (lo + hi + 1) >> 1; if (a.tileStart[mid] <= tile) lo = mid; else hi = mid - 1; }
            expert = lo;
        }
        __syncthreads();
        int e = expert;
        int r0 = a.rowStart[e] + (tile - a.tileStart[e]) * BM, r1 = a.rowStart[e + 1];
        for (int i = t; i < BM; i += 256) {
            int sr = r0 + i;
            if (sr < r1) { int pair = a.rowMap[sr]; arow[i] = a.xShared ? pair / a.slots : pair; yrow[i] = pair; }
            else { arow[i] = -1; yrow[i] = -1; }
        }
        wd.data = a.expData[e];
        wd.scales = a.expScales ? a.expScales[e] : nullptr;
        batch = 0;
        __syncthreads();
        float acc[8][8];
#pragma unroll
        for (int i = 0; i < 8; i++)
#pragma unroll
            for (int j = 0; j < 8; j++) acc[i][j] = 0.f;
        gemm_tile(a, wd, 0, arow, n0, acc, As, Bs);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            long long r = yrow[ty * 4 + tile_row(i)];
            if (r < 0) continue;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                int n = n0 + tx * 4 + tile_row(j);
                if (n < a.N) a.y[r * a.N + n] = acc[i][j] + (a.bias ? a.bias[(long long)e * a.N + n] : 0.f);
            }
        }
        return;
    }
    batch = blockIdx.z;
    int m0 = blockIdx.x * BM;
    const float* xb = a.x + batch * a.xBatch;
    for (int i = t; i < BM; i += 256) arow[i] = (m0 + i < a.M) ? (long long)(m0 + i) : -1;
    __syncthreads();
    float acc[8][8];
#pragma unroll
    for (int i = 0; i < 8; i++)
#pragma unroll
        for (int j = 0; j < 8; j++) acc[i][j] = 0.f;
    GemmArgs ab = a;
    ab.x = xb;
    gemm_tile(ab, wd, batch, arow, n0, acc, As, Bs);
    float* yb = a.y + batch * a.yBatch;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        int m = m0 + ty * 4 + tile_row(i);
        if (m >= a.M) continue;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            int n = n0 + tx * 4 + tile_row(j);
            if (n < a.N) yb[(long long)m * a.N + n] = acc[i][j] + (a.bias ? a.bias[n] : 0.f);
        }
    }
}

// ---------------- mixture of experts ----------------


template <int DT>
__device__ __forceinline__ float moe_dot_vec(const WeightDesc& w, long long row, const float* x, int K, int lane) {
    using L = Chunk<DT>;
    constexpr int V = L::VPC;
    float acc = 0.f;
    for (long long c = lane; c < K / V; c += 32) {
        float wv[V];
        L::load(w, row, c, wv);
        const float4* xp = (const float4*)(x + c * V);
        float s = 0.f;
#pragma unroll
        for (int i = 0; i < V / 4; i++) {
            float4 t = __ldg(xp + i);
            s = fmaf(wv[4 * i], t.x, s); s = fmaf(wv[4 * i + 1], t.y, s); s = fmaf(wv[4 * i + 2], t.z, s); s = fmaf(wv[4 * i + 3], t.w, s);
        }
        acc += s;
    }
    return acc;
}

// Decode-sized expert products, vectorized: each warp streams 4 rows of the pair's expert (U 16-byte chunks per row in
// flight per lane), x read once per chunk; grid (ceil(O / 32), pairs). Expert id read from device memory (no host sync).
template <int DT>
__device__ __forceinline__ void moe_vec_impl(const MoeGemvArgs& a) {
    using R = Raw<DT>;
    constexpr int V = R::V;
    constexpr int U = V <= 8 ? 4 : 2;
    constexpr int NS = 4;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int pair = blockIdx.y;
    int row0 = blockIdx.x * 32 + warp * NS;
    if (row0 >= a.O || pair >= a.pairs) return;
    int e = a.ids[pair];
    if ((unsigned)e >= (unsigned)a.experts) {
        // -1: the pair's expert lives on another device (expert parallelism): a zero row.
        if (lane < NS && row0 + lane < a.O) a.y[(long long)pair * a.O + row0 + lane] = e == -1 ? 0.f : __int_as_float(0x7fc00000);
        return;
    }
    WeightDesc w = a.w;
    w.data = a.expData[e];
    w.scales = a.expScales ? a.expScales[e] : nullptr;
    RowStream st[NS];
#pragma unroll
    for (int s = 0; s < NS; s++) st[s] = row_stream(w, row0 + s, row0 + s < a.O);
    const float* x = a.x + (long long)(a.xShared ? pair / a.slots : pair) * a.K;
    float acc[NS];
#pragma unroll
    for (int s = 0; s < NS; s++) acc[s] = 0.f;
    long long chunks = a.K / V;
    for (long long c0 = lane; c0 < chunks; c0 += U * 32) {
        uint4 raw[U][NS];
#pragma unroll
        for (int u = 0; u < U; u++) {
            long long c = c0 + u * 32;
#pragma unroll
            for (int s = 0; s < NS; s++) if (st[s].ok && c < chunks) raw[u][s] = __ldg(st[s].p + c);
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            long long c = c0 + u * 32;
            if (c >= chunks) break;
            const float4* xp = (const float4*)(x + c * V);
            float xv[V];
#pragma unroll
            for (int i = 0; i < V / 4; i++) { float4 t = __ldg(xp + i); xv[4 * i] = t.x; xv[4 * i + 1] = t.y; xv[4 * i + 2] = t.z; xv[4 * i + 3] = t.w; }
#pragma unroll
            for (int s = 0; s < NS; s++) {
                if (!st[s].ok) continue;
                float wv[V];
                R::decode(raw[u][s], st[s], c, wv);
                float d = 0.f;
#pragma unroll
                for (int i = 0; i < V; i++) d = fmaf(wv[i], xv[i], d);
                acc[s] += d;
            }
        }
    }
#pragma unroll
    for (int s = 0; s < NS; s++) {
        float v = warp_sum(acc[s]);
        if (lane == 0 && st[s].ok) a.y[(long long)pair * a.O + row0 + s] = v + (a.bias ? a.bias[(long long)e * a.O + row0 + s] : 0.f);
    }
}

extern "C" __global__ void __launch_bounds__(256) k_moe_gemv_vec(MoeGemvArgs a) {
    switch (a.w.dtype) {
    case DT_F32: moe_vec_impl<DT_F32>(a); break;
    case DT_BF16: moe_vec_impl<DT_BF16>(a); break;
    case DT_F16: moe_vec_impl<DT_F16>(a); break;
    case DT_F8E4M3: moe_vec_impl<DT_F8E4M3>(a); break;
    case DT_Q8_0: moe_vec_impl<DT_Q8_0>(a); break;
    case DT_MXFP4: moe_vec_impl<DT_MXFP4>(a); break;
    }
}

// One warp per (pair, output row), one scalar load per element (any size or layout); grid.y = pair.
extern "C" __global__ void __launch_bounds__(256) k_moe_gemv(MoeGemvArgs a) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int pair = blockIdx.y;
    int o = blockIdx.x * 8 + warp;
    if (o >= a.O || pair >= a.pairs) return;
    int e = a.ids[pair];
    if ((unsigned)e >= (unsigned)a.experts) { if (lane == 0) a.y[(long long)pair * a.O + o] = e == -1 ? 0.f : __int_as_float(0x7fc00000); return; }
    WeightDesc w = a.w;
    w.data = a.expData[e];
    w.scales = a.expScales ? a.expScales[e] : nullptr;
    const float* x = a.x + (long long)(a.xShared ? pair / a.slots : pair) * a.K;
    float acc = 0.f;
    if (a.vec) {
        switch (w.dtype) {
        case DT_F32: acc = moe_dot_vec<DT_F32>(w, o, x, a.K, lane); break;
        case DT_BF16: acc = moe_dot_vec<DT_BF16>(w, o, x, a.K, lane); break;
        case DT_F16: acc = moe_dot_vec<DT_F16>(w, o, x, a.K, lane); break;
        case DT_F8E4M3: acc = moe_dot_vec<DT_F8E4M3>(w, o, x, a.K, lane); break;
        case DT_Q8_0: acc = moe_dot_vec<DT_Q8_0>(w, o, x, a.K, lane); break;
        case DT_MXFP4: acc = moe_dot_vec<DT_MXFP4>(w, o, x, a.K, lane); break;
        }
    } else {
        for (int k = lane; k < a.K; k += 32) acc = fmaf(load_weight(w, 0, o, k), x[k], acc);
    }
    acc = warp_sum(acc);
    if (lane == 0) a.y[(long long)pair * a.O + o] = acc + (a.bias ? a.bias[(long long)e * a.O + o] : 0.f);
}

// Sorts the (token, slot) pairs by expert (one block): rowStart[E+1] prefix counts, rowMap sorted pairs,
// tileStart[E+1] prefix of ceil(count / BM). The order of pairs within an expert does not affect any value.
extern "C" __global__ void k_moe_sort(const int* ids, int pairs, int experts, int* rowStart, int* tileStart, int* rowMap, int* fill) {
    extern __shared__ int cnt[];  // [experts]
    for (int e = threadIdx.x; e < experts; e += blockDim.x) cnt[e] = 0;
    __syncthreads();
    for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
        int e = ids[p];
        if ((unsigned)e < (unsigned)experts) atomicAdd(&cnt[e], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int r = 0, t = 0;
        for (int e = 0; e < experts; e++) {
            rowStart[e] = r; tileStart[e] = t; fill[e] = r;
            r += cnt[e]; t += (cnt[e] + BM - 1) / BM;
        }
        rowStart[experts] = r; tileStart[experts] = t;
    }
    __syncthreads();
    for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
        int e = ids[p];
        if ((unsigned)e < (unsigned)experts) rowMap[atomicAdd(&fill[e], 1)] = p;
    }
}
