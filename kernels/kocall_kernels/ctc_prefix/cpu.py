"""CPU twin of the CTC prefix scores: numba njit, rows in parallel (prange).

Same recursion and results as `reference.py` (see the package docstring); the per-frame
update `_extend_row_py` is written once in the Python subset that both `numba.njit` and
`numba.cuda.jit(device=True)` compile, so the CUDA kernel runs the same code.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from kocall_kernels.ctc_prefix import check_rows
from kocall_kernels.logmath import log_add

NEG_INF = -np.inf


def _extend_row_py(log_probs, lens, row_utt, r_prev, last, prefix_len, unit, blank, psi, r, n):
    """Row n of `extend`: writes psi[n] and r[n] (every frame; -inf where nothing can be)."""
    u = row_utt[n]
    c = unit[n]
    L = prefix_len[n]
    T = lens[u]
    repeat = c == last[n]
    for t in range(r.shape[1]):
        r[n, t, 0] = NEG_INF
        r[n, t, 1] = NEG_INF
    acc = NEG_INF
    start = L
    if L == 0:
        r[n, 0, 0] = np.float64(log_probs[u, 0, c])
        acc = r[n, 0, 0]
        start = 1
    for t in range(start, T):
        if repeat:
            phi = r_prev[n, t - 1, 1]
        else:
            phi = log_add(r_prev[n, t - 1, 0], r_prev[n, t - 1, 1])
        x = np.float64(log_probs[u, t, c])
        r[n, t, 0] = log_add(r[n, t - 1, 0], phi) + x
        r[n, t, 1] = log_add(r[n, t - 1, 0], r[n, t - 1, 1]) + np.float64(log_probs[u, t, blank])
        acc = log_add(acc, phi + x)
    psi[n] = acc


_extend_row = njit(cache=True, nogil=True)(_extend_row_py)


@njit(cache=True, parallel=True)
def _extend_all(log_probs, lens, row_utt, r_prev, last, prefix_len, unit, blank, psi, r):
    for n in prange(r.shape[0]):
        _extend_row(log_probs, lens, row_utt, r_prev, last, prefix_len, unit, blank, psi, r, n)


@njit(cache=True, nogil=True)
def _extend_serial(log_probs, lens, row_utt, r_prev, last, prefix_len, unit, blank, psi, r):
    for n in range(r.shape[0]):
        _extend_row(log_probs, lens, row_utt, r_prev, last, prefix_len, unit, blank, psi, r, n)


# Below this many row-frames a call runs on one thread: waking the parallel pool costs more, and
# its OpenMP workers then spin beside torch (measured: a Whisper decoder step on one thread went
# from 25 to 120 ms of CPU after one parallel call, unless OMP_WAIT_POLICY=PASSIVE). One
# utterance's joint beam search (beam x pre-beam rows x frames) stays below it.
PARALLEL_MIN_WORK = 200_000


@njit(cache=True, nogil=True)
def _initial_all(log_probs, lens, row_utt, blank, r):
    for n in range(r.shape[0]):   # a cumulative sum: too little work for the parallel pool
        u = row_utt[n]
        acc = 0.0
        for t in range(r.shape[1]):
            r[n, t, 0] = NEG_INF
            if t < lens[u]:
                acc += np.float64(log_probs[u, t, blank])
                r[n, t, 1] = acc
            else:
                r[n, t, 1] = NEG_INF


def _int_rows(*arrays) -> list[np.ndarray]:
    return [np.ascontiguousarray(a, dtype=np.int32) for a in arrays]


def initial_state(log_probs: np.ndarray, lens: np.ndarray, row_utt: np.ndarray, blank: int = 0) -> np.ndarray:
    """(N, T, 2) states of the empty prefix for each row's utterance."""
    log_probs = np.ascontiguousarray(log_probs, dtype=np.float32)
    lens, row_utt = _int_rows(lens, row_utt)
    check_rows(log_probs, lens, row_utt)
    r = np.empty((row_utt.shape[0], log_probs.shape[1], 2), np.float64)
    _initial_all(log_probs, lens, row_utt, blank, r)
    return r


def extend(log_probs: np.ndarray, lens: np.ndarray, row_utt: np.ndarray, r_prev: np.ndarray, last: np.ndarray,
           prefix_len: np.ndarray, unit: np.ndarray, blank: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(psi (N,), r (N, T, 2)): each row's prefix extended by its `unit`."""
    log_probs = np.ascontiguousarray(log_probs, dtype=np.float32)
    lens, row_utt, last, prefix_len, unit = _int_rows(lens, row_utt, last, prefix_len, unit)
    r_prev = np.ascontiguousarray(r_prev, dtype=np.float64)
    check_rows(log_probs, lens, row_utt, r_prev)
    if unit.size and (unit.min() < 0 or unit.max() >= log_probs.shape[2]):
        raise ValueError(f"units must be within 0..{log_probs.shape[2] - 1}")
    psi = np.empty(r_prev.shape[0], np.float64)
    r = np.empty_like(r_prev)
    run = _extend_all if r.shape[0] * r.shape[1] >= PARALLEL_MIN_WORK else _extend_serial
    run(log_probs, lens, row_utt, r_prev, last, prefix_len, unit, blank, psi, r)
    return psi, r


def full_log_prob(r: np.ndarray, lens: np.ndarray, row_utt: np.ndarray) -> np.ndarray:
    """log P(the whole output == the prefix) per row."""
    last = np.asarray(lens)[np.asarray(row_utt)] - 1
    rows = np.arange(r.shape[0])
    return np.logaddexp(r[rows, last, 0], r[rows, last, 1])
