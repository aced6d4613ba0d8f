"""Hostile and careless input, second round: each test covers one class of defect through the
shared mechanism that fixes it (the job backends, the output guard, the input hash, the numeric
option bounds, the trainer's loss check, the CLI's one-line errors, stage temp names), and
would fail without that fix."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kocall.errors import DataError, KocallError
from tests.test_reliability import one_line_error, run_kocall

REPO = Path(__file__).resolve().parents[1]
RUN_PL, SLURM_PL = str(REPO / "utils" / "run.pl"), str(REPO / "utils" / "slurm.pl")
HOSTILE = "a b $(touch {m}) `touch {m}` $HOME;touch {m}"


# ------------------------------------------------------------------ 1. the job backends
def test_run_pl_quotes_each_word_once_and_substitutes_only_the_index_name(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    words = [HOSTILE.format(m=marker), "/x/MYJOBS/data", "eval_JOB", "feats.JOB.ark", "JOB", "split4/JOB/text"]
    proc = subprocess.run([RUN_PL, "JOB=1:2", "log/p.JOB.log", sys.executable, "-c",
                           "import sys; print(repr(sys.argv[1:]))", *words], cwd=tmp_path, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    for job in (1, 2):
        printed = (tmp_path / "log" / f"p.{job}.log").read_text().splitlines()[3]
        assert printed == repr([HOSTILE.format(m=marker), "/x/MYJOBS/data", "eval_JOB", f"feats.{job}.ark", str(job),
                                f"split4/{job}/text"])
    # A word that is exactly a shell operator stays one (Kaldi's `\|`); inside a word it is text.
    proc = subprocess.run([RUN_PL, "l.log", "echo", "a", "|", "tr", "a", "b"], cwd=tmp_path)
    assert proc.returncode == 0 and (tmp_path / "l.log").read_text().splitlines()[3] == "b"
    proc = subprocess.run([RUN_PL, "m.log", "echo", "a|tr", "a", "b"], cwd=tmp_path)
    assert proc.returncode == 0 and (tmp_path / "m.log").read_text().splitlines()[3] == "a|tr a b"


@pytest.mark.parametrize("args, message", [
    (["--max-job-run", "1", "JOB=1:2", "l.JOB.log", "true"], "unknown option --max-job-run"),
    (["JOB=1:x", "l.JOB.log", "true"], "bad job range 'JOB=1:x'"),
    (["JOB=3:2", "l.JOB.log", "true"], "bad job range 'JOB=3:2'"),
    (["JOB=1:1000000", "l.JOB.log", "true"], "more than 10000 jobs"),
    (["--num-threads", "0", "JOB=1:2", "l.JOB.log", "true"], "--num-threads takes a whole number from 1"),
    (["--num-threads", "1e9", "l.log", "true"], "--num-threads takes a whole number from 1"),
])
def test_run_pl_refuses_bad_usage_in_one_line_and_runs_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    proc = subprocess.run([RUN_PL, *args], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not list(tmp_path.iterdir())   # no log named after the bad range, no job ran


def test_slurm_pl_refuses_an_option_its_config_does_not_map(tmp_path: Path) -> None:
    conf = tmp_path / "slurm.conf"
    conf.write_text("command sbatch --export=ALL\noption mem=* --mem=$0\n")
    proc = subprocess.run([SLURM_PL, "--config", str(conf), "--max-job-run", "1", "JOB=1:2", "l.JOB.log", "true"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0 and "--max-job-run 1: no 'option max_job_run=...' line" in proc.stderr, proc.stderr


def test_stage_jobs_on_a_hostile_data_dir_run_nothing_and_rewrite_no_path(tmp_path: Path) -> None:
    """make-feats through run.pl on a data dir whose path holds shell syntax and JOB."""
    from kocall.features import make_feats
    from tests.test_features import CONF, make_dir

    marker = tmp_path / "PWNED"
    root = tmp_path / HOSTILE.format(m=marker) / "JOB" / "MYJOBS"
    data = make_dir(root)
    make_feats(data, CONF, nj=2, show_progress=False, cmd="run.pl")
    assert not marker.exists()
    assert (data / "feats.scp").is_file() and sorted(p.name for p in (data / "log").iterdir()) == \
        ["make_fbank.1.log", "make_fbank.2.log"]
    assert sorted(p.name for p in root.parent.iterdir()) == ["MYJOBS"]   # no MY1S, no 1/ beside JOB/
    assert sorted(p.name for p in root.parent.parent.iterdir()) == ["JOB"]


@pytest.mark.parametrize("cmd, message", [("'run.pl", "cannot be split into words"),
                                          ("run.pl --max-job-run 1", "unknown option --max-job-run"),
                                          ("run.pl --num-threads 0", "--num-threads takes a whole number")])
def test_a_bad_cmd_is_one_line_before_any_job(tmp_path: Path, cmd: str, message: str) -> None:
    from tests.test_features import CONF, make_dir

    data = make_dir(tmp_path)
    result = run_kocall("make-feats", "--nj", "2", "--cmd", cmd, "--conf", str(CONF), str(data))
    one_line_error(result, message)
    assert not (data / "feats.scp").exists() and not (data / "log").exists()
