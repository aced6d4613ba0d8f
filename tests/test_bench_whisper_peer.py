"""bench/bench_whisper_peer.py without Whisper itself: the peer's text is normalised and scored
like the references, it gets 16 kHz float audio and the benchmark's options (PEER_OPTIONS: beam
5, Korean, no VAD), its results are cached and reused only while the audio and settings are
unchanged, and our model's rows are the report's recogniser scored on the same set, with ratios
to the peer's figures."""
from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kocall import export as ex
from kocall import report as rp
from kocall.audio import write_wav
from kocall.datadir import Utterance, write_data_dir
from kocall.scoring import score_texts
from tests.conftest import tone
from tests.test_export import N_MELS, write_float_dir
from tests.test_report import write_arpa

ROOT = Path(__file__).resolve().parent.parent
SR = 8000  # the peer must get it resampled to 16 kHz


@pytest.fixture(scope="module")
def bw():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        yield importlib.import_module("bench_whisper_peer")
    finally:
        sys.path.remove(str(ROOT / "bench"))


class FakeWhisper:
    """Stands in for faster_whisper.WhisperModel: answers with Whisper-style text (digits,
    punctuation) and records what it was given."""

    def __init__(self, answers: dict[int, str]) -> None:
        self.answers = answers        # audio length in samples -> text
        self.calls: list[tuple[np.ndarray, dict]] = []

    def transcribe(self, audio: np.ndarray, **options):
        self.calls.append((audio, options))
        segments = [SimpleNamespace(text=" " + part) for part in self.answers[audio.size].split("|")]
        return iter(segments), None


@pytest.fixture
def tiny(tmp_path: Path, bw, monkeypatch) -> dict:
    seconds = [0.6, 0.8, 1.0]
    utts = []
    for i, sec in enumerate(seconds):
        wav = tmp_path / "wav" / f"u{i}.wav"
        write_wav(wav, tone(sec, SR, 300 + 100 * i, seed=i), SR)
        utts.append(Utterance(f"spk-u{i}", "spk", str(wav), ["삼 번 출구로 가세요", "오천 원 입니다", "네 알겠습니다"][i]))
    write_data_dir(tmp_path / "data" / "test", utts)
    # Whisper's own writing of the same sentences: digits, a counter attached, final punctuation,
    # the third one split over two segments and one syllable wrong.
    answers = {int(sec * 16000): text for sec, text in zip(seconds, ["3번 출구로 가세요.", "5000원 입니다!", "네,|알겠어요"])}
    fakes: list[FakeWhisper] = []

    def load_peer(model_dir: Path, threads: int) -> FakeWhisper:
        fakes.append(FakeWhisper(answers))
        return fakes[-1]

    peer_dir = tmp_path / "peer"
    peer_dir.mkdir()
    (peer_dir / "model.bin").write_bytes(b"\0" * 2_500_000)
    (peer_dir / "config.json").write_text("{}")
    monkeypatch.setattr(bw, "load_peer", load_peer)
    monkeypatch.setattr(bw, "CACHE_DIR", tmp_path / "cache")
    args = SimpleNamespace(data=str(tmp_path / "data"), peer_model=peer_dir, max_utts=0, threads=[1, 2],
                           peer_warmup=1, punct="auto", reuse_peer=False)
    return {"root": tmp_path, "args": args, "fakes": fakes, "refs": {u.utt_id: u.text for u in utts}}


def test_peer_text_is_normalised_like_the_references(bw) -> None:
    refs = {"a": "삼 번 출구로 가세요"}
    assert bw.punct_mode(refs, "auto") == "strip"
    assert bw.punct_mode({"a": "네 알겠습니다?"}, "auto") == "keep-final"
    assert bw.punct_mode(refs, "keep-final") == "keep-final"
    hyps = bw.normalise_hyps({"a": "3번 출구로 가세요."}, "strip")
    assert hyps == {"a": "삼 번 출구로 가세요"}
    assert score_texts(refs, hyps).crr == 100.0
    assert bw.normalise_hyps({"a": "3번 출구로 가세요."}, "keep-final") == {"a": "삼 번 출구로 가세요."}


