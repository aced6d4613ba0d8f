"""Kaldi data directories: wav.scp, text, utt2spk, spk2utt, utt2dur (+ feats.scp).

`write_data_dir` is the single writer every corpus preparer uses; `validate_data_dir`
is what utils/validate_data_dir.sh runs. Both enforce the same invariants:
sorted ids, no duplicates, no empty transcripts, the same utterance set in every file,
and spk2utt that is exactly the inverse of utt2spk.
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from kocall.errors import DataError
from kocall.fileio import atomic_dir, check_output_dir, read_table, read_text, write_table

REQUIRED_FILES = ("wav.scp", "text", "utt2spk", "spk2utt")


@dataclass
class Utterance:
    utt_id: str
    speaker: str
    wav: str          # wav.scp value: a path, a .pcm path, or a pipe ending in '|'
    text: str
    duration: float | None = None


@dataclass
class DataDir:
    path: Path
    wav: dict[str, str]
    text: dict[str, str]
    utt2spk: dict[str, str]
    utt2dur: dict[str, float] = field(default_factory=dict)

    @property
    def utt_ids(self) -> list[str]:
        return sorted(self.wav, key=lambda u: u.encode("utf-8"))

    def spk2utt(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = defaultdict(list)
        for utt in self.utt_ids:
            result[self.utt2spk[utt]].append(utt)
        return dict(result)

    def utterances(self) -> list[Utterance]:
        return [Utterance(u, self.utt2spk[u], self.wav[u], self.text[u], self.utt2dur.get(u))
                for u in self.utt_ids]


def utt_id_for_file(path: str | os.PathLike) -> str:
    """The utterance id of a file given by name (`kocall decode a.wav`, `kocall fbank`): its stem,
    white space turned into `_`, since a Kaldi id cannot hold any ("call 1.wav" -> "call_1")."""
    return "_".join(Path(path).stem.split()) or "_"


def _check_id(utt_id: str, path: str) -> None:
    if not utt_id or any(ch.isspace() for ch in utt_id):
        raise DataError(f"utterance '{utt_id}' (file '{path}'): ids must be non-empty with no white space")


def check_audio_outside(path: str | os.PathLike, utterances: list[Utterance]) -> None:
    """A data dir is replaced as a whole: audio inside it would be lost (e.g. DATA = the corpus)."""
    prefix = os.path.abspath(path) + os.sep
    inside = [u for u in utterances if os.path.abspath(u.wav.strip()).startswith(prefix)]
    check_output_dir(path, {f"audio of utterance '{u.utt_id}'": u.wav for u in inside[:1]})


def write_data_dir(path: str | os.PathLike, utterances: list[Utterance]) -> DataDir:
    """Validate and atomically write a whole data directory (the dir appears complete or not at all)."""
    path = Path(path)
    seen: dict[str, Utterance] = {}
    for utt in utterances:
        _check_id(utt.utt_id, utt.wav)
        _check_id(utt.speaker, utt.wav)
        if utt.utt_id in seen:
            raise DataError(f"utterance '{utt.utt_id}' (file '{utt.wav}'): duplicate id "
                            f"(also '{seen[utt.utt_id].wav}')")
        if not utt.text.strip():
            raise DataError(f"utterance '{utt.utt_id}' (file '{utt.wav}'): empty transcript")
        seen[utt.utt_id] = utt
    if not seen:
        raise DataError(f"data dir '{path}': no utterances to write")
    data = DataDir(path=path,
                   wav={u.utt_id: u.wav for u in utterances},
                   text={u.utt_id: " ".join(u.text.split()) for u in utterances},
                   utt2spk={u.utt_id: u.speaker for u in utterances},
                   utt2dur={u.utt_id: u.duration for u in utterances if u.duration is not None})
    check_audio_outside(path, utterances)
    with atomic_dir(path) as tmp:
        write_table(tmp / "wav.scp", data.wav)
        write_table(tmp / "text", data.text)
        write_table(tmp / "utt2spk", data.utt2spk)
        write_table(tmp / "spk2utt", {s: " ".join(us) for s, us in data.spk2utt().items()})
        if data.utt2dur:
            write_table(tmp / "utt2dur", {u: f"{d:.3f}" for u, d in data.utt2dur.items()})
    return data


def load_data_dir(path: str | os.PathLike) -> DataDir:
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"data dir '{path}' does not exist")
    for name in REQUIRED_FILES:
        if not (path / name).is_file():
            raise DataError(f"data dir '{path}': file '{path / name}' is missing")
    wav = read_table(path / "wav.scp")
    text = read_table(path / "text", allow_empty_value=True)
    utt2spk = read_table(path / "utt2spk")
    utt2dur: dict[str, float] = {}
    if (path / "utt2dur").is_file():
        for utt, value in read_table(path / "utt2dur").items():
            try:
                utt2dur[utt] = float(value)
            except ValueError:
                raise DataError(f"utterance '{utt}' (file '{path / 'utt2dur'}'): bad duration '{value}'") from None
    return DataDir(path=path, wav=wav, text=text, utt2spk=utt2spk, utt2dur=utt2dur)


def _check_sorted(file: Path) -> None:
    keys = [line.split(None, 1)[0].encode("utf-8") for line in read_text(file).split("\n") if line.strip()]
    for prev, cur in zip(keys, keys[1:]):
        if cur < prev:
            raise DataError(f"utterance '{cur.decode()}' (file '{file}'): file is not sorted "
                            f"('{cur.decode()}' after '{prev.decode()}'); run utils/fix_data_dir.sh")


def validate_data_dir(path: str | os.PathLike, check_audio: bool = False) -> DataDir:
    """Raise DataError naming the first offending utterance and file; return the loaded dir."""
    data = load_data_dir(path)
    root = data.path
    for name in REQUIRED_FILES + ("utt2dur", "feats.scp"):
        if (root / name).is_file():
            _check_sorted(root / name)
    utts = set(data.wav)
    for name, table in (("text", data.text), ("utt2spk", data.utt2spk)):
        for utt in sorted(utts - set(table)):
            raise DataError(f"utterance '{utt}' (file '{root / name}'): in wav.scp but missing here")
        for utt in sorted(set(table) - utts):
            raise DataError(f"utterance '{utt}' (file '{root / name}'): not in wav.scp")
    for utt, text in data.text.items():
        if not text.strip():
            raise DataError(f"utterance '{utt}' (file '{root / 'text'}'): empty transcript")
    spk2utt = read_table(root / "spk2utt")
    expected = {s: " ".join(us) for s, us in data.spk2utt().items()}
    if spk2utt != expected:
        bad = sorted(set(spk2utt.items()) ^ set(expected.items()))[0][0]
        raise DataError(f"utterance list of speaker '{bad}' (file '{root / 'spk2utt'}'): "
                        "spk2utt is not the inverse of utt2spk; run utils/fix_data_dir.sh")
    if data.utt2dur and set(data.utt2dur) != utts:
        utt = sorted(set(data.utt2dur) ^ utts)[0]
        raise DataError(f"utterance '{utt}' (file '{root / 'utt2dur'}'): utt2dur and wav.scp disagree")
    if check_audio:
        from kocall.audio import load_audio

        for utt in data.utt_ids:
            load_audio(data.wav[utt], utt)
    return data
