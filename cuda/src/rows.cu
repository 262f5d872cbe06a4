// Row kernels: RMSNorm, LayerNorm, softmax, top-k, reductions over any axis, and Gemma 3n's fused row statistics
// and AltUp mixing. Norms use one block per row (float sums in a fixed order: deterministic).
#include "common.cuh"

// Σ x² of one row, block-wide (every thread gets it).
__device__ __forceinline__ float row_sumsq(const float* x, int dim, float* sh) {
    float s = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) { float v = x[i]; s += v * v; }
    return block_sum(s, sh);
}

extern "C" __global__ void k_rmsnorm(const float* x, const float* w, float* y, int rows, int dim, float eps, float offset) {
    __shared__ float sh[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* xr = x + (long long)r * dim;
    float* yr = y + (long long)r * dim;
    float inv = 1.f / sqrtf(row_sumsq(xr, dim, sh) / dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = xr[i] * inv * (w ? offset + w[i] : 1.f);
}

extern "C" __global__ void k_layernorm(const float* x, const float* w, const float* b, float* y, int rows, int dim, float eps) {
    __shared__ float sh[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* xr = x + (long long)r * dim;
    float* yr = y + (long long)r * dim;
    float s = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += xr[i];
    float mean = block_sum(s, sh) / dim;
    float v = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) { float d = xr[i] - mean; v += d * d; }
    float inv = 1.f / sqrtf(block_sum(v, sh) / dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = (xr[i] - mean) * inv * (w ? w[i] : 1.f) + (b ? b[i] : 0.f);
}

extern "C" __global__ void k_softmax(const float* x, float* y, long long rows, int c) {
    __shared__ float sh[32];
    long long r = blockIdx.x;
    if (r >= rows) return;
    const float* xr = x + r * c;
    float* yr = y + r * c;
    float m = -INFINITY;
    for (int i = threadIdx.x; i < c; i += blockDim.x) m = fmaxf(m, xr[i]);
    m = block_max(m, sh);
    float s = 0.f;
    for (int i = threadIdx.x; i < c; i += blockDim.x) s += expf(xr[i] - m);
    s = block_sum(s, sh);
    float inv = 1.f / s;
    for (int i = threadIdx.x; i < c; i += blockDim.x) yr[i] = expf(xr[i] - m) * inv;
}

// (v, i) precedes (w, j) in the top-k order: larger value first, ties by lower index.
__device__ __forceinline__ bool topk_before(float v, int i, float w, int j) { return v > w || (v == w && i < j); }

// One warp per row: k rounds, each picking the first element (in top-k order) after the previous pick.
extern "C" __global__ void k_topk(const float* x, long long rows, int c, int k, float* vals, int* idx) {
    int lane = threadIdx.x & 31;
    long long r = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= rows) return;
    const float* xr = x + r * c;
    float pv = INFINITY; int pi = -1;
    for (int j = 0; j < k; j++) {
        float bv = -INFINITY; int bi = 0x7fffffff;
        for (int i = lane; i < c; i += 32) {
            float v = xr[i];
            if (v != v) v = -INFINITY;
            bool eligible = v < pv || (v == pv && i > pi);
            if (eligible && topk_before(v, i, bv, bi)) { bv = v; bi = i; }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (topk_before(ov, oi, bv, bi)) { bv = ov; bi = oi; }
        }
        if (lane == 0) { vals[r * k + j] = bv; idx[r * k + j] = bi; }
        pv = bv; pi = bi;
    }
}

// ReduceOp ordinals: 0 sum, 1 mean, 2 max, 3 min, 4 mean square. Double accumulation in index order (as the CPU).
extern "C" __global__ void k_reduce(const float* x, float* y, long long outer, int n, long long inner, int op) {
    long long total = outer * inner;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x) {
        long long o = e / inner, i = e % inner;
        const float* p = x + o * n * inner + i;
        double acc = op == 2 ? -INFINITY : op == 3 ? INFINITY : 0.0;
        for (int k = 0; k < n; k++) {
            double v = p[k * inner];
            if (op == 2) acc = v > acc || v != v ? v : acc;
            else if (op == 3) acc = v < acc || v != v ? v : acc;
            else if (op == 4) acc += v * v;
            else acc += v;
        }
        if (op == 1 || op == 4) acc /= n;
        y[e] = (float)acc;
    }
}

// Long rows (inner == 1): one warp per output, lanes split the row; double partial sums combined in a fixed order.
extern "C" __global__ void k_reduce_rows(const float* x, float* y, long long outer, int n, int op) {
    int lane = threadIdx.x & 31;
    long long r = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= outer) return;
    const float* p = x + r * n;
    double acc = op == 2 ? -INFINITY : op == 3 ? INFINITY : 0.0;
    bool nan = false;
    for (int k = lane; k < n; k += 32) {
        double v = p[k];
        if (v != v) nan = true;
        if (op == 2) acc = fmax(acc, v);
        else if (op == 3) acc = fmin(acc, v);
        else if (op == 4) acc += v * v;
        else acc += v;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        double ov = __shfl_xor_sync(0xffffffffu, acc, o);
        acc = op == 2 ? fmax(acc, ov) : op == 3 ? fmin(acc, ov) : acc + ov;
    }
    nan = __any_sync(0xffffffffu, nan);
    if (lane == 0) {
        if (op == 1 || op == 4) acc /= n;
        y[r] = nan && (op == 2 || op == 3) ? __int_as_float(0x7fc00000) : (float)acc;
    }
}

