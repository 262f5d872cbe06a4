// Sequence kernels: RoPE (positions from device memory), KV-cache writes at each token's slot and position, and causal
// attention over the cache plus the step's own keys with every variant the models use (GQA, sliding window, chunked,
// softcap, sinks, Grok's length temperature, values as a key prefix for MLA's latent cache).
//
// k_attention_*: block = (token, kv head x chunk of query heads, split of key positions); 4 warps, each warp walks
// every 4th key of the split with the whole warp on one key (coalesced 16-byte rows), scores per query row by a warp
// reduction, online softmax per warp, warps merged at the end in a fixed order. With splits > 1 each split writes
// (max, sum, unnormalized output) and k_attention_combine merges them (split-KV for long contexts). The split size is
// a function of the step's context bucket, not of the data, so a captured step replays for any length in its bucket.
#include "common.cuh"

extern "C" __global__ void k_rope(float* x, int N, int H, int D, const int* pos, const float* cosT, const float* sinT, int rot, int interleaved) {
    int half = rot / 2;
    long long total = (long long)N * H * half;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x) {
        int i = (int)(e % half);
        long long nh = e / half;
        int n = (int)(nh / H);
        float* v = x + nh * D;
        int p = pos[n];
        float c = cosT[(long long)p * half + i], s = sinT[(long long)p * half + i];
        int i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + half;
        float a = v[i0], b = v[i1];
        v[i0] = a * c - b * s;
        v[i1] = b * c + a * s;
    }
}

// dst [slots, cap, row] ← src [N, row] at (slot of token n's sequence, its position, modulo cap for a ring); keys and
// (when dstV is set) values in one launch.
extern "C" __global__ void k_cache_write(float* dst, const float* src, int row, float* dstV, const float* srcV, int rowV,
                                         int N, const int* pos, const int* seq, const int* table, int cap, int ring) {
    long long nk = (long long)N * row, total = nk + (dstV ? (long long)N * rowV : 0);
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x) {
        bool isV = e >= nk;
        long long f = isV ? e - nk : e;
        int w = isV ? rowV : row;
        int n = (int)(f / w), i = (int)(f % w);
        int s = seq[n], p = pos[n];
        int slot = table[4 * s], start = table[4 * s + 1], count = table[4 * s + 2];
        if (ring) { if (p < start + count - cap) continue; }
        else if (p >= cap) continue;
        int r = ring ? p % cap : p;
        if (isV) dstV[((long long)slot * cap + r) * rowV + i] = srcV[f];
        else dst[((long long)slot * cap + r) * row + i] = src[f];
    }
}

// Row programs: for each of up to two tensors, per row an optional RMSNorm (x -> y with weight (offset + w)) and then an
// optional RoPE in place on y (rows are [token, head]; the token's position from device memory). One block per row
// over both tensors: QK-norm + RoPE of q and k in one launch (or RoPE of q and k alone).
extern "C" __global__ void k_rowprog(RowProg p0, RowProg p1, int n) {
    __shared__ float sh[32];
    __shared__ float buf[1024];
    int row = blockIdx.x;
    RowProg p;
    if (n == 2 && row >= p0.rows) { p = p1; row -= p0.rows; } else p = p0;
    if (row >= p.rows) return;
    const float* xr = p.x + (long long)row * p.dim;
    float* yr = p.y + (long long)row * p.dim;
    bool staged = p.dim <= 1024;
    if (p.norm) {
        float s = 0.f;
        for (int i = threadIdx.x; i < p.dim; i += blockDim.x) { float v = xr[i]; s += v * v; }
        s = block_sum(s, sh);
        float inv = 1.f / sqrtf(s / p.dim + p.eps);
        for (int i = threadIdx.x; i < p.dim; i += blockDim.x) {
            float v = xr[i] * inv * (p.w ? p.offset + p.w[i] : 1.f);
            if (staged && p.rope) buf[i] = v; else yr[i] = v;
        }
    } else if (p.rope && staged) {
        for (int i = threadIdx.x; i < p.dim; i += blockDim.x) buf[i] = xr[i];
    }
    if (!p.rope) return;
    __syncthreads();
    int half = p.rot / 2;
    int pos = p.pos[row / p.heads];
    float* src = staged ? buf : yr;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float c = p.cosT[(long long)pos * half + i], sn = p.sinT[(long long)pos * half + i];
        int i0 = p.interleaved ? 2 * i : i, i1 = p.interleaved ? 2 * i + 1 : i + half;
        float a = src[i0], b = src[i1];
        yr[i0] = a * c - b * sn;
        yr[i1] = b * c + a * sn;
    }
    if (staged)
        for (int i = p.rot + threadIdx.x; i < p.dim; i += blockDim.x) yr[i] = src[i];
}

