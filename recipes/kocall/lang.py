"""Output units (stage 2): Korean syllable characters (default), jamo or sentencepiece pieces.

`kocall lang --unit char|jamo|bpe [--vocab-size N] [--extra-text FILE] TRAIN_DATA_DIR LANG_DIR`
writes LANG_DIR/tokens.txt (`symbol id`), LANG_DIR/units.json and, for bpe, LANG_DIR/bpe.model.

unit=char (as the hackathon baseline, 820 classes, and ClovaCall, 2,003): every character
of the normalised train transcripts is a unit, and `▁` (U+2581) stands for a space.
tokens.txt: `<blk> 0`, `<unk> 1`, `▁ 2`, then the characters by descending train frequency
(ties by code point), so ids are stable for a given train set and frequent units are small.

unit=jamo: every Hangul syllable is spelt in Unicode conjoining jamo (kocall.jamo: initial,
vowel, optional final; initial and final consonants are distinct units), so any syllable can
be output, and what the AM learns about a jamo is shared by every syllable that holds it.
tokens.txt: `<blk> 0`, `<unk> 1`, `▁ 2`, the 67 jamo in code-point order (ids 3-69, the same
for every train set: 19 initials U+1100-U+1112, 21 vowels U+1161-U+1175, 27 finals
U+11A8-U+11C2), then the other characters of the train text (Latin letters, kept punctuation)
by descending frequency. `decode` composes the jamo back into NFC syllables (kocall.jamo.compose:
a jamo that does not form a syllable becomes its compatibility jamo, e.g. a lone final
U+11A8 -> ㄱ U+3131), so scores are always computed on syllables. The unit of a tokens.txt is
recognised from its symbols: it is jamo when it holds the 67 jamo (a char inventory never
holds any: normalised text has no jamo), so a model dir needs no other side file.

unit=bpe: a sentencepiece unigram model trained on the normalised train text (+ extra LM
text). Sentencepiece id i becomes our id i+1 (`<blk>` takes 0); sentencepiece's own unk
(its id 0) is our `<unk>` (1); there are no `<s>`/`</s>` pieces.

Characters never seen in training (policy):
- AM targets: `encode` maps them to `<unk>`. `Tokenizer.unk_count(text)` lets the trainer
  drop such utterances (they would teach the AM to emit `<unk>` for a real sound).
- Decoding: `<unk>` is never emitted: decoders mask column `unk_id` (`suppressed_ids`), and
  `decode` drops it anyway (scoring then counts the missing character as one deletion,
  rather than five insertions for the letters of "<unk>").
- LM text: `to_lm_words` keeps an unseen character as its own word (lmplz refuses a literal
  `<unk>` in its input); the device tables drop n-grams over words the AM cannot emit.

Text is re-normalised here with `normalize_text(..., punct="keep-final")`, which is
idempotent on both `strip` and `keep-final` output, so a data dir that was prepared
correctly is unchanged; a line that does change is reported.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import click

from kocall import jamo
from kocall.errors import DataError
from kocall.fileio import atomic_dir, read_table
from kocall.options import bounded
from kocall.text_norm import normalize_text

log = logging.getLogger(__name__)

BLANK, UNK, SPACE = "<blk>", "<unk>", "\u2581"
UNITS = ("char", "jamo", "bpe")
BPE_MODEL = "bpe.model"


# --- reading text --------------------------------------------------------------
def renormalize(text: str) -> str:
    """The one normalisation, applied again (idempotent on already-normalised text)."""
    return normalize_text(text, punct="keep-final")


def read_transcripts(text_file: str | os.PathLike) -> list[str]:
    """Normalised transcripts (column 2+ of a Kaldi text file), warning if any line changes."""
    path = Path(text_file)
    table = read_table(path, allow_empty_value=True)
    texts, changed = [], []
    for utt, text in table.items():
        norm = renormalize(text)
        if norm != text:
            changed.append(utt)
        if norm:
            texts.append(norm)
    if changed:
        log.warning("file '%s': %d transcripts were not normalised (first: utterance '%s'); "
                    "normalised them here", path, len(changed), changed[0])
    if not texts:
        raise DataError(f"file '{path}': no non-empty transcripts")
    return texts


def read_text_lines(path: str | os.PathLike | None) -> list[str]:
    """Plain text, one sentence a line, normalised; a missing or empty file gives []."""
    if path is None or not Path(path).is_file():
        return []
    from kocall.fileio import read_text

    return [t for t in (renormalize(line) for line in read_text(path).split("\n")) if t]


# --- building units ----------------------------------------------------------
def char_symbols(texts: Iterable[str]) -> list[str]:
    """`<blk>`, `<unk>`, `▁`, then the characters by descending frequency (ties by code point)."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(ch for ch in text if not ch.isspace())
    for reserved in (SPACE, BLANK, UNK):
        counts.pop(reserved, None)
    chars = sorted(counts, key=lambda ch: (-counts[ch], ch))
    return [BLANK, UNK, SPACE] + chars


