// impnb engine kernels: the fused stages of one transformer decode step (and the row-wise pieces of prefill).
// Compiled once per process by NVRTC through cupy.RawModule (impnb/cuda/_engine_kernels.py); every kernel is an
// extern "C" symbol so it can be looked up by name and captured in a CUDA graph.
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
// tokens generated so far. The decode graph reads them and argmax_final advances them, so a replay needs no host
// update.

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

__device__ float block_max(float v, float* red) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    return warp_max(lane < nw ? red[lane] : NEG_INF);
}

// ---------------------------------------------------------------- formats
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
        float ss = 0.f;
        for (int k = threadIdx.x; k < K; k += blockDim.x) ss += x[k] * x[k];
        ss = block_sum(ss, red);
        const float r = 1.0f / sqrtf(ss / (float)K + eps);
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

// ---------------------------------------------------------------- GEMV with fused input stage and epilogue

// y[n] = (acc ? y[n] : 0) + epi(rmult[n] * sum_k W[n, k] xs[k] + bias[n]); epi = softcap when softcap > 0.
// One warp per RR consecutive rows; lane c of the warp owns chunks c, c + 32, ... of K, two chunks' loads in
// flight before either is used; xs is read once per chunk for RR rows. The warp's first rows are prefetched to L2
// before the input stage, so the weight latency overlaps the RMSNorm / combine. W: NVFP4 packed [N, K/2] (S:
// scales [N, K/16], rmult: per-row multiplier x 2^14) or dense [N, K].
template <int FMT, int MODE, int RR>
__device__ void gemv_body(const unsigned char* __restrict__ W, const unsigned char* __restrict__ S,
                          const float* __restrict__ rmult, const float* __restrict__ bias, const float* __restrict__ x,
                          const float* __restrict__ aux, float eps, float off, float* y, int N, int K, int acc_out,
                          float softcap, const float* __restrict__ apm = nullptr,
                          const float* __restrict__ apl = nullptr, const float* __restrict__ apacc = nullptr,
                          const float* __restrict__ asinks = nullptr, int aS = 0, int aD = 1) {
    extern __shared__ float xs[];
    __shared__ float red[32];
    constexpr int E = Fmt<FMT>::E;
    constexpr int CB = FMT == FMT_NVFP4 ? 8 : 16;
    const int nchunks = K / E;
    const size_t rb = row_bytes<FMT>(K), sb = (size_t)K / 16;
    const int lane = threadIdx.x & 31;
    const int gw = blockIdx.x * WARPS + (threadIdx.x >> 5), nw = gridDim.x * WARPS;
    if (gw * RR < N) {
#pragma unroll
        for (int r = 0; r < RR; r++)
            if (gw * RR + r < N)
                for (int c = lane; c < nchunks && c < 64; c += 32)
                    asm volatile("prefetch.global.L2 [%0];" ::"l"(W + (size_t)(gw * RR + r) * rb + (size_t)c * CB));
    }
    if (MODE == 4) {  // combine the split-K attention partials: weights per (head, split) first, in shared memory
        const int Sn = aS, D = aD, Hn = K / D;
        float* wsm = xs + K;  // [H, S]
        for (int i = threadIdx.x; i < Hn * Sn; i += blockDim.x) wsm[i] = apm[i];
        __syncthreads();
        for (int h = threadIdx.x; h < Hn; h += blockDim.x) {
            float M = asinks ? asinks[h] : NEG_INF;
            for (int t = 0; t < Sn; t++) M = fmaxf(M, wsm[h * Sn + t]);
            float L = asinks ? expf(asinks[h] - M) : 0.f;
            for (int t = 0; t < Sn; t++) {
                const float m = wsm[h * Sn + t];
                const float w = m == NEG_INF ? 0.f : expf(m - M);
                L = fmaf(w, apl[h * Sn + t], L);
                wsm[h * Sn + t] = w;
            }
            const float inv = L > 0.f ? 1.0f / L : 0.f;
            for (int t = 0; t < Sn; t++) wsm[h * Sn + t] *= inv;
        }
        __syncthreads();
        for (int k = threadIdx.x; k < K; k += blockDim.x) {
            const int h = k / D, d = k % D;
            const float* pa = apacc + (size_t)h * Sn * D + d;
            float a = 0.f;
#pragma unroll 4
            for (int t = 0; t < Sn; t++) a = fmaf(wsm[h * Sn + t], __ldg(pa + (size_t)t * D), a);
            xs[k] = a;
        }
    } else {
        load_input<MODE == 4 ? IN_PLAIN : MODE>(xs, x, aux, K, eps, off, red);
    }
    __syncthreads();
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

#define GEMV_ARGS                                                                                                 \
    const unsigned char *W, const unsigned char *S, const float *rmult, const float *bias, const float *x,      \
        const float *aux, float eps, float off, float *y, int N, int K, int acc_out, float softcap
#define GEMV_PASS W, S, rmult, bias, x, aux, eps, off, y, N, K, acc_out, softcap
#define GEMV(FMTN, FMT, MODEN, MODE, RR)                                                                          \
    extern "C" __global__ void __launch_bounds__(THREADS) gemv_##FMTN##_##MODEN##_r##RR(GEMV_ARGS) {           \
        gemv_body<FMT, MODE, RR>(GEMV_PASS);                                                                      \
    }
