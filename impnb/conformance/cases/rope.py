"""Cross-check cases of rope (impnb/reference/rope.py): neox / interleaved, partial rotary in both styles (pairs
(i, i + R/2) within the rotary part, the rest passed through), proportional zero tails, YaRN attention scaling and
Llama-3 scaled frequencies, positions past a Gemma window (> 512) and large positions (float32 angles)."""
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


@case("rope", "neox_partial")
def _neox_partial(rng, size):
    t, h, d = (3, 2, 16) if size == "tiny" else (6, 16, 128)
    inv, _ = rope_inv_freq(RopeConfig(theta=10000.0, partial_rotary_factor=0.25), d)  # R = D / 4
    return (_x(rng, t, h, d), _pos(rng, t, 3000), inv), {}


@case("rope", "llama3_scaled")
def _llama3(rng, size):
    t, h, d = (2, 2, 16) if size == "tiny" else (4, 32, 128)
    cfg = RopeConfig(theta=500000.0, kind="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                     original_max_position_embeddings=8192)
    inv, _ = rope_inv_freq(cfg, d)
    return (_x(rng, t, h, d), _pos(rng, t, 30000), inv), {}


@case("rope", "neox_partial_scaled")
def _neox_partial_scaled(rng, size):
    t, h, d = (2, 2, 16) if size == "tiny" else (4, 8, 128)
    inv, _ = rope_inv_freq(RopeConfig(theta=10000.0, partial_rotary_factor=0.5), d)
    return (_x(rng, t, h, d), _pos(rng, t, 5000), inv), {"attention_scaling": 1.25}  # scales rotated dims only
