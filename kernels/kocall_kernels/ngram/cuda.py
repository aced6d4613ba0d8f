"""Numba CUDA n-gram queries: the device function `lm_score_device` and the batched
next-token kernel. Runs on a GPU, or under `NUMBA_ENABLE_CUDASIM=1` (set before numba is
imported) on small shapes for tests. CPU twin: `kocall_kernels.ngram.cpu`.

    from kocall_kernels.ngram.cuda import lm_score_device
    @cuda.jit
    def my_kernel(lm_arrays..., states, tokens, out):
        ...
        logprob, next_state = lm_score_device(state_arc_start, arc_token, arc_logprob,
                                              arc_next_state, state_backoff_weight,
                                              state_backoff_to, state, token)
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from kocall_kernels.ngram.cpu import lm_score_py
from kocall_kernels.ngram.tables import NgramTables

# The same source as the CPU twin (kocall_kernels.ngram.cpu.lm_score), compiled for the device.
lm_score_device = cuda.jit(device=True)(lm_score_py)

THREADS_PER_BLOCK = 128


@cuda.jit
def _next_token_scores_kernel(state_arc_start, arc_token, arc_logprob, arc_next_state,
                              state_backoff_weight, state_backoff_to, states, out_scores, out_next):
    # One block per LM state; its threads stride over the arcs of each context on the
    # back-off chain, most specific first. Tokens are unique within a context, so writes in
    # one level never race; syncthreads orders the levels (a longer context wins).
    b = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    step = cuda.blockDim.x
    width = out_scores.shape[1]
    for t in range(tid, width, step):
        out_next[b, t] = -1
    cuda.syncthreads()
    s = states[b]
    backoff = np.float32(0.0)
    while True:
        for a in range(state_arc_start[s] + tid, state_arc_start[s + 1], step):
            t = arc_token[a]
            if out_next[b, t] < 0:
                out_scores[b, t] = backoff + arc_logprob[a]
                out_next[b, t] = arc_next_state[a]
        cuda.syncthreads()
        if s == 0:
            break
        backoff += state_backoff_weight[s]
        s = state_backoff_to[s]
    if tid == 0:
        out_scores[b, 0] = 0.0
        out_next[b, 0] = states[b]


class DeviceTables:
    """The six table arrays resident on the GPU (copy once, query many times)."""

    def __init__(self, tables: NgramTables):
        self.host = tables
        self.arrays = tuple(cuda.to_device(a) for a in tables.arrays())


def to_device(tables: NgramTables) -> DeviceTables:
    return DeviceTables(tables)


def next_token_scores_cuda(tables: NgramTables | DeviceTables, states,
                           threads_per_block: int = THREADS_PER_BLOCK, to_host: bool = True):
    """(B, V+1) log10 probabilities and next states for a batch of LM states (see cpu twin).

    `states` may be a host array or a device array; with to_host=False the results stay
    on the device (for a decoder that consumes them there)."""
    dev = tables if isinstance(tables, DeviceTables) else to_device(tables)
    host = dev.host
    on_device = hasattr(states, "copy_to_host") or hasattr(states, "__cuda_array_interface__")
    if not on_device:
        states = np.ascontiguousarray(states, dtype=np.int32)
        if states.size and (states.min() < 0 or states.max() >= host.num_states):
            raise ValueError(f"LM states must be in 0..{host.num_states - 1}")
        states = cuda.to_device(states)
    batch = states.shape[0]
    scores = cuda.device_array((batch, host.vocab_size + 1), dtype=np.float32)
    nxt = cuda.device_array((batch, host.vocab_size + 1), dtype=np.int32)
    if batch:
        _next_token_scores_kernel[batch, threads_per_block](*dev.arrays, states, scores, nxt)
    if to_host:
        return scores.copy_to_host(), nxt.copy_to_host()
    return scores, nxt
