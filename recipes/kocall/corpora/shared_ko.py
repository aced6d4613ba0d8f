"""`--corpus shared-ko`: real Korean speech from the shared folder beside the repo (../shared).

CORPUS_DIR holds `corpora/{emotiontts_ko,deeply_read_ko,kspon_sample}/transcripts.tsv` (FLAC
audio) and `text/*.txt` (LM sentences). This module turns them into the recipe's `$data`:

* **split**: train = emotiontts_ko + deeply_read_ko. Whole emotiontts_ko speakers are held
  out for `dev` and `test_heldout` (`n_dev` + `n_test` speakers, chosen with the seed among
  the speakers whose sentences the others rarely read: emotiontts has many voices reading the
  same script, and a held-out speaker whose sentences are all in train would test memory, not
  recognition). deeply_read_ko has only two speakers, both in train: holding one out would cost
  half of its phone-recorded hour and give a one-voice test. Train utterances whose sentence
  (spaces ignored, as CRR ignores them) is in a dev or test set are dropped too.
  kspon_sample becomes `test_kspon`, out of domain (spontaneous speech), never trained on.
* **channel**: every set, train and tests alike, goes through kocall.telephone (G.711, line
  noise, 300-3400 Hz) and is written as 16 kHz 16-bit WAV under `audio_dir` (default
  corpora/shared_ko_tel in the repo, which git ignores; it mirrors corpora/), one random stream
  per utterance (seed + utt id), so the audio does not depend on --nj. Files made with the
  current seed, channel config and code, newer than their source, are reused. The target domain is telephone speech,
  so the test sets are channelled too; the clean audio is not exposed as a set. emotiontts_ko is
  already 8 kHz, but studio-clean: it still needs the codec, noise and band-pass.
* **text**: kocall.text_norm.normalize_text; an utterance whose transcript normalises to
  nothing is dropped with a warning naming it and its file, and counted.
* **LM text**: `text/*.txt`, normalised the same way, deduplicated, minus every sentence equal
  (spaces ignored) to a dev or test transcript.

Nothing this writes may be committed (README: "Real speech").
"""
from __future__ import annotations

import hashlib
import os
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kocall.corpora import check_unique, read_lm_text
from kocall.corpora.tsv import read_tsv_rows
from kocall.datadir import Utterance
from kocall.errors import DataError
from kocall.fileio import atomic_write
from kocall.parallel import imap_progress
from kocall.paths import REPO_ROOT

TRAIN_CORPORA = ("emotiontts_ko", "deeply_read_ko")
HELDOUT_CORPUS = "emotiontts_ko"      # the one with enough speakers to hold some out
OOD_CORPUS = "kspon_sample"
CORPORA = (*TRAIN_CORPORA, OOD_CORPUS)
TEST_SETS = ("test_heldout", "test_kspon")
DEFAULT_AUDIO_DIR = REPO_ROOT / "corpora" / "shared_ko_tel"
MAX_SHARED = 0.1       # a held-out candidate reads at most this share of sentences others read too
CHANNEL_VERSION = "1"  # bump when the rendering below changes, to re-render everything


@dataclass
class SharedKo:
    """What prepare_shared_ko produced: the sets, the LM lines and numbers for the summary."""
    sets: dict[str, list[Utterance]]
    lm_lines: list[str]
    heldout_speakers: dict[str, list[str]]
    dropped_empty: int = 0
    dropped_overlap: int = 0
    rendered: int = 0
    up_to_date: int = 0
    lm_duplicates: int = 0
    lm_excluded: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        lines = [f"shared-ko: {name} speakers ({HELDOUT_CORPUS}): {' '.join(spk)}"
                 for name, spk in self.heldout_speakers.items()]
        lines.append(f"shared-ko: dropped {self.dropped_empty} utterances with an empty normalised transcript, "
                     f"{self.dropped_overlap} train utterances whose sentence is in dev/test")
        lines.append(f"shared-ko: telephone channel: {self.rendered} rendered, {self.up_to_date} up to date")
        lines.append(f"shared-ko: lm_text.txt: {len(self.lm_lines)} sentences ({self.lm_duplicates} duplicates, "
                     f"{self.lm_excluded} dev/test sentences removed)")
        return lines + self.notes


# ----------------------------------------------------------------------------- reading

def check_layout(corpus_dir: str | os.PathLike) -> Path:
    """CORPUS_DIR/corpora and the three corpora must exist; return CORPUS_DIR/corpora."""
    corpora = Path(corpus_dir) / "corpora"
    if not corpora.is_dir():
        raise DataError(f"shared-ko: folder '{corpora}' is missing (CORPUS_DIR must hold "
                        f"corpora/{{{','.join(CORPORA)}}} and text/; see README 'Real speech')")
    for name in CORPORA:
        if not (corpora / name).is_dir():
            raise DataError(f"shared-ko: corpus folder '{corpora / name}' is missing")
    return corpora


