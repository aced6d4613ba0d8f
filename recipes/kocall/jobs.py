#!/usr/bin/env python3
"""Kaldi-style job dispatch: `utils/run.pl` (local processes) and `utils/slurm.pl` (one Slurm
job array), with Kaldi's command line:

    run.pl   [options] JOB=1:N LOG COMMAND...     # N jobs
    slurm.pl [options] JOB=1:N LOG COMMAND...
    run.pl   [options] LOG COMMAND...             # one job

The name before '=' (JOB) is replaced by the job number in LOG and COMMAND wherever it occurs,
as in Kaldi. COMMAND's words are joined as Kaldi joins them (a word holding whitespace is
quoted, any other word passes as it is, so "a|b" is a pipe) and run by bash, in the current
directory, output and errors to LOG:

    # COMMAND
    # Started at DATE
    #
    ... the job's output ...
    # Accounting: time=SECONDS threads=T
    # Ended (code C) at DATE, elapsed time SECONDS seconds

Exit status 0 when every job succeeded; otherwise one line per failed job (its number, exit
code and log) and status 1. `kocall.jobs.dispatch` is how the stages call a backend.

Options (`--name value`, before JOB=...):
  --num-threads T   CPUs per job; the job's OMP/MKL/OpenBLAS/Numba thread counts are set to T
                    (slurm.pl: --cpus-per-task)
  --max-jobs-run M  at most M jobs at once (default: all)
  --mem SIZE, --gpu N, --time T, --partition P
                    slurm.pl: per-job memory (e.g. 4G), GPUs, time limit, partition; run.pl
                    accepts and ignores them (so one `cmd` string serves both backends)
  --config FILE     slurm.pl: Kaldi-style config (default conf/slurm.conf when it exists):
                      command sbatch --export=ALL        # the submit command
                      option mem=* --mem=$0              # --mem X adds --mem=X
                      option gpu=0                       # --gpu 0 adds nothing
                      default gpu=0                      # used when the option is not given
                    Any other `--name value` needs an `option name=...` line. The repo's
                    conf/slurm.conf is the fallback and documents the format.

This file runs with any python3 (standard library only): the backends work before the
virtualenv exists and on cluster nodes that only share the filesystem.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
END_RE = re.compile(r"^# Ended \(code (-?\d+)\)")
RANGE_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(\d+):(\d+)$")
REPO_ROOT = Path(__file__).resolve().parents[2]   # recipes/kocall/jobs.py -> the checkout
PROGRESS_SECONDS = 10.0   # slurm.pl prints "k of N done" at most this often
POLL_SECONDS = 0.5        # slurm.pl looks at the logs this often
NFS_GRACE = 5.0           # after the array left the queue, logs may take this long to show (NFS)


class UsageError(Exception):
    pass


# ------------------------------------------------------------------ command line
class Request:
    """One parsed `run.pl`/`slurm.pl` call."""

    def __init__(self, argv: list[str]) -> None:
        self.options: dict[str, str] = {}
        while argv and argv[0].startswith("--"):
            if len(argv) < 2:
                raise UsageError(f"option {argv[0]} needs a value")
            self.options[argv[0][2:].replace("-", "_")] = argv[1]
            argv = argv[2:]
        self.jobname, self.first, self.last = None, 1, 1
        if argv and RANGE_RE.match(argv[0]):
            name, first, last = RANGE_RE.match(argv[0]).groups()  # type: ignore[union-attr]
            self.jobname, self.first, self.last = name, int(first), int(last)
            if self.first < 1 or self.last < self.first:
                raise UsageError(f"bad job range '{argv[0]}' (want e.g. JOB=1:4)")
            argv = argv[1:]
        if len(argv) < 2:
            raise UsageError("expected [options] [JOB=1:N] LOG COMMAND...")
        self.log, self.words = argv[0], argv[1:]
        if self.jobname and self.jobname not in self.log and self.last > self.first:
            raise UsageError(f"the log name '{self.log}' must contain {self.jobname} (one log per job)")
        self.threads = _count(self.options, "num_threads", 1)
        self.max_jobs = _count(self.options, "max_jobs_run", 0)

    @property
    def job_ids(self) -> list[int]:
        return list(range(self.first, self.last + 1))

    def command(self, job: int | str) -> str:
        return substitute(join_command(self.words), self.jobname, job)

    def log_path(self, job: int | str) -> Path:
        return Path(substitute(self.log, self.jobname, job))


def _count(options: dict[str, str], name: str, default: int) -> int:
    value = options.get(name, str(default))
    if not value.isdigit():
        raise UsageError(f"--{name.replace('_', '-')} takes a whole number, not '{value}'")
    return int(value)


def substitute(text: str, jobname: str | None, job: int | str) -> str:
    return text.replace(jobname, str(job)) if jobname else text


def join_command(words: list[str]) -> str:
    """Kaldi's joining: bare words as they are, words with whitespace quoted."""
    out = []
    for word in words:
        if word and not re.search(r"\s", word):
            out.append(word)
        elif '"' in word:
            out.append(f"'{word}'")
        else:
            out.append(f'"{word}"')
    return " ".join(out)


