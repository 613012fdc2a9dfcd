// impnb.cuh: the one header of impnb's CUDA C kernels (impnb/cuda/kernels/<family>.cu). impnb.cuda._launch
// pastes it in place of `#include "impnb.cuh"` before NVRTC compiles a family's file, so every file is one
// translation unit with no include path to set up.
//
// What lives here: constants, block reductions, the weight-format decoders (FP8 E4M3, E2M1, f16, bf16) and the
// GEMV building blocks several families share (the engine's GEMV with its fused input stages).
//
// Dimension legend:
//   N  output rows of a linear          K  input width of a linear (K % 16 == 0 for NVFP4, % 8 for 16-bit, % 4 f32)
//   H  query heads   HKV kv heads   D  head dim   R  rotary dim (<= D)   F = R / 2 frequencies
//   C  cache slots of a layer (ring capacity)      S  attention splits (C / chunk)      V  vocabulary
//   E  experts       TK  experts per token (top-k) I  expert intermediate width
//
// Numerics: every activation is float32 and every accumulation is float32 (the residual stream too). Weights are
// NVFP4 (E2M1 codes + FP8 E4M3 group scales + a per-row float multiplier) or dense f32 / f16 / bf16.
// Device state `st` (int32): st[0] = position of the token being processed, st[1] = that token, st[2] = number of
// tokens generated so far. The decode graph reads them and argmax_select advances them, so a replay needs no host
// update.
#ifndef IMPNB_CUH
#define IMPNB_CUH
#include <cuda_fp16.h>

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;

#define WARPS 8
#define NEG_INF __int_as_float(0xff800000)  /* -inf without math.h (NVRTC) */
#define THREADS (WARPS * 32)
#define FMT_NVFP4 0
#define FMT_F32 1
#define FMT_F16 2
#define FMT_BF16 3
#define IN_PLAIN 0
#define IN_NORM 1
#define IN_SILU 2
#define IN_GELU 3

// ---------------------------------------------------------------- reductions
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block; every thread gets the result. red: shared [32].
__device__ float block_sum(float v, float* red) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    return warp_sum(lane < nw ? red[lane] : 0.f);
}

// 1 / sqrt(mean(x[0:n]^2) + eps) over a row that the whole block reads: each thread sums its strided elements in
// order, then block_sum (every thread gets the same value).
__device__ float block_rms_inverse(const float* x, int n, float eps, float* red) {
    float ss = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) ss += x[i] * x[i];
    ss = block_sum(ss, red);
    return 1.0f / sqrtf(ss / (float)n + eps);
}

__device__ float block_max(float v, float* red) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    return warp_max(lane < nw ? red[lane] : NEG_INF);
}

