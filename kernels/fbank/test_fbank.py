"""Tests of the fused filterbank against kaldi-native-fbank, a float64 numpy reference,
and (under the CUDA simulator, in a subprocess) the GPU kernel against the CPU twin.

On the tolerance: kaldi-native-fbank and our kernels both compute in float32, whose
rounding noise sits about 1e-7 below the frame's largest spectral amplitude. Mel bands
more than ~18 nats (78 dB) below the frame's strongest band are under that noise floor,
and there kaldi-native-fbank itself differs from an exact float64 computation by more
than 1e-3. The 1e-3 bound is therefore asserted on every band within DYN_RANGE of its
frame's peak (in practice > 94 % of bands of these test signals, > 99.9 % of speech), and a looser bound everywhere.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kocall_kernels.fbank import FbankConfig, compute_fbank, utterance_seed
from kocall_kernels.fbank.config import make_window, mel_matrix
from kocall_kernels.fbank.peer import knf_fbank
from kocall_kernels.testing import cuda_subprocess_env

knf = pytest.importorskip("kaldi_native_fbank")

DYN_RANGE = 18.0   # nats (78 dB) below the frame peak band where float32 still resolves 1e-3
TOL = 1e-3
REPO = Path(__file__).resolve().parents[2]


def numpy_fbank(samples: np.ndarray, cfg: FbankConfig) -> np.ndarray:
    """Straightforward float64 Kaldi fbank (np.fft), for an implementation-independent check."""
    x = samples.astype(np.float64)
    win, shift = cfg.win_length, cfg.shift_length
    frames = np.stack([x[t * shift:t * shift + win] for t in range(cfg.num_frames(x.size))])
    frames = frames - frames.mean(axis=1, keepdims=True)
    emph = frames.copy()
    emph[:, 1:] -= cfg.preemph * frames[:, :-1]
    emph[:, 0] -= cfg.preemph * frames[:, 0]
    spec = np.abs(np.fft.rfft(emph * make_window(cfg.window, win), cfg.pad_length)) ** 2
    energy = spec[:, :cfg.pad_length // 2] @ mel_matrix(cfg).T
    return np.log(np.maximum(energy, np.finfo(np.float32).eps))


def assert_close(ours: np.ndarray, ref: np.ndarray, tol: float = TOL, loose: float = 0.1) -> None:
    assert ours.shape == ref.shape
    diff = np.abs(ours - ref)
    resolved = ref > ref.max(axis=1, keepdims=True) - DYN_RANGE
    assert resolved.mean() > 0.9, "test signal is mostly below float32 resolution"
    assert diff[resolved].max() <= tol, f"max diff {diff[resolved].max():.2e} on resolved bands"
    assert diff.max() <= loose, f"max diff {diff.max():.2e} overall"


def test_signals(sample_rate: int, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """Noise, a chirp over the whole band with a line-noise floor, and a tone; ragged lengths."""
    rng = np.random.default_rng(seed)
    n = int(1.37 * sample_rate)
    t = np.arange(n) / sample_rate
    sweep = 0.45 * sample_rate / t[-1]
    chirp = 8000 * np.sin(np.pi * (50 + sweep * t) * t) + 300 * rng.standard_normal(n)
    noise = 2000 * rng.standard_normal(n // 2 + 77)
    tone = 6000 * np.sin(2 * np.pi * 440 * t[:n // 3]) + 200 * rng.standard_normal(n // 3)
    signals = [np.round(s).astype(np.float32) for s in (chirp, noise, tone)]
    return signals, ["chirp", "noise", "tone"]
test_signals.__test__ = False  # a helper, not a test


def pad_batch(signals: list[np.ndarray], extra: int = 0) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([s.size for s in signals])
    batch = np.zeros((len(signals), lengths.max() + extra), np.float32)
    for i, s in enumerate(signals):
        batch[i, :s.size] = s
    return batch, lengths


CONFIGS = [
    FbankConfig(sample_rate=8000, n_mels=80, low_freq=20, high_freq=3800, window="povey"),
    FbankConfig(sample_rate=8000, n_mels=64, low_freq=20, high_freq=-200, window="hamming"),
    FbankConfig(sample_rate=16000, n_mels=80, low_freq=20, high_freq=0, window="povey"),
    FbankConfig(sample_rate=16000, n_mels=40, low_freq=60, high_freq=-400, window="hamming"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.sample_rate}-{c.window}-{c.high_freq}")
def test_cpu_matches_kaldi_native_fbank(cfg: FbankConfig) -> None:
    signals, names = test_signals(cfg.sample_rate)
    batch, lengths = pad_batch(signals, extra=123)
    feats, num_frames = compute_fbank(batch, lengths, cfg)
    assert feats.shape == (len(signals), num_frames.max(), cfg.n_mels)
    for i, (sig, name) in enumerate(zip(signals, names)):
        ref = knf_fbank(sig, cfg)
        assert num_frames[i] == ref.shape[0], name
        assert_close(feats[i, :num_frames[i]], ref)
        # Against exact float64 arithmetic float32 rounding shows: kaldi-native-fbank is up to
        # 2.5e-3 off on the 8 kHz chirp, so the bound here is 3e-3.
        assert_close(feats[i, :num_frames[i]], numpy_fbank(sig, cfg).astype(np.float32), tol=3e-3)
        assert np.all(feats[i, num_frames[i]:] == 0.0), f"{name}: padding frames not zero"


def test_num_frames_snip_edges() -> None:
    cfg = FbankConfig(sample_rate=8000)
    win, shift = cfg.win_length, cfg.shift_length
    lengths = np.array([0, win - 1, win, win + shift - 1, win + shift, 1000])
    feats, num_frames = compute_fbank(np.ones((6, 1000), np.int16), lengths, cfg)
    assert num_frames.tolist() == [0, 0, 1, 1, 2, 1 + (1000 - win) // shift]
    assert feats.shape[1] == num_frames.max()
    assert np.all(feats[:2] == 0.0)


def test_int16_and_float32_input_agree() -> None:
    cfg = FbankConfig(sample_rate=8000, n_mels=64)
    sig = test_signals(8000)[0][0]
    a, _ = compute_fbank(sig.astype(np.int16)[None], [sig.size], cfg)
    b, _ = compute_fbank(sig[None], [sig.size], cfg)
    np.testing.assert_array_equal(a, b)


def test_dither_is_deterministic_and_per_utterance() -> None:
    cfg = FbankConfig(sample_rate=8000, n_mels=40, dither=1.0, seed=3)
    signals, _ = test_signals(8000)
    batch, lengths = pad_batch(signals)
    seeds = np.array([utterance_seed(cfg, u) for u in ("a", "b", "c")], np.uint64)
    first, _ = compute_fbank(batch, lengths, cfg, seeds=seeds)
    again, _ = compute_fbank(batch, lengths, cfg, seeds=seeds)
    np.testing.assert_array_equal(first, again)
    # Utterance 'b' alone gives what it gave inside the batch: noise depends on its seed only.
    alone, n = compute_fbank(signals[1][None], [signals[1].size], cfg, seeds=seeds[1:2])
    np.testing.assert_array_equal(alone[0, :n[0]], first[1, :n[0]])
    other, _ = compute_fbank(batch, lengths, cfg, seeds=seeds + np.uint64(1))
    assert np.abs(other - first).max() > 0
    plain, _ = compute_fbank(batch, lengths, FbankConfig(sample_rate=8000, n_mels=40))
    # Dither of std 1 on signals of std >= 50 moves log energies only slightly.
    assert 0 < np.abs(plain - first).max() < 0.5


def test_dither_noise_is_standard_normal() -> None:
    from kocall_kernels.fbank.cpu import _gauss, _splitmix64  # the compiled versions the kernel uses

    base = np.uint64(_splitmix64(np.uint64(12345)))
    # numba hands a uint64 back as a Python int; re-wrap it so the next call types it as uint64.
    draws = np.array([_gauss(np.uint64(_splitmix64(base + np.uint64(i)))) for i in range(20000)])
    assert abs(draws.mean()) < 0.03 and abs(draws.std() - 1.0) < 0.03


def test_config_yaml_round_trip(tmp_path: Path) -> None:
    cfg = FbankConfig.from_yaml(REPO / "conf" / "fbank.yaml")
    assert cfg.sample_rate == 8000 and cfg.pad_length == 256
    bad = tmp_path / "bad.yaml"
    bad.write_text("sample_rate: 8000\nnum_bins: 80\n")
    with pytest.raises(ValueError, match="num_bins"):
        FbankConfig.from_yaml(bad)
    with pytest.raises(ValueError):
        FbankConfig(sample_rate=8000, high_freq=4100)


SIM_SCRIPT = textwrap.dedent("""
    import json, sys, warnings
    import numpy as np
    warnings.simplefilter("ignore")
    from kocall_kernels.fbank import FbankConfig, compute_fbank
    results = []
    for sr, window, dither, threads in ((8000, "povey", 1.0, 32), (16000, "hamming", 0.0, 64)):
        cfg = FbankConfig(sample_rate=sr, n_mels=23, window=window, dither=dither, high_freq=-300)
        rng = np.random.default_rng(sr)
        win, shift = cfg.win_length, cfg.shift_length
        lengths = np.array([win + 3 * shift + 5, win - 1, win + shift])
        pcm = (1500 * rng.standard_normal((3, lengths.max() + 11))).astype(np.float32)
        gpu, n_gpu = compute_fbank(pcm, lengths, cfg, backend="cuda", threads_per_block=threads)
        cpu, n_cpu = compute_fbank(pcm, lengths, cfg, backend="cpu")
        results.append({"shape": list(gpu.shape), "frames": n_gpu.tolist(), "cpu_frames": n_cpu.tolist(),
                        "max_diff": float(np.abs(gpu - cpu).max()),
                        "pad_zero": bool(np.all(gpu[1] == 0) and np.all(gpu[2, n_gpu[2]:] == 0))})
    print(json.dumps(results))