def text_key(text: str) -> str:
    """Identity of a sentence for overlap checks: spaces do not count (CRR ignores them)."""
    return "".join(text.split())


def read_corpus(corpora: Path, name: str, punct: str) -> tuple[list[Utterance], int]:
    """Read CORPUS/transcripts.tsv with normalised text; (utterances, number dropped as empty)."""
    path = corpora / name / "transcripts.tsv"
    if not path.is_file():
        raise DataError(f"shared-ko: manifest '{path}' is missing")
    return read_tsv_rows(path, punct, drop_empty=True)


def limit_per_corpus(utts: list[Utterance], max_utts: int) -> list[Utterance]:
    """At most `max_utts` utterances, taken round-robin over the sorted speakers (file order
    within a speaker), so that a small limit still leaves speakers to hold out. 0 = all."""
    if max_utts <= 0 or len(utts) <= max_utts:
        return utts
    queues: dict[str, list[Utterance]] = defaultdict(list)
    for utt in utts:
        queues[utt.speaker].append(utt)
    picked: list[Utterance] = []
    depth = 0
    while len(picked) < max_utts:
        for speaker in sorted(queues):
            if depth < len(queues[speaker]) and len(picked) < max_utts:
                picked.append(queues[speaker][depth])
        depth += 1
    return picked


# ----------------------------------------------------------------------------- split

def shared_fraction(utts: list[Utterance]) -> dict[str, float]:
    """Per speaker: the share of their utterances whose sentence another speaker also reads."""
    readers: dict[str, set[str]] = defaultdict(set)
    for utt in utts:
        readers[text_key(utt.text)].add(utt.speaker)
    total: dict[str, int] = defaultdict(int)
    shared: dict[str, int] = defaultdict(int)
    for utt in utts:
        total[utt.speaker] += 1
        shared[utt.speaker] += len(readers[text_key(utt.text)]) > 1
    return {spk: shared[spk] / total[spk] for spk in total}


def pick_heldout_speakers(utts: list[Utterance], n_dev: int, n_test: int, seed: int) -> tuple[list[str], list[str]]:
    """(dev speakers, test speakers), disjoint, deterministic for (utterances, seed).

    Speakers reading few sentences that others read (<= MAX_SHARED) come first, in a seeded
    random order; the rest follow, least shared first. At least one speaker stays in train.
    """
    if n_dev < 1 or n_test < 1:
        raise DataError(f"shared-ko: need at least one dev and one test speaker, got {n_dev} and {n_test}")
    frac = shared_fraction(utts)
    speakers = sorted(frac)
    if len(speakers) <= n_dev + n_test:
        raise DataError(f"shared-ko: {HELDOUT_CORPUS} has {len(speakers)} speakers, too few to hold out "
                        f"{n_dev} for dev and {n_test} for test and keep one for train")
    rng = random.Random(f"shared-ko-{seed}")
    tiebreak = {spk: rng.random() for spk in speakers}
    ranked = sorted(speakers, key=lambda s: (frac[s] > MAX_SHARED, frac[s] if frac[s] > MAX_SHARED else 0.0,
                                             tiebreak[s]))
    chosen = ranked[:n_dev + n_test]
    rng.shuffle(chosen)
    return sorted(chosen[:n_dev]), sorted(chosen[n_dev:])


def split_sets(corpus_utts: dict[str, list[Utterance]], n_dev: int, n_test: int,
               seed: int) -> tuple[dict[str, list[Utterance]], dict[str, list[str]], int]:
    """(sets, held-out speakers per set, train utterances dropped for sharing a dev/test sentence)."""
    dev_spk, test_spk = pick_heldout_speakers(corpus_utts[HELDOUT_CORPUS], n_dev, n_test, seed)
    heldout = set(dev_spk) | set(test_spk)
    pool = [u for name in TRAIN_CORPORA for u in corpus_utts[name]]
    sets = {"dev": [u for u in pool if u.speaker in set(dev_spk)],
            "test_heldout": [u for u in pool if u.speaker in set(test_spk)],
            "test_kspon": list(corpus_utts[OOD_CORPUS])}
    held_keys = {text_key(u.text) for name in ("dev", *TEST_SETS) for u in sets[name]}
    candidates = [u for u in pool if u.speaker not in heldout]
    sets["train"] = [u for u in candidates if text_key(u.text) not in held_keys]
    check_unique(sets["train"] + sets["dev"] + sets["test_heldout"] + sets["test_kspon"], "CORPUS_DIR/corpora")
    return sets, {"dev": dev_spk, "test_heldout": test_spk}, len(candidates) - len(sets["train"])


# ----------------------------------------------------------------------------- telephone channel

