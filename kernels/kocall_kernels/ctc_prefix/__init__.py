"""CTC prefix scores: log P(the CTC output starts with a unit prefix | audio), incrementally.

The scorer a joint CTC/attention beam search needs (ESPnet's CTCPrefixScore and
CTCPrefixScoreTH, Watanabe et al. 2017, "Hybrid CTC/attention architecture for end-to-end
speech recognition", algorithm 2): a hypothesis proposed by another model (an attention
decoder) is scored by the CTC posteriors of the same audio, one appended unit at a time,
over all frames.

Conventions shared by every implementation (`reference.py` is the specification):

* Posteriors: natural-log `(B, T, V)` float32 with per-utterance lengths `lens` (>= 1); unit
  0 is the blank. A state belongs to one utterance (`row_utt`): rows from several
  utterances and hypotheses go through one call ("batched over hypotheses").
* A prefix's state `r` is `(T, 2)` float64: `r[t, 0]` = log-prob of the first t+1 frames
  emitting exactly the prefix with its last unit on frame t (r^n), `r[t, 1]` = the same with
  frame t a blank (r^b). Frames at or past the utterance's length are -inf.
* `initial_state`: the empty prefix (r^n = -inf, r^b = the cumulative blank log-prob).
* `extend(lp, lens, row_utt, r_prev, last, prefix_len, unit)`: for each row, the prefix h = g + unit
  where g has state `r_prev`, last unit `last` (-1 when g is empty) and length `prefix_len`:
      phi[t] = r^b_g[t]                     if unit == last (a repeat needs a blank between)
             = logaddexp(r^n_g[t], r^b_g[t]) otherwise
      r^n_h[t] = logaddexp(r^n_h[t-1], phi[t-1]) + lp[t, unit]   (r^n_h[0] = lp[0, unit] if g is empty)
      r^b_h[t] = logaddexp(r^n_h[t-1], r^b_h[t-1]) + lp[t, blank]
      psi     = logaddexp over t of phi[t-1] + lp[t, unit]       (t = 0: lp[0, unit] if g is empty)
  returns `psi` (the prefix score of h: the sum over every alignment whose collapsed output
  starts with h) and h's state. Frames before `prefix_len` cannot hold h's last unit (a prefix of
  n units needs n frames), so the recursion starts there, as ESPnet's does.
* `full_log_prob(r, lens, row_utt)`: log P(output == prefix) = logaddexp(r^n, r^b) at the
  last frame (what an end of sentence scores).
"""
from __future__ import annotations

import numpy as np

NEG_INF = float("-inf")


def check_rows(log_probs: np.ndarray, lens: np.ndarray, row_utt: np.ndarray, r_prev: np.ndarray | None = None) -> None:
    """Shapes and ranges every implementation relies on (a bad index would read out of bounds)."""
    B, T = int(log_probs.shape[0]), int(log_probs.shape[1])
    if lens.shape != (B,) or np.any(lens < 1) or np.any(lens > T):
        raise ValueError(f"lens must hold {B} lengths within 1..{T}")
    if row_utt.size and (row_utt.min() < 0 or row_utt.max() >= B):
        raise ValueError(f"row_utt must index the {B} utterances")
    if r_prev is not None and r_prev.shape != (row_utt.shape[0], T, 2):
        raise ValueError(f"states must be ({row_utt.shape[0]}, {T}, 2), not {r_prev.shape}")