#define GEMV_MODES(FMTN, FMT, RR)                                                                                 \
    GEMV(FMTN, FMT, plain, IN_PLAIN, RR) GEMV(FMTN, FMT, norm, IN_NORM, RR) GEMV(FMTN, FMT, silu, IN_SILU, RR)    \
    GEMV(FMTN, FMT, gelu, IN_GELU, RR)
#define GEMV_ALL(RR)                                                                                              \
    GEMV_MODES(nvfp4, FMT_NVFP4, RR) GEMV_MODES(f32, FMT_F32, RR) GEMV_MODES(f16, FMT_F16, RR)                    \
    GEMV_MODES(bf16, FMT_BF16, RR)
GEMV_ALL(1)
GEMV_ALL(4)

// o-proj with the attention combine fused into its input stage: y (+)= W @ concat_h(attention output of head h).
#define GEMV_ATTN(FMTN, FMT)                                                                                      \
    extern "C" __global__ void __launch_bounds__(THREADS, 1)                                                         \
        gemv_##FMTN##_attn_r1(const unsigned char *W, const unsigned char *S, const float *rmult, const float *bias, \
                              const float *pm, const float *pl, const float *pacc, const float *sinks, int Sn,     \
                              int D, float *y, int N, int K, int acc_out) {                                        \
        gemv_body<FMT, 4, 1>(W, S, rmult, bias, nullptr, nullptr, 0.f, 0.f, y, N, K, acc_out, 0.f, pm, pl, pacc,   \
                             sinks, Sn, D);                                                                        \
    }
GEMV_ATTN(nvfp4, FMT_NVFP4)
GEMV_ATTN(f32, FMT_F32)
GEMV_ATTN(f16, FMT_F16)
GEMV_ATTN(bf16, FMT_BF16)