// Gemma 3n: y = x · rms(reference) / sqrt(max(mean(x²), eps)) per row.
extern "C" __global__ void k_match_magnitude(const float* x, const float* ref, float* y, long long rows, int c, float eps) {
    __shared__ float sh[32];
    long long r = blockIdx.x;
    if (r >= rows) return;
    const float* xr = x + r * c; const float* rr = ref + r * c;
    float st = row_sumsq(rr, c, sh);
    float sx = row_sumsq(xr, c, sh);
    float target = sqrtf(st / c), mag = sqrtf(fmaxf(sx / c, eps));
    for (int i = threadIdx.x; i < c; i += blockDim.x) y[r * c + i] = xr[i] * target / mag;
}

// Gemma 3n activation sparsity: relu(x - (mean + std · mult)), population std.
extern "C" __global__ void k_gaussian_topk(const float* x, float* y, long long rows, int c, float mult) {
    __shared__ float sh[32];
    long long r = blockIdx.x;
    if (r >= rows) return;
    const float* xr = x + r * c;
    float s = 0.f;
    for (int i = threadIdx.x; i < c; i += blockDim.x) s += xr[i];
    float mean = block_sum(s, sh) / c;
    float v = 0.f;
    for (int i = threadIdx.x; i < c; i += blockDim.x) { float e = xr[i] - mean; v += e * e; }
    float cutoff = mean + sqrtf(block_sum(v, sh) / c) * mult;
    for (int i = threadIdx.x; i < c; i += blockDim.x) y[r * c + i] = fmaxf(0.f, xr[i] - cutoff);
}

// AltUp predict: out[r, j, d] = s[r, j, d] + Σ_i coefs[r, j*n + i] · s[r, i, d].
extern "C" __global__ void k_altup_predict(const float* s, const float* coefs, float* y, long long rows, int n, int c) {
    long long total = rows * n * c;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x) {
        long long r = e / ((long long)n * c); int j = (int)((e / c) % n); int d = (int)(e % c);
        float acc = 0.f;
        for (int i = 0; i < n; i++) acc += coefs[r * n * n + j * n + i] * s[(r * n + i) * c + d];
        y[e] = acc + s[e];
    }
}

// AltUp correct: out[r, i, d] = (act[r, d] - pred[r, active, d]) · (coefs[r, i] + 1) + pred[r, i, d].
extern "C" __global__ void k_altup_correct(const float* pred, const float* act, const float* coefs, float* y, long long rows, int n, int c, int active) {
    long long total = rows * n * c;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (long long)gridDim.x * blockDim.x) {
        long long r = e / ((long long)n * c); int i = (int)((e / c) % n); int d = (int)(e % c);
        float innovation = act[r * c + d] - pred[(r * n + active) * c + d];
        y[e] = innovation * (coefs[r * n + i] + 1.f) + pred[e];
    }
}
