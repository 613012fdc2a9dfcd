"""Warp intrinsics for Numba kernels, with a fallback the CUDA simulator can run.

The Numba simulator (NUMBA_ENABLE_CUDASIM=1) has no warp shuffles. On a GPU, ``shfl_xor(value, lane_mask)`` is
``cuda.shfl_xor_sync(0xFFFFFFFF, value, lane_mask)``; in the simulator it is an exchange through a per-block table
with two block barriers. Both need every thread of the BLOCK to call them together (convergent code), which the
full-mask hardware shuffle needs of the warp anyway. ``warp_max`` / ``warp_sum`` build on it (butterfly: every lane
ends with the warp's result). Nothing else in impnb calls warp intrinsics directly.
"""
from __future__ import annotations

import threading

from numba import cuda

from ._runtime import simulator_requested

FULL_MASK = 0xFFFFFFFF

if simulator_requested():
    def shfl_xor(value, lane_mask):
        """Simulator fallback: every thread posts its value, the block syncs, each reads its partner's."""
        me = threading.current_thread()
        table = me._manager.__dict__.setdefault("_impnb_shfl", {})
        table[me.thread_id] = value
        me.syncthreads()
        partner = (me.thread_id & ~31) | ((me.thread_id & 31) ^ lane_mask)
        got = table.get(partner, value)
        me.syncthreads()
        return got
else:
    @cuda.jit(device=True, inline=True)
    def shfl_xor(value, lane_mask):
        return cuda.shfl_xor_sync(FULL_MASK, value, lane_mask)


@cuda.jit(device=True)
def warp_max(value):
    """Max over the 32 lanes of a warp (every lane gets it). Block-convergent; see the module docstring."""
    offset = 16
    while offset > 0:
        other = shfl_xor(value, offset)
        if other > value:
            value = other
        offset //= 2
    return value


@cuda.jit(device=True)
def warp_sum(value):
    """Sum over the 32 lanes of a warp (butterfly order; every lane gets the same bits)."""
    offset = 16
    while offset > 0:
        value += shfl_xor(value, offset)
        offset //= 2
    return value
