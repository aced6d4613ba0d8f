"""TSV manifests: header `utt_id<TAB>speaker<TAB>path<TAB>text`, one utterance a line.

This is the format of ../shared/corpora/*/transcripts.tsv. `path` is relative to the TSV's
folder (absolute paths are taken as they are). Speakers `unknown`, `-` or empty mean the
corpus does not label them: each such utterance becomes its own speaker. Utterance ids are
prefixed with the speaker (`<speaker>-<utt_id>`) unless they already start with it, the
Kaldi convention that keeps utt2spk and spk2utt in the same order.
"""
from __future__ import annotations

import os
from pathlib import Path

import click

from kocall.corpora import check_unique, normalized_or_fail, speaker_prefixed
from kocall.datadir import Utterance
from kocall.errors import AudioError, DataError, where
from kocall.fileio import read_text
from kocall.text_norm import normalize_text

HEADER = ["utt_id", "speaker", "path", "text"]
UNLABELLED_SPEAKERS = {"", "-", "unknown"}


def read_tsv_manifest(path: str | os.PathLike, punct: str = "strip") -> list[Utterance]:
    """Read a manifest into utterances with normalised text (durations are filled in later).
    An empty transcript is an error naming the utterance and file."""
    return read_tsv_rows(path, punct, drop_empty=False)[0]


def read_tsv_rows(path: str | os.PathLike, punct: str = "strip",
                  drop_empty: bool = False) -> tuple[list[Utterance], int]:
    """(utterances, number dropped). With drop_empty, an utterance whose transcript normalises to
    nothing is dropped with a warning naming it (real corpora hold a few); otherwise it is an error."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest '{path}' is missing")
    # Windows line ends (CRLF, as spreadsheets save TSV) are accepted: "\r" is not part of a field.
    lines = [line.removesuffix("\r") for line in read_text(path, "manifest").split("\n")]
    if not lines or lines[0].split("\t") != HEADER:
        got = lines[0][:80] if lines else ""
        raise DataError(f"file '{path}': first line must be the header {' | '.join(HEADER)} (tab-separated), "
                        f"not {got!r}")
    utts = []
    dropped = 0
    for lineno, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 4:
            raise DataError(f"file '{path}' line {lineno}: expected 4 tab-separated fields, got {len(fields)}")
        name, speaker, rel, text = (f.strip() for f in fields)
        speaker = name if speaker.lower() in UNLABELLED_SPEAKERS else speaker
        utt_id = speaker_prefixed(speaker, name)
        wav = (path.parent / rel).resolve()
        if not wav.is_file():
            raise AudioError(f"{where(utt_id, str(wav))}: audio file is missing (line {lineno} of '{path}')")
        if drop_empty and not normalize_text(text, punct):
            click.echo(f"warning: {where(utt_id, str(path))}: transcript {text!r} is empty after "
                       "normalisation; dropped", err=True)
            dropped += 1
            continue
        text = normalized_or_fail(utt_id, path, text, punct)
        utts.append(Utterance(utt_id=utt_id, speaker=speaker, wav=str(wav), text=text))
    if not utts:
        raise DataError(f"file '{path}': no usable utterances")
    check_unique(utts, path)
    return utts, dropped
