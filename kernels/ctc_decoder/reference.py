"""Plain-Python CTC prefix beam search: the specification the numba and CUDA versions match.

Prefixes are tuples kept in dicts; clarity over speed. The LM is any object with
`bos_state`, `eos_id` and `score(state, token) -> (log10prob, next_state)`:
`TablesLM` (kocall_kernels.ngram tables, what the kernels use) or `KenlmLM` (the kenlm
module directly, an independent check of the tables).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from kocall_kernels.ctc_decoder import HASH_INIT, HASH_MASK, HASH_MULT, LN10, NEG_INF, DecoderConfig, Hypothesis


class LanguageModel(Protocol):
    bos_state: Any
    eos_id: int

    def score(self, state: Any, token: int) -> tuple[float, Any]: ...


class TablesLM:
    """Queries `NgramTables` with the same `lm_score` the CPU twin uses."""

    def __init__(self, tables: Any) -> None:
        from kocall_kernels.ngram.cpu import lm_score

        self._arrays = tables.arrays()
        self._lm_score = lm_score
        self.bos_state = int(tables.bos_state)
        self.eos_id = int(tables.vocab_size)

    def score(self, state: int, token: int) -> tuple[float, int]:
        logp, nxt = self._lm_score(*self._arrays, state, token)
        return float(logp), int(nxt)


class KenlmLM:
    """The kenlm module over unit symbols (token id -> symbol; `eos_id` -> `</s>`)."""

    def __init__(self, model: Any, symbols: Sequence[str]) -> None:
        import kenlm

        self._kenlm = kenlm
        self._model = model
        self._symbols = list(symbols)
        self.eos_id = len(self._symbols)
        self.bos_state = kenlm.State()
        model.BeginSentenceWrite(self.bos_state)

    def score(self, state: Any, token: int) -> tuple[float, Any]:
        word = "</s>" if token == self.eos_id else self._symbols[token]
        out = self._kenlm.State()
        return float(self._model.BaseScore(state, word, out)), out


def log_add(a: float, b: float) -> float:
    """log(exp(a) + exp(b)), symmetric so merge order cannot change the result."""
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def extend_hash(h: int, token: int) -> int:
    return (h * HASH_MULT + token + 1) & HASH_MASK


def prune_tokens(row: np.ndarray, cfg: DecoderConfig) -> list[int]:
    """The frame's extending tokens: top-k non-blank with log-prob >= threshold."""
    ids = [v for v in range(row.shape[0]) if v != cfg.blank_id and row[v] >= cfg.token_min_logp]
    ids.sort(key=lambda v: (-row[v], v))
    return ids[: cfg.token_topk]


@dataclass
class _Beam:
    pb: float
    pnb: float
    lm_state: Any
    lm10: float
    count: int
    hash: int
    frames: tuple[int, ...]


def _total(am: float, lm10: float, count: int, alpha_ln: float, beta: float) -> float:
    return am + alpha_ln * lm10 + beta * count


def decode_utterance(log_probs: np.ndarray, cfg: DecoderConfig, lm: LanguageModel | None = None) -> list[Hypothesis]:
    """N-best list for one utterance's (T, V) natural-log posteriors."""
    alpha_ln = cfg.lm_weight * LN10 if lm is not None else 0.0
    beta = cfg.word_bonus
    bos = lm.bos_state if lm is not None else 0
    beams: dict[tuple[int, ...], _Beam] = {(): _Beam(0.0, NEG_INF, bos, 0.0, 0, HASH_INIT, ())}
    for t in range(log_probs.shape[0]):
        row = log_probs[t]
        tokens = prune_tokens(row, cfg)
        blank_lp = float(row[cfg.blank_id])
        new: dict[tuple[int, ...], _Beam] = {}
        for prefix, b in beams.items():  # stay on the prefix: blank, or repeat of its last token
            pnb = b.pnb + float(row[prefix[-1]]) if prefix else NEG_INF
            new[prefix] = _Beam(log_add(b.pb, b.pnb) + blank_lp, pnb, b.lm_state, b.lm10, b.count, b.hash, b.frames)
        for prefix, b in beams.items():
            for c in tokens:
                ext = prefix + (c,)
                # A repeated token only starts a new symbol after a blank.
                base = b.pb if prefix and prefix[-1] == c else log_add(b.pb, b.pnb)
                pnb = base + float(row[c])
                if ext in new:  # ext is already a beam: merge into it (same LM state)
                    new[ext].pnb = log_add(new[ext].pnb, pnb)
                    continue
                lm10, state = (lm.score(b.lm_state, c) if lm is not None else (0.0, 0))
                counted = 1 if cfg.bonus_token < 0 or c == cfg.bonus_token else 0
                new[ext] = _Beam(NEG_INF, pnb, state, b.lm10 + lm10, b.count + counted,
                                 extend_hash(b.hash, c), b.frames + (t,))
        ranked = []
        for prefix, b in new.items():
            am = log_add(b.pb, b.pnb)
            if am == NEG_INF:
                continue
            ranked.append((-_total(am, b.lm10, b.count, alpha_ln, beta), b.hash, prefix))
        ranked.sort(key=lambda r: (r[0], r[1]))
        beams = {prefix: new[prefix] for _, _, prefix in ranked[: cfg.beam]}
    final = []
    for prefix, b in beams.items():
        lm10 = b.lm10 + (lm.score(b.lm_state, lm.eos_id)[0] if lm is not None else 0.0)
        am = log_add(b.pb, b.pnb)
        final.append((-_total(am, lm10, b.count, alpha_ln, beta), b.hash,
                      Hypothesis(list(prefix), _total(am, lm10, b.count, alpha_ln, beta), am, lm10, list(b.frames))))
    final.sort(key=lambda r: (r[0], r[1]))
    return [h for _, _, h in final[: cfg.nbest]]


def decode_batch(log_probs: np.ndarray, lens: np.ndarray, cfg: DecoderConfig,
                 lm: LanguageModel | None = None) -> list[list[Hypothesis]]:
    return [decode_utterance(np.asarray(log_probs[b, : int(lens[b])], dtype=np.float64), cfg, lm)
            for b in range(log_probs.shape[0])]