def utterance_seed(seed: int, utt_id: str) -> list[int]:
    """A random stream per utterance from (seed, utt id): the same audio whatever --nj is.
    (hashlib, not hash(): Python salts str hashes per process.)"""
    return [seed, int.from_bytes(hashlib.sha256(utt_id.encode("utf-8")).digest()[:8], "little")]


def channel_digest(seed: int) -> str:
    """What the rendered audio depends on besides the source file: seed, channel config and code."""
    from kocall import telephone

    code = Path(telephone.__file__).read_bytes()
    parts = [CHANNEL_VERSION, str(seed), repr(telephone.ChannelConfig()), hashlib.sha256(code).hexdigest()]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def _render_one(job: tuple[str, str, str, int, bool]) -> tuple[str, float, bool]:
    """Channel one utterance into its WAV; (utt id, seconds, rendered?). Skips an up-to-date file."""
    import soundfile as sf

    from kocall.audio import load_audio, write_wav
    from kocall.telephone import ChannelConfig, telephone_channel

    utt_id, src, dst, seed, may_skip = job
    out = Path(dst)
    if may_skip and out.is_file() and out.stat().st_mtime >= Path(src).stat().st_mtime:
        try:
            info = sf.info(dst)
            return utt_id, info.frames / info.samplerate, False
        except (RuntimeError, sf.LibsndfileError):
            pass  # unreadable leftover: render it again
    samples, rate = load_audio(src, utt_id)
    cfg = ChannelConfig()
    audio = telephone_channel(samples, rate, np.random.default_rng(utterance_seed(seed, utt_id)), cfg)
    write_wav(out, audio, cfg.out_rate)  # atomic: temp file + rename
    return utt_id, audio.size / cfg.out_rate, True


def channelled_path(audio_dir: Path, corpora: Path, src: str) -> Path:
    """audio_dir mirrors corpora/: emotiontts_ko/audio/ada/ada00001.flac -> .../ada00001.wav."""
    return audio_dir / Path(src).resolve().relative_to(corpora.resolve()).with_suffix(".wav")


def apply_channel(sets: dict[str, list[Utterance]], corpora: Path, audio_dir: Path, seed: int,
                  nj: int, cmd: str | None = None) -> tuple[int, int]:
    """Point every utterance at its channelled WAV (rendered where missing or stale); (rendered, skipped).

    audio_dir/.done holds channel_digest: it is removed before rendering and written after, so
    files are reused only when every one was made with the current seed, config and code.
    cmd: run the --nj jobs through run.pl, slurm.pl... (`channel_job`) instead of processes here.
    """
    utts = {u.utt_id: u for name in sorted(sets) for u in sets[name]}
    stamp = audio_dir / ".done"
    digest = channel_digest(seed)
    fresh = stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == digest
    stamp.unlink(missing_ok=True)
    targets = {u.utt_id: channelled_path(audio_dir, corpora, u.wav) for u in utts.values()}
    for target in set(t.parent for t in targets.values()):
        target.mkdir(parents=True, exist_ok=True)
    jobs = [(u.utt_id, u.wav, str(targets[u.utt_id]), seed, fresh) for u in utts.values()]
    rendered = 0
    results = (imap_progress(_render_one, jobs, nj, "telephone channel") if cmd is None
               else _channel_dispatched(jobs, audio_dir, nj, cmd))
    for utt_id, seconds, did_render in results:
        utt = utts[utt_id]
        utt.wav, utt.duration = str(targets[utt_id]), seconds
        rendered += did_render
    with atomic_write(stamp) as handle:
        handle.write(digest + "\n")
    return rendered, len(jobs) - rendered


def channel_job(job_list: Path, nj: int, job: int) -> int:
    """Job `job` of `nj`: channel its contiguous part of the list apply_channel(cmd=...) wrote;
    its results go to <list>.<job>.json, written last. Returns the number of utterances."""
    import json

    from kocall.fileio import read_json
    from kocall.jobs import split_contiguous

    parts = split_contiguous([tuple(j) for j in read_json(job_list, "job list")], nj)
    results = [_render_one(j) for j in parts[job - 1]]
    with atomic_write(job_list.with_name(f"{job_list.name}.{job}.json")) as handle:
        json.dump(results, handle)
    return len(results)


