"""Speed of the simulated telephone channel (kocall.telephone.telephone_channel), which the
synthetic corpus and the training augmentation run on every utterance: seconds of audio per
second of compute, best of N, on this CPU. A benchmark, not a test: the figure depends on the
machine and its load, so it is printed with both.

    python bench/bench_telephone.py [--seconds 10] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from bench_common import best_of, cpu_name
from kocall.telephone import telephone_channel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length (s), 22.05 kHz input")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls (the fastest counts)")
    args = parser.parse_args()
    if not (0.1 <= args.seconds <= 600 and 1 <= args.repeats <= 100):
        parser.error("--seconds must be in [0.1, 600] and --repeats in [1, 100]")
    rate = 22050
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(int(rate * args.seconds)) * 3000).astype(np.float32)
    seconds = best_of(lambda: telephone_channel(audio, rate, rng), args.repeats)
    print(f"cpu: {cpu_name()}, load average {os.getloadavg()[0]:.2f}")
    print(f"telephone_channel: {args.seconds:.1f} s of audio in {seconds * 1000:.1f} ms "
          f"= {args.seconds / seconds:.0f}x real time")


if __name__ == "__main__":
    main()