def test_peer_row_decodes_scores_and_caches(bw, tiny) -> None:
    args, fakes = tiny["args"], tiny["fakes"]
    row = bw.peer_row(args, "test", tiny["refs"])
    assert len(fakes) == 2  # one model per thread count
    for fake in fakes:
        # 1 warm-up call, then the 3 utterances; 16 kHz float audio in [-1, 1] and the peer's options
        assert [a.size for a, _ in fake.calls] == [9600, 9600, 12800, 16000]
        assert all(np.abs(a).max() <= 1.0 for a, _ in fake.calls)
        assert all(opts == bw.PEER_OPTIONS for _, opts in fake.calls)
    assert bw.PEER_OPTIONS == {"language": "ko", "beam_size": 5, "vad_filter": False, "without_timestamps": True,
                               "condition_on_previous_text": False}
    # "알겠어요" for "알겠습니다": 3 of the 20 reference syllables wrong (2 subs, 1 del); the rest
    # equal after normalisation.
    assert row.crr == pytest.approx(100 * (1 - 3 / 20))
    assert row.utts == 3 and row.audio_seconds == pytest.approx(2.4)
    assert set(row.rtf) == set(row.cpu_rtf) == {1, 2} and all(v > 0 for v in row.rtf.values())
    assert row.size_mb == pytest.approx(2.5) and row.notes["punct"] == "strip"
    cache = tiny["root"] / "cache" / "data" / "test.json"
    entry = json.loads(cache.read_text())
    assert entry["hyps"]["spk-u2"] == "네, 알겠어요"  # raw text kept, normalised when scored
    hyp_txt = (tiny["root"] / "cache" / "data" / "test.hyp.txt").read_text()
    assert "spk-u0 삼 번 출구로 가세요\n" in hyp_txt

    # --reuse-peer with an unchanged key: no decoding, same figures
    args.reuse_peer = True
    again = bw.peer_row(args, "test", tiny["refs"])
    assert len(fakes) == 2 and again.crr == row.crr and again.rtf == row.rtf
    # a thread count the cache lacks, then changed audio: decoded afresh
    args.threads = [1, 3]
    bw.peer_row(args, "test", tiny["refs"])
    assert len(fakes) == 4
    write_wav(tiny["root"] / "wav" / "u0.wav", tone(0.6, SR, 777, seed=9), SR)
    bw.peer_row(args, "test", tiny["refs"])
    assert len(fakes) == 6
    # without --reuse-peer the cache is never read
    args.reuse_peer = False
    bw.peer_row(args, "test", tiny["refs"])
    assert len(fakes) == 8


def test_ours_and_peer_in_one_table(bw, tiny) -> None:
    root = tiny["root"]
    am = root / "exp" / "am"
    src = write_float_dir(am / "final")
    (src / "fbank.yaml").write_text(f"sample_rate: {SR}\nn_mels: {N_MELS}\n")
    ex.export_int8(src, am / "final_int8")
    (am / "decode_dev_beam").mkdir()
    (am / "decode_dev_beam" / "best_weights.json").write_text(json.dumps({"lm_weight": 0.3, "word_bonus": 1.5}))
    lang = root / "data" / "lang_char"
    (lang / "lm").mkdir(parents=True)
    shutil.copy(src / "tokens.txt", lang / "tokens.txt")  # found as the model's lang dir
    symbols = ex.read_tokens(src)
    write_arpa(lang / "lm" / "lm.arpa", [s for s in symbols[1:] if s != "<unk>"])
    out, js = root / "r.md", root / "r.json"
    rc = bw.main(["--data", str(root / "data"), "--sets", "test", "--ours", str(am), "--peer-model",
                  str(tiny["args"].peer_model), "--peer-warmup", "1", "--out", str(out), "--json", str(js)])
    assert rc == 0
    rows = json.loads(js.read_text())
    systems = [r["system"] for r in rows]
    assert systems == ["Whisper base (faster-whisper int8, beam 5)", "ours am/final greedy", "ours am/final beam+LM",
                       "ours am/final_int8 greedy", "ours am/final_int8 beam+LM"]
    # our greedy CRR is the report's recogniser scored on the same set
    rec = rp.make_recognizer(src, "cpu", rp.ReportConfig(data=str(root / "data"), sets=["test"]),
                             rp.beam_weights(src, rp.ReportConfig(data="", sets=[])))
    utts = rp.load_utts(rp.ReportConfig(data=str(root / "data"), sets=["test"]), SR)
    greedy = score_texts(tiny["refs"], {u.utt_id: rec.recognize(u.samples, "greedy") for u in utts}).crr
    assert rows[1]["crr"] == pytest.approx(greedy)
    assert rows[2]["notes"]["beam_weights"]["values"]["lm_weight"] == 0.3
    assert rows[2]["notes"]["lm"] == str(lang / "lm" / "lm.arpa")
    assert rows[1]["size_mb"] == pytest.approx((src / "model.pt").stat().st_size / 1e6)
    table = out.read_text()
    peer_rtf = rows[0]["rtf"]["1"]
    line = next(l for l in table.splitlines() if l.startswith("| ours am/final greedy |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert float(cells[-5]) == pytest.approx(rows[1]["rtf"]["1"] / peer_rtf, abs=1e-3)
    assert float(cells[-3]) == pytest.approx(rows[1]["cpu_rtf"]["1"] / rows[0]["cpu_rtf"]["1"], abs=1e-3)
    assert "| Whisper base (faster-whisper int8, beam 5) | test | 3 |" in table


def test_bad_input_is_one_clear_line(bw, tiny, tmp_path: Path, capsys) -> None:
    data = str(tiny["root"] / "data")
    assert bw.main(["--data", data, "--sets", "test", "--ours", str(tmp_path / "nothing"),
                    "--out", str(tmp_path / "r.md")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing" in err[0] and "model.pt" in err[0]
    assert bw.main(["--data", data, "--sets", "test", "--out", str(tmp_path / "r.md")]) == 1
    assert "--peer-only" in capsys.readouterr().err
    assert bw.main(["--data", data, "--sets", "nope", "--peer-only", "--out", str(tmp_path / "r.md")]) == 1
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()
