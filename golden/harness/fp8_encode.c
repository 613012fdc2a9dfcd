/* A correct FP8 E4M3FN encoder: one rounding (to nearest, ties to even) of the exact input, overflow after it. */
#include <math.h>
#include <string.h>

#include "impl.h"

static uint8_t encode_one(float x, int saturate) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    uint8_t sign = (uint8_t)((bits >> 24) & 0x80);
    if (isnan(x)) return sign | 0x7F;
    double a = fabs((double)x);                 /* exact */
    if (isinf(x)) return sign | (saturate ? 0x7E : 0x7F);
    if (a == 0.0) return sign;
    int e;
    frexp(a, &e);                               /* a = f 2^e, f in [0.5, 1) */
    e = e - 1 < -6 ? -6 : e - 1;                /* subnormals share the quantum of 2^-6 */
    double quantum = ldexp(1.0, e - 3);
    double r = nearbyint(a / quantum) * quantum; /* ties to even in the default rounding mode */
    if (r > 448.0) return sign | (saturate ? 0x7E : 0x7F);
    if (r < ldexp(1.0, -6)) return sign | (uint8_t)(r / ldexp(1.0, -9)); /* subnormal (or zero) */
    int re;
    frexp(r, &re);
    re -= 1;
    int mantissa = (int)((r / ldexp(1.0, re) - 1.0) * 8.0);
    return sign | (uint8_t)(((re + 7) << 3) | mantissa);
}

void fp8_e4m3_encode(const float *x, size_t n, int saturate, uint8_t *out) {
    for (size_t i = 0; i < n; i++) out[i] = encode_one(x[i], saturate);
}