// ---------------------------------------------------------------- formats
// Bit casts and IEEE float64 operations the exact_dequant section uses (host equivalents in its test).
__device__ __forceinline__ unsigned long long dbl_bits(double x) { return (unsigned long long)__double_as_longlong(x); }
__device__ __forceinline__ unsigned f32_bits(float x) { return __float_as_uint(x); }
__device__ __forceinline__ float bits_f32(unsigned u) { return __uint_as_float(u); }
__device__ __forceinline__ double dadd_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double dsub_rn(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double ldexp_pow2(double a, int e) { return a * __longlong_as_double((long long)(e + 1023) << 52); }

// fp16 bits -> float through the PTX convert (no cuda_fp16.h needed under NVRTC).
__device__ __forceinline__ float h2f(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
// FP8 E4M3FN byte -> float (exact): normal (1 + m/8) 2^(e-7), subnormal m 2^-9, 0x7F / 0xFF NaN.
__device__ __forceinline__ float fp8_e4m3(unsigned b) {
    const unsigned e = (b >> 3) & 15u, m = b & 7u;
    float v = e ? __uint_as_float(((e + 120u) << 23) | (m << 20)) : (float)m * 0.001953125f;
    if (e == 15u && m == 7u) v = __uint_as_float(0x7fc00000u);
    return (b & 0x80u) ? -v : v;
}

// BEGIN exact_dequant (compiled on the host too, by tests/test_kernels_compile.py, to check it against NumPy)
// q * fl32(s / g) (divisor) or q * fl32(s * g) (multiplier), rounded exactly as float32 arithmetic without flushing,
// although CuPy compiles every kernel with -ftz=true (float32 subnormal inputs and results become 0). q is an E2M1
// value (0, +-0.5 .. +-6), s an FP8 scale, g the global scale. When the multiplier m is at least 2^-125 in magnitude
// (every real checkpoint), m and q * m are normal floats and plain float32 arithmetic is exact. Below that, both
// roundings are done on the float32 grid in float64, which -ftz leaves alone: the float64 quotient or product
// rounded to float32 equals the float32 operation (53 >= 2 * 24 + 2 bits: double rounding is innocuous), and the
// float32 bits of a subnormal are assembled as an integer. NaN and infinity take the float32 path. q and s are never
// subnormal (E2M1 and FP8 values); g may be, and is read from its bits.
__device__ __forceinline__ double round_to_f32_grid(double x) {
    // |x| < 2^-100: round to nearest even at the float32 spacing of x (2^-149 for subnormals)
    const int e = (int)((dbl_bits(x) >> 52) & 0x7ff) - 1023;
    const int spacing = (e < -126 ? -126 : e) - 23;
    const double c = ldexp_pow2(1.5, spacing + 52);
    return dsub_rn(dadd_rn(x, c), c);
}

__device__ __forceinline__ double f32_to_f64(float x) {
    // exact; a subnormal input is read from its bits (-ftz would read it as zero)
    const unsigned u = f32_bits(x);
    if ((u >> 23) & 0xffu) return (double)x;
    const double mag = (double)(u & 0x7fffffu) * 0x1p-149;
    return (u >> 31) ? -mag : mag;
}

__device__ __forceinline__ bool f32_is_zero(float x) { return (f32_bits(x) & 0x7fffffffu) == 0u; }

__device__ __forceinline__ float exact_dequant(float q, float s, float g, int divide) {
    const double m = divide ? (double)s / f32_to_f64(g) : (double)s * f32_to_f64(g);
    if (!(fabs(m) < 0x1p-125)) return q * (float)m;
    const double r = round_to_f32_grid(fabs((double)q) * round_to_f32_grid(fabs(m)));
    const unsigned sign = ((f32_bits(q) ^ (unsigned)(dbl_bits(m) >> 32)) & 0x80000000u);
    const unsigned mag = r >= 0x1p-126 ? f32_bits((float)r) : (unsigned)(r * 0x1p149);
    return bits_f32(sign | mag);
}
// END exact_dequant

// Two E2M1 codes of one byte (element 2i in the low nibble) -> floats times 2^-14, exact: the code's sign and
// magnitude bits placed in an fp16 (sign << 15 | mag << 9) read as half give value * 2^-14. The 2^14 is folded
// into the per-row multiplier by the host.
__device__ __forceinline__ float2 e2m1x2_scaled(unsigned b) {
    const unsigned lo = b & 15u, hi = (b >> 4) & 15u;
    const unsigned short hl = (unsigned short)(((lo & 8u) << 12) | ((lo & 7u) << 9));
    const unsigned short hh = (unsigned short)(((hi & 8u) << 12) | ((hi & 7u) << 9));
    return make_float2(h2f(hl), h2f(hh));
}

__device__ __forceinline__ float bf16_lo(unsigned u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf16_hi(unsigned u) { return __uint_as_float(u & 0xffff0000u); }
__device__ __forceinline__ float f16_lo(unsigned u) { return h2f((unsigned short)(u & 0xffffu)); }
__device__ __forceinline__ float f16_hi(unsigned u) { return h2f((unsigned short)(u >> 16)); }

template <int FMT> struct Fmt;
template <> struct Fmt<FMT_NVFP4> { static constexpr int E = 16; };  // elements per lane chunk (8 packed bytes)
template <> struct Fmt<FMT_F32> { static constexpr int E = 4; };     // 16 bytes
template <> struct Fmt<FMT_F16> { static constexpr int E = 8; };     // 16 bytes
template <> struct Fmt<FMT_BF16> { static constexpr int E = 8; };    // 16 bytes

template <int FMT> __device__ __forceinline__ size_t row_bytes(int K) {
    return FMT == FMT_NVFP4 ? (size_t)K / 2 : (FMT == FMT_F32 ? (size_t)K * 4 : (size_t)K * 2);
}

// The raw bytes of one lane chunk of a weight row: NVFP4 8 packed bytes (16 codes) + their FP8 scale byte;
// f32 / f16 / bf16 16 bytes. Loads are read-only and do not allocate in L1 (weights stream through once).
template <int FMT> struct Raw { uint4 v; };
template <> struct Raw<FMT_NVFP4> { uint2 p; unsigned s; };

__device__ __forceinline__ uint4 ld_stream16(const void* p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}

__device__ __forceinline__ uint2 ld_stream8(const void* p) {
    uint2 r;
    asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(r.x), "=r"(r.y) : "l"(p));
    return r;
}

template <int FMT>
__device__ __forceinline__ Raw<FMT> load_raw(const unsigned char* __restrict__ wrow,
                                             const unsigned char* __restrict__ srow, int c) {
    Raw<FMT> r;
    if constexpr (FMT == FMT_NVFP4) {
        r.p = ld_stream8(wrow + 8 * (size_t)c);
        r.s = __ldg(srow + c);
    } else {
        r.v = ld_stream16(wrow + 16 * (size_t)c);
    }
    return r;
}

// dot(raw chunk, xr[0..E)).
template <int FMT>
__device__ __forceinline__ float dot_raw(const Raw<FMT>& w, const float* xr) {
    float d = 0.f;
    if constexpr (FMT == FMT_NVFP4) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float2 a = e2m1x2_scaled((w.p.x >> (8 * i)) & 255u), b = e2m1x2_scaled((w.p.y >> (8 * i)) & 255u);
            d = fmaf(a.x, xr[2 * i], d);
            d = fmaf(a.y, xr[2 * i + 1], d);
            d = fmaf(b.x, xr[8 + 2 * i], d);
            d = fmaf(b.y, xr[8 + 2 * i + 1], d);
        }
        return d * fp8_e4m3(w.s);
    } else if constexpr (FMT == FMT_F32) {
        return __uint_as_float(w.v.x) * xr[0] + __uint_as_float(w.v.y) * xr[1] + __uint_as_float(w.v.z) * xr[2] +
               __uint_as_float(w.v.w) * xr[3];
    } else {
        const unsigned u[4] = {w.v.x, w.v.y, w.v.z, w.v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float lo = FMT == FMT_BF16 ? bf16_lo(u[i]) : f16_lo(u[i]);
            const float hi = FMT == FMT_BF16 ? bf16_hi(u[i]) : f16_hi(u[i]);
            d = fmaf(lo, xr[2 * i], d);
            d = fmaf(hi, xr[2 * i + 1], d);
        }
        return d;
    }
}

