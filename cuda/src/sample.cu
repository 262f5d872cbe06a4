// Sampling on the device: the next token of each row of logits [S, V] without copying the logits to the host.
// Order as the host Sampler (HF's processors): repetition penalty (seen-token mask), temperature, top-k, top-p, min-p,
// then a draw from a counter-based generator (seed, step, row), so a seeded run is reproducible.
#include "common.cuh"

// Repetition penalty in place: seen tokens' logits divided (if positive) or multiplied (if negative) by `penalty`.
extern "C" __global__ void k_rep_penalty(float* logits, const uint8_t* seen, int V, float penalty) {
    int row = blockIdx.y;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < V; i += gridDim.x * blockDim.x) {
        long long e = (long long)row * V + i;
        if (seen[e]) { float l = logits[e]; logits[e] = l > 0.f ? l / penalty : l * penalty; }
    }
}

// Order-preserving key of a float (ascending); NaN orders below everything (never chosen, as the host's ArgMax).
__device__ __forceinline__ uint32_t fkey(float f) {
    if (f != f) return 0u;
    uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Greedy, in two launches: blocks of a row fold their slice into one 64-bit key per row (value key, then the complement
// of the index, so the maximum is the first index of the row's maximum, as the host's ArgMax) with atomicMax (order-
// independent: deterministic); then the keys become ids (and the chosen tokens are marked seen).
extern "C" __global__ void k_argmax_partial(const float* logits, int V, unsigned long long* best) {
    __shared__ unsigned long long sk[32];
    int row = blockIdx.y;
    const float* l = logits + (long long)row * V;
    unsigned long long k = 0;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < V; i += gridDim.x * blockDim.x) {
        unsigned long long c = ((unsigned long long)fkey(l[i]) << 32) | (0xFFFFFFFFu - (uint32_t)i);
        k = c > k ? c : k;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) { unsigned long long t = __shfl_xor_sync(0xffffffffu, k, o); k = t > k ? t : k; }
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (lane == 0) sk[w] = k;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int i = 1; i < (int)(blockDim.x >> 5); i++) k = sk[i] > k ? sk[i] : k;
        atomicMax(best + row, k);
    }
}

extern "C" __global__ void k_argmax_finish(const unsigned long long* best, int rows, int V, int* out, uint8_t* seen) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    unsigned long long k = best[r];
    int id = k == 0 ? 0 : (int)(0xFFFFFFFFu - (uint32_t)(k & 0xFFFFFFFFu));
    out[r] = id;
    if (seen) seen[(long long)r * V + id] = 1;
}

__device__ __forceinline__ unsigned long long splitmix64(unsigned long long x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}


#define SAMPLE_THREADS 1024
#define SAMPLE_CAND 2048


