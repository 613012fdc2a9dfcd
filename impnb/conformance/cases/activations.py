"""Cross-check cases of the activations (impnb/reference/activations.py): wide ranges incl. large |x| (exp
overflow), the gpt-oss clamp limits on both sides of gate and up (default and other alpha / limit), softcap past
the cap, sigmoid gates (elementwise and one column broadcast over a row)."""
from __future__ import annotations

import numpy as np

from . import case


def _x(rng, size, spread=4.0):
    n = 37 if size == "tiny" else 4 * 8960
    return (rng.standard_normal(n) * spread).astype(np.float32)


for _name in ("silu", "gelu_tanh"):
    case(_name, "wide")(lambda rng, size: ((_x(rng, size, 6.0),), {}))
    case(_name, "extremes")(lambda rng, size: ((np.array([-100, -20, -1e-3, 0, 1e-3, 20, 100], np.float32),), {}))

for _name in ("swiglu", "geglu_tanh"):
    case(_name, "wide")(lambda rng, size: ((_x(rng, size), _x(rng, size)), {}))


@case("swiglu_oai", "clamped")
def _oai(rng, size):
    return (_x(rng, size, 8.0), _x(rng, size, 8.0)), {"alpha": 1.702, "limit": 7.0}


@case("softcap", "logits")
def _softcap(rng, size):
    return (_x(rng, size, 40.0),), {"cap": 30.0}


for _name in ("swiglu", "geglu_tanh"):
    case(_name, "extremes")(lambda rng, size: ((np.array([-100, -20, -3, 0, 3, 20, 100], np.float32),
                                                np.array([2, -1, 0.5, 7, -3, 1, -2], np.float32)), {}))


@case("swiglu_oai", "other_alpha_limit")
def _oai_other(rng, size):
    return (_x(rng, size, 5.0), _x(rng, size, 5.0)), {"alpha": 0.9, "limit": 3.0}


@case("softcap", "small_cap")
def _softcap_small(rng, size):
    return (_x(rng, size, 10.0),), {"cap": 5.0}


@case("sigmoid_gate", "elementwise_wide")
def _gate(rng, size):
    t, n = (3, 10) if size == "tiny" else (4, 8192)  # real: Qwen3.5 attention output (32 heads x 256)
    return ((rng.standard_normal((t, n)) * 3).astype(np.float32), (rng.standard_normal((t, n)) * 30).astype(
        np.float32)), {}


@case("sigmoid_gate", "column_broadcast")
def _gate_column(rng, size):
    t, n = (4, 6) if size == "tiny" else (16, 2048)  # real: the shared expert output of Qwen3-Next
    return ((rng.standard_normal((t, n)) * 3).astype(np.float32), (rng.standard_normal((t, 1)) * 5).astype(
        np.float32)), {}
