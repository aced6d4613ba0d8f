"""KsponSpeech (AIHub): raw s16le 16 kHz `.pcm` files, each with a cp949 `.txt` beside it.

Transcription conventions and what we do with them (`clean_kspon_text`):

* `(철자)/(발음)` dual transcription: the **spelling** side by default (`side="spelling"`),
  e.g. `(70%)/(칠십 퍼센트)` -> `70%`, which text_norm then writes out as Korean numbers,
  so one number policy covers every corpus; `side="pronunciation"` takes what was actually
  said (`칠십 퍼센트`), closer to the audio where the reading is irregular.
* noise tags `b/` (breath), `l/` (laughter), `o/` (other speaker), `n/` (noise), `u/`
  (unintelligible) are removed;
* `*` (unclear word) and `+` (repeated word) marks are removed, keeping the word;
* `/` marks a filler (`어/`, `음/`): as ESPnet's KsponSpeech recipe does, the filler word is
  dropped with its mark;
* then normalize_text (punctuation, numbers, Latin) as for every corpus.

KsponSpeech has no speaker labels: each utterance is its own speaker. Files under a folder
named `eval_clean` or `eval_other` form those test sets; everything else is train (a dev
set is split off by kocall.corpora.splits). Transcripts left empty (noise-only lines) are
legitimate here: they are skipped and counted, with a warning.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import click
from kocall.progress import progress_bar

from kocall.datadir import Utterance
from kocall.errors import DataError, where
from kocall.text_norm import normalize_text

SIDES = ("spelling", "pronunciation")
TEST_FOLDERS = ("eval_clean", "eval_other")
_DUAL = re.compile(r"\(([^()]*)\)\s*/\s*\(([^()]*)\)")
_NOISE_TAG = re.compile(r"(?<![A-Za-z])[blonu]/")
_FILLER = re.compile(r"\S+/")


def clean_kspon_text(text: str, side: str = "spelling") -> str:
    """Remove KsponSpeech markup (see the module doc); the result still needs normalize_text."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, not {side!r}")
    pick = 1 if side == "spelling" else 2
    text = _DUAL.sub(lambda m: m.group(pick), text)  # part of the word: (2시)/(두 시)에 -> 2시에
    text = _NOISE_TAG.sub(" ", text)
    text = _FILLER.sub(" ", text)  # what is left with a '/' is a filler word
    text = text.replace("*", "").replace("+", "").replace("/", " ")
    return " ".join(text.split())


def _read_transcript(utt_id: str, path: Path) -> str:
    try:
        return path.read_bytes().decode("cp949")
    except UnicodeDecodeError:
        try:
            return path.read_text(encoding="utf-8-sig")  # some redistributions re-encoded it
        except UnicodeDecodeError:
            raise DataError(f"{where(utt_id, str(path))}: transcript is neither cp949 nor UTF-8") from None


def read_kspon(root: str | os.PathLike, side: str = "spelling", punct: str = "strip") -> dict[str, list[Utterance]]:
    """Walk `root` for .pcm files: {"train": [...], "eval_clean": [...], ...} (sets as present)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"corpus directory '{root}' does not exist")
    pcms = sorted(root.rglob("*.pcm"))
    if not pcms:
        raise DataError(f"corpus directory '{root}': no .pcm files found")
    sets: dict[str, list[Utterance]] = {}
    empty: list[str] = []
    seen: dict[str, Path] = {}
    for pcm in progress_bar(pcms, desc="KsponSpeech transcripts", unit="utt", leave=False, disable=len(pcms) < 200):
        utt_id = pcm.stem
        if utt_id in seen:
            raise DataError(f"{where(utt_id, str(pcm))}: duplicate utterance id (also '{seen[utt_id]}')")
        seen[utt_id] = pcm
        txt = pcm.with_suffix(".txt")
        if not txt.is_file():
            raise DataError(f"{where(utt_id, str(txt))}: transcript file is missing")
        text = normalize_text(clean_kspon_text(_read_transcript(utt_id, txt), side), punct)
        if not text:
            empty.append(utt_id)
            continue
        folder = next((part for part in pcm.relative_to(root).parts[:-1] if part in TEST_FOLDERS), "train")
        sets.setdefault(folder, []).append(Utterance(utt_id=utt_id, speaker=utt_id, wav=str(pcm.resolve()), text=text))
    if empty:
        click.echo(f"warning: skipped {len(empty)} KsponSpeech utterance(s) whose transcript is only noise "
                   f"or fillers (e.g. {', '.join(empty[:5])})", err=True)
    if "train" not in sets:
        raise DataError(f"corpus directory '{root}': no training utterances (only {sorted(sets)})")
    return sets