template <int FMT>
__device__ __forceinline__ float chunk_dot(const unsigned char* __restrict__ wrow, const unsigned char* __restrict__ srow,
                                           int c, const float* xr) {
    return dot_raw<FMT>(load_raw<FMT>(wrow, srow, c), xr);
}

template <int E>
__device__ __forceinline__ void load_x(const float* xs, int c, float* xr) {
#pragma unroll
    for (int i = 0; i < E; i += 4) {
        const float4 v = *reinterpret_cast<const float4*>(xs + c * E + i);
        xr[i] = v.x; xr[i + 1] = v.y; xr[i + 2] = v.z; xr[i + 3] = v.w;
    }
}

// ---------------------------------------------------------------- fused input stage of a linear
// xs[k] (shared) <- the linear's input:
//   IN_PLAIN  x[k]
//   IN_NORM   x[k] * (1 / sqrt(mean(x^2) + eps)) * (off + aux[k])      (RMSNorm, aux = norm weight)
//   IN_SILU   silu(x[k]) * x[K + k]                                    (x = [gate | up] of width 2K)
//   IN_GELU   gelu_tanh(x[k]) * x[K + k]
template <int MODE>
__device__ void load_input(float* xs, const float* __restrict__ x, const float* __restrict__ aux, int K, float eps,
                           float off, float* red) {
    if (MODE == IN_NORM) {
        const float r = block_rms_inverse(x, K, eps, red);
        for (int k = threadIdx.x; k < K; k += blockDim.x) xs[k] = x[k] * r * (aux[k] + off);
    } else if (MODE == IN_SILU) {
        for (int k = threadIdx.x; k < K; k += blockDim.x) {
            const float g = x[k];
            xs[k] = g * (1.0f / (1.0f + expf(-g))) * x[K + k];
        }
    } else if (MODE == IN_GELU) {
        for (int k = threadIdx.x; k < K; k += blockDim.x) {
            const float g = x[k];
            const float inner = 0.7978845608028654f * (g + 0.044715f * g * g * g);
            xs[k] = 0.5f * g * (1.0f + tanhf(inner)) * x[K + k];
        }
    } else {
        for (int k = threadIdx.x; k < K; k += blockDim.x) xs[k] = x[k];
    }
}


