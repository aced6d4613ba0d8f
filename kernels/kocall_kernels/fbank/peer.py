"""The reference peers of the tests and the benchmark, one place for both:

* kaldi-native-fbank with an FbankConfig's settings (one mapping of our options onto Kaldi's,
  so both compare against the same thing), for the kaldi flavour;
* Whisper's log-mel for the whisper flavour: faster-whisper's NumPy `FeatureExtractor`
  (`whisper_log_mel`), and openai-whisper's torch.stft recipe (`whisper_log_mel_torch`).

All are dev/bench dependencies, imported only when called. faster-whisper is installed with
--no-deps (utils/setup_env.sh): its package __init__ imports ctranslate2 and PyAV, which the
feature extractor does not use, so `faster_whisper/feature_extractor.py` (NumPy only) is loaded
by file path without importing the package.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache

import numpy as np

from kocall_kernels.fbank.config import FbankConfig


def knf_options(cfg: FbankConfig):
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.samp_freq = cfg.sample_rate
    opts.frame_opts.frame_length_ms = cfg.frame_length_ms
    opts.frame_opts.frame_shift_ms = cfg.frame_shift_ms
    opts.frame_opts.snip_edges = True
    opts.frame_opts.window_type = cfg.window
    opts.frame_opts.preemph_coeff = cfg.preemph
    opts.frame_opts.remove_dc_offset = cfg.remove_dc
    opts.mel_opts.num_bins = cfg.n_mels
    opts.mel_opts.low_freq = cfg.low_freq
    opts.mel_opts.high_freq = cfg.high_freq
    return opts


def knf_features(samples: np.ndarray, opts, sample_rate: int, n_mels: int) -> np.ndarray:
    """(frames, n_mels) float32 log-mel features of one utterance (int16-scale samples)."""
    import kaldi_native_fbank as knf

    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(sample_rate, np.asarray(samples, np.float32).tolist())  # tolist: faster than pybind's numpy path
    fb.input_finished()
    frames = [fb.get_frame(i) for i in range(fb.num_frames_ready)]
    return np.array(frames, dtype=np.float32).reshape(len(frames), n_mels)


def knf_fbank(samples: np.ndarray, cfg: FbankConfig) -> np.ndarray:
    return knf_features(samples, knf_options(cfg), cfg.sample_rate, cfg.n_mels)


# ------------------------------------------------------------------ Whisper's log-mel
@lru_cache(maxsize=1)
def faster_whisper_features_module():
    """faster_whisper/feature_extractor.py as a module, without importing faster_whisper."""
    spec = importlib.util.find_spec("faster_whisper")  # finds the package; does not run its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("faster-whisper is not installed: pip install --no-deps faster-whisper "
                          "(utils/setup_env.sh does this)")
    path = f"{list(spec.submodule_search_locations)[0]}/feature_extractor.py"
    module_spec = importlib.util.spec_from_file_location("kocall_peer_faster_whisper_features", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@lru_cache(maxsize=4)
def whisper_extractor(n_mels: int):
    return faster_whisper_features_module().FeatureExtractor(feature_size=n_mels)


def whisper_log_mel(samples: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """(T, n_mels) float32 Whisper log-mel of one 16 kHz int16-scale utterance, T = N // 160,
    by faster-whisper's NumPy extractor on the unpadded signal (padding=0; Whisper's
    transcription pads to 30 s, the model recipe here does not)."""
    audio = np.asarray(samples, np.float32) / np.float32(32768.0)
    if audio.size // 160 == 0:  # the extractor's max() of an empty spectrogram would raise
        return np.zeros((0, n_mels), np.float32)
    return np.ascontiguousarray(whisper_extractor(n_mels)(audio, padding=0).T.astype(np.float32))


def whisper_log_mel_torch(samples: np.ndarray, n_mels: int = 80, device: str = "cpu") -> np.ndarray:
    """openai-whisper's log_mel_spectrogram (torch.stft, centred, reflect) on the unpadded signal,
    with the same Slaney filters (faster-whisper's copy of librosa's formula). torch's reflect
    padding needs N > 200 samples."""
    import torch

    filters = torch.from_numpy(whisper_extractor(n_mels).mel_filters).to(device)
    audio = torch.from_numpy(np.asarray(samples, np.float32) / np.float32(32768.0)).to(device)
    stft = torch.stft(audio, 400, 160, window=torch.hann_window(400, device=device), return_complex=True)
    magnitudes = stft[..., :-1].abs() ** 2
    log_spec = torch.clamp(filters @ magnitudes, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).T.contiguous().cpu().numpy()
