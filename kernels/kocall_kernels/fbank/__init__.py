"""Fused log-mel filterbank (Kaldi-compatible, or Whisper's log-mel) with a CPU twin and CUDA kernels.

    feats, num_frames = compute_fbank(pcm, lengths, cfg, backend="cpu")

`pcm` is (B, N) int16 or float32 at int16 scale, `lengths` the valid samples per row.
Returns feats (B, T_max, n_mels) float32 with rows past num_frames[b] zero, and
num_frames (B,) int32: cfg.flavour "kaldi" T = 1 + (len - win) // shift (Kaldi
snip_edges=True); "whisper" T = len // 160 (centred frames, Whisper's last frame dropped),
values already normalised per utterance ((max(x, max - 8) + 4) / 4 of log10 mel power).

Backends: "cpu" (numba twin, kernels/kocall_kernels/fbank/cpu.py), "cuda" (Numba CUDA kernel,
kernels/kocall_kernels/fbank/cuda.py; also runs under NUMBA_ENABLE_CUDASIM=1). With dither 0 the kaldi
flavour matches kaldi-native-fbank within 1e-3, the whisper flavour faster-whisper's NumPy
feature extractor (openai-whisper's log_mel_spectrogram) within 1e-4 (see test_fbank.py).
"""
from __future__ import annotations

import zlib

import numpy as np

from kocall_kernels.fbank.config import FbankConfig, FbankTables, frame_index, make_tables, mel_matrix

BACKENDS = ("cpu", "cuda")

__all__ = ["BACKENDS", "FbankConfig", "FbankTables", "compute_fbank", "make_tables", "mel_matrix",
           "utterance_seed", "prepare_batch"]


def utterance_seed(cfg: FbankConfig, utt_id: str) -> int:
    """Dither seed of one utterance: depends on its id and cfg.seed, not on batching."""
    return (zlib.crc32(utt_id.encode("utf-8")) ^ (int(cfg.seed) * 0x9E3779B1)) & 0x7FFFFFFFFFFFFFFF


def prepare_batch(pcm: np.ndarray, lengths: np.ndarray, cfg: FbankConfig,
                  seeds: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate inputs; return (pcm, num_frames int32, seeds uint64, lengths int64)."""
    pcm = np.asarray(pcm)
    if pcm.ndim == 1:
        pcm = pcm[None, :]
    if pcm.ndim != 2:
        raise ValueError(f"compute_fbank: pcm must be (B, N), got shape {pcm.shape}")
    if pcm.dtype not in (np.int16, np.float32):
        pcm = pcm.astype(np.float32)
    pcm = np.ascontiguousarray(pcm)
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if lengths.size != pcm.shape[0]:
        raise ValueError(f"compute_fbank: {lengths.size} lengths for {pcm.shape[0]} rows")
    if np.any(lengths < 0) or np.any(lengths > pcm.shape[1]):
        raise ValueError("compute_fbank: lengths must lie in [0, N]")
    num_frames = np.array([cfg.num_frames(int(n)) for n in lengths], dtype=np.int32)
    if seeds is None:
        # Default: utterance b of the batch gets seed cfg.seed * 1000003 + b.
        seeds = np.arange(pcm.shape[0], dtype=np.uint64) + np.uint64(int(cfg.seed) * 1000003)
    seeds = np.asarray(seeds).astype(np.uint64).reshape(-1)
    if seeds.size != pcm.shape[0]:
        raise ValueError(f"compute_fbank: {seeds.size} seeds for {pcm.shape[0]} rows")
    return pcm, num_frames, seeds, lengths


def compute_fbank(pcm: np.ndarray, lengths: np.ndarray, cfg: FbankConfig, backend: str = "cpu",
                  seeds: np.ndarray | None = None, threads_per_block: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel features of a padded batch; see the module docstring."""
    pcm, num_frames, seeds, lengths = prepare_batch(pcm, lengths, cfg, seeds)
    tables = make_tables(cfg)
    t_max = int(num_frames.max()) if num_frames.size else 0
    frame_utt, frame_t = frame_index(num_frames)
    if backend == "cpu":
        from kocall_kernels.fbank.cpu import run_frames

        out = np.zeros((pcm.shape[0], t_max, cfg.n_mels), dtype=np.float32)
        run_frames(pcm, lengths, num_frames, frame_utt, frame_t, seeds, out, cfg, tables)
        return out, num_frames
    if backend == "cuda":
        from kocall_kernels.fbank.cuda import run_frames_cuda

        out = run_frames_cuda(pcm, lengths, num_frames, frame_utt, frame_t, seeds, (pcm.shape[0], t_max, cfg.n_mels), cfg, tables,
                              threads_per_block=threads_per_block)
        return out, num_frames
    raise ValueError(f"compute_fbank: unknown backend '{backend}' (choose from {BACKENDS})")
