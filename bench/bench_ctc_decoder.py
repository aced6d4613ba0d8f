"""Benchmark: our CTC prefix beam search + n-gram LM against pyctcdecode and flashlight-text.

Every decoder gets the same posteriors, the same vocabulary and the same KenLM model (an ARPA
over unit strings `명 동 역 ▁ 몇 ▁ 번`, as stage 3 trains it), at beams 8, 16 and 32. For each:
CER (kocall.scoring, spaces removed, as the hackathon scored), utterances/s and x real time
(audio seconds per decoding second, 40 ms per CTC output frame), and the throughput ratios to
the two peers, all in one run and one table. Where numba finds a CUDA device (--gpu auto, the
default; --gpu yes insists, --gpu no skips) our kernel is also timed at batch 1, 32 and 256,
and its hypotheses are checked against the CPU twin's.

Posteriors
  synthetic (default): reference sentences from the synthetic corpus grammar
    (kocall.synth.grammar; or --text FILE), held out of the LM text, turned into unit ids by
    kocall.lang.Tokenizer over a syllable vocabulary (char_symbols of LM text + references).
    Each unit gets a 40 ms-frame span (syllables 3-7 frames, ▁ 1-3), one or two peaked frames,
    blanks elsewhere; log-probs are deep (~N(-20, 2)) for most tokens with a few distractors,
    as a trained Conformer-CTC's are. At the controlled --error-rate a syllable is acoustically
    confused: substituted by a Hangul neighbour (one jamo changed, present in the vocabulary)
    with the true unit second at ~N(-2.5, 1.5), or far down at ~N(-9, 2) for 30 % of them
    (70 % of errors), deleted (blank wins, true unit second at ~N(-2.5, 1.2); 15 %) or
    followed by an inserted neighbour (15 %); ▁ is dropped (words run together) at 0.3 x the
    rate and a spurious ▁ follows a syllable at 0.05 x. Greedy CER ~ the error rate; the LM
    has to recover what it can.
  --posteriors-from MODEL_DIR DATA_DIR --lm LM.arpa: a trained model's log-probs on a data dir
    (kocall.conformer_ctc), references from DATA_DIR/text, units from MODEL_DIR/tokens.txt.
    A weak model's flat posteriors (hundreds of tokens a frame above the floor) make
    pyctcdecode very slow: add --no-peers, or --alpha X to skip the tuning grid.

Hotwords (--hotword-counts, default 0 100 1000 10000): ours at beam --hotword-beam with a
  hotwords ContextGraph of that many phrases (0: no graph), on the same test posteriors:
  utterances/s on 1 thread and its ratio to no hotwords (the target: under 10 % slower at
  1,000 phrases on the CPU), the graph's states, and CER (the phrases are not the test's
  words, so CER shows what a list of unrelated names costs). Phrases: half are 2-4 unit
  windows of LM-text sentences (frequent syllable sequences: hypotheses enter and abandon
  partial matches all the time, the automaton's worst case), half random 2-5 syllable
  strings; --hotword-weight per syllable, laid out as the recipe does (kocall.hotwords:
  none on a phrase's first unit, even shares on the rest). Timed in CPU seconds of this process (on a machine
  shared with other work, wall time mostly measures the others), alternating between the
  counts over max(--repeats, 5) rounds, best of each. GPU rows (the largest --gpu-batches,
  wall time) where a CUDA device is available, checked against the CPU twin.

Decoders, and how the same semantics are expressed in each API
  ours      kocall_kernels.ctc_decoder.cpu (numba), 1 thread and all numba threads (utterances
            in parallel; the peers decode one utterance at a time on one thread);
            DecoderConfig(beam, token_topk=16, token_min_logp=-12, lm_weight=alpha,
            word_bonus=beta, bonus_token=-1): score = am + alpha*ln(10)*lm10 + beta*units.
  pyctcdecode  build_ctcdecoder over the SAME ARPA with `▁` renamed to `|` (a textual rename,
            the model is unchanged): pyctcdecode's word boundary is the leading `▁` of a BPE
            label, so labels are `▁<unit>` and every unit is one LM word (a unit LM, like ours).
            alpha is the same (it multiplies log10 * ln(10)); beta is added per LM word = per
            unit, like ours, but only once the NEXT unit starts (pyctcdecode scores a word when
            it is complete); unk_score_offset=0 (ours has no OOV penalty beyond the LM's
            <unk>); token_min_logp=-12 as ours (no top-k in its API).
  flashlight-text  LexiconFreeDecoder with its KenLM wrapper on the same ARPA, CTC criterion:
            lm_weight = alpha*ln(10) (it adds raw log10 scores), log_add=True,
            beam_size_token = 17 (its top-k includes blank; ours is 16 + blank), no
            log-prob floor in its API. It has no per-token insertion score: its only bonus is
            sil_score, added on EVERY frame that emits the silence token (here ▁), so beta is
            not applied to flashlight (it must be 0 for identical scores; the default is 0).
  Pruning (--pruning):
    same (default)  the recipe's settings (conf/decode.yaml) in every API: top-k 16 (flashlight
                    17 with blank), log-prob floor -12 (ours, pyctcdecode); ours keeps the
                    beam-best whatever the score gap, so the peers' gap pruning is off
                    (pyctcdecode beam_prune_logp=-1000, flashlight beam_threshold=1000).
    fast            the peers pruned for speed at little CER cost: top-k 4 (flashlight 5: it
                    has no log-prob floor, so top-k is its token pruning), gap pruning 10
                    (beam_prune_logp=-10, pyctcdecode's default; beam_threshold=10); floor -12
                    kept (a floor of -8 costs ours and pyctcdecode CER here). Ours has no gap
                    pruning; its floor already keeps ~2 tokens a frame, so top-k 4 changes little.
                    --topk and --min-logp override either setting.
  Hypothesis identity differs by design: ours merges equal prefixes (p_b/p_nb per prefix);
  pyctcdecode keys beams by (text, partial word, last char); flashlight by (LM state, last
  token, ended-in-blank): one prefix can hold two of its beam slots, and prefixes that differ
  only beyond the LM's context are recombined (log-added).
  LM weight: by default (--alpha tune) each decoder gets its own best alpha on a separate dev
  set (--dev-utts sentences, also held out of the LM text; posteriors drawn with another seed)
  over --alpha-grid at --tune-beam 16, and the table shows it: the weights mean the same in
  every API, but the searches use them differently (pyctcdecode's delayed word scoring,
  flashlight's recombination), so one shared value would favour one of them. --alpha X fixes
  it for all. With --posteriors-from, --dev-from DEV_DATA_DIR gives the dev set (else the
  test set itself is used for tuning).

    .venv/bin/python bench/bench_ctc_decoder.py [--utts 200] [--error-rate 0.12] [--alpha tune|X]
        [--beta 0] [--order 6] [--text FILE...] [--gpu auto|yes|no] [--gpu-batches 1 32 256]
        [--no-peers] [--pruning same|fast] [--json FILE] [--hotword-counts 0 100 1000 10000]
        [--posteriors-from MODEL_DIR DATA_DIR --lm LANG/lm/lm.arpa]
"""
from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_common import cpu_name, gpu_name

