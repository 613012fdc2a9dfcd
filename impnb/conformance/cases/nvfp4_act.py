"""Cross-check cases of the W4A4 activation quantize-dequantize (impnb/reference/nvfp4_act.py).

Activations are O(1) random normals with planted awkward blocks: an all-zero block (scale 0 -> 0x20), a block whose
FP8 scale underflows (flushed to zero), an outlier above the calibration amax (saturates at 448 / +-6), and values
on E2M1 ties. Shapes: tiny ones for the simulator; real ones are decode (M=1) and prefill (M=64) activations of
SmolLM2-135M (K=576) and Gemma-3-270M MLP down_proj inputs (K=2048).
"""
from __future__ import annotations

import numpy as np

from . import case

F32 = np.float32
SHAPES = {"tiny": [(3, 32), (2, 48)], "real": [(1, 576), (64, 576), (64, 2048)]}


def planted_activations(rng, m, k, amax_calibration=4.0):
    x = rng.standard_normal((m, k)).astype(F32)  # [M, K]
    x[0, :16] = 0.0  # all-zero block
    x[-1, 16:32] = x[-1, 16:32] * F32(1e-9)  # FP8 scale underflow: the block is flushed
    x[m // 2, k // 2] = F32(3.0 * amax_calibration)  # beyond the calibration range: saturates
    x[0, 16:20] = F32([0.25, 0.75, -1.25, 2.5])  # E2M1 ties where the block scale is 1 (block amax 6 below)
    x[0, 20] = F32(6.0)
    return x


def _igs(amax):
    return float(F32(2688.0) / F32(amax))  # compressed-tensors input_global_scale from a calibration amax


for _i, (_layout, _tag) in enumerate((("compressed-tensors", "ct"), ("modelopt", "modelopt"))):

    @case("fake_quantize_nvfp4_activations", f"planted_{_tag}")
    def _(rng, size, layout=_layout, i=_i):
        m, k = SHAPES[size][i % len(SHAPES[size])]
        scalar = _igs(4.0) if layout == "compressed-tensors" else float(F32(4.0) / F32(2688.0))
        return (planted_activations(rng, m, k), scalar), {"layout": layout}


@case("fake_quantize_nvfp4_activations", "block_scale_one_ct")
def _(rng, size):
    # igs = 448: a block with amax 6 gets scale fp8(448) = 448 and divisor 448/448 = 1, so codes are the values
    m, k = SHAPES[size][-1]
    return (planted_activations(rng, m, k, amax_calibration=6.0), 448.0), {"layout": "compressed-tensors"}


@case("fake_quantize_nvfp4_activations", "batched_3d")
def _(rng, size):
    m, k = SHAPES[size][0]
    return (rng.standard_normal((2, m, k)).astype(F32), _igs(5.0)), {}


@case("fake_quantize_nvfp4_activations", "near_e2m1_ties_ct")
def _(rng, size):
    from ._near_ties import ct_divisors, plant
    m, k = SHAPES[size][0]
    x = rng.standard_normal((m, k)).astype(F32)
    igs = _igs(4.0)
    for r in range(m):
        plant(x[r], ct_divisors(np.max(np.abs(x[r].reshape(-1, 16)), axis=-1), igs), rng)
    return (x, igs), {"layout": "compressed-tensors"}


@case("fake_quantize_nvfp4_activations", "fp8_scale_ties_ct")
def _(rng, size):
    from ._near_ties import fill_blocks, scale_tie_amaxes
    igs = _igs(3.7)  # not a multiple of 6: the order of igs * (amax / 6) matters
    amaxes = scale_tie_amaxes(lambda a: F32(igs) * (F32(a) / F32(6.0)))
    x = (rng.standard_normal(16 * len(amaxes)) * 1e-3).astype(F32)
    fill_blocks(x, amaxes, rng)
    return (x.reshape(1, -1), igs), {"layout": "compressed-tensors"}
