"""Telephone channel: G.711 bit-exactness, the band-pass response, spectrum, determinism, speed."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import signal

from kocall import telephone as T
from tests.conftest import tone

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the reference G.711 (CPython's C implementation of the ITU-T code)

ALL_INT16 = np.arange(-32768, 32768).astype(np.int16)
ALL_CODES = np.arange(256, dtype=np.uint8)


def test_mulaw_matches_audioop_on_every_int16() -> None:
    ref = np.frombuffer(audioop.lin2ulaw(ALL_INT16.tobytes(), 2), dtype=np.uint8)
    np.testing.assert_array_equal(T.mulaw_encode(ALL_INT16), ref)
    ref_dec = np.frombuffer(audioop.ulaw2lin(ALL_CODES.tobytes(), 2), dtype=np.int16)
    np.testing.assert_array_equal(T.mulaw_decode(ALL_CODES), ref_dec)


def test_alaw_matches_audioop_on_every_int16() -> None:
    ref = np.frombuffer(audioop.lin2alaw(ALL_INT16.tobytes(), 2), dtype=np.uint8)
    np.testing.assert_array_equal(T.alaw_encode(ALL_INT16), ref)
    ref_dec = np.frombuffer(audioop.alaw2lin(ALL_CODES.tobytes(), 2), dtype=np.int16)
    np.testing.assert_array_equal(T.alaw_decode(ALL_CODES), ref_dec)


def test_g711_round_trip_error_is_logarithmic() -> None:
    # mu-law keeps ~ 8 bits of relative precision: the error grows with the magnitude.
    x = ALL_INT16.astype(np.float32)
    err = np.abs(T.g711_round_trip(x, "mulaw") - x)
    big = np.abs(x) > 1000
    assert np.all(err[big] <= np.abs(x[big]) / 16)
    assert np.all(err[np.abs(x) < 60] <= 8)  # lowest segment: step 8 at 16-bit scale


def test_band_limit_frequency_response_matches_scipy_reference() -> None:
    fs = 8000
    # Reference: the Butterworth design evaluated analytically, vs our filter measured on tones.
    sos = signal.butter(4, [300, 3400], btype="bandpass", fs=fs, output="sos")
    for freq in (100.0, 200.0, 1000.0, 2000.0, 3000.0, 3800.0):
        _, h = signal.sosfreqz(sos, worN=[freq], fs=fs)
        x = (8000 * np.sin(2 * np.pi * freq * np.arange(2 * fs) / fs)).astype(np.float32)
        y = T.band_limit(x, fs, (300, 3400), 4)
        steady = slice(fs // 2, None)   # skip the causal filter's transient
        measured = np.sqrt(np.mean(y[steady] ** 2) / np.mean(x[steady] ** 2))
        assert measured == pytest.approx(abs(h[0]), rel=0.02, abs=1e-4), freq
        if 500 <= freq <= 3000:
            assert measured > 0.95       # pass band
        if freq <= 100 or freq >= 3800:
            assert measured < 0.05       # stop band


def test_channel_output_has_no_energy_above_4khz() -> None:
    rng = np.random.default_rng(3)
    wideband = np.random.default_rng(4).standard_normal(22050 * 2).astype(np.float32) * 5000
    for source, rate in ((wideband, 22050), (tone(2.0, 16000, 5000.0), 16000), (tone(2.0, 16000, 1000.0), 16000)):
        y = T.telephone_channel(source, rate, rng)
        assert y.dtype == np.float32
        assert abs(y.size - source.size * 16000 / rate) <= 2
        assert T.energy_above(y, 16000) < 1e-3
        assert np.max(np.abs(y)) <= 32768


def test_channel_is_deterministic_for_a_seed_and_varies_across_seeds() -> None:
    x = tone(1.0, 16000, 700.0)
    a = T.telephone_channel(x, 16000, np.random.default_rng(11))
    b = T.telephone_channel(x, 16000, np.random.default_rng(11))
    c = T.telephone_channel(x, 16000, np.random.default_rng(12))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_line_noise_snr() -> None:
    x = (8000 * np.sin(2 * np.pi * 1000 * np.arange(8000 * 4) / 8000)).astype(np.float32)
    y = T.add_line_noise(x, 8000, np.random.default_rng(0), snr_db=20.0)
    snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y - x).astype(np.float64) ** 2))
    assert snr == pytest.approx(20.0, abs=0.2)


def test_alaw_and_no_codec_options() -> None:
    x = tone(1.0, 16000, 700.0)
    for codec in ("alaw", "none"):
        y = T.telephone_channel(x, 16000, np.random.default_rng(0), T.ChannelConfig(codec=codec))
        assert T.energy_above(y, 16000) < 1e-3
    with pytest.raises(ValueError):
        T.ChannelConfig(codec="gsm")
