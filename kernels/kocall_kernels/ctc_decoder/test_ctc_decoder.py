"""The three beam searches (plain Python, numba CPU twin, simulated CUDA kernel) agree, and
the search behaves as a beam search should (beam 1 == greedy, wider beams never worse)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kocall_kernels.ctc_decoder import DecoderConfig, cpu, reference
from kocall_kernels.ctc_decoder.context_graph import ContextGraph
from kocall_kernels.ctc_decoder.greedy import greedy_decode
from kocall_kernels.ctc_decoder.test_context_graph import random_phrases
from kocall_kernels.testing import cuda_subprocess_env

SYMBOLS = ["<blk>", "<unk>", "▁", "가", "나", "다", "라", "마"]


def write_arpa(path: Path, seed: int = 0) -> None:
    """A small random trigram ARPA over the unit symbols (valid format, back-offs everywhere)."""
    rng = np.random.default_rng(seed)
    words = SYMBOLS[2:]
    uni = ["<unk>", "<s>", "</s>"] + words
    bi = [(a, b) for a in ["<s>"] + words for b in words + ["</s>"] if rng.random() < 0.6]
    bi_set = set(bi)  # KenLM wants every n-gram's suffix present too
    tri = [(a, b, c) for (a, b) in bi if b != "</s>" for c in words + ["</s>"]
           if (b, c) in bi_set and rng.random() < 0.5]
    bi_ctx = {(a, b) for (a, b, _) in tri}
    lines = ["\\data\\", f"ngram 1={len(uni)}", f"ngram 2={len(bi)}", f"ngram 3={len(tri)}", "", "\\1-grams:"]
    for w in uni:
        p = -99.0 if w == "<s>" else -rng.uniform(0.5, 2.0)
        lines.append(f"{p:.4f}\t{w}" + ("" if w == "</s>" else f"\t{-rng.uniform(0.1, 0.8):.4f}"))
    lines += ["", "\\2-grams:"]
    for a, b in bi:
        backoff = f"\t{-rng.uniform(0.1, 0.5):.4f}" if (a, b) in bi_ctx else ""
        lines.append(f"{-rng.uniform(0.1, 1.5):.4f}\t{a} {b}{backoff}")
    lines += ["", "\\3-grams:"]
    lines += [f"{-rng.uniform(0.05, 1.0):.4f}\t{a} {b} {c}" for a, b, c in tri]
    lines += ["", "\\end\\", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


@pytest.fixture(scope="module")
def lm_files(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lm")
    write_arpa(root / "lm.arpa")
    (root / "tokens.txt").write_text("".join(f"{s} {i}\n" for i, s in enumerate(SYMBOLS)), encoding="utf-8")
    return root / "lm.arpa", root / "tokens.txt"


@pytest.fixture(scope="module")
def tables(lm_files):
    from kocall_kernels.ngram.tables import NgramTables

    return NgramTables.from_arpa(*lm_files, progress=False)


def random_posteriors(B: int, T: int, V: int, seed: int, sharp: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, V)) * sharp
    x[:, :, 0] += 1.0  # blank-heavy, like a CTC model
    lp = (x - np.log(np.exp(x).sum(-1, keepdims=True))).astype(np.float32)
    lens = rng.integers(0, T + 1, size=B)
    lens[0] = T
    return lp, lens


def assert_same(got, want) -> None:
    assert len(got) == len(want)
    for hyps_a, hyps_b in zip(got, want):
        assert [h.tokens for h in hyps_a] == [h.tokens for h in hyps_b]
        assert [h.frames for h in hyps_a] == [h.frames for h in hyps_b]
        for a, b in zip(hyps_a, hyps_b):
            assert a.score == pytest.approx(b.score, abs=1e-4)
            assert a.am_score == pytest.approx(b.am_score, abs=1e-4)
            assert a.lm_score == pytest.approx(b.lm_score, abs=1e-4)
            assert a.context_score == pytest.approx(b.context_score, abs=1e-4)


CONFIGS = [
    DecoderConfig(beam=4, token_topk=3, token_min_logp=-4.0, nbest=4),
    DecoderConfig(beam=6, token_topk=7, token_min_logp=-30.0, lm_weight=0.8, word_bonus=0.5, nbest=3),
    DecoderConfig(beam=5, token_topk=4, token_min_logp=-6.0, lm_weight=1.5, word_bonus=1.0, bonus_token=2, nbest=5),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_cpu_twin_matches_reference(cfg, tables):
    lp, lens = random_posteriors(5, 25, len(SYMBOLS), seed=cfg.beam)
    lm_tables = tables if cfg.lm_weight else None
    want = reference.decode_batch(lp, lens, cfg, reference.TablesLM(tables) if lm_tables is not None else None)
    assert_same(cpu.decode_batch(lp, lens, cfg, lm_tables), want)


def test_reference_with_kenlm_matches_tables(lm_files, tables):
    """The tables and the kenlm module give the same search (an independent LM check)."""
    kenlm = pytest.importorskip("kenlm")
    cfg = CONFIGS[1]
    lp, lens = random_posteriors(3, 20, len(SYMBOLS), seed=7)
    with_kenlm = reference.decode_batch(lp, lens, cfg, reference.KenlmLM(kenlm.Model(str(lm_files[0])), SYMBOLS))
    assert_same(cpu.decode_batch(lp, lens, cfg, tables), with_kenlm)


def test_beam_one_without_lm_is_greedy():
    # Peaked posteriors: with one beam and no LM the best path's collapse is what survives.
    lp, lens = random_posteriors(6, 40, len(SYMBOLS), seed=3, sharp=6.0)
    cfg = DecoderConfig(beam=1, token_topk=len(SYMBOLS), token_min_logp=-1e9)
    got = [hyps[0].tokens for hyps in cpu.decode_batch(lp, lens, cfg)]
    assert got == greedy_decode(lp, lens)


def test_wider_beam_never_scores_worse(tables):
    lp, lens = random_posteriors(6, 30, len(SYMBOLS), seed=11)
    best = []
    for beam in (1, 2, 4, 8, 16):
        cfg = DecoderConfig(beam=beam, token_topk=len(SYMBOLS), token_min_logp=-1e9, lm_weight=0.5, word_bonus=0.2)
        best.append([hyps[0].score for hyps in cpu.decode_batch(lp, lens, cfg, tables)])
    best = np.array(best)
    assert np.all(np.diff(best, axis=0) >= -1e-9), best


def test_nbest_sorted_and_distinct(tables):
    lp, lens = random_posteriors(4, 30, len(SYMBOLS), seed=5)
    cfg = DecoderConfig(beam=8, token_topk=5, token_min_logp=-8.0, lm_weight=0.6, nbest=8)
    for hyps in cpu.decode_batch(lp, lens, cfg, tables):
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == len(hyps)
        for h in hyps:  # the parts add up to the ranking score
            assert h.score == pytest.approx(h.am_score + 0.6 * np.log(10) * h.lm_score, abs=1e-9)
            assert all(f1 < f2 for f1, f2 in zip(h.frames, h.frames[1:]))


def test_greedy_collapses_repeats_and_drops_blanks():
    lp = np.full((1, 7, 4), -10.0, dtype=np.float32)
    for t, v in enumerate([1, 1, 0, 1, 2, 2, 0]):
        lp[0, t, v] = 0.0
    assert greedy_decode(lp, np.array([7])) == [[1, 1, 2]]
    assert greedy_decode(lp, np.array([2])) == [[1]]


# ------------------------------------------------------------------ hotwords (contextual biasing)

@pytest.mark.parametrize("seed", range(6))
def test_cpu_twin_matches_reference_with_hotwords(seed, tables):
    """Random phrase sets that overlap (prefixes, extensions, shared suffixes), with and
    without the LM: same N-best, scores and hotword bonuses. The reference checks at every
    prefix merge that the merged hypotheses have the same context state and bonus."""
    phrases = random_phrases(seed, n=8, vocab=len(SYMBOLS))
    phrases = [([max(t, 2) for t in p], w) for p, w in phrases]  # <unk> (1) is never emitted
    cfg = CONFIGS[seed % len(CONFIGS)]
    lp, lens = random_posteriors(4, 25, len(SYMBOLS), seed=40 + seed)
    lm_tables = tables if cfg.lm_weight else None
    lm = reference.TablesLM(tables) if lm_tables is not None else None
    want = reference.decode_batch(lp, lens, cfg, lm, reference.ReferenceContext(phrases))
    got = cpu.decode_batch(lp, lens, cfg, lm_tables, ContextGraph.build(phrases, len(SYMBOLS)))
    assert_same(got, want)
    assert any(h.context_score != 0 for hyps in got for h in hyps)  # the phrases were actually met
    graph = ContextGraph.build(phrases, len(SYMBOLS))
    for hyps in got:  # a hypothesis's bonus is its token sequence's, end of utterance included
        for h in hyps:
            assert h.context_score == pytest.approx(graph.score_sequence(h.tokens), abs=1e-9)


def peaked_posteriors(path: list[int], V: int, floor: float = -20.0) -> np.ndarray:
    """(1, T, V) log-probs where `path` (one unit per frame, 0 = blank) is all but certain."""
    lp = np.full((1, len(path), V), floor, dtype=np.float32)
    for t, v in enumerate(path):
        lp[0, t, v] = 0.0
    return lp


def test_abandoned_hotword_leaves_the_score_as_if_never_started():
    """가 나 라 said; the list holds 가 나 다: the two units earned are given back."""
    lp = peaked_posteriors([3, 0, 4, 0, 6, 0], len(SYMBOLS))
    lens = np.array([lp.shape[1]])
    cfg = DecoderConfig(beam=8, token_topk=4, token_min_logp=-30.0, nbest=3, word_bonus=0.2)
    plain = cpu.decode_batch(lp, lens, cfg)
    graph = ContextGraph.build([([3, 4, 5], 2.0)], len(SYMBOLS))
    biased = cpu.decode_batch(lp, lens, cfg, None, graph)
    assert biased[0][0].tokens == plain[0][0].tokens == [3, 4, 6]
    assert biased[0][0].context_score == 0.0
    # the same up to summation order (other candidates were in the beam along the way)
    assert biased[0][0].score == pytest.approx(plain[0][0].score, abs=1e-9)
    assert biased[0][0].am_score == pytest.approx(plain[0][0].am_score, abs=1e-9)
    want = reference.decode_batch(lp, lens, cfg, None, reference.ReferenceContext([([3, 4, 5], 2.0)]))
    assert_same(biased, want)


def test_hotword_wins_an_acoustically_close_call():
    """At the third unit 라 is slightly likelier than 다; the hotword 가 나 다 tips it."""
    lp = peaked_posteriors([3, 0, 4, 0, 6, 0], len(SYMBOLS))
    lp[0, 4, 6], lp[0, 4, 5] = np.log(0.55), np.log(0.45)
    lens = np.array([lp.shape[1]])
    cfg = DecoderConfig(beam=8, token_topk=4, token_min_logp=-30.0, nbest=2)
    assert cpu.decode_batch(lp, lens, cfg)[0][0].tokens == [3, 4, 6]
    biased = cpu.decode_batch(lp, lens, cfg, None, ContextGraph.build([([3, 4, 5], 0.5)], len(SYMBOLS)))
    assert biased[0][0].tokens == [3, 4, 5]
    assert biased[0][0].context_score == pytest.approx(1.5)  # 3 units x 0.5, kept once completed
    assert biased[0][0].score == pytest.approx(biased[0][0].am_score + 1.5)


def test_context_graph_must_cover_the_units():
    lp, lens = random_posteriors(1, 5, len(SYMBOLS), seed=1)
    with pytest.raises(ValueError, match="covers 5 units"):
        cpu.decode_batch(lp, lens, CONFIGS[0], None, ContextGraph.build([([3, 4], 1.0)], 5))


CUDASIM_SCRIPT = r"""
import json, sys
import numpy as np
from kocall_kernels.ctc_decoder import DecoderConfig
from kocall_kernels.ctc_decoder import cuda as ctc_cuda
from kocall_kernels.ctc_decoder.context_graph import ContextGraph
from kocall_kernels.ngram.tables import NgramTables

