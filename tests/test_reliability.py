"""Hostile and careless input: no command runs unasked, nothing is lost, no silent wrong
result, one line instead of a traceback, no partial artifact, strict options.

Each test feeds one bad input and checks the one-line message, the exit status, and that
nothing was executed, deleted or half-written."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kocall.cli import main as kocall_main
from kocall.errors import AudioError, DataError

REPO = Path(__file__).resolve().parent.parent


def run_kocall(*args: str, env: dict | None = None):
    """Run `kocall ARGS` in-process; KOCALL_ALLOW_PIPES is cleared unless `env` sets it."""
    old = os.environ.pop("KOCALL_ALLOW_PIPES", None)
    try:
        result = CliRunner().invoke(kocall_main, list(args), env=env or {}, catch_exceptions=True)
    finally:
        os.environ.pop("KOCALL_ALLOW_PIPES", None)
        if old is not None:
            os.environ["KOCALL_ALLOW_PIPES"] = old
    return result


def one_line_error(result, *fragments: str) -> str:
    """The command failed with exit != 0 and one `Error: ...` line holding every fragment."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def write_wav(path: Path, seconds: float = 0.5, rate: int = 16000, subtype: str = "PCM_16",
              samples: np.ndarray | None = None) -> Path:
    import soundfile as sf

    if samples is None:
        t = np.arange(int(seconds * rate)) / rate
        samples = 0.25 * np.sin(2 * np.pi * 440 * t)
    sf.write(str(path), samples, rate, subtype=subtype)
    return path


# ------------------------------------------------------------------ 1. command execution
PIPE_FORMS = ["touch {m} |", "| touch {m}", "touch {m} |:12", "touch {m} |:12[0:3]"]


@pytest.mark.parametrize("form", PIPE_FORMS)
def test_feats_scp_pipe_is_not_run_by_cmvn(tmp_path: Path, form: str) -> None:
    marker = tmp_path / "PWNED"
    data = tmp_path / "data"
    data.mkdir()
    (data / "feats.scp").write_text(f"u1 {form.format(m=marker)}\n")
    result = run_kocall("compute-cmvn", str(data))
    one_line_error(result, "utterance 'u1'", "shell pipe", "--allow-pipes")
    assert not marker.exists()
    assert not (data / "cmvn.json").exists()


def test_feats_pipe_refused_by_the_one_feature_reader(tmp_path: Path, monkeypatch) -> None:
    """load_feats serves CMVN, training and decoding: the gate is there, not in each caller."""
    from kocall.features import load_feats

    monkeypatch.delenv("KOCALL_ALLOW_PIPES", raising=False)
    marker = tmp_path / "PWNED"
    with pytest.raises(AudioError, match="shell pipe"):
        load_feats(f"touch {marker} |", "u1")
    with pytest.raises(DataError, match="standard input"):
        load_feats("-", "u1")
    assert not marker.exists()


def test_decode_feats_scp_pipe_not_run(tmp_path: Path, monkeypatch) -> None:
    from kocall.decode import collect_inputs
    from kocall.features import load_feats

    monkeypatch.delenv("KOCALL_ALLOW_PIPES", raising=False)
    marker = tmp_path / "PWNED"
    scp = tmp_path / "feats.scp"
    scp.write_text(f"u1 touch {marker} |:5\n")
    (utt,) = collect_inputs([], None, str(scp))
    with pytest.raises(AudioError, match="shell pipe"):
        load_feats(utt.spec, utt.utt_id)
    assert not marker.exists()


def test_wav_scp_pipe_refused_then_allowed_by_flag(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "a.wav")
    marker = tmp_path / "RAN"
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"u1 touch {marker}; cat {wav} |\n")
    conf = str(REPO / "conf" / "fbank.yaml")
    result = run_kocall("make-feats", "--nj", "1", "--config", conf, str(data))
    one_line_error(result, "utterance 'u1'", "shell pipe", "--allow-pipes")
    assert not marker.exists() and not (data / "feats.scp").exists()
    result = run_kocall("make-feats", "--nj", "1", "--config", conf, "--allow-pipes", str(data))
    assert result.exit_code == 0, result.output
    assert marker.exists() and (data / "feats.scp").is_file()


