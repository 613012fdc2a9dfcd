"""Cross-check cases of rms_norm, gated_rms_norm and l2_norm (impnb/reference/norms.py): awkward widths, Gemma's +1
offset, weightless, QK-norm, rows small enough that eps decides the result (eps inside the sqrt, not added outside
it); the linear-attention output norm; an all-zero row where the eps decides."""
from __future__ import annotations

import numpy as np

from . import case


def _x(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@case("rms_norm", "llama_weight")
def _llama(rng, size):
    t, d = (3, 37) if size == "tiny" else (7, 576)  # real: SmolLM2-135M hidden
    return (_x(rng, t, d), (1.0 + 0.1 * _x(rng, d))), {"eps": 1e-5}


@case("rms_norm", "gemma_offset1")
def _gemma(rng, size):
    t, d = (2, 40) if size == "tiny" else (5, 640)  # real: Gemma-3-270M hidden
    return (_x(rng, t, d) * 30.0, 0.2 * _x(rng, d)), {"eps": 1e-6, "offset": 1.0}


@case("rms_norm", "weightless_v_norm")
def _weightless(rng, size):
    t, h, d = (2, 3, 16) if size == "tiny" else (4, 8, 256)
    return (_x(rng, t, h, d), None), {"eps": 1e-6}


@case("rms_norm", "qk_norm_chunks")
def _chunks(rng, size):
    t, h, c, d = (2, 2, 2, 8) if size == "tiny" else (3, 16, 4, 128)  # head_dim = c * d, norm per chunk of d
    return (_x(rng, t, h, c, d), 1.0 + 0.1 * _x(rng, d)), {"eps": 1e-6}


@case("rms_norm", "eps_dominated")
def _small(rng, size):
    t, d = (4, 24) if size == "tiny" else (8, 2048)
    x = _x(rng, t, d) * np.float32(1e-3)  # mean square 1e-6 next to eps 1e-5
    x[-1] = 0.0  # an all-zero row: zeros out, no NaN
    return (x, 1.0 + 0.1 * _x(rng, d)), {"eps": 1e-5}


@case("gated_rms_norm", "linear_attention_output")
def _gated(rng, size):
    t, h, d = (3, 2, 12) if size == "tiny" else (5, 32, 128)  # real: Qwen3.5 value heads
    return (_x(rng, t, h, d), _x(rng, t, h, d) * 3.0, 1.0 + 0.1 * _x(rng, d)), {"eps": 1e-6}


@case("gated_rms_norm", "large_values_eps_1e5")
def _gated_large(rng, size):
    t, d = (4, 20) if size == "tiny" else (16, 2048)
    return (_x(rng, t, d) * 50.0, _x(rng, t, d) * 10.0, _x(rng, d)), {"eps": 1e-5}


@case("gated_rms_norm", "eps_dominated_rows")
def _gated_small(rng, size):
    t, d = (3, 16) if size == "tiny" else (8, 128)
    x = _x(rng, t, d) * np.float32(1e-3)  # mean square 1e-6 next to eps 1e-5
    x[-1] = 0.0  # an all-zero row: zeros out, no NaN
    return (x, _x(rng, t, d) * 2.0, 1.0 + 0.1 * _x(rng, d)), {"eps": 1e-5}


@case("l2_norm", "heads_with_a_zero_row")
def _l2(rng, size):
    t, h, d = (3, 2, 8) if size == "tiny" else (6, 16, 128)  # real: Qwen3.5 key heads
    x = _x(rng, t, h, d)
    x[1, 0] = 0.0  # sum of squares 0: the eps alone keeps it finite (output 0)
    x[2, 1] *= 1e-4  # sum of squares ~ eps
    return (x,), {"eps": 1e-6}


@case("l2_norm", "rows_eps_1e2")
def _l2_eps(rng, size):
    t, d = (5, 16) if size == "tiny" else (64, 256)
    return (_x(rng, t, d) * 0.05,), {"eps": 1e-2}