""")


def test_cuda_kernel_matches_cpu_twin_in_simulator() -> None:
    # numba reads NUMBA_ENABLE_CUDASIM at import time, so the simulator runs in its own process.
    env = cuda_subprocess_env()
    proc = subprocess.run([sys.executable, "-c", SIM_SCRIPT], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for res in results:
        assert res["frames"] == res["cpu_frames"] == [4, 0, 2]
        assert res["shape"][:2] == [3, 4]
        assert res["max_diff"] <= 1e-4, res
        assert res["pad_zero"], res


def _first_flac(corpus: Path) -> Path:
    files = sorted(corpus.rglob("*.flac"))
    if not files:
        pytest.skip(f"no audio under {corpus}")
    return files[0]


@pytest.mark.shared
@pytest.mark.parametrize("corpus, rate", [("emotiontts_ko", 8000), ("deeply_read_ko", 16000)])
def test_real_audio_matches_kaldi_native_fbank(corpus: str, rate: int) -> None:
    from kocall.audio import load_audio
    from kocall.paths import shared_corpora

    root = shared_corpora() / corpus
    if not root.is_dir():
        pytest.skip(f"shared corpus not present ({root}); this test needs the real-speech corpora")
    path = _first_flac(root)
    samples, sr = load_audio(str(path), path.stem, expected_sr=rate)
    for cfg in (FbankConfig(sample_rate=sr, n_mels=80, high_freq=3800),
                FbankConfig(sample_rate=sr, n_mels=64, high_freq=-200, window="hamming")):
        feats, n = compute_fbank(samples[None], [samples.size], cfg)
        assert_close(feats[0, :n[0]], knf_fbank(samples, cfg))
