// Kernels of the sampling family (impnb/cuda/sampling.py; op argmax_token): the greedy token chosen on the device
// in two passes, with the decode state st advanced so a graph replay needs no host update.
#include "impnb.cuh"

// ---------------------------------------------------------------- greedy token choice, on the device
// Stage 1: block b scans logits with a grid stride and keeps (max value, lowest id); banned ids (ban[v] != 0)
// never win. Stage 2 (one block): the overall winner -> st[1]; out_ids[st[2]] = it; st[2] += 1; st[0] += 1.
extern "C" __global__ void argmax_partials(const float* __restrict__ logits, const unsigned char* __restrict__ ban,
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

extern "C" __global__ void argmax_select(const float* __restrict__ bv_in, const int* __restrict__ bi_in, int G, int* st,
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
