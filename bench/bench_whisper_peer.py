"""Benchmark: our CTC model against the recogniser a user would pick instead, Whisper base.

The same Kaldi data dirs (wav.scp + text) are decoded by
  peer  Whisper base (OpenAI, MIT, 74 M parameters) through faster-whisper (CTranslate2) on the
        CPU: compute_type int8, language "ko", beam_size 5, vad_filter False, without_timestamps
        True, condition_on_previous_text False, other options at faster-whisper's defaults
        (temperature fallback included). The model is the CTranslate2 folder that
        `bash bench/install_peers.sh whisper` assembles in tools/whisper-base-ct2.
  ours  each model dir given with --ours (an experiment dir AMDIR means AMDIR/final and, when
        present, AMDIR/final_int8), greedy and CTC prefix beam search + n-gram LM with the LM
        weight and bonus tuned on dev (AMDIR/decode_dev_beam/best_weights.json, else the
        report's defaults), measured by kocall.report, the finals-triple measurement of
        run.sh stage 7 (features + network + search, one utterance at a time, after an untimed
        warm-up pass).
at 1 and 2 CPU threads (--threads; CTranslate2's cpu_threads for the peer, torch and numba
threads for ours), in one run, and one table: CRR and CER (kocall.scoring: spaces removed, the
hackathon's metric), RTF = processing seconds / audio seconds over the whole set at each
thread count, model size (MB = 10^6 bytes on disk: the peer's model.bin, our model.pt) and our
RTF as a fraction of the peer's at the same thread count.

Both systems read the same audio: each wav.scp entry through kocall.audio.load_audio, resampled
to 16 kHz where needed (kocall.audio.resample_audio), into memory before timing (disk speed does
not count). The peer gets the float waveform (int16 scale / 32768); its timing covers its own
log-mel, its encoder on the input padded to 30 s and its token-by-token beam search. It is warmed
up on the first --peer-warmup utterances of each set (its encoder input has one shape, 30 s,
whatever the utterance, so a few suffice; 0 = a full untimed pass, as ours gets).

Whisper writes digits, punctuation and Latin letters; our references (data/<set>/text) are
already normalised. Each peer hypothesis goes through the same kocall.text_norm.normalize_text,
with the recipe's punctuation mode (--punct auto: keep-final when a reference of the set ends
in ? . or !, else strip), before scoring.

The peer's raw hypotheses and timings are cached per set in bench/out/whisper_peer/<data>/
(<set>.json, plus <set>.hyp.txt normalised, for kocall score): --reuse-peer takes a set from the
cache when its key (wav.scp and the audio files it lists, the peer's model and settings,
--max-utts) is unchanged and it holds every requested thread count, so that a later run with
--ours does not decode with Whisper again. A stale or missing cache entry is decoded afresh.

    bash bench/install_peers.sh whisper        # once: faster-whisper + tools/whisper-base-ct2
    .venv/bin/python bench/bench_whisper_peer.py --data data_ko --sets test_heldout test_kspon dev --peer-only
    .venv/bin/python bench/bench_whisper_peer.py --data data_ko --sets test_heldout test_kspon \\
        --ours exp_ko/whisper_base_ctc_char --reuse-peer [--lang data_ko/lang_char]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

from bench_common import cpu_name

ROOT = Path(__file__).resolve().parent.parent
PEER_MODEL = ROOT / "tools" / "whisper-base-ct2"
CACHE_DIR = ROOT / "bench" / "out" / "whisper_peer"
RESULTS = ROOT / "bench" / "RESULTS_whisper_peer.md"
SAMPLE_RATE = 16000
MB = 1e6
# What faster-whisper is asked to do (Korean, beam 5, no VAD, no timestamps); part of the cache key.
PEER_OPTIONS = {"language": "ko", "beam_size": 5, "vad_filter": False, "without_timestamps": True,
                "condition_on_previous_text": False}
PEER_COMPUTE_TYPE = "int8"
PEER_PACKAGES = ("faster-whisper", "ctranslate2")


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


class Timing(NamedTuple):
    seconds: float                         # wall clock
    cpu_seconds: float                     # process CPU time, all threads
    hyps: dict[str, str]                   # utterance id -> text
    loadavg: float                         # the machine's 1-minute load average at the end


@dataclass
class Row:
    """One line of the table: a system on a set."""

    system: str
    set_name: str
    crr: float
    rtf: dict[int, float]                  # thread count -> RTF (wall seconds / audio seconds)
    cpu_rtf: dict[int, float]              # thread count -> process CPU seconds / audio seconds
    size_mb: float
    utts: int
    audio_seconds: float
    is_peer: bool = False
    notes: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------ peer


def punct_mode(refs: dict[str, str], requested: str) -> str:
    """The recipe's punctuation mode: given, or read from the references (auto)."""
    if requested != "auto":
        return requested
    return "keep-final" if any(re.search(r"[?.!]$", t) for t in refs.values()) else "strip"


