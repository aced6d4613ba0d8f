"""Feature stage: fused log-mel filterbank features (kocall_kernels.fbank) and global CMVN.

    wav_to_fbank(samples, sample_rate, fbank_cfg) -> (T, n_mels) float32   # one utterance
    make_feats(data_dir, conf, nj=2, device="cpu", cmd=None)  # wav.scp -> feats.scp + ark shards
    make_feats_job(data_dir, conf, nj, job)          # one shard, as a run.pl/slurm.pl job
    compute_cmvn(data_dir)                           # feats.scp -> cmvn.json

`make_feats` writes, for a data dir DATA:
  DATA/data/feats.<n>.ark    one kaldiio ark shard per job (n = 1..nj), float32 (T, n_mels)
  DATA/feats.scp             `utt-id /abs/DATA/data/feats.<n>.ark:offset` (absolute, like Kaldi's
                             make_fbank.sh, so the scp works from any working directory)
  DATA/utt2num_frames        frames per utterance (batching reads it instead of the arks)
  DATA/fbank.yaml            the feature config used (training copies it into the model dir)
Shards are written under temp names and renamed only when every job has succeeded; feats.scp
is written last, so it exists only beside a complete set of shards. Stale outputs (feats.scp,
utt2num_frames, cmvn.json) are removed before the work starts, so a failed rerun never leaves
features that disagree with wav.scp.

Every utterance is loaded with `kocall.audio.load_audio` and resampled to the config's rate
(the telephone config is 8 kHz, 16 kHz corpora are resampled on load; conf/fbank_whisper.yaml,
Whisper's log-mel, is 16 kHz, so 8 kHz audio is upsampled for it). Bad audio stops the
stage with one line naming the utterance and the file.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import click
import numpy as np

from kocall.device import DEVICES
from kocall.errors import DataError, KocallError, where
from kocall.fileio import atomic_write, default_mode, dir_lock, read_table, remove_stale_temps, temp_prefix
from kocall.options import bounded
from kocall.rxspec import allow_pipes_option
from kocall_kernels.fbank import FbankConfig, compute_fbank, utterance_seed

FbankLike = Union[FbankConfig, Mapping, str, os.PathLike]

CMVN_STD_FLOOR = 1e-2    # nats; a (near-)constant band is not blown up by 1/std
BATCH_UTTS = 64          # utterances per compute_fbank call
BATCH_SAMPLES = 1 << 23  # padded samples per call (32 MiB of float32)
POOL_MIN_UTTS = 5000     # below this (~5 h of short queries) a process pool costs more than it saves
SHARD_RE = re.compile(r"^feats\.(\d+)\.ark$")


# ------------------------------------------------------------------ config and one utterance
def load_fbank_config(cfg: FbankLike) -> FbankConfig:
    """An FbankConfig from an FbankConfig, a mapping (config.json "features") or a yaml path."""
    if isinstance(cfg, FbankConfig):
        return cfg
    try:
        if isinstance(cfg, Mapping):
            return FbankConfig.from_dict(dict(cfg))
        if isinstance(cfg, (str, os.PathLike)):
            from kocall.paths import conf_file

            cfg = conf_file(cfg)   # `conf/fbank.yaml` is the packaged one from any folder
            if not Path(cfg).is_file():
                raise KocallError(f"file '{cfg}': fbank config is missing")
            return FbankConfig.from_yaml(cfg)
    except (TypeError, ValueError) as err:
        raise KocallError(f"fbank config: {err}") from None
    raise KocallError(f"fbank config: expected an FbankConfig, a mapping or a yaml path, got {type(cfg).__name__}")


def model_fbank_config(model_dir: str | os.PathLike) -> FbankConfig:
    """The features a model dir was trained on: its fbank.yaml (the one source, for decoding
    and for the report alike; config.json's "features" is a copy for people to read)."""
    return load_fbank_config(Path(model_dir) / "fbank.yaml")


def wav_to_fbank(samples: np.ndarray, sample_rate: int, fbank_cfg: FbankLike, backend: str = "cpu",
                 utt_id: str | None = None) -> np.ndarray:
    """Log-mel features (T, n_mels) float32 of one int16-scale signal; (0, n_mels) if too short.

    The signal is resampled to the config's rate first. With dither, the noise is seeded from
    `utt_id` (as in the feature stage), else from the config's seed alone.
    """
    from kocall.audio import resample_audio

    cfg = load_fbank_config(fbank_cfg)
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if int(sample_rate) != cfg.sample_rate:
        x = resample_audio(x, int(sample_rate), cfg.sample_rate)
    seeds = None if utt_id is None else np.array([utterance_seed(cfg, utt_id)], np.uint64)
    feats, frames = compute_fbank(x[None, :], np.array([x.size]), cfg, backend=backend, seeds=seeds)
    return np.ascontiguousarray(feats[0, : int(frames[0])])


# ------------------------------------------------------------------ batches of utterances
def iter_features(utts: list[tuple[str, str]], cfg: FbankConfig, backend: str = "cpu",
                  allow_pipes: bool | None = None) -> Iterator[tuple[str, str, np.ndarray]]:
    """(utt_id, wav spec, feats) for every (utt_id, spec), computed in padded batches."""
    batch: list[tuple[str, str, np.ndarray]] = []
    longest = 0
    for utt_id, spec in utts:
        samples = _load_utterance(utt_id, spec, cfg, allow_pipes)
        if batch and (len(batch) >= BATCH_UTTS or (len(batch) + 1) * max(longest, samples.size) > BATCH_SAMPLES):
            yield from _run_batch(batch, cfg, backend)
            batch, longest = [], 0
        batch.append((utt_id, spec, samples))
        longest = max(longest, samples.size)
    if batch:
        yield from _run_batch(batch, cfg, backend)


def _load_utterance(utt_id: str, spec: str, cfg: FbankConfig, allow_pipes: bool | None) -> np.ndarray:
    from kocall.audio import load_audio

    samples, _ = load_audio(spec, utt_id, expected_sr=cfg.sample_rate, resample=True, allow_pipes=allow_pipes)
    if cfg.num_frames(samples.size) == 0:
        raise DataError(f"{where(utt_id, spec)}: audio too short for one feature frame "
                        f"({samples.size} samples at {cfg.sample_rate} Hz, a frame needs {cfg.min_samples})")
    return samples


def _run_batch(batch: list[tuple[str, str, np.ndarray]], cfg: FbankConfig,
               backend: str) -> Iterator[tuple[str, str, np.ndarray]]:
    lengths = np.array([s.size for _, _, s in batch], dtype=np.int64)
    pcm = np.zeros((len(batch), int(lengths.max())), dtype=np.float32)
    for row, (_, _, samples) in enumerate(batch):
        pcm[row, : samples.size] = samples
    # Per-utterance seeds: dithered features do not depend on batching or on --nj.
    seeds = np.array([utterance_seed(cfg, u) for u, _, _ in batch], dtype=np.uint64)
    feats, frames = compute_fbank(pcm, lengths, cfg, backend=backend, seeds=seeds)
    for row, (utt_id, spec, _) in enumerate(batch):
        mat = np.ascontiguousarray(feats[row, : int(frames[row])])
        if not np.all(np.isfinite(mat)):
            raise DataError(f"{where(utt_id, spec)}: features hold NaN or infinite values")
        yield utt_id, spec, mat


# ------------------------------------------------------------------ one job = one ark shard
@dataclass(frozen=True)
class Job:
    index: int                      # shard number, 1-based
    utts: list[tuple[str, str]]     # (utt_id, wav spec) in scp order
    ark_tmp: str                    # where the job writes; renamed by the parent on success
    cfg: FbankConfig
    backend: str
    allow_pipes: bool | None


@dataclass
class JobResult:
    index: int
    offsets: list[tuple[str, int]]  # (utt_id, byte offset of the matrix in the ark)
    frames: dict[str, int]


def run_job(job: Job, progress: Callable[[int], None] | None = None,
            stop: Callable[[], bool] | None = None) -> JobResult:
    """Compute one shard's features into job.ark_tmp; returns where each matrix starts."""
    def watched(items: Iterator[tuple[str, str, np.ndarray]]) -> Iterator[tuple[str, str, np.ndarray]]:
        for item in items:
            yield item   # resumes once the matrix is written
            if progress is not None:
                progress(1)
            if stop is not None and stop():
                raise KocallError(f"job {job.index}: stopped because another job failed")

    with open(job.ark_tmp, "wb") as ark:
        written = write_ark(ark, watched(iter_features(job.utts, job.cfg, job.backend, job.allow_pipes)))
        ark.flush()
        os.fsync(ark.fileno())
    return JobResult(job.index, [(u, off) for u, off, _ in written], {u: n for u, _, n in written})


def write_ark(handle, items: Iterator[tuple[str, str, np.ndarray]]) -> list[tuple[str, int, int]]:
    """Append each (utt_id, spec, matrix) to an open binary ark as Kaldi does ("key " then the
    matrix); returns (utt_id, byte offset of the matrix, frames) for the scp."""
    from kaldiio.matio import write_array

    written = []
    for utt_id, _, mat in items:
        handle.write(f"{utt_id} ".encode("utf-8"))
        written.append((utt_id, handle.tell(), int(mat.shape[0])))  # kaldiio/Kaldi offsets point past "key "
        write_array(handle, mat)
    return written


# Worker-process state (set by _init_worker): progress queue and the shared stop flag.
_WORKER: dict = {}


def _init_worker(progress_queue, stop_event) -> None:
    # One numba thread per job: nj processes already fill the cores, and the per-utterance
    # audio decoding and resampling (single-threaded C) is parallel only across processes.
    # Set before numba is imported in this fresh (spawned) process.
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    _WORKER["queue"] = progress_queue
    _WORKER["stop"] = stop_event


def _worker_run(job: Job) -> JobResult:
    return run_job(job, progress=_WORKER["queue"].put, stop=_WORKER["stop"].is_set)


@contextlib.contextmanager
def _numba_threads(n: int) -> Iterator[None]:
    """Run the in-process job with `n` numba threads, restoring the caller's setting."""
    import numba

    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(old)


def run_jobs(jobs: list[Job], nj: int, show_progress: bool = True) -> list[JobResult]:
    """Run the jobs (one ark shard each) with nj-way parallelism.

    Why two modes (measured on 2 cores, CPU seconds per hour of audio): decoding FLAC costs
    0.5-0.9, resampling 16 -> 8 kHz 0.8 and the filterbank kernel 0.4 (one thread). Decoding and
    resampling are serial C code, so numba threads speed up only the kernel's share, while nj
    spawned processes (one numba thread each) run everything in parallel but pay ~3 s each to
    start (importing scipy.signal and numba, loading the cached kernel). Processes therefore win
    from a few hours of audio up (POOL_MIN_UTTS); smaller data dirs run in this process with nj
    numba threads. Workers are spawned, not forked: numba's OpenMP threads do not survive a fork.
    """
    from kocall.progress import progress_bar

    total = sum(len(j.utts) for j in jobs)
    with progress_bar(total=total, desc="fbank", unit="utt", disable=not show_progress, leave=False) as bar:
        if nj > 1 and len(jobs) > 1 and total >= POOL_MIN_UTTS:
            return _run_pool(jobs, nj, bar)
        with _numba_threads(nj):
            return [run_job(j, progress=bar.update) for j in jobs]


def _run_pool(jobs: list[Job], nj: int, bar) -> list[JobResult]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    progress_queue = ctx.Queue()
    stop_event = ctx.Event()
    with ProcessPoolExecutor(max_workers=min(nj, len(jobs)), mp_context=ctx, initializer=_init_worker,
                             initargs=(progress_queue, stop_event)) as pool:
        futures = [pool.submit(_worker_run, job) for job in jobs]
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
            _drain(progress_queue, bar)
            if any(f.exception() is not None for f in done):
                stop_event.set()   # the other jobs stop after their current batch
                break
        errors = [f.exception() for f in futures if f.done() and f.exception() is not None]
        if errors:
            wait(pending)
            first = next((e for e in errors if not _is_stop(e)), errors[0])
            raise first
        _drain(progress_queue, bar)
        return [f.result() for f in futures]


def _is_stop(err: BaseException) -> bool:
    return isinstance(err, KocallError) and "stopped because another job failed" in str(err)


def _drain(progress_queue, bar) -> None:
    with contextlib.suppress(queue.Empty, OSError, EOFError):
        while True:
            bar.update(progress_queue.get_nowait())


# ------------------------------------------------------------------ the stage
def split_jobs(utts: list[tuple[str, str]], nj: int) -> list[list[tuple[str, str]]]:
    """nj contiguous shards of near-equal size (fewer when there are fewer utterances)."""
    from kocall.jobs import split_contiguous

    return split_contiguous(utts, nj)


def _read_wav_scp(data_dir: Path) -> list[tuple[str, str]]:
    scp = data_dir / "wav.scp"
    if not scp.is_file():
        raise DataError(f"data dir '{data_dir}': file '{scp}' is missing")
    table = read_table(scp)
    if not table:
        raise DataError(f"file '{scp}': no utterances")
    return [(u, table[u]) for u in sorted(table, key=lambda k: k.encode("utf-8"))]


def _check_device(device: str) -> str:
    from kocall.device import require_device

    return require_device(device, torch_needed=False)  # the filterbank runs Numba CUDA kernels only


def _fbank_yaml_text(conf: FbankLike, cfg: FbankConfig) -> str:
    """The yaml to keep beside the features: the file itself (comments and all) when given one."""
    if isinstance(conf, (str, os.PathLike)):
        from kocall.fileio import read_text
        from kocall.paths import conf_file

        return read_text(conf_file(conf))
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def make_feats(data_dir: str | os.PathLike, conf: FbankLike, nj: int = 2, device: str = "cpu",
               allow_pipes: bool | None = None, show_progress: bool = True, cmd: str | None = None) -> dict[str, int]:
    """The feature stage for one data dir (see the module docstring); returns utt -> frames.

    cmd None: the shards are computed in this process (or a process pool); cmd "run.pl",
    "slurm.pl --mem 4G"...: one job per shard through that backend (`make_feats_job`), logs in
    DATA/log/make_fbank.<n>.log. Both write the same bytes."""
    data_dir = Path(data_dir)
    cfg = load_fbank_config(conf)
    backend = _check_device(device)
    if nj < 1:
        raise KocallError(f"--nj must be >= 1, not {nj}")
    if any(ch in str(data_dir.resolve()) for ch in "\n\r"):   # feats.scp holds it: one line per utterance
        raise DataError(f"data dir {str(data_dir)!r}: its path holds a line break, which would split every "
                        "line of feats.scp; rename it")
    utts = _read_wav_scp(data_dir)
    with dir_lock(data_dir, "make-feats"):   # a second run on this dir would remove this one's shards
        return _make_feats_locked(data_dir, conf, cfg, backend, utts, nj, device, allow_pipes, show_progress, cmd)


def _make_feats_locked(data_dir: Path, conf: FbankLike, cfg, backend, utts, nj: int, device: str,
                       allow_pipes: bool | None, show_progress: bool, cmd: str | None) -> dict[str, int]:
    yaml_text = _fbank_yaml_text(conf, cfg)
    for name in ("feats.scp", "utt2num_frames", "cmvn.json"):
        # Outputs of an earlier run would describe other audio or another config.
        with contextlib.suppress(FileNotFoundError):
            (data_dir / name).unlink()
    ark_dir = (data_dir / "data").resolve()
    ark_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(ark_dir)   # temp shards of a killed run
    remove_stale_temps(data_dir)
    shards = split_jobs(utts, nj)
    if cmd is None:
        results, tmps = _run_in_process(shards, ark_dir, cfg, backend, allow_pipes, nj, show_progress)
    else:
        results, tmps = _run_dispatched(data_dir, yaml_text, len(shards), device, allow_pipes, cmd, ark_dir)
    final = {index: ark_dir / f"feats.{index}.ark" for index in tmps}
    for index, tmp in tmps.items():
        os.replace(tmp, final[index])
    _remove_stale_shards(ark_dir, set(final.values()))
    frames = {u: n for r in results for u, n in r.frames.items()}
    scp = {u: f"{final[r.index]}:{off}" for r in results for u, off in r.offsets}
    with atomic_write(data_dir / "utt2num_frames") as handle:
        handle.writelines(f"{u} {frames[u]}\n" for u, _ in utts)
    with atomic_write(data_dir / "fbank.yaml") as handle:
        handle.write(yaml_text)
    with atomic_write(data_dir / "feats.scp") as handle:  # last: its presence means "complete"
        handle.writelines(f"{u} {scp[u]}\n" for u, _ in utts)
    return frames


def _run_in_process(shards: list[list[tuple[str, str]]], ark_dir: Path, cfg: FbankConfig, backend: str,
                    allow_pipes: bool | None, nj: int, show_progress: bool) -> tuple[list[JobResult], dict[int, str]]:
    """Every shard computed here (or in a process pool) into temp arks; (results, index -> temp ark)."""
    jobs = []
    try:
        for index, shard in enumerate(shards, 1):
            fd, tmp = tempfile.mkstemp(prefix=temp_prefix(f"feats.{index}.ark"), suffix=".tmp", dir=ark_dir)
            os.close(fd)
            os.chmod(tmp, default_mode())  # mkstemp's 0600 would survive the rename
            jobs.append(Job(index, shard, tmp, cfg, backend, allow_pipes))
        return run_jobs(jobs, nj, show_progress), {job.index: job.ark_tmp for job in jobs}
    except BaseException:
        for job in jobs:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(job.ark_tmp)
        raise


# ------------------------------------------------------------------ one shard as a job (--cmd)
def _job_files(ark_dir: Path, index: int, n: int, run_tag: str) -> tuple[Path, Path]:
    """Where job `index` of `n` writes its ark and then, last, its index (utt offset frames).
    `run_tag` is the dispatching stage's `<pid>@<host>`: the names are kocall temp names of that
    process (fileio), so the next run removes them once it is gone, whatever its --nj, and never
    shares a name with the jobs of a killed run that still run on."""
    return (ark_dir / f".feats.{index}.of{n}.ark.{run_tag}.job.tmp",
            ark_dir / f".feats.{index}.of{n}.index.{run_tag}.job.tmp")


def _run_tag() -> str:
    return temp_prefix("x").split(".")[2]   # "<pid>@<host>" of this process


def make_feats_job(data_dir: str | os.PathLike, conf: FbankLike, nj: int, job: int, device: str = "cpu",
                   allow_pipes: bool | None = None, run_tag: str | None = None) -> int:
    """Job `job` of `nj` (1-based): its shard's features into a temp ark beside the final one,
    then its index file; `make_feats(cmd=...)` renames them when every job has succeeded.
    Returns the number of utterances."""
    data_dir = Path(data_dir)
    cfg = load_fbank_config(conf)
    backend = _check_device(device)
    shards = split_jobs(_read_wav_scp(data_dir), nj)
    if not 1 <= job <= len(shards):
        raise KocallError(f"--job {job}: {data_dir} splits into {len(shards)} jobs with --nj {nj}")
    ark_dir = (data_dir / "data").resolve()
    ark_dir.mkdir(parents=True, exist_ok=True)
    ark_tmp, index_tmp = _job_files(ark_dir, job, len(shards), run_tag or _run_tag())
    try:
        result = run_job(Job(job, shards[job - 1], str(ark_tmp), cfg, backend, allow_pipes))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(ark_tmp)
        raise
    with atomic_write(index_tmp) as handle:
        handle.writelines(f"{u} {off} {result.frames[u]}\n" for u, off in result.offsets)
    return len(result.offsets)


def _run_dispatched(data_dir: Path, yaml_text: str, n: int, device: str, allow_pipes: bool | None, cmd: str,
                    ark_dir: Path) -> tuple[list[JobResult], dict[int, str]]:
    """n `make-feats --job J` jobs through `cmd`; (results, index -> temp ark) once all succeeded.
    On any failure every job's temp files are removed and the error names the failed jobs."""
    import sys

    from kocall.jobs import dispatch

    tag = _run_tag()
    conf_tmp = ark_dir / f".fbank.of{n}.yaml.{tag}.job.tmp"   # the jobs read the config the stage was given
    conf_tmp.write_text(yaml_text, encoding="utf-8")
    argv = [sys.executable, "-m", "kocall.cli", "make-feats", "--job", "JOB", "--run-tag", tag, "--nj", str(n),
            "--config", str(conf_tmp),
            "--device", device, *(["--allow-pipes"] if allow_pipes else []), str(data_dir)]
    try:
        dispatch(cmd, n, data_dir / "log" / "make_fbank.JOB.log", argv, f"make-feats {data_dir}")
        results, tmps = [], {}
        for index in range(1, n + 1):
            ark_tmp, index_tmp = _job_files(ark_dir, index, n, tag)
            if not (ark_tmp.is_file() and index_tmp.is_file()):
                raise KocallError(f"make-feats {data_dir}: job {index} of {n} reported success but left no "
                                  f"'{index_tmp}' (log: {data_dir / 'log' / f'make_fbank.{index}.log'})")
            rows = [line.split(" ") for line in index_tmp.read_text(encoding="utf-8").splitlines()]
            results.append(JobResult(index, [(u, int(off)) for u, off, _ in rows], {u: int(f) for u, _, f in rows}))
            tmps[index] = str(ark_tmp)
        for index in range(1, n + 1):
            _job_files(ark_dir, index, n, tag)[1].unlink()
        return results, tmps
    except BaseException:
        for index in range(1, n + 1):
            for path in _job_files(ark_dir, index, n, tag):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        raise
    finally:
        conf_tmp.unlink(missing_ok=True)


def _remove_stale_shards(ark_dir: Path, keep: set[Path]) -> None:
    """Shards of an earlier run with a larger --nj, no longer referenced by feats.scp."""
    for path in ark_dir.iterdir():
        if SHARD_RE.match(path.name) and path not in keep:
            path.unlink()


# ------------------------------------------------------------------ global CMVN
def load_feats(rxspec: str, utt_id: str) -> np.ndarray:
    """One utterance's (frames, bins) float32 features from a kaldiio rxspecifier; a missing,
    corrupt, empty or non-finite matrix is a DataError naming the utterance and the ark.
    A pipe (`cmd |`) is refused unless pipes are allowed (kocall.rxspec)."""
    import kaldiio

    from kocall.rxspec import ark_part, check_rxspec

    check_rxspec(rxspec, utt_id, kind="feats.scp")  # kaldiio would run a pipe in a shell
    ark = ark_part(rxspec)
    if ark in ("", "-"):
        raise DataError(f"{where(utt_id, rxspec)}: features must come from an ark file, not standard input")
    if Path(ark).exists() and not Path(ark).is_file():  # /dev/zero, a FIFO: kaldiio would read forever
        raise DataError(f"{where(utt_id, rxspec)}: '{ark}' is not a regular file")
    try:
        mat = np.asarray(kaldiio.load_mat(rxspec), dtype=np.float32)
    except Exception as err:  # kaldiio raises many kinds for missing or corrupt arks
        raise DataError(f"{where(utt_id, rxspec)}: cannot read features ({type(err).__name__}: {err})") from None
    if mat.ndim != 2 or mat.shape[0] == 0:
        raise DataError(f"{where(utt_id, rxspec)}: features must be a non-empty (frames, bins) matrix, "
                        f"got shape {mat.shape}")
    if not np.all(np.isfinite(mat)):
        raise DataError(f"{where(utt_id, rxspec)}: features hold NaN or infinite values")
    return mat


def compute_cmvn(data_dir: str | os.PathLike, std_floor: float = CMVN_STD_FLOOR,
                 show_progress: bool = True) -> dict:
    """Global mean/std over every frame of DATA/feats.scp, written to DATA/cmvn.json.

    Accumulated in float64 around the first utterance's mean (a shift), so sum-of-squares
    does not cancel catastrophically over millions of frames.
    """
    from kocall.progress import progress_bar

    data_dir = Path(data_dir)
    scp = data_dir / "feats.scp"
    if not scp.is_file():
        raise DataError(f"data dir '{data_dir}': file '{scp}' is missing (run the feature stage first)")
    table = read_table(scp)
    shift = total = total_sq = None
    frames = 0
    for utt_id in progress_bar(sorted(table, key=lambda k: k.encode("utf-8")), desc="cmvn", unit="utt",
                       disable=not show_progress, leave=False):
        spec = table[utt_id]
        mat = load_feats(spec, utt_id).astype(np.float64)
        if shift is None:
            shift = mat.mean(axis=0)
            total, total_sq = np.zeros_like(shift), np.zeros_like(shift)
        elif mat.shape[1] != shift.size:
            raise DataError(f"{where(utt_id, spec)}: {mat.shape[1]} feature bins, earlier utterances have {shift.size}")
        centred = mat - shift
        total += centred.sum(axis=0)
        total_sq += np.square(centred).sum(axis=0)
        frames += mat.shape[0]
    if frames == 0:
        raise DataError(f"file '{scp}': no features")
    mean_c = total / frames
    var = np.maximum(total_sq / frames - mean_c ** 2, 0.0)
    stats = {"mean": (shift + mean_c).tolist(), "std": np.maximum(np.sqrt(var), std_floor).tolist(),
             "frames": int(frames)}
    with atomic_write(data_dir / "cmvn.json") as handle:
        json.dump(stats, handle)
    return stats


# ------------------------------------------------------------------ CLI
def _wav_inputs(wavs: tuple[str, ...], scp: str | None) -> list[tuple[str, str]]:
    if scp and wavs:
        raise KocallError("give WAV files or --scp, not both")
    if scp:
        table = read_table(scp)
        return [(u, table[u]) for u in sorted(table, key=lambda k: k.encode("utf-8"))]
    if not wavs:
        raise KocallError("no input: give WAV files or --scp wav.scp")
    utts: dict[str, str] = {}
    from kocall.datadir import utt_id_for_file

    for wav in wavs:
        utt_id = utt_id_for_file(wav)
        if utt_id in utts:
            raise DataError(f"{where(utt_id, wav)}: two inputs share the id '{utt_id}' (also '{utts[utt_id]}')")
        utts[utt_id] = wav
    return list(utts.items())


def _write_ark_scp(out: Path, items: Iterator[tuple[str, str, np.ndarray]]) -> int:
    """OUT.ark + OUT.scp (scp paths absolute); both appear only when every utterance succeeded."""
    ark, scp = out.with_suffix(".ark").resolve(), out.with_suffix(".scp")
    with atomic_write(ark, "wb") as handle:
        written = write_ark(handle, items)
    with atomic_write(scp) as handle:
        handle.writelines(f"{utt_id} {ark}:{offset}\n" for utt_id, offset, _ in written)
    return len(written)


def _write_npy(out: Path, items: Iterator[tuple[str, str, np.ndarray]], single: bool) -> int:
    """OUT.npy for one input, else OUT/<utt>.npy; files are renamed in only after all succeeded."""
    if single:
        (utt_id, spec, mat), = list(items)
        with atomic_write(out, "wb") as handle:
            np.save(handle, mat)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fbank.", suffix=".tmp", dir=out))
    try:
        count = 0
        for utt_id, spec, mat in items:
            if "/" in utt_id or "\\" in utt_id or "\0" in utt_id or utt_id.startswith("."):
                # the id becomes a file name: '../../x' would write outside --out
                raise DataError(f"{where(utt_id, spec)}: an utterance id used as a file name may not hold "
                                "'/', '\\' or start with '.'")
            np.save(staging / f"{utt_id}.npy", mat)
            count += 1
        for path in staging.iterdir():
            os.replace(path, out / path.name)
        return count
    finally:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)