@pytest.mark.parametrize("command", [["decode"], ["prep", "hackathon"], ["prep", "kaldi"], ["prep", "tsv"],
                                     ["prep", "shared-ko"], ["make-feats"], ["compute-cmvn"], ["fbank"],
                                     ["train"], ["report"], ["validate-data-dir"]])
def test_every_scp_reader_has_allow_pipes(command: list[str]) -> None:
    """The refusal message names --allow-pipes: every command that reads scp values must take it."""
    result = run_kocall(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "--allow-pipes" in result.output


# ------------------------------------------------------------------ 2. data loss
def _tiny_kaldi_dir(path: Path, wav_dir: Path) -> Path:
    path.mkdir(parents=True)
    wav_dir.mkdir(parents=True, exist_ok=True)
    utts = {f"spk1-u{i}": write_wav(wav_dir / f"u{i}.wav", seconds=0.3) for i in range(2)}
    (path / "wav.scp").write_text("".join(f"{u} {w}\n" for u, w in utts.items()))
    (path / "text").write_text("".join(f"{u} 안녕하세요\n" for u in utts))
    (path / "utt2spk").write_text("".join(f"{u} spk1\n" for u in utts))
    (path / "spk2utt").write_text("spk1 " + " ".join(utts) + "\n")
    (path / "feats.scp").write_text("".join(f"{u} x.ark:1\n" for u in utts))  # an extra file that must survive
    return path


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_kaldi_import_into_its_own_parent_is_refused(tmp_path: Path) -> None:
    src = _tiny_kaldi_dir(tmp_path / "root" / "train", tmp_path / "root" / "train" / "wav")
    before = _snapshot(tmp_path)
    result = run_kocall("prep", "kaldi", str(src), "--out", str(tmp_path / "root"))
    one_line_error(result, "contains the input", str(src))
    assert _snapshot(tmp_path) == before


def test_prep_out_equal_to_the_corpus_is_refused(tmp_path: Path) -> None:
    src = _tiny_kaldi_dir(tmp_path / "corpus", tmp_path / "corpus" / "audio")
    before = _snapshot(tmp_path)
    for out in (src, src / "data"):   # is the corpus; lies inside it
        result = run_kocall("prep", "kaldi", str(src), "--out", str(out))
        one_line_error(result, str(out), str(src))
    assert _snapshot(tmp_path) == before


def test_data_dir_holding_its_audio_is_not_replaced(tmp_path: Path) -> None:
    """write_data_dir replaces DIR as a whole: audio inside DIR (DATA = a corpus dir) would go."""
    from kocall.datadir import Utterance, write_data_dir

    wav = write_wav((tmp_path / "train").mkdir() or tmp_path / "train" / "a.wav")
    with pytest.raises(DataError, match="audio of utterance 'spk-a'"):
        write_data_dir(tmp_path / "train", [Utterance("spk-a", "spk", str(wav), "가", 0.5)])
    assert wav.is_file()


def test_export_out_parent_of_model_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "exp" / "final"
    model.mkdir(parents=True)
    (model / "model.pt").write_bytes(b"weights")
    (tmp_path / "exp" / "RESULTS.md").write_text("results\n")
    before = _snapshot(tmp_path)
    for out in (tmp_path / "exp", model, model / "int8"):
        result = run_kocall("export", "--model", str(model), "--out", str(out))
        one_line_error(result, str(out), str(model))
    assert _snapshot(tmp_path) == before


def test_synth_root_holding_the_config_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "synth.yaml").write_text("seed: 1\n")
    result = run_kocall("synth", "--config", str(conf / "synth.yaml"), str(conf))
    one_line_error(result, "contains the input --config")
    assert (conf / "synth.yaml").read_text() == "seed: 1\n"


def test_atomic_dir_never_replaces_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    from kocall.fileio import atomic_dir

    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "keep.txt").write_text("keep")
    monkeypatch.chdir(tmp_path / "work")
    for target in (".", ".."):
        with pytest.raises(DataError, match="working directory"):
            with atomic_dir(target):
                pass
    assert (tmp_path / "work" / "keep.txt").read_text() == "keep"