// ---------------------------------------------------------------- q|k|v GEMV + RoPE + KV append, one kernel
// For layers without QK-norm / v-norm (the llama family) and with full rotary (D = 2F): input RMSNorm(x) as
// gemv_*_norm, then each warp computes the TWO rows a rotation pairs, so the epilogue can rotate them at once.
// Warp task t < (H + HKV) F: head = t / F, pair i = t % F, rows head D + (i, i + F) (neox) or (2i, 2i + 1)
// (interleaved); q heads go to qout, k heads to the cache slot pos % C. Tasks after that copy v row pairs into
// the cache. slot_pos[slot] = pos is written once (task 0). Bias is added before the rotation (as the linear).
template <int FMT>
__device__ void qkv_rope_body(const unsigned char* __restrict__ W, const unsigned char* __restrict__ S,
                              const float* __restrict__ rmult, const float* __restrict__ bias,
                              const float* __restrict__ x, const float* __restrict__ nw, float eps, float off,
                              float* qout, float* kc, float* vc, int* slot_pos, const int* __restrict__ st,
                              const float* __restrict__ cos_t, const float* __restrict__ sin_t, int F,
                              int interleaved, int H, int HKV, int D, int C, int K) {
    extern __shared__ float xs[];
    __shared__ float red[32];
    constexpr int E = Fmt<FMT>::E;
    const int nchunks = K / E;
    const size_t rb = row_bytes<FMT>(K), sb = (size_t)K / 16;
    const int lane = threadIdx.x & 31;
    const int gw = blockIdx.x * WARPS + (threadIdx.x >> 5), nw_ = gridDim.x * WARPS;
    load_input<IN_NORM>(xs, x, nw, K, eps, off, red);
    __syncthreads();
    const int pos = st[0], slot = pos % C;
    const int rot_tasks = (H + HKV) * F, tasks = rot_tasks + HKV * D / 2;
    for (int t = gw; t < tasks; t += nw_) {
        int ra, rb2, head = 0, a = 0, b = 0, i = 0;
        if (t < rot_tasks) {
            head = t / F;
            i = t % F;
            a = interleaved ? 2 * i : i;
            b = interleaved ? 2 * i + 1 : i + F;
            ra = head * D + a;
            rb2 = head * D + b;
        } else {
            ra = (H + HKV) * D + 2 * (t - rot_tasks);
            rb2 = ra + 1;
        }
        const unsigned char* wa = W + (size_t)ra * rb;
        const unsigned char* wb = W + (size_t)rb2 * rb;
        const unsigned char* sa = S + (size_t)ra * sb;
        const unsigned char* sb2 = S + (size_t)rb2 * sb;
        float acc_a = 0.f, acc_b = 0.f;
        for (int c = lane; c < nchunks; c += 64) {
            const int c2 = c + 32;
            const bool two = c2 < nchunks;
            Raw<FMT> a1 = load_raw<FMT>(wa, sa, c), b1 = load_raw<FMT>(wb, sb2, c), a2, b2;
            if (two) { a2 = load_raw<FMT>(wa, sa, c2); b2 = load_raw<FMT>(wb, sb2, c2); }
            float xr[E];
            load_x<E>(xs, c, xr);
            acc_a += dot_raw<FMT>(a1, xr);
            acc_b += dot_raw<FMT>(b1, xr);
            if (two) {
                load_x<E>(xs, c2, xr);
                acc_a += dot_raw<FMT>(a2, xr);
                acc_b += dot_raw<FMT>(b2, xr);
            }
        }
        acc_a = warp_sum(acc_a);
        acc_b = warp_sum(acc_b);
        if (lane == 0) {
            float va = rmult ? acc_a * rmult[ra] : acc_a, vb = rmult ? acc_b * rmult[rb2] : acc_b;
            if (bias) { va += bias[ra]; vb += bias[rb2]; }
            if (t < rot_tasks) {
                const float cs = cos_t[(size_t)pos * F + i], sn = sin_t[(size_t)pos * F + i];
                const float ya = va * cs - vb * sn, yb = vb * cs + va * sn;
                float* dst = head < H ? qout + (size_t)head * D : kc + ((size_t)slot * HKV + (head - H)) * D;
                dst[a] = ya;
                dst[b] = yb;
                if (t == 0) slot_pos[slot] = pos;
            } else {
                const int e = 2 * (t - rot_tasks);  // element of the v part: kv head e / D, dim e % D
                float* dst = vc + ((size_t)slot * HKV + e / D) * D + e % D;
                dst[0] = va;
                dst[1] = vb;
            }
        }
    }
}

#define QKV_ROPE(FMTN, FMT)                                                                                       \
    extern "C" __global__ void __launch_bounds__(THREADS)                                                         \
        qkv_rope_##FMTN(const unsigned char *W, const unsigned char *S, const float *rmult, const float *bias,    \
                        const float *x, const float *nw, float eps, float off, float *qout, float *kc, float *vc, \
                        int *slot_pos, const int *st, const float *cos_t, const float *sin_t, int F,              \
                        int interleaved, int H, int HKV, int D, int C, int K) {                                   \
        qkv_rope_body<FMT>(W, S, rmult, bias, x, nw, eps, off, qout, kc, vc, slot_pos, st, cos_t, sin_t, F,       \
                           interleaved, H, HKV, D, C, K);                                                         \
    }
QKV_ROPE(nvfp4, FMT_NVFP4)
QKV_ROPE(f32, FMT_F32)
QKV_ROPE(f16, FMT_F16)
QKV_ROPE(bf16, FMT_BF16)

// ---------------------------------------------------------------- MoE: grouped expert GEMVs (decode, one token)
// Experts stored stacked: W [E, N, K] (NVFP4: packed [E, N, K/2], scales [E, N, K/16], rmult [E, N]).
// moe_up: blockIdx.y = j < TK picks expert ids[j]; y[j, n] for n < N (the [gate | up] rows), input RMSNorm(x).
template <int FMT>
__device__ void moe_up_body(const unsigned char* __restrict__ W, const unsigned char* __restrict__ S,
                            const float* __restrict__ rmult, const int* __restrict__ ids, const float* __restrict__ x,
                            const float* __restrict__ aux, float eps, float off, float* y, int N, int K) {
    const int j = blockIdx.y, e = ids[j];
    const size_t wrows = (size_t)e * N;
    const unsigned char* We = W + wrows * row_bytes<FMT>(K);
    const unsigned char* Se = S ? S + wrows * (K / 16) : S;
    const float* re = rmult ? rmult + wrows : rmult;
    gemv_body<FMT, IN_NORM, 1>(We, Se, re, nullptr, x, aux, eps, off, y + (size_t)j * N, N, K, 0, 0.f);
}

