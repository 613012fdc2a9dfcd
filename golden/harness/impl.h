/* The C implementation under test: plain functions over contiguous arrays. */
#ifndef GOLDEN_IMPL_H
#define GOLDEN_IMPL_H

#include <stddef.h>
#include <stdint.h>

/* float -> FP8 E4M3FN byte, round to nearest even; saturate: overflow and +-inf -> 0x7E|sign, else 0x7F|sign. */
void fp8_e4m3_encode(const float *x, size_t n, int saturate, uint8_t *out);
/* FP8 E4M3FN byte -> float32 (0x7F / 0xFF: NaN 0x7FC00000 / 0xFFC00000). */
void fp8_e4m3_decode(const uint8_t *codes, size_t n, float *out);
/* x * sigmoid(x), float32. */
void silu(const float *x, size_t n, float *out);

#endif
