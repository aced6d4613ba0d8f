"""A long two-channel "call" built from test sets, and how well `kocall decode` transcribes it.

    python bench/long_call.py make --minutes 30 --out DIR DATA/test DATA/test_hotwords
        DIR/call.wav     stereo: channel 1 the "agent", channel 2 the "customer"; turns alternate,
                         each utterance file whole, separated by pauses of 0.3-1.5 s; outside its
                         utterances a channel carries steady line noise at the median noise
                         floor of the utterances (one line per channel, as on a real call)
        DIR/truth.json   per turn: channel, utterance id, text, file span and speech span (s)
        DIR/wav.scp      the utterances used (for per-utterance decoding of the same audio)
    kocall decode --model PKG --format ctm --out DIR/call.ctm DIR/call.wav
    kocall decode --model PKG --scp DIR/wav.scp --out DIR/per_utt.txt
    python bench/long_call.py score DIR    # -> DIR/score.json

Scores, per channel and overall:
* CRR of the long-file decode (the CTM's words in time order) and of the per-utterance decode
  (each utterance decoded whole, in the same order), both against the concatenated references:
  the difference is what segmentation costs.
* Word times: the share of words inside some utterance's file span (0 and 100 ms tolerance),
  and per utterance the error of its first word's start against its speech onset and of its
  last word's end against its speech offset (the onset/offset: the first/last 10 ms frame of
  the utterance file 12 dB above its own noise floor), median and 95th percentile in ms. Each
  word belongs to the utterance whose file span is nearest its middle, on its channel.

The file is written block by block, never held whole.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

CHANNELS = ("agent", "customer")
CTM_CHANNELS = {"A": "agent", "B": "customer"}


def frame_db(x: np.ndarray, rate: int) -> np.ndarray:
    hop = rate // 100
    n = x.size // hop
    rms = np.sqrt(np.mean(x[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
    return 20 * np.log10(rms + 1e-9)


def speech_span(x: np.ndarray, rate: int) -> tuple[float, float, float]:
    """(onset s, offset s, noise rms) of one utterance: frames 12 dB above its 10th percentile."""
    db = frame_db(x, rate)
    floor = np.percentile(db, 10)
    loud = np.flatnonzero(db > floor + 12)
    if loud.size == 0:
        return 0.0, x.size / rate, float(10 ** (floor / 20))
    return loud[0] / 100, (loud[-1] + 1) / 100, float(10 ** (floor / 20))


def make(args: argparse.Namespace) -> None:
    from kocall.datadir import load_data_dir

    utts = []
    for data_dir in args.data:
        data = load_data_dir(data_dir)
        utts += [(u, data.wav[u], data.text[u]) for u in data.utt_ids]
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rate = sf.info(utts[0][1]).samplerate
    line_noise = float(np.median([speech_span(sf.read(path, dtype="float64")[0], rate)[2] for _, path, _ in utts]))
    target = int(args.minutes * 60 * rate)
    turns, used, position, k = [], {}, 0, 0
    with sf.SoundFile(out / "call.wav", "w", samplerate=rate, channels=2, subtype="PCM_16") as wav:
        while True:
            utt_id, path, text = utts[k % len(utts)]
            x, sr = sf.read(path, dtype="float64")
            if sr != rate or x.ndim != 1:
                sys.exit(f"{path}: {sr} Hz / {x.ndim} dims; every utterance must be mono at {rate} Hz")
            gap = int(rng.uniform(0.3, 1.5) * rate)
            if position + x.size + gap > target:
                break
            channel = k % 2
            onset, offset, _ = speech_span(x, rate)
            block = line_noise * rng.standard_normal((x.size + gap, 2))   # each channel's own line
            block[: x.size, channel] = x
            wav.write(block)
            start = position / rate
            turns.append({"channel": CHANNELS[channel], "utt": utt_id, "text": text, "start": start,
                          "end": start + x.size / rate, "speech_start": start + onset, "speech_end": start + offset})
            used[utt_id] = path
            position += x.size + gap
            k += 1
        tail = target - position   # line noise up to the full length
        wav.write(line_noise * rng.standard_normal((tail, 2)))
    (out / "truth.json").write_text(json.dumps({"rate": rate, "seconds": target / rate, "turns": turns},
                                               ensure_ascii=False, indent=0), encoding="utf-8")
    (out / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in sorted(used.items())), encoding="utf-8")
    print(f"{out / 'call.wav'}: {target / rate / 60:.1f} min, {len(turns)} turns of {len(used)} utterances")


def read_ctm(path: Path) -> list[tuple[str, float, float, str]]:
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        _, channel, start, duration, word, *_ = line.split()
        words.append((CTM_CHANNELS.get(channel, channel), float(start), float(start) + float(duration), word))
    return words


def percentiles(errors_s: list[float]) -> dict[str, float]:
    ms = np.abs(np.asarray(errors_s)) * 1000
    return {"median_ms": round(float(np.median(ms)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "mean_signed_ms": round(float(np.mean(np.asarray(errors_s) * 1000)), 1), "n": int(ms.size)}


def score(args: argparse.Namespace) -> None:
    from kocall.fileio import read_table
    from kocall.scoring import score_texts

    out = Path(args.dir)
    truth = json.loads((out / "truth.json").read_text(encoding="utf-8"))
    turns = truth["turns"]
    words = read_ctm(out / "call.ctm")
    per_utt = read_table(out / "per_utt.txt", allow_empty_value=True)
    result: dict = {"turns": len(turns), "words": len(words), "crr": {}}
    refs, long_hyps, utt_hyps = {}, {}, {}
    for channel in CHANNELS:
        mine = [t for t in turns if t["channel"] == channel]
        refs[channel] = " ".join(t["text"] for t in mine)
        long_hyps[channel] = " ".join(w for c, _, _, w in sorted(words, key=lambda w: w[1]) if c == channel)
        utt_hyps[channel] = " ".join(per_utt.get(t["utt"], "") for t in mine)
    for name, hyps in (("long_file", long_hyps), ("per_utterance", utt_hyps)):
        result["crr"][name] = {c: round(score_texts({c: refs[c]}, {c: hyps[c]}).crr, 2) for c in CHANNELS}
        result["crr"][name]["all"] = round(score_texts(refs, hyps).crr, 2)
    result["crr"]["segmentation_cost"] = round(result["crr"]["per_utterance"]["all"] - result["crr"]["long_file"]["all"], 2)
    # words -> their utterance (nearest file span on the channel)
    by_turn: dict[int, list] = {}
    inside = {0.0: 0, 0.1: 0}
    for channel, start, end, word in words:
        candidates = [(i, t) for i, t in enumerate(turns) if t["channel"] == channel]
        middle = (start + end) / 2
        i, turn = min(candidates, key=lambda it: max(it[1]["start"] - middle, middle - it[1]["end"], 0))
        by_turn.setdefault(i, []).append((start, end))
        for tol in inside:
            inside[tol] += turn["start"] - tol <= start and end <= turn["end"] + tol
    result["words_inside_their_utterance"] = {f"{int(tol * 1000)}ms": round(100 * n / max(len(words), 1), 2)
                                              for tol, n in inside.items()}
    starts = [min(s for s, _ in ws) - turns[i]["speech_start"] for i, ws in by_turn.items()]
    ends = [max(e for _, e in ws) - turns[i]["speech_end"] for i, ws in by_turn.items()]
    result["first_word_start_error"] = percentiles(starts)
    result["last_word_end_error"] = percentiles(ends)
    result["turns_with_words"] = len(by_turn)
    (out / "score.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make", help="build DIR/call.wav, truth.json, wav.scp")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("data", nargs="+", help="Kaldi data dirs whose utterances make the turns")
    p.set_defaults(func=make)
    p = sub.add_parser("score", help="score DIR/call.ctm and DIR/per_utt.txt against DIR/truth.json")
    p.add_argument("dir")
    p.set_defaults(func=score)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
