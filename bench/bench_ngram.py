"""Benchmark: next-token distributions from the flat n-gram tables vs the kenlm module.

One query = the log-probabilities of every next token (V+1, with </s>) for one LM state.
  kenlm        the kenlm Python module, BaseScore over every token for each state (the way a
               Python decoder such as pyctcdecode queries it), on --kenlm-states states
  tables-cpu   kocall_kernels.ngram next_token_scores, numba CPU twin (prange over states),
               1 thread and all threads, --batch states per call
  tables-cuda  the Numba CUDA kernel (only where a CUDA GPU exists; one block per state),
               states and scores stay on the device, --batch and --gpu-batch states per call
All in the same run, on the same states (sentence prefixes, i.e. the deep states a decoder
visits), with a row-equality check against kenlm (and of the GPU rows against the CPU twin).
Figures are the best of --repeats timed calls after a warm-up (compilation) call.

The LM is a 6-gram (lmplz) over a synthetic syllable corpus (Zipfian words of Hangul
syllables), or over --text FILE... (one sentence a line; normalised by kocall.text_norm and
split into syllable units with ▁ for spaces, as stage 3 does).

    .venv/bin/python bench/bench_ngram.py [--sentences 20000] [--order 6] [--batch 1024]
        [--gpu-batch 16384] [--gpu auto|yes|no] [--text FILE...] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_common import best_of, cpu_name, gpu_name

from kocall.lm import kenlm_tool

SPACE = "\u2581"


def synthetic_corpus(rng: np.random.Generator, sentences: int, syllables: int = 1200,
                     words: int = 6000) -> list[list[str]]:
    """Sentences of unit symbols: Zipfian words made of Zipfian Hangul syllables."""
    syl = [chr(0xAC00 + int(i)) for i in rng.choice(11172, size=syllables, replace=False)]
    syl_p = 1.0 / np.arange(1, syllables + 1) ** 1.1
    syl_p /= syl_p.sum()
    lexicon = [[str(s) for s in rng.choice(syl, size=int(rng.integers(1, 5)), p=syl_p)] for _ in range(words)]
    word_p = 1.0 / np.arange(1, words + 1)
    word_p /= word_p.sum()
    corpus = []
    for _ in range(sentences):
        units: list[str] = []
        for k, w in enumerate(rng.choice(words, size=int(rng.integers(2, 10)), p=word_p)):
            if k:
                units.append(SPACE)
            units.extend(lexicon[w])
        corpus.append(units)
    return corpus


def text_corpus(paths: list[Path]) -> list[list[str]]:
    """Sentences (one a line) normalised as the recipe does (kocall.text_norm), as unit symbols."""
    from kocall.text_norm import normalize_text

    corpus = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                text = normalize_text(line, punct="strip")
                if text:
                    corpus.append([SPACE if ch == " " else ch for ch in text])
    return corpus


def build_lm(corpus: list[list[str]], order: int, work: Path) -> tuple[Path, Path, list[str]]:
    text = work / "text.txt"
    text.write_text("".join(" ".join(s) + "\n" for s in corpus), encoding="utf-8")
    arpa = work / "lm.arpa"
    with open(text, "rb") as stdin:
        subprocess.run([kenlm_tool("lmplz"), "-o", str(order), "-S", "30%", "-T", str(work), "--arpa", str(arpa),
                        "--discount_fallback"], stdin=stdin, check=True, stderr=subprocess.DEVNULL)
    symbols = ["<blk>", "<unk>", SPACE] + sorted({u for s in corpus for u in s} - {SPACE})
    tokens = work / "tokens.txt"
    tokens.write_text("".join(f"{s} {i}\n" for i, s in enumerate(symbols)), encoding="utf-8")
    return arpa, tokens, symbols


def sample_contexts(rng: np.random.Generator, corpus: list[list[str]], count: int) -> list[list[str]]:
    """Sentence prefixes, so the states are the deep ones a decoder visits."""
    picks = rng.choice(len(corpus), size=count)
    return [corpus[i][: int(rng.integers(0, len(corpus[i]) + 1))] for i in picks]





def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=20000)
    parser.add_argument("--order", type=int, default=6)
    parser.add_argument("--batch", type=int, default=1024, help="LM states per batched query")
    parser.add_argument("--kenlm-states", type=int, default=64, help="states queried through the kenlm module")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--text", type=Path, nargs="+", default=None,
                        help="real LM text (one sentence a line) instead of the synthetic corpus")
    parser.add_argument("--gpu-batch", type=int, default=16384, help="a second, larger batch for the GPU")
    parser.add_argument("--gpu", choices=["auto", "yes", "no"], default="auto",
                        help="time the CUDA kernel: auto = when a CUDA device is available")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    import kenlm
    import numba
    from numba import cuda

    from kocall_kernels.ngram import NgramTables, next_token_scores

    rng = np.random.default_rng(0)
    corpus = text_corpus(args.text) if args.text else synthetic_corpus(rng, args.sentences)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        arpa, tokens, symbols = build_lm(corpus, args.order, work)
        t_lmplz = time.perf_counter() - t0
        t0 = time.perf_counter()
        tables = NgramTables.from_arpa(arpa, tokens, progress=False)
        t_load = time.perf_counter() - t0
        model = kenlm.Model(str(arpa))
    ids = {s: i for i, s in enumerate(symbols)}
    vocab_words = symbols[1:] + ["</s>"]          # ids 1..V (V = </s>)

    contexts = sample_contexts(rng, corpus, args.batch)
    states = np.empty(len(contexts), dtype=np.int32)
    kstates = []
    for b, ctx in enumerate(contexts):
        state = tables.bos_state
        kin = kenlm.State()
        model.BeginSentenceWrite(kin)
        for unit in ctx:
            _, state = tables.score(state, ids[unit])
            kout = kenlm.State()
            model.BaseScore(kin, unit, kout)
            kin = kout
        states[b] = state
        kstates.append(kin)

    out = kenlm.State()

    def kenlm_rows(n: int) -> np.ndarray:
        rows = np.empty((n, len(vocab_words)), dtype=np.float32)
        for b in range(n):
            for t, word in enumerate(vocab_words):
                rows[b, t] = model.BaseScore(kstates[b], word, out)
        return rows

    n_k = min(args.kenlm_states, len(kstates))
    t_kenlm = best_of(lambda: kenlm_rows(n_k), max(1, args.repeats // 2))
    scores, _ = next_token_scores(tables, states, backend="cpu")
    max_diff = float(np.abs(kenlm_rows(n_k) - scores[:n_k, 1:]).max())
    threads = numba.config.NUMBA_NUM_THREADS
    best = {n: np.inf for n in sorted({1, threads})}
    for _ in range(args.repeats):  # interleaved, so a busy neighbour hits both thread counts alike
        for n_threads in best:
            numba.set_num_threads(n_threads)
            start = time.perf_counter()
            next_token_scores(tables, states, backend="cpu")
            best[n_threads] = min(best[n_threads], time.perf_counter() - start)
    numba.set_num_threads(threads)
    cpu_rate = {n: len(states) / t for n, t in best.items()}

    results = {
        "date": time.strftime("%Y-%m-%d"), "cpu": cpu_name(), "nproc": os.cpu_count(), "numba_threads": threads,
        "corpus": (f"{', '.join(p.name for p in args.text)} ({len(corpus)} sentences)" if args.text
                   else f"synthetic Zipfian syllables, {args.sentences} sentences"),
        "order": args.order, "vocab": tables.vocab_size, "states": tables.num_states, "arcs": tables.num_arcs,
        "table_mb": tables.nbytes() / 2**20, "lmplz_s": t_lmplz, "arpa_to_tables_s": t_load,
        "batch": len(states), "kenlm_states": n_k, "max_abs_diff_vs_kenlm": max_diff,
        "kenlm_queries_per_s": n_k / t_kenlm,
        "cpu_queries_per_s": {str(k): v for k, v in cpu_rate.items()},
    }
    gpu_rows = []
    if args.gpu != "no" and cuda.is_available():
        from kocall_kernels.ngram.cuda import next_token_scores_cuda, to_device

        results["gpu"] = gpu_name()
        dev = to_device(tables)
        gpu_scores, gpu_next = next_token_scores_cuda(dev, states)
        _, cpu_next = next_token_scores(tables, states, backend="cpu")
        results["cuda_max_abs_diff_vs_cpu"] = float(np.abs(gpu_scores - scores).max())
        results["cuda_next_states_equal_cpu"] = bool(np.array_equal(gpu_next, cpu_next))
        for batch in sorted({len(states), args.gpu_batch}):
            d_states = cuda.to_device(np.resize(states, batch))

            def gpu() -> None:
                next_token_scores_cuda(dev, d_states, to_host=False)
                cuda.synchronize()

            gpu_rows.append({"batch": batch, "queries_per_s": batch / best_of(gpu, args.repeats)})
        results["cuda"] = gpu_rows
    elif args.gpu == "yes":
        sys.exit("bench_ngram: --gpu yes but no CUDA device is available")

    print(f"# {results['corpus']}; {args.order}-gram, V={tables.vocab_size} (+</s>), {tables.num_states:,} states, "
          f"{tables.num_arcs:,} arcs, {results['table_mb']:.1f} MiB tables (lmplz {t_lmplz:.1f} s, ARPA -> tables "
          f"{t_load:.1f} s)")
    print(f"# {results['nproc']} x {results['cpu']}; max |tables - kenlm| = {max_diff:.2e} over {n_k} states x "
          f"{len(vocab_words)} tokens" + (f"; max |cuda - cpu| = {results['cuda_max_abs_diff_vs_cpu']:.1e}, next "
                                           f"states equal: {results['cuda_next_states_equal_cpu']}"
                                           if gpu_rows else ""))
    print("| backend | states per call | next-token distributions / s | vs kenlm |")
    print("|---|---:|---:|---:|")
    base = results["kenlm_queries_per_s"]
    print(f"| kenlm module (BaseScore per token) | 1 | {base:,.0f} | 1.0x |")
    for n_threads, rate in cpu_rate.items():
        label = f"tables, numba CPU twin, {n_threads} thread{'s' if n_threads > 1 else ''}"
        print(f"| {label} | {len(states)} | {rate:,.0f} | {rate / base:,.1f}x |")
    for row in gpu_rows:
        print(f"| tables, Numba CUDA kernel ({results['gpu']}) | {row['batch']} | {row['queries_per_s']:,.0f} | "
              f"{row['queries_per_s'] / base:,.1f}x |")
    if args.gpu == "auto" and not gpu_rows:
        print("# GPU: skipped (no CUDA device available)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
