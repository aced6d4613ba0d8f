"""kocall report: on a tiny real Conformer (float and its int8 export) and a tiny data dir,
both files appear with the expected fields and sane numbers, and bad input is one clear error."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kocall import export as ex
from kocall import report as rp
from kocall.audio import write_wav
from kocall.datadir import Utterance, write_data_dir
from kocall.errors import KocallError
from tests.conftest import tone
from tests.test_export import N_MELS, write_float_dir

SR = 8000


def write_arpa(path: Path, words: list[str]) -> None:
    """A unigram ARPA over the unit symbols (uniform, valid format)."""
    uni = ["<unk>", "<s>", "</s>"] + words
    p = -1.3
    lines = ["\\data\\", f"ngram 1={len(uni)}", "", "\\1-grams:"]
    lines += [f"{-99.0 if w == '<s>' else p:.4f}\t{w}" for w in uni]
    lines += ["", "\\end\\", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rep")
    src = write_float_dir(root / "am" / "final")
    (src / "fbank.yaml").write_text(f"sample_rate: {SR}\nn_mels: {N_MELS}\n")
    ex.export_int8(src, root / "am" / "final_int8")
    utts = []
    for i in range(3):
        wav = root / "wav" / f"u{i}.wav"
        write_wav(wav, tone(0.6 + 0.2 * i, SR, 300 + 100 * i, seed=i), SR)
        utts.append(Utterance(f"spk-u{i}", "spk", str(wav), "가3 가4 가5", None))
    write_data_dir(root / "data" / "test", utts)
    symbols = ex.read_tokens(src)
    write_arpa(root / "lm.arpa", [s for s in symbols[1:] if s != "<unk>"])
    (root / "am" / "decode_dev_beam").mkdir()
    (root / "am" / "decode_dev_beam" / "best_weights.json").write_text(
        json.dumps({"lm_weight": 0.3, "word_bonus": 1.5, "crr": 12.0}))
    return {"root": root, "float": src, "int8": root / "am" / "final_int8", "data": root / "data",
            "lm": root / "lm.arpa"}


def test_report_in_process_fields_and_sane_numbers(setup) -> None:
    cfg = rp.ReportConfig(data=str(setup["data"]), sets=["test"], lm=str(setup["lm"]), max_utts=2,
                          threads=(1, 2), isolate=False)
    report = rp.build_report([str(setup["float"]), str(setup["int8"])], cfg)
    flt, q = report["models"]
    assert (flt["quantized"], q["quantized"]) == (False, ex.QUANT_TAG)
    assert flt["params"] == q["params"] > 100_000
    assert 0 < q["size_mb"] * 3 < flt["size_mb"]
    assert flt["utts"] == {"test": 2} and flt["audio_seconds"] == pytest.approx(0.6 + 0.8, abs=0.01)
    for m in (flt, q):
        assert set(m["rtf"]) == {"cpu1", "cpu2"}
        for row in m["rtf"].values():
            assert set(row) == {"greedy", "beam_lm"} and all(0 < v < 100 for v in row.values())
        for mode in ("greedy", "beam_lm"):
            # an untrained model may insert more than the reference holds: CRR <= 100, finite
            assert m["crr"]["test"][mode] <= 100.0
        assert m["peak_rss_mb"] > 50 and m["peak_rss_delta_mb"] >= 0
        assert m["beam_weights"]["values"]["lm_weight"] == 0.3  # tuned on dev, not the default 0.5
        assert m["beam_weights"]["values"]["word_bonus"] == 1.5
    (delta,) = report["quantization_deltas"]
    assert delta["crr"]["test"]["greedy"] == pytest.approx(q["crr"]["test"]["greedy"] - flt["crr"]["test"]["greedy"])
    assert delta["size_ratio"] < 1 / 3
    markdown = rp.render_markdown(report)
    assert "final_int8 - final" in markdown and "CRR test greedy" in markdown and "RTF CPU x1 thread" in markdown
    assert markdown.count("### ") == 2


def test_report_cli_isolated_writes_both_files(setup, tmp_path: Path) -> None:
    out_md, out_json = tmp_path / "r.md", tmp_path / "r.json"
    result = CliRunner().invoke(rp.report_cmd, [
        "--model", str(setup["int8"]), "--data", str(setup["data"]), "--sets", "test",
        "--out-md", str(out_md), "--out-json", str(out_json), "--max-utts", "1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads(out_json.read_text())
    (m,) = report["models"]
    assert set(m["crr"]["test"]) == {"greedy"}  # no LM given: greedy only
    assert 0 < m["rtf"]["cpu1"]["greedy"] and m["size_mb"] > 0
    # A fresh process: its peak includes torch itself, and the model adds to it.
    assert m["peak_rss_mb"] > 100
    assert "| CRR test (1 utts) |" in out_md.read_text()


def test_report_bad_input_is_one_clear_error(setup, tmp_path: Path) -> None:
    runner = CliRunner()
    common = ["--data", str(setup["data"]), "--out-md", str(tmp_path / "r.md"), "--out-json", str(tmp_path / "r.json")]
    missing_set = runner.invoke(rp.report_cmd, ["--model", str(setup["float"]), "--sets", "nope", *common])
    assert missing_set.exit_code == 1 and "nope" in missing_set.output and "Traceback" not in missing_set.output
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    bad_model = runner.invoke(rp.report_cmd, ["--model", str(broken), "--sets", "test", *common])
    assert bad_model.exit_code == 1 and "model.pt" in bad_model.output
    bad_lm = runner.invoke(rp.report_cmd, ["--model", str(setup["float"]), "--sets", "test",
                                           "--lm", str(tmp_path / "no.arpa"), *common])
    assert bad_lm.exit_code == 1 and "no.arpa" in bad_lm.output
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "r.md").exists()


def test_build_report_needs_utterances() -> None:
    # (ids -> text is the model dir's Tokenizer.decode, tested in test_lang.py)
    with pytest.raises(KocallError):
        rp.build_report([], rp.ReportConfig(data=".", sets=["test"]))
