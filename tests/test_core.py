"""The shared core: atomic writes, Kaldi tables, audio validation, data dirs, stage hashes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kocall.audio import load_audio, write_wav
from kocall.datadir import Utterance, load_data_dir, validate_data_dir, write_data_dir
from kocall.errors import AudioError, DataError
from kocall.fileio import atomic_dir, atomic_write, read_table, write_table
from kocall.stamp import hash_inputs
from tests.conftest import tone


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("new, half written")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_dir_replaces_whole_dir(tmp_path: Path) -> None:
    target = tmp_path / "d"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "b").write_text("2")
            raise ValueError
    assert sorted(p.name for p in target.iterdir()) == [".kocall-output", "a"]   # kocall's mark: replaceable
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_tables_sorted_and_duplicates_named(tmp_path: Path) -> None:
    write_table(tmp_path / "t", {"b": "2", "a": "1 x"})
    assert (tmp_path / "t").read_text() == "a 1 x\nb 2\n"
    (tmp_path / "dup").write_text("u1 a\nu2 b\nu1 c\n")
    with pytest.raises(DataError, match=r"utterance 'u1'.*dup.*line 3.*duplicate"):
        read_table(tmp_path / "dup")


def _wav(path: Path, seconds: float = 0.5, sr: int = 16000, channels: int = 1) -> Path:
    import soundfile as sf

    data = np.stack([tone(seconds, sr)] * channels, axis=1).astype(np.int16)
    sf.write(path, data, sr, subtype="PCM_16")
    return path


def test_load_audio_round_trip(tmp_path: Path) -> None:
    samples = tone(0.5)
    write_wav(tmp_path / "a.wav", samples, 16000)
    loaded, rate = load_audio(str(tmp_path / "a.wav"), "utt1")
    assert rate == 16000
    np.testing.assert_array_equal(loaded, np.round(samples))


@pytest.mark.parametrize("problem, pattern", [
    ("missing", "missing"), ("empty", "empty"), ("corrupt", "corrupt"),
    ("stereo", "2 channels"), ("truncated", "truncated"), ("rate", "sample rate 8000"),
    ("pipe", "pipe"),
])
def test_bad_audio_is_named(tmp_path: Path, problem: str, pattern: str) -> None:
    path = tmp_path / f"{problem}.wav"
    spec = str(path)
    if problem == "empty":
        path.write_bytes(b"")
    elif problem == "corrupt":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 4)
    elif problem == "stereo":
        _wav(path, channels=2)
    elif problem == "truncated":
        _wav(path)
        path.write_bytes(path.read_bytes()[: 44 + 1000])
    elif problem == "rate":
        _wav(path, sr=8000)
    elif problem == "pipe":
        spec = f"cat {path} |"
    with pytest.raises(AudioError, match=pattern) as info:
        load_audio(spec, "spk1-utt7", expected_sr=16000, allow_pipes=False)
    assert "spk1-utt7" in str(info.value)
    assert path.name in str(info.value)


def test_pipe_runs_when_allowed(tmp_path: Path) -> None:
    path = _wav(tmp_path / "p.wav")
    direct, _ = load_audio(str(path))
    piped, _ = load_audio(f"cat {path} |", allow_pipes=True)
    np.testing.assert_array_equal(direct, piped)


def test_resample_on_request(tmp_path: Path) -> None:
    path = _wav(tmp_path / "r.wav", seconds=1.0, sr=8000)
    samples, rate = load_audio(str(path), expected_sr=16000, resample=True)
    assert rate == 16000 and abs(samples.size - 16000) <= 1


def _utts(tmp_path: Path) -> list[Utterance]:
    wav = str(_wav(tmp_path / "x.wav"))
    return [Utterance("s2-b", "s2", wav, "안녕 하세요", 0.5), Utterance("s1-a", "s1", wav, "네", 0.5),
            Utterance("s1-c", "s1", wav, "명동역  몇 번", 0.5)]


def test_data_dir_round_trip_and_validation(tmp_path: Path) -> None:
    write_data_dir(tmp_path / "d", _utts(tmp_path))
    data = validate_data_dir(tmp_path / "d", check_audio=True)
    assert data.utt_ids == ["s1-a", "s1-c", "s2-b"]
    assert (tmp_path / "d" / "spk2utt").read_text() == "s1 s1-a s1-c\ns2 s2-b\n"
    assert data.text["s1-c"] == "명동역 몇 번"
    # a text file that lost an utterance is caught, naming it and the file
    (tmp_path / "d" / "text").write_text("s1-a 네\ns2-b 안녕 하세요\n")
    with pytest.raises(DataError, match=r"utterance 's1-c'.*text"):
        validate_data_dir(tmp_path / "d")


@pytest.mark.parametrize("mutate, pattern", [
    (lambda u: u + [Utterance("s1-a", "s1", u[0].wav, "또", None)], "duplicate"),
    (lambda u: [Utterance("s1-a", "s1", u[0].wav, "  ", None)], "empty transcript"),
])
def test_write_data_dir_rejects(tmp_path: Path, mutate, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        write_data_dir(tmp_path / "d", mutate(_utts(tmp_path)))
    assert not (tmp_path / "d").exists()


def test_unsorted_file_is_reported(tmp_path: Path) -> None:
    write_data_dir(tmp_path / "d", _utts(tmp_path))
    wav_scp = tmp_path / "d" / "wav.scp"
    wav_scp.write_text("".join(reversed(wav_scp.read_text().splitlines(keepends=True))))
    with pytest.raises(DataError, match="not sorted"):
        validate_data_dir(tmp_path / "d")
    load_data_dir(tmp_path / "d")  # loading alone does not care about order


def test_hash_tracks_content_and_options(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1")
    first = hash_inputs([str(tmp_path)], ["order=6"])
    assert first == hash_inputs([str(tmp_path)], ["order=6"])
    assert first != hash_inputs([str(tmp_path)], ["order=5"])
    (tmp_path / "a").write_text("2")
    assert first != hash_inputs([str(tmp_path)], ["order=6"])
    assert hash_inputs([str(tmp_path / "nope")], []) != hash_inputs([str(tmp_path / "a")], [])
