"""Naver AI Hackathon 2019 "Speech" layout (also what our synthetic corpus writes).

    <root>/<split>/<split>_data/data_list.csv   lines `wav_001.wav,wav_001.label`
    <root>/<split>/<split>_data/wav_001.wav     audio beside the list
    <root>/<split>/<split>_data/utt2spk         OPTIONAL lines `wav_001 spk07`
    <root>/<split>/<split>_label                lines `wav_001,574 268 662 675 ...`
    <root>/hackathon.labels                     header `#id<TAB>char<TAB>freq`, then one
                                                `id<TAB>char<TAB>freq` line per character

Transcripts are the label indices mapped through hackathon.labels and concatenated. The
space is an entry of its own (its char field is a literal space or `<space>`); id 0 (`_`) is
padding and `<s>`, `</s>` (and any other `<...>` tag) are sequence markers: all are dropped.

Speakers come from the optional utt2spk. Without it every utterance is its own speaker (the
real hackathon names none), and a dev split "by speaker" is then a random utterance split.
Utterance ids are `<speaker>-<split>_<wav name>` (`<split>_<wav name>` without speakers), so
that they sort by speaker as Kaldi wants.

The real hackathon ships only `train`: a dev set is then held out by speaker
(kocall.corpora.splits). Splits other than train, dev and dev_* (extra dev sets) are test sets.
"""
from __future__ import annotations

import os
from pathlib import Path

from kocall.corpora import check_unique, normalized_or_fail, speaker_prefixed
from kocall.datadir import Utterance
from kocall.errors import AudioError, DataError, where
from kocall.fileio import read_text

PADDING_ID = 0
SPACE_NAMES = (" ", "<space>")


def read_label_map(path: str | os.PathLike) -> dict[int, str]:
    """hackathon.labels -> {id: character}; dropped entries (padding, <s>, </s>) map to ''."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"label file '{path}' is missing (pass --label-file)")
    labels: dict[int, str] = {}
    for lineno, raw in enumerate(read_text(path, "label file").split("\n"), 1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        try:
            index = int(fields[0])
        except ValueError:
            raise DataError(f"file '{path}' line {lineno}: expected `id<TAB>char<TAB>freq`, "
                            f"got {line!r}") from None
        if len(fields) < 2 or fields[1] == "":
            raise DataError(f"file '{path}' line {lineno}: label {index} has no character")
        char = fields[1]
        if index in labels:
            raise DataError(f"file '{path}' line {lineno}: label id {index} appears twice")
        if char in SPACE_NAMES:
            labels[index] = " "
        elif index == PADDING_ID or (char.startswith("<") and char.endswith(">") and len(char) > 2):
            labels[index] = ""  # padding and sequence markers never reach a transcript
        else:
            labels[index] = char
    if not labels:
        raise DataError(f"label file '{path}' has no entries")
    return labels


def decode_label(utt_id: str, label_path: Path, indices: str, labels: dict[int, str], label_map: Path) -> str:
    """'574 268 662' -> characters; an unknown index is an error naming utt and files."""
    chars = []
    for token in indices.split():
        try:
            index = int(token)
        except ValueError:
            raise DataError(f"{where(utt_id, str(label_path))}: label {token!r} is not an integer") from None
        if index not in labels:
            raise DataError(f"{where(utt_id, str(label_path))}: label index {index} is not in "
                            f"label file '{label_map}'")
        chars.append(labels[index])
    return "".join(chars)


def _read_split_labels(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise DataError(f"file '{path}' (transcript labels) is missing")
    table: dict[str, str] = {}
    for lineno, raw in enumerate(read_text(path).split("\n"), 1):
        line = raw.strip()
        if not line:
            continue
        key, sep, indices = line.partition(",")
        key = key.strip()  # before the duplicate check: 'a ,1' and 'a,2' are the same utterance
        if not sep or not key:
            raise DataError(f"file '{path}' line {lineno}: expected `name,indices`, got {line!r}")
        if key in table:
            raise DataError(f"utterance '{key}' (file '{path}', line {lineno}): duplicate label line")
        table[key] = indices
    return table


def _read_utt2spk(path: Path) -> dict[str, str]:
    table: dict[str, str] = {}
    if path.is_file():
        for lineno, raw in enumerate(read_text(path).split("\n"), 1):
            fields = raw.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise DataError(f"file '{path}' line {lineno}: expected `wav_name speaker`, got {raw!r}")
            name = Path(fields[0]).stem if fields[0].endswith(".wav") else fields[0]
            if name in table:
                raise DataError(f"utterance '{name}' (file '{path}', line {lineno}): speaker given twice")
            table[name] = fields[1]
    return table


def _read_data_list(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        raise DataError(f"file '{path}' (data list) is missing")
    rows = []
    for lineno, raw in enumerate(read_text(path, "data list").split("\n"), 1):
        line = raw.strip()
        if not line:
            continue
        wav, sep, label = (part.strip() for part in line.partition(","))
        if not sep or "." not in wav:
            if lineno == 1:
                continue  # a header line
            raise DataError(f"file '{path}' line {lineno}: expected `x.wav,x.label`, got {line!r}")
        rows.append((wav, label))
    return rows


def find_splits(root: str | os.PathLike) -> list[str]:
    """Names of the splits under root (dirs with <split>/<split>_data/data_list.csv)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"corpus directory '{root}' does not exist")
    return sorted(p.name for p in root.iterdir() if (p / f"{p.name}_data" / "data_list.csv").is_file())


def read_hackathon_split(root: str | os.PathLike, split: str, labels: dict[int, str], label_map: Path,
                         punct: str = "strip") -> list[Utterance]:
    """One split of a hackathon-format corpus as utterances (normalised text, no durations yet)."""
    root = Path(root)
    data_dir = root / split / f"{split}_data"
    label_path = root / split / f"{split}_label"
    rows = _read_data_list(data_dir / "data_list.csv")
    transcripts = _read_split_labels(label_path)
    speakers = _read_utt2spk(data_dir / "utt2spk")
    utts = []
    for wav_name, label_name in rows:
        stem = Path(wav_name).stem
        key = label_name[:-len(".label")] if label_name.endswith(".label") else label_name
        base = f"{split}_{stem}"
        speaker = speakers.get(stem, base)
        utt_id = speaker_prefixed(speaker, base)
        wav = data_dir / wav_name
        if not wav.is_file():
            raise AudioError(f"{where(utt_id, str(wav))}: audio file is missing")
        if key not in transcripts:
            raise DataError(f"{where(utt_id, str(label_path))}: no label line for '{key}'")
        text = decode_label(utt_id, label_path, transcripts[key], labels, label_map)
        text = normalized_or_fail(utt_id, label_path, text, punct)
        utts.append(Utterance(utt_id=utt_id, speaker=speaker, wav=str(wav.resolve()), text=text))
    check_unique(utts, data_dir / "data_list.csv")
    return utts


def read_hackathon(root: str | os.PathLike, label_file: str | os.PathLike | None = None,
                   punct: str = "strip") -> dict[str, list[Utterance]]:
    """Every split of the corpus: {split name: utterances}."""
    root = Path(root)
    label_map = Path(label_file) if label_file else root / "hackathon.labels"
    labels = read_label_map(label_map)
    splits = find_splits(root)
    if "train" not in splits:
        raise DataError(f"corpus directory '{root}': no train split "
                        f"(expected '{root / 'train' / 'train_data' / 'data_list.csv'}')")
    return {split: read_hackathon_split(root, split, labels, label_map, punct) for split in splits}
