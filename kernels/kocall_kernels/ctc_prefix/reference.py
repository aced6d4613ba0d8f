"""Plain numpy CTC prefix scores: the specification the numba and CUDA versions match
(see the package docstring for the recursion)."""
from __future__ import annotations

import numpy as np

from kocall_kernels.ctc_prefix import NEG_INF, check_rows


def initial_state(log_probs: np.ndarray, lens: np.ndarray, row_utt: np.ndarray, blank: int = 0) -> np.ndarray:
    """(N, T, 2) states of the empty prefix for each row's utterance."""
    check_rows(log_probs, lens, row_utt)
    T = log_probs.shape[1]
    r = np.full((row_utt.shape[0], T, 2), NEG_INF)
    for n, u in enumerate(row_utt):
        r[n, : lens[u], 1] = np.cumsum(log_probs[u, : lens[u], blank].astype(np.float64))
    return r


def extend(log_probs: np.ndarray, lens: np.ndarray, row_utt: np.ndarray, r_prev: np.ndarray, last: np.ndarray,
           prefix_len: np.ndarray, unit: np.ndarray, blank: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(psi (N,), r (N, T, 2)): each row's prefix extended by its `unit`."""
    check_rows(log_probs, lens, row_utt, r_prev)
    N, T = r_prev.shape[0], r_prev.shape[1]
    psi = np.full(N, NEG_INF)
    r = np.full((N, T, 2), NEG_INF)
    for n in range(N):
        u, c, L = int(row_utt[n]), int(unit[n]), int(prefix_len[n])
        x = log_probs[u, : lens[u]].astype(np.float64)
        if unit[n] == last[n]:
            phi = r_prev[n, :, 1]
        else:
            phi = np.logaddexp(r_prev[n, :, 0], r_prev[n, :, 1])
        start = max(L, 1)
        if L == 0:
            r[n, 0, 0] = x[0, c]
            psi[n] = x[0, c]
        for t in range(start, int(lens[u])):
            r[n, t, 0] = np.logaddexp(r[n, t - 1, 0], phi[t - 1]) + x[t, c]
            r[n, t, 1] = np.logaddexp(r[n, t - 1, 0], r[n, t - 1, 1]) + x[t, blank]
            psi[n] = np.logaddexp(psi[n], phi[t - 1] + x[t, c])
    return psi, r


def full_log_prob(r: np.ndarray, lens: np.ndarray, row_utt: np.ndarray) -> np.ndarray:
    """log P(the whole output == the prefix) per row."""
    last = lens[row_utt] - 1
    rows = np.arange(r.shape[0])
    return np.logaddexp(r[rows, last, 0], r[rows, last, 1])


def prefix_log_prob(log_probs: np.ndarray, prefix: list[int], blank: int = 0) -> tuple[float, float]:
    """(prefix score, full log-prob) of one unit sequence over one utterance's (T, V) posteriors."""
    lp = log_probs[None]
    lens, rows = np.array([log_probs.shape[0]]), np.array([0])
    r = initial_state(lp, lens, rows, blank)
    psi, last = np.array([0.0]), -1
    for i, c in enumerate(prefix):
        psi, r = extend(lp, lens, rows, r, np.array([last]), np.array([i]), np.array([c]), blank)
        last = c
    return float(psi[0]), float(full_log_prob(r, lens, rows)[0])
