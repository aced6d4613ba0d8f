"""Benchmark: our CTC prefix beam search + n-gram LM vs pyctcdecode and flashlight-text.

Same posteriors and the same KenLM model for every decoder, beams 8, 16, 32; CER against the
references, utterances/s and x real time (40 ms per CTC output frame), one table with ratios.

Posteriors: a trained model's dev set when exp/*/decode_dev_greedy/logprobs.npz exists, else
synthetic peaked posteriors built from held-out reference sentences (a few frames per unit,
blanks between, random confusions so the LM has work to do). LM: LANG/lm/lm.arpa, else
trained here with lmplz (tools/kenlm/bin) on the other sentences.

    .venv/bin/python bench/bench_ctc_decoder.py [--utts 200] [--gpu]
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
FRAME_S = 0.04
FALLBACK_TEXT = ["안녕하세요 고객센터입니다", "무엇을 도와드릴까요", "요금 조회를 하고 싶어요", "카드 분실 신고 부탁드립니다",
                 "잠시만 기다려 주세요", "주소 변경은 어디서 하나요", "네 확인해 드리겠습니다", "감사합니다 좋은 하루 되세요"]


def load_sentences(max_lines: int = 40000) -> list[str]:
    from kocall.paths import shared_text

    lines = []
    root = shared_text()
    for name in ("chatbot_qa.txt", "sae4k_v1.txt", "3i4k_fci.txt"):
        path = root / name
        if path.is_file():
            lines += [" ".join(l.split()) for l in path.read_text(encoding="utf-8").splitlines()]
    lines = [l for l in lines if 4 <= len(l) <= 60] or FALLBACK_TEXT * 50
    rng = np.random.default_rng(0)
    rng.shuffle(lines)
    return lines[:max_lines]


def build_lm(sentences: list[str], workdir: Path, order: int = 4) -> tuple[Path, list[str]]:
    """tokens (syllables + ▁) and an ARPA over unit strings, as stage 3 trains it."""
    chars = sorted({c for s in sentences for c in s if c != " "})
    symbols = ["<blk>", "<unk>", "▁"] + chars
    text = "\n".join(" ".join("▁" if c == " " else c for c in s) for s in sentences) + "\n"
    lmplz = REPO / "tools/kenlm/bin/lmplz"
    arpa = workdir / "lm.arpa"
    subprocess.run([str(lmplz), "-o", str(order), "--discount_fallback", "-S", "20%", "-T", str(workdir),
                    "--arpa", str(arpa)], input=text.encode(), check=True, capture_output=True)
    (workdir / "tokens.txt").write_text("".join(f"{s} {i}\n" for i, s in enumerate(symbols)), encoding="utf-8")
    return arpa, symbols


def synth_posteriors(refs: list[list[int]], V: int, seed: int = 0, confuse: float = 0.15
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Peaked log-probs: each unit 1-2 frames (sometimes a confusable wrong unit wins), blanks between."""
    rng = np.random.default_rng(seed)
    rows = []
    for ref in refs:
        frames = []
        for tok in ref:
            for _ in range(rng.integers(0, 2)):
                frames.append((0, None))
            wrong = int(rng.integers(3, V)) if rng.random() < confuse else None
            for _ in range(rng.integers(1, 3)):
                frames.append((tok, wrong))
        frames.append((0, None))
        logits = rng.normal(0, 1.0, (len(frames), V)).astype(np.float32)
        for t, (tok, wrong) in enumerate(frames):
            logits[t, tok] += 7.0
            if wrong is not None:
                logits[t, wrong] += 7.0 + rng.normal(0.3, 0.5)
        rows.append(logits - np.log(np.exp(logits).sum(-1, keepdims=True)))
    lens = np.array([r.shape[0] for r in rows])
    out = np.zeros((len(rows), lens.max(), V), np.float32)
    for b, r in enumerate(rows):
        out[b, : r.shape[0]] = r
    return out, lens


def text_of(ids, symbols) -> str:
    return " ".join("".join(symbols[i] for i in ids if i > 2 or i == 2).replace("▁", " ").split())


def cer(refs: list[str], hyps: list[str]) -> float:
    from kocall.scoring import score_texts

    return score_texts({str(i): r for i, r in enumerate(refs)}, {str(i): h for i, h in enumerate(hyps)}).cer


def run_ours(lp, lens, symbols, tables, beam, alpha, beta, threads: int):
    import numba

    from kocall_kernels.ctc_decoder import DecoderConfig, cpu

    numba.set_num_threads(threads)
    cfg = DecoderConfig(beam=beam, token_topk=16, token_min_logp=-12.0, lm_weight=alpha, word_bonus=beta,
                        bonus_token=2)
    cpu.decode_batch(lp[:2], lens[:2], cfg, tables)  # compile / warm
    t0 = time.perf_counter()
    hyps = cpu.decode_batch(lp, lens, cfg, tables)
    return time.perf_counter() - t0, [text_of(h[0].tokens, symbols) for h in hyps]


def run_pyctcdecode(lp, lens, symbols, arpa, beam, alpha, beta):
    from pyctcdecode import build_ctcdecoder

    labels = ["", "⁇"] + [" "] + symbols[3:]  # blank, <unk>, ▁ as space, units
    decoder = build_ctcdecoder(labels, kenlm_model_path=str(arpa), alpha=alpha, beta=beta)
    decoder.decode(lp[0, : lens[0]], beam_width=beam)
    t0 = time.perf_counter()
    hyps = [decoder.decode(lp[b, : lens[b]], beam_width=beam, token_min_logp=-12.0) for b in range(lp.shape[0])]
    return time.perf_counter() - t0, [" ".join(h.split()) for h in hyps]


