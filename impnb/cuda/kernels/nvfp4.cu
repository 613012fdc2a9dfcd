// Kernels of the nvfp4 family (impnb/cuda/nvfp4.py): CuPy RawModule through NVRTC; no fast-math: IEEE division and
// square root. CuPy appends -ftz=true to every compile: nothing here forms an fp32 subnormal from a code or scale
// byte, and dequantization rounds through exact_dequant (impnb.cuh), which keeps subnormal results.
//
// Dimension legend: N = rows of W (output features), K = logical columns (K % 16 == 0), G = K / 16 blocks,
// M = rows of the activation X, R = rows of W per thread, VEC = bytes of packed W per load (16 or 8),
// P = chunks of VEC bytes per row whose loads are in flight together.
//
// Layout (impnb/formats.py): packed uint8 [N, K/2], element 2i in the low nibble of byte i; scales uint8 [N, G]
// holding FP8 E4M3FN bytes; the per-tensor scalar gs is a divisor (compressed-tensors) or a multiplier (ModelOpt).
//
// The E2M1 / E4M3 decoders (e2m1_pair, e4m3_to_float, decode_block: through fp16 bits, exact) are in
// impnb.cuh. Ops: nvfp4_gemv (gemv_nvfp4, the engine's GEMV), nvfp4_gemm (nvfp4_gemv_kernel for M <= 8;
// nvfp4_dequant_qs_half, split_rows_half and combine_rows around cuBLAS above that), nvfp4_dequantize
// (nvfp4_dequant_rows, also prefill's row-block dequantization).
#include "impnb.cuh"

// Weights are streamed once: read-only loads that do not allocate in L1, which stays for the activations.
template <int VEC>
__device__ __forceinline__ void load_packed(const u8* p, u32* w) {
    if (VEC == 16) {
        asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                     : "=r"(w[0]), "=r"(w[1]), "=r"(w[2]), "=r"(w[3]) : "l"(p));
    } else {
        asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(w[0]), "=r"(w[1]) : "l"(p));
    }
}

template <int VEC>
__device__ __forceinline__ u32 load_scales(const u8* p) {
    if (VEC == 16) return (u32)__ldg(reinterpret_cast<const u16*>(p));
    return (u32)__ldg(p);
}

__device__ __forceinline__ void load_x16(const float* p, float* xv) {
    const float4* xp = reinterpret_cast<const float4*>(p);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float4 v = __ldg(xp + i);
        xv[4 * i] = v.x; xv[4 * i + 1] = v.y; xv[4 * i + 2] = v.z; xv[4 * i + 3] = v.w;
    }
}

__device__ __forceinline__ float finish(float acc, float global_scale, int divide) {
    const float v = acc * 16384.0f;  // undo the 2^-14 of the fp16 decode (exact)
    return divide ? v / global_scale : v * global_scale;
}

// y[m, n] = sum_k X[m, k] W[n, k] for M <= 8 activation rows (M = 1 is the GEMV).
// Block: (TK, RY) threads; threadIdx.y picks a group of R rows, threadIdx.x walks the row's chunks of VEC packed
// bytes (2 * VEC elements) with stride TK, so a warp reads 32 * VEC contiguous bytes per row per step. Each
// thread decodes a block once and uses it for all M activation rows; partial sums are reduced across TK threads
// (warp shuffles, then shared memory across warps).
template <int R, int M, int VEC, int P>
__global__ void __launch_bounds__(256, (M == 1 ? 2 : 1)) nvfp4_gemv_kernel(
        const u8* __restrict__ packed, const u8* __restrict__ scales, const float* __restrict__ x,
        float* __restrict__ y, int n_rows, int k_cols, float global_scale, int divide) {
    constexpr int GPC = VEC / 8;  // 16-element blocks per chunk
    __shared__ float red[8][R * M];
    const int tk = blockDim.x, tx = threadIdx.x;
    const int row0 = (blockIdx.x * blockDim.y + threadIdx.y) * R;
    const int chunks = k_cols / (2 * VEC);
    const long long row_bytes = k_cols / 2, row_scales = k_cols / 16;
    float acc[R][M];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int m = 0; m < M; ++m) acc[r][m] = 0.0f;

    // P chunks per step: all their loads are issued before any is decoded (more bytes in flight).
    for (int c0 = tx; c0 < chunks; c0 += P * tk) {
        u32 w[P][R][VEC / 4];
        u32 sc[P][R];
#pragma unroll
        for (int h = 0; h < P; ++h) {
            const int c = c0 + h * tk;
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const int row = row0 + r;
                if (row < n_rows && c < chunks) {
                    load_packed<VEC>(packed + row * row_bytes + (long long)c * VEC, w[h][r]);
                    sc[h][r] = load_scales<VEC>(scales + row * row_scales + (long long)c * GPC);
                } else {
#pragma unroll
                    for (int i = 0; i < VEC / 4; ++i) w[h][r][i] = 0u;
                    sc[h][r] = 0u;
                }
            }
        }
