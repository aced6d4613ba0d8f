"""`--corpus shared-ko` (local/shared_ko/prepare.sh, kocall.corpora.shared_ko): the speaker split,
the telephone channel, the LM text and the failure on a missing corpus.

The end-to-end tests run on ../shared (skipped with a message where it is absent) with a few
utterances per corpus; the rest run on a small corpus made here, so they run everywhere."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import soundfile as sf
from click.testing import CliRunner

from kocall.audio import write_wav
from kocall.corpora import read_lm_text
from kocall.corpora.shared_ko import (CORPORA, _render_one, limit_per_corpus, lm_sentences,
                                      pick_heldout_speakers, read_corpus, split_sets, text_key)
from kocall.datadir import Utterance, load_data_dir, validate_data_dir
from kocall.errors import DataError
from kocall.telephone import energy_above
from kocall.text_norm import normalize_text
from tests.conftest import tone

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "local" / "shared_ko" / "prepare.sh"
HELD_SETS = ("dev", "test_heldout", "test_kspon")
MAX_UTTS = 60   # per corpus: round-robin over speakers, so every emotiontts speaker is present


def _env() -> dict[str, str]:
    return dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}")


def _run_script(corpus_dir: Path, data: Path, audio: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), "--audio-dir", str(audio), *options, str(corpus_dir), str(data)],
                          capture_output=True, text=True, env=_env())


@pytest.fixture(scope="module")
def _cache() -> dict:
    return {}


@pytest.fixture
def prepared(shared_corpora_dir: Path, shared_text_dir: Path, tmp_path_factory: pytest.TempPathFactory,
             _cache: dict) -> dict:
    """One small run of the script on ../shared per test module: {data, audio, corpus_dir, stdout}."""
    if not _cache:
        root = tmp_path_factory.mktemp("shared_ko")
        corpus_dir = shared_corpora_dir.parent
        proc = _run_script(corpus_dir, root / "data", root / "tel", "--max-utts-per-corpus", str(MAX_UTTS))
        assert proc.returncode == 0, proc.stderr[-2000:]
        _cache.update(data=root / "data", audio=root / "tel", corpus_dir=corpus_dir, stdout=proc.stdout)
    return _cache


# ----------------------------------------------------------------------------- on ../shared

@pytest.mark.shared
def test_split_holds_out_whole_speakers(prepared: dict) -> None:
    data: Path = prepared["data"]
    assert (data / "test_sets").read_text() == "test_heldout\ntest_kspon\n"
    speakers = {name: set(load_data_dir(data / name).utt2spk.values()) for name in ("train", "dev", "test_heldout")}
    assert all(speakers.values())
    assert not speakers["train"] & speakers["dev"]
    assert not speakers["train"] & speakers["test_heldout"]
    assert not speakers["dev"] & speakers["test_heldout"]
    # kspon_sample is only ever test_kspon
    kspon, _ = read_corpus(prepared["corpus_dir"] / "corpora", "kspon_sample", "strip")
    kspon_ids = {u.utt_id for u in kspon}
    test_kspon = load_data_dir(data / "test_kspon")
    assert set(test_kspon.wav) <= kspon_ids and len(test_kspon.wav) == MAX_UTTS
    for name in ("train", "dev", "test_heldout"):
        wavs = load_data_dir(data / name).wav
        assert not set(wavs) & kspon_ids
        assert not any("kspon_sample" in Path(w).parts for w in wavs.values())
    # and no dev/test sentence is trained on
    held = {text_key(t) for name in HELD_SETS for t in load_data_dir(data / name).text.values()}
    assert not {text_key(t) for t in load_data_dir(data / "train").text.values()} & held
    assert "train:" in prepared["stdout"] and " h\n" in prepared["stdout"]   # the stats summary


@pytest.mark.shared
def test_data_dirs_validate_and_point_at_channelled_audio(prepared: dict) -> None:
    audio: Path = prepared["audio"]
    for name in ("train", *HELD_SETS):
        data = validate_data_dir(prepared["data"] / name)
        assert all(Path(w).is_relative_to(audio) and w.endswith(".wav") for w in data.wav.values())
        assert set(data.utt2dur) == set(data.wav)
    train = load_data_dir(prepared["data"] / "train")
    assert {Path(w).relative_to(audio).parts[0] for w in train.wav.values()} == {"emotiontts_ko", "deeply_read_ko"}


@pytest.mark.shared
def test_channelled_train_audio_is_narrowband(prepared: dict) -> None:
    train = load_data_dir(prepared["data"] / "train")
    by_corpus: dict[str, list[str]] = {}
    for utt in train.utt_ids:
        by_corpus.setdefault(Path(train.wav[utt]).relative_to(prepared["audio"]).parts[0], []).append(utt)
    picks = [u for utts in by_corpus.values() for u in utts[:3]]   # 8 kHz and 16 kHz sources
    assert len(picks) == 6
    for utt in picks:
        info = sf.info(train.wav[utt])
        assert (info.samplerate, info.subtype, info.channels) == (16000, "PCM_16", 1)
        samples, _ = sf.read(train.wav[utt], dtype="float32")
        assert energy_above(samples, 16000, 4000.0) < 1e-3, utt


@pytest.mark.shared
def test_channel_is_deterministic_and_reruns_skip(prepared: dict, tmp_path: Path) -> None:
    train = load_data_dir(prepared["data"] / "train")
    deeply = next(u for u in train.utt_ids if "deeply_read_ko" in Path(train.wav[u]).parts)
    src = (prepared["corpus_dir"] / "corpora" / Path(train.wav[deeply]).relative_to(prepared["audio"])).with_suffix(
        ".flac")
    again = tmp_path / "again.wav"
    _render_one((deeply, str(src), str(again), 1, False))     # seed 1, one process (the run used --nj 2)
    assert again.read_bytes() == Path(train.wav[deeply]).read_bytes()
    proc = _run_script(prepared["corpus_dir"], tmp_path / "data", prepared["audio"], "--nj", "1",
                       "--max-utts-per-corpus", str(MAX_UTTS))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "telephone channel: 0 rendered" in proc.stdout
    for name in ("train", *HELD_SETS):
        assert load_data_dir(tmp_path / "data" / name).text == load_data_dir(prepared["data"] / name).text


@pytest.mark.shared
def test_lm_text_has_no_dev_or_test_sentence(prepared: dict) -> None:
    data: Path = prepared["data"]
    lines = (data / "local" / "lm_text.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) > 50000 and len(lines) == len(set(lines))
    held = {text_key(t) for name in HELD_SETS for t in load_data_dir(data / name).text.values()}
    assert not {text_key(line) for line in lines} & held
    assert read_lm_text(data / "local" / "lm_text.txt", "strip") == lines    # already normalised


# ----------------------------------------------------------------------------- everywhere

def make_corpus(root: Path, empty_text: bool = False) -> Path:
    """A CORPUS_DIR in the shared layout: 6 emotiontts speakers (8 kHz), 2 deeply (16 kHz), 2 kspon."""
    specs = {"emotiontts_ko": ([f"s{i}" for i in range(6)], 8000), "deeply_read_ko": (["da", "db"], 16000),
             "kspon_sample": (["unknown"], 16000)}
    for corpus, (speakers, rate) in specs.items():
        rows = ["utt_id\tspeaker\tpath\ttext"]
        for s_i, speaker in enumerate(speakers):
            for k in range(2):
                name = f"{corpus[:2]}{s_i}{k}"
                write_wav(root / "corpora" / corpus / "audio" / f"{name}.wav",
                          tone(0.3, rate, 300 + 100 * s_i, seed=s_i * 2 + k), rate)
                text = f"{corpus[:2]} 문장 {s_i * 2 + k}번입니다." if not (empty_text and name == "em01") else "?!"
                rows.append(f"{name}\t{speaker}\taudio/{name}.wav\t{text}")
        (root / "corpora" / corpus / "transcripts.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (root / "text").mkdir(parents=True)
    (root / "text" / "a.txt").write_text("em 문장 0번입니다!\n안녕하세요.\n안녕하세요\n", encoding="utf-8")
    return root


def test_small_corpus_end_to_end_drops_empty_transcripts(tmp_path: Path) -> None:
    from kocall.corpora.cli import prep_cmd

    corpus = make_corpus(tmp_path / "shared", empty_text=True)
    out = tmp_path / "data"
    result = CliRunner().invoke(prep_cmd, ["shared-ko", str(corpus), "--out", str(out), "--nj", "1",
                                           "--audio-dir", str(tmp_path / "tel"), "--dev-speakers", "1",
                                           "--test-speakers", "1"])
    assert result.exit_code == 0, result.output
    assert "utterance 's0-em01'" in result.output and "transcripts.tsv" in result.output   # the warning
    assert "dropped 1 utterances with an empty normalised transcript" in result.output
    sets = {name: validate_data_dir(out / name, check_audio=True) for name in ("train", *HELD_SETS)}
    assert "s0-em01" not in {u for d in sets.values() for u in d.wav}
    assert len(set(sets["dev"].utt2spk.values())) == 1 and len(set(sets["test_heldout"].utt2spk.values())) == 1
    assert set(sets["train"].utt2spk.values()) >= {"da", "db"}
    assert len(sets["test_kspon"].wav) == 2
    lm = (out / "local" / "lm_text.txt").read_text(encoding="utf-8").splitlines()
    held = {text_key(t) for name in HELD_SETS for t in sets[name].text.values()}
    first = normalize_text("em 문장 0번입니다!")      # emotiontts speaker s0's first sentence
    expected = ["안녕하세요"] + ([] if text_key(first) in held else [first])
    assert sorted(lm) == sorted(expected)


def test_corrupt_audio_fails_naming_utterance_and_file(tmp_path: Path) -> None:
    from kocall.corpora.cli import prep_cmd

    corpus = make_corpus(tmp_path / "shared")
    bad = corpus / "corpora" / "deeply_read_ko" / "audio" / "de10.wav"
    bad.write_bytes(b"RIFF not audio")
    out = tmp_path / "data"
    result = CliRunner().invoke(prep_cmd, ["shared-ko", str(corpus), "--out", str(out), "--nj", "2",
                                           "--audio-dir", str(tmp_path / "tel"), "--dev-speakers", "1",
                                           "--test-speakers", "1"])
    assert result.exit_code == 1
    assert "utterance 'db-de10'" in result.output and str(bad) in result.output, result.output
    assert not out.exists() and not (tmp_path / "tel" / ".done").exists()


@pytest.mark.parametrize("missing", ["corpora", *CORPORA])
def test_missing_folder_fails_naming_it(tmp_path: Path, missing: str) -> None:
    corpus = tmp_path / "shared"
    for name in CORPORA:
        if missing not in ("corpora", name):
            (corpus / "corpora" / name).mkdir(parents=True)
    proc = _run_script(corpus, tmp_path / "data", tmp_path / "tel")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is missing" in lines[0], proc.stderr
    expected = corpus / "corpora" if missing == "corpora" else corpus / "corpora" / missing
    assert f"'{expected}'" in lines[0]
    assert not (tmp_path / "data").exists()


def _utts(spec: dict[str, list[str]]) -> list[Utterance]:
    return [Utterance(f"{spk}-{i}", spk, f"/x/{spk}{i}.wav", text) for spk, texts in spec.items()
            for i, text in enumerate(texts)]


def test_heldout_speakers_prefer_unshared_sentences_and_follow_the_seed() -> None:
    # a..d read one shared script; e..j read their own sentences
    shared = ["가", "나", "다"]
    spec = {s: list(shared) for s in "abcd"} | {s: [f"{s}{k}" for k in "가나다"] for s in "efghij"}
    utts = _utts(spec)
    picks = {seed: pick_heldout_speakers(utts, 2, 2, seed) for seed in range(6)}
    for dev, test in picks.values():
        assert len(dev) == len(test) == 2 and not set(dev) & set(test)
        assert set(dev + test) <= set("efghij")
    assert picks[3] == pick_heldout_speakers(list(reversed(utts)), 2, 2, 3)    # input order does not matter
    assert len({tuple(d + t) for d, t in picks.values()}) > 1                 # the seed matters
    with pytest.raises(DataError, match="too few"):
        pick_heldout_speakers(_utts({"a": ["x"], "b": ["y"]}), 1, 1, 1)


def test_split_drops_train_utterances_sharing_a_heldout_sentence() -> None:
    emotion = _utts({"e": ["하나", "둘"], "f": ["셋"], "g": ["넷"], "h": ["둘", "다섯"]})
    deeply = _utts({"da": ["하 나", "여섯"]})            # '하 나' is '하나' once spaces go
    kspon = _utts({"k1": ["여섯"]})
    sets, held, dropped = split_sets({"emotiontts_ko": emotion, "deeply_read_ko": deeply, "kspon_sample": kspon},
                                     1, 1, seed=1)
    heldout = set(held["dev"]) | set(held["test_heldout"])
    assert len(heldout) == 2 and not heldout & {u.speaker for u in sets["train"]}
    held_keys = {text_key(u.text) for name in HELD_SETS for u in sets[name]}
    assert not held_keys & {text_key(u.text) for u in sets["train"]}
    assert dropped >= 1 and "da-1" not in {u.utt_id for u in sets["train"]}   # 여섯 is a kspon sentence


def test_limit_per_corpus_round_robin() -> None:
    utts = _utts({"a": ["1", "2", "3"], "b": ["4"], "c": ["5", "6"]})
    assert [u.utt_id for u in limit_per_corpus(utts, 4)] == ["a-0", "b-0", "c-0", "a-1"]
    assert limit_per_corpus(utts, 0) == utts


def test_lm_sentences_dedup_and_exclude(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("3번 출구요!\n명동역 몇 번?\n", encoding="utf-8")
    (tmp_path / "a.txt").write_text("명동역 몇 번\n\n😀\n3 번 출구요\n", encoding="utf-8")
    lines, duplicates, excluded = lm_sentences(tmp_path, "strip", {text_key("삼 번 출구요")})
    assert lines == ["명동역 몇 번"] and duplicates == 1 and excluded == 2
