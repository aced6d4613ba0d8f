"""CUDA CTC prefix scores (Numba CUDA): one thread per row (hypothesis x appended unit).

The recursion is sequential over frames and independent across rows, so each thread runs
the CPU twin's row update (`cpu._extend_row_py`, compiled for the device) over all frames of
its row; a joint beam search scores beam x candidates rows per step in one launch. Inputs
may be host arrays or device arrays (e.g. CUDA torch tensors through
__cuda_array_interface__); outputs are host arrays. Tests run it under
NUMBA_ENABLE_CUDASIM=1 on small shapes.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from kocall_kernels.ctc_prefix import check_rows
from kocall_kernels.ctc_prefix.cpu import _extend_row_py, _int_rows, full_log_prob, initial_state  # noqa: F401

THREADS_PER_BLOCK = 64
_extend_row_device = cuda.jit(device=True)(_extend_row_py)


@cuda.jit
def _extend_kernel(log_probs, lens, row_utt, r_prev, last, prefix_len, unit, blank, psi, r):
    n = cuda.grid(1)
    if n < r.shape[0]:
        _extend_row_device(log_probs, lens, row_utt, r_prev, last, prefix_len, unit, blank, psi, r, n)


def extend(log_probs, lens: np.ndarray, row_utt: np.ndarray, r_prev, last: np.ndarray, prefix_len: np.ndarray,
           unit: np.ndarray, blank: int = 0, threads_per_block: int = THREADS_PER_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """(psi (N,), r (N, T, 2)) as `cpu.extend`, computed on the device."""
    if not hasattr(log_probs, "__cuda_array_interface__"):
        log_probs = np.ascontiguousarray(log_probs, dtype=np.float32)
    lens, row_utt, last, prefix_len, unit = _int_rows(lens, row_utt, last, prefix_len, unit)
    host_r = r_prev if not hasattr(r_prev, "__cuda_array_interface__") else None
    if host_r is not None:
        r_prev = np.ascontiguousarray(host_r, dtype=np.float64)
    check_rows(np.empty(tuple(log_probs.shape[:2]) + (0,)), lens, row_utt, host_r)
    if unit.size and (unit.min() < 0 or unit.max() >= int(log_probs.shape[2])):
        raise ValueError(f"units must be within 0..{int(log_probs.shape[2]) - 1}")
    N, T = int(row_utt.shape[0]), int(log_probs.shape[1])
    psi = cuda.device_array(N, np.float64)
    r = cuda.device_array((N, T, 2), np.float64)
    if N:
        blocks = (N + threads_per_block - 1) // threads_per_block
        _extend_kernel[blocks, threads_per_block](log_probs, cuda.to_device(lens), cuda.to_device(row_utt),
                                                 r_prev, cuda.to_device(last), cuda.to_device(prefix_len),
                                                 cuda.to_device(unit), blank, psi, r)
    return psi.copy_to_host(), r.copy_to_host()