FRAME_S = 0.04          # one CTC output frame (10 ms hop, subsampling 4)
SPACE = "\u2581"
PYCTC_SPACE = "|"       # `▁` as pyctcdecode's LM word (its own word-boundary marker is ▁)
SUPPRESS_LOGP = -1.0e4  # <unk> column: never emitted (the recipe masks it too)
BEAMS = (8, 16, 32)
# --pruning: top-k extending tokens, log-prob floor, the peers' score-gap pruning (None: off)
PRUNING = {"same": {"topk": 16, "min_logp": -12.0, "gap": None},
           "fast": {"topk": 4, "min_logp": -12.0, "gap": 10.0}}
GPU_BATCHES = (1, 32, 256)


# --------------------------------------------------------------------------- text and LM
def grammar_sentences(n_lm: int, n_dev: int, n_test: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    """(LM text, dev references, test references): distinct normalised grammar sentences."""
    from kocall.synth.grammar import SentenceGenerator
    from kocall.text_norm import normalize_text

    gen = SentenceGenerator(seed)
    seen: set[str] = set()

    def draw(n: int) -> list[str]:
        out: list[str] = []
        while len(out) < n:
            for s in gen.unique(n - len(out), exclude=frozenset()):
                t = normalize_text(s, punct="strip")
                if t and t not in seen:
                    seen.add(t)
                    out.append(t)
        return out

    test = draw(n_test)
    dev = draw(n_dev)
    return draw(n_lm), dev, test


def file_sentences(paths: list[Path], n_dev: int, n_test: int, seed: int, max_lines: int
                   ) -> tuple[list[str], list[str], list[str]]:
    """(LM text, dev references, test references) from real text, one sentence a line."""
    from kocall.text_norm import normalize_text

    lines: list[str] = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            lines += [t for t in (normalize_text(l, punct="strip") for l in handle) if 4 <= len(t) <= 60]
    lines = sorted(set(lines))
    rng = np.random.default_rng(seed)
    rng.shuffle(lines)
    held = n_dev + n_test
    return lines[held: held + max_lines], lines[n_test:held], lines[:n_test]


def build_lm(tokenizer, lm_texts: list[str], order: int, work: Path) -> Path:
    """lmplz over the unit strings (modified Kneser-Ney, as stage 3), -inf back-offs floored."""
    from kocall.lm import lm_sentences, lmplz

    corpus = work / "lm_text.txt"
    corpus.write_text("\n".join(lm_sentences(tokenizer, lm_texts)) + "\n", encoding="utf-8")
    arpa = work / "lm.arpa"
    lmplz(corpus, arpa, order, memory="10%", prune="", discount_fallback=True, tmp_dir=work)
    return arpa


# --------------------------------------------------------------------------- posteriors
def hangul_neighbours(symbols: list[str]) -> dict[int, list[int]]:
    """For each Hangul syllable id: the vocabulary syllables one jamo away (initial, vowel or final)."""
    ids = {s: i for i, s in enumerate(symbols)}
    out: dict[int, list[int]] = {}
    for sym, i in ids.items():
        if len(sym) != 1 or not "가" <= sym <= "힣":
            continue
        code = ord(sym) - 0xAC00
        ini, med, fin = code // 588, (code % 588) // 28, code % 28
        near = []
        for j in range(19):
            near.append((j, med, fin))
        for j in range(21):
            near.append((ini, j, fin))
        for j in range(28):
            near.append((ini, med, j))
        cand = {chr(0xAC00 + a * 588 + b * 28 + c) for a, b, c in near} - {sym}
        out[i] = sorted(ids[c] for c in cand if c in ids)
    return out


def synth_posteriors(refs: list[list[int]], V: int, neighbours: dict[int, list[int]], space_id: int,
                     unk_id: int, error_rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Peaky CTC log-probs (B, T, V) for reference unit sequences (see the module docstring).

    Per frame a short list of (token, level) is raised above a deep floor; the level-0 token
    wins the frame (blank when nothing else is at 0), the others are the competitors."""
    rng = np.random.default_rng(seed)
    syllables = np.array([i for i in range(V) if i not in (0, unk_id, space_id)])

    def confusable(tok: int) -> int:
        near = neighbours.get(tok)
        return int(rng.choice(near)) if near else int(rng.choice(syllables))

    def spike(tok: int, competitor: int | None = None) -> list[tuple[int, float]]:
        frame = [(tok, 0.0), (0, float(rng.normal(-3.0, 1.0)))]
        if competitor is not None:
            frame.append((competitor, float(rng.normal(-5.0, 1.5))))
        return frame

    rows = []
    for ref in refs:
        plan: list[list[tuple[int, float]]] = [[] for _ in range(int(rng.integers(4, 12)))]  # leading silence
        for tok in ref:
            is_space = tok == space_id
            span = int(rng.integers(1, 4)) if is_space else int(rng.integers(3, 8))
            frames: list[list[tuple[int, float]]] = [[] for _ in range(span)]
            peak = int(rng.integers(0, span))
            width = 2 if (span > 2 and rng.random() < 0.25) else 1
            event = "ok"
            if is_space:
                if rng.random() < 0.3 * error_rate:
                    event = "del"  # two words run together
            elif rng.random() < error_rate:
                event = str(rng.choice(["sub", "del", "ins"], p=[0.7, 0.15, 0.15]))
            wrong = confusable(tok) if not is_space else None
            competitor = None if is_space or rng.random() < 0.5 else wrong
            lost = float(rng.normal(-9.0, 2.0)) if rng.random() < 0.3 else None  # a sub the LM can hardly undo
            for k in range(peak, min(span, peak + width)):
                if event == "sub":   # a neighbour wins, the true unit a close second
                    frames[k] += [(wrong, 0.0), (tok, lost if lost is not None else float(rng.normal(-2.5, 1.5))),
                                  (0, float(rng.normal(-3.0, 1.0)))]
                elif event == "del":  # the spike is too weak: blank wins
                    frames[k] += [(0, 0.0), (tok, float(rng.normal(-2.5, 1.2)))]
                else:
                    frames[k] += spike(tok, competitor)
            if event == "ins":  # an extra neighbour right after (a blank between when at the end)
                extra = [(wrong, 0.0), (0, float(rng.normal(-1.5, 0.6)))]
                if peak + width < span:
                    frames[peak + width] += extra
                else:
                    frames += [[], extra]
            elif not is_space and rng.random() < 0.05 * error_rate:  # a spurious word break
                frames += [[], spike(space_id)]
            for k in (peak - 1, peak + width):  # CTC smear: the unit lingers at a low level
                if 0 <= k < len(frames) and rng.random() < 0.5:
                    frames[k].append((tok, float(rng.normal(-6.0, 1.5))))
            plan += frames
        plan += [[] for _ in range(int(rng.integers(4, 12)))]  # trailing silence
        T = len(plan)
        logits = rng.normal(-20.0, 2.0, (T, V)).astype(np.float32)
        for t, raised in enumerate(plan):
            for d in rng.choice(syllables, size=int(rng.integers(1, 4))):  # unrelated distractors
                logits[t, d] = max(logits[t, d], float(rng.normal(-9.0, 2.0)))
            if not any(level == 0.0 for _, level in raised):
                raised = raised + [(0, 0.0)]  # a blank frame
            for tok, level in raised:
                logits[t, tok] = max(logits[t, tok], level)
        logits[:, unk_id] = -30.0
        m = logits.max(-1, keepdims=True)
        lp = logits - (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))
        rows.append(lp.astype(np.float32))
    return pad(rows)


def pad(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lens = np.array([r.shape[0] for r in rows], dtype=np.int64)
    out = np.full((len(rows), int(lens.max()), rows[0].shape[1]), SUPPRESS_LOGP, np.float32)
    out[:, :, 0] = 0.0  # padding: blank-certain frames (never read)
    for b, r in enumerate(rows):
        out[b, : r.shape[0]] = r
    return out, lens


def model_posteriors(model_dir: Path, data_dir: Path):
    """(log-probs, lens, references, tokenizer) of a trained model on a Kaldi data dir."""
    from kocall.stage_decode import set_log_probs
    from kocall.model_dir import load_model_dir
    from kocall.datadir import load_data_dir
    from kocall.decode import FeatureMaker

    model, tokenizer, config = load_model_dir(model_dir, "cpu")
    ids, rows = set_log_probs(model, data_dir, FeatureMaker(model_dir, config), "cpu")
    text = load_data_dir(data_dir).text
    lp, lens = pad(rows)
    return lp, lens, [text[u] for u in ids], tokenizer


# --------------------------------------------------------------------------- decoders
def cer(refs: list[str], hyps: list[str]) -> float:
    from kocall.scoring import score_texts

    return score_texts({f"u{i:05d}": r for i, r in enumerate(refs)}, {f"u{i:05d}": h for i, h in enumerate(hyps)}).cer


def best_time(fn, repeats: int):
    out, best = None, math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def collapse(path) -> list[int]:
    """CTC collapse of a frame-level path (flashlight returns one token per frame)."""
    out, prev = [], None
    for i in path:
        i = int(i)
        if i != prev and i > 0:
            out.append(i)
        prev = i
    return out


class Ours:
    def __init__(self, tables, alpha: float, beta: float, threads: int, topk: int, min_logp: float):
        self.tables, self.alpha, self.beta, self.threads = tables, alpha, beta, threads
        self.topk, self.min_logp = topk, min_logp

    def cfg(self, beam: int):
        from kocall_kernels.ctc_decoder import DecoderConfig

        return DecoderConfig(beam=beam, token_topk=self.topk, token_min_logp=self.min_logp, lm_weight=self.alpha,
                             word_bonus=self.beta, bonus_token=-1)

    def run(self, lp, lens, beam: int, tokenizer, repeats: int):
        import numba

        from kocall_kernels.ctc_decoder import cpu

        numba.set_num_threads(self.threads)
        cfg = self.cfg(beam)
        cpu.decode_batch(lp[:2], lens[:2], cfg, self.tables)  # compile (cached) / warm
        secs, hyps = best_time(lambda: cpu.decode_batch(lp, lens, cfg, self.tables), repeats)
        return secs, [tokenizer.decode(h[0].tokens) if h else "" for h in hyps]


class PyCtcDecode:
    def __init__(self, arpa: Path, symbols: list[str], alpha: float, beta: float, min_logp: float,
                 prune_logp: float, work: Path):
        import logging

        from pyctcdecode import build_ctcdecoder

        logging.getLogger("pyctcdecode").setLevel(logging.ERROR)
        renamed = work / "lm_pyctcdecode.arpa"  # the same model, `▁` spelled `|`
        renamed.write_text(arpa.read_text(encoding="utf-8").replace(SPACE, PYCTC_SPACE), encoding="utf-8")
        labels = [""] + ["<unk>"] + ["\u2581" + (PYCTC_SPACE if s == SPACE else s) for s in symbols[2:]]
        self.decoder = build_ctcdecoder(labels, kenlm_model_path=str(renamed), alpha=alpha, beta=beta,
                                        unk_score_offset=0.0)
        self.min_logp, self.prune_logp = min_logp, prune_logp

    @property
    def alpha(self) -> float:
        return self.decoder._language_model.alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        self.decoder.reset_params(alpha=float(value))

    def run(self, lp, lens, beam: int, tokenizer, repeats: int):
        def go():
            return [self.decoder.decode(lp[b, : lens[b]], beam_width=beam, beam_prune_logp=self.prune_logp,
                                        token_min_logp=self.min_logp) for b in range(lp.shape[0])]

        self.decoder.decode(lp[0, : lens[0]], beam_width=beam)  # warm
        secs, texts = best_time(go, repeats)
        # "명 동 역 | 몇" -> "명동역 몇"
        return secs, [" ".join("".join(" " if w == PYCTC_SPACE else w for w in t.split()).split()) for t in texts]


class Flashlight:
    def __init__(self, arpa: Path, symbols: list[str], alpha: float, space_id: int, topk: int, threshold: float):
        from flashlight.lib.text.decoder import KenLM
        from flashlight.lib.text.dictionary import Dictionary

        self.tokens = Dictionary()
        for s in symbols:
            self.tokens.add_entry(s)
        self.lm = KenLM(str(arpa), self.tokens)
        self.alpha, self.space_id, self.topk, self.threshold = alpha, space_id, topk, threshold

    def run(self, lp, lens, beam: int, tokenizer, repeats: int):
        from flashlight.lib.text.decoder import CriterionType, LexiconFreeDecoder, LexiconFreeDecoderOptions

        opts = LexiconFreeDecoderOptions(beam_size=beam, beam_size_token=self.topk + 1, beam_threshold=self.threshold,
                                         lm_weight=self.alpha * math.log(10.0), sil_score=0.0, log_add=True,
                                         criterion_type=CriterionType.CTC)
        decoder = LexiconFreeDecoder(opts, self.lm, self.space_id, 0, [])
        rows = [np.ascontiguousarray(lp[b, : lens[b]]) for b in range(lp.shape[0])]

        def go():
            out = []
            for em in rows:
                results = decoder.decode(em.ctypes.data, em.shape[0], em.shape[1])
                out.append(collapse(results[0].tokens) if results else [])
            return out

        secs, paths = best_time(go, repeats)
        return secs, [tokenizer.decode(p) for p in paths]


# --------------------------------------------------------------------------- hotwords
def hotword_phrases(tokenizer, texts: list[str], count: int, weight: float, seed: int) -> list[tuple[list[int], list[float]]]:
    """`count` distinct phrases (see the docstring): windows of `texts` and random syllable strings,
    with `weight` per syllable laid out as kocall.hotwords does (none on the first unit)."""
    from kocall.hotwords import unit_bonuses

    rng = np.random.default_rng(seed)
    syllables = [i for i, s in enumerate(tokenizer.symbols) if "가" <= s <= "힣"]
    encoded = [[t for t in tokenizer.encode(text) if t != tokenizer.space_id] for text in texts]
    encoded = [e for e in encoded if len(e) >= 4]
    seen: set[tuple[int, ...]] = set()
    out: list[tuple[list[int], float]] = []
    draws = 0
    while len(out) < count:
        draws += 1
        if draws % 2:
            sent = encoded[int(rng.integers(len(encoded)))]
            n = int(rng.integers(2, 5))
            start = int(rng.integers(0, len(sent) - n + 1))
            phrase = tuple(sent[start:start + n])
        else:
            phrase = tuple(int(x) for x in rng.choice(syllables, size=int(rng.integers(2, 6))))
        if phrase not in seen:
            seen.add(phrase)
            out.append((list(phrase), unit_bonuses(weight * len(phrase), len(phrase))))  # as the recipe lays it out
    return out


def run_hotwords(lp, lens, refs, tables, tokenizer, lm_texts: list[str], args, alpha: float) -> list[dict]:
    import numba

    from kocall_kernels.ctc_decoder import DecoderConfig, cpu
    from kocall_kernels.ctc_decoder.context_graph import ContextGraph

    cfg = DecoderConfig(beam=args.hotword_beam, token_topk=args.topk, token_min_logp=args.min_logp, lm_weight=alpha,
                        word_bonus=args.beta, bonus_token=-1)
    graphs = {c: (ContextGraph.build(hotword_phrases(tokenizer, lm_texts, c, args.hotword_weight, args.seed),
                                     len(tokenizer)) if c else None) for c in args.hotword_counts}
    n = lp.shape[0]
    audio = float(lens.sum()) * FRAME_S
    numba.set_num_threads(1)
    best = {c: math.inf for c in graphs}
    hyps: dict[int, list] = {}
    for c, graph in graphs.items():
        hyps[c] = cpu.decode_batch(lp, lens, cfg, tables, graph)  # compile / warm
    for _ in range(max(args.repeats, 5)):  # alternate the counts: machine load hits every row alike
        for c, graph in graphs.items():
            t0 = time.process_time()  # CPU seconds: the figure other work on the machine cannot inflate
            cpu.decode_batch(lp, lens, cfg, tables, graph)
            best[c] = min(best[c], time.process_time() - t0)
    base = graphs and min(graphs)
    print(f"\n# hotwords: ours CPU 1 thread, beam {cfg.beam}, alpha {alpha:g}, bonus per syllable "
          f"{args.hotword_weight:g} (none on the first); CPU time, best of {max(args.repeats, 5)} alternating passes")
    print("| phrases | graph states | graph KB | CER % | utt per CPU s | x real time | vs no hotwords |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for c, graph in graphs.items():
        texts = [tokenizer.decode(h[0].tokens) if h else "" for h in hyps[c]]
        row = {"phrases": c, "states": graph.num_states if graph else 0, "kbytes": graph.nbytes() / 1024 if graph else 0,
               "cer": cer(refs, texts), "utt_per_s": n / best[c], "x_real_time": audio / best[c],
               "vs_none": best[base] / best[c], "device": "cpu"}
        rows.append(row)
        print(f"| {c:,} | {row['states']:,} | {row['kbytes']:,.0f} | {row['cer']:.2f} | {row['utt_per_s']:,.1f} | "
              f"{row['x_real_time']:,.0f} | {row['vs_none']:.3f}x |", flush=True)
    if args.gpu != "no":
        from numba import cuda

        if cuda.is_available():
            rows += run_hotwords_gpu(lp, lens, tables, cfg, graphs, args)
    return rows


def run_hotwords_gpu(lp, lens, tables, cfg, graphs, args) -> list[dict]:
    from numba import cuda

    from kocall_kernels.ctc_decoder import cuda as ctc_cuda

    batch = max(args.gpu_batches)
    n = lp.shape[0]
    total = max(n, batch)
    order = np.arange(total) % n
    chunks = [order[i: i + batch] for i in range(0, total, batch)]
    d_chunks = [(cuda.to_device(np.ascontiguousarray(lp[idx, :int(lens[idx].max())])), lens[idx]) for idx in chunks]
    dev_lm = ctc_cuda.DeviceLM(tables)
    print(f"\n# hotwords on the GPU ({gpu_name()}): batch {batch}, beam {cfg.beam}")
    print("| phrases | utt/s | vs no hotwords | same as CPU |")
    print("|---|---|---|---|")
    rows, base = [], None
    for c, graph in graphs.items():
        dev_ctx = ctc_cuda.DeviceContext(graph)

        def go():
            out = []
            for d_lp, blens in d_chunks:
                out += ctc_cuda.decode_batch(d_lp, blens, cfg, device_lm=dev_lm, device_context=dev_ctx)
            cuda.synchronize()
            return out

        go()  # compile / warm
        secs, hyps = best_time(go, args.repeats)
        from kocall_kernels.ctc_decoder import cpu

        want = cpu.decode_batch(lp, lens, cfg, tables, graph)
        same = [h[0].tokens if h else [] for h in hyps[:n]] == [h[0].tokens if h else [] for h in want]
        base = secs if base is None else base
        row = {"phrases": c, "utt_per_s": total / secs, "vs_none": base / secs, "same_as_cpu": same,
               "device": gpu_name()}
        rows.append(row)
        print(f"| {c:,} | {row['utt_per_s']:,.1f} | {row['vs_none']:.3f}x | {'yes' if same else 'NO'} |", flush=True)
    return rows


# --------------------------------------------------------------------------- GPU
def run_gpu(lp, lens, refs, tables, tokenizer, args, alpha: float, cpu_hyps) -> list[dict]:
    from numba import cuda

    from kocall_kernels.ctc_decoder import DecoderConfig
    from kocall_kernels.ctc_decoder import cuda as ctc_cuda

    name = gpu_name()
    dev_lm = ctc_cuda.DeviceLM(tables)
    n = lp.shape[0]
    audio = float(lens.sum()) * FRAME_S
    rows = []
    print(f"\n# GPU: {name}; ours (Numba CUDA kernel, one thread block per utterance, alpha {alpha:g}), host "
          f"posteriors copied "
          f"to the device beforehand, hypotheses back to the host inside the timing; a batch larger than the "
          f"{n} utterances is filled by cycling them (CER over the first {n})")
    print("| beam | batch | CER % | same as CPU | utt/s | x real time |")
    print("|---|---|---|---|---|---|")
    for beam in BEAMS:
        cfg = DecoderConfig(beam=beam, token_topk=args.topk, token_min_logp=args.min_logp, lm_weight=alpha,
                            word_bonus=args.beta, bonus_token=-1)
        for batch in args.gpu_batches:
            total = max(n, batch) if batch > 1 else n
            order = np.arange(total) % n
            chunks = [order[i: i + batch] for i in range(0, total, batch)]
            d_chunks = []
            for idx in chunks:
                T = int(lens[idx].max())
                d_chunks.append((cuda.to_device(np.ascontiguousarray(lp[idx, :T])), lens[idx]))
            ctc_cuda.decode_batch(d_chunks[0][0], d_chunks[0][1], cfg, device_lm=dev_lm)  # compile / warm

            def go():
                hyps = []
                for d_lp, blens in d_chunks:
                    hyps += ctc_cuda.decode_batch(d_lp, blens, cfg, device_lm=dev_lm)
                cuda.synchronize()
                return hyps

            secs, hyps = best_time(go, args.repeats)
            texts = [tokenizer.decode(h[0].tokens) if h else "" for h in hyps[:n]]
            same = texts == cpu_hyps[beam]
            row = {"beam": beam, "batch": batch, "cer": cer(refs, texts), "same_as_cpu": same,
                   "utt_per_s": total / secs, "x_real_time": audio * total / n / secs, "gpu": name}
            rows.append(row)
            print(f"| {beam} | {batch} | {row['cer']:.2f} | {'yes' if same else 'NO'} | {row['utt_per_s']:,.1f} | "
                  f"{row['x_real_time']:,.0f} |", flush=True)
    return rows


# --------------------------------------------------------------------------- main
def parse_alpha(value: str) -> float | str:
    if value == "tune":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--alpha takes a number or 'tune', not {value!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utts", type=int, default=200, help="test utterances (synthetic posteriors)")
    parser.add_argument("--dev-utts", type=int, default=100, help="dev utterances for --alpha tune")
    parser.add_argument("--lm-sentences", type=int, default=20000, help="LM training sentences")
    parser.add_argument("--text", type=Path, nargs="+", default=None,
                        help="real sentences (one a line) instead of the grammar: LM text and references")
    parser.add_argument("--order", type=int, default=6, help="n-gram order (the recipe's default is 6)")
    parser.add_argument("--error-rate", type=float, default=0.12, help="acoustic confusion rate per unit")
    parser.add_argument("--alpha", type=parse_alpha, default="tune",
                        help="LM weight (on ln-converted LM scores), or 'tune': each decoder's best on the dev "
                             "set over --alpha-grid at --tune-beam")
    parser.add_argument("--alpha-grid", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0])
    parser.add_argument("--tune-beam", type=int, default=16)
    parser.add_argument("--beta", type=float, default=0.0, help="insertion bonus per unit (see the docstring)")
    parser.add_argument("--topk", type=int, default=None, help="extending tokens per frame (ours; flashlight +1)")
    parser.add_argument("--min-logp", type=float, default=None, help="token log-prob floor (ours, pyctcdecode)")
    parser.add_argument("--pruning", choices=sorted(PRUNING), default="same",
                        help="same: the recipe's pruning in every API; fast: each pruned for speed")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed repeats, best taken (flashlight, GPU; ours at least 5; pyctcdecode 1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--posteriors-from", nargs=2, type=Path, metavar=("MODEL_DIR", "DATA_DIR"), default=None)
    parser.add_argument("--dev-from", type=Path, metavar="DEV_DATA_DIR", default=None,
                        help="with --posteriors-from and --alpha tune: the data dir to tune on (default: the "
                             "test data dir itself)")
    parser.add_argument("--lm", type=Path, default=None, help="ARPA for --posteriors-from (e.g. LANG/lm/lm.arpa)")
    parser.add_argument("--gpu", choices=["auto", "yes", "no"], default="auto",
                        help="time the CUDA kernel: auto = when a CUDA device is available")
    parser.add_argument("--gpu-batches", type=int, nargs="+", default=list(GPU_BATCHES),
                        help="GPU batch sizes (utterances per kernel launch)")
    parser.add_argument("--no-peers", action="store_true", help="skip pyctcdecode and flashlight-text")
    parser.add_argument("--no-cpu", action="store_true", help="GPU table only (ours on the CPU still gives "
                        "the reference hypotheses)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    parser.add_argument("--hotword-counts", type=int, nargs="*", default=[0, 100, 1000, 10000],
                        help="hotword list sizes to time (none: skip the hotword table)")
    parser.add_argument("--hotword-beam", type=int, default=16)
    parser.add_argument("--hotword-weight", type=float, default=1.5, help="hotword bonus per syllable (ln), laid out as kocall.hotwords does")
    args = parser.parse_args()
    prune = PRUNING[args.pruning]
    args.topk = prune["topk"] if args.topk is None else args.topk
    args.min_logp = prune["min_logp"] if args.min_logp is None else args.min_logp

    import numba

    from kocall.lang import Tokenizer, char_symbols, write_tokens
    from kocall_kernels.ngram.tables import NgramTables

    work = Path(tempfile.mkdtemp(prefix="bench_ctc_"))
    atexit.register(shutil.rmtree, work, True)
    if args.posteriors_from:
        if args.lm is None:
            parser.error("--posteriors-from needs --lm LM.arpa (trained over the model's units)")
        lp, lens, refs, tokenizer = model_posteriors(*args.posteriors_from)
        if args.dev_from:
            dev_lp, dev_lens, dev_refs, _ = model_posteriors(args.posteriors_from[0], args.dev_from)
        else:
            dev_lp, dev_lens, dev_refs = lp, lens, refs
        arpa, source = args.lm, f"model {args.posteriors_from[0]} on {args.posteriors_from[1]}"
        lm_desc = str(args.lm)
    else:
        if args.text:
            lm_texts, dev_refs, refs = file_sentences(args.text, args.dev_utts, args.utts, args.seed,
                                                      args.lm_sentences)
            corpus = ", ".join(p.name for p in args.text)
        else:
            lm_texts, dev_refs, refs = grammar_sentences(args.lm_sentences, args.dev_utts, args.utts, args.seed)
            corpus = "synthetic-corpus grammar"
        tokenizer = Tokenizer(char_symbols(lm_texts + dev_refs + refs))
        arpa = build_lm(tokenizer, lm_texts, args.order, work)
        near = hangul_neighbours(tokenizer.symbols)
        lp, lens = synth_posteriors([tokenizer.encode(r) for r in refs], len(tokenizer), near,
                                    tokenizer.space_id, tokenizer.unk_id, args.error_rate, args.seed)
        dev_lp, dev_lens = synth_posteriors([tokenizer.encode(r) for r in dev_refs], len(tokenizer), near,
                                            tokenizer.space_id, tokenizer.unk_id, args.error_rate, args.seed + 1)
        source = (f"synthetic posteriors, error rate {args.error_rate:.2f}; references: {len(refs)} test and "
                  f"{len(dev_refs)} dev sentences held out of the LM text ({corpus})")
        lm_desc = f"{args.order}-gram unit LM (lmplz) on {len(lm_texts)} sentences ({corpus})"
    for x in (lp, dev_lp):
        x[:, :, tokenizer.unk_id] = SUPPRESS_LOGP  # <unk> is never emitted (as the recipe's decoders)
    tokens_txt = work / "tokens.txt"
    write_tokens(tokens_txt, tokenizer.symbols)
    tables = NgramTables.from_arpa(arpa, tokens_txt, progress=False)
    symbols = tokenizer.symbols
    n = len(refs)
    audio_s = float(lens.sum()) * FRAME_S
    above = float((lp[:, :, 1:] >= args.min_logp).sum(-1)[np.arange(lp.shape[1])[None, :] < lens[:, None]].mean())
    greedy = [tokenizer.decode(collapse(lp[b, : lens[b]].argmax(-1))) for b in range(n)]
    all_threads = numba.config.NUMBA_NUM_THREADS
    info = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_name(), "nproc": os.cpu_count(),
            "numba_threads": all_threads, "source": source, "lm": lm_desc, "ngrams": tables.num_arcs,
            "vocab": len(symbols), "utts": n, "audio_s": audio_s, "beta": args.beta, "topk": args.topk,
            "min_logp": args.min_logp, "pruning": args.pruning, "peer_gap": prune["gap"], "tokens_above_floor_per_frame": above,
            "greedy_cer": cer(refs, greedy)}
    print(f"# {source}")
    print(f"# test: {n} utterances, {audio_s:.0f} s of audio at {FRAME_S * 1000:.0f} ms/frame, V={len(symbols)} "
          f"units; {lm_desc}; {tables.num_arcs:,} n-grams")
    print(f"# beta={args.beta} per unit, top-k {args.topk}, log-prob floor {args.min_logp} ({above:.1f} non-blank "
          f"tokens/frame above it); pruning '{args.pruning}' (peers' gap pruning "
          f"{'off' if prune['gap'] is None else prune['gap']}); {info['nproc']} x {info['cpu']}")
    print(f"# greedy (no LM) CER {info['greedy_cer']:.2f} %")
    if args.beta and not args.no_peers:
        print("# note: flashlight-text gets no insertion bonus (its API has no per-token score), pyctcdecode gets "
              "beta per unit one unit late (see the docstring)")

    families: dict[str, object] = {}  # one decoder object per family; ours' thread count is set per row
    alpha0 = 0.6 if args.alpha == "tune" else args.alpha
    families["ours"] = Ours(tables, alpha0, args.beta, 1, args.topk, args.min_logp)
    if not args.no_cpu and not args.no_peers:
        families["pyctcdecode"] = PyCtcDecode(arpa, symbols, alpha0, args.beta, args.min_logp,
                                              -(prune["gap"] or 1000.0), work)
        families["flashlight-text"] = Flashlight(arpa, symbols, alpha0, tokenizer.space_id, args.topk,
                                                 prune["gap"] or 1000.0)
    alphas = {name: alpha0 for name in families}
    tuning: dict[str, dict[float, float]] = {}
    if args.alpha == "tune":
        print(f"\n# LM weight tuned per decoder on the dev set ({len(dev_refs)} utterances, beam {args.tune_beam}): "
              f"dev CER %")
        print("| alpha | " + " | ".join(families) + " |")
        print("|---|" + "---|" * len(families))
        for a in args.alpha_grid:
            cells = []
            for name, dec in families.items():
                dec.alpha = a
                hyps = dec.run(dev_lp, dev_lens, args.tune_beam, tokenizer, 1)[1]
                tuning.setdefault(name, {})[a] = cer(dev_refs, hyps)
                cells.append(f"{tuning[name][a]:.2f}")
            print(f"| {a} | " + " | ".join(cells) + " |", flush=True)
        for name in families:
            alphas[name] = min(args.alpha_grid, key=lambda a: (tuning[name][a], a))
        print("# chosen: " + ", ".join(f"{name} {alphas[name]}" for name in families))
    for name, dec in families.items():
        dec.alpha = alphas[name]
    info.update(alpha=alphas, tuning={k: {str(a): c for a, c in v.items()} for k, v in tuning.items()})

    decoders: dict[str, tuple[object, int]] = {}
    if not args.no_cpu:
        decoders["ours CPU, 1 thread"] = (families["ours"], 1)
        if all_threads > 1:
            decoders[f"ours CPU, {all_threads} threads"] = (families["ours"], all_threads)
        for name in ("pyctcdecode", "flashlight-text"):
            if name in families:
                decoders[name] = (families[name], 1)
    rows: list[dict] = []
    ours_hyps: dict[int, list[str]] = {}
    if decoders:
        print("\n| beam | decoder | alpha | CER % | utt/s | x real time | vs pyctcdecode | vs flashlight-text |")
        print("|---|---|---|---|---|---|---|---|")
    for beam in BEAMS:
        if not decoders:
            families["ours"].threads = all_threads
            ours_hyps[beam] = families["ours"].run(lp, lens, beam, tokenizer, 1)[1]
            continue
        results = {}
        for name, (dec, threads) in decoders.items():
            if name.startswith("ours"):
                dec.threads = threads
                reps = max(args.repeats, 5)
            else:
                reps = 1 if name == "pyctcdecode" else args.repeats
            secs, hyps = dec.run(lp, lens, beam, tokenizer, reps)
            results[name] = (secs, hyps)
            if name.startswith("ours") and beam not in ours_hyps:
                ours_hyps[beam] = hyps
        ups = {name: n / secs for name, (secs, _) in results.items()}
        for name, (secs, hyps) in results.items():
            row = {"beam": beam, "decoder": name, "alpha": decoders[name][0].alpha, "cer": cer(refs, hyps),
                   "utt_per_s": ups[name], "x_real_time": audio_s / secs}
            for peer in ("pyctcdecode", "flashlight-text"):
                row[f"vs_{peer}"] = ups[name] / ups[peer] if peer in ups else None
            rows.append(row)
            ratio = lambda r: "-" if r is None else f"{r:.2f}x"  # noqa: E731
            print(f"| {beam} | {name} | {row['alpha']:g} | {row['cer']:.2f} | {row['utt_per_s']:,.1f} | "
                  f"{row['x_real_time']:,.0f} | {ratio(row['vs_pyctcdecode'])} | "
                  f"{ratio(row['vs_flashlight-text'])} |", flush=True)

    gpu_rows: list[dict] = []
    if args.gpu != "no":
        from numba import cuda

        if cuda.is_available():
            gpu_rows = run_gpu(lp, lens, refs, tables, tokenizer, args, families["ours"].alpha, ours_hyps)
        elif args.gpu == "yes":
            sys.exit("bench_ctc_decoder: --gpu yes but no CUDA device is available")
        else:
            print("\n# GPU: skipped (no CUDA device available)")
    hotword_rows: list[dict] = []
    if args.hotword_counts:
        hotword_texts = lm_texts if not args.posteriors_from else refs
        hotword_rows = run_hotwords(lp, lens, refs, tables, tokenizer, hotword_texts, args, families["ours"].alpha)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**info, "cpu_rows": rows, "gpu_rows": gpu_rows,
                                         "hotword_rows": hotword_rows}, indent=1,
                                        ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
