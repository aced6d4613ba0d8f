"""The n-gram LM over the AM's units (stage 3): KenLM lmplz + build_binary, dev perplexity.

`kocall lm train --order N [--conf conf/lm.yaml] [--prune "0 0 1"] --lang LANG
 --train-text DATA/text [--extra-text FILE] --dev-text DEV/text --out DIR` writes, as one
atomic directory:
  lm.arpa, lm.bin   the model (lmplz, modified Kneser-Ney; build_binary)
  lm_tables.npz     the same model as flat device tables (kocall_kernels.ngram)
  ppl.txt, ppl.json dev perplexity and OOV rate (KenLM, per sentence with </s>), and the
                    dev perplexity of a unigram model trained on the same text, for comparison
  lm_text.txt       the unit strings the model was trained on

The LM's words are the unit symbols (`명 동 역 ▁ 몇 ▁ 번`, or the bpe pieces), made by
`Tokenizer.to_lm_words` from text normalised exactly as the AM targets are.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import click
import yaml
from tqdm import tqdm

from kocall.errors import DataError, KocallError
from kocall.fileio import atomic_dir
from kocall.lang import Tokenizer, read_text_lines, read_transcripts
from kocall.paths import REPO_ROOT

log = logging.getLogger(__name__)

DEFAULT_CONF = {"memory": "10%", "prune": "", "discount_fallback": True, "binary_type": "probing"}
# lmplz writes a -inf back-off for a context whose continuations took all the mass (tiny
# corpora with --discount_fallback); KenLM refuses to load it. This floor stands in.
INF_BACKOFF_FLOOR = "-99"


# --- text --------------------------------------------------------------------------
def lm_sentences(tokenizer: Tokenizer, texts: Sequence[str]) -> list[str]:
    return [tokenizer.to_lm_words(t) for t in texts]


# --- KenLM binaries ------------------------------------------------------------------
def kenlm_tool(name: str) -> str:
    """Path of lmplz/build_binary: on PATH (path.sh), else tools/kenlm/bin."""
    found = shutil.which(name) or str(REPO_ROOT / "tools" / "kenlm" / "bin" / name)
    if not os.access(found, os.X_OK):
        raise KocallError(f"KenLM's '{name}' is missing: run utils/build_kenlm.sh tools/kenlm "
                          "(or utils/setup_env.sh)")
    return found


def run_tool(args: list[str], stdin_path: Path | None = None) -> None:
    with open(stdin_path, "rb") if stdin_path else open(os.devnull, "rb") as stdin:
        proc = subprocess.run(args, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.decode("utf-8", "replace").strip().splitlines()[-5:])
        raise KocallError(f"{Path(args[0]).name} failed (exit {proc.returncode}): {tail}")


def lmplz(corpus: Path, arpa: Path, order: int, memory: str, prune: str, discount_fallback: bool,
          tmp_dir: Path) -> None:
    """Estimate an ARPA model of `order` from `corpus` (one sentence of unit words a line)."""
    args = [kenlm_tool("lmplz"), "-o", str(order), "-S", memory, "-T", str(tmp_dir), "--arpa", str(arpa)]
    if discount_fallback:
        args.append("--discount_fallback")
    if prune.strip():
        thresholds = prune.split()
        if len(thresholds) > order or not all(t.isdigit() for t in thresholds):
            raise DataError(f"--prune '{prune}': expected up to {order} non-negative integers")
        args += ["--prune", *thresholds]
    log.info("lmplz -o %d on %s", order, corpus)
    run_tool(args, stdin_path=corpus)
    floor_infinite_backoffs(arpa)


def floor_infinite_backoffs(arpa: Path) -> int:
    """Replace -inf back-off weights (which KenLM cannot load) by INF_BACKOFF_FLOOR in place."""
    fixed = 0
    tmp = arpa.with_name(arpa.name + ".fix")
    with open(arpa, encoding="utf-8") as src, open(tmp, "w", encoding="utf-8") as dst:
        for line in src:
            if line.endswith("\t-inf\n"):
                line = line[: -len("-inf\n")] + INF_BACKOFF_FLOOR + "\n"
                fixed += 1
            dst.write(line)
    os.replace(tmp, arpa)
    if fixed:
        log.warning("%s: %d -inf back-off weights floored to %s", arpa, fixed, INF_BACKOFF_FLOOR)
    return fixed


# --- perplexity ------------------------------------------------------------------------
@dataclass
class Perplexity:
    sentences: int
    tokens: int          # scored tokens, </s> included
    oov: int
    logprob: float       # log10, total
    ppl: float           # over all tokens (OOVs at the <unk> probability)
    ppl_excl_oov: float  # OOV tokens left out (KenLM's "Perplexity excluding OOVs")

    @property
    def oov_rate(self) -> float:
        words = self.tokens - self.sentences
        return self.oov / words if words else 0.0


def perplexity(model_path: Path, sentences: Sequence[str]) -> Perplexity:
    """Per-sentence KenLM scores with <s> and </s>, summed."""
    import kenlm

    try:
        model = kenlm.Model(str(model_path))
    except (OSError, RuntimeError) as exc:
        raise KocallError(f"file '{model_path}': KenLM cannot load it: {str(exc).splitlines()[0]}") from None
    total, total_iv, tokens, oov = 0.0, 0.0, 0, 0
    for sentence in tqdm(sentences, desc=f"perplexity {model_path.name}", leave=False, unit=" sent"):
        for logprob, _, is_oov in model.full_scores(sentence, bos=True, eos=True):
            total += logprob
            tokens += 1
            if is_oov:
                oov += 1
            else:
                total_iv += logprob
    if tokens == 0:
        raise DataError("dev text holds no sentences")
    iv = tokens - oov
    return Perplexity(sentences=len(sentences), tokens=tokens, oov=oov, logprob=total,
                      ppl=10.0 ** (-total / tokens), ppl_excl_oov=10.0 ** (-total_iv / iv) if iv else math.inf)


def unigram_perplexity(arpa: Path, sentences: Sequence[str]) -> Perplexity:
    """The same numbers for a unigram ARPA, computed directly (KenLM loads only order >= 2)."""
    from kocall_kernels.ngram.arpa import parse_arpa

    grams, unk = parse_arpa(arpa, progress=False)
    logprob = {words[0]: p for words, (p, _) in grams[0].items()}
    unk = -100.0 if unk is None else unk
    total, total_iv, tokens, oov = 0.0, 0.0, 0, 0
    for sentence in sentences:
        for word in sentence.split() + ["</s>"]:
            p = logprob.get(word)
            tokens += 1
            if p is None or word == "<unk>":
                oov += 1
                total += unk
            else:
                total += p
                total_iv += p
    if tokens == 0:
        raise DataError("dev text holds no sentences")
    iv = tokens - oov
    return Perplexity(sentences=len(sentences), tokens=tokens, oov=oov, logprob=total,
                      ppl=10.0 ** (-total / tokens), ppl_excl_oov=10.0 ** (-total_iv / iv) if iv else math.inf)


def arpa_counts(arpa: Path) -> dict[int, int]:
    counts = {}
    with open(arpa, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("ngram "):
                n, _, c = line[6:].strip().partition("=")
                counts[int(n)] = int(c)
            elif line.startswith("\\1-grams:"):
                break
    return counts


# --- the stage -------------------------------------------------------------------------
def load_conf(path: str | os.PathLike | None) -> dict:
    conf = dict(DEFAULT_CONF)
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise DataError(f"file '{path}': cannot read LM config ({exc})") from None
        unknown = set(loaded) - set(DEFAULT_CONF)
        if unknown:
            raise DataError(f"file '{path}': unknown LM options {sorted(unknown)}; known: {sorted(DEFAULT_CONF)}")
        conf.update(loaded)
    return conf


def train_lm(lang_dir: str | os.PathLike, train_text: str | os.PathLike, dev_text: str | os.PathLike,
             out_dir: str | os.PathLike, order: int = 6, extra_text: str | os.PathLike | None = None,
             conf: dict | None = None) -> dict:
    """Train the unit n-gram and its unigram baseline; write OUT_DIR atomically; return ppl.json."""
    conf = {**DEFAULT_CONF, **(conf or {})}
    if order < 2:
        raise DataError(f"LM order must be >= 2 (KenLM loads no unigram models), not {order}")
    tokenizer = Tokenizer.from_lang_dir(lang_dir)
    train = lm_sentences(tokenizer, read_transcripts(train_text))
    extra = lm_sentences(tokenizer, read_text_lines(extra_text))
    dev = lm_sentences(tokenizer, read_transcripts(dev_text))
    if not train:
        raise DataError(f"file '{train_text}': no transcripts to train the LM on")
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, {"--lang tokens": Path(lang_dir) / "tokens.txt", "--train-text": train_text,
                              "--dev-text": dev_text, "--extra-text": extra_text}) as tmp:
        corpus = tmp / "lm_text.txt"
        corpus.write_text("".join(s + "\n" for s in train + extra), encoding="utf-8")
        work = tmp / ".work"
        work.mkdir()
        lmplz(corpus, tmp / "lm.arpa", order, str(conf["memory"]), str(conf["prune"] or ""),
              bool(conf["discount_fallback"]), work)
        run_tool([kenlm_tool("build_binary"), "-S", str(conf["memory"]), "-T", str(work / "bb"),
                  str(conf["binary_type"]), str(tmp / "lm.arpa"), str(tmp / "lm.bin")])
        lmplz(corpus, work / "unigram.arpa", 1, str(conf["memory"]), "", True, work)

        from kocall_kernels.ngram import NgramTables

        tables = NgramTables.from_arpa(tmp / "lm.arpa", Path(lang_dir) / "tokens.txt")
        tables.save(tmp / "lm_tables.npz")

        ppl = perplexity(tmp / "lm.bin", dev)
        uni = unigram_perplexity(work / "unigram.arpa", dev)
        report = {
            "order": order, "unit": tokenizer.unit, "train_sentences": len(train),
            "extra_sentences": len(extra), "ngram_counts": arpa_counts(tmp / "lm.arpa"),
            "prune": str(conf["prune"] or ""), "dev": {**asdict(ppl), "oov_rate": ppl.oov_rate},
            "unigram_dev": {**asdict(uni), "oov_rate": uni.oov_rate},
            "table_states": tables.num_states, "table_arcs": tables.num_arcs,
            "table_bytes": tables.nbytes(),
        }
        (tmp / "ppl.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        (tmp / "ppl.txt").write_text(format_report(report), encoding="utf-8")
        shutil.rmtree(work)
    return report


def format_report(report: dict) -> str:
    dev, uni = report["dev"], report["unigram_dev"]
    counts = " ".join(f"{n}-grams={c}" for n, c in sorted(report["ngram_counts"].items()))
    return (f"LM: {report['order']}-gram over {report['unit']} units; train {report['train_sentences']} "
            f"sentences + {report['extra_sentences']} extra; {counts}\n"
            f"dev: {dev['sentences']} sentences, {dev['tokens']} tokens incl. </s>, "
            f"OOV {dev['oov']} ({100 * dev['oov_rate']:.2f}%)\n"
            f"dev perplexity {report['order']}-gram: {dev['ppl']:.3f} (excl. OOV {dev['ppl_excl_oov']:.3f}), "
            f"log10 prob {dev['logprob']:.2f}\n"
            f"dev perplexity 1-gram: {uni['ppl']:.3f} (excl. OOV {uni['ppl_excl_oov']:.3f})\n")


# --- CLI -------------------------------------------------------------------------------------
@click.group("lm")
def lm_cmd() -> None:
    """The n-gram language model over the output units."""


@lm_cmd.command("train")
@click.option("--order", type=click.IntRange(min=2, max=8), default=6, show_default=True)
@click.option("--conf", "conf_path", type=click.Path(dir_okay=False), default=None, help="conf/lm.yaml")
@click.option("--prune", default=None, help="lmplz --prune thresholds, e.g. '0 0 1' (overrides the conf)")
@click.option("--memory", default=None, help="lmplz -S, e.g. '10%' or '1G' (overrides the conf)")
@click.option("--lang", "lang_dir", required=True, type=click.Path(file_okay=False))
@click.option("--train-text", required=True, type=click.Path(dir_okay=False), help="Kaldi text of train")
@click.option("--extra-text", default=None, type=click.Path(dir_okay=False),
              help="extra LM sentences, one a line (may be empty or missing)")
@click.option("--dev-text", required=True, type=click.Path(dir_okay=False), help="Kaldi text of dev")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
def train_cmd(order: int, conf_path: str | None, prune: str | None, memory: str | None, lang_dir: str,
              train_text: str, extra_text: str | None, dev_text: str, out_dir: str) -> None:
    """Train an ORDER-gram over the units of LANG; write OUT (lm.arpa, lm.bin, ppl.txt)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    conf = load_conf(conf_path)
    if prune is not None:
        conf["prune"] = prune
    if memory is not None:
        conf["memory"] = memory
    report = train_lm(lang_dir, train_text, dev_text, out_dir, order=order, extra_text=extra_text, conf=conf)
    click.echo(format_report(report).rstrip())
