// Kernels of the attention family (impnb/cuda/attention.py): split-K decode attention over the cache slots (op
// attention_decode) and the o-proj GEMV that combines the splits in its input stage (op attention_output).
#include "impnb.cuh"

// ---------------------------------------------------------------- decode attention (split over cache slots)
// Block (head, split): slots [split * chunk, +chunk) of the layer's cache, masked from the stored positions
// (slot_pos[s] >= 0, <= pos, pos - slot_pos[s] < window when window > 0). Writes the split's softmax partials:
// pm = max score, pl = sum exp(score - pm), pacc[d] = sum exp(score - pm) v[d]. Scores: q.k * scale, softcapped.
// Scores: TPS = blockDim / chunk threads per slot, each a D / TPS slice with float4 loads, reduced by shuffles.
// P.V: G = blockDim / D thread groups split the slots; loads of v are coalesced over d and independent over
// slots (unrolled), the groups are summed through shared memory. Needs D % 4 == 0 and chunk | blockDim.
extern "C" __global__ void attention_partials(const float* __restrict__ q, const float* __restrict__ kc,
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

// Combine the split-K partials of attention_partials into xs[K] = concat_h(attention output of head h), K = H D:
// weights per (head, split) first, in shared memory after xs (wsm [H, S]); a sink logit joins each head's softmax.
__device__ void combine_partials(float* xs, const float* __restrict__ apm, const float* __restrict__ apl,
                                 const float* __restrict__ apacc, const float* __restrict__ asinks, int Sn, int D,
                                 int K) {
    const int Hn = K / D;
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
}

// y[N] (+)= W @ (attention output combined from the partials)
template <int FMT>
__global__ void __launch_bounds__(THREADS, 1)
    attention_output_gemv(const unsigned char* W, const unsigned char* S, const float* rmult, const float* bias,
                          const float* pm, const float* pl, const float* pacc, const float* sinks, int Sn, int D,
                          float* y, int N, int K, int acc_out) {
    extern __shared__ float xs[];
    prefetch_rows<FMT, 1>(W, N, K);
    combine_partials(xs, pm, pl, pacc, sinks, Sn, D, K);
    __syncthreads();
    gemv_rows<FMT, 1>(W, S, rmult, bias, y, N, K, acc_out, 0.f);
}
