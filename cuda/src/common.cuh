// Shared definitions of the LlmArch CUDA kernels: dtype codes (the C# DType enum's ordinals), element loaders for every
// stored dtype (plain and block-quantized), the argument structs passed by value (mirrored field for field by
// src/LlmArch.Core/Compute/Cuda/KernelArgs.cs; cuda/layout.txt records their offsets and a test compares them), and
// warp/block reductions. Every kernel is extern "C" so the backend finds it by name in the fatbin.
#pragma once
#include <stdint.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include "args.cuh"

#define DT_F32 0
#define DT_BF16 1
#define DT_F16 2
#define DT_F64 3
#define DT_I8 4
#define DT_I16 5
#define DT_I32 6
#define DT_I64 7
#define DT_U8 8
#define DT_BOOL 9
#define DT_F8E4M3 10
#define DT_MXFP4 11
#define DT_Q8_0 12


__device__ __forceinline__ float bf16_to_f32(uint16_t v) { return __uint_as_float(((uint32_t)v) << 16); }

__device__ __forceinline__ float fp8e4m3_to_f32(uint32_t b) {
    uint32_t sign = (b >> 7) & 1, exp = (b >> 3) & 0xF, man = b & 7;
    float v;
    if (exp == 0xF && man == 7) v = __int_as_float(0x7fc00000);
    else if (exp == 0) v = (float)man * 0.001953125f; // man/8 * 2^-6
    else v = __uint_as_float(((exp + 120u) << 23) | (man << 20));
    return sign ? -v : v;
}

__device__ __forceinline__ float e8m0_to_f32(uint32_t b) {
    if (b == 0xFF) return __int_as_float(0x7fc00000);
    return __uint_as_float(b == 0 ? 0x00400000u : (b << 23));
}

__device__ __forceinline__ float fp4_to_f32(uint32_t nib) {
    // e2m1: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives.
    uint32_t e = (nib >> 1) & 3, m = nib & 1;
    float v = e == 0 ? 0.5f * (float)m : __uint_as_float(((e + 126u) << 23) | (m << 22));
    return (nib & 8) ? -v : v;
}

// Element (row, col) of matrix `batch` of w, dequantized. The plain reference loader: every fast path is checked against it.
__device__ __forceinline__ float load_weight(const WeightDesc& w, long long batch, long long row, long long col) {
    long long base = batch * w.batchStride;
    long long e = w.colMajor ? col * (long long)w.rows + row : row * (long long)w.cols + col;
    switch (w.dtype) {
    case DT_F32: return ((const float*)w.data)[base + e];
    case DT_BF16: return bf16_to_f32(((const uint16_t*)w.data)[base + e]);
    case DT_F16: return __half2float(((const __half*)w.data)[base + e]);
    case DT_F64: return (float)((const double*)w.data)[base + e];
    case DT_I8: return (float)((const int8_t*)w.data)[base + e];
    case DT_I16: return (float)((const int16_t*)w.data)[base + e];
    case DT_I32: return (float)((const int*)w.data)[base + e];
    case DT_I64: return (float)((const long long*)w.data)[base + e];
    case DT_U8: case DT_BOOL: return (float)((const uint8_t*)w.data)[base + e];
    case DT_F8E4M3: {
        float v = fp8e4m3_to_f32(((const uint8_t*)w.data)[base + e]);
        if (w.scales) v *= ((const float*)w.scales)[batch * w.scaleBatchStride + (row / w.br) * w.scaleCols + col / w.bc];
        return v;
    }
    case DT_MXFP4: {
        const uint8_t* r = (const uint8_t*)w.data + (base >> 1) + row * (long long)(w.cols / 2);
        uint32_t nib = (r[col >> 1] >> ((col & 1) * 4)) & 0xF;
        return fp4_to_f32(nib) * e8m0_to_f32(((const uint8_t*)w.scales)[batch * w.scaleBatchStride + row * w.scaleCols + col / w.bc]);
    }
    case DT_Q8_0: {
        float q = (float)((const int8_t*)w.data)[base + e];
        return q * ((const float*)w.scales)[batch * w.scaleBatchStride + row * w.scaleCols + col / w.bc];
    }
    }
    return __int_as_float(0x7fc00000);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result. Fixed order: deterministic.
__device__ __forceinline__ float block_sum(float v, float* sh /* 32 floats */) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    float r = lane < nw ? sh[lane] : 0.f;
    r = warp_sum(r);
    return r;
}

__device__ __forceinline__ double block_sum_d(double v, double* sh /* 32 doubles */) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    double r = lane < nw ? sh[lane] : 0.0;
    return warp_sum_d(r);
}

__device__ __forceinline__ float block_max(float v, float* sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    float r = lane < nw ? sh[lane] : -INFINITY;
    return warp_max(r);
}

__device__ __forceinline__ float silu_f(float x) { return x / (1.f + expf(-x)); }
// max / min that keep a NaN (fmaxf and fminf return the other operand), as the CPU and the reference do
__device__ __forceinline__ float nan_max(float a, float b) { return (a != a || b != b) ? a + b : fmaxf(a, b); }
__device__ __forceinline__ float nan_min(float a, float b) { return (a != a || b != b) ? a + b : fminf(a, b); }
__device__ __forceinline__ float gelu_erf_f(float x) { return (float)(0.5 * (double)x * (1.0 + erf((double)x / 1.4142135623730951))); }
__device__ __forceinline__ float gelu_tanh_f(float x) { return 0.5f * x * (1.f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x))); }

// Gated activations (GluKind ordinals).
__device__ __forceinline__ float glu_one(int kind, float g, float u, float limit, float alpha) {
    switch (kind) {
    case 0: return silu_f(g) * u;
    case 1: return gelu_tanh_f(g) * u;
    case 2: return gelu_erf_f(g) * u;
    case 3: return nan_max(0.f, g) * u;
    default: {
        g = nan_min(g, limit);
        u = nan_min(nan_max(u, -limit), limit);
        return (u + 1.f) * (g / (1.f + expf(-g * alpha)));
    }
    }
}
