// Per-sequence recurrent kernels: the causal depthwise conv1d with its rolling state, and Gated DeltaNet's delta
// rule (the fused IFusedDeltaRule form), both reading each sequence's slot, offset and count from the device table.
#include "common.cuh"

// grid (ceil(ch / 256), S): one thread per (sequence, channel) walks the sequence's tokens in order.
extern "C" __global__ void k_conv1d(const float* x, const float* w, float* state, float* y, const int* table, int ch, int K, int silu) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    int s = blockIdx.y;
    if (c >= ch) return;
    int slot = table[4 * s], T = table[4 * s + 2], off = table[4 * s + 3];
    int S = K - 1;
    float* st = state + (long long)slot * S * ch;
    for (int t = 0; t < T; t++) {
        float acc = 0.f;
        for (int j = 0; j < K; j++) {
            int tau = t - S + j;
            float in = tau < 0 ? st[(long long)(S + tau) * ch + c] : x[((long long)off + tau) * ch + c];
            acc = fmaf(w[(long long)c * K + j], in, acc);
        }
        y[((long long)off + t) * ch + c] = silu ? acc / (1.f + expf(-acc)) : acc;
    }
    // New state: the last K-1 inputs (from the old state where the sequence is shorter than that).
    float ns[16];
#pragma unroll
    for (int j = 0; j < 16; j++) {
        if (j >= S) break;
        int tau = T - S + j;
        ns[j] = tau < 0 ? st[(long long)(S + tau) * ch + c] : x[((long long)off + tau) * ch + c];
    }
#pragma unroll
    for (int j = 0; j < 16; j++) { if (j >= S) break; st[(long long)j * ch + c] = ns[j]; }
}

// Gated delta rule, token by token, grid (S, Hv), Dv threads (one per state column), state in shared memory
// (Dk*Dv floats, + 2*Dk for the normalized q and k). Per token: S = e^g S; δ = β(v - Sᵀk); S += k ⊗ δ; o = Sᵀq.
extern "C" __global__ void k_delta_rule(const float* q, const float* k, const float* v, const float* g, const float* beta,
                                        float* state, float* y, const int* table, int Hk, int Hv, int Dk, int Dv) {
    extern __shared__ float smem[];
    float* S = smem;                 // [Dk][Dv]
    float* qn = S + Dk * Dv;         // [Dk]
    float* kn = qn + Dk;             // [Dk]
    __shared__ float sh[32];
    int s = blockIdx.x, h = blockIdx.y, j = threadIdx.x;
    int slot = table[4 * s], T = table[4 * s + 2], off = table[4 * s + 3];
    int r = Hv / Hk;
    float* gs = state + ((long long)slot * Hv + h) * Dk * Dv;
    for (int e = threadIdx.x; e < Dk * Dv; e += blockDim.x) S[e] = gs[e];
    float scale = 1.f / sqrtf((float)Dk);
    for (int t = 0; t < T; t++) {
        long long n = off + t;
        const float* qr = q + (n * Hk + h / r) * Dk;
        const float* kr = k + (n * Hk + h / r) * Dk;
        float sq = 0.f, sk = 0.f;
        for (int i = threadIdx.x; i < Dk; i += blockDim.x) { sq += qr[i] * qr[i]; sk += kr[i] * kr[i]; }
        sq = block_sum(sq, sh);
        sk = block_sum(sk, sh);
        float iq = 1.f / sqrtf(sq + 1e-6f), ik = 1.f / sqrtf(sk + 1e-6f);
        for (int i = threadIdx.x; i < Dk; i += blockDim.x) { qn[i] = qr[i] * iq * scale; kn[i] = kr[i] * ik; }
        __syncthreads();
        float decay = expf(g[n * Hv + h]), b = beta[n * Hv + h];
        if (j < Dv) {
            float mem = 0.f;
            for (int i = 0; i < Dk; i++) { float sv = S[i * Dv + j] * decay; S[i * Dv + j] = sv; mem = fmaf(sv, kn[i], mem); }
            float vj = v[(n * Hv + h) * Dv + j];
            float delta = vj * b + mem * -b;
            float o = 0.f;
            for (int i = 0; i < Dk; i++) { float sv = fmaf(kn[i], delta, S[i * Dv + j]); S[i * Dv + j] = sv; o = fmaf(sv, qn[i], o); }
            y[(n * Hv + h) * Dv + j] = o;
        }
        __syncthreads();
    }
    for (int e = threadIdx.x; e < Dk * Dv; e += blockDim.x) gs[e] = S[e];
}