def jamo_symbols(texts: Iterable[str]) -> list[str]:
    """`<blk>`, `<unk>`, `▁`, the 67 jamo (code-point order), then the train text's other
    characters by descending frequency (ties by code point)."""
    others = [ch for ch in char_symbols(texts)[3:] if not jamo.is_syllable(ch) and ch not in jamo.JAMO_INVENTORY]
    return [BLANK, UNK, SPACE, *jamo.JAMO_INVENTORY, *others]


def train_bpe(texts: Sequence[str], model_path: Path, vocab_size: int, source: str = "text") -> None:
    """Train a sentencepiece unigram model (unk = 0, no bos/eos/pad) into `model_path`."""
    import sentencepiece as spm

    with tempfile.TemporaryDirectory(dir=model_path.parent) as tmp:
        corpus = Path(tmp) / "text.txt"
        corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
        try:
            spm.SentencePieceTrainer.train(
                input=str(corpus), model_prefix=str(Path(tmp) / "bpe"), vocab_size=vocab_size,
                model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
                unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, unk_piece=UNK, num_threads=2,
                minloglevel=2)
        except RuntimeError as exc:
            raise DataError(f"file '{source}': sentencepiece could not train a {vocab_size}-piece "
                            f"model: {exc}") from None
        shutil.move(str(Path(tmp) / "bpe.model"), model_path)


