"""`ContextGraph`: hotword phrases as an Aho-Corasick automaton in flat, device-friendly tables.

Contextual biasing as icefall and sherpa-onnx score it. Phrases are unit-id sequences, each
with a per-unit bonus `w` (natural-log units, added to the beam's ranking score): one number
for every unit, or one per unit (`phrase_bonuses`; kocall.hotwords gives a phrase's first
unit none, see there):

* every unit that advances a match earns the bonus of the trie node it reaches;
* a match that is abandoned (the next unit continues no phrase from the current node) gives
  back what it earned: the hypothesis moves along the failure links to the longest suffix
  that is still a phrase prefix and keeps only that suffix's accumulated bonus;
* a completed phrase keeps its bonus: reaching a node where a phrase ends (the node's own
  phrase, or a shorter phrase that is a suffix of it) earns `state_output`, the full bonus of
  every phrase ending there, on top of the partial bonus, which stays "held" as long as a
  longer phrase may still continue and is given back like any partial match;
* at the end of the utterance the held partial bonus is given back (`final_bonus`), so a
  phrase only half said earns nothing in the final score.

So the bonus of a unit sequence depends only on the sequence (the automaton is
deterministic): hypotheses with the same prefix have the same context state and bonus, and
the beam search's prefix merging stays valid.

Tables (state 0 is the root; states are numbered breadth-first):

    state_arc_start [S+1] int64   CSR offsets into the arcs (goto function)
    arc_token       [A]   int32   unit id, ascending within a state
    arc_next_state  [A]   int32   child state
    state_fail      [S]   int32   failure link: the longest proper suffix that is a trie node
    state_score     [S]   float32 bonus held at this node (sum of the unit bonuses from the root)
    state_chain_mask[S]   uint64  bit (token & 63) set for every arc token of the node and of the
                                  non-root nodes on its failure chain: a clear bit means the walk
                                  would end at the root, so the step goes there at once
    state_output    [S]   float32 full bonus of the phrases that end here (suffix phrases included)
    root_next       [V]   int32   the root's goto densely (0 where no phrase starts with the unit)

A step `context_step(tables..., state, token) -> (bonus, next_state)` walks the failure links
(each a binary search over the node's arcs) until a node has the token or the root is
reached, where `root_next` answers in one load; bonus = state_score[next] - state_score[state]
+ state_output[next]. Most steps fail all the way to the root: `state_chain_mask` says so in
one load and skips the walk. `context_step_py` is written once in the Python subset that both
`numba.njit` (CPU twin) and `numba.cuda.jit(device=True)` compile.

A unit shared by several phrases (a common prefix) earns the largest of their bonuses.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numba import njit

from kocall_kernels.ngram.cpu import find_arc

ARRAY_DTYPES: tuple[tuple[str, type], ...] = (
    ("state_arc_start", np.int64),
    ("arc_token", np.int32),
    ("arc_next_state", np.int32),
    ("state_fail", np.int32),
    ("state_score", np.float32),
    ("state_chain_mask", np.uint64),
    ("state_output", np.float32),
    ("root_next", np.int32),
)


def context_step_py(state_arc_start, arc_token, arc_next_state, state_fail, state_score, state_chain_mask,
                    state_output, root_next, state, token):
    """(bonus, next state) after `token` in context state `state` (see the module docstring)."""
    s = state
    if (state_chain_mask[state] >> np.uint64(token & 63)) & np.uint64(1) == 0:
        s = 0  # no node on the failure chain has an arc with this token: straight to the root
    while s != 0:
        arc = find_arc(state_arc_start, arc_token, s, token)
        if arc >= 0:
            nxt = arc_next_state[arc]
            return np.float64(state_score[nxt]) - np.float64(state_score[state]) + np.float64(state_output[nxt]), nxt
        s = state_fail[s]
    nxt = root_next[token]
    return np.float64(state_score[nxt]) - np.float64(state_score[state]) + np.float64(state_output[nxt]), nxt


context_step = njit(cache=True, nogil=True, inline="always")(context_step_py)


@dataclass
class ContextGraph:
    state_arc_start: np.ndarray
    arc_token: np.ndarray
    arc_next_state: np.ndarray
    state_fail: np.ndarray
    state_score: np.ndarray
    state_chain_mask: np.ndarray
    state_output: np.ndarray
    root_next: np.ndarray
    num_phrases: int = 0

    def __post_init__(self) -> None:
        for name, dtype in ARRAY_DTYPES:
            setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=dtype))

    @property
    def num_states(self) -> int:
        return int(self.state_fail.shape[0])

    @property
    def vocab_size(self) -> int:
        return int(self.root_next.shape[0])

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The eight arrays in the argument order of `context_step` / the decoders."""
        return tuple(getattr(self, name) for name, _ in ARRAY_DTYPES)

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays()))

    # --- scoring (the CPU twin's step; the decoders inline the same function) -------
    def step(self, state: int, token: int) -> tuple[float, int]:
        bonus, nxt = context_step(*self.arrays(), np.int32(state), np.int32(token))
        return float(bonus), int(nxt)

    def final_bonus(self, state: int) -> float:
        """What the end of the utterance gives back: the partial bonus still held."""
        return -float(self.state_score[state])

    def score_sequence(self, tokens: Sequence[int]) -> float:
        """The total bonus of a unit sequence, end of utterance included."""
        state, total = 0, 0.0
        for token in tokens:
            bonus, state = self.step(state, int(token))
            total += bonus
        return total + self.final_bonus(state)

    # --- building ---------------------------------------------------------------------
    @classmethod
    def build(cls, phrases: Sequence[tuple[Sequence[int], float | Sequence[float]]], vocab_size: int,
              blank_id: int = 0) -> "ContextGraph":
        """Compile (unit ids, per-unit bonus: one number or one per unit) pairs over units
        0..vocab_size-1."""
        children: list[dict[int, int]] = [{}]
        unit_bonus = [0.0]
        phrase_end = [False]
        for index, (tokens, weight) in enumerate(phrases):
            tokens = [int(t) for t in tokens]
            if not tokens:
                raise ValueError(f"hotword phrase {index} is empty")
            bad = [t for t in tokens if not 0 <= t < vocab_size or t == blank_id]
            if bad:
                raise ValueError(f"hotword phrase {index}: unit ids {bad} outside 1..{vocab_size - 1}")
            bonuses = phrase_bonuses(index, len(tokens), weight)
            node = 0
            for token, bonus in zip(tokens, bonuses):
                nxt = children[node].get(token)
                if nxt is None:
                    nxt = len(children)
                    children[node][token] = nxt
                    children.append({})
                    unit_bonus.append(bonus)
                    phrase_end.append(False)
                else:
                    unit_bonus[nxt] = max(unit_bonus[nxt], bonus)
                node = nxt
            phrase_end[node] = True
        # Breadth-first renumbering; failure links, held and output bonuses in that order.
        order = [0]
        parent = {0: (-1, -1)}
        queue = deque([0])
        while queue:
            node = queue.popleft()
            for token in sorted(children[node]):
                child = children[node][token]
                parent[child] = (node, token)
                order.append(child)
                queue.append(child)
        new_id = {old: new for new, old in enumerate(order)}
        n = len(order)
        fail = np.zeros(n, np.int32)
        score = np.zeros(n, np.float64)
        output = np.zeros(n, np.float64)
        for old in order[1:]:
            up, token = parent[old]
            s = new_id[old]
            score[s] = score[new_id[up]] + unit_bonus[old]
            if up != 0:  # the root's children fail to the root
                f = fail[new_id[up]]
                while f != 0 and token not in children[order[f]]:
                    f = fail[f]
                fail[s] = new_id[children[order[f]][token]] if token in children[order[f]] else 0
            output[s] = (score[s] if phrase_end[old] else 0.0) + output[fail[s]]
        arc_start = np.zeros(n + 1, np.int64)
        arc_token, arc_next = [], []
        for s, old in enumerate(order):
            for token in sorted(children[old]):
                arc_token.append(token)
                arc_next.append(new_id[children[old][token]])
            arc_start[s + 1] = len(arc_token)
        root_next = np.zeros(vocab_size, np.int32)
        for token, child in children[0].items():
            root_next[token] = new_id[child]
        chain_mask = np.zeros(n, np.uint64)
        for s in range(1, n):  # breadth first: the failure target's mask is complete
            own = 0
            for token in children[order[s]]:
                own |= 1 << (token & 63)
            chain_mask[s] = np.uint64(own) | chain_mask[fail[s]]
        return cls(arc_start, np.array(arc_token, np.int32), np.array(arc_next, np.int32), fail,
                   score.astype(np.float32), chain_mask, output.astype(np.float32), root_next,
                   num_phrases=len(phrases))


def phrase_bonuses(index: int, length: int, weight: float | Sequence[float]) -> list[float]:
    """The per-unit bonuses of phrase `index` (of `length` units): `weight` for every unit, or
    its own list; each finite and >= 0, their sum > 0."""
    bonuses = [float(weight)] * length if np.isscalar(weight) else [float(b) for b in weight]
    if len(bonuses) != length:
        raise ValueError(f"hotword phrase {index}: {len(bonuses)} bonuses for {length} units")
    if not all(np.isfinite(b) and b >= 0 for b in bonuses) or not sum(bonuses) > 0:
        raise ValueError(f"hotword phrase {index}: bonuses must be >= 0 with a positive sum, not {weight}")
    return bonuses


def context_arrays(graph: ContextGraph | None) -> tuple:
    """(use_context, eight arrays); typed placeholders when there is no graph."""
    if graph is None:
        return (False, np.zeros(2, np.int64), np.zeros(1, np.int32), np.zeros(1, np.int32), np.zeros(1, np.int32),
                np.zeros(1, np.float32), np.zeros(1, np.uint64), np.zeros(1, np.float32), np.zeros(1, np.int32))
    return (True, *graph.arrays())
