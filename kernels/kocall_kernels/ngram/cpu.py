"""CPU twin of the n-gram queries (numba njit), the reference for the CUDA path.

`lm_score_py` is written once in the subset of Python that both `numba.njit` and
`numba.cuda.jit(device=True)` compile, so the CPU and GPU queries are the same code:
`lm_score` (here) and `kocall_kernels.ngram.cuda.lm_score_device` wrap it.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.extending import register_jitable

from kocall_kernels.ngram.tables import NgramTables

# What a query for a token the root lacks returns (cannot happen for valid tables:
# the root holds every token 1..V; blank (0) must never be queried).
MISSING_LOGPROB = np.float32(-np.inf)


@register_jitable(inline="always")
def find_arc(state_arc_start, arc_token, state, token):
    """Index of `state`'s arc with `token` in CSR tables (tokens ascending within a state), or -1.
    Callable from njit and CUDA device code alike (the n-gram and the hotword tables use it)."""
    lo = state_arc_start[state]
    end = state_arc_start[state + 1]
    hi = end
    while lo < hi:
        mid = (lo + hi) // 2
        if arc_token[mid] < token:
            lo = mid + 1
        else:
            hi = mid
    if lo < end and arc_token[lo] == token:
        return lo
    return -1


def lm_score_py(state_arc_start, arc_token, arc_logprob, arc_next_state,
                state_backoff_weight, state_backoff_to, state, token):
    """(log10 P(token | state), next state): binary-search the arc in `state`; if absent,
    add the state's back-off weight, move to its back-off state and repeat."""
    backoff = np.float32(0.0)
    s = state
    while True:
        arc = find_arc(state_arc_start, arc_token, s, token)
        if arc >= 0:
            return backoff + arc_logprob[arc], arc_next_state[arc]
        if s == 0:
            return backoff + np.float32(-np.inf), np.int32(0)
        backoff += state_backoff_weight[s]
        s = state_backoff_to[s]


lm_score = njit(cache=True, nogil=True)(lm_score_py)


@njit(cache=True, parallel=True)
def _next_token_scores(state_arc_start, arc_token, arc_logprob, arc_next_state,
                       state_backoff_weight, state_backoff_to, states, out_scores, out_next):
    # Walk the back-off chain once per state and fill the dense row from the most specific
    # context down: a token takes the first (longest-context) arc that holds it. Cheaper than
    # V binary searches, and the same float32 sum order as lm_score, so bit-identical.
    width = out_scores.shape[1]
    for b in prange(states.shape[0]):
        for t in range(width):
            out_next[b, t] = -1
        s = states[b]
        backoff = np.float32(0.0)
        while True:
            for a in range(state_arc_start[s], state_arc_start[s + 1]):
                t = arc_token[a]
                if out_next[b, t] < 0:
                    out_scores[b, t] = backoff + arc_logprob[a]
                    out_next[b, t] = arc_next_state[a]
            if s == 0:
                break
            backoff += state_backoff_weight[s]
            s = state_backoff_to[s]
        # blank (column 0) does not advance the LM: score 0, same state
        out_scores[b, 0] = 0.0
        out_next[b, 0] = states[b]


def next_token_scores_cpu(tables: NgramTables, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each LM state, log10 P(token | state) for tokens 0..V and the next states, (B, V+1).

    Column 0 (blank) holds 0.0 and the unchanged state; column V is `</s>`."""
    states = np.ascontiguousarray(states, dtype=np.int32)
    if states.size and (states.min() < 0 or states.max() >= tables.num_states):
        raise ValueError(f"LM states must be in 0..{tables.num_states - 1}")
    scores = np.empty((states.shape[0], tables.vocab_size + 1), dtype=np.float32)
    nxt = np.empty((states.shape[0], tables.vocab_size + 1), dtype=np.int32)
    _next_token_scores(*tables.arrays(), states, scores, nxt)
    return scores, nxt