def normalise_hyps(raw: dict[str, str], punct: str) -> dict[str, str]:
    from kocall.text_norm import normalize_text

    return {utt: normalize_text(text, punct) for utt, text in raw.items()}


def peer_cache_key(data: Path, set_name: str, model_dir: Path, max_utts: int) -> str:
    """Hash of what the peer's hypotheses depend on (kocall.stamp: audio by content, model.bin by size+mtime)."""
    from kocall.fileio import read_table
    from kocall.stamp import hash_inputs

    wav_scp = data / set_name / "wav.scp"
    audio = [v for v in read_table(wav_scp).values() if Path(v).is_file()]
    settings = [json.dumps(PEER_OPTIONS, sort_keys=True), PEER_COMPUTE_TYPE, f"max_utts={max_utts}",
                *(f"{name}={package_version(name)}" for name in PEER_PACKAGES)]
    return hash_inputs([str(wav_scp), *audio, str(model_dir / "model.bin"), str(model_dir / "config.json")],
                       settings)


def load_peer(model_dir: Path, threads: int):
    from faster_whisper import WhisperModel

    from kocall.errors import KocallError

    if not (model_dir / "model.bin").is_file():
        raise KocallError(f"peer model '{model_dir / 'model.bin'}' is missing: run `bash bench/install_peers.sh whisper`")
    return WhisperModel(str(model_dir), device="cpu", compute_type=PEER_COMPUTE_TYPE, cpu_threads=threads,
                        num_workers=1)


def peer_transcribe(model, samples) -> str:
    """Whisper's text for one utterance (int16-scale float samples at 16 kHz)."""
    segments, _info = model.transcribe(samples / 32768.0, **PEER_OPTIONS)
    return " ".join(s.text.strip() for s in segments).strip()  # the generator decodes as it is read


def time_system(transcribe: Callable[[Any], str], utts: list, warmup: int, label: str) -> Timing:
    """One timed pass over a set, after an untimed warm-up on its first `warmup` utterances
    (0: all of them). Wall seconds and the process's CPU seconds (all threads): the CPU time
    moves much less than the wall time when other jobs share the machine."""
    for utt in utts[:warmup] if warmup > 0 else utts:
        transcribe(utt.samples)
    hyps: dict[str, str] = {}
    cpu0, start = time.process_time(), time.perf_counter()
    for i, utt in enumerate(utts, 1):
        hyps[utt.utt_id] = transcribe(utt.samples)
        if i % 25 == 0 or i == len(utts):
            print(f"  {label}: {i}/{len(utts)} utterances, {time.perf_counter() - start:.0f} s",
                  file=sys.stderr, flush=True)
    return Timing(time.perf_counter() - start, time.process_time() - cpu0, hyps, os.getloadavg()[0])


def peer_cache_dir(args) -> Path:
    return CACHE_DIR / Path(args.data).resolve().name


