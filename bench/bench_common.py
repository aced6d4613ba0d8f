"""Helpers shared by the benchmark scripts (run as `python bench/<script>.py`, so this folder is
on sys.path): best-of timing and the names of the devices the figures were measured on."""
from __future__ import annotations

import platform
import time
from typing import Callable

import numpy as np


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Seconds of the fastest of `repeats` calls, after one untimed warm-up call (numba
    compilation or cache load, first-call allocations)."""
    fn()
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def gpu_name() -> str:
    from numba import cuda

    try:
        name = cuda.get_current_device().name
    except AttributeError:  # NUMBA_ENABLE_CUDASIM=1 (a smoke test of a script without a GPU)
        return "CUDA simulator"
    return name.decode() if isinstance(name, bytes) else str(name)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