# ------------------------------------------------------------------ one job
def thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({var: str(threads) for var in THREAD_VARS})
    return env


def run_one(command: str, log: Path, threads: int, started: list | None = None) -> int:
    """Run one job with its output to `log`, framed by Kaldi's header and footer lines."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log, "w", encoding="utf-8") as out:
        out.write(f"# {command}\n# Started at {time.ctime(start)}\n#\n")
        out.flush()
        proc = subprocess.Popen(["bash", "-c", command], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=thread_env(threads), start_new_session=True)
        if started is not None:
            started.append(proc)
        code = proc.wait()
        elapsed = int(round(time.time() - start))
        out.write(f"# Accounting: time={elapsed} threads={threads}\n"
                  f"# Ended (code {code}) at {time.ctime()}, elapsed time {elapsed} seconds\n")
    return code


def job_outcome(log: Path) -> int | None:
    """The exit code in a job log's last "# Ended (code C)" line; None if the job did not end."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines[-3:]):
        match = END_RE.match(line)
        if match:
            return int(match.group(1))
    return None


def report_failures(prog: str, req: Request) -> int:
    """One line per job whose log does not end with code 0; the number of such jobs."""
    failed = 0
    for job in req.job_ids:
        code = job_outcome(req.log_path(job))
        if code != 0:
            failed += 1
            what = "did not finish" if code is None else f"failed (exit code {code})"
            print(f"{prog}: job {job} of {len(req.job_ids)} {what}, log is in {req.log_path(job)}", file=sys.stderr)
    return failed


# ------------------------------------------------------------------ run.pl
def run_local(req: Request) -> int:
    running: list[subprocess.Popen] = []

    def stop(signum, _frame) -> None:
        for proc in running:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    workers = req.max_jobs if req.max_jobs > 0 else len(req.job_ids)
    total, codes = len(req.job_ids), []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_one, req.command(j), req.log_path(j), req.threads, running) for j in req.job_ids]
        for future in as_completed(futures):
            codes.append(future.result())
            if total > 1:
                print(f"run.pl: {len(codes)} of {total} jobs done ({Path(req.log).name})", file=sys.stderr)
    if all(code == 0 for code in codes):
        return 0
    report_failures("run.pl", req)
    return 1


