"""Shared pytest fixtures: small generated audio and data dirs, and the shared-data skip."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kocall.paths import shared_corpora, shared_text


def tone(seconds: float, sample_rate: int = 16000, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    """A tone plus a little noise, at int16 scale."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (8000 * np.sin(2 * np.pi * freq * t) + 300 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture
def shared_corpora_dir() -> Path:
    path = shared_corpora()
    if not path.is_dir():
        pytest.skip(f"shared corpora not present ({path}); this test needs the real-speech corpora")
    return path


@pytest.fixture
def shared_text_dir() -> Path:
    path = shared_text()
    if not path.is_dir():
        pytest.skip(f"shared text not present ({path}); this test needs the LM text")
    return path