# ------------------------------------------------------------------ 3. silent wrong results: stages
@pytest.fixture
def toy_recipe(tmp_path: Path):
    from tests.test_stages import TOY

    script = tmp_path / "toy.sh"
    script.write_text(TOY)
    script.chmod(0o755)
    (tmp_path / "input.txt").write_text("hello\n")
    env = dict(os.environ, KOCALL_ROOT=str(REPO), PATH=f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}")

    def run(*args: str, path_prefix: str = "") -> subprocess.CompletedProcess:
        run_env = dict(env, PATH=f"{path_prefix}:{env['PATH']}" if path_prefix else env["PATH"])
        return subprocess.run([str(script), *args, str(tmp_path)], capture_output=True, text=True, env=run_env)

    def ran() -> list[str]:
        log = tmp_path / "log"
        lines = log.read_text().split("\n") if log.exists() else []
        log.unlink(missing_ok=True)
        return [line for line in lines if line]

    return tmp_path, run, ran


def test_a_stage_that_runs_invalidates_every_marker_after_it(toy_recipe) -> None:
    out, run, ran = toy_recipe
    assert run().returncode == 0 and ran() == ["ran a", "ran b", "fresh c"]
    assert run("--force", "--stage", "0", "--stop-stage", "0").returncode == 0
    assert ran() == ["ran a"]
    # a's outputs are new: b and c, whose markers were written before, are not up to date any more
    assert run("--stage", "1").returncode == 0
    assert ran() == ["ran b", "fresh c"]
    assert run().returncode == 0 and ran() == []


@pytest.mark.parametrize("args", [["--stage", "one"], ["--stop-stage", "4x"], ["--stage=-1"], ["--stage", ""],
                                  ["--stop-stage", "99999999999999999999"]])
def test_non_numeric_stage_stops_the_run(toy_recipe, args) -> None:
    _, run, ran = toy_recipe
    result = run(*args)
    assert result.returncode == 1
    assert "must be a stage number" in result.stderr
    assert ran() == []


def test_a_failing_hash_stops_the_run(toy_recipe, tmp_path: Path) -> None:
    _, run, ran = toy_recipe
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "kocall").write_text("#!/bin/sh\necho 'kocall: broken' >&2\nexit 3\n")
    (shim / "kocall").chmod(0o755)
    result = run(path_prefix=str(shim))
    assert result.returncode == 1
    assert "cannot hash its inputs" in result.stderr
    assert ran() == []


@pytest.mark.parametrize("option", ["--PATH", "--help-message", "--out", "--IFS", "--_kocall_option_vars"])
def test_only_declared_options_are_accepted(toy_recipe, option: str) -> None:
    _, run, ran = toy_recipe
    result = run(option, "/nonexistent")
    assert result.returncode == 1
    assert f"invalid option {option}" in result.stderr
    assert ran() == []


