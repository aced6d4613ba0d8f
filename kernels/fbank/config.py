"""Filterbank configuration and the constant tables every backend shares.

`FbankConfig` mirrors the Kaldi / kaldi-native-fbank options that kocall uses. The
tables (`FbankTables`) are built once per config on the host in float64 and cast to
float32, so the CPU twin and the GPU kernels read exactly the same numbers:

* the analysis window (povey or hamming, Kaldi's formulas);
* bit-reversal permutation and twiddles of the M = pad/2 point complex FFT, plus the
  post-processing twiddles that turn it into the pad-point real FFT;
* Kaldi's triangular mel filterbank in a compact sparse form: for every mel bin the
  first FFT bin it touches, how many bins, and where its weights start in one flat array,
  so the mel step multiplies only nonzero weights.

Framing follows Kaldi's snip_edges=True convention: a signal of N samples gives
T = 1 + (N - win) // shift frames (0 if N < win), frame t covering [t*shift, t*shift+win).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

import numpy as np

FLT_EPSILON = float(np.finfo(np.float32).eps)  # Kaldi's log floor: log(max(x, FLT_EPSILON))
MAX_PAD = 1024  # largest padded frame the GPU kernel's shared memory holds (25 ms at <= 40 kHz)
WINDOWS = ("povey", "hamming")


def mel_scale(freq: np.ndarray | float) -> np.ndarray | float:
    """Kaldi's mel scale: 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log(1.0 + np.asarray(freq, dtype=np.float64) / 700.0)


@dataclass(frozen=True)
class FbankConfig:
    sample_rate: int = 8000
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    n_mels: int = 80
    low_freq: float = 20.0
    high_freq: float = 3800.0     # <= 0 means nyquist + high_freq (Kaldi's convention)
    window: str = "povey"
    preemph: float = 0.97
    remove_dc: bool = True
    dither: float = 0.0           # std of added Gaussian noise (int16 scale); 0 at test time
    seed: int = 0                 # dither seed; combined with a per-utterance seed
    snip_edges: bool = True       # only Kaldi's snip_edges=True framing is implemented

    def __post_init__(self) -> None:
        if self.window not in WINDOWS:
            raise ValueError(f"fbank window '{self.window}' not supported (choose from {WINDOWS})")
        if not self.snip_edges:
            raise ValueError("fbank: only snip_edges=True (Kaldi's default framing) is implemented")
        if self.win_length < 2 or self.shift_length < 1:
            raise ValueError(f"fbank: frame length {self.win_length} / shift {self.shift_length} samples too small")
        if self.pad_length > MAX_PAD:
            raise ValueError(f"fbank: padded frame {self.pad_length} exceeds the supported {MAX_PAD}")
        nyquist = 0.5 * self.sample_rate
        if not (0.0 <= self.low_freq < self.effective_high_freq <= nyquist):
            raise ValueError(f"fbank: need 0 <= low_freq ({self.low_freq}) < high_freq "
                             f"({self.effective_high_freq}) <= nyquist ({nyquist})")
        if self.n_mels < 1:
            raise ValueError("fbank: n_mels must be positive")

    @property
    def win_length(self) -> int:
        return int(self.sample_rate * 0.001 * self.frame_length_ms)

    @property
    def shift_length(self) -> int:
        return int(self.sample_rate * 0.001 * self.frame_shift_ms)

    @property
    def pad_length(self) -> int:
        return 1 << (self.win_length - 1).bit_length()  # round_to_power_of_two

    @property
    def effective_high_freq(self) -> float:
        return self.high_freq if self.high_freq > 0 else 0.5 * self.sample_rate + self.high_freq

    def num_frames(self, num_samples: int) -> int:
        """Kaldi snip_edges=True: 1 + (N - win) // shift, 0 when the signal is shorter than a window."""
        if num_samples < self.win_length:
            return 0
        return 1 + (num_samples - self.win_length) // self.shift_length

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "FbankConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"fbank config: unknown keys {unknown} (known: {sorted(known)})")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "FbankConfig":
        import yaml

        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"file '{path}': {exc}") from None


@dataclass(frozen=True)
class FbankTables:
    window: np.ndarray      # (win,) float32
    bitrev: np.ndarray      # (M,) int32, M = pad // 2
    tw_re: np.ndarray       # (M//2,) complex FFT twiddles exp(-2 pi i j / M)
    tw_im: np.ndarray
    post_re: np.ndarray     # (M,) real-FFT split twiddles exp(-2 pi i k / pad)
    post_im: np.ndarray
    mel_start: np.ndarray   # (n_mels,) int32 first FFT bin with a nonzero weight
    mel_len: np.ndarray     # (n_mels,) int32 number of nonzero weights
    mel_off: np.ndarray     # (n_mels,) int32 offset into mel_w
    mel_w: np.ndarray       # (sum(mel_len),) float32


