// Kernels of the embedding family (impnb/cuda/embedding.py; op embedding): a row gather times the scale.
#include "impnb.cuh"

// ---------------------------------------------------------------- embedding
// x[m, :] = table[ids[m], :] * scale for m < gridDim.x. ids: the st[1] slot in decode, a token array in prefill.
extern "C" __global__ void embed_rows(const unsigned char* __restrict__ table, int fmt, const int* __restrict__ ids,
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

extern "C" __global__ void embed_nvfp4_rows(const unsigned char* __restrict__ P, const unsigned char* __restrict__ S,
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