def test_run_sh_bad_values_stop_before_any_work(tmp_path: Path) -> None:
    for args, message in ((["--stage", "x"], "must be a stage number"), (["--nj", "0"], "--nj must be from 1 to 1024"), (["--nj", "9" * 25], "--nj must be from 1 to 1024"),
                          (["--nj", "two"], "whole number"), (["--data", ""], "--data must not be empty"),
                          (["--PATH", "/tmp"], "invalid option --PATH"), (["--seed", "1" * 30], "--seed must be below"),
                          (["--corpus", "kaldi", "--corpus-dir", str(tmp_path / "e")], "are the same directory"),
                          (["--model", "../../x"], "must be a plain name"), (["--unit", "a/b"], "must be a plain name")):
        result = subprocess.run([str(REPO / "run.sh"), "--setup", "false", "--data", str(tmp_path / "d"),
                                 "--exp", str(tmp_path / "e"), *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 1, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Stage 0" not in result.stderr


def test_second_run_on_the_same_data_stops(tmp_path: Path) -> None:
    import fcntl

    data = tmp_path / "d"
    data.mkdir()
    with open(data / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)   # the first run
        result = subprocess.run([str(REPO / "run.sh"), "--setup", "false", "--data", str(data),
                                 "--exp", str(tmp_path / "e"), "--stage", "0", "--stop-stage", "0"],
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "another run is using" in result.stderr and str(data) in result.stderr
    assert "Stage 0" not in result.stderr
    assert sorted(p.name for p in data.iterdir()) == [".lock"]


def test_corpus_hash_sees_transcripts_by_content_and_audio_by_stat(tmp_path: Path) -> None:
    from kocall.stamp import hash_inputs

    corpus = tmp_path / "corpus"
    (corpus / "train").mkdir(parents=True)
    (corpus / "train" / "a.txt").write_text("안녕\n")
    wav = write_wav(corpus / "train" / "a.wav")
    first = hash_inputs([str(corpus)], [])
    (corpus / "train" / "a.txt").write_text("안녕히\n")
    second = hash_inputs([str(corpus)], [])
    assert second != first                                  # a transcript changed
    stat = wav.stat()
    wav.write_bytes(bytes(len(wav.read_bytes())))           # same size...
    os.utime(wav, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ...and mtime: audio is not read
    assert hash_inputs([str(corpus)], []) == second
    os.utime(wav, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert hash_inputs([str(corpus)], []) != second


# ------------------------------------------------------------------ 3. silent wrong results: audio, ids
def test_float_wavs_are_scaled_not_silenced(tmp_path: Path) -> None:
    from kocall.audio import load_audio

    t = np.arange(8000) / 16000
    signal = 0.5 * np.sin(2 * np.pi * 300 * t)
    ref, _ = load_audio(str(write_wav(tmp_path / "pcm16.wav", samples=signal, subtype="PCM_16")))
    for subtype in ("FLOAT", "DOUBLE", "PCM_24", "PCM_32"):
        got, rate = load_audio(str(write_wav(tmp_path / f"{subtype}.wav", samples=signal, subtype=subtype)))
        assert rate == 16000
        assert np.abs(got).max() > 16000                      # not silence: int16 scale
        np.testing.assert_allclose(got, ref, atol=1.0)        # the same signal as the int16 file


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_float_audio_is_rejected(tmp_path: Path, bad: float) -> None:
    from kocall.audio import load_audio

    samples = np.zeros(8000)
    samples[100] = bad
    wav = write_wav(tmp_path / "nan.wav", samples=samples, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite") as info:
        load_audio(str(wav), "spk-u1")
    assert "spk-u1" in str(info.value) and "nan.wav" in str(info.value)


@pytest.mark.parametrize("rate", [10, 1000, 3999, 1_000_000])
def test_implausible_sample_rate_is_rejected_before_resampling(tmp_path: Path, rate: int) -> None:
    from kocall.audio import load_audio
    from kocall.corpora import audio_duration

    wav = tmp_path / "r.wav"
    write_wav(wav, samples=np.zeros(4000), rate=16000)
    data = bytearray(wav.read_bytes())
    data[24:28] = rate.to_bytes(4, "little")                 # the header's sample rate
    data[28:32] = (rate * 2).to_bytes(4, "little")            # and byte rate
    wav.write_bytes(bytes(data))
    with pytest.raises(AudioError, match=f"implausible sample rate {rate} Hz"):
        load_audio(str(wav), "u1", expected_sr=8000, resample=True)
    with pytest.raises(AudioError, match="implausible sample rate"):
        audio_duration("u1", str(wav))


def test_decode_refuses_overlong_audio_by_name(tmp_path: Path) -> None:
    from kocall.decode import FeatureMaker, InputUtt

    maker = FeatureMaker.__new__(FeatureMaker)   # only the length check: no model needed
    maker.max_seconds, maker.limit_by = 2.0, "--max-seconds"
    with pytest.raises(DataError, match=r"utterance 'long'.*3\.0 s of audio.*--max-seconds"):
        maker._check_length(InputUtt("long", "long.wav", False), 3.0)
    maker._check_length(InputUtt("short", "short.wav", False), 1.9)


def test_file_names_with_spaces_give_valid_kaldi_ids(tmp_path: Path) -> None:
    from kocall.decode import collect_inputs
    from kocall.fileio import read_table, write_table

    utts = collect_inputs([str(tmp_path / "call 1.wav"), str(tmp_path / "call  2.wav")], None, None)
    assert [u.utt_id for u in utts] == ["call_1", "call_2"]
    out = tmp_path / "hyp.txt"
    write_table(out, {u.utt_id: "네 감사합니다" for u in utts})
    assert read_table(out) == {"call_1": "네 감사합니다", "call_2": "네 감사합니다"}
    with pytest.raises(DataError, match="no white space"):
        write_table(out, {"a b": "x"})                     # the writer itself refuses a broken table
    with pytest.raises(DataError, match="line break"):
        write_table(out, {"a": "x\ny"})
    assert read_table(out) == {"call_1": "네 감사합니다", "call_2": "네 감사합니다"}


def test_label_ids_differing_by_space_are_duplicates(tmp_path: Path) -> None:
    from kocall.corpora.hackathon import _read_split_labels

    labels = tmp_path / "train_label"
    labels.write_text("a ,1 2\na,3 4\n")
    with pytest.raises(DataError, match="utterance 'a'.*line 2.*duplicate"):
        _read_split_labels(labels)


# ------------------------------------------------------------------ 4. one line, not a traceback
CP949 = "안녕하세요".encode("cp949")


def _kaldi_dir_with(path: Path, text_bytes: bytes) -> Path:
    path.mkdir(parents=True)
    wav = write_wav(path / "a.wav")
    (path / "wav.scp").write_text(f"spk-a {wav}\n")
    (path / "text").write_bytes(text_bytes)
    (path / "utt2spk").write_text("spk-a spk\n")
    (path / "spk2utt").write_text("spk spk-a\n")
    return path


def test_cp949_kaldi_text_is_one_line_naming_file_line_and_utterance(tmp_path: Path) -> None:
    data = _kaldi_dir_with(tmp_path / "d", b"spk-a " + CP949 + b"\n")
    result = run_kocall("validate-data-dir", str(data))
    one_line_error(result, f"file '{data / 'text'}' line 1", "utterance 'spk-a'", "not valid UTF-8", "cp949")


def test_non_utf8_inputs_of_every_reader(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"utt1 ok\nutt2 " + CP949 + b"\n")
    (tmp_path / "ok").write_text("utt1 네\nutt2 네\n")
    # scoring files, normalize, a TSV manifest, the hackathon label file, LM text, tokens.txt, ARPA
    one_line_error(run_kocall("score", "--ref", str(tmp_path / "ok"), "--hyp", str(bad)), "line 2", "utt2")
    one_line_error(run_kocall("normalize", str(bad)), f"file '{bad}' line 2", "not valid UTF-8")
    tsv = tmp_path / "m.tsv"
    tsv.write_bytes(b"utt_id\tspeaker\tpath\ttext\nu1\ts\ta.wav\t" + CP949 + b"\n")
    one_line_error(run_kocall("prep", "tsv", str(tsv), "--out", str(tmp_path / "o")), "line 2", "UTF-8")
    from kocall.corpora import read_lm_text
    from kocall.corpora.hackathon import read_label_map
    from kocall_kernels.ngram.arpa import parse_arpa, read_tokens

    labels = tmp_path / "hackathon.labels"
    labels.write_bytes(b"#id\tchar\tfreq\n1\t" + CP949[:2] + b"\t3\n")
    for reader, path in ((read_label_map, labels), (lambda p: read_lm_text(p, "strip"), bad),
                         (read_tokens, bad)):
        with pytest.raises(DataError, match=r"line 2.*not valid UTF-8"):
            reader(path)
    arpa = tmp_path / "lm.arpa"
    arpa.write_bytes(b"\\data\\\nngram 1=1\n\n\\1-grams:\n-1.0\t" + CP949 + b"\n\n\\end\\\n")
    with pytest.raises(DataError, match=r"line 5.*not valid UTF-8"):
        parse_arpa(arpa, progress=False)
    assert not (tmp_path / "o").exists()


def test_utf8_split_across_blocks_is_fine(tmp_path: Path) -> None:
    from kocall.fileio import check_utf8

    path = tmp_path / "big.txt"
    path.write_text("가나다라\n" * 1000)
    for block in (1, 2, 5, 7, 4096):   # every split position of the 3-byte characters
        check_utf8(path, block=block)
    path.write_bytes(path.read_bytes() + b"\xff\n")
    with pytest.raises(DataError, match="line 1001"):
        check_utf8(path, block=7)


def test_bad_and_deeply_nested_json_are_one_line(tmp_path: Path) -> None:
    manifest = tmp_path / "train.json"
    manifest.write_text("[" * 200000 + "]" * 200000)
    one_line_error(run_kocall("prep", "clovacall", str(manifest), "--out", str(tmp_path / "o")),
                   str(manifest), "nested too deeply")
    manifest.write_text('[{"wav": "a.wav", "text": }]')
    one_line_error(run_kocall("prep", "clovacall", str(manifest), "--out", str(tmp_path / "o")),
                   str(manifest), "line 1", "not valid JSON")
    manifest.write_bytes(b'[{"wav": "a.wav", "text": "' + CP949 + b'"}]')
    one_line_error(run_kocall("prep", "clovacall", str(manifest), "--out", str(tmp_path / "o")),
                   str(manifest), "not valid UTF-8")


def test_cuda_without_cuda_is_one_line(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for args in (["decode", "--device", "cuda", "--model", str(tmp_path), "a.wav"],
                 ["make-feats", "--device", "cuda", str(tmp_path)],
                 ["train", "--device", "cuda", "--config", "x.yaml", "--train", str(tmp_path / "t"),
                  "--dev", str(tmp_path / "d"), "--lang", str(tmp_path / "l"), "--exp-dir", str(tmp_path / "e")]):
        one_line_error(run_kocall(*args), "--device cuda: no CUDA device")


def test_help_lists_one_line_descriptions() -> None:
    """User commands in stage order with their one-line summary; plumbing (stamp) callable but not listed."""
    from kocall.cli import COMMANDS, HIDDEN_COMMANDS, command_summary

    result = run_kocall("--help")
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.output.split("Commands:")[1].splitlines()
              if line.startswith("  ") and not line.startswith("    ")]
    assert listed == [name for name in COMMANDS if name not in HIDDEN_COMMANDS]
    assert listed.index("prep") < listed.index("make-feats") < listed.index("train") < listed.index("score")
    for name, target in COMMANDS.items():
        summary = command_summary(target)
        assert summary and "kocall." not in summary, (name, summary)
        assert (summary.split()[0] in result.output) == (name not in HIDDEN_COMMANDS), name
    assert run_kocall("stamp", "--help").exit_code == 0


# ------------------------------------------------------------------ 3. the normaliser writes out every digit
@pytest.mark.parametrize("text, expected", [
    ("버전 2.0.1", "버전 이 점 영 점 일"),
    ("192.168.0.1", "백구십이 점 백육십팔 점 영 점 일"),
    ("영하 -5도", "영하 마이너스 오 도"),
    ("-3.5", "마이너스 삼 점 오"),
    ("2019-03-15", "이천십구 년 삼 월 십오 일"),
    ("2019.3.15.", "이천십구 년 삼 월 십오 일"),
    ("2019/06/10 방문", "이천십구 년 유 월 십 일 방문"),
    ("3~5명", "삼 에서 다섯 명"),
    ("기온 -3~-5도", "기온 마이너스 삼 에서 마이너스 오 도"),
    ("12345678901234567890", "일이삼사오육칠팔구영일이삼사오육칠팔구영"),
    ("10000000000000000원", "일영영영영영영영영영영영영영영영영 원"),
    ("9999999999999999", "구천구백구십구조 구천구백구십구억 구천구백구십구만 구천구백구십구"),
])
def test_normaliser_reads_every_number(text: str, expected: str) -> None:
    from kocall.text_norm import normalize_text

    assert normalize_text(text) == expected


@pytest.mark.parametrize("text", ["1.05.3", "3:30:15", "1,000,000.50", "2019-13-45", "1.0.0-beta", "5-3=2",
                                  "v10.2.x", "x86_64", "100,000,000,000,000,000", "1e10", "٣명", "0.0.0.0:8080",
                                  "12.34.56.78.90.12.34.56.78.90", "99999999999999999999번"])
def test_no_ascii_digit_survives(text: str) -> None:
    from kocall.text_norm import normalize_text

    result = normalize_text(text)
    assert result and not any("0" <= ch <= "9" for ch in result), result


# ------------------------------------------------------------------ 5. no partial artifacts
def test_a_failing_set_leaves_every_set_as_it_was(tmp_path: Path) -> None:
    from kocall.corpora import write_prepared
    from kocall.datadir import Utterance

    data = tmp_path / "data"
    wav = str(write_wav(tmp_path / "a.wav"))
    write_prepared(data, {"train": [Utterance("old-u1", "spk", wav, "가", 0.5)],   # an earlier run's
                          "dev": [Utterance("old-u2", "spk", wav, "나", 0.5)]}, [])
    before = sorted(p.name for p in data.iterdir())
    train = [Utterance("spk-a", "spk", wav, "가", 0.5)]
    dev = [Utterance("spk-b", "spk", wav, "나", 0.5), Utterance("spk-b", "spk", wav, "다", 0.5)]  # duplicate id
    with pytest.raises(DataError, match="duplicate id"):
        write_prepared(data, {"train": train, "dev": dev}, [])
    assert (data / "train" / "wav.scp").read_text() == f"old-u1 {wav}\n"   # not the new train
    assert (data / "dev" / "wav.scp").read_text() == f"old-u2 {wav}\n"
    assert sorted(p.name for p in data.iterdir()) == before                # no temp dir
    write_prepared(data, {"train": train, "dev": dev[:1]}, [])
    assert (data / "train" / "wav.scp").read_text() == f"spk-a {wav}\n"
    assert sorted(p.name for p in data.iterdir()) == ["dev", "local", "test_sets", "train"]


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stale_temps_of_a_killed_run_are_removed_live_ones_kept(tmp_path: Path) -> None:
    from kocall.fileio import remove_stale_temps, temp_prefix

    live = temp_prefix("feats.1.ark") + "abcd.tmp"
    dead = live.replace(f".{os.getpid()}@", f".{_dead_pid()}@")
    other_host = live.replace("@", "@elsewhere-")
    for name in (live, dead, other_host, "feats.1.ark", ".feats.1.of2.ark.tmp"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / (dead + "dir")).mkdir()
    removed = remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted([dead])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live, other_host, "feats.1.ark", ".feats.1.of2.ark.tmp", dead + "dir"])


def test_feature_stage_cleans_temps_of_a_killed_run(tmp_path: Path) -> None:
    from kocall.features import make_feats

    data = tmp_path / "d"
    (data / "data").mkdir(parents=True)
    (data / "wav.scp").write_text(f"u1 {write_wav(tmp_path / 'a.wav')}\n")
    stale = data / "data" / f".feats.1.ark.{_dead_pid()}@{__import__('socket').gethostname().split('.')[0]}.x1.tmp"
    stale.write_bytes(b"half a shard")
    make_feats(data, REPO / "conf" / "fbank.yaml", nj=1, show_progress=False)
    assert not stale.exists()
    assert [p.name for p in (data / "data").iterdir()] == ["feats.1.ark"]


# ------------------------------------------------------------------ 6. file modes follow the umask
@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775),
                                                        (0o077, 0o600, 0o700)])
def test_created_files_and_dirs_honour_the_umask(tmp_path: Path, umask: int, file_mode: int, dir_mode: int) -> None:
    from kocall.fileio import atomic_dir, atomic_write, staged_dirs

    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "f.txt") as handle:
            handle.write("x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "inner.txt").write_text("y")
        with staged_dirs(tmp_path / "root") as staging:
            (staging / "train").mkdir()
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "d").stat().st_mode & 0o777 == dir_mode
    assert (tmp_path / "root" / "train").stat().st_mode & 0o777 == dir_mode