// ---------------------------------------------------------------- NVFP4 decoders of nvfp4.cu (fp16 route)
template <int k>
__device__ __forceinline__ float2 e2m1_pair(u32 w) {
    // nibbles k and k+4 of w (elements k and k+4 of this 8-element word) as floats times 2^-14
    const u32 mag = (k <= 2) ? (w << (9 - 4 * k)) : (w >> (4 * k - 9));
    const u32 sgn = w << (12 - 4 * k);
    const u32 bits = (mag & 0x0E000E00u) | (sgn & 0x80008000u);
    __half2 h = *reinterpret_cast<const __half2*>(&bits);
    return __half22float2(h);
}

__device__ __forceinline__ float e4m3_to_float(u32 c) {
    // code bits 6..0 -> fp16 bits 13..7: e4m3 * 2^-8 exactly (e = 0 lands on an fp16 subnormal, which the
    // f16 -> f32 conversion keeps exact; no fp32 subnormal is involved, so a flush-to-zero mode cannot bite)
    const u32 mag = c & 0x7Fu;
    if (mag == 0x7Fu) return __uint_as_float(0x7FC00000u | ((c & 0x80u) << 24));
    const unsigned short bits = (unsigned short)((mag << 7) | ((c & 0x80u) << 8));
    return __half2float(__ushort_as_half(bits)) * 256.0f;
}

// Decode one 16-element block (two words) into q[16] (times 2^-14), in element order.
__device__ __forceinline__ void decode_block(u32 w0, u32 w1, float* q) {
    float2 a;
    a = e2m1_pair<0>(w0); q[0] = a.x; q[4] = a.y;
    a = e2m1_pair<1>(w0); q[1] = a.x; q[5] = a.y;
    a = e2m1_pair<2>(w0); q[2] = a.x; q[6] = a.y;
    a = e2m1_pair<3>(w0); q[3] = a.x; q[7] = a.y;
    a = e2m1_pair<0>(w1); q[8] = a.x; q[12] = a.y;
    a = e2m1_pair<1>(w1); q[9] = a.x; q[13] = a.y;
    a = e2m1_pair<2>(w1); q[10] = a.x; q[14] = a.y;
    a = e2m1_pair<3>(w1); q[11] = a.x; q[15] = a.y;
}


// ---------------------------------------------------------------- GEMV with fused input stage and epilogue
// The GEMV kernels (linear.cu, nvfp4.cu, attention.cu, moe.cu) are: prefetch_rows, an input stage writing the
// linear's input into shared memory xs[K], a barrier, then gemv_rows.
//
// prefetch_rows: the warp's first rows are prefetched to L2 before the input stage, so the weight latency overlaps
// the RMSNorm / combine.
template <int FMT, int RR>
__device__ __forceinline__ void prefetch_rows(const unsigned char* __restrict__ W, int N, int K) {
    constexpr int E = Fmt<FMT>::E;
    constexpr int CB = FMT == FMT_NVFP4 ? 8 : 16;
    const int nchunks = K / E;
    const size_t rb = row_bytes<FMT>(K);
    const int lane = threadIdx.x & 31;
    const int gw = blockIdx.x * WARPS + (threadIdx.x >> 5);
    if (gw * RR < N) {
#pragma unroll
        for (int r = 0; r < RR; r++)
            if (gw * RR + r < N)
                for (int c = lane; c < nchunks && c < 64; c += 32)
                    asm volatile("prefetch.global.L2 [%0];" ::"l"(W + (size_t)(gw * RR + r) * rb + (size_t)c * CB));
    }
}

