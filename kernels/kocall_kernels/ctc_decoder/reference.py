"""Plain-Python CTC prefix beam search: the specification the numba and CUDA versions match.

Prefixes are tuples kept in dicts; clarity over speed. The LM is any object with
`bos_state`, `eos_id` and `score(state, token) -> (log10prob, next_state)`:
`TablesLM` (kocall_kernels.ngram tables, what the kernels use) or `KenlmLM` (the kenlm
module directly, an independent check of the tables). Hotwords: any object with
`step(state, token) -> (bonus, next_state)` and `final_bonus(state)`, root state 0:
`ReferenceContext` (a plain dict-trie Aho-Corasick, independent of the flat tables the
kernels use) or `kocall_kernels.ctc_decoder.context_graph.ContextGraph` itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from kocall_kernels.ctc_decoder import HASH_INIT, HASH_MASK, HASH_MULT, LN10, NEG_INF, DecoderConfig, Hypothesis
from kocall_kernels.ctc_decoder.context_graph import phrase_bonuses


class LanguageModel(Protocol):
    bos_state: Any
    eos_id: int

    def score(self, state: Any, token: int) -> tuple[float, Any]: ...


class HotwordContext(Protocol):
    def step(self, state: int, token: int) -> tuple[float, int]: ...

    def final_bonus(self, state: int) -> float: ...


class ReferenceContext:
    """Aho-Corasick over (unit ids, per-unit bonus: one number or one per unit) phrases with
    dict tries, scored by the rules of `context_graph` (earn per advancing unit, give back on
    failure and at the end, a completed phrase keeps its bonus)."""

    def __init__(self, phrases: Sequence[tuple[Sequence[int], float | Sequence[float]]]) -> None:
        self.children: list[dict[int, int]] = [{}]
        self.held = [0.0]        # partial bonus held at a node: its path's unit bonuses
        unit_bonus = [0.0]
        parent = [(-1, -1)]
        is_end = [False]
        for index, (tokens, weight) in enumerate(phrases):
            node = 0
            bonuses = phrase_bonuses(index, len(tokens), weight)  # the graph's reading of a phrase's bonus
            for token, bonus in zip(tokens, bonuses):
                if token not in self.children[node]:
                    self.children[node][token] = len(self.children)
                    self.children.append({})
                    unit_bonus.append(bonus)
                    parent.append((node, token))
                    is_end.append(False)
                node = self.children[node][token]
                unit_bonus[node] = max(unit_bonus[node], bonus)  # a shared unit earns the larger bonus
            is_end[node] = True
        n = len(self.children)
        self.held = [0.0] * n
        self.fail = [0] * n
        order, queue = [], [0]
        while queue:  # breadth first: a node's parent and failure target come before it
            node = queue.pop(0)
            order.append(node)
            queue.extend(self.children[node].values())
        for node in order[1:]:
            up, token = parent[node]
            self.held[node] = self.held[up] + unit_bonus[node]
            if up != 0:
                f = self.fail[up]
                while f != 0 and token not in self.children[f]:
                    f = self.fail[f]
                self.fail[node] = self.children[f].get(token, 0)
        # a node's output: the full bonus of every phrase ending at it or at one of its suffixes
        self.output = [0.0] * n
        for node in range(1, n):
            f = node
            while f != 0:
                self.output[node] += self.held[f] if is_end[f] else 0.0
                f = self.fail[f]

    def step(self, state: int, token: int) -> tuple[float, int]:
        s = state
        while s != 0 and token not in self.children[s]:
            s = self.fail[s]
        nxt = self.children[s].get(token, 0)
        return self.held[nxt] - self.held[state] + self.output[nxt], nxt

    def final_bonus(self, state: int) -> float:
        return -self.held[state]


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
    ctx_state: int = 0    # hotword context state (0: the root)
    ctx: float = 0.0      # hotword bonus so far (ln)


def _total(am: float, lm10: float, count: int, alpha_ln: float, beta: float, ctx: float = 0.0) -> float:
    return am + alpha_ln * lm10 + beta * count + ctx


def decode_utterance(log_probs: np.ndarray, cfg: DecoderConfig, lm: LanguageModel | None = None,
                     context: HotwordContext | None = None) -> list[Hypothesis]:
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
            new[prefix] = _Beam(log_add(b.pb, b.pnb) + blank_lp, pnb, b.lm_state, b.lm10, b.count, b.hash, b.frames,
                                b.ctx_state, b.ctx)
        for prefix, b in beams.items():
            for c in tokens:
                ext = prefix + (c,)
                # A repeated token only starts a new symbol after a blank.
                base = b.pb if prefix and prefix[-1] == c else log_add(b.pb, b.pnb)
                pnb = base + float(row[c])
                bonus, ctx_state = context.step(b.ctx_state, c) if context is not None else (0.0, 0)
                if ext in new:  # ext is already a beam: merge into it (same LM and context state)
                    # The context state and bonus are functions of the prefix alone, so merging
                    # loses nothing: check it rather than assume it.
                    assert (new[ext].ctx_state, new[ext].ctx) == (ctx_state, b.ctx + bonus), "context differs on merge"
                    new[ext].pnb = log_add(new[ext].pnb, pnb)
                    continue
                lm10, state = (lm.score(b.lm_state, c) if lm is not None else (0.0, 0))
                counted = 1 if cfg.bonus_token < 0 or c == cfg.bonus_token else 0
                new[ext] = _Beam(NEG_INF, pnb, state, b.lm10 + lm10, b.count + counted,
                                 extend_hash(b.hash, c), b.frames + (t,), ctx_state, b.ctx + bonus)
        ranked = []
        for prefix, b in new.items():
            am = log_add(b.pb, b.pnb)
            if am == NEG_INF:
                continue
            ranked.append((-_total(am, b.lm10, b.count, alpha_ln, beta, b.ctx), b.hash, prefix))
        ranked.sort(key=lambda r: (r[0], r[1]))
        beams = {prefix: new[prefix] for _, _, prefix in ranked[: cfg.beam]}
    final = []
    for prefix, b in beams.items():
        lm10 = b.lm10 + (lm.score(b.lm_state, lm.eos_id)[0] if lm is not None else 0.0)
        ctx = b.ctx + (context.final_bonus(b.ctx_state) if context is not None else 0.0)  # a half-said phrase earns nothing
        am = log_add(b.pb, b.pnb)
        total = _total(am, lm10, b.count, alpha_ln, beta, ctx)
        final.append((-total, b.hash, Hypothesis(list(prefix), total, am, lm10, list(b.frames), ctx)))
    final.sort(key=lambda r: (r[0], r[1]))
    return [h for _, _, h in final[: cfg.nbest]]


def decode_batch(log_probs: np.ndarray, lens: np.ndarray, cfg: DecoderConfig,
                 lm: LanguageModel | None = None, context: HotwordContext | None = None) -> list[list[Hypothesis]]:
    return [decode_utterance(np.asarray(log_probs[b, : int(lens[b])], dtype=np.float64), cfg, lm, context)
            for b in range(log_probs.shape[0])]