def make_window(kind: str, length: int) -> np.ndarray:
    """Kaldi's FeatureWindowFunction (a = 2 pi / (N - 1))."""
    a = 2.0 * math.pi / (length - 1)
    i = np.arange(length, dtype=np.float64)
    if kind == "povey":
        return np.power(0.5 - 0.5 * np.cos(a * i), 0.85)
    if kind == "hamming":
        return 0.54 - 0.46 * np.cos(a * i)
    raise ValueError(f"unknown window '{kind}'")


def mel_matrix(cfg: FbankConfig) -> np.ndarray:
    """Dense (n_mels, pad//2) Kaldi mel weights (MelBanks; the Nyquist bin gets no weight)."""
    num_fft_bins = cfg.pad_length // 2
    bin_width = cfg.sample_rate / cfg.pad_length
    mel_low = mel_scale(cfg.low_freq)
    mel_high = mel_scale(cfg.effective_high_freq)
    delta = (mel_high - mel_low) / (cfg.n_mels + 1)
    mel = mel_scale(bin_width * np.arange(num_fft_bins))
    weights = np.zeros((cfg.n_mels, num_fft_bins), dtype=np.float64)
    for m in range(cfg.n_mels):
        left, center, right = mel_low + m * delta, mel_low + (m + 1) * delta, mel_low + (m + 2) * delta
        inside = (mel > left) & (mel < right)
        up = (mel - left) / (center - left)
        down = (right - mel) / (right - center)
        weights[m] = np.where(inside, np.where(mel <= center, up, down), 0.0)
    return weights


def _sparse_mel(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    starts, lengths, offsets, flat = [], [], [], []
    offset = 0
    for row in weights:
        nonzero = np.flatnonzero(row)
        first, last = (int(nonzero[0]), int(nonzero[-1]) + 1) if nonzero.size else (0, 0)
        starts.append(first)
        lengths.append(last - first)
        offsets.append(offset)
        flat.append(row[first:last])
        offset += last - first
    return (np.array(starts, np.int32), np.array(lengths, np.int32), np.array(offsets, np.int32),
            np.concatenate(flat).astype(np.float32) if offset else np.zeros(1, np.float32))


@lru_cache(maxsize=16)
def make_tables(cfg: FbankConfig) -> FbankTables:
    pad = cfg.pad_length
    half = pad // 2
    bits = max(half.bit_length() - 1, 0)
    bitrev = np.array([int(format(i, f"0{bits}b")[::-1], 2) if bits else 0 for i in range(half)], np.int32)
    j = np.arange(max(half // 2, 1))
    k = np.arange(half)
    mel_start, mel_len, mel_off, mel_w = _sparse_mel(mel_matrix(cfg))
    if np.any(mel_len == 0):
        # Kaldi refuses this too: a band narrower than one FFT bin would be constant log(eps).
        raise ValueError(f"fbank: mel band {int(np.argmin(mel_len))} covers no FFT bin; n_mels={cfg.n_mels} is too "
                         f"large for a {cfg.pad_length}-point FFT over {cfg.low_freq}-{cfg.effective_high_freq} Hz")
    return FbankTables(
        window=make_window(cfg.window, cfg.win_length).astype(np.float32),
        bitrev=bitrev,
        tw_re=np.cos(-2 * np.pi * j / half).astype(np.float32),
        tw_im=np.sin(-2 * np.pi * j / half).astype(np.float32),
        post_re=np.cos(-2 * np.pi * k / pad).astype(np.float32),
        post_im=np.sin(-2 * np.pi * k / pad).astype(np.float32),
        mel_start=mel_start, mel_len=mel_len, mel_off=mel_off, mel_w=mel_w)


def frame_index(num_frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten ragged (utterance, frame) pairs: arrays utt[f], t[f] over all valid frames."""
    num_frames = np.asarray(num_frames, dtype=np.int64)
    total = int(num_frames.sum())
    utt = np.repeat(np.arange(num_frames.size, dtype=np.int32), num_frames)
    starts = np.cumsum(num_frames) - num_frames
    t = (np.arange(total, dtype=np.int64) - np.repeat(starts, num_frames)).astype(np.int32)
    return utt, t