#pragma unroll
        for (int h = 0; h < P; ++h) {
            const int c = c0 + h * tk;
            if (c >= chunks) break;
#pragma unroll
            for (int j = 0; j < GPC; ++j) {
                const long long col = (long long)c * (2 * VEC) + 16 * j;
                if constexpr (M == 1) {  // GEMV: activations first, then one row at a time (few live registers)
                    float xv[16];
                    load_x16(x + col, xv);
#pragma unroll
                    for (int r = 0; r < R; ++r) {
                        float q[16];
                        decode_block(w[h][r][2 * j], w[h][r][2 * j + 1], q);
                        float p = q[0] * xv[0];
#pragma unroll
                        for (int i = 1; i < 16; ++i) p = fmaf(q[i], xv[i], p);
                        acc[r][0] = fmaf(p, e4m3_to_float((sc[h][r] >> (8 * j)) & 0xFFu), acc[r][0]);
                    }
                } else {  // small M: decode each row once, use it for every activation row
                    float q[R][16];
                    float s[R];
#pragma unroll
                    for (int r = 0; r < R; ++r) {
                        decode_block(w[h][r][2 * j], w[h][r][2 * j + 1], q[r]);
                        s[r] = e4m3_to_float((sc[h][r] >> (8 * j)) & 0xFFu);
                    }
#pragma unroll
                    for (int m = 0; m < M; ++m) {
                        float xv[16];
                        load_x16(x + m * (long long)k_cols + col, xv);
#pragma unroll
                        for (int r = 0; r < R; ++r) {
                            float p = q[r][0] * xv[0];
#pragma unroll
                            for (int i = 1; i < 16; ++i) p = fmaf(q[r][i], xv[i], p);
                            acc[r][m] = fmaf(p, s[r], acc[r][m]);
                        }
                    }
                }
            }
        }
    }
    // reduce over the TK threads of this row group
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int m = 0; m < M; ++m)
#pragma unroll
            for (int off = 16; off > 0; off >>= 1)
                acc[r][m] += __shfl_xor_sync(0xFFFFFFFFu, acc[r][m], off);
    const int warps_per_row = tk / 32, wx = tx / 32;
    if (warps_per_row == 1) {
        if (tx == 0) {
#pragma unroll
            for (int r = 0; r < R; ++r)
                if (row0 + r < n_rows)
#pragma unroll
                    for (int m = 0; m < M; ++m)
                        y[m * (long long)n_rows + row0 + r] = finish(acc[r][m], global_scale, divide);
        }
        return;
    }
    const int slot = threadIdx.y * warps_per_row + wx;  // < 8: blockDim.x * blockDim.y <= 256
    if ((tx & 31) == 0) {
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
            for (int m = 0; m < M; ++m) red[slot][r * M + m] = acc[r][m];
    }
    __syncthreads();
    if (tx < R * M) {
        const int r = tx / M, m = tx % M;
        float v = 0.0f;
        for (int i = 0; i < warps_per_row; ++i) v += red[threadIdx.y * warps_per_row + i][tx];
        if (row0 + r < n_rows) y[m * (long long)n_rows + row0 + r] = finish(v, global_scale, divide);
    }
}

// W [N, K] as fp16 holding q * s EXACTLY (|q s| <= 6 * 448 = 2688, nonzero |q s| >= 0.5 * 2^-9: 6 significant
// bits at most, all fp16 normals), the global scale left out. One thread per 4 packed bytes (8 elements).
extern "C" __global__ void nvfp4_dequant_qs_half(const u8* __restrict__ packed, const u8* __restrict__ scales,
                                                  __half* __restrict__ out, long long n_words, int k_cols) {
    const long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= n_words) return;
    const u32 w = __ldg(reinterpret_cast<const u32*>(packed) + i);
    const long long elem = i * 8;  // first element of this word, row-major in [N, K]
    const long long row = elem / k_cols, col = elem % k_cols;
    const float s = e4m3_to_float(__ldg(scales + row * (k_cols / 16) + col / 16)) * 16384.0f;
    __half2 h[4];
    float2 a;
    a = e2m1_pair<0>(w); const float q0 = a.x, q4 = a.y;
    a = e2m1_pair<1>(w); const float q1 = a.x, q5 = a.y;
    a = e2m1_pair<2>(w); const float q2 = a.x, q6 = a.y;
    a = e2m1_pair<3>(w); const float q3 = a.x, q7 = a.y;
    h[0] = __floats2half2_rn(q0 * s, q1 * s);
    h[1] = __floats2half2_rn(q2 * s, q3 * s);
    h[2] = __floats2half2_rn(q4 * s, q5 * s);
    h[3] = __floats2half2_rn(q6 * s, q7 * s);
    *reinterpret_cast<uint4*>(out + elem) = *reinterpret_cast<const uint4*>(h);
}

