"""Existing Kaldi data directories: import (validate, re-normalise, copy) and repair.

`read_kaldi_dir` validates a data dir (kocall.datadir.validate_data_dir), re-normalises its
text with this project's policy and returns utterances to be written anew. `fix_data_dir`
is Kaldi's utils/fix_data_dir.sh: sort every table, keep only utterances present in
wav.scp, text (non-empty) and utt2spk (and utt2dur / feats.scp / utt2num_frames when
present), and rebuild spk2utt. It rewrites tables in place (each atomically), so features
and other files in the directory stay.
"""
from __future__ import annotations

import os
from pathlib import Path

from kocall.corpora import normalized_or_fail
from kocall.datadir import REQUIRED_FILES, Utterance, validate_data_dir
from kocall.errors import DataError
from kocall.fileio import read_table, read_text, write_table

OPTIONAL_TABLES = ("utt2dur", "feats.scp", "utt2num_frames", "segments")


def read_kaldi_dir(path: str | os.PathLike, punct: str = "strip") -> list[Utterance]:
    data = validate_data_dir(path)
    text_file = data.path / "text"
    return [Utterance(utt_id=u.utt_id, speaker=u.speaker, wav=u.wav, duration=u.duration,
                      text=normalized_or_fail(u.utt_id, text_file, u.text, punct))
            for u in data.utterances()]


def find_kaldi_sets(root: str | os.PathLike) -> tuple[dict[str, Path], list[str]]:
    """({set name: dir}, test set names) of a data root, or of a single data dir (-> train).

    Test sets are those listed in ROOT/test_sets when it exists, else every set but train/dev.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data directory '{root}' does not exist")
    if (root / "wav.scp").is_file():
        return {"train": root}, []
    sets = {p.name: p for p in sorted(root.iterdir()) if (p / "wav.scp").is_file()}
    if "train" not in sets:
        raise DataError(f"data directory '{root}': no train/wav.scp (and no wav.scp of its own)")
    listed = root / "test_sets"
    if listed.is_file():
        tests = read_text(listed).split()
        for name in tests:
            if name not in sets:
                raise DataError(f"file '{listed}': test set '{name}' has no '{root / name / 'wav.scp'}'")
    else:
        tests = [name for name in sets if name not in ("train", "dev")]
    return sets, tests


def fix_data_dir(path: str | os.PathLike) -> tuple[int, int]:
    """Repair a data dir in place; returns (utterances kept, utterances removed)."""
    path = Path(path)
    for name in ("wav.scp", "text", "utt2spk"):
        if not (path / name).is_file():
            raise DataError(f"data dir '{path}': file '{path / name}' is missing")
    tables = {name: read_table(path / name, allow_empty_value=(name == "text"))
              for name in ("wav.scp", "text", "utt2spk") + OPTIONAL_TABLES
              if (path / name).is_file()}
    if "segments" in tables:
        raise DataError(f"data dir '{path}': segments files are not supported")
    keep = set(tables["wav.scp"])
    for table in tables.values():
        keep &= set(table)
    keep -= {u for u, text in tables["text"].items() if not text.strip()}
    removed = len(set(tables["wav.scp"]) | set(tables["text"]) | set(tables["utt2spk"])) - len(keep)
    for name, table in tables.items():
        write_table(path / name, {u: v for u, v in table.items() if u in keep})
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(keep, key=lambda u: u.encode("utf-8")):
        spk2utt.setdefault(tables["utt2spk"][utt], []).append(utt)
    write_table(path / "spk2utt", {s: " ".join(us) for s, us in spk2utt.items()})
    return len(keep), removed


__all__ = ["read_kaldi_dir", "find_kaldi_sets", "fix_data_dir", "REQUIRED_FILES"]