def write_tokens(path: Path, symbols: Sequence[str]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(f"{sym} {i}\n" for i, sym in enumerate(symbols))


def prepare_lang(train_dir: str | os.PathLike, lang_dir: str | os.PathLike, unit: str = "char",
                 vocab_size: int = 500, extra_text: str | os.PathLike | None = None) -> "Tokenizer":
    """Build LANG_DIR atomically (tokens.txt, units.json, bpe.model) and return its tokenizer."""
    if unit not in UNITS:
        raise DataError(f"unit must be one of {UNITS}, not {unit!r}")
    texts = read_transcripts(Path(train_dir) / "text")
    with atomic_dir(lang_dir, {"train data dir": train_dir, "--extra-text": extra_text}) as tmp:
        if unit == "char":
            symbols = char_symbols(texts)
        elif unit == "jamo":
            symbols = jamo_symbols(texts)
        else:
            train_bpe(texts + read_text_lines(extra_text), tmp / BPE_MODEL, vocab_size,
                      source=str(Path(train_dir) / "text"))
            symbols = [BLANK] + _bpe_pieces(tmp / BPE_MODEL)
        write_tokens(tmp / "tokens.txt", symbols)
        info = {"unit": unit, "num_units": len(symbols), "train_utterances": len(texts),
                "vocab_size_requested": vocab_size if unit == "bpe" else None}
        (tmp / "units.json").write_text(json.dumps(info, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tokenizer = Tokenizer.from_lang_dir(lang_dir)
    uncovered = sum(1 for t in texts if tokenizer.unk_count(t))
    log.info("%s: %d %s units; %d of %d train transcripts hold <unk>", lang_dir, len(tokenizer),
             unit, uncovered, len(texts))
    return tokenizer


def _bpe_pieces(model_path: Path) -> list[str]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    if pieces[0] != UNK:
        raise DataError(f"file '{model_path}': sentencepiece id 0 must be {UNK}, not {pieces[0]!r}")
    return pieces


# --- the tokenizer -------------------------------------------------------------
class Tokenizer:
    """Text <-> unit ids for the AM and the LM (see the module docstring for the policy)."""

    blank_id = 0

    def __init__(self, symbols: Sequence[str], bpe_model: str | os.PathLike | None = None):
        self.symbols: list[str] = list(symbols)
        if not self.symbols or self.symbols[0] != BLANK or UNK not in self.symbols:
            raise DataError(f"tokens must start with {BLANK} and hold {UNK}")
        self.unit = "bpe" if bpe_model else _inventory_unit(self.symbols)
        self._id = {sym: i for i, sym in enumerate(self.symbols)}
        self.unk_id = self._id[UNK]
        self.space_id: int | None = self._id.get(SPACE)
        self._sp = None
        if bpe_model is not None:
            import sentencepiece as spm

            self._sp = spm.SentencePieceProcessor(model_file=str(bpe_model))
            if self._sp.get_piece_size() + 1 != len(self.symbols):
                raise DataError(f"file '{bpe_model}': {self._sp.get_piece_size()} pieces but "
                                f"tokens.txt has {len(self.symbols) - 1} non-blank units")

    @classmethod
    def from_lang_dir(cls, lang_dir: str | os.PathLike) -> "Tokenizer":
        from kocall_kernels.ngram.arpa import read_tokens

        lang_dir = Path(lang_dir)
        bpe = lang_dir / BPE_MODEL
        return cls(read_tokens(lang_dir / "tokens.txt"), bpe if bpe.is_file() else None)

    def __len__(self) -> int:
        return len(self.symbols)

    @property
    def suppressed_ids(self) -> list[int]:
        """Units a decoder must never emit (besides blank, which CTC collapses)."""
        return [self.unk_id]

    def pieces(self, text: str) -> list[str]:
        """The unit symbols of `text` (unseen characters kept as themselves)."""
        text = " ".join(text.split())
        if self._sp is not None:
            return self._sp.encode(text, out_type=str)
        if self.unit == "jamo":
            text = jamo.decompose(text)
        return [SPACE if ch == " " else ch for ch in text]

    def encode(self, text: str) -> list[int]:
        """Unit ids of a normalised transcript; unseen characters map to `<unk>`."""
        if self._sp is not None:
            return [i + 1 for i in self._sp.encode(" ".join(text.split()), out_type=int)]
        return [self._id.get(sym, self.unk_id) for sym in self.pieces(text)]

    def unk_count(self, text: str) -> int:
        """How many `<unk>` the targets of `text` hold (the trainer drops utterances with any)."""
        return sum(1 for i in self.encode(text) if i == self.unk_id)

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text: drops blank and `<unk>`, `▁` -> space, jamo composed into syllables,
        spaces collapsed and stripped. (Does not merge CTC repeats: that is the decoder's job.)"""
        keep = [int(i) for i in ids if int(i) not in (self.blank_id, self.unk_id)]
        if self._sp is not None:
            return " ".join(self._sp.decode([i - 1 for i in keep]).split())
        text = "".join(self.symbols[i] for i in keep).replace(SPACE, " ")
        if self.unit == "jamo":
            text = jamo.compose(text)
        return " ".join(text.split())

    def to_lm_words(self, text: str) -> str:
        """The space-separated unit string the LM is trained on: '명 동 역 ▁ 몇 ▁ 번' (char),
        the jamo of those syllables (jamo), or the pieces (bpe)."""
        return " ".join(self.pieces(text))


def _inventory_unit(symbols: Sequence[str]) -> str:
    """'jamo' when the symbols hold the 67 conjoining jamo, 'char' when they hold none."""
    held = len(set(symbols) & set(jamo.JAMO_INVENTORY))
    if held == len(jamo.JAMO_INVENTORY):
        return "jamo"
    if held:
        raise DataError(f"tokens hold {held} of the {len(jamo.JAMO_INVENTORY)} jamo units: "
                        "neither a char nor a jamo inventory")
    return "char"


# --- CLI ---------------------------------------------------------------------------
@click.command("lang")
@click.option("--unit", type=click.Choice(UNITS), default="char", show_default=True,
              help="char: syllables + space; jamo: initial/vowel/final jamo; bpe: sentencepiece")
@click.option("--vocab-size", type=bounded("vocab_size"), default=500, show_default=True,
              help="sentencepiece pieces (unit=bpe)")
@click.option("--extra-text", type=click.Path(dir_okay=False), default=None,
              help="extra normalised sentences for the sentencepiece model (unit=bpe)")
@click.argument("train_data_dir", type=click.Path(file_okay=False))
@click.argument("lang_dir", type=click.Path(file_okay=False))
def lang_cmd(unit: str, vocab_size: int, extra_text: str | None, train_data_dir: str, lang_dir: str) -> None:
    """Build the output units of TRAIN_DATA_DIR into LANG_DIR (tokens.txt, blank = 0)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tokenizer = prepare_lang(train_data_dir, lang_dir, unit=unit, vocab_size=vocab_size, extra_text=extra_text)
    click.echo(f"{lang_dir}: {len(tokenizer)} units ({unit}), blank=0 unk={tokenizer.unk_id} "
               f"space={tokenizer.space_id}")