template <int KPL, int VPL, int RB, int KU>
__device__ __forceinline__ void attention_impl(const AttnArgs& a) {
    __shared__ float qs[RB][KPL * 32];
    __shared__ float mo[4][RB][VPL * 32];
    __shared__ float mm[4][RB], ml[4][RB];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int n = blockIdx.x;
    int G = a.Hq / a.Hkv;
    int chunks = (G + a.rowsPerBlock - 1) / a.rowsPerBlock;
    int kh = blockIdx.y / chunks, hc = blockIdx.y % chunks;
    int h0 = kh * G + hc * a.rowsPerBlock;
    int rows = min(a.rowsPerBlock, G - hc * a.rowsPerBlock);
    int split = blockIdx.z;
    int p = a.pos[n], s = a.seq[n];
    int slot = a.table[4 * s], st = a.table[4 * s + 1], off = a.table[4 * s + 3];
    int lo = 0;
    if (a.window > 0) lo = max(lo, p - a.window + 1);
    if (a.chunk > 0) lo = max(lo, p / a.chunk * a.chunk);
    int j0 = max(lo, split * a.keysPerSplit), j1 = min(p, split * a.keysPerSplit + a.keysPerSplit - 1);
    float temp = a.tempLen > 0 && p > a.tempLen ? log2f((float)p) * (1.f / log2f((float)a.tempLen)) : 1.f;
    for (int e = threadIdx.x; e < RB * KPL * 32; e += blockDim.x) {
        int r = e / (KPL * 32), d = e % (KPL * 32);
        qs[r][d] = (r < rows && d < a.Dk) ? a.q[((long long)n * a.Hq + h0 + r) * a.Dk + d] : 0.f;
    }
    __syncthreads();
    float m[RB], l[RB], o[RB][VPL];
#pragma unroll
    for (int r = 0; r < RB; r++) {
        m[r] = -INFINITY; l[r] = 0.f;
#pragma unroll
        for (int i = 0; i < VPL; i++) o[r][i] = 0.f;
    }
    // KU keys per warp in flight (the same keys in the same order as one at a time: identical results).
    for (int jb = j0 + warp; jb <= j1; jb += 4 * KU) {
        float kv[KU][KPL], vv[KU][VPL];
#pragma unroll
        for (int ku = 0; ku < KU; ku++) {
            int j = jb + 4 * ku;
            if (j > j1) break;
            const float* kr;
            const float* vr;
            if (j >= st) {
                kr = a.k + ((long long)(off + j - st) * a.Hkv + kh) * a.Dk;
                vr = a.vFromK ? kr : a.v + ((long long)(off + j - st) * a.Hkv + kh) * a.Dv;
            } else {
                long long cr = (long long)slot * a.cap + (a.ring ? j % a.cap : j);
                kr = a.ck + (cr * a.Hkv + kh) * a.Dk;
                vr = a.vFromK ? kr : a.cv + (cr * a.Hkv + kh) * a.Dv;
            }
#pragma unroll
            for (int i = 0; i < KPL; i++) { int d = lane + 32 * i; kv[ku][i] = d < a.Dk ? kr[d] : 0.f; }
#pragma unroll
            for (int i = 0; i < VPL; i++) { int d = lane + 32 * i; vv[ku][i] = d < a.Dv ? vr[d] : 0.f; }
        }
#pragma unroll
        for (int ku = 0; ku < KU; ku++) {
            if (jb + 4 * ku > j1) break;
#pragma unroll
            for (int r = 0; r < RB; r++) {
                if (r >= rows) break;
                float dot = 0.f;
#pragma unroll
                for (int i = 0; i < KPL; i++) dot = fmaf(qs[r][lane + 32 * i], kv[ku][i], dot);
                float sc = warp_sum(dot) * a.scale;
                if (a.softcap > 0.f) sc = a.softcap * tanhf(sc / a.softcap);
                sc *= temp;
                float mn = fmaxf(m[r], sc);
                float corr = expf(m[r] - mn);   // m = -inf first: exp(-inf) = 0
                float pr = expf(sc - mn);
                l[r] = l[r] * corr + pr;
#pragma unroll
                for (int i = 0; i < VPL; i++) o[r][i] = o[r][i] * corr + pr * vv[ku][i];
                m[r] = mn;
            }
        }
    }
    // Merge the 4 warps in a fixed order.
#pragma unroll
    for (int r = 0; r < RB; r++) {
        if (lane == 0) { mm[warp][r] = m[r]; ml[warp][r] = l[r]; }
#pragma unroll
        for (int i = 0; i < VPL; i++) mo[warp][r][lane + 32 * i] = o[r][i];
    }
    __syncthreads();
    for (int e = threadIdx.x; e < rows * a.Dv; e += blockDim.x) {
        int r = e / a.Dv, d = e % a.Dv;
        float M = -INFINITY;
        for (int w = 0; w < 4; w++) M = fmaxf(M, mm[w][r]);
        float L = 0.f, O = 0.f;
        for (int w = 0; w < 4; w++) {
            if (mm[w][r] == -INFINITY) continue;
            float f = expf(mm[w][r] - M);
            L += ml[w][r] * f;
            O += mo[w][r][d] * f;
        }
        int h = h0 + r;
        if (a.splits == 1) {
            if (a.sinks) {
                float sink = a.sinks[h];
                float M2 = fmaxf(M, sink);
                float f = M == -INFINITY ? 0.f : expf(M - M2);
                L = L * f + expf(sink - M2);
                O *= f;
            }
            a.out[((long long)n * a.Hq + h) * a.Dv + d] = O / L;
        } else {
            long long pi = ((long long)n * a.Hq + h) * a.splits + split;
            a.partO[pi * a.Dv + d] = O;
            if (d == 0) { a.partML[2 * pi] = M; a.partML[2 * pi + 1] = L; }
        }
    }
}

