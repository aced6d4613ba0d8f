"""Greedy CTC decoding: per-frame argmax, collapse repeats, drop blanks."""
from __future__ import annotations

import numpy as np


def greedy_decode(log_probs: np.ndarray, lens: np.ndarray, blank_id: int = 0) -> list[list[int]]:
    """Token ids per utterance from (B, T, V) posteriors (numpy or torch) and lengths (B,)."""
    if hasattr(log_probs, "detach"):  # torch tensor: argmax where it lives, then move the ids only
        best = log_probs.detach().argmax(dim=-1).cpu().numpy()
    else:
        best = np.asarray(log_probs).argmax(axis=-1)
    lens = np.asarray(lens.cpu() if hasattr(lens, "cpu") else lens).astype(np.int64)
    result = []
    for b in range(best.shape[0]):
        path = best[b, : lens[b]]
        if path.size == 0:
            result.append([])
            continue
        keep = np.ones(path.size, dtype=bool)
        keep[1:] = path[1:] != path[:-1]
        tokens = path[keep]
        result.append([int(t) for t in tokens if t != blank_id])
    return result
