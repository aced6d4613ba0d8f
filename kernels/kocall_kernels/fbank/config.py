"""Filterbank configuration and the constant tables every backend shares.

`FbankConfig` selects one of two flavours of the same fused kernel:

* `kaldi` (default): the Kaldi / kaldi-native-fbank options kocall uses. Framing follows
  Kaldi's snip_edges=True: a signal of N samples gives T = 1 + (N - win) // shift frames
  (0 if N < win), frame t covering [t*shift, t*shift+win); DC removal, pre-emphasis, a povey
  or hamming window zero-padded to a power-of-two FFT, Kaldi's mel triangles, ln(max(e, eps)).
* `whisper`: Whisper's log-mel (openai-whisper audio.log_mel_spectrogram): 16 kHz, periodic
  Hann window of 400 samples, hop 160, a 400-point DFT of frames centred on t*hop (the signal
  reflect-padded by 200 samples each side, numpy's `reflect`), |X|^2, librosa's Slaney mel
  filters (htk=False, norm='slaney', 0-8000 Hz: what whisper's mel_filters.npz holds),
  log10(max(e, 1e-10)); the last STFT frame is dropped, so T = N // 160. Per utterance the
  values are then floored at (utterance max - 8) and mapped to (x + 4) / 4. Input is int16
  scale like the kaldi flavour; the tables fold Whisper's 1/32768 into the window.

The tables (`FbankTables`) are built once per config on the host in float64 and cast to
float32, so the CPU twin and the GPU kernels read exactly the same numbers:

* the analysis window;
* the mixed-radix (2, 3, 5) decimation-in-time FFT of M = pad/2 complex points: the
  digit-reversal permutation of its input (bit reversal when M is a power of two), the radix
  of each stage and the twiddles exp(-2 pi i j / M), plus the post-processing twiddles that
  turn it into the pad-point real FFT (pad = 256 for 8 kHz Kaldi frames, 400 for Whisper);
* the mel filterbank in a compact sparse form: for every mel bin the first FFT bin it
  touches, how many bins, and where its weights start in one flat array, so the mel step
  multiplies only nonzero weights.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

import numpy as np

FLT_EPSILON = float(np.finfo(np.float32).eps)  # Kaldi's log floor: log(max(x, FLT_EPSILON))
MAX_PAD = 1024  # largest padded frame the GPU kernel's shared memory holds (25 ms at <= 40 kHz)
FLAVOURS = ("kaldi", "whisper")
WINDOWS = {"kaldi": ("povey", "hamming"), "whisper": ("hann",)}
FFT_RADICES = (2, 3, 5)      # the butterflies the kernels implement
WHISPER_LOG_FLOOR = 1e-10    # log10(max(x, 1e-10))
WHISPER_DYN_RANGE = 8.0      # per utterance: max(x, x.max() - 8), then (x + 4) / 4
INT16_SCALE = 32768.0        # Whisper reads audio as int16 / 32768
# Whisper's front end is fixed by its pretrained models (openai-whisper audio.py); a
# `flavour: whisper` config starts from these values, and all but n_mels, dither and seed
# must keep them.
WHISPER_DEFAULTS = {"sample_rate": 16000, "frame_length_ms": 25.0, "frame_shift_ms": 10.0, "n_mels": 80,
                    "low_freq": 0.0, "high_freq": 8000.0, "window": "hann", "preemph": 0.0, "remove_dc": False,
                    "snip_edges": False}
WHISPER_FREE = ("n_mels", "dither", "seed", "high_freq")  # high_freq: checked as "the Nyquist frequency"


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
    snip_edges: bool = True       # kaldi: only snip_edges=True; whisper: False (centred frames)
    flavour: str = "kaldi"        # "kaldi" or "whisper" (see the module docstring)

    def __post_init__(self) -> None:
        if self.flavour not in FLAVOURS:
            raise ValueError(f"fbank flavour '{self.flavour}' not supported (choose from {FLAVOURS})")
        if self.window not in WINDOWS[self.flavour]:
            raise ValueError(f"fbank window '{self.window}' not supported by flavour '{self.flavour}' "
                             f"(choose from {WINDOWS[self.flavour]})")
        if self.flavour == "whisper":
            self._check_whisper()
        elif not self.snip_edges:
            raise ValueError("fbank: only snip_edges=True (Kaldi's default framing) is implemented for flavour "
                             "'kaldi'")
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

    def _check_whisper(self) -> None:
        for key, want in WHISPER_DEFAULTS.items():
            if key not in WHISPER_FREE and getattr(self, key) != want:
                raise ValueError(f"fbank flavour 'whisper' is Whisper's fixed front end: {key} must be {want!r}, "
                                 f"got {getattr(self, key)!r} (leave it out to get Whisper's value)")
        if self.effective_high_freq != 0.5 * self.sample_rate:
            raise ValueError(f"fbank flavour 'whisper': high_freq must be the Nyquist frequency "
                             f"({0.5 * self.sample_rate}), got {self.effective_high_freq}")

    @classmethod
    def whisper(cls, **overrides) -> "FbankConfig":
        """Whisper's log-mel front end (80 mels unless n_mels=128 is given)."""
        return cls(**{**WHISPER_DEFAULTS, **overrides, "flavour": "whisper"})

    @property
    def win_length(self) -> int:
        return int(self.sample_rate * 0.001 * self.frame_length_ms)

    @property
    def shift_length(self) -> int:
        return int(self.sample_rate * 0.001 * self.frame_shift_ms)

    @property
    def pad_length(self) -> int:
        """FFT length: Kaldi rounds the window up to a power of two; Whisper's DFT is the window (400)."""
        if self.flavour == "whisper":
            return self.win_length
        return 1 << (self.win_length - 1).bit_length()  # round_to_power_of_two

    @property
    def center_pad(self) -> int:
        """Samples of reflect padding before the signal (whisper: n_fft // 2; kaldi: none)."""
        return self.pad_length // 2 if self.flavour == "whisper" else 0

    @property
    def min_samples(self) -> int:
        """The shortest signal that gives one frame."""
        return self.shift_length if self.flavour == "whisper" else self.win_length

    @property
    def effective_high_freq(self) -> float:
        return self.high_freq if self.high_freq > 0 else 0.5 * self.sample_rate + self.high_freq

    def num_frames(self, num_samples: int) -> int:
        """kaldi (snip_edges=True): 1 + (N - win) // shift, 0 when the signal is shorter than a
        window; whisper: N // hop (centred frames, the last STFT frame dropped as Whisper does)."""
        if self.flavour == "whisper":
            return num_samples // self.shift_length
        if num_samples < self.win_length:
            return 0
        return 1 + (num_samples - self.win_length) // self.shift_length

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "FbankConfig":
        """Fields left out take the flavour's defaults (Whisper's fixed values for `whisper`)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"fbank config: unknown keys {unknown} (known: {sorted(known)})")
        if values.get("flavour") == "whisper":
            return cls.whisper(**values)
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
    window: np.ndarray      # (win,) float32 (whisper: Hann / 32768, the int16 scaling folded in)
    fft_perm: np.ndarray    # (M,) int32, M = pad // 2: where FFT input m is stored (digit reversal)
    radix: np.ndarray       # (stages,) int32 radix of each DIT stage, first stage first
    tw_re: np.ndarray       # (M,) complex FFT twiddles exp(-2 pi i j / M)
    tw_im: np.ndarray
    post_re: np.ndarray     # (M,) real-FFT split twiddles exp(-2 pi i k / pad)
    post_im: np.ndarray
    mel_start: np.ndarray   # (n_mels,) int32 first FFT bin (0..M, M = Nyquist) with a nonzero weight
    mel_len: np.ndarray     # (n_mels,) int32 number of nonzero weights
    mel_off: np.ndarray     # (n_mels,) int32 offset into mel_w
    mel_w: np.ndarray       # (sum(mel_len),) float32


def make_window(kind: str, length: int) -> np.ndarray:
    """Kaldi's FeatureWindowFunction (a = 2 pi / (N - 1)); "hann" is the periodic Hann window
    of torch.hann_window / Whisper (a = 2 pi / N)."""
    i = np.arange(length, dtype=np.float64)
    if kind == "hann":
        return 0.5 - 0.5 * np.cos(2.0 * math.pi * i / length)
    a = 2.0 * math.pi / (length - 1)
    if kind == "povey":
        return np.power(0.5 - 0.5 * np.cos(a * i), 0.85)
    if kind == "hamming":
        return 0.54 - 0.46 * np.cos(a * i)
    raise ValueError(f"unknown window '{kind}'")


def mel_matrix(cfg: FbankConfig) -> np.ndarray:
    """Dense mel weights of the config's flavour: kaldi (n_mels, pad//2), whisper (n_mels, pad//2 + 1)."""
    if cfg.flavour == "whisper":
        return slaney_mel_matrix(cfg.sample_rate, cfg.pad_length, cfg.n_mels)
    return kaldi_mel_matrix(cfg)