// gemv_rows: y[n] = (acc ? y[n] : 0) + epi(rmult[n] * sum_k W[n, k] xs[k] + bias[n]); epi = softcap when
// softcap > 0. One warp per RR consecutive rows; lane c of the warp owns chunks c, c + 32, ... of K, two chunks'
// loads in flight before either is used; xs is read once per chunk for RR rows. W: NVFP4 packed [N, K/2] (S:
// scales [N, K/16], rmult: per-row multiplier x 2^14) or dense [N, K].
template <int FMT, int RR>
__device__ void gemv_rows(const unsigned char* __restrict__ W, const unsigned char* __restrict__ S,
                          const float* __restrict__ rmult, const float* __restrict__ bias, float* y, int N, int K,
                          int acc_out, float softcap) {
    extern __shared__ float xs[];
    constexpr int E = Fmt<FMT>::E;
    const int nchunks = K / E;
    const size_t rb = row_bytes<FMT>(K), sb = (size_t)K / 16;
    const int lane = threadIdx.x & 31;
    const int gw = blockIdx.x * WARPS + (threadIdx.x >> 5), nw = gridDim.x * WARPS;
    for (int n0 = gw * RR; n0 < N; n0 += nw * RR) {
        float acc[RR];
#pragma unroll
        for (int r = 0; r < RR; r++) acc[r] = 0.f;
        for (int c = lane; c < nchunks; c += 64) {
            const int c2 = c + 32;
            const bool two = c2 < nchunks;
            Raw<FMT> w1[RR], w2[RR];
#pragma unroll
            for (int r = 0; r < RR; r++) {
                const int n = min(n0 + r, N - 1);  // a row past N re-reads row N-1; its result is dropped
                w1[r] = load_raw<FMT>(W + (size_t)n * rb, S + (size_t)n * sb, c);
                if (two) w2[r] = load_raw<FMT>(W + (size_t)n * rb, S + (size_t)n * sb, c2);
            }
            float xr[E];
            load_x<E>(xs, c, xr);
#pragma unroll
            for (int r = 0; r < RR; r++) acc[r] += dot_raw<FMT>(w1[r], xr);
            if (two) {
                load_x<E>(xs, c2, xr);
#pragma unroll
                for (int r = 0; r < RR; r++) acc[r] += dot_raw<FMT>(w2[r], xr);
            }
        }
#pragma unroll
        for (int r = 0; r < RR; r++) {
            float v = warp_sum(acc[r]);
            const int n = n0 + r;
            if (lane == 0 && n < N) {
                if (rmult) v *= rmult[n];
                if (bias) v += bias[n];
                if (softcap > 0.f) v = tanhf(v / softcap) * softcap;
                y[n] = acc_out ? y[n] + v : v;
            }
        }
    }
}

// The GEMV of one fused input stage MODE (IN_PLAIN, IN_NORM, IN_SILU, IN_GELU; see load_input).
template <int FMT, int MODE, int RR>
__device__ void gemv_body(const unsigned char* __restrict__ W, const unsigned char* __restrict__ S,
                          const float* __restrict__ rmult, const float* __restrict__ bias, const float* __restrict__ x,
                          const float* __restrict__ aux, float eps, float off, float* y, int N, int K, int acc_out,
                          float softcap) {
    extern __shared__ float xs[];
    __shared__ float red[32];
    prefetch_rows<FMT, RR>(W, N, K);
    load_input<MODE>(xs, x, aux, K, eps, off, red);
    __syncthreads();
    gemv_rows<FMT, RR>(W, S, rmult, bias, y, N, K, acc_out, softcap);
}

#endif  // IMPNB_CUH