@click.command("fbank")
@click.option("--config", "conf", default=None, type=click.Path(dir_okay=False),
              help="front-end config (default conf/fbank.yaml; e.g. conf/fbank_whisper.yaml)")
@click.option("--model", "model_dir", default=None, type=click.Path(file_okay=False),
              help="a model dir: use the front end it declares (its fbank.yaml) instead of --config")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(DEVICES),
              help="where the feature kernel runs (cuda: the same features within 1e-4)")
@click.option("--scp", default=None, type=click.Path(dir_okay=False), help="a wav.scp instead of WAV files")
@click.option("--out", required=True, type=click.Path(),
              help="X.ark or X.scp: kaldiio ark + scp; X.npy: one input; else a directory of <utt>.npy")
@allow_pipes_option
@click.argument("wavs", nargs=-1, type=click.Path(dir_okay=False))
def fbank_cmd(conf: str | None, model_dir: str | None, device: str, scp: str | None, out: str,
              wavs: tuple[str, ...]) -> None:
    """Log-mel features of WAV files (utterance id = file stem) or of a wav.scp."""
    from kocall.progress import progress_bar

    if conf and model_dir:
        raise KocallError("give --config or --model, not both (a model dir declares its own front end)")
    cfg = model_fbank_config(Path(model_dir)) if model_dir else load_fbank_config(conf or "conf/fbank.yaml")
    backend = _check_device(device)
    utts = _wav_inputs(wavs, scp)
    target = Path(out)
    items = progress_bar(iter_features(utts, cfg, backend), total=len(utts), desc="fbank",
                 unit="utt", disable=len(utts) < 20, leave=False)
    if target.suffix in (".ark", ".scp"):
        count = _write_ark_scp(target, items)
        where_to = f"{target.with_suffix('.ark')} + {target.with_suffix('.scp')}"
    elif target.suffix == ".npy":
        if len(utts) != 1:
            raise KocallError(f"--out '{out}': a .npy holds one utterance, got {len(utts)}; give a directory")
        count = _write_npy(target, items, single=True)
        where_to = str(target)
    else:
        count = _write_npy(target, items, single=False)
        where_to = f"{target}/<utt>.npy"
    click.echo(f"fbank: {count} utterances -> {where_to}")


