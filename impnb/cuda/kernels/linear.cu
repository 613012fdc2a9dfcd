// Kernels of the linear family (impnb/cuda/linear.py; ops rms_norm_linear and gated_linear): the engine's GEMVs
// with a fused input stage. FMT: FMT_NVFP4 / FMT_F32 / FMT_F16 / FMT_BF16 (impnb.cuh); RR: rows per warp (1 or 4).
#include "impnb.cuh"

// y[N] (+)= epi(W @ (rmsnorm(x) * (off + aux)))       (op rms_norm_linear; epi: softcap when softcap > 0)
template <int FMT, int RR>
__global__ void __launch_bounds__(THREADS) rms_norm_gemv(const unsigned char* W, const unsigned char* S, const float* rmult, const float* bias,
        const float* x, const float* aux, float eps, float off, float* y, int N, int K, int acc_out,
        float softcap) {
    gemv_body<FMT, IN_NORM, RR>(W, S, rmult, bias, x, aux, eps, off, y, N, K, acc_out, softcap);
}

// y[N] (+)= W @ (act(x[:K]) * x[K:2K]), ACT = IN_SILU or IN_GELU (tanh form)      (op gated_linear)
template <int FMT, int ACT, int RR>
__global__ void __launch_bounds__(THREADS) gated_gemv(const unsigned char* W, const unsigned char* S, const float* rmult, const float* bias,
        const float* x, const float* aux, float eps, float off, float* y, int N, int K, int acc_out,
        float softcap) {
    gemv_body<FMT, ACT, RR>(W, S, rmult, bias, x, aux, eps, off, y, N, K, acc_out, softcap);
}