def slaney_hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """librosa's hz_to_mel(htk=False): linear below 1 kHz (200/3 Hz per mel), log above."""
    freq = np.asarray(freq, dtype=np.float64)
    linear = freq / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(freq, 1e-300) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(freq >= 1000.0, log_part, linear)


def slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel - 15.0)), mel * (200.0 / 3))


def slaney_mel_matrix(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels, fmin=0, fmax=sr/2, htk=False, norm='slaney') in float64:
    (n_mels, n_fft//2 + 1), the Nyquist bin included (whisper's mel_filters.npz)."""
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    mel_freqs = slaney_mel_to_hz(np.linspace(0.0, slaney_hz_to_mel(sample_rate / 2.0), n_mels + 2))
    fdiff = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_freqs[2:] - mel_freqs[:-2]))[:, None]  # Slaney: equal area per band


def kaldi_mel_matrix(cfg: FbankConfig) -> np.ndarray:
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


def fft_radices(size: int) -> tuple[int, ...]:
    """Radices of the DIT stages for a `size`-point complex FFT, first stage first (ascending)."""
    radices, rest = [], size
    for radix in FFT_RADICES:
        while rest % radix == 0:
            radices.append(radix)
            rest //= radix
    if rest != 1:
        raise ValueError(f"fbank: a {2 * size}-point real FFT needs {size} = a product of {FFT_RADICES}")
    return tuple(radices)