def run_peer_set(args, set_name: str) -> dict[str, Any]:
    """The peer's cache entry for a set: reused when the key matches, else decoded (and saved)."""
    from kocall.fileio import atomic_write
    from kocall.report import ReportConfig, load_utts

    cache = peer_cache_dir(args) / f"{set_name}.json"
    key = peer_cache_key(Path(args.data), set_name, args.peer_model, args.max_utts)
    entry = json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else None
    if entry and entry.get("key") == key and args.reuse_peer:
        if all(str(n) in entry["timing"] for n in args.threads):
            print(f"peer {set_name}: reusing {cache}", file=sys.stderr)
            return entry
    if args.reuse_peer:
        print(f"peer {set_name}: no usable cache entry in {cache}; decoding", file=sys.stderr)
    utts = load_utts(ReportConfig(data=args.data, sets=[set_name], max_utts=args.max_utts), SAMPLE_RATE)
    audio_seconds = sum(u.seconds for u in utts)
    entry = {"key": key, "set": set_name, "utts": len(utts), "audio_seconds": audio_seconds,
             "options": {**PEER_OPTIONS, "compute_type": PEER_COMPUTE_TYPE}, "timing": {}, "hyps": None,
             "hyps_differ": {}}
    for n in args.threads:
        print(f"peer {set_name}: {len(utts)} utterances, {audio_seconds:.0f} s of audio, {n} thread(s)",
              file=sys.stderr, flush=True)
        model = load_peer(args.peer_model, n)
        wall, cpu, hyps, load = time_system(lambda x: peer_transcribe(model, x), utts, args.peer_warmup, "peer")
        entry["timing"][str(n)] = {"seconds": wall, "cpu_seconds": cpu, "rtf": wall / audio_seconds, "loadavg": load}
        if entry["hyps"] is None:
            entry["hyps"] = hyps
        else:  # int8 GEMMs may round differently with another thread count: say how often
            entry["hyps_differ"][str(n)] = sum(hyps[u] != entry["hyps"][u] for u in hyps)
    entry["decoded"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with atomic_write(cache) as handle:
        handle.write(json.dumps(entry, ensure_ascii=False, indent=1) + "\n")
    return entry


def peer_row(args, set_name: str, refs: dict[str, str]) -> Row:
    from kocall.fileio import write_table
    from kocall.scoring import score_texts

    entry = run_peer_set(args, set_name)
    decoded = entry.get("decoded") or time.strftime(
        "%Y-%m-%d %H:%M UTC", time.gmtime((peer_cache_dir(args) / f"{set_name}.json").stat().st_mtime))
    punct = punct_mode(refs, args.punct)
    hyps = normalise_hyps(entry["hyps"], punct)
    write_table(peer_cache_dir(args) / f"{set_name}.hyp.txt", hyps)  # for kocall score
    score = score_texts({u: refs[u] for u in hyps}, hyps)
    return Row(system="Whisper base (faster-whisper int8, beam 5)", set_name=set_name, crr=score.crr,
               rtf={n: entry["timing"][str(n)]["rtf"] for n in args.threads},
               cpu_rtf={n: entry["timing"][str(n)]["cpu_seconds"] / entry["audio_seconds"] for n in args.threads},
               size_mb=(args.peer_model / "model.bin").stat().st_size / MB, utts=entry["utts"],
               audio_seconds=entry["audio_seconds"], is_peer=True,
               notes={"punct": punct, "hyps_differ": entry["hyps_differ"], "decoded": decoded,
                      "loadavg": {n: entry["timing"][str(n)]["loadavg"] for n in args.threads}})


# ------------------------------------------------------------------------------ ours


def our_model_dirs(paths: list[str]) -> list[Path]:
    """Model dirs from --ours: a model dir itself, or an experiment dir's final (+ final_int8)."""
    from kocall.errors import KocallError

    dirs: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if (path / "model.pt").is_file():
            dirs.append(path)
        elif (path / "final" / "model.pt").is_file():
            dirs += [d for d in (path / "final", path / "final_int8") if (d / "model.pt").is_file()]
        else:
            raise KocallError(f"--ours '{path}': neither a model dir (model.pt) nor an experiment dir (final/model.pt)")
    return dirs


def find_lm(model_dir: Path, data: Path, lang: str | None) -> Path | None:
    """lm.arpa of --lang, else of the data's lang dir whose tokens.txt is the model's."""
    from kocall.errors import KocallError

    if lang:
        arpa = Path(lang) / "lm" / "lm.arpa"
        if not arpa.is_file():
            raise KocallError(f"--lang '{lang}': '{arpa}' is missing (run.sh stage 3 writes it)")
        return arpa
    tokens = (model_dir / "tokens.txt").read_bytes()
    for cand in sorted(data.glob("lang_*")):
        if (cand / "tokens.txt").is_file() and (cand / "tokens.txt").read_bytes() == tokens \
                and (cand / "lm" / "lm.arpa").is_file():
            return cand / "lm" / "lm.arpa"
    return None


def our_rows(args, model_dir: Path, set_name: str, refs: dict[str, str]) -> list[Row]:
    """Greedy and beam+LM rows of one model dir on one set: kocall.report's recogniser (features
    + network + search, one utterance at a time) timed like the peer, after a full warm-up pass
    (torch builds a primitive per new input length on first sight, see kocall.report)."""
    from kocall.report import MODE_TITLES, ReportConfig, beam_weights, load_utts, make_recognizer, set_threads
    from kocall.scoring import score_texts

    lm = find_lm(model_dir, Path(args.data), args.lang)
    cfg = ReportConfig(data=args.data, sets=[set_name], lm=str(lm) if lm else None, max_utts=args.max_utts,
                       threads=tuple(args.threads))
    print(f"ours {model_dir} on {set_name}: LM {lm or 'none (greedy only)'}", file=sys.stderr, flush=True)
    weights = beam_weights(model_dir, cfg)
    rec = make_recognizer(model_dir, "cpu", cfg, weights)
    utts = load_utts(cfg, rec.fbank_cfg.sample_rate)
    audio_seconds = sum(u.seconds for u in utts)
    rows = []
    for mode in rec.modes:
        timings = {}
        for n in args.threads:
            set_threads(n)
            timings[n] = time_system(lambda x: rec.recognize(x, mode), utts, 0, f"ours {mode} {n} thr")
        hyps = timings[args.threads[0]].hyps
        rows.append(Row(system=f"ours {model_dir.parent.name}/{model_dir.name} {MODE_TITLES[mode]}",
                        set_name=set_name, crr=score_texts({u: refs[u] for u in hyps}, hyps).crr,
                        rtf={n: t.seconds / audio_seconds for n, t in timings.items()},
                        cpu_rtf={n: t.cpu_seconds / audio_seconds for n, t in timings.items()},
                        size_mb=(model_dir / "model.pt").stat().st_size / MB, utts=len(utts),
                        audio_seconds=audio_seconds, notes={"beam_weights": weights, "lm": str(lm) if lm else None,
                                                            "loadavg": {n: t.loadavg for n, t in timings.items()}}))
    return rows


# ------------------------------------------------------------------------------ table


def _ratio(ours: float, peer: float) -> str:
    return f"{ours / peer:.3f}" if peer > 0 else "n/a"


def render_table(rows: list[Row], threads: list[int]) -> list[str]:
    """One line per system and set; the ratio columns divide by the peer's figure on that set."""
    head = (["system", "set", "utts", "CRR", "CER"] + [f"RTF {n} thr" for n in threads]
            + [f"CPU-RTF {n} thr" for n in threads] + ["size MB"]
            + [f"RTF / peer's {n} thr" for n in threads] + [f"CPU-RTF / peer's {n} thr" for n in threads]
            + ["load avg"])
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    peers = {r.set_name: r for r in rows if r.is_peer}
    for r in rows:
        peer = peers.get(r.set_name)
        cells = [r.system, r.set_name, str(r.utts), f"{r.crr:.2f}", f"{100 - r.crr:.2f}"]
        cells += [f"{r.rtf[n]:.4f}" for n in threads] + [f"{r.cpu_rtf[n]:.4f}" for n in threads]
        cells.append(f"{r.size_mb:.1f}")
        cells += [_ratio(r.rtf[n], peer.rtf[n]) if peer else "n/a" for n in threads]
        cells += [_ratio(r.cpu_rtf[n], peer.cpu_rtf[n]) if peer else "n/a" for n in threads]
        cells.append(" / ".join(f"{r.notes['loadavg'][n]:.1f}" for n in threads) if "loadavg" in r.notes else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_markdown(rows: list[Row], args, command: str) -> str:
    import torch

    audio = {r.set_name: (r.utts, r.audio_seconds) for r in rows if r.is_peer} or \
        {r.set_name: (r.utts, r.audio_seconds) for r in rows}
    peer_notes = {r.set_name: r.notes for r in rows if r.is_peer}
    lines = ["# Whisper base (faster-whisper) beside our CTC model on real speech", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; CPU {cpu_name()}, {os.cpu_count()} cores, "
             f"no GPU used; a shared machine: the last column gives the 1-minute load average at the end of "
             "each timed pass (at 1 / 2 threads), above the 2 cores the wall-clock RTF counts other jobs' time; "
             + ", ".join(f"{name} {package_version(name)}" for name in PEER_PACKAGES) + f", torch {torch.__version__}.",
             "",
             f"Command: `{command}`", "",
             "Sets: " + ", ".join(f"{s} ({n} utts, {sec / 60:.1f} min)" for s, (n, sec) in audio.items()) + ".", "",
             "CRR = (1 - CER) x 100 with spaces removed (kocall.scoring); the peer's text normalised by "
             "kocall.text_norm as the references are. RTF = wall seconds / audio seconds over the set, one "
             "utterance at a time, audio in memory; CPU-RTF = the process's CPU seconds (all its threads) / "
             "audio seconds, which other jobs on the machine inflate much less than the wall time (at 1 "
             "thread it is the better estimate of an idle machine's RTF, though still above it). Size: MB on disk (peer: model.bin, float16, "
             "quantised to int8 on load; ours: model.pt). See bench/README.md.", ""]
    lines += render_table(rows, args.threads)
    if peer_notes:
        lines += ["", "Peer: " + "; ".join(
            f"{s}: decoded {n['decoded']}, text normalised with punct {n['punct']}"
            + (f", hypotheses differing across thread counts {n['hyps_differ']}" if any(n["hyps_differ"].values()) else "")
            for s, n in peer_notes.items()) + "."]
    ours = {r.system.rsplit(" ", 1)[0]: r.notes for r in rows if not r.is_peer and r.notes.get("beam_weights")}
    for name, n in ours.items():
        lines.append(f"{name}: beam+LM weights {n['beam_weights']['values']} from {n['beam_weights']['source']}, "
                     f"LM {n['lm']}.")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="data root holding the sets (e.g. data_ko)")
    parser.add_argument("--sets", nargs="+", default=None, help="set names (default: DATA/test_sets)")
    parser.add_argument("--ours", nargs="*", default=[], help="experiment dirs (AMDIR: final + final_int8) or model dirs")
    parser.add_argument("--lang", default=None, help="lang dir whose lm/lm.arpa serves beam+LM "
                        "(default: the DATA/lang_* whose tokens.txt is the model's)")
    parser.add_argument("--peer-only", action="store_true", help="only the Whisper peer")
    parser.add_argument("--reuse-peer", action="store_true", help="take the peer's results from the cache when current")
    parser.add_argument("--peer-model", type=Path, default=PEER_MODEL, help="CTranslate2 Whisper folder")
    parser.add_argument("--peer-warmup", type=int, default=5, help="untimed peer utterances per set (0 = all)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--punct", choices=["auto", "strip", "keep-final"], default="auto",
                        help="normalisation of the peer's text (auto: from the references)")
    parser.add_argument("--max-utts", type=int, default=0, help="per set; 0 = all")
    parser.add_argument("--out", type=Path, default=RESULTS, help="Markdown table to write")
    parser.add_argument("--json", type=Path, default=None, help="every figure as JSON")
    args = parser.parse_args(argv)

    from kocall.datadir import load_data_dir
    from kocall.errors import KocallError
    from kocall.fileio import atomic_write

    try:
        if min(args.threads) < 1:
            raise KocallError("--threads needs positive counts")
        if not args.peer_only and not args.ours:
            raise KocallError("give --ours AMDIR (or model dirs), or --peer-only")
        sets = args.sets or (Path(args.data) / "test_sets").read_text(encoding="utf-8").split()
        model_dirs = [] if args.peer_only else our_model_dirs(args.ours)
        rows: list[Row] = []
        for set_name in sets:
            refs = load_data_dir(Path(args.data) / set_name).text
            rows.append(peer_row(args, set_name, refs))
            for model_dir in model_dirs:
                rows += our_rows(args, model_dir, set_name, refs)
    except (KocallError, OSError) as err:
        message = err.format_message() if isinstance(err, KocallError) else str(err)
        print(f"bench_whisper_peer: {message}", file=sys.stderr)
        return 1
    command = "python bench/bench_whisper_peer.py " + " ".join(argv if argv is not None else sys.argv[1:])
    markdown = render_markdown(rows, args, command)
    print(markdown)
    with atomic_write(args.out) as handle:
        handle.write(markdown)
    if args.json:
        with atomic_write(args.json) as handle:
            json.dump([r.__dict__ for r in rows], handle, ensure_ascii=False, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
