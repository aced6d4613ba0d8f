"""Corpus readers: every supported corpus format -> list[kocall.datadir.Utterance].

Readers: `hackathon` (Naver AI Hackathon 2019 Speech layout; also our synthetic corpus),
`clovacall` (ClovaCall JSON), `kspon` (KsponSpeech .pcm/.txt), `tsv` (utt_id/speaker/path/text
manifests, as ../shared/corpora writes them), `kaldi_dir` (an existing Kaldi data dir).
They all normalise transcripts with kocall.text_norm.normalize_text and fill in durations;
`write_prepared` writes the recipe's `$data` layout.

This module holds the helpers they share: normalising with a clear error, durations, and
the writer of DATA/{train,dev,<test sets>}, DATA/test_sets and DATA/local/lm_text.txt.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import click

from kocall.progress import progress_bar

from kocall.datadir import Utterance, write_data_dir
from kocall.errors import AudioError, DataError, where
from kocall.fileio import atomic_write, read_text
from kocall.text_norm import normalize_text

PCM_BYTES_PER_SECOND = 32000  # s16le mono 16 kHz


def normalized_or_fail(utt_id: str, source: str | os.PathLike, text: str, punct: str) -> str:
    """normalize_text, but an empty result is an error naming the utterance and file."""
    normalized = normalize_text(text, punct)
    if not normalized:
        raise DataError(f"{where(utt_id, str(source))}: transcript {text!r} is empty after normalisation")
    return normalized


def audio_duration(utt_id: str, spec: str) -> float:
    """Seconds of audio from the header (soundfile.info), or size/32000 for raw .pcm.

    Reads headers only, so preparing a large corpus stays fast; features decode the samples
    (with full validation) later.
    """
    if spec.rstrip().endswith("|"):
        from kocall.audio import duration_seconds

        return duration_seconds(spec, utt_id)
    path = Path(spec)
    if not path.is_file():
        raise AudioError(f"{where(utt_id, spec)}: audio file is missing")
    if path.suffix.lower() == ".pcm":
        size = path.stat().st_size
        if size == 0 or size % 2:
            raise AudioError(f"{where(utt_id, spec)}: raw PCM is empty or truncated ({size} bytes)")
        return size / PCM_BYTES_PER_SECOND
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError, ValueError) as exc:
        raise AudioError(f"{where(utt_id, spec)}: unreadable or corrupt audio ({exc})") from None
    from kocall.audio import check_sample_rate

    check_sample_rate(info.samplerate, utt_id, spec)
    if info.channels != 1:
        raise AudioError(f"{where(utt_id, spec)}: {info.channels} channels; kocall expects mono audio")
    if info.frames <= 0:
        raise AudioError(f"{where(utt_id, spec)}: audio has no samples")
    return info.frames / info.samplerate


def add_durations(utts: list[Utterance], desc: str = "durations") -> list[Utterance]:
    """Fill in `duration` of every utterance that lacks one (tqdm progress)."""
    for utt in progress_bar(utts, desc=desc, unit="utt", leave=False, disable=len(utts) < 200):
        if utt.duration is None:
            utt.duration = audio_duration(utt.utt_id, utt.wav)
    return utts


def check_unique(utts: list[Utterance], source: str | os.PathLike) -> None:
    """Duplicate utterance ids are an error naming both sources."""
    seen: dict[str, Utterance] = {}
    for utt in utts:
        if utt.utt_id in seen:
            raise DataError(f"{where(utt.utt_id, str(source))}: duplicate utterance id "
                            f"(audio '{seen[utt.utt_id].wav}' and '{utt.wav}')")
        seen[utt.utt_id] = utt


def speaker_prefixed(speaker: str, name: str) -> str:
    """Kaldi convention: utterance ids start with the speaker, so both sort the same way."""
    return name if name == speaker or name.startswith(speaker + "-") else f"{speaker}-{name}"


def write_prepared(data: str | os.PathLike, sets: dict[str, list[Utterance]], test_sets: list[str],
                   lm_lines: list[str] | None = None) -> None:
    """Write DATA/<set> for every set, DATA/test_sets and DATA/local/lm_text.txt.
    Every set is built in one temp dir first: a failure in any set leaves DATA as it was."""
    from kocall.datadir import check_audio_outside
    from kocall.fileio import staged_dirs

    data = Path(data)
    if "train" not in sets or "dev" not in sets:
        raise DataError(f"data dir '{data}': preparation needs a train and a dev set, got {sorted(sets)}")
    for name in sets:  # set names become directories under DATA: '../x' would write outside it
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
            raise DataError(f"data dir '{data}': set name '{name}' must be letters, digits, '_', '-' or '.'")
    for name, utts in sets.items():  # all audio checked before anything is written
        check_audio_outside(data / name, utts)
        add_durations(utts, desc=f"durations {name}")
    warn_overlap_with_train(data, sets)
    with staged_dirs(data, "prepare") as staging:
        for name, utts in sets.items():
            write_data_dir(staging / name, utts)
    with atomic_write(data / "test_sets") as handle:
        handle.write("".join(f"{name}\n" for name in test_sets))
    with atomic_write(data / "local" / "lm_text.txt") as handle:
        handle.write("".join(f"{line}\n" for line in (lm_lines or [])))


def warn_overlap_with_train(data: Path, sets: dict[str, list[Utterance]]) -> list[str]:
    """One warning line per set that shares utterances with train (the same audio file, or the
    same transcript and duration: a copy), naming both sets and how many; returns the lines.
    A dev or test set drawn from train measures memory, not recognition."""
    def keys(utt: Utterance) -> set:
        return {("wav", str(Path(utt.wav).resolve()) if "|" not in utt.wav else utt.wav),
                ("copy", utt.text, round(float(utt.duration or 0.0), 2))}

    train_keys = set().union(*(keys(u) for u in sets["train"]))
    lines = []
    for name, utts in sets.items():
        if name == "train" or not utts:
            continue
        shared = sum(1 for u in utts if keys(u) & train_keys)
        if shared:
            what = "is identical to" if shared == len(utts) else f"shares {shared} of {len(utts)} utterances with"
            lines.append(f"warning: set '{name}' ({data / name}) {what} train ({data / 'train'}): its figures "
                         "would measure memory, not recognition")
            click.echo(lines[-1], err=True)
    return lines


def read_lm_text(path: str | os.PathLike, punct: str) -> list[str]:
    """Normalise an extra LM text file (one sentence per line); lines that normalise to nothing go."""
    lines = []
    for raw in read_text(path, "LM text").split("\n"):
        line = normalize_text(raw, punct)
        if line:
            lines.append(line)
    return lines
