"""CRR/CER/WER scoring (kocall.scoring) on hand-checked pairs; steps/score.sh and RESULTS.md."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from kocall.scoring import score_cmd, score_decodes, score_texts

ROOT = Path(__file__).resolve().parent.parent

REF = {"u1": "명동역 몇 번 출구", "u2": "안녕 하세요", "u3": "네", "u4": "네 맞아요"}
HYP = {"u1": "명동 역 몇 반 출구요", "u2": "안녕하세", "u4": "네 맞아요", "u9": "엑스트라"}
# By hand, spaces removed:
#   u1 명동역몇번출구 (7) vs 명동역몇반출구요: 번->반 (S), +요 (I)        = 2
#   u2 안녕하세요 (5)     vs 안녕하세:       -요 (D)                     = 1
#   u3 네 (1)             missing -> empty:  -네 (D)                     = 1
#   u4 네맞아요 (4)       identical                                      = 0
#   CER = 4 / 17 = 23.5294 %, CRR = 76.4706; S 1 I 1 D 2
# Words: u1 [명동역 몇 번 출구] vs [명동 역 몇 반 출구요]: 명동역->명동 S, +역 I, 번->반 S,
#   출구->출구요 S = 4; u2 [안녕 하세요] vs [안녕하세]: S + D = 2; u3: D = 1; u4: 0
#   WER = 7 / 9 = 77.7778 %.  u9 has no reference: reported, ignored.


def test_hand_checked_pair() -> None:
    result = score_texts(REF, HYP)
    assert (result.char_errors, result.ref_chars) == (4, 17)
    assert result.cer == pytest.approx(100 * 4 / 17)
    assert result.crr == pytest.approx(100 - 100 * 4 / 17)
    assert (result.word_errors, result.ref_words) == (7, 9)
    assert result.wer == pytest.approx(100 * 7 / 9)
    assert (result.subs, result.ins, result.dels) == (1, 1, 2)
    assert result.missing == ["u3"] and result.extra == ["u9"]
    assert result.summary() == "CRR 76.47 | CER 23.53 | WER 77.78 | utts 4 | ref chars 17 | S 1 I 1 D 2"


def test_spaces_do_not_count_and_cer_can_exceed_100() -> None:
    assert score_texts({"a": "가 나 다"}, {"a": "가나다"}).crr == 100.0
    result = score_texts({"a": "네"}, {"a": "네 네 네"})       # 2 insertions over 1 char
    assert result.cer == pytest.approx(200.0) and result.crr == pytest.approx(-100.0)


def test_cli_json_and_alignment(tmp_path: Path) -> None:
    ref, hyp, align = tmp_path / "ref", tmp_path / "hyp", tmp_path / "align.txt"
    ref.write_text("".join(f"{u} {t}\n" for u, t in REF.items()), encoding="utf-8")
    hyp.write_text("".join(f"{u} {t}\n" for u, t in HYP.items()) + "u5\n", encoding="utf-8")
    result = CliRunner().invoke(score_cmd, ["--ref", str(ref), "--hyp", str(hyp), "--json", "--align", str(align)])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["char_errors"] == 4 and payload["missing"] == ["u3"] and payload["extra"] == ["u5", "u9"]
    assert "no hypothesis" in result.stderr and "u3" in result.stderr
    text = align.read_text(encoding="utf-8")
    assert "REF:  명 동 역 몇 번 출 구 *\nHYP:  명 동 역 몇 반 출 구 요\nEVAL:         S     I" in text
    assert "id: (u3)\nScores: (#C #S #D #I) 0 0 1 0\nREF:  네\nHYP:  *\nEVAL: D" in text
    assert "MISSING HYPOTHESES (1, scored as empty): u3" in text


def test_score_sh_writes_results(tmp_path: Path) -> None:
    data, amdir = tmp_path / "data", tmp_path / "exp"
    for name, text in (("dev", "dev1 가나다라\n"), ("dev_other", "do1 마바\n"), ("test", "t1 가나다라마\n")):
        (data / name).mkdir(parents=True)
        (data / name / "text").write_text(text, encoding="utf-8")
    for name, hyp in (("decode_dev_greedy", "dev1 가나다\n"), ("decode_dev_other_beam", "do1 마바\n"),
                      ("decode_test_beam", "t1 가나다라마\n")):
        (amdir / name).mkdir(parents=True)
        (amdir / name / "hyp.txt").write_text(hyp, encoding="utf-8")
    (amdir / "decode_test_beam" / "decode_info.json").write_text(json.dumps(
        {"beam": 8, "lm": "data/lang_char/lm/lm.bin", "lm_weight": 0.5, "word_bonus": 1.0, "decoder": "beam"}))
    rows = score_decodes(amdir, data, ["dev", "dev_other", "test"])
    assert [(r["set"], r["decoder"], round(r["crr"], 2)) for r in rows] == [
        ("dev", "greedy", 75.0), ("dev_other", "beam", 100.0), ("test", "beam", 100.0)]
    results = (amdir / "RESULTS.md").read_text(encoding="utf-8")
    assert "| test | beam | 100.00 | 0.00 | 0.00 | 1 | 8 | data/lang_char/lm/lm.bin | 0.5 | 1 |" in results
    assert "| dev | greedy | 75.00 | 25.00 | 100.00 | 1 | - | - | - | - |" in results
    assert json.loads((amdir / "decode_dev_greedy" / "score.json").read_text())["dels"] == 1
    # the shell entry point does the same and prints the CRRs
    proc = subprocess.run([str(ROOT / "steps" / "score.sh"), str(amdir), str(data), "test"],
                          capture_output=True, text=True,
                          env=dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"))
    assert proc.returncode == 0, proc.stderr
    assert "test" in proc.stdout and "CRR 100.00" in proc.stdout
    bad = subprocess.run([str(ROOT / "steps" / "score.sh"), str(amdir), str(data), "nosuchset"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "no decode_<set>_*/hyp.txt" in bad.stderr


def test_cli_hotword_recall(tmp_path: Path) -> None:
    ref, hyp, hotwords = tmp_path / "ref", tmp_path / "hyp", tmp_path / "hotwords"
    ref.write_text("a 가락점 어디 있어요\nb 가락점 이수점\nc 네\n", encoding="utf-8")
    hyp.write_text("a 가락 점 어디 있어요\nb 가라점 이수점\nc 이수점\n", encoding="utf-8")
    hotwords.write_text("가락점 :2\n이수점\n사당점\n", encoding="utf-8")
    result = CliRunner().invoke(score_cmd, ["--ref", str(ref), "--hyp", str(hyp), "--hotwords", str(hotwords)])
    assert result.exit_code == 0, result.output
    # 3 occurrences (가락점 twice, 이수점 once); 가락 점 counts (spaces removed), 가라점 does not;
    # 이수점 in c's hypothesis is a false alarm.
    assert "hotword recall 66.67 (2/3) | false alarms 1 | phrases 3" in result.output
