"""The hotword context graph: flat Aho-Corasick tables against the plain-Python reference, and
the scoring rules (earn per unit, give back on failure and at the end, completed phrases keep)."""
from __future__ import annotations

import numpy as np
import pytest

from kocall_kernels.ctc_decoder.context_graph import ContextGraph
from kocall_kernels.ctc_decoder.reference import ReferenceContext

V = 9  # units 1..8 may appear in phrases (0 is blank)


def random_phrases(seed: int, n: int = 8, vocab: int = V) -> list[tuple[list[int], float | list[float]]]:
    """Phrases that overlap on purpose: prefixes of one another, shared suffixes, repeats.
    Bonuses are multiples of 0.25, exact in float32, so every implementation sums them exactly;
    a third of the phrases have one bonus per unit (zeros included: kocall.hotwords gives a
    phrase's first unit none)."""
    rng = np.random.default_rng(seed)
    phrases: list[tuple[list[int], float]] = []
    for _ in range(n):
        kind = int(rng.integers(4)) if phrases else 3
        base = phrases[int(rng.integers(len(phrases)))][0] if phrases else []
        if kind == 0:        # a prefix of an earlier phrase
            tokens = base[: int(rng.integers(1, len(base) + 1))]
        elif kind == 1:      # an earlier phrase extended
            tokens = base + [int(t) for t in rng.integers(1, vocab, size=int(rng.integers(1, 3)))]
        elif kind == 2:      # a new head on an earlier phrase's tail (shared suffix)
            tokens = [int(t) for t in rng.integers(1, vocab, size=int(rng.integers(1, 3)))] \
                + base[int(rng.integers(0, len(base))):]
        else:
            tokens = [int(t) for t in rng.integers(1, vocab, size=int(rng.integers(1, 5)))]
        if rng.random() < 1 / 3:
            bonuses = [0.25 * int(b) for b in rng.integers(0, 9, size=len(tokens))]
            bonuses[-1] = bonuses[-1] or 0.5  # a positive sum
            phrases.append((tokens, bonuses))
        else:
            phrases.append((tokens, 0.25 * int(rng.integers(1, 9))))
    return phrases


@pytest.mark.parametrize("seed,vocab", [(s, V) for s in range(12)] + [(s, 300) for s in range(4)])
def test_tables_step_like_the_reference(seed, vocab):
    """vocab 300: unit ids share bits of the 64-bit chain mask (token & 63), so the shortcut's
    false positives are exercised too."""
    phrases = random_phrases(seed, n=8 if vocab == V else 60, vocab=vocab)
    graph = ContextGraph.build(phrases, vocab)
    ref = ReferenceContext(phrases)
    rng = np.random.default_rng(100 + seed)
    # Walks that follow phrases most of the time (so matches complete and fail), else random.
    for _ in range(200):
        seq: list[int] = []
        while len(seq) < 15:
            if rng.random() < 0.7:
                seq += phrases[int(rng.integers(len(phrases)))][0][: int(rng.integers(1, 6))]
            else:
                seq.append(int(rng.integers(1, vocab)))
        s_graph = s_ref = 0
        total_graph = total_ref = 0.0
        for token in seq:
            b_graph, s_graph = graph.step(s_graph, token)
            b_ref, s_ref = ref.step(s_ref, token)
            assert b_graph == b_ref, (phrases, seq)
            total_graph += b_graph
            total_ref += b_ref
            # the bonus so far never pays less than the completed phrases it holds, and the
            # held part is exactly the reference's
            assert graph.final_bonus(s_graph) == ref.final_bonus(s_ref)
        assert graph.score_sequence(seq) == pytest.approx(total_ref + ref.final_bonus(s_ref), abs=0)


def completed_bonus(seq: list[int], phrases: list[tuple[list[int], float]]) -> float:
    """Brute force: the sum over phrase occurrences in `seq` of len(phrase) x its bonus
    (no shared-prefix phrases of different bonus here, so the per-unit bonus is the phrase's)."""
    total = 0.0
    for tokens, weight in phrases:
        n = len(tokens)
        total += sum(weight * n for i in range(len(seq) - n + 1) if seq[i:i + n] == tokens)
    return total


@pytest.mark.parametrize("seed", range(8))
def test_final_score_is_the_completed_phrases(seed):
    """After the end of the utterance only completed phrases count, each occurrence once."""
    rng = np.random.default_rng(seed)
    phrases = [(list(map(int, rng.integers(1, 5, size=int(rng.integers(1, 4))))), 1.0) for _ in range(5)]
    graph = ContextGraph.build(phrases, V)
    unique = {tuple(p): w for p, w in phrases}
    phrases = [(list(p), w) for p, w in unique.items()]
    for _ in range(100):
        seq = list(map(int, rng.integers(1, 5, size=int(rng.integers(0, 12)))))
        assert graph.score_sequence(seq) == pytest.approx(completed_bonus(seq, phrases))


