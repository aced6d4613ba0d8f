"""Corpus readers: hackathon layout, ClovaCall JSON, KsponSpeech cleaning, TSV manifests,
Kaldi dirs, the speaker split, and `kocall prep` / local/prepare_corpus.sh end to end."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from kocall.audio import write_wav
from kocall.corpora import audio_duration
from kocall.corpora.clovacall import read_clovacall
from kocall.corpora.hackathon import read_hackathon, read_label_map
from kocall.corpora.kaldi_dir import fix_data_dir, read_kaldi_dir
from kocall.corpora.kspon import clean_kspon_text, read_kspon
from kocall.corpora.splits import split_by_speaker
from kocall.corpora.tsv import read_tsv_manifest
from kocall.datadir import Utterance, load_data_dir, validate_data_dir
from kocall.errors import AudioError, DataError
from kocall.fileio import read_table
from tests.conftest import tone

ROOT = Path(__file__).resolve().parent.parent

# id 0 padding, a literal-space entry, <s>/</s>, punctuation and a Latin letter.
LABELS = "#id\tchar\tfreq\n0\t_\t0\n1\t \t50\n2\t명\t3\n3\t동\t3\n4\t역\t3\n5\t몇\t2\n6\t번\t2\n" \
         "7\t?\t1\n8\t<s>\t0\n9\t</s>\t0\n10\tk\t1\n11\t네\t4\n12\t3\t1\n"


def make_hackathon(root: Path, splits: dict[str, dict[str, str]], speakers: dict[str, dict[str, str]] | None = None,
                   labels: str = LABELS) -> Path:
    """A hackathon-format corpus: splits = {split: {wav name: label indices}}."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "hackathon.labels").write_text(labels, encoding="utf-8")
    for n_split, (split, items) in enumerate(splits.items()):
        data = root / split / f"{split}_data"
        data.mkdir(parents=True)
        (data / "data_list.csv").write_text("".join(f"{w}.wav,{w}.label\n" for w in items))
        (root / split / f"{split}_label").write_text("".join(f"{w},{ids}\n" for w, ids in items.items()))
        for i, name in enumerate(items):
            write_wav(data / f"{name}.wav", tone(0.25 + 0.05 * i, seed=n_split * 10 + i), 16000)
        if speakers and split in speakers:
            (data / "utt2spk").write_text("".join(f"{w} {s}\n" for w, s in speakers[split].items()))
    return root