def _channel_dispatched(jobs: list[tuple[str, str, str, int, bool]], audio_dir: Path, nj: int,
                        cmd: str) -> list[tuple[str, float, bool]]:
    """The channel as jobs through `cmd`, logs in audio_dir/log/channel.<n>.log."""
    import json
    import shutil
    import sys

    from kocall.fileio import remove_stale_temps, temp_prefix
    from kocall.jobs import dispatch, split_contiguous

    n = len(split_contiguous(jobs, nj))
    # The job files live in a kocall temp dir of this process: a killed run's are removed by the
    # next, whatever its --nj, and never share a name with jobs of that run still running.
    audio_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(audio_dir)
    work = audio_dir / f"{temp_prefix('channel_jobs')}run.tmp"
    work.mkdir()
    job_list = work / "jobs.json"
    with atomic_write(job_list) as handle:
        json.dump(jobs, handle)
    try:
        dispatch(cmd, n, audio_dir / "log" / "channel.JOB.log",
                 [sys.executable, "-m", "kocall.corpora.shared_ko", str(job_list), str(n), "JOB"],
                 "shared-ko telephone channel")
        return [(u, s, r) for j in range(1, n + 1)
                for u, s, r in json.loads(job_list.with_name(f"{job_list.name}.{j}.json").read_text(encoding="utf-8"))]
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------- LM text

def lm_sentences(text_dir: Path, punct: str, exclude: set[str]) -> tuple[list[str], int, int]:
    """(sentences, duplicates, excluded) from text_dir/*.txt in file-name order; `exclude` holds
    text_key()s of dev/test transcripts."""
    lines: list[str] = []
    seen: set[str] = set()
    duplicates = excluded = 0
    for path in sorted(text_dir.glob("*.txt")):
        for line in read_lm_text(path, punct):
            key = text_key(line)
            if key in exclude:
                excluded += 1
            elif line in seen:
                duplicates += 1
            else:
                seen.add(line)
                lines.append(line)
    return lines, duplicates, excluded


# ----------------------------------------------------------------------------- everything

def prepare_shared_ko(corpus_dir: str | os.PathLike, punct: str = "strip", seed: int = 1, nj: int = 2,
                      audio_dir: str | os.PathLike | None = None, max_utts_per_corpus: int = 0,
                      n_dev: int = 4, n_test: int = 4, cmd: str | None = None) -> SharedKo:
    """Read, split, channel and collect LM text; the caller writes $data (corpora.write_prepared)."""
    corpora = check_layout(corpus_dir)
    audio_dir = Path(audio_dir) if audio_dir else DEFAULT_AUDIO_DIR
    if audio_dir.resolve().is_relative_to(Path(corpus_dir).resolve()):
        raise DataError(f"shared-ko: audio dir '{audio_dir}' is inside CORPUS_DIR '{corpus_dir}'; "
                        "the shared data is read-only, choose a folder in the repo")
    corpus_utts: dict[str, list[Utterance]] = {}
    dropped_empty = 0
    for name in CORPORA:
        utts, dropped = read_corpus(corpora, name, punct)
        corpus_utts[name] = limit_per_corpus(utts, max_utts_per_corpus)
        dropped_empty += dropped
    sets, heldout, dropped_overlap = split_sets(corpus_utts, n_dev, n_test, seed)
    rendered, up_to_date = apply_channel(sets, corpora, audio_dir, seed, nj, cmd)
    exclude = {text_key(u.text) for name in ("dev", *TEST_SETS) for u in sets[name]}
    text_dir = Path(corpus_dir) / "text"
    notes = []
    if text_dir.is_dir():
        lm_lines, duplicates, excluded = lm_sentences(text_dir, punct, exclude)
    else:
        lm_lines, duplicates, excluded = [], 0, 0
        notes.append(f"shared-ko: warning: no LM text folder '{text_dir}'; lm_text.txt is empty")
    return SharedKo(sets=sets, lm_lines=lm_lines, heldout_speakers=heldout, dropped_empty=dropped_empty,
                    dropped_overlap=dropped_overlap, rendered=rendered, up_to_date=up_to_date,
                    lm_duplicates=duplicates, lm_excluded=excluded, notes=notes)


def channel_job_main(argv: list[str] | None = None) -> None:
    """`python -m kocall.corpora.shared_ko LIST NJ JOB`: what `kocall prep shared-ko --cmd` runs."""
    import argparse

    from kocall.errors import KocallError

    parser = argparse.ArgumentParser(prog="python -m kocall.corpora.shared_ko",
                                     description="One job of the shared-ko telephone channel (what "
                                                 "`kocall prep shared-ko --nj N --cmd run.pl` runs).")
    parser.add_argument("job_list", type=Path, help="the list of utterances the stage wrote")
    parser.add_argument("nj", type=int, help="number of jobs")
    parser.add_argument("job", type=int, help="this job's number, 1..NJ")
    args = parser.parse_args(argv)
    if not 1 <= args.job <= args.nj:
        parser.error(f"JOB must be in 1..{args.nj}, not {args.job}")
    try:
        count = channel_job(args.job_list, args.nj, args.job)
    except KocallError as err:
        raise SystemExit(f"Error: {err.format_message()}") from None
    print(f"telephone channel: job {args.job} of {args.nj}: {count} utterances")


if __name__ == "__main__":
    channel_job_main()
