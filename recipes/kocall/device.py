"""`--device cpu|cuda`: one check for every command, so that `--device cuda` on a machine
without CUDA is one clear line instead of a torch or numba traceback."""
from __future__ import annotations

from kocall.errors import KocallError

DEVICES = ("cpu", "cuda")


def require_device(device: str, torch_needed: bool = True) -> str:
    """Return `device` if it can be used here. torch_needed: the command runs a torch model
    (else only the Numba CUDA kernels, e.g. the filterbank)."""
    if device not in DEVICES:
        raise KocallError(f"--device must be one of {', '.join(DEVICES)}, not '{device}'")
    if device == "cuda":
        if torch_needed:
            import torch

            available = torch.cuda.is_available()
        else:
            from numba import cuda

            available = cuda.is_available()
        if not available:
            raise KocallError("--device cuda: no CUDA device or driver found on this machine (use --device cpu)")
    return device