extern "C" __global__ void __launch_bounds__(128) k_attention_d128(AttnArgs a) { attention_impl<4, 4, 8, 4>(a); }
extern "C" __global__ void __launch_bounds__(128) k_attention_d256(AttnArgs a) { attention_impl<8, 8, 4, 2>(a); }
extern "C" __global__ void __launch_bounds__(128) k_attention_d576(AttnArgs a) { attention_impl<18, 16, 2, 1>(a); }

// Merges the splits of each (token, head) and the sink logit: out = Σ_z O_z e^(M_z - M) / (Σ_z L_z e^(M_z - M) + e^(sink - M)).
extern "C" __global__ void k_attention_combine(const float* partO, const float* partML, const float* sinks, float* out, int N, int Hq, int Dv, int splits) {
    int n = blockIdx.x, h = blockIdx.y;
    long long base = ((long long)n * Hq + h) * splits;
    float M = -INFINITY;
    for (int z = 0; z < splits; z++) M = fmaxf(M, partML[2 * (base + z)]);
    float sink = sinks ? sinks[h] : -INFINITY;
    float M2 = fmaxf(M, sink);
    float L = 0.f;
    for (int z = 0; z < splits; z++) {
        float mz = partML[2 * (base + z)];
        if (mz == -INFINITY) continue;
        L += partML[2 * (base + z) + 1] * expf(mz - M2);
    }
    if (sinks) L += expf(sink - M2);
    for (int d = threadIdx.x; d < Dv; d += blockDim.x) {
        float O = 0.f;
        for (int z = 0; z < splits; z++) {
            float mz = partML[2 * (base + z)];
            if (mz == -INFINITY) continue;
            O += partO[(base + z) * Dv + d] * expf(mz - M2);
        }
        out[((long long)n * Hq + h) * Dv + d] = O / L;
    }
}