# ------------------------------------------------------------------ slurm.pl
def read_slurm_conf(path: Path) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """(submit command, {"name=value": flags}, {name: default value}) from a Kaldi-style config."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot read the config '{path}': {err.strerror}") from None
    command: list[str] = []
    options: dict[str, str] = {}
    defaults: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        kind, _, rest = line.partition(" ")
        key, _, flags = rest.strip().partition(" ")
        if kind == "command":
            command = shlex.split(rest)
        elif kind == "option" and "=" in key:
            options[key] = flags.strip()
        elif kind == "default" and "=" in key:
            name, _, value = key.partition("=")
            defaults[name] = value
        else:
            raise UsageError(f"{path}:{lineno}: expected 'command ...', 'option name=value ...' or 'default name=value'")
    if not command:
        raise UsageError(f"{path}: no 'command' line (e.g. 'command sbatch --export=ALL')")
    return command, options, defaults


def slurm_flags(req: Request) -> list[str]:
    """The submit command and the flags the request's options map to through the config."""
    conf = req.options.get("config")
    if conf is None:   # Kaldi reads conf/slurm.conf of the recipe it runs in; else the repo's
        conf = "conf/slurm.conf" if Path("conf/slurm.conf").is_file() else str(REPO_ROOT / "conf" / "slurm.conf")
    command, options, defaults = read_slurm_conf(Path(conf))
    values = {**defaults, **{k: v for k, v in req.options.items() if k not in ("max_jobs_run", "config")}}
    flags: list[str] = []
    for name, value in values.items():
        if f"{name}={value}" in options:
            flags += shlex.split(options[f"{name}={value}"])
        elif f"{name}=*" in options:
            flags += shlex.split(options[f"{name}=*"].replace("$0", value))
        elif name != "num_threads":   # run.pl's option needs no flag when the config has none
            raise UsageError(f"option --{name.replace('_', '-')} {value}: no 'option {name}=...' line in {conf}")
    return command + flags


def run_slurm(req: Request) -> int:
    """Submit the jobs as one array (`sbatch --array`), wait for every log's end line while
    printing progress, report failures. Ctrl-C or SIGTERM cancels the array."""
    base = re.sub(r"\.log$", "", Path(req.log).name)
    if req.jobname:
        base = base.replace(f".{req.jobname}", "").replace(req.jobname, "")
    base = base.strip(".") or "job"
    qdir = Path(req.log).parent / "q"
    qdir.mkdir(parents=True, exist_ok=True)
    for job in req.job_ids:   # stale logs would read as finished
        req.log_path(job).unlink(missing_ok=True)
    # Each array task runs this file's `run-one` with its task id: the same log framing as run.pl.
    runner = [sys.executable, str(Path(__file__).resolve()), "run-one"]
    rest = ["--num-threads", str(req.threads)] + ([f"{req.jobname}=1:1"] if req.jobname else []) + [req.log, *req.words]
    body = " ".join(map(shlex.quote, runner)) + ' "${SLURM_ARRAY_TASK_ID:-1}" ' + " ".join(map(shlex.quote, rest))
    script = qdir / f"{base}.sh"
    script.write_text(f"#!/usr/bin/env bash\ncd {shlex.quote(os.getcwd())}\nexec {body}\n", encoding="utf-8")
    script.chmod(0o755)
    submit = slurm_flags(req) + [f"--job-name={base}", "--parsable"]
    if req.jobname:
        limit = f"%{req.max_jobs}" if req.max_jobs > 0 else ""
        submit += [f"--array={req.first}-{req.last}{limit}", "--output", str(qdir / f"{base}.%a.out")]
    else:
        submit += ["--output", str(qdir / f"{base}.out")]
    try:
        submitted = subprocess.run(submit + [str(script)], stdout=subprocess.PIPE, text=True)
    except OSError as err:
        print(f"slurm.pl: cannot run '{submit[0]}' ({err.strerror}); is Slurm installed here?", file=sys.stderr)
        return 1
    job_id = submitted.stdout.strip().split(";")[0]
    if submitted.returncode != 0 or not job_id:
        print(f"slurm.pl: submission failed: {' '.join(map(shlex.quote, submit))}", file=sys.stderr)
        return 1

    def cancel(signum, _frame) -> None:
        subprocess.call(["scancel", job_id])
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, cancel)
    signal.signal(signal.SIGINT, cancel)
    wait_for_array(req, job_id, base)
    return 1 if report_failures("slurm.pl", req) else 0