// moe_down: x[n] += sum_j w[j] * (W[ids[j]] @ act(gate_j, up_j))[n], experts summed in j order (deterministic).
// gu: [TK, 2K] rows of [gate | up]; xs holds the TK activated inputs [TK, K] in shared memory.
template <int FMT, int ACT>
__device__ void moe_down_body(const unsigned char* __restrict__ W, const unsigned char* __restrict__ S,
                              const float* __restrict__ rmult, const int* __restrict__ ids,
                              const float* __restrict__ wts, const float* __restrict__ gu, float* x, int N, int K,
                              int TK) {
    extern __shared__ float xs[];
    __shared__ float red[32];
    for (int j = 0; j < TK; j++) load_input<ACT>(xs + (size_t)j * K, gu + (size_t)j * 2 * K, nullptr, K, 0.f, 0.f, red);
    __syncthreads();
    constexpr int E = Fmt<FMT>::E;
    const int nchunks = K / E;
    const size_t rb = row_bytes<FMT>(K), sb = (size_t)K / 16;
    const int lane = threadIdx.x & 31;
    const int gw = blockIdx.x * WARPS + (threadIdx.x >> 5), nw = gridDim.x * WARPS;
    for (int n = gw; n < N; n += nw) {
        float total = 0.f;
        for (int j = 0; j < TK; j++) {
            const size_t row = (size_t)ids[j] * N + n;
            float acc = 0.f;
            for (int c = lane; c < nchunks; c += 32) {
                float xr[E];
#pragma unroll
                for (int i = 0; i < E; i += 4) {
                    const float4 v = *reinterpret_cast<const float4*>(xs + (size_t)j * K + c * E + i);
                    xr[i] = v.x; xr[i + 1] = v.y; xr[i + 2] = v.z; xr[i + 3] = v.w;
                }
                acc += chunk_dot<FMT>(W + row * rb, S + row * sb, c, xr);
            }
            acc = warp_sum(acc);
            if (rmult) acc *= rmult[row];
            total += wts[j] * acc;
        }
        if (lane == 0) x[n] += total;
    }
}

#define MOE(FMTN, FMT)                                                                                            \
    extern "C" __global__ void __launch_bounds__(THREADS)                                                         \
        moe_up_##FMTN(const unsigned char *W, const unsigned char *S, const float *rmult, const int *ids,          \
                      const float *x, const float *aux, float eps, float off, float *y, int N, int K) {           \
        moe_up_body<FMT>(W, S, rmult, ids, x, aux, eps, off, y, N, K);                                            \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(THREADS)                                                         \
        moe_down_##FMTN##_silu(const unsigned char *W, const unsigned char *S, const float *rmult, const int *ids, \
                               const float *wts, const float *gu, float *x, int N, int K, int TK) {               \
        moe_down_body<FMT, IN_SILU>(W, S, rmult, ids, wts, gu, x, N, K, TK);                                      \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(THREADS)                                                         \
        moe_down_##FMTN##_gelu(const unsigned char *W, const unsigned char *S, const float *rmult, const int *ids, \
                               const float *wts, const float *gu, float *x, int N, int K, int TK) {               \
        moe_down_body<FMT, IN_GELU>(W, S, rmult, ids, wts, gu, x, N, K, TK);                                      \
    }
MOE(nvfp4, FMT_NVFP4)
MOE(f32, FMT_F32)
MOE(f16, FMT_F16)
MOE(bf16, FMT_BF16)

