"""Training-time augmentation: SpecAugment on features, speed perturbation and the
online telephone channel on waveforms.

Every function takes an explicit `numpy.random.Generator`. The data pipeline derives
one generator per batch from (seed, epoch, batch index), so augmentation is identical
whether a run is uninterrupted or resumed, and whatever the number of loader workers.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from kocall.audio import resample_audio
from kocall.errors import KocallError


@dataclass
class SpecAugmentConfig:
    enabled: bool = True
    num_freq_masks: int = 2
    max_freq_width: int = 15        # mel bins
    time_mask_ratio: float = 0.04   # time masks per frame (so proportional to length)
    max_time_masks: int = 10
    max_time_width_ratio: float = 0.05  # of the utterance length
    max_time_width: int = 40        # frames, absolute cap
    time_warp: int = 0              # max warp in frames; 0 = off


@dataclass
class AugmentConfig:
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    telephone_prob: float = 0.0     # chance of passing a training waveform through the channel
    speed_perturb: bool = False     # 0.9 / 1.0 / 1.1 by resampling
    speeds: tuple[float, ...] = (0.9, 1.0, 1.1)

    @property
    def needs_waveforms(self) -> bool:
        return self.telephone_prob > 0 or self.speed_perturb

    @property
    def min_speed(self) -> float:
        return min(self.speeds) if self.speed_perturb else 1.0

    @classmethod
    def from_dict(cls, values: dict | None) -> "AugmentConfig":
        values = dict(values or {})
        spec = values.pop("spec_augment", {}) or {}
        _check_keys("augment", values, cls)
        _check_keys("augment.spec_augment", spec, SpecAugmentConfig)
        cfg = cls(spec_augment=SpecAugmentConfig(**spec), **values)
        cfg.speeds = tuple(float(s) for s in cfg.speeds)
        if not 0.0 <= cfg.telephone_prob <= 1.0:
            raise KocallError(f"augment config: telephone_prob {cfg.telephone_prob} is not in [0, 1]")
        return cfg


def _check_keys(section: str, values: dict, cls: type) -> None:
    known = {f.name for f in fields(cls)} - {"spec_augment"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise KocallError(f"{section} config: unknown key(s) {unknown}; known: {sorted(known)}")


def time_warp(feats: np.ndarray, max_warp: int, rng: np.random.Generator) -> np.ndarray:
    """Move a random centre frame by up to `max_warp` frames, stretching both sides linearly."""
    t = feats.shape[0]
    if max_warp <= 0 or t <= 2 * max_warp + 2:
        return feats
    centre = int(rng.integers(max_warp + 1, t - max_warp - 1))
    new_centre = centre + int(rng.integers(-max_warp, max_warp + 1))
    # For each output frame, the (fractional) source frame it reads.
    src = np.concatenate([np.linspace(0, centre, new_centre, endpoint=False),
                          np.linspace(centre, t - 1, t - new_centre)])
    low = np.floor(src).astype(np.int64)
    high = np.minimum(low + 1, t - 1)
    frac = (src - low)[:, None].astype(feats.dtype)
    return feats[low] * (1 - frac) + feats[high] * frac


def spec_augment(feats: np.ndarray, cfg: SpecAugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Frequency masks, time masks (count and width proportional to length), optional time warp.

    Masked cells are set to 0, the mean after global CMVN.
    """
    if not cfg.enabled:
        return feats
    feats = time_warp(feats, cfg.time_warp, rng).copy()
    t, f = feats.shape
    for _ in range(cfg.num_freq_masks):
        width = int(rng.integers(0, min(cfg.max_freq_width, f) + 1))
        start = int(rng.integers(0, f - width + 1))
        feats[:, start:start + width] = 0.0
    num_time = min(cfg.max_time_masks, int(cfg.time_mask_ratio * t))
    max_width = min(cfg.max_time_width, int(cfg.max_time_width_ratio * t))
    for _ in range(num_time):
        width = int(rng.integers(0, max_width + 1))
        start = int(rng.integers(0, t - width + 1))
        feats[start:start + width, :] = 0.0
    return feats


def speed_perturb(samples: np.ndarray, sample_rate: int, speed: float) -> np.ndarray:
    """Play `speed` times faster (pitch moves too, as with sox `speed`): resample by 1/speed."""
    if speed == 1.0:
        return samples
    return resample_audio(samples, int(round(sample_rate * speed)), sample_rate)


def augment_waveform(samples: np.ndarray, sample_rate: int, cfg: AugmentConfig,
                     rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Speed perturbation, then (with probability telephone_prob) the telephone channel."""
    if cfg.speed_perturb:
        samples = speed_perturb(samples, sample_rate, float(rng.choice(cfg.speeds)))
    if cfg.telephone_prob > 0 and rng.random() < cfg.telephone_prob:
        from kocall.telephone import ChannelConfig, telephone_channel

        channel = ChannelConfig()
        samples = telephone_channel(samples, sample_rate, rng, channel)
        sample_rate = channel.out_rate  # 16 kHz audio carrying the 8 kHz band
    return samples.astype(np.float32, copy=False), sample_rate