# ------------------------------------------------------------------ 7. progress in logs
def test_log_gets_plain_progress_lines_and_errors_on_their_own_line(tmp_path: Path) -> None:
    data = tmp_path / "d"
    (data / "data").mkdir(parents=True)
    (data / "wav.scp").write_text("".join(f"u{i} {write_wav(tmp_path / f'{i}.wav')}\n" for i in range(30)))
    log = tmp_path / "log"
    env = dict(os.environ, PATH=f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}")
    env.pop("KOCALL_ALLOW_PIPES", None)
    with open(log, "w") as handle:
        ok = subprocess.run(["kocall", "make-feats", "--nj", "1", "--config", str(REPO / "conf" / "fbank.yaml"),
                             str(data)], stderr=handle, stdout=handle, env=env, timeout=300)
    assert ok.returncode == 0
    scp = (data / "feats.scp").read_text().splitlines()
    (data / "feats.scp").write_text("\n".join(scp[:20] + [f"u99 touch {tmp_path / 'x'} |"]) + "\n")
    with open(log, "w") as handle:
        bad = subprocess.run(["kocall", "compute-cmvn", str(data)], stderr=handle, env=env, timeout=300)
    text = log.read_text()
    assert bad.returncode != 0
    assert "\r" not in text and "\x1b" not in text        # no bar redrawn in place
    assert text.splitlines()[-1].startswith("Error: utterance 'u99'")