// One block per row: the top candidates (at most SAMPLE_CAND, the top-k when set) found by a radix select on the
// logits' order-preserving keys, sorted (value desc, id asc), then top-p / min-p prefixes and a draw.
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) k_sample(SampleArgs a) {
    __shared__ uint32_t hist[256];
    __shared__ uint32_t ckey[SAMPLE_CAND];
    __shared__ int cidx[SAMPLE_CAND];
    __shared__ float cp[SAMPLE_CAND];
    __shared__ uint32_t prefix, want, ncand;
    int row = blockIdx.x, t = threadIdx.x;
    const float* l = a.logits + (long long)row * a.V;
    int C = a.topK > 0 ? min(a.topK, min(a.V, SAMPLE_CAND)) : min(a.V, SAMPLE_CAND);
    // Radix select: the key of the C-th largest element, 8 bits at a time from the top.
    if (t == 0) { prefix = 0; want = C; }
    __syncthreads();
    for (int pass = 0; pass < 4; pass++) {
        int shift = 24 - 8 * pass;
        uint32_t mask = pass == 0 ? 0u : (0xFFFFFFFFu << (shift + 8));
        for (int i = t; i < 256; i += blockDim.x) hist[i] = 0;
        __syncthreads();
        for (int i = t; i < a.V; i += blockDim.x) {
            uint32_t k = fkey(l[i]);
            if ((k & mask) == (prefix & mask)) atomicAdd(&hist[(k >> shift) & 0xFF], 1u);
        }
        __syncthreads();
        if (t == 0) {
            uint32_t acc = 0;
            for (int b = 255; b >= 0; b--) {
                if (acc + hist[b] >= want) { prefix |= (uint32_t)b << shift; want -= acc; break; }
                acc += hist[b];
            }
        }
        __syncthreads();
    }
    // prefix = key of the C-th largest; `want` of the elements equal to it are taken (lowest ids first).
    if (t == 0) ncand = 0;
    __syncthreads();
    uint32_t kth = prefix;
    for (int i = t; i < a.V; i += blockDim.x) {
        uint32_t k = fkey(l[i]);
        if (k > kth) { uint32_t c = atomicAdd(&ncand, 1u); ckey[c] = k; cidx[c] = i; }
    }
    __syncthreads();
    // Ties at the threshold: the lowest ids (one thread scans in order; ties are rare and few).
    if (t == 0) {
        uint32_t c = ncand;
        for (int i = 0; i < a.V && c < (uint32_t)C; i++) if (fkey(l[i]) == kth) { ckey[c] = kth; cidx[c] = i; c++; }
        ncand = c;
    }
    __syncthreads();
    int n = (int)ncand;
    int P = 1; while (P < n) P <<= 1;
    for (int i = n + t; i < P; i += blockDim.x) { ckey[i] = 0; cidx[i] = 0x7fffffff; }
    __syncthreads();
    // Bitonic sort, descending by key then ascending by id.
    for (int size = 2; size <= P; size <<= 1)
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = t; i < P; i += blockDim.x) {
                int j = i ^ stride;
                if (j > i) {
                    bool desc = (i & size) == 0;
                    bool iFirst = ckey[i] > ckey[j] || (ckey[i] == ckey[j] && cidx[i] < cidx[j]);
                    if (desc != iFirst) {
                        uint32_t tk = ckey[i]; ckey[i] = ckey[j]; ckey[j] = tk;
                        int ti = cidx[i]; cidx[i] = cidx[j]; cidx[j] = ti;
                    }
                }
            }
            __syncthreads();
        }
    // Probabilities over the candidates (temperature), top-p prefix, min-p cut.
    float top = l[cidx[0]] * a.invTemperature;
    for (int i = t; i < n; i += blockDim.x) cp[i] = expf(l[cidx[i]] * a.invTemperature - top);
    __syncthreads();
    if (t == 0) {
        double sum = 0; for (int i = 0; i < n; i++) sum += cp[i];
        int keep = n;
        if (a.topP < 1.f) {
            double cum = 0; keep = 0;
            while (keep < n) { cum += cp[keep] / sum; keep++; if (cum >= a.topP) break; }
            if (keep < 1) keep = 1;
        }
        if (a.minP > 0.f) {
            double tp = cp[0]; int k2 = 0;
            while (k2 < keep && cp[k2] >= a.minP * tp) k2++;
            keep = k2 < 1 ? 1 : k2;
        }
        double s2 = 0; for (int i = 0; i < keep; i++) s2 += cp[i];
        unsigned long long h = splitmix64(a.seed ^ splitmix64(a.step * 0x100000001B3ull + (unsigned long long)row));
        double u = (double)(h >> 11) * (1.0 / 9007199254740992.0);
        double r = u * s2;
        int pick = keep - 1;
        for (int i = 0; i < keep; i++) { r -= cp[i]; if (r <= 0) { pick = i; break; } }
        int id = cidx[pick];
        a.out[row] = id;
        if (a.seen) a.seen[(long long)row * a.V + id] = 1;
    }
}

// Marks tokens as seen (prompt tokens, before the first sample): seen[rows[i] * V + ids[i]] = 1.
extern "C" __global__ void k_mark_seen(uint8_t* seen, const int* rows, const int* ids, int n, int V) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        int id = ids[i];
        if ((unsigned)id < (unsigned)V) seen[(long long)rows[i] * V + id] = 1;
    }
}