def run_flashlight(lp, lens, symbols, arpa, beam, alpha, beta):
    from flashlight.lib.text.decoder import CriterionType, LexiconFreeDecoder, LexiconFreeDecoderOptions
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary

    tokens = Dictionary()
    for s in symbols:
        tokens.add_entry(s)
    lm = KenLM(str(arpa), tokens)
    # flashlight's KenLM scores are log10 and its lm_weight multiplies them directly; sil_score
    # is added per ▁ (our per-word bonus); beam_size_token = our token top-k.
    opts = LexiconFreeDecoderOptions(beam_size=beam, beam_size_token=16, beam_threshold=1000.0,
                                     lm_weight=alpha * math.log(10), sil_score=beta, log_add=True,
                                     criterion_type=CriterionType.CTC)
    decoder = LexiconFreeDecoder(opts, lm, 2, 0, [])
    t0 = time.perf_counter()
    hyps = []
    for b in range(lp.shape[0]):
        em = np.ascontiguousarray(lp[b, : lens[b]])
        best = decoder.decode(em.ctypes.data, em.shape[0], em.shape[1])[0]
        ids = [int(i) for i in best.tokens]
        collapsed = [i for j, i in enumerate(ids) if i != 0 and (j == 0 or ids[j - 1] != i)]
        hyps.append(text_of(collapsed, symbols))
    return time.perf_counter() - t0, hyps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--utts", type=int, default=200)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--gpu", action="store_true", help="also time the CUDA kernel (needs a GPU)")
    args = parser.parse_args()
    from kocall_kernels.ngram.tables import NgramTables

    work = Path(tempfile.mkdtemp(prefix="bench_ctc_"))
    sentences = load_sentences()
    test, train = sentences[: args.utts], sentences[args.utts:]
    arpa, symbols = build_lm(train + test[:0], work)
    sym_id = {s: i for i, s in enumerate(symbols)}
    refs_ids = [[sym_id.get("▁" if c == " " else c, 1) for c in s] for s in test]
    lp, lens = synth_posteriors(refs_ids, len(symbols))
    tables = NgramTables.from_arpa(arpa, work / "tokens.txt", progress=False)
    audio_s = float(lens.sum()) * FRAME_S
    print(f"# {len(test)} utterances, {audio_s:.0f} s of (synthetic, {FRAME_S*1000:.0f} ms/frame) posteriors, "
          f"V={len(symbols)}, 4-gram unit LM on {len(train)} sentences; alpha={args.alpha}, "
          f"per-word (▁) bonus beta={args.beta}; {os.cpu_count()} CPU cores")
    greedy = [text_of([i for j, i in enumerate(r) if i != 0 and (j == 0 or r[j - 1] != i)], symbols)
              for r in [lp[b, : lens[b]].argmax(-1).tolist() for b in range(len(test))]]
    print(f"# greedy CER {cer(test, greedy):.2f}")
    print("| beam | decoder | CER % | utt/s | x real time | vs pyctcdecode | vs flashlight |")
    print("|---|---|---|---|---|---|---|")
    for beam in (8, 16, 32):
        results = {
            "ours CPU (numba, 2 threads)": run_ours(lp, lens, symbols, tables, beam, args.alpha, args.beta, 2),
            "ours CPU (numba, 1 thread)": run_ours(lp, lens, symbols, tables, beam, args.alpha, args.beta, 1),
            "pyctcdecode": run_pyctcdecode(lp, lens, symbols, arpa, beam, args.alpha, args.beta),
            "flashlight-text": run_flashlight(lp, lens, symbols, arpa, beam, args.alpha, args.beta),
        }
        ups = {name: len(test) / secs for name, (secs, _) in results.items()}
        for name, (secs, hyps) in results.items():
            print(f"| {beam} | {name} | {cer(test, hyps):.2f} | {ups[name]:.1f} | {audio_s / secs:.0f} | "
                  f"{ups[name] / ups['pyctcdecode']:.1f}x | {ups[name] / ups['flashlight-text']:.2f}x |", flush=True)
    if args.gpu:
        from numba import cuda

        from kocall_kernels.ctc_decoder import DecoderConfig
        from kocall_kernels.ctc_decoder import cuda as ctc_cuda

        dev_lm = ctc_cuda.DeviceLM(tables)
        print("\n| GPU batch | beam | utt/s | RTF |\n|---|---|---|---|")
        for batch in (1, 32, 256):
            reps = int(np.ceil(batch / len(test)))
            blp, blens = np.concatenate([lp] * reps)[:batch], np.concatenate([lens] * reps)[:batch]
            for beam in (8, 16, 32):
                cfg = DecoderConfig(beam=beam, lm_weight=args.alpha, word_bonus=args.beta, bonus_token=2)
                d_lp = cuda.to_device(blp)
                ctc_cuda.decode_batch(d_lp, blens, cfg, device_lm=dev_lm)
                t0 = time.perf_counter()
                ctc_cuda.decode_batch(d_lp, blens, cfg, device_lm=dev_lm)
                secs = time.perf_counter() - t0
                print(f"| {batch} | {beam} | {batch / secs:.1f} | {secs / (float(blens.sum()) * FRAME_S):.5f} |")


if __name__ == "__main__":
    main()
