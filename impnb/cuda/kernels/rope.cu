// Kernels of the rope family (impnb/cuda/rope.py): QK-norm + RoPE + KV-cache append (op qkv_rope_append), and
// the q|k|v GEMV with RoPE and the append in its epilogue (op rms_norm_qkv_rope_append).
#include "impnb.cuh"

// ---------------------------------------------------------------- QK-norm + RoPE + KV append
// Block b < H: query head b; H <= b < H + HKV: kv head b - H. Row m = blockIdx.y is the token at position
// st[0] + m (decode: one row). qkv row: [q (H*D) | k (HKV*D) | v (HKV*D)] (k_eq_v: no v part, v = raw k).
// q -> qout [M, H, D]; k, v -> caches [C, HKV, D] at slot pos % C; slot_pos[slot] = pos. qk_norm: bit 0 normalises
// the query heads with qn, bit 1 the key heads with kn (each independently present).
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
        const float vr = v_norm ? block_rms_inverse(vs, D, eps, red) : 1.f;
        float* vdst = vc + ((size_t)slot * HKV + head) * D;
        for (int d = threadIdx.x; d < D; d += blockDim.x) vdst[d] = vs[d] * vr;
        if (head == 0 && threadIdx.x == 0) slot_pos[slot] = pos;
    }
    __syncthreads();
    const float* nw = is_q ? qn : kn;
    if (qk_norm & (is_q ? 1 : 2)) {
        const float r = block_rms_inverse(h, D, eps, red);
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

template <int FMT>
__global__ void __launch_bounds__(THREADS)
    rms_norm_qkv_rope_gemv(const unsigned char* W, const unsigned char* S, const float* rmult, const float* bias,
                           const float* x, const float* nw, float eps, float off, float* qout, float* kc, float* vc,
                           int* slot_pos, const int* st, const float* cos_t, const float* sin_t, int F,
                           int interleaved, int H, int HKV, int D, int C, int K) {
    qkv_rope_body<FMT>(W, S, rmult, bias, x, nw, eps, off, qout, kc, vc, slot_pos, st, cos_t, sin_t, F, interleaved,
                       H, HKV, D, C, K);
}