// X [M, K] float32 -> Xs [2M, K] fp16: rows 0..M-1 hold hi = fp16(x 2^e), rows M..2M-1 hold lo = fp16(x 2^e - hi),
// with one power of two 2^e per row putting max|x| in [2^13, 2^14) (no fp16 overflow; hi + lo carries ~22 bits).
// row_exp[m] = e. One block (256 threads) per row.
extern "C" __global__ void split_rows_half(const float* __restrict__ x, __half* __restrict__ xs,
                                            int* __restrict__ row_exp, int m_rows, int k_cols) {
    __shared__ float red[256];
    const int m = blockIdx.x;
    const float* xr = x + (long long)m * k_cols;
    float amax = 0.0f;
    for (int k = threadIdx.x; k < k_cols; k += blockDim.x) amax = fmaxf(amax, fabsf(xr[k]));
    red[threadIdx.x] = amax;
    __syncthreads();
    for (int off = blockDim.x / 2; off > 0; off >>= 1) {
        if (threadIdx.x < off) red[threadIdx.x] = fmaxf(red[threadIdx.x], red[threadIdx.x + off]);
        __syncthreads();
    }
    amax = red[0];
    int e = 0;
    if (amax > 0.0f && isfinite(amax)) {
        int ex;
        frexpf(amax, &ex);  // amax < 2^ex
        e = min(14 - ex, 120);
    }
    if (threadIdx.x == 0) row_exp[m] = e;
    __half* hi = xs + (long long)m * k_cols;
    __half* lo = xs + ((long long)m + m_rows) * k_cols;
    for (int k = threadIdx.x; k < k_cols; k += blockDim.x) {
        const float v = ldexpf(xr[k], e);
        const __half h = __float2half_rn(v);
        hi[k] = h;
        lo[k] = __float2half_rn(v - __half2float(h));
    }
}

// Y[m, n] = (C[m, n] + C[M + m, n]) * 2^-e_m, then / gs or * ws2. C is [2M, N] float32 from cuBLAS.
extern "C" __global__ void combine_rows(const float* __restrict__ c, const int* __restrict__ row_exp,
                                         float* __restrict__ y, int m_rows, int n_cols, float global_scale,
                                         int divide) {
    const long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= (long long)m_rows * n_cols) return;
    const long long m = i / n_cols;
    const float v = ldexpf(c[i] + c[i + (long long)m_rows * n_cols], -row_exp[m]);
    y[i] = divide ? v / global_scale : v * global_scale;
}

// y[N] = W @ x for an NVFP4 W: the engine's GEMV (impnb.cuh gemv_body) with a plain input stage; rmult[n] is the
// per-row multiplier 2^14 / gs (compressed-tensors) or 2^14 ws2 (ModelOpt). RR: rows per warp (1 or 4).
template <int RR>
__global__ void __launch_bounds__(THREADS)
    gemv_nvfp4(const unsigned char* W, const unsigned char* S, const float* rmult, const float* bias, const float* x,
               const float* aux, float eps, float off, float* y, int N, int K, int acc_out, float softcap) {
    gemv_body<FMT_NVFP4, IN_PLAIN, RR>(W, S, rmult, bias, x, aux, eps, off, y, N, K, acc_out, softcap);
}

// Dequantize rows [r0, r0 + n) of an NVFP4 weight to float32 out [n, K] as impnb.reference.nvfp4_dequantize: block
// multiplier m = s / gs (compressed-tensors, ct = 1) or s * gs (ModelOpt), float32, then q * m; gs[r] is the
// stored global scale of row r (0 for an unusable tensor: zeros). Prefill multiplies the rows with cuBLAS SGEMM.
extern "C" __global__ void nvfp4_dequant_rows(const unsigned char* __restrict__ W, const unsigned char* __restrict__ S,
                                              const float* __restrict__ gs, int ct, int r0, int n, int K,
                                              float* out) {
    const size_t total = (size_t)n * K;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = r0 + i / K, k = i % K;
        const float2 q2 = e2m1x2_scaled(W[r * (K / 2) + k / 2]);
        const float q = (k & 1 ? q2.y : q2.x) * 16384.0f;
        const float s = fp8_e4m3(S[r * (K / 16) + k / 16]);
        out[i] = f32_is_zero(gs[r]) ? 0.f : exact_dequant(q, s, gs[r], ct);
    }
}
