"""Benchmark: next-token distributions from the flat n-gram tables vs the kenlm module.

One query = the log-probabilities of every next token (V+1, with </s>) for one LM state.
  tables-cpu   kocall_kernels.ngram next_token_scores, numba parallel CPU twin
  tables-cuda  the Numba CUDA kernel (only where a CUDA GPU exists), states and scores on device
  kenlm        the kenlm Python module, BaseScore over every token for each state
All in the same run, on the same states, with a row-equality check against kenlm.

The LM is a 6-gram (lmplz) over a synthetic syllable corpus (Zipfian words of Hangul
syllables), or over --text (one sentence a line, normalised; converted to syllable units).

    .venv/bin/python bench/bench_ngram.py [--sentences 20000] [--order 6] [--batch 1024]
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

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


def text_corpus(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8") as handle:
        return [[SPACE if ch == " " else ch for ch in " ".join(line.split())] for line in handle if line.strip()]


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


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (compilation)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=20000)
    parser.add_argument("--order", type=int, default=6)
    parser.add_argument("--batch", type=int, default=1024, help="LM states per batched query")
    parser.add_argument("--kenlm-states", type=int, default=64, help="states queried through the kenlm module")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--text", type=Path, default=None, help="real LM text instead of the synthetic corpus")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    import kenlm
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
        tables = NgramTables.from_arpa(arpa, tokens)
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
    t_kenlm = timed(lambda: kenlm_rows(n_k), max(1, args.repeats // 2))
    scores, _ = next_token_scores(tables, states, backend="cpu")
    max_diff = float(np.abs(kenlm_rows(n_k) - scores[:n_k, 1:]).max())
    t_cpu = timed(lambda: next_token_scores(tables, states, backend="cpu"), args.repeats)

    results = {
        "date": time.strftime("%Y-%m-%d"), "host": platform.processor() or platform.machine(),
        "order": args.order, "vocab": tables.vocab_size, "states": tables.num_states, "arcs": tables.num_arcs,
        "table_mb": tables.nbytes() / 2**20, "lmplz_s": t_lmplz, "arpa_to_tables_s": t_load,
        "batch": len(states), "max_abs_diff_vs_kenlm": max_diff,
        "kenlm_queries_per_s": n_k / t_kenlm, "cpu_queries_per_s": len(states) / t_cpu,
    }
    if cuda.is_available():
        from kocall_kernels.ngram.cuda import next_token_scores_cuda, to_device

        dev = to_device(tables)
        d_states = cuda.to_device(states)

        def gpu() -> None:
            next_token_scores_cuda(dev, d_states, to_host=False)
            cuda.synchronize()

        gpu_scores, _ = next_token_scores_cuda(dev, d_states)
        results["cuda_max_abs_diff_vs_cpu"] = float(np.abs(gpu_scores - scores).max())
        results["cuda_queries_per_s"] = len(states) / timed(gpu, args.repeats)
        results["gpu"] = cuda.get_current_device().name.decode() if isinstance(
            cuda.get_current_device().name, bytes) else str(cuda.get_current_device().name)

    print(f"{args.order}-gram, V={tables.vocab_size} (+</s>), {tables.num_states} states, "
          f"{tables.num_arcs} arcs, {results['table_mb']:.1f} MiB tables; max |tables - kenlm| = {max_diff:.2e}")
    print("| backend | next-token distributions / s | vs kenlm |")
    print("|---|---:|---:|")
    base = results["kenlm_queries_per_s"]
    for name, key in (("kenlm module (BaseScore per token)", "kenlm_queries_per_s"),
                      ("tables, numba CPU twin", "cpu_queries_per_s"),
                      ("tables, Numba CUDA kernel", "cuda_queries_per_s")):
        if key in results:
            print(f"| {name} | {results[key]:,.0f} | {results[key] / base:.1f}x |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