// Prefill attention, flash style (FP32 FFMA): block = 64 query rows of one sequence x one query head; key tiles of 64
// (from the cache below the sequence's start, from the step's keys above) staged in shared memory with the queries;
// scores 4x4 per thread, online softmax per row across the 16 threads sharing it, P·V 4 rows x 8 value columns per
// thread. Dk, Dv <= 128. tiles[2t] = sequence, tiles[2t+1] = first token of the tile within the sequence.
extern "C" __global__ void __launch_bounds__(256) k_flash_attn(AttnArgs a, const int* tiles) {
    extern __shared__ float sm[];
    const int Dk = a.Dk, Dv = a.Dv, DK1 = Dk + 1;
    float* Qs = sm;                 // [64][Dk + 1]
    float* Ks = Qs + 64 * DK1;      // [64][Dk + 1]
    float* Vs = Ks + 64 * DK1;      // [64][Dv]
    float* Ps = Vs + 64 * Dv;       // [64][65]
    int tile = blockIdx.x, h = blockIdx.y, kh = h / (a.Hq / a.Hkv);
    int s = tiles[2 * tile], t0 = tiles[2 * tile + 1];
    int slot = a.table[4 * s], st = a.table[4 * s + 1], count = a.table[4 * s + 2], off = a.table[4 * s + 3];
    int nq = min(64, count - t0);
    int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    for (int e = tid; e < 64 * Dk; e += 256) {
        int i = e / Dk, d = e % Dk;
        Qs[i * DK1 + d] = i < nq ? a.q[((long long)(off + t0 + i) * a.Hq + h) * Dk + d] : 0.f;
    }
    float m[4], l[4], o[4][8], temp[4];
    int prow[4], lo[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int r = ty * 4 + i;
        int p = st + t0 + r;
        prow[i] = r < nq ? p : -1;
        int lw = 0;
        if (a.window > 0) lw = max(lw, p - a.window + 1);
        if (a.chunk > 0) lw = max(lw, p / a.chunk * a.chunk);
        lo[i] = lw;
        temp[i] = a.tempLen > 0 && p > a.tempLen ? log2f((float)p) * (1.f / log2f((float)a.tempLen)) : 1.f;
        m[i] = -INFINITY; l[i] = 0.f;
#pragma unroll
        for (int c = 0; c < 8; c++) o[i][c] = 0.f;
    }
    int pFirst = st + t0, pLast = st + t0 + nq - 1;
    int kbeg = 0;
    if (a.window > 0) kbeg = max(kbeg, pFirst - a.window + 1);
    if (a.chunk > 0) kbeg = max(kbeg, pFirst / a.chunk * a.chunk);
    for (int kt = kbeg; kt <= pLast; kt += 64) {
        __syncthreads();
        for (int e = tid; e < 64 * Dk; e += 256) {
            int jj = e / Dk, d = e % Dk, j = kt + jj;
            float kv = 0.f;
            if (j <= pLast) {
                const float* kr = j >= st ? a.k + ((long long)(off + j - st) * a.Hkv + kh) * Dk
                                          : a.ck + (((long long)slot * a.cap + (a.ring ? j % a.cap : j)) * a.Hkv + kh) * Dk;
                kv = kr[d];
            }
            Ks[jj * DK1 + d] = kv;
        }
        for (int e = tid; e < 64 * Dv; e += 256) {
            int jj = e / Dv, d = e % Dv, j = kt + jj;
            float vv = 0.f;
            if (j <= pLast) {
                const float* vr = j >= st ? a.v + ((long long)(off + j - st) * a.Hkv + kh) * Dv
                                          : a.cv + (((long long)slot * a.cap + (a.ring ? j % a.cap : j)) * a.Hkv + kh) * Dv;
                vv = vr[d];
            }
            Vs[jj * Dv + d] = vv;
        }
        __syncthreads();
        float sc[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int jj = 0; jj < 4; jj++) sc[i][jj] = 0.f;
        for (int d = 0; d < Dk; d++) {
            float qv[4], kv[4];
#pragma unroll
            for (int i = 0; i < 4; i++) qv[i] = Qs[(ty * 4 + i) * DK1 + d];
#pragma unroll
            for (int jj = 0; jj < 4; jj++) kv[jj] = Ks[(tx + 16 * jj) * DK1 + d];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int jj = 0; jj < 4; jj++) sc[i][jj] = fmaf(qv[i], kv[jj], sc[i][jj]);
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float mx = -INFINITY;
#pragma unroll
            for (int jj = 0; jj < 4; jj++) {
                int j = kt + tx + 16 * jj;
                float v = -INFINITY;
                if (prow[i] >= 0 && j >= lo[i] && j <= prow[i]) {
                    v = sc[i][jj] * a.scale;
                    if (a.softcap > 0.f) v = a.softcap * tanhf(v / a.softcap);
                    v *= temp[i];
                }
                sc[i][jj] = v;
                mx = fmaxf(mx, v);
            }
#pragma unroll
            for (int ofs = 8; ofs > 0; ofs >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, ofs));
            float mn = fmaxf(m[i], mx);
            float corr = mn == -INFINITY ? 1.f : expf(m[i] - mn);
            float rs = 0.f;
#pragma unroll
            for (int jj = 0; jj < 4; jj++) {
                float pv = mn == -INFINITY ? 0.f : expf(sc[i][jj] - mn);
                Ps[(ty * 4 + i) * 65 + tx + 16 * jj] = pv;
                rs += pv;
            }
#pragma unroll
            for (int ofs = 8; ofs > 0; ofs >>= 1) rs += __shfl_xor_sync(0xffffffffu, rs, ofs);
            l[i] = l[i] * corr + rs;
            m[i] = mn;
#pragma unroll
            for (int c = 0; c < 8; c++) o[i][c] *= corr;
        }
        __syncthreads();
        for (int jj = 0; jj < 64; jj++) {
            float pv[4], vv[8];
#pragma unroll
            for (int i = 0; i < 4; i++) pv[i] = Ps[(ty * 4 + i) * 65 + jj];
#pragma unroll
            for (int c = 0; c < 8; c++) { int d = tx + 16 * c; vv[c] = d < Dv ? Vs[jj * Dv + d] : 0.f; }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int c = 0; c < 8; c++) o[i][c] = fmaf(pv[i], vv[c], o[i][c]);
        }
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int r = ty * 4 + i;
        if (r >= nq) continue;
        float L = l[i], f = 1.f;
        if (a.sinks) {
            float sink = a.sinks[h];
            float M2 = fmaxf(m[i], sink);
            f = m[i] == -INFINITY ? 0.f : expf(m[i] - M2);
            L = L * f + expf(sink - M2);
        }
        float* op = a.out + ((long long)(off + t0 + r) * a.Hq + h) * Dv;
#pragma unroll
        for (int c = 0; c < 8; c++) { int d = tx + 16 * c; if (d < Dv) op[d] = o[i][c] * f / L; }
    }
}
