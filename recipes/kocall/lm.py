"""The n-gram LM over the AM's units (stage 3): KenLM lmplz + build_binary, dev perplexity.

`kocall lm train --order N [--config conf/lm.yaml] [--prune "0 0 1"] --lang LANG
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

from kocall.errors import DataError, KocallError
from kocall.fileio import atomic_dir
from kocall.lang import Tokenizer, read_text_lines, read_transcripts
from kocall.paths import REPO_ROOT

log = logging.getLogger(__name__)

# `order` per unit: a jamo string is about twice as long as its syllables (spaces included),
# so a jamo LM needs a higher order to see the same span (conf/lm.yaml says how it was chosen).
DEFAULT_ORDER = {"char": 6, "bpe": 6, "jamo": 8}
DEFAULT_CONF = {"memory": "10%", "prune": "", "discount_fallback": True, "binary_type": "probing",
                "order": DEFAULT_ORDER}
MAX_ORDER = 8    # KENLM_MAX_ORDER of utils/build_kenlm.sh
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
    chars: int = 0       # characters of the text, spaces and one </s> per sentence included
    ppl_per_char: float = math.nan   # 10^(-logprob / chars): comparable across units

    def per_char(self, chars: int) -> "Perplexity":
        """The same scores with the perplexity also per character of the text: per syllable
        for Korean, whatever the unit (for char units it equals `ppl`)."""
        return Perplexity(**{**asdict(self), "chars": chars, "ppl_per_char": 10.0 ** (-self.logprob / chars)})

    @property
    def oov_rate(self) -> float:
        words = self.tokens - self.sentences
        return self.oov / words if words else 0.0


def perplexity(arpa: Path, sentences: Sequence[str], progress: bool = False) -> Perplexity:
    """Per-sentence log10 scores with <s> and </s>, summed: the ARPA back-off recursion, any
    order (the kenlm module loads at most 6-grams; jamo LMs are 8-grams). Equals KenLM's
    `full_scores`: a word not in the model is scored as `<unk>` (with the context's back-offs)
    and counts as OOV."""
    from kocall_kernels.ngram.arpa import parse_arpa

    grams, unk = parse_arpa(arpa, progress=progress)
    if unk is None:   # lmplz always writes <unk>; other tools may not
        grams[0][("<unk>",)] = (-100.0, 0.0)
    order = len(grams)

    def word_logprob(context: tuple[str, ...], word: str) -> float:
        """log10 p(word | context): the longest n-gram found, plus the skipped contexts' back-offs."""
        backoffs = 0.0
        for start in range(len(context)):            # longest context first
            history = context[start:]
            found = grams[len(history)].get(history + (word,))
            if found is not None:
                return backoffs + found[0]
            backoffs += grams[len(history) - 1].get(history, (0.0, 0.0))[1]
        return backoffs + grams[0][(word,)][0]       # every scored word is a unigram

    total, total_iv, tokens, oov = 0.0, 0.0, 0, 0
    for sentence in sentences:
        context: tuple[str, ...] = ("<s>",)[:order - 1]
        for word in sentence.split() + ["</s>"]:
            is_oov = (word,) not in grams[0] or word == "<unk>"
            word = "<unk>" if is_oov else word
            logprob = word_logprob(context, word)
            context = (context + (word,))[max(0, len(context) + 2 - order):]
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
            from kocall.paths import conf_file

            loaded = yaml.safe_load(conf_file(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise DataError(f"file '{path}': cannot read LM config ({exc})") from None
        unknown = set(loaded) - set(DEFAULT_CONF)
        if unknown:
            raise DataError(f"file '{path}': unknown LM options {sorted(unknown)}; known: {sorted(DEFAULT_CONF)}")
        conf.update(loaded)
    return conf


def unit_order(conf: dict, unit: str) -> int:
    """The conf's LM order for `unit` (`order: {char: 6, jamo: 10, ...}` or one number)."""
    orders = conf.get("order", DEFAULT_ORDER)
    order = orders.get(unit, DEFAULT_ORDER.get(unit)) if isinstance(orders, dict) else orders
    if not isinstance(order, int):
        raise DataError(f"LM config: order must be an integer (or a mapping unit -> integer), not {orders!r}")
    return order


def train_lm(lang_dir: str | os.PathLike, train_text: str | os.PathLike, dev_text: str | os.PathLike,
             out_dir: str | os.PathLike, order: int | None = None, extra_text: str | os.PathLike | None = None,
             conf: dict | None = None) -> dict:
    """Train the unit n-gram and its unigram baseline; write OUT_DIR atomically; return ppl.json.
    `order` None: the conf's order for the unit."""
    conf = {**DEFAULT_CONF, **(conf or {})}
    tokenizer = Tokenizer.from_lang_dir(lang_dir)
    order = unit_order(conf, tokenizer.unit) if order is None else order
    if not 2 <= order <= MAX_ORDER:
        raise DataError(f"LM order must be 2..{MAX_ORDER} (KenLM loads no unigram models; "
                        f"utils/build_kenlm.sh builds up to {MAX_ORDER}), not {order}")
    train = lm_sentences(tokenizer, read_transcripts(train_text))
    extra = lm_sentences(tokenizer, read_text_lines(extra_text))
    dev_texts = read_transcripts(dev_text)
    dev = lm_sentences(tokenizer, dev_texts)
    dev_chars = sum(len(text) + 1 for text in dev_texts)   # the char unit's tokens: + </s>
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

        ppl = perplexity(tmp / "lm.arpa", dev, progress=True).per_char(dev_chars)
        uni = perplexity(work / "unigram.arpa", dev).per_char(dev_chars)
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
            f"dev perplexity 1-gram: {uni['ppl']:.3f} (excl. OOV {uni['ppl_excl_oov']:.3f})\n"
            f"dev perplexity per character ({dev['chars']} characters incl. spaces and </s>; per syllable, "
            f"comparable across units): {report['order']}-gram {dev['ppl_per_char']:.3f}, "
            f"1-gram {uni['ppl_per_char']:.3f}\n")


# --- CLI -------------------------------------------------------------------------------------
@click.group("lm")
def lm_cmd() -> None:
    """The n-gram language model over the output units."""


@lm_cmd.command("train")
@click.option("--order", type=click.IntRange(min=2, max=MAX_ORDER), default=None,
              help="n-gram order [default: the config's order for the unit: char 6, jamo 8]")
@click.option("--config", "conf_path", type=click.Path(dir_okay=False), default=None,
              help="LM config (default conf/lm.yaml)")
@click.option("--prune", default=None, help="lmplz --prune thresholds, e.g. '0 0 1' (overrides the config)")
@click.option("--memory", default=None, help="lmplz -S, e.g. '10%' or '1G' (overrides the config)")
@click.option("--lang", "lang_dir", required=True, type=click.Path(file_okay=False),
              help="lang dir of the units (tokens.txt)")
@click.option("--train-text", required=True, type=click.Path(dir_okay=False), help="Kaldi text of train")
@click.option("--extra-text", default=None, type=click.Path(dir_okay=False),
              help="extra LM sentences, one a line (may be empty or missing)")
@click.option("--dev-text", required=True, type=click.Path(dir_okay=False), help="Kaldi text of dev")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="output dir (lm.arpa, lm.bin, ppl.txt), written atomically")
def train_cmd(order: int | None, conf_path: str | None, prune: str | None, memory: str | None, lang_dir: str,
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