// Router: logits [E] -> ids [TK], weights [TK]. One block. gating 0: softmax over all E, top-k, (renorm);
// 1: top-k of the logits, softmax over those k; 2: sigmoid, top-k, (renorm). Ties: the lower expert id wins.
extern "C" __global__ void moe_route(const float* __restrict__ logits, int E, int TK, int gating, int renorm,
                                     int* ids, float* wts) {
    __shared__ float p[1024];
    __shared__ float red[32];
    __shared__ int chosen[64];
    __shared__ float chosen_v[64];
    __shared__ float wv[32];
    __shared__ int wi[32];
    for (int e = threadIdx.x; e < E; e += blockDim.x) p[e] = logits[e];
    __syncthreads();
    if (gating == 0) {
        float m = NEG_INF;
        for (int e = threadIdx.x; e < E; e += blockDim.x) m = fmaxf(m, p[e]);
        m = block_max(m, red);
        float s = 0.f;
        for (int e = threadIdx.x; e < E; e += blockDim.x) s += expf(p[e] - m);
        s = block_sum(s, red);
        for (int e = threadIdx.x; e < E; e += blockDim.x) p[e] = expf(p[e] - m) / s;
    } else if (gating == 2) {
        for (int e = threadIdx.x; e < E; e += blockDim.x) p[e] = 1.0f / (1.0f + expf(-p[e]));
    }
    __syncthreads();
    for (int j = 0; j < TK; j++) {  // k rounds of a block argmax (value desc, id asc), excluding earlier picks
        float bv = NEG_INF;
        int bi = 0x7fffffff;
        for (int e = threadIdx.x; e < E; e += blockDim.x) {
            bool taken = false;
            for (int t = 0; t < j; t++) taken |= chosen[t] == e;
            const float v = p[e];
            if (!taken && (v > bv || (v == bv && e < bi))) { bv = v; bi = e; }
        }
        for (int o = 16; o; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
        }
        const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
        __syncthreads();
        if (lane == 0) { wv[w] = bv; wi[w] = bi; }
        __syncthreads();
        if (threadIdx.x == 0) {
            float b0 = wv[0];
            int i0 = wi[0];
            for (int t = 1; t < nw; t++)
                if (wv[t] > b0 || (wv[t] == b0 && wi[t] < i0)) { b0 = wv[t]; i0 = wi[t]; }
            chosen[j] = i0;
            chosen_v[j] = b0;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        if (gating == 1) {
            float m = chosen_v[0], s = 0.f;
            for (int j = 0; j < TK; j++) s += expf(chosen_v[j] - m);
            for (int j = 0; j < TK; j++) chosen_v[j] = expf(chosen_v[j] - m) / s;
        } else if (renorm) {
            float s = 0.f;
            for (int j = 0; j < TK; j++) s += chosen_v[j];
            for (int j = 0; j < TK; j++) chosen_v[j] = chosen_v[j] / s;
        }
        for (int j = 0; j < TK; j++) { ids[j] = chosen[j]; wts[j] = chosen_v[j]; }
    }
}

// ---------------------------------------------------------------- embedding
// x[m, :] = table[ids[m], :] * scale for m < gridDim.x. ids: the st[1] slot in decode, a token array in prefill.
extern "C" __global__ void embed_dense(const unsigned char* __restrict__ table, int fmt, const int* __restrict__ ids,
                                       float* x, int D, float scale) {
    const size_t row = (size_t)ids[blockIdx.x] * D;
    float* out = x + (size_t)blockIdx.x * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float v;
        if (fmt == FMT_F32) v = reinterpret_cast<const float*>(table)[row + i];
        else {
            const unsigned short h = reinterpret_cast<const unsigned short*>(table)[row + i];
            v = fmt == FMT_BF16 ? __uint_as_float((unsigned)h << 16) : h2f(h);
        }
        out[i] = v * scale;
    }
}

extern "C" __global__ void embed_nvfp4(const unsigned char* __restrict__ P, const unsigned char* __restrict__ S,
                                       const float* __restrict__ rmult, const int* __restrict__ ids, float* x, int D,
                                       float scale) {
    const int t = ids[blockIdx.x];
    const unsigned char* prow = P + (size_t)t * (D / 2);
    const unsigned char* srow = S + (size_t)t * (D / 16);
    float* out = x + (size_t)blockIdx.x * D;
    const float mult = rmult[t];
    for (int i = threadIdx.x; i < D / 2; i += blockDim.x) {
        const float2 v = e2m1x2_scaled(prow[i]);
        const float s = fp8_e4m3(srow[(2 * i) / 16]) * mult;
        out[2 * i] = v.x * s * scale;
        out[2 * i + 1] = v.y * s * scale;
    }
}

// ---------------------------------------------------------------- RMSNorm rows and branch norms
// out[m, :] = rmsnorm(x[m, :]) * (off + w)   (w may be null: weightless)
extern "C" __global__ void rmsnorm_rows(const float* __restrict__ x, const float* __restrict__ w, float* out, int D,
                                        float eps, float off) {
    __shared__ float red[32];
    const float* xr = x + (size_t)blockIdx.x * D;
    float* o = out + (size_t)blockIdx.x * D;
    float ss = 0.f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_sum(ss, red);
    const float r = 1.0f / sqrtf(ss / (float)D + eps);
    for (int i = threadIdx.x; i < D; i += blockDim.x) o[i] = w ? xr[i] * r * (w[i] + off) : xr[i] * r;
}

