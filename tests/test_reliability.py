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
    result = run_kocall("make-feats", "--nj", "1", "--conf", conf, str(data))
    one_line_error(result, "utterance 'u1'", "shell pipe", "--allow-pipes")
    assert not marker.exists() and not (data / "feats.scp").exists()
    result = run_kocall("make-feats", "--nj", "1", "--conf", conf, "--allow-pipes", str(data))
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


@pytest.mark.parametrize("args", [["--stage", "one"], ["--stop-stage", "4x"], ["--stage=-1"], ["--stage", ""]])
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
    for args, message in ((["--stage", "x"], "must be a stage number"), (["--nj", "0"], "--nj must be at least 1"),
                          (["--nj", "two"], "whole number"), (["--data", ""], "--data must not be empty"),
                          (["--PATH", "/tmp"], "invalid option --PATH")):
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
