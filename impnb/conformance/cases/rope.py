"""Cross-check cases of rope (impnb/reference/rope.py): neox / interleaved, partial rotary, proportional zero tails,
YaRN attention scaling, positions past a Gemma window (> 512) and large positions."""
from __future__ import annotations

import numpy as np

from impnb.config import RopeConfig
from impnb.reference.rope import rope_inv_freq

from . import case


def _x(rng, t, h, d):
    return rng.standard_normal((t, h, d)).astype(np.float32)


def _pos(rng, t, hi):
    return np.sort(rng.integers(0, hi, size=t)).astype(np.int64)


@case("rope", "neox_full")
def _neox(rng, size):
    t, h, d = (3, 2, 8) if size == "tiny" else (9, 9, 64)  # real: SmolLM2 heads
    inv, _ = rope_inv_freq(RopeConfig(theta=100000.0), d)
    return (_x(rng, t, h, d), _pos(rng, t, 8192), inv), {}


@case("rope", "interleaved_partial")
def _interleaved(rng, size):
    t, h, d = (2, 3, 12) if size == "tiny" else (5, 8, 128)
    inv, _ = rope_inv_freq(RopeConfig(theta=10000.0, partial_rotary_factor=0.5), d)
    return (_x(rng, t, h, d), _pos(rng, t, 700), inv), {"style": "interleaved"}


@case("rope", "proportional_gemma4")
def _proportional(rng, size):
    t, h, d = (2, 2, 16) if size == "tiny" else (4, 16, 512)  # real: Gemma-4 full-attention head_dim
    inv, _ = rope_inv_freq(RopeConfig(theta=1e6, kind="proportional", partial_rotary_factor=0.25), d)
    return (_x(rng, t, h, d), _pos(rng, t, 100000), inv), {}


@case("rope", "yarn_scaled")
def _yarn(rng, size):
    t, h, d = (2, 2, 8) if size == "tiny" else (3, 64, 64)  # real: gpt-oss heads
    cfg = RopeConfig(theta=150000.0, kind="yarn", factor=32.0, original_max_position_embeddings=4096,
                     truncate=False)
    inv, scaling = rope_inv_freq(cfg, d)
    return (_x(rng, t, h, d), _pos(rng, t, 20000), inv), {"attention_scaling": scaling}