def test_plain_progress_lines_every_period(monkeypatch, capsys) -> None:
    import kocall.progress as progress_mod

    monkeypatch.setattr(progress_mod, "PERIOD", 0.0)
    monkeypatch.setattr(progress_mod, "on_terminal", lambda: False)
    assert list(progress_mod.progress_bar(range(3), desc="work", unit="utt")) == [0, 1, 2]
    lines = capsys.readouterr().err.splitlines()
    assert lines[:3] == [line for line in lines[:3] if line.startswith("work: ")]
    assert lines[0].startswith("work: 1/3 utt (33%)") and lines[-1].startswith("work: 3/3 utt (100%)")
    assert lines[-1].endswith("done")


# ------------------------------------------------------------------ more hostile inputs
def test_outputs_never_overwrite_inputs(tmp_path: Path) -> None:
    ref = tmp_path / "ref.txt"
    ref.write_text("u1 네\n")
    hyp = tmp_path / "hyp.txt"
    hyp.write_text("u1 네\n")
    for option in ("--json-out", "--summary-out", "--align"):
        one_line_error(run_kocall("score", "--ref", str(ref), "--hyp", str(hyp), option, str(ref)), "--ref")
    assert ref.read_text() == "u1 네\n"
    model = tmp_path / "final"
    model.mkdir()
    (model / "tokens.txt").write_text("<blk> 0\n")
    scp = tmp_path / "wav.scp"
    scp.write_text("u1 a.wav\n")
    for out in (model / "tokens.txt", scp):
        one_line_error(run_kocall("decode", "--model", str(model), "--scp", str(scp), "--out", str(out)), str(out))
    assert (model / "tokens.txt").read_text() == "<blk> 0\n" and scp.read_text() == "u1 a.wav\n"


