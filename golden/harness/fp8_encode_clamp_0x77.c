/* An FP8 E4M3 encoder with a bug engines have shipped: it treats exponent field 15 as reserved (IEEE style), so
   its largest finite value is 0x77 = 240 instead of 0x7E = 448, and everything above 240 saturates to 0x77. */
#include <math.h>
#include <string.h>

#include "impl.h"

#define WRONG_MAX_FINITE 240.0
#define WRONG_MAX_CODE 0x77

static uint8_t encode_one(float x, int saturate) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    uint8_t sign = (uint8_t)((bits >> 24) & 0x80);
    if (isnan(x)) return sign | 0x7F;
    double a = fabs((double)x);
    if (isinf(x)) return sign | (saturate ? WRONG_MAX_CODE : 0x7F);
    if (a == 0.0) return sign;
    int e;
    frexp(a, &e);
    e = e - 1 < -6 ? -6 : e - 1;
    double quantum = ldexp(1.0, e - 3);
    double r = nearbyint(a / quantum) * quantum;
    if (r > WRONG_MAX_FINITE) return sign | (saturate ? WRONG_MAX_CODE : 0x7F);
    if (r < ldexp(1.0, -6)) return sign | (uint8_t)(r / ldexp(1.0, -9));
    int re;
    frexp(r, &re);
    re -= 1;
    int mantissa = (int)((r / ldexp(1.0, re) - 1.0) * 8.0);
    return sign | (uint8_t)(((re + 7) << 3) | mantissa);
}

void fp8_e4m3_encode(const float *x, size_t n, int saturate, uint8_t *out) {
    for (size_t i = 0; i < n; i++) out[i] = encode_one(x[i], saturate);
}