data = np.load(sys.argv[1])
tables = NgramTables.load(sys.argv[2]) if sys.argv[2] != "-" else None
cfg = DecoderConfig(**json.loads(sys.argv[3]))
phrases = json.loads(sys.argv[5])
context = ContextGraph.build(phrases, data["lp"].shape[2]) if phrases else None
hyps = ctc_cuda.decode_batch(data["lp"], data["lens"], cfg, tables, threads_per_block=int(sys.argv[4]),
                             context=context)
print(json.dumps([[h.__dict__ for h in utt] for utt in hyps]))
"""


@pytest.mark.parametrize("cfg,threads,hotwords", [(CONFIGS[0], 8, False), (CONFIGS[2], 32, False),
                                                  (CONFIGS[0], 8, True), (CONFIGS[2], 32, True)])
def test_simulated_cuda_kernel_matches_cpu_twin(cfg, threads, hotwords, tables, tmp_path):
    """The CUDA kernel under NUMBA_ENABLE_CUDASIM=1 (a subprocess: the switch must precede
    importing numba). Few threads per block, so each thread strides over several items.
    With hotwords: a random overlapping phrase set."""
    import dataclasses
    import json
    import subprocess
    import sys

    from kocall_kernels.ctc_decoder import Hypothesis

    lp, lens = random_posteriors(3, 10, len(SYMBOLS), seed=21 + threads + hotwords)
    # random overlapping phrases, and a one-unit phrase so that some bonus is surely kept
    phrases = [([max(t, 2) for t in p], w) for p, w in random_phrases(threads, n=8, vocab=len(SYMBOLS))] \
        + [([3], 0.5)] if hotwords else []
    np.savez(tmp_path / "post.npz", lp=lp, lens=lens)
    lm_tables = tables if cfg.lm_weight else None
    if lm_tables is not None:
        tables.save(tmp_path / "lm.npz")
    env = cuda_subprocess_env()
    run = subprocess.run([sys.executable, "-c", CUDASIM_SCRIPT, str(tmp_path / "post.npz"),
                          str(tmp_path / "lm.npz") if lm_tables is not None else "-",
                          json.dumps(dataclasses.asdict(cfg)), str(threads), json.dumps(phrases)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = [[Hypothesis(**h) for h in utt] for utt in json.loads(run.stdout.strip().splitlines()[-1])]
    context = ContextGraph.build(phrases, len(SYMBOLS)) if phrases else None
    assert_same(got, cpu.decode_batch(lp, lens, cfg, lm_tables, context))
    assert_same(got, reference.decode_batch(lp, lens, cfg, reference.TablesLM(tables) if lm_tables is not None else None,
                                            reference.ReferenceContext(phrases) if phrases else None))
    if hotwords:
        assert any(h.context_score != 0 for utt in got for h in utt)