def test_abandoned_phrase_gives_back_what_it_earned():
    graph = ContextGraph.build([([3, 4, 5], 1.5)], V)
    state, earned = 0, []
    for token in (3, 4, 6, 7):
        bonus, state = graph.step(state, token)
        earned.append(bonus)
    assert earned == [1.5, 1.5, -3.0, 0.0]     # two units earned, all given back on the failure
    assert graph.score_sequence([3, 4]) == 0.0  # half said at the end: nothing
    assert graph.score_sequence([3, 4, 6, 3, 4, 5]) == 4.5
    assert graph.score_sequence([3, 4, 5, 6, 3]) == 4.5  # completed, then moved on: kept


def test_failure_keeps_the_suffix_match():
    """Abandoning 1 2 3 for 1 2 4 keeps the bonus of the suffix 2 4... only as far as it matches."""
    graph = ContextGraph.build([([1, 2, 3], 1.0), ([2, 4], 2.0)], V)
    state = 0
    bonuses = []
    for token in (1, 2, 4):
        bonus, state = graph.step(state, token)
        bonuses.append(bonus)
    # 1 -> +1, 2 -> +1, then 4 fails 1 2 3 but 2 4 completes: held goes from 2 (path 1 2) to 4
    # (path 2 4, bonus 2 per unit), +2 held, and +4 for the completed phrase
    assert bonuses == [1.0, 1.0, 2.0 + 4.0]
    assert graph.score_sequence([1, 2, 4]) == 4.0


def test_prefix_phrase_completes_inside_a_longer_one():
    graph = ContextGraph.build([([1, 2], 1.0), ([1, 2, 3, 4], 1.0)], V)
    assert graph.score_sequence([1, 2]) == 2.0
    assert graph.score_sequence([1, 2, 3]) == 2.0        # the short phrase kept, the long one half said
    assert graph.score_sequence([1, 2, 3, 4]) == 6.0     # both complete
    assert graph.score_sequence([1, 2, 3, 5]) == 2.0


def test_shared_prefix_earns_the_larger_bonus():
    graph = ContextGraph.build([([1, 2, 3], 1.0), ([1, 2, 4], 3.0)], V)
    assert graph.step(0, 1)[0] == 3.0
    assert graph.score_sequence([1, 2, 4]) == 9.0
    assert graph.score_sequence([1, 2, 3]) == 3.0 + 3.0 + 1.0


def test_tables_layout():
    phrases = random_phrases(3, n=20)
    graph = ContextGraph.build(phrases, V)
    start = graph.state_arc_start
    assert start[0] == 0 and start[-1] == graph.arc_token.shape[0] and np.all(np.diff(start) >= 0)
    for s in range(graph.num_states):
        tokens = graph.arc_token[start[s]:start[s + 1]]
        assert np.all(np.diff(tokens) > 0)
        assert np.all(graph.arc_next_state[start[s]:start[s + 1]] > s)   # breadth-first numbering
        assert graph.state_fail[s] < max(s, 1)                           # shorter suffix, earlier state
        chain, f = set(), s  # the mask covers the arcs of the node and of its failure chain
        while f != 0:
            chain |= {int(t) & 63 for t in graph.arc_token[start[f]:start[f + 1]]}
            f = graph.state_fail[f]
        assert int(graph.state_chain_mask[s]) == sum(1 << b for b in chain)
    root = {int(t): int(n) for t, n in zip(graph.arc_token[start[0]:start[1]], graph.arc_next_state[start[0]:start[1]])}
    assert {t: int(graph.root_next[t]) for t in range(V) if graph.root_next[t]} == root


@pytest.mark.parametrize("phrases,message", [
    ([([], 1.0)], "empty"),
    ([([1, 9], 1.0)], "outside"),
    ([([0, 1], 1.0)], "outside"),
    ([([1], 0.0)], "positive"),
    ([([1], float("nan"))], "positive"),
    ([([1, 2], [0.0, 0.0])], "positive"),
    ([([1, 2], [1.0, -0.5])], "positive"),
    ([([1, 2], [1.0])], "1 bonuses for 2 units"),
])
def test_bad_phrases_are_refused(phrases, message):
    with pytest.raises(ValueError, match=message):
        ContextGraph.build(phrases, V)
