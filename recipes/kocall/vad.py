"""Voice-activity segmentation of long recordings: telephone-band energy with an adaptive
threshold and hysteresis (no model, no extra package).

Why our own: of the registry's VADs, webrtcvad-wheels (a C GMM) and silero-vad (a TorchScript
network in its wheel, MIT) both ship their model; silero needs 32 ms network steps per channel
and webrtcvad a new compiled dependency. A call-centre channel is one speaker over a quiet
line, where band energy separates speech from pauses at no cost; bench/RESULTS_transcribe.md
measures it against the known boundaries of concatenated utterances.

How:
1. Every 10 ms of one channel (non-overlapping frames, streamed block by block, so a long
   file is never in memory) gives its energy in the telephone band 300-3400 Hz, in dB.
2. The channel's noise floor is the 10th percentile of those frames and its speech level the
   95th; the threshold lies `margin` of the way from floor to level (at least `min_gap_db`
   above the floor). A channel whose level is within `min_gap_db` of its floor is silent.
3. Speech starts at a frame above the threshold and continues while frames stay above the
   threshold minus `hysteresis_db`; pauses shorter than `min_silence_s` are bridged, bursts
   shorter than `min_speech_s` dropped, each segment padded by `pad_s` on both sides.
4. A segment longer than `max_segment_s` is cut at its quietest frame between half and all of
   that length from its start, repeatedly, so every piece is decodable (the encoder's attention
   grows with the square of its length).
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np

FRAME_S = 0.01       # one energy frame
FLOOR_DB = -100.0    # digital silence


@dataclass(frozen=True)
class VadConfig:
    band_hz: tuple[float, float] = (300.0, 3400.0)
    margin: float = 0.3          # threshold position between noise floor (0) and speech level (1)
    min_gap_db: float = 8.0      # speech at least this far above the floor
    hysteresis_db: float = 4.0   # a segment continues down to threshold - this
    min_speech_s: float = 0.15
    min_silence_s: float = 0.35
    pad_s: float = 0.05          # on a 10-min call built from dev, 0.05 s lost 1.8 CRR points to per-utterance
                                 # decoding, 0.15 s 2.7: padding noise makes a weak model insert (bench/long_call.py)
    max_segment_s: float = 25.0

    def __post_init__(self) -> None:
        for name in ("min_speech_s", "min_silence_s", "pad_s", "min_gap_db", "hysteresis_db"):
            value = getattr(self, name)
            if not (np.isfinite(value) and 0 <= value <= 60):
                raise ValueError(f"VAD {name} must be within 0..60, not {value}")
        if not 0 < self.margin < 1:
            raise ValueError(f"VAD margin must be within (0, 1), not {self.margin}")
        if not 2.0 <= self.max_segment_s <= 120.0:
            raise ValueError(f"VAD max_segment_s must be within 2..120 s, not {self.max_segment_s}")


def band_energy_db(samples: np.ndarray, sample_rate: int, band_hz: tuple[float, float]) -> np.ndarray:
    """dB energy in `band_hz` of each whole 10 ms frame of `samples` (int16 scale)."""
    hop = int(round(FRAME_S * sample_rate))
    n = samples.size // hop
    if n == 0:
        return np.zeros(0, np.float32)
    frames = samples[: n * hop].reshape(n, hop).astype(np.float64) / 32768.0
    spectrum = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(hop, 1.0 / sample_rate)
    in_band = (freqs >= band_hz[0]) & (freqs <= min(band_hz[1], sample_rate / 2))
    power = spectrum[:, in_band].sum(axis=1) / hop
    return np.maximum(10 * np.log10(power + 1e-12), FLOOR_DB).astype(np.float32)


class EnergyMeter:
    """band_energy_db of one channel fed block by block (any sizes), as if over the whole."""

    def __init__(self, sample_rate: int, cfg: VadConfig) -> None:
        self.sample_rate, self.cfg = sample_rate, cfg
        self.hop = int(round(FRAME_S * sample_rate))
        self.parts: list[np.ndarray] = []
        self.carry = np.zeros(0, np.float32)

    def feed(self, block: np.ndarray) -> None:
        data = np.concatenate([self.carry, block]) if self.carry.size else block
        whole = data.size // self.hop * self.hop
        self.parts.append(band_energy_db(data[:whole], self.sample_rate, self.cfg.band_hz))
        self.carry = data[whole:]

    def energies(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)


def speech_segments(energy_db: np.ndarray, cfg: VadConfig = VadConfig()) -> list[tuple[float, float]]:
    """(start_s, end_s) of the speech segments of one channel's frame energies."""
    if energy_db.size == 0:
        return []
    floor, level = np.percentile(energy_db, [10, 95])
    if level - floor < cfg.min_gap_db:
        return []
    high = floor + max(cfg.min_gap_db, cfg.margin * (level - floor))
    low = high - cfg.hysteresis_db
    spans, start = [], None
    for i, e in enumerate(energy_db):   # hysteresis: start above `high`, continue above `low`
        if start is None and e >= high:
            start = i
        elif start is not None and e < low:
            spans.append([start, i])
            start = None
    if start is not None:
        spans.append([start, energy_db.size])
    merged: list[list[int]] = []
    for span in spans:
        if merged and (span[0] - merged[-1][1]) * FRAME_S < cfg.min_silence_s:
            merged[-1][1] = span[1]
        else:
            merged.append(span)
    total = energy_db.size
    pad = int(round(cfg.pad_s / FRAME_S))
    kept = [(max(0, a - pad), min(total, b + pad)) for a, b in merged if (b - a) * FRAME_S >= cfg.min_speech_s]
    joined: list[list[int]] = []
    for a, b in kept:   # padding may make neighbours touch: one segment then
        if joined and a <= joined[-1][1]:
            joined[-1][1] = max(joined[-1][1], b)
        else:
            joined.append([a, b])
    pieces = [piece for a, b in joined for piece in _split_long(energy_db, a, b, cfg.max_segment_s)]
    return [(a * FRAME_S, b * FRAME_S) for a, b in pieces]


def _split_long(energy_db: np.ndarray, start: int, end: int, max_s: float) -> list[tuple[int, int]]:
    """Cut [start, end) at its quietest frames until no piece is longer than max_s."""
    longest = int(max_s / FRAME_S)
    pieces = []
    while end - start > longest:
        lo, hi = start + longest // 2, start + longest
        cut = lo + int(np.argmin(energy_db[lo:hi]))
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces
