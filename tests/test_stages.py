"""utils/parse_options.sh and utils/stage.sh: option mapping, unknown options, stage skipping."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TOY = r"""#!/usr/bin/env bash
set -euo pipefail
stage=0
stop_stage=100
force=false
lm_order=6
fail=false
fail_c=false
help_message="toy recipe"
_kocall_option_vars="stage stop_stage force lm_order fail fail_c"
. "$KOCALL_ROOT/utils/parse_options.sh"
. "$KOCALL_ROOT/utils/stage.sh"
out=$1
if in_stage 0 "make a"; then
  if stage_begin "$out/.done/a" "$out/input.txt" -- "order=$lm_order"; then
    echo "ran a" >> "$out/log"
    [ "$fail" = true ] && exit 3
    echo "order $lm_order" > "$out/a.txt"
    stage_end
  fi
fi
if in_stage 1 "make b"; then
  if stage_begin "$out/.done/b" "$out/.done/a"; then
    echo "ran b" >> "$out/log"
    stage_end
  fi
fi
if in_stage 2 "train c (resumable)"; then
  if stage_begin "$out/.done/c" "$out/.done/b" -- "order=$lm_order"; then
    stage_workdir "$out/work"
    if [ -f "$out/work/ckpt" ]; then echo "resumed c" >> "$out/log"; else echo "fresh c" >> "$out/log"; fi
    touch "$out/work/ckpt"
    [ "$fail_c" = true ] && exit 4
    stage_end
  fi
fi
"""


@pytest.fixture
def toy(tmp_path: Path):
    script = tmp_path / "toy.sh"
    script.write_text(TOY)
    script.chmod(0o755)
    (tmp_path / "input.txt").write_text("hello\n")
    env = dict(os.environ, KOCALL_ROOT=str(ROOT),
               PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(script), *args, str(tmp_path)], capture_output=True, text=True, env=env)

    def ran() -> list[str]:
        log = tmp_path / "log"
        lines = log.read_text().split("\n") if log.exists() else []
        log.unlink(missing_ok=True)
        return [line for line in lines if line]

    return tmp_path, run, ran


def test_unknown_option_is_an_error(toy) -> None:
    _, run, _ = toy
    result = run("--no-such-option", "1")
    assert result.returncode == 1
    assert "invalid option --no-such-option" in result.stderr


def test_dashes_map_to_underscores_and_flags(toy) -> None:
    out, run, ran = toy
    assert run("--lm-order", "4").returncode == 0
    assert (out / "a.txt").read_text() == "order 4\n"
    assert ran() == ["ran a", "ran b", "fresh c"]
    assert run("--lm-order=5", "--stop-stage", "0").returncode == 0
    assert (out / "a.txt").read_text() == "order 5\n" and ran() == ["ran a"]
    bad = run("--force", "maybe")
    assert bad.returncode == 1 and "true or false" in bad.stderr


def test_rerun_skips_then_reruns_on_change_or_force(toy) -> None:
    out, run, ran = toy
    run()
    assert ran() == ["ran a", "ran b", "fresh c"]
    second = run()
    assert ran() == [] and second.stderr.count("up to date, skipping") == 3
    (out / "input.txt").write_text("changed\n")
    run()
    assert ran() == ["ran a", "ran b", "fresh c"]
    run("--force", "--stage", "1", "--stop-stage", "1")
    assert ran() == ["ran b"]


def test_interrupted_stage_is_not_done(toy) -> None:
    out, run, ran = toy
    run()
    ran()
    (out / "input.txt").write_text("new\n")
    assert run("--fail", "true").returncode == 3
    assert not (out / ".done" / "a").exists()
    assert ran() == ["ran a"]
    run()
    assert ran() == ["ran a", "ran b", "fresh c"]


def test_resumable_stage_resumes_only_the_same_inputs(toy) -> None:
    out, run, ran = toy
    assert run("--fail-c", "true").returncode == 4      # killed mid-training
    assert ran() == ["ran a", "ran b", "fresh c"]
    assert not (out / ".done" / "c").exists()
    assert run().returncode == 0                          # same inputs: resume
    assert ran() == ["resumed c"]
    assert run("--force", "--stage", "2").returncode == 0  # --force starts afresh
    assert ran() == ["fresh c"]
    assert run("--fail-c", "true", "--lm-order", "3").returncode == 4
    ran()
    assert run("--lm-order", "5").returncode == 0          # other options: a new run, not a resume
    assert ran() == ["ran a", "ran b", "fresh c"]


def test_run_sh_rejects_unknown_option() -> None:
    result = subprocess.run([str(ROOT / "run.sh"), "--bogus", "1", "--setup", "false"],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "invalid option --bogus" in result.stderr


def test_help_describes_every_option_in_one_line() -> None:
    """run.sh --help (utils/parse_options.sh): one line per declared option with its value and
    the comment beside its default in the script, as Kaldi scripts print their help."""
    result = subprocess.run([str(ROOT / "run.sh"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    names = (ROOT / "run.sh").read_text().split('_kocall_option_vars="')[1].split('"')[0].split()
    lines = {line.split()[0]: line for line in result.stderr.splitlines() if line.startswith("  --")}
    assert names and sorted(lines) == sorted("--" + n.replace("_", "-") for n in names)
    assert "parallel jobs" in lines["--nj"] and "threads" in lines["--threads"]
    assert all(len(line.split()) >= 3 for line in lines.values()), lines   # option, value, description