def test_label_map_space_markers_padding(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_text(LABELS + "13\t<space>\t9\n", encoding="utf-8")
    labels = read_label_map(path)
    assert labels[0] == "" and labels[8] == "" and labels[9] == ""   # padding, <s>, </s> dropped
    assert labels[1] == " " and labels[13] == " "                    # literal space and <space>
    assert labels[2] == "명" and labels[7] == "?"


def test_hackathon_to_data_dir(tmp_path: Path) -> None:
    # 명동역 몇 번? with <s> ... </s> and padding; "k 3번" exercises Latin + digit + counter
    corpus = make_hackathon(tmp_path / "c", {
        "train": {"wav_001": "8 2 3 4 1 5 1 6 7 9 0 0", "wav_002": "11", "wav_003": "10 1 12 6",
                  "wav_004": "11 1 11"},
        "test": {"wav_001": "5 1 6"},
    }, speakers={"train": {"wav_001": "spkA", "wav_002": "spkA", "wav_003": "spkB", "wav_004": "spkC"}})
    sets = read_hackathon(corpus)
    assert sorted(sets) == ["test", "train"]
    train = {u.utt_id: u for u in sets["train"]}
    assert sorted(train) == ["spkA-train_wav_001", "spkA-train_wav_002", "spkB-train_wav_003", "spkC-train_wav_004"]
    assert train["spkA-train_wav_001"].text == "명동역 몇 번"         # space where index 1 stood
    assert train["spkB-train_wav_003"].text == "K 삼 번"
    assert sets["test"][0].utt_id == "test_wav_001" and sets["test"][0].speaker == "test_wav_001"
    # keep-final keeps the question mark, attached
    keep = {u.utt_id: u.text for u in read_hackathon(corpus, punct="keep-final")["train"]}
    assert keep["spkA-train_wav_001"] == "명동역 몇 번?"

    out = tmp_path / "data"
    result = CliRunner().invoke(_prep(), ["hackathon", str(corpus), "--out", str(out), "--dev-fraction", "0.3"])
    assert result.exit_code == 0, result.output
    assert (out / "test_sets").read_text() == "test\n"
    assert (out / "local" / "lm_text.txt").read_text() == ""
    train_dir, dev_dir = validate_data_dir(out / "train"), validate_data_dir(out / "dev")
    assert len(train_dir.wav) + len(dev_dir.wav) == 4
    assert not set(train_dir.utt2spk.values()) & set(dev_dir.utt2spk.values())   # held-out speakers
    assert read_table(out / "train" / "text", allow_empty_value=True).get("spkA-train_wav_001",
                                                                          "명동역 몇 번") == "명동역 몇 번"
    durations = {**train_dir.utt2dur, **dev_dir.utt2dur}
    assert durations["spkA-train_wav_001"] == pytest.approx(0.25)
    assert durations["spkC-train_wav_004"] == pytest.approx(0.40)


def _prep():
    from kocall.corpora.cli import prep_cmd
    return prep_cmd


def test_hackathon_lm_text_and_dev_split(tmp_path: Path) -> None:
    corpus = make_hackathon(tmp_path / "c", {"train": {"a": "11", "b": "2 3"}, "dev": {"c": "4"}})
    (corpus / "lm_text.txt").write_text("3번 출구요!\n\n😀\n", encoding="utf-8")
    out = tmp_path / "data"
    result = CliRunner().invoke(_prep(), ["hackathon", str(corpus), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "local" / "lm_text.txt").read_text(encoding="utf-8") == "삼 번 출구요\n"
    assert list(load_data_dir(out / "dev").text.values()) == ["역"]   # the corpus's own dev is used
    assert (out / "test_sets").read_text() == ""


@pytest.mark.parametrize("problem", ["unknown_index", "missing_wav", "corrupt_wav", "duplicate", "empty"])
def test_hackathon_errors_name_utterance_and_file(tmp_path: Path, problem: str) -> None:
    corpus = make_hackathon(tmp_path / "c", {"train": {"wav_001": "2 3", "wav_002": "11"}})
    data = corpus / "train" / "train_data"
    if problem == "unknown_index":
        (corpus / "train" / "train_label").write_text("wav_001,2 3\nwav_002,11 999\n")
        expect = ["'train_wav_002'", "train_label", "999", "hackathon.labels"]
    elif problem == "missing_wav":
        (data / "wav_002.wav").unlink()
        expect = ["'train_wav_002'", str(data / "wav_002.wav"), "missing"]
    elif problem == "corrupt_wav":
        (data / "wav_002.wav").write_bytes(b"RIFF\x00\x00\x00\x00garbage-not-a-wave-file")
        expect = ["'train_wav_002'", "wav_002.wav", "corrupt"]
    elif problem == "duplicate":
        (data / "data_list.csv").write_text("wav_001.wav,wav_001.label\nwav_001.wav,wav_002.label\n")
        expect = ["'train_wav_001'", "data_list.csv", "duplicate"]
    else:
        (corpus / "train" / "train_label").write_text("wav_001,2 3\nwav_002,8 0 9\n")
        expect = ["'train_wav_002'", "train_label", "empty"]
    result = CliRunner().invoke(_prep(), ["hackathon", str(corpus), "--out", str(tmp_path / "data")])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    for piece in expect:
        assert piece in result.output, (piece, result.output)
    assert not (tmp_path / "data" / "train").exists()


def test_audio_duration_errors(tmp_path: Path) -> None:
    bad = tmp_path / "x.wav"
    bad.write_bytes(b"not audio at all" * 10)
    with pytest.raises(AudioError, match=r"utterance 'u1' file '.*x\.wav': unreadable or corrupt"):
        audio_duration("u1", str(bad))
    pcm = tmp_path / "y.pcm"
    pcm.write_bytes(b"\x00\x01" * 16000)
    assert audio_duration("u2", str(pcm)) == pytest.approx(1.0)


def test_split_by_speaker_deterministic() -> None:
    utts = [Utterance(f"s{i % 7}-u{i}", f"s{i % 7}", f"/x/{i}.wav", "네") for i in range(70)]
    train, dev = split_by_speaker(utts, 0.2, seed=3)
    again_train, again_dev = split_by_speaker(list(reversed(utts)), 0.2, seed=3)
    assert {u.utt_id for u in dev} == {u.utt_id for u in again_dev}
    assert len(dev) == 20 and len(train) == 50          # whole speakers of 10: two of seven
    assert not {u.speaker for u in train} & {u.speaker for u in dev}
    with pytest.raises(DataError, match="only 1 speaker"):
        split_by_speaker(utts[:1], 0.2, seed=1)


@pytest.mark.parametrize("raw, spelling, pronunciation", [
    ("b/ 아/ 모+ 몬 소리야 (70%)/(칠십 퍼센트) 확률이라니 n/",
     "모 몬 소리야 70% 확률이라니", "모 몬 소리야 칠십 퍼센트 확률이라니"),
    ("o/ 그래서 음/ 지호랑 (3G)/(쓰리 쥐)* 봤어 l/", "그래서 지호랑 3G 봤어", "그래서 지호랑 쓰리 쥐 봤어"),
    ("u/ b/", "", ""),
    ("어/ 그+ 그 집 u/ 맞아?", "그 그 집 맞아?", "그 그 집 맞아?"),
])
def test_kspon_cleaning(raw: str, spelling: str, pronunciation: str) -> None:
    assert clean_kspon_text(raw) == spelling
    assert clean_kspon_text(raw, side="pronunciation") == pronunciation


def test_read_kspon_tree(tmp_path: Path) -> None:
    def add(rel: str, text: str) -> None:
        pcm = tmp_path / rel
        pcm.parent.mkdir(parents=True, exist_ok=True)
        pcm.write_bytes(b"\x00\x00" * 8000)
        pcm.with_suffix(".txt").write_bytes(text.encode("cp949"))
    add("KsponSpeech_01/KsponSpeech_0001/KsponSpeech_000001.pcm", "b/ 아/ 3명이요 n/\n")
    add("KsponSpeech_01/KsponSpeech_0001/KsponSpeech_000002.pcm", "b/ n/\n")
    add("KsponSpeech_eval/eval_clean/KsponSpeech_E00001.pcm", "(2시)/(두 시)에 봐\n")
    sets = read_kspon(tmp_path)
    assert [u.text for u in sets["train"]] == ["세 명이요"]       # the noise-only line is skipped
    assert [(u.utt_id, u.text) for u in sets["eval_clean"]] == [("KsponSpeech_E00001", "두 시에 봐")]


def test_clovacall_json(tmp_path: Path) -> None:
    write_wav(tmp_path / "wavs" / "42_0001.wav", tone(0.3), 16000)
    write_wav(tmp_path / "wavs" / "42_0002.wav", tone(0.3), 16000)
    manifest = tmp_path / "train_ClovaCall.json"
    manifest.write_text(json.dumps([{"wav": "42_0001.wav", "text": "예약 2명 가능한가요?", "speaker_id": "42"},
                                    {"wav": "42_0002.wav", "text": "네.", "speaker_id": "42"}],
                                   ensure_ascii=False), encoding="utf-8")
    utts = read_clovacall(manifest, tmp_path / "wavs")
    assert [(u.utt_id, u.speaker, u.text) for u in utts] == [("42-42_0001", "42", "예약 두 명 가능한가요"),
                                                              ("42-42_0002", "42", "네")]
    with pytest.raises(AudioError, match=r"utterance '42-42_0001' file '.*42_0001\.wav': audio file is missing"):
        read_clovacall(manifest)   # default wav dir: the JSON's folder, where the audio is not


def test_tsv_manifest_and_kaldi_import(tmp_path: Path) -> None:
    write_wav(tmp_path / "audio" / "a.wav", tone(0.3), 16000)
    write_wav(tmp_path / "audio" / "b.wav", tone(0.3), 16000)
    tsv = tmp_path / "transcripts.tsv"
    tsv.write_text("utt_id\tspeaker\tpath\ttext\nu1\tspk1\taudio/a.wav\t안녕하세요, 고객님.\n"
                   "u2\tunknown\taudio/b.wav\tKT 5G 요금제\n", encoding="utf-8")
    utts = read_tsv_manifest(tsv)
    assert [(u.utt_id, u.speaker, u.text) for u in utts] == [("spk1-u1", "spk1", "안녕하세요 고객님"),
                                                              ("u2", "u2", "KT 오G 요금제")]
    assert Path(utts[0].wav) == (tmp_path / "audio" / "a.wav").resolve()
    tsv.write_text("utt_id\tspeaker\tpath\ttext\nu1\tspk1\taudio/a.wav\t?!\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"utterance 'spk1-u1' file '.*transcripts\.tsv'.*empty after"):
        read_tsv_manifest(tsv)

    # Kaldi import: raw text in, normalised text out
    from kocall.datadir import write_data_dir
    src = tmp_path / "kaldi" / "train"
    write_data_dir(src, [Utterance("s1-a", "s1", str(tmp_path / "audio" / "a.wav"), "1시에 와요.")])
    assert [u.text for u in read_kaldi_dir(src)] == ["한 시에 와요"]


def test_fix_data_dir(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "wav.scp").write_text("s2-b b.wav\ns1-a a.wav\ns1-c c.wav\n")
    (d / "text").write_text("s1-a 네\ns2-b 아니요\ns1-c\ns9-z 없음\n")
    (d / "utt2spk").write_text("s2-b s2\ns1-a s1\ns1-c s1\n")
    (d / "spk2utt").write_text("junk\n")
    kept, removed = fix_data_dir(d)
    assert (kept, removed) == (2, 2)      # s1-c has an empty transcript, s9-z has no audio
    assert (d / "wav.scp").read_text() == "s1-a a.wav\ns2-b b.wav\n"
    assert (d / "spk2utt").read_text() == "s1 s1-a\ns2 s2-b\n"
    validate_data_dir(d)


def test_prepare_corpus_script(tmp_path: Path) -> None:
    corpus = make_hackathon(tmp_path / "c", {"train": {"a": "11", "b": "2 3"}, "dev": {"c": "4"},
                                             "test": {"d": "5"}})
    data = tmp_path / "data"
    proc = subprocess.run([str(ROOT / "local" / "prepare_corpus.sh"), "--corpus", "synth", "--punct", "keep-final",
                           str(corpus), str(data)], capture_output=True, text=True,
                          env=dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(": OK (") == 3            # train, dev, test validated
    assert load_data_dir(data / "test").text == {"test_d": "몇"}
    bad = subprocess.run([str(ROOT / "local" / "prepare_corpus.sh"), "--corpus", "nope", str(corpus), str(data)],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown corpus 'nope'" in bad.stderr


def test_shared_emotiontts_manifest(shared_corpora_dir: Path) -> None:
    tsv = shared_corpora_dir / "emotiontts_ko" / "transcripts.tsv"
    if not tsv.is_file():
        pytest.skip(f"{tsv} not present")
    utts = read_tsv_manifest(tsv)
    assert len(utts) == 1328                                   # ../shared/corpora/README.md's count
    assert len({u.speaker for u in utts}) == 41
    assert all(u.text and not any(ch.isdigit() for ch in u.text) for u in utts)
    assert all(u.utt_id.startswith(u.speaker) for u in utts)