@click.command("make-feats")
@click.option("--config", "conf", default="conf/fbank.yaml", show_default=True, type=click.Path(dir_okay=False),
              help="front-end config (copied into DATA_DIR/fbank.yaml)")
@click.option("--nj", default=2, show_default=True, type=bounded("nj"), help="parallel jobs (= ark shards)")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(DEVICES),
              help="where the feature kernel runs (cuda: the same features within 1e-4)")
@click.option("--allow-pipes", is_flag=True, help="let wav.scp entries be shell pipes (default: KOCALL_ALLOW_PIPES)")
@click.option("--cmd", default=None, help="run the --nj jobs through a backend: run.pl, 'slurm.pl --mem 4G' "
              "(default or '': in this process)")
@click.option("--job", default=None, type=bounded("job"), hidden=True, help="compute only job J of --nj (what --cmd runs)")
@click.option("--run-tag", default=None, hidden=True, help="the dispatching stage's pid@host (names of --job's temps)")
@click.argument("data_dir", type=click.Path(file_okay=False))
def make_feats_cmd(conf: str, nj: int, device: str, allow_pipes: bool, cmd: str | None, job: int | None,
                   run_tag: str | None, data_dir: str) -> None:
    """Features of a data dir: feats.scp, data/feats.<n>.ark, utt2num_frames, fbank.yaml."""
    if job is not None:
        count = make_feats_job(data_dir, conf, nj, job, device=device, allow_pipes=True if allow_pipes else None,
                               run_tag=run_tag)
        click.echo(f"{data_dir}: job {job} of {nj}: {count} utterances")
        return
    frames = make_feats(data_dir, conf, nj=nj, device=device, allow_pipes=True if allow_pipes else None,
                        cmd=cmd or None)
    click.echo(f"{data_dir}: {len(frames)} utterances, {sum(frames.values())} frames -> {data_dir}/feats.scp")


@click.command("compute-cmvn")
@click.option("--std-floor", default=CMVN_STD_FLOOR, show_default=True, type=bounded("std_floor"),
              help="smallest standard deviation a feature dimension is divided by")
@allow_pipes_option
@click.argument("data_dir", type=click.Path(file_okay=False))
def compute_cmvn_cmd(std_floor: float, data_dir: str) -> None:
    """Global CMVN of DATA_DIR/feats.scp -> DATA_DIR/cmvn.json."""
    stats = compute_cmvn(data_dir, std_floor=std_floor)
    click.echo(f"{data_dir}/cmvn.json: {stats['frames']} frames, {len(stats['mean'])} bins")