def wait_for_array(req: Request, job_id: str, base: str) -> None:
    """Until every job's log has its end line, or the array has left the queue (a job killed
    by Slurm never writes one; its log is then given NFS_GRACE seconds to appear)."""
    total, reported, last_print, gone_since = len(req.job_ids), -1, 0.0, None
    while True:
        finished = sum(job_outcome(req.log_path(j)) is not None for j in req.job_ids)
        now = time.time()
        if finished != reported and (now - last_print >= PROGRESS_SECONDS or finished == total):
            print(f"slurm.pl: job {job_id} ({base}): {finished} of {total} jobs done", file=sys.stderr)
            reported, last_print = finished, now
        if finished == total:
            return
        if gone_since is None and not _in_queue(job_id):
            gone_since = now
        if gone_since is not None and now - gone_since > NFS_GRACE:
            return
        time.sleep(POLL_SECONDS)


def _in_queue(job_id: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    return out.returncode == 0 and bool(out.stdout.strip())


# ------------------------------------------------------------------ entry point
def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run.pl", "slurm.pl", "run-one"):
        print("usage: jobs.py run.pl|slurm.pl [options] [JOB=1:N] LOG COMMAND...", file=sys.stderr)
        return 2
    prog, rest = argv[0], argv[1:]
    try:
        if prog == "run-one":   # one task of a slurm.pl array: run-one J [options] [JOB=1:1] LOG COMMAND...
            job, req = rest[0], Request(rest[1:])
            return run_one(req.command(job), req.log_path(job), req.threads)
        req = Request(rest)
        return run_local(req) if prog == "run.pl" else run_slurm(req)
    except UsageError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------ the stages' side
def dispatch(cmd: str, nj: int, log_pattern: str | os.PathLike, argv: list[str], what: str) -> None:
    """Run `argv` (holding JOB) as jobs 1..nj through `cmd` ("run.pl", "slurm.pl --mem 4G", a
    path to either); a failure raises KocallError naming each failed job, its last output line
    and its log."""
    from kocall.errors import KocallError

    words = shlex.split(cmd)
    if not words:
        raise KocallError(f"{what}: empty --cmd")
    program = words[0]
    if "/" not in program and not _on_path(program) and (REPO_ROOT / "utils" / program).is_file():
        program = str(REPO_ROOT / "utils" / program)
    full = [program, *words[1:], f"JOB=1:{nj}", str(log_pattern), *argv]
    try:
        code = subprocess.call(full)
    except OSError as err:   # not found, not executable
        raise KocallError(f"{what}: --cmd '{cmd}': cannot run '{program}' ({err.strerror})") from None
    if code == 0:
        return
    req = Request([f"JOB=1:{nj}", str(log_pattern), "true"])
    lines = []
    for job in req.job_ids:
        log = req.log_path(job)
        outcome = job_outcome(log)
        if outcome != 0:
            status = "did not finish" if outcome is None else f"failed (exit code {outcome})"
            lines.append(f"job {job} of {nj} {status}: {last_output_line(log)} (log: {log})")
    if not lines:
        lines.append(f"'{cmd}' exited with {code} (logs: {log_pattern})")
    raise KocallError(f"{what}: " + "; ".join(lines))


def last_output_line(log: Path) -> str:
    """The job's last line of output (its error message), not the log's frame lines."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "no log"
    body = [line for line in lines if line.strip() and not line.startswith("# ") and line != "#"]
    return body[-1].strip().removeprefix("Error: ") if body else "no output"


def _on_path(program: str) -> bool:
    import shutil

    return shutil.which(program) is not None


def split_contiguous(items: list, nj: int) -> list[list]:
    """nj contiguous parts of near-equal size (fewer when there are fewer items): job J of any
    stage takes part J-1, so a split does not depend on which backend runs it."""
    n = max(1, min(nj, len(items)))
    return [items[i * len(items) // n: (i + 1) * len(items) // n] for i in range(n)]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
