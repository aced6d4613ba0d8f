"""Test support shared by the kernel tests."""
from __future__ import annotations

import os


def cuda_subprocess_env() -> dict[str, str]:
    """Environment for a test's CUDA subprocess (numba reads NUMBA_ENABLE_CUDASIM at import, so
    CUDA cases run in their own process): the simulator by default, so the tests run on any
    machine; KOCALL_CUDA_TESTS=device (set by bench/run_gpu.sh) runs the same kernels on the GPU."""
    env = dict(os.environ)
    if os.environ.get("KOCALL_CUDA_TESTS") == "device":
        env.pop("NUMBA_ENABLE_CUDASIM", None)
    else:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    return env
