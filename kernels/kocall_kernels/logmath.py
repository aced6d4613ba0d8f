"""Scalar helpers shared by the CPU twins and the CUDA kernels of the CTC searches.

Written once in the Python subset that `numba.njit` and `numba.cuda.jit(device=True)` both
compile: `register_jitable` makes them callable from njit code, and a kernel module compiles
the same function for the device (`cuda.jit(device=True)(log_add)`), so twin and kernel
cannot drift apart.
"""
from __future__ import annotations

import math

from numba.extending import register_jitable

NEG_INF = -math.inf


@register_jitable(inline="always")
def log_add(a, b):
    """ln(e^a + e^b), exact at -inf (no nan from -inf - -inf)."""
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    m = a if a > b else b
    return m + math.log1p(math.exp(-abs(a - b)))


@register_jitable(inline="always")
def better(score1, hash1, score2, hash2):
    """The one total order on search candidates: score descending, then prefix hash ascending."""
    return score1 > score2 or (score1 == score2 and hash1 < hash2)
