#!/usr/bin/env python3
"""Kaldi-style job dispatch: `utils/run.pl` (local processes) and `utils/slurm.pl` (one Slurm
job array), with Kaldi's command line:

    run.pl   [options] JOB=1:N LOG COMMAND...     # N jobs
    slurm.pl [options] JOB=1:N LOG COMMAND...
    run.pl   [options] LOG COMMAND...             # one job

The name before '=' (JOB) is the job's index variable: it is replaced by the job number in LOG
and in COMMAND's words wherever it stands as a name of its own, i.e. not next to a letter, digit
or '_' (`feats.JOB.ark`, `split4/JOB/text`, `--job JOB` are substituted; `MYJOBS`, `eval_JOB`
are not). `JOB=N` runs job N only. COMMAND's words are quoted once (shlex.quote) and run by
bash, in the current directory, output and errors to LOG, so `$(...)`, backticks and `$VAR`
inside a word stay text. A word that is exactly a shell operator (`|`, `>`, `2>&1`, `&&`, ...)
is passed as the operator: `run.pl LOG prog1 a '|' prog2 b` is a pipe, as in Kaldi:

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
An option run.pl does not know is refused (slurm.pl: one its config has no line for), as are a
malformed JOB=FIRST:LAST, more than MAX_JOBS jobs and --num-threads outside 1..MAX_THREADS.

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
RANGE_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(\d{1,9})(?::(\d{1,9}))?$")
RANGE_LIKE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")   # a first word like this must be a job range
MAX_JOBS = 10_000         # job ids per call: far above any cluster array, far below a memory problem
MAX_THREADS = 1024
RUN_PL_OPTIONS = {"num_threads", "max_jobs_run", "mem", "gpu", "time", "partition", "config"}
# A COMMAND word that is exactly one of these is the shell's operator, not text (Kaldi's `\|`).
SHELL_OPERATORS = {"|", "|&", "||", "&&", ";", "&", "<", ">", ">>", "2>", "2>>", "&>", "2>&1", ">&2", "1>&2"}
REPO_ROOT = Path(__file__).resolve().parents[2]   # recipes/kocall/jobs.py -> the checkout
PROGRESS_SECONDS = 10.0   # slurm.pl prints "k of N done" at most this often
POLL_SECONDS = 0.5        # slurm.pl looks at the logs this often
NFS_GRACE = 5.0           # after the array left the queue, logs may take this long to show (NFS)


class UsageError(Exception):
    pass


# ------------------------------------------------------------------ command line
class Request:
    """One parsed `run.pl`/`slurm.pl` call."""

    def __init__(self, argv: list[str], known_options: set[str] | None = None) -> None:
        """`known_options`: the only option names allowed (run.pl's); None: any (slurm.pl maps
        each through its config and refuses one without a line there)."""
        self.options: dict[str, str] = {}
        while argv and argv[0].startswith("--"):
            if len(argv) < 2:
                raise UsageError(f"option {argv[0]} needs a value")
            name = argv[0][2:].replace("-", "_")
            if known_options is not None and name not in known_options:
                known = ", ".join("--" + o.replace("_", "-") for o in sorted(known_options))
                raise UsageError(f"unknown option {argv[0]} (known: {known})")
            self.options[name] = argv[1]
            argv = argv[2:]
        self.jobname, self.first, self.last = None, 1, 1
        if argv and RANGE_LIKE.match(argv[0]):
            match = RANGE_RE.match(argv[0])
            if match is None:
                raise UsageError(f"bad job range '{argv[0]}' (want NAME=FIRST:LAST, e.g. JOB=1:4)")
            name, first, last = match.groups()
            self.jobname, self.first, self.last = name, int(first), int(last if last is not None else first)
            if self.first < 1 or self.last < self.first:
                raise UsageError(f"bad job range '{argv[0]}' (want NAME=FIRST:LAST with 1 <= FIRST <= LAST)")
            if self.last - self.first + 1 > MAX_JOBS:
                raise UsageError(f"job range '{argv[0]}' asks for more than {MAX_JOBS} jobs")
            argv = argv[1:]
        if len(argv) < 2:
            raise UsageError("expected [options] [JOB=1:N] LOG COMMAND...")
        self.log, self.words = argv[0], argv[1:]
        if self.jobname and substitute(self.log, self.jobname, "") == self.log and self.last > self.first:
            raise UsageError(f"the log name '{self.log}' must contain {self.jobname} (one log per job)")
        self.threads = _count(self.options, "num_threads", 1, 1, MAX_THREADS)
        self.max_jobs = _count(self.options, "max_jobs_run", 0, 0, MAX_JOBS)   # 0: all at once

    @property
    def job_ids(self) -> list[int]:
        return list(range(self.first, self.last + 1))

    def command(self, job: int | str) -> str:
        return join_command([substitute(word, self.jobname, job) for word in self.words])

    def log_path(self, job: int | str) -> Path:
        return Path(substitute(self.log, self.jobname, job))


def _count(options: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    value = options.get(name, str(default))
    if not (value.isascii() and value.isdigit() and len(value) <= 9 and low <= int(value) <= high):
        raise UsageError(f"--{name.replace('_', '-')} takes a whole number from {low} to {high}, not '{value}'")
    return int(value)


def substitute(text: str, jobname: str | None, job: int | str) -> str:
    """`text` with the index variable replaced where it stands as a name of its own (see above)."""
    if not jobname:
        return text
    return re.sub(rf"(?<![A-Za-z0-9_]){re.escape(jobname)}(?![A-Za-z0-9_])", str(job), text)


def join_command(words: list[str]) -> str:
    """One bash command line: each word quoted once, shell operators (`|`, `>`...) as they are."""
    return " ".join(word if word in SHELL_OPERATORS else shlex.quote(word) for word in words)


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
            job, req = rest[0], Request(rest[1:], RUN_PL_OPTIONS)
            return run_one(req.command(job), req.log_path(job), req.threads)
        req = Request(rest, RUN_PL_OPTIONS if prog == "run.pl" else None)
        return run_local(req) if prog == "run.pl" else run_slurm(req)
    except UsageError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    except OSError as err:   # a log folder that is a file, a read-only or full filesystem
        print(f"{prog}: {err.filename or 'a log'}: {err.strerror}", file=sys.stderr)
        return 1


# ------------------------------------------------------------------ the stages' side
def index_name(texts: list[str]) -> str | None:
    """An index variable name that occurs in none of `texts` (user paths): JOB when it can be,
    so a data dir called /x/JOB/data or a set called eval.JOB is never rewritten by a backend."""
    for name in ["JOB", *(f"JOB{i}X" for i in range(1, 1000))]:
        if not any(re.search(rf"(?<![A-Za-z0-9_]){name}(?![A-Za-z0-9_])", text) for text in texts):
            return name
    return None   # 1,000 crafted names in one command line


def dispatch(cmd: str, nj: int, log_pattern: str | os.PathLike, argv: list[str], what: str) -> None:
    """Run `argv` as jobs 1..nj through `cmd` ("run.pl", "slurm.pl --mem 4G", a path to either);
    the words of `argv` that are exactly JOB, and JOB in the log pattern's file name, become the
    job number; nothing else is (user paths holding JOB stay as they are). A failure raises
    KocallError naming each failed job, its last output line and its log."""
    from kocall.errors import KocallError

    try:
        words = shlex.split(cmd)
    except ValueError as err:   # an unbalanced quote
        raise KocallError(f"{what}: --cmd {cmd!r} cannot be split into words ({err})") from None
    if not words:
        raise KocallError(f"{what}: empty --cmd")
    if not 1 <= nj <= MAX_JOBS:
        raise KocallError(f"{what}: the number of jobs must be from 1 to {MAX_JOBS}, not {nj}")
    operators = [word for word in argv if word in SHELL_OPERATORS]
    if operators:
        raise KocallError(f"{what}: argument '{operators[0]}' would be read as a shell operator; "
                          f"name the path another way (e.g. ./{operators[0]})")
    log_pattern = Path(log_pattern)
    if "JOB" not in log_pattern.name:
        raise KocallError(f"{what}: the log name '{log_pattern.name}' must hold JOB")
    user_texts = [word for word in argv if word != "JOB"] + [str(log_pattern.parent), log_pattern.name.replace("JOB", "")]
    name = index_name(user_texts)
    if name is None:
        raise KocallError(f"{what}: every job index name occurs in the paths; rename them")
    argv = [name if word == "JOB" else word for word in argv]
    log_pattern = log_pattern.with_name(log_pattern.name.replace("JOB", name))
    program = words[0]
    if "/" not in program and not _on_path(program) and (REPO_ROOT / "utils" / program).is_file():
        program = str(REPO_ROOT / "utils" / program)
    full = [program, *words[1:], f"{name}=1:{nj}", str(log_pattern), *argv]
    backend = Path(program).name
    if backend in ("run.pl", "slurm.pl"):   # its usage errors as one line here, before any job
        try:
            Request(full[1:], RUN_PL_OPTIONS if backend == "run.pl" else None)
        except UsageError as err:
            raise KocallError(f"{what}: --cmd {cmd!r}: {err}") from None
    try:   # here, not in each job: a file named like the log folder is one line, not N tracebacks
        log_pattern.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise KocallError(f"{what}: cannot make the log folder '{log_pattern.parent}' ({err.strerror})") from None
    try:
        code = subprocess.call(full)
    except OSError as err:   # not found, not executable
        raise KocallError(f"{what}: --cmd '{cmd}': cannot run '{program}' ({err.strerror})") from None
    if code == 0:
        return
    req = Request([f"{name}=1:{nj}", str(log_pattern), "true"])
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
