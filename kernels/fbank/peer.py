"""kaldi-native-fbank with an FbankConfig's settings: the reference peer of the tests and the
benchmark (one mapping of our options onto Kaldi's, so both compare against the same thing).
kaldi-native-fbank is a dev/bench dependency, imported only when called."""
from __future__ import annotations

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
