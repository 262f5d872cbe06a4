// Element-wise and data-movement kernels: fill, unary, binary (broadcasting), glu, cast, strided copy (slice, concat,
// transpose), gather (any table dtype), take-along, scatter-add. Grid-stride loops over 64-bit indices.
#include "common.cuh"

#define GRID_LOOP(i, n) for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

extern "C" __global__ void k_fill(void* p, long long n, int dtype, float value) {
    GRID_LOOP(i, n) {
        switch (dtype) {
        case DT_F32: ((float*)p)[i] = value; break;
        case DT_I32: ((int*)p)[i] = (int)value; break;
        case DT_BF16: ((__nv_bfloat16*)p)[i] = __float2bfloat16_rn(value); break;
        case DT_F16: ((__half*)p)[i] = __float2half_rn(value); break;
        }
    }
}

// UnaryOp ordinals.
__device__ __forceinline__ float unary_one(int op, float x, float a, float b) {
    switch (op) {
    case 0: return a * x + b;
    case 1: return -x;
    case 2: return fabsf(x);
    case 3: return expf(x);
    case 4: return logf(x);
    case 5: return (float)log1p((double)x);
    case 6: return sqrtf(x);
    case 7: return 1.f / sqrtf(x);
    case 8: return x * x;
    case 9: return floorf(x);
    case 10: return tanhf(x);
    case 11: return 1.f / (1.f + expf(-x));
    case 12: return silu_f(x);
    case 13: return gelu_erf_f(x);
    case 14: return gelu_tanh_f(x);
    case 15: return nan_max(0.f, x);
    case 16: return x > 20.f ? x : (float)log(1.0 + exp((double)x));
    case 17: return a * tanhf(x / a);
    case 18: return x != x ? x : fminf(fmaxf(x, a), b);
    }
    return __int_as_float(0x7fc00000);
}

extern "C" __global__ void k_unary(const float* x, float* y, long long n, int op, float a, float b) {
    GRID_LOOP(i, n) y[i] = unary_one(op, x[i], a, b);
}

__device__ __forceinline__ float binary_one(int op, float a, float b) {
    switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return a / b;
    case 4: return nan_max(a, b);
    case 5: return nan_min(a, b);
    case 6: return a >= b ? 1.f : 0.f;
    }
    return __int_as_float(0x7fc00000);
}


extern "C" __global__ void k_binary(BinaryArgs p) {
    GRID_LOOP(i, p.n) {
        float av, bv;
        if (p.mode == 1) { av = p.a[i]; bv = p.b[i]; }
        else if (p.mode == 2) { av = p.a[i]; bv = p.b[i % p.dy[3]]; }
        else {
            long long rem = i, ia = 0, ib = 0;
#pragma unroll
            for (int d = 3; d >= 0; d--) {
                long long c = rem % p.dy[d]; rem /= p.dy[d];
                ia += c * p.sa[d]; ib += c * p.sb[d];
            }
            av = p.a[ia]; bv = p.b[ib];
        }
        p.y[i] = binary_one(p.op, av, bv);
    }
}

// y[r, i] = glu(gate[r*rowStride + i*gateStep], up[r*rowStride + i*upStep]); y dense [rows, I].
extern "C" __global__ void k_glu(const float* gate, long long gateStep, const float* up, long long upStep, float* y,
                                 long long rows, int I, long long rowStride, int kind, float limit, float alpha) {
    long long n = rows * I;
    GRID_LOOP(e, n) {
        long long r = e / I, i = e % I;
        y[e] = glu_one(kind, gate[r * rowStride + i * gateStep], up[r * rowStride + i * upStep], limit, alpha);
    }
}

__device__ __forceinline__ float to_f32_any(const void* x, int dt, long long i) {
    switch (dt) {
    case DT_F32: return ((const float*)x)[i];
    case DT_BF16: return bf16_to_f32(((const uint16_t*)x)[i]);
    case DT_F16: return __half2float(((const __half*)x)[i]);
    case DT_F64: return (float)((const double*)x)[i];
    case DT_I8: return (float)((const int8_t*)x)[i];
    case DT_I16: return (float)((const int16_t*)x)[i];
    case DT_I32: return (float)((const int*)x)[i];
    case DT_I64: return (float)((const long long*)x)[i];
    case DT_U8: case DT_BOOL: return (float)((const uint8_t*)x)[i];
    case DT_F8E4M3: return fp8e4m3_to_f32(((const uint8_t*)x)[i]);
    }
    return __int_as_float(0x7fc00000);
}

