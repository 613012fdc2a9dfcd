/* The rest of the demo implementation: the FP8 decoder (exact) and SiLU (float32 expf, within the bound). */
#include <math.h>
#include <string.h>

#include "impl.h"

void fp8_e4m3_decode(const uint8_t *codes, size_t n, float *out) {
    for (size_t i = 0; i < n; i++) {
        int c = codes[i], e = (c >> 3) & 0xF, m = c & 0x7;
        uint32_t nan_bits = (c & 0x80) ? 0xFFC00000u : 0x7FC00000u;
        float v;
        if ((c & 0x7F) == 0x7F) memcpy(&v, &nan_bits, sizeof v);
        else v = (float)(e > 0 ? ldexp(1.0 + m / 8.0, e - 7) : ldexp(m / 8.0, -6));
        out[i] = (c & 0x80) && (c & 0x7F) != 0x7F ? -v : v;
    }
}

void silu(const float *x, size_t n, float *out) {
    for (size_t i = 0; i < n; i++) out[i] = x[i] / (1.0f + expf(-x[i]));
}
