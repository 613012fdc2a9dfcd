// Kernels of the activations family (impnb/cuda/activations.py; op gated_activation): act(gate) * up over rows of
// a fused [gate | up] projection (prefill's MLP).
#include "impnb.cuh"

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