def test_feats_from_a_device_file_or_fifo_do_not_hang(tmp_path: Path) -> None:
    from kocall.features import load_feats

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for spec in ("/dev/zero:0", f"{fifo}:0", str(tmp_path)):
        with pytest.raises(DataError, match="not a regular file"):
            load_feats(spec, "u1")


def test_huge_sparse_audio_is_refused_before_reading(tmp_path: Path) -> None:
    from kocall.audio import load_audio

    wav = tmp_path / "sparse.wav"
    with open(wav, "wb") as handle:
        handle.truncate(3 << 30)            # 3 GiB of nothing: reading it would fill memory
    with pytest.raises(AudioError, match=r"utterance 'u1'.*3\.0 GiB"):
        load_audio(str(wav), "u1")


def test_utterance_ids_cannot_escape_the_output_dir(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "a.wav")
    scp = tmp_path / "wav.scp"
    scp.write_text(f"../../escaped {wav}\n")
    out = tmp_path / "out" / "npy"
    one_line_error(run_kocall("fbank", "--config", str(REPO / "conf" / "fbank.yaml"), "--scp", str(scp),
                              "--out", str(out)), "utterance '../../escaped'", "file name")
    assert not list(tmp_path.rglob("escaped*"))


def test_set_names_cannot_escape_data(tmp_path: Path) -> None:
    from kocall.corpora import write_prepared
    from kocall.datadir import Utterance

    wav = str(write_wav(tmp_path / "a.wav"))
    utts = [Utterance("spk-a", "spk", wav, "가", 0.5)]
    with pytest.raises(DataError, match="set name '../evil'"):
        write_prepared(tmp_path / "data", {"train": utts, "dev": utts, "../evil": utts}, ["../evil"])
    assert not (tmp_path / "evil").exists() and not (tmp_path / "data").exists()


def test_broken_symlink_in_a_hashed_corpus_is_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    result = run_kocall("stamp", "hash", str(tmp_path / "c"))
    assert result.exit_code == 0 and len(result.output.strip()) == 40


def test_stage_7_without_test_sets_reports_dev(tmp_path: Path) -> None:
    data, exp = tmp_path / "d", tmp_path / "e"
    (data / "dev").mkdir(parents=True)
    (data / "test_sets").write_text("")
    result = subprocess.run([str(REPO / "run.sh"), "--setup", "false", "--data", str(data), "--exp", str(exp),
                             "--stage", "7", "--stop-stage", "7"], capture_output=True, text=True, timeout=300)
    assert "lists no test set; the report measures dev instead" in result.stderr
    assert "Usage:" not in result.stderr                # not the bare usage line of steps/report.sh
    assert result.returncode != 0                        # no model here: export says so in one line
    assert "Error:" in result.stderr and "Traceback" not in result.stderr