def digit_reversal(size: int, radices: tuple[int, ...]) -> np.ndarray:
    """Where each input of the DIT FFT is stored so that every stage works in place.

    The last stage (radix p) combines the p sub-FFTs of the inputs p*m + q (q = 0..p-1), each
    stored as one contiguous block q; inside a block the same rule applies recursively."""
    if not radices:
        return np.zeros(size, np.int64)
    p = radices[-1]
    sub = size // p
    inner = digit_reversal(sub, radices[:-1])
    pos = np.empty(size, np.int64)
    for q in range(p):
        pos[q::p] = q * sub + inner
    return pos


@lru_cache(maxsize=16)
def make_tables(cfg: FbankConfig) -> FbankTables:
    pad = cfg.pad_length
    half = pad // 2
    radices = fft_radices(half)
    j = np.arange(half)
    k = np.arange(half)
    window = make_window(cfg.window, cfg.win_length)
    if cfg.flavour == "whisper":
        window = window / INT16_SCALE  # exact (a power of two): Whisper's audio is int16 / 32768
    mel_start, mel_len, mel_off, mel_w = _sparse_mel(mel_matrix(cfg))
    if np.any(mel_len == 0):
        # Kaldi refuses this too: a band narrower than one FFT bin would be constant log(eps).
        raise ValueError(f"fbank: mel band {int(np.argmin(mel_len))} covers no FFT bin; n_mels={cfg.n_mels} is too "
                         f"large for a {cfg.pad_length}-point FFT over {cfg.low_freq}-{cfg.effective_high_freq} Hz")
    return FbankTables(
        window=window.astype(np.float32),
        fft_perm=digit_reversal(half, radices).astype(np.int32),
        radix=np.array(radices, np.int32),
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