// Casts between F32, BF16, F16 and I32 (float to int truncates toward zero); any plain dtype to F32.
extern "C" __global__ void k_cast(const void* x, void* y, long long n, int from, int to) {
    GRID_LOOP(i, n) {
        if (to == DT_F32) { ((float*)y)[i] = to_f32_any(x, from, i); continue; }
        float v = ((const float*)x)[i];
        switch (to) {
        case DT_I32: {
            // (int)v in C#: NaN -> 0 on x64 (cvttss2si gives int.MinValue; .NET 9+ saturates: NaN -> 0).
            int r;
            if (v != v) r = 0;
            else if (v >= 2147483648.f) r = 2147483647;
            else if (v <= -2147483648.f) r = (int)0x80000000;
            else r = (int)v;
            ((int*)y)[i] = r;
            break;
        }
        case DT_BF16: {
            uint32_t u = __float_as_uint(v);
            uint16_t r;
            if (v != v) r = (uint16_t)((u >> 16) | 0x40);
            else { u += 0x7FFFu + ((u >> 16) & 1u); r = (uint16_t)(u >> 16); }
            ((uint16_t*)y)[i] = r;
            break;
        }
        case DT_F16: ((__half*)y)[i] = __float2half_rn(v); break;
        }
    }
}


extern "C" __global__ void k_copy_nd(CopyArgs p) {
    GRID_LOOP(i, p.n) {
        long long rem = i, is = 0, id = 0;
#pragma unroll
        for (int d = 3; d >= 0; d--) {
            long long c = rem % p.dims[d]; rem /= p.dims[d];
            is += c * p.srcStride[d]; id += c * p.dstStride[d];
        }
        const uint8_t* s = p.src + is * p.esize;
        uint8_t* t = p.dst + id * p.esize;
        switch (p.esize) {
        case 1: *t = *s; break;
        case 2: *(uint16_t*)t = *(const uint16_t*)s; break;
        case 4: *(uint32_t*)t = *(const uint32_t*)s; break;
        case 8: *(uint64_t*)t = *(const uint64_t*)s; break;
        default: for (int b = 0; b < p.esize; b++) t[b] = s[b];
        }
    }
}

// y[i, c] = table[ids[i], c] dequantized; -1 gives a zero row, another id outside [0, V) NaN (the host checks token ids first).
extern "C" __global__ void k_gather(WeightDesc table, const int* ids, int N, int C, float* y) {
    long long n = (long long)N * C;
    GRID_LOOP(e, n) {
        int i = (int)(e / C), c = (int)(e % C);
        int id = ids[i];
        // -1: a row another device holds (vocabulary parallelism) reads as zeros; other ids out of range as NaN.
        y[e] = (unsigned)id < (unsigned)table.rows ? load_weight(table, 0, id, c) : id == -1 ? 0.f : __int_as_float(0x7fc00000);
    }
}

extern "C" __global__ void k_take_along(const float* x, const int* idx, float* y, long long rows, int c, int k) {
    long long n = rows * k;
    GRID_LOOP(e, n) {
        long long r = e / k;
        int i = idx[e];
        y[e] = (unsigned)i < (unsigned)c ? x[r * c + i] : __int_as_float(0x7fc00000);
    }
}

// dst[ids[i], :] += src[i, :]: one thread per column walks the rows in order, so repeated ids accumulate
// deterministically (in the order of i, as the CPU does).
extern "C" __global__ void k_scatter_add(float* dst, const int* ids, const float* src, long long n, int c, long long rows) {
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < c; j += (long long)gridDim.x * blockDim.x)
        for (long long i = 0; i < n; i++) {
            int r = ids[i];
            if ((unsigned long long)r < (unsigned long long)rows) dst[(long long)r * c + j] += src[i * c + j];
        }
}
