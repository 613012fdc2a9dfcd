// Kernels of the norms family (impnb/cuda/norms.py): RMSNorm of rows (op rms_norm) and the sandwich post-norm
// added to the residual stream (op rms_norm_add).
#include "impnb.cuh"

// ---------------------------------------------------------------- RMSNorm rows and branch norms
// out[m, :] = rmsnorm(x[m, :]) * (off + w)   (w may be null: weightless)
extern "C" __global__ void rms_norm_rows(const float* __restrict__ x, const float* __restrict__ w, float* out, int D,
                                        float eps, float off) {
    __shared__ float red[32];
    const float* xr = x + (size_t)blockIdx.x * D;
    float* o = out + (size_t)blockIdx.x * D;
    const float r = block_rms_inverse(xr, D, eps, red);
    for (int i = threadIdx.x; i < D; i += blockDim.x) o[i] = w ? xr[i] * r * (w[i] + off) : xr[i] * r;
}

// Sandwich norm: x[m, :] += rmsnorm(t[m, :]) * (off + w)   (Gemma post-attention / post-FFN norms)
extern "C" __global__ void rms_norm_add_rows(const float* __restrict__ t, const float* __restrict__ w, float* x, int D,
                                        float eps, float off) {
    __shared__ float red[32];
    const float* tr = t + (size_t)blockIdx.x * D;
    float* xr = x + (size_t)blockIdx.x * D;
    const float r = block_rms_inverse(tr, D, eps, red);
    for (int i = threadIdx.x; i < D; i += blockDim.x) xr[i] += tr[i] * r * (w[i] + off);
}
