// Kernels of the moe family (impnb/cuda/moe.py): the router's top-k on the device (op moe_route) and the grouped
// expert GEMVs of one token (op rms_norm_moe_experts: moe_up_gemv then moe_down_gemv).
#include "impnb.cuh"

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

template <int FMT>
__global__ void __launch_bounds__(THREADS)
    moe_up_gemv(const unsigned char* W, const unsigned char* S, const float* rmult, const int* ids, const float* x,
                const float* aux, float eps, float off, float* y, int N, int K) {
    moe_up_body<FMT>(W, S, rmult, ids, x, aux, eps, off, y, N, K);
}

// ACT = IN_SILU or IN_GELU
template <int FMT, int ACT>
__global__ void __launch_bounds__(THREADS)
    moe_down_gemv(const unsigned char* W, const unsigned char* S, const float* rmult, const int* ids,
                  const float* wts, const float* gu, float* x, int N, int K, int TK) {
    moe_down_body<FMT, ACT>(W, S, rmult, ids, wts, gu, x, N, K, TK);
}


// Router: logits [E] -> ids [TK], weights [TK]. One block. gating 0: softmax over all E, top-k, (renorm);
// 1: top-k of the logits, softmax over those k; 2: sigmoid, top-k, (renorm). Ties: the lower expert id wins.
extern "C" __global__ void moe_route_topk(const float* __restrict__ logits, int E, int TK, int gating, int renorm,
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