// Sandwich norm: x[m, :] += rmsnorm(t[m, :]) * (off + w)   (Gemma post-attention / post-FFN norms)
extern "C" __global__ void postnorm_add(const float* __restrict__ t, const float* __restrict__ w, float* x, int D,
                                        float eps, float off) {
    __shared__ float red[32];
    const float* tr = t + (size_t)blockIdx.x * D;
    float* xr = x + (size_t)blockIdx.x * D;
    float ss = 0.f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) ss += tr[i] * tr[i];
    ss = block_sum(ss, red);
    const float r = 1.0f / sqrtf(ss / (float)D + eps);
    for (int i = threadIdx.x; i < D; i += blockDim.x) xr[i] += tr[i] * r * (w[i] + off);
}

// ---------------------------------------------------------------- QK-norm + RoPE + KV append
// Block b < H: query head b; H <= b < H + HKV: kv head b - H. Row m = blockIdx.y is the token at position
// st[0] + m (decode: one row). qkv row: [q (H*D) | k (HKV*D) | v (HKV*D)] (k_eq_v: no v part, v = raw k).
// q -> qout [M, H, D]; k, v -> caches [C, HKV, D] at slot pos % C; slot_pos[slot] = pos.
// cos/sin tables: [max_pos, F] float32, built on the host exactly as impnb.reference.rope does (attention scaling
// included), so the rotation matches the reference bit for bit up to the fused multiply-add.
extern "C" __global__ void qkv_rope_append(const float* __restrict__ qkv, int row_stride, float* qout, float* kc,
                                           float* vc, int* slot_pos, const int* __restrict__ st,
                                           const float* __restrict__ qn, const float* __restrict__ kn, int qk_norm,
                                           int v_norm, int k_eq_v, float eps, float off, const float* __restrict__ cos_t,
                                           const float* __restrict__ sin_t, int F, int interleaved, int H, int HKV,
                                           int D, int C) {
    extern __shared__ float h[];
    __shared__ float red[32];
    const int b = blockIdx.x, m = blockIdx.y;
    const int pos = st[0] + m, slot = pos % C;
    const bool is_q = b < H;
    const int head = is_q ? b : b - H;
    const float* row = qkv + (size_t)m * row_stride;
    const float* src = is_q ? row + head * D : row + (H + head) * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) h[d] = src[d];
    if (!is_q) {  // v first (from the raw projection), before h is normalised and rotated
        const float* vs = k_eq_v ? src : row + (H + HKV + head) * D;
        float vr = 1.f;
        if (v_norm) {
            float ss = 0.f;
            for (int d = threadIdx.x; d < D; d += blockDim.x) ss += vs[d] * vs[d];
            ss = block_sum(ss, red);
            vr = 1.0f / sqrtf(ss / (float)D + eps);
        }
        float* vdst = vc + ((size_t)slot * HKV + head) * D;
        for (int d = threadIdx.x; d < D; d += blockDim.x) vdst[d] = vs[d] * vr;
        if (head == 0 && threadIdx.x == 0) slot_pos[slot] = pos;
    }
    __syncthreads();
    const float* nw = is_q ? qn : kn;
    if (qk_norm) {
        float ss = 0.f;
        for (int d = threadIdx.x; d < D; d += blockDim.x) ss += h[d] * h[d];
        ss = block_sum(ss, red);
        const float r = 1.0f / sqrtf(ss / (float)D + eps);
        __syncthreads();
        for (int d = threadIdx.x; d < D; d += blockDim.x) h[d] = h[d] * r * (nw[d] + off);
        __syncthreads();
    }
    float* dst = is_q ? qout + ((size_t)m * H + head) * D : kc + ((size_t)slot * HKV + head) * D;
    const float* cr = cos_t + (size_t)pos * F;
    const float* sr = sin_t + (size_t)pos * F;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float v = h[d];
        if (d < 2 * F) {
            int f, partner;
            bool first;
            if (interleaved) { f = d >> 1; first = (d & 1) == 0; partner = first ? d + 1 : d - 1; }
            else { first = d < F; f = first ? d : d - F; partner = first ? d + F : d - F; }
            const float c = cr[f], s = sr[f];
            v = first ? v * c - h[partner] * s : v * c + h[partner] * s;
        }
        dst[d] = v;
    }
}

