"""A back-off n-gram LM on the device (in the spirit of NeMo's NGPU-LM).

An ARPA model over the AM's units is flattened into CSR tables (`NgramTables`):

- states: n-gram contexts. State 0 is the root (empty context) and holds an arc for EVERY
  token 1..V (tokens the ARPA lacks get its `<unk>` log-prob), so a query always ends.
  `bos_state` is the context `<s>`. Per state: `state_backoff_weight` (log10) and
  `state_backoff_to` (the state of the context minus its first word).
- arcs, sorted by (state, token): `state_arc_start[S+1]` (int64 CSR offsets),
  `arc_token[A]` (int32, ascending within a state), `arc_logprob[A]` (float32,
  log10 P(token | context)), `arc_next_state[A]` (int32, the longest suffix of
  context+token that is a state).
- token ids are tokens.txt ids (blank 0 is never queried), `</s>` is id V = len(tokens).

Memory: 12 bytes per n-gram (arc: token, log-prob, next state) + 16 bytes per n-gram of
order < N (state: CSR offset, back-off weight, back-off state) + 8. For a 6-gram over
~2,000 syllables with 10 M n-grams, about 12 x 10 M + 16 x ~6 M = ~216 MB.

Queries (same signature on CPU and GPU; the CTC beam search calls them in its kernels):
    lm_score(state_arc_start, arc_token, arc_logprob, arc_next_state,
             state_backoff_weight, state_backoff_to, state, token) -> (log10prob, next_state)
  `kocall_kernels.ngram.cpu.lm_score` (njit), `kocall_kernels.ngram.cuda.lm_score_device`.
Batched: `next_token_scores(tables, states, backend="cpu"|"cuda")` -> (B, V+1) scores and
next states (column 0 = blank: score 0, state unchanged).
"""
from __future__ import annotations

import numpy as np

from kocall_kernels.ngram.tables import NgramTables

__all__ = ["NgramTables", "next_token_scores"]


def next_token_scores(tables, states, backend: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """log10 P(token | state) for every token 0..V and the next states, shape (B, V+1)."""
    if backend == "cpu":
        from kocall_kernels.ngram.cpu import next_token_scores_cpu

        return next_token_scores_cpu(tables, states)
    if backend == "cuda":
        from kocall_kernels.ngram.cuda import next_token_scores_cuda

        return next_token_scores_cuda(tables, states)
    raise ValueError(f"backend must be 'cpu' or 'cuda', not {backend!r}")