// ---------------------------------------------------------------- decode attention (split over cache slots)
// Block (head, split): slots [split * chunk, +chunk) of the layer's cache, masked from the stored positions
// (slot_pos[s] >= 0, <= pos, pos - slot_pos[s] < window when window > 0). Writes the split's softmax partials:
// pm = max score, pl = sum exp(score - pm), pacc[d] = sum exp(score - pm) v[d]. Scores: q.k * scale, softcapped.
// Scores: TPS = blockDim / chunk threads per slot, each a D / TPS slice with float4 loads, reduced by shuffles.
// P.V: G = blockDim / D thread groups split the slots; loads of v are coalesced over d and independent over
// slots (unrolled), the groups are summed through shared memory. Needs D % 4 == 0 and chunk | blockDim.
extern "C" __global__ void attn_partial(const float* __restrict__ q, const float* __restrict__ kc,
                                        const float* __restrict__ vc, const int* __restrict__ slot_pos,
                                        const int* __restrict__ st, int H, int HKV, int D, int C, int chunk,
                                        int window, float scale, float softcap, float* pm, float* pl, float* pacc) {
    extern __shared__ float sm[];  // q [D], scores [chunk], group partials [G * D]
    __shared__ float red[32];
    float* qs = sm;
    float* sc = sm + D;
    float* gp = sc + chunk;
    const int head = blockIdx.x, split = blockIdx.y, S = gridDim.y;
    const int kvh = head / (H / HKV);
    const int pos = st[0];
    const int s0 = split * chunk;
    const int used = min(pos + 1, C);  // slots are filled in order until the ring wraps
    const size_t po = (size_t)head * S + split;
    if (s0 >= used) {
        if (threadIdx.x == 0) { pm[po] = NEG_INF; pl[po] = 0.f; }
        for (int d = threadIdx.x; d < D; d += blockDim.x) pacc[po * D + d] = 0.f;
        return;
    }
    for (int d = threadIdx.x; d < D; d += blockDim.x) qs[d] = q[(size_t)head * D + d];
    __syncthreads();
    const int tps = blockDim.x / chunk;  // threads per slot: 1, 2, 4, ... (a power of two <= 32)
    {
        const int j = threadIdx.x / tps, part = threadIdx.x % tps;
        const int s = s0 + j;
        float d0 = 0.f;
        bool ok = false;
        if (s < used) {
            const int p = slot_pos[s];
            ok = p >= 0 && p <= pos && (window <= 0 || pos - p < window);
        }
        if (ok) {
            const float4* kr = reinterpret_cast<const float4*>(kc + ((size_t)s * HKV + kvh) * D);
            const float4* qv = reinterpret_cast<const float4*>(qs);
            const int nv = D / 4;
#pragma unroll 4
            for (int i = part; i < nv; i += tps) {
                const float4 kk = __ldg(kr + i), qq = qv[i];
                d0 = fmaf(qq.x, kk.x, d0);
                d0 = fmaf(qq.y, kk.y, d0);
                d0 = fmaf(qq.z, kk.z, d0);
                d0 = fmaf(qq.w, kk.w, d0);
            }
        }
        for (int o = tps / 2; o; o >>= 1) d0 += __shfl_xor_sync(0xffffffffu, d0, o);
        if (part == 0) {
            float v = NEG_INF;
            if (ok) {
                v = d0 * scale;
                if (softcap > 0.f) v = tanhf(v / softcap) * softcap;
            }
            sc[j] = v;
        }
    }
    __syncthreads();
    float m = NEG_INF;
    for (int j = threadIdx.x; j < chunk; j += blockDim.x) m = fmaxf(m, sc[j]);
    m = block_max(m, red);
    float l = 0.f;
    for (int j = threadIdx.x; j < chunk; j += blockDim.x) {
        const float e = sc[j] == NEG_INF ? 0.f : expf(sc[j] - m);
        sc[j] = e;
        l += e;
    }
    l = block_sum(l, red);  // has a barrier: sc is complete after it
    const int jmax = min(chunk, used - s0);
    const int G = max(1, (int)blockDim.x / D);
    const int g = threadIdx.x / D;
    const size_t vstride = (size_t)HKV * D;
    for (int d = threadIdx.x % D; d < D && g < G; d += (G > 1 ? D : blockDim.x)) {
        const float* vp = vc + ((size_t)s0 * HKV + kvh) * D + d;
        float a = 0.f;
#pragma unroll 8
        for (int j = g; j < jmax; j += G) a = fmaf(sc[j], __ldg(vp + (size_t)j * vstride), a);
        if (G > 1) gp[g * D + d] = a;
        else pacc[po * D + d] = a;
    }
    if (G > 1) {
        __syncthreads();
        for (int d = threadIdx.x; d < D; d += blockDim.x) {
            float a = 0.f;
            for (int t = 0; t < G; t++) a += gp[t * D + d];
            pacc[po * D + d] = a;
        }
    }
    if (threadIdx.x == 0) { pm[po] = m; pl[po] = l; }
}

// ---------------------------------------------------------------- greedy token choice, on the device
// Stage 1: block b scans logits with a grid stride and keeps (max value, lowest id); banned ids (ban[v] != 0)
// never win. Stage 2 (one block): the overall winner -> st[1]; out_ids[st[2]] = it; st[2] += 1; st[0] += 1.
extern "C" __global__ void argmax_partial(const float* __restrict__ logits, const unsigned char* __restrict__ ban,
                                          int V, float* bv_out, int* bi_out) {
    __shared__ float sv[32];
    __shared__ int si[32];
    float bv = NEG_INF;
    int bi = 0x7fffffff;
    for (int v = blockIdx.x * blockDim.x + threadIdx.x; v < V; v += gridDim.x * blockDim.x) {
        const float x = logits[v];
        if (ban && ban[v]) continue;
        if (x > bv || (x == bv && v < bi)) { bv = x; bi = v; }
    }
    for (int o = 16; o; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
    }
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (lane == 0) { sv[w] = bv; si[w] = bi; }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int t = 1; t < nw; t++)
            if (sv[t] > bv || (sv[t] == bv && si[t] < bi)) { bv = sv[t]; bi = si[t]; }
        bv_out[blockIdx.x] = bv;
        bi_out[blockIdx.x] = bi;
    }
}

extern "C" __global__ void argmax_final(const float* __restrict__ bv_in, const int* __restrict__ bi_in, int G, int* st,
                                        int* out_ids, int max_out) {
    if (threadIdx.x != 0) return;
    float bv = NEG_INF;
    int bi = 0x7fffffff;
    for (int g = 0; g < G; g++)
        if (bv_in[g] > bv || (bv_in[g] == bv && bi_in[g] < bi)) { bv = bv_in[g]; bi = bi_in[g]; }
    if (bi == 0x7fffffff) bi = 0;  // every logit banned or NaN: the host checks st[1] against its ban list
    st[1] = bi;
    if (st[2] < max_out) out_ids[st[2]] = bi;
    st[2] += 1;
    st[0] += 1;
}

// ---------------------------------------------------------------- prefill helpers
// Dequantize rows [r0, r0 + n) of a weight to float32 out [n, K] (for the cuBLAS SGEMM of prefill). NVFP4 as
// impnb.reference.nvfp4_dequantize: block multiplier m = s / gs (compressed-tensors, ct = 1) or s * gs (ModelOpt),
// float32, then q * m; gs[r] is the stored global scale of row r (0 for an unusable tensor: zeros).
extern "C" __global__ void dequant_rows(const unsigned char* __restrict__ W, const unsigned char* __restrict__ S,
                                        const float* __restrict__ gs, int ct, int fmt, int r0, int n, int K,
                                        float* out) {
    const size_t total = (size_t)n * K;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = r0 + i / K, k = i % K;
        float v;
        if (fmt == FMT_NVFP4) {
            const float2 q2 = e2m1x2_scaled(W[r * (K / 2) + k / 2]);
            const float q = (k & 1 ? q2.y : q2.x) * 16384.0f;
            const float s = fp8_e4m3(S[r * (K / 16) + k / 16]);
            const float m = gs[r] == 0.f ? 0.f : (ct ? s / gs[r] : s * gs[r]);
            v = q * m;
        } else if (fmt == FMT_F32) {
            v = reinterpret_cast<const float*>(W)[r * K + k];
        } else {
            const unsigned short h = reinterpret_cast<const unsigned short*>(W)[r * K + k];
            v = fmt == FMT_BF16 ? __uint_as_float((unsigned)h << 16) : h2f(h);
        }
        out[i] = v;
    }
}

// out[i] = act(gu[m, k]) * gu[m, K + k] for rows m of width 2K -> [M, K]; act 0 silu, 1 gelu_tanh.
extern "C" __global__ void gated_act_rows(const float* __restrict__ gu, int M, int K, int act, float* out) {
    const size_t total = (size_t)M * K;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t m = i / K, k = i % K;
        const float g = gu[m * 2 * K + k], u = gu[m * 2 * K + K + k];
        float a;
        if (act == 0) a = g * (1.0f / (1.0f + expf(-g)));
        else a = 0.5f * g * (1.0f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g)));
        out[i] = a * u;
    }
}
