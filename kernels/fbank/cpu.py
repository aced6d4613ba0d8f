"""CPU twin of the fused log-mel filterbank: one numba pass per frame, parallel over frames.

For every valid (utterance, frame) pair, in one loop body and per-thread scratch buffers:
framing (snip_edges) -> optional seeded dither -> DC removal -> pre-emphasis (Kaldi's
first-sample rule x[0] -= c * x[0]) -> window -> zero-pad -> real FFT (pad/2-point
complex radix-2 FFT on the even/odd packed frame, then the split step) -> power ->
sparse Kaldi mel weights -> log(max(e, FLT_EPSILON)).

DC removal is folded into pre-emphasis: (s_i - mu) - c (s_{i-1} - mu) = s_i - c s_{i-1} - (1 - c) mu,
so the frame is read twice (sum, then transform) and never copied unless dithered.

The dither noise is a counter-based hash (splitmix64 + Box-Muller) of (utterance seed,
frame, sample), so it is identical whatever the batching, thread count or backend.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from kocall_kernels.fbank.config import FLT_EPSILON, FbankConfig, FbankTables

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S40 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(40)
_LOW24 = np.uint64(0xFFFFFF)


def splitmix64(x: np.uint64) -> np.uint64:
    """One splitmix64 step (all operands uint64, so numba never promotes to float)."""
    z = x + _GOLDEN
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


def gauss_from_hash(h: np.uint64) -> float:
    """Box-Muller on the two halves of one 64-bit hash: u1 in (0, 1], u2 in [0, 1)."""
    u1 = (np.float32(h >> _S40) + np.float32(1.0)) * np.float32(5.9604645e-08)  # 2**-24
    u2 = np.float32(h & _LOW24) * np.float32(5.9604645e-08)
    return math.sqrt(np.float32(-2.0) * math.log(u1)) * math.cos(np.float32(6.2831855) * u2)


_splitmix64 = njit(cache=True, inline="always")(splitmix64)
_gauss = njit(cache=True, inline="always")(gauss_from_hash)


@njit(cache=True, fastmath=True, inline="always")
def _fft_inplace(zr, zi, tw_re, tw_im):
    """Iterative radix-2 DIT complex FFT; input already in bit-reversed order."""
    m = zr.size
    size = 2
    while size <= m:
        half = size >> 1
        step = m // size
        for start in range(0, m, size):
            for j in range(half):
                wr = tw_re[j * step]
                wi = tw_im[j * step]
                a = start + j
                b = a + half
                tr = wr * zr[b] - wi * zi[b]
                ti = wr * zi[b] + wi * zr[b]
                zr[b] = zr[a] - tr
                zi[b] = zi[a] - ti
                zr[a] += tr
                zi[a] += ti
        size <<= 1


@njit(parallel=True, fastmath=True, cache=True)
def _fbank_frames(pcm, frame_utt, frame_t, seeds, out, win, shift, pad, dither, preemph, remove_dc,
                  window, bitrev, tw_re, tw_im, post_re, post_im, mel_start, mel_len, mel_off, mel_w,
                  n_chunks):
    total = frame_utt.size
    m_half = pad // 2
    n_mels = mel_start.size
    eps = np.float32(FLT_EPSILON)
    c = np.float32(preemph)
    one_minus_c = np.float32(1.0) - c
    dith = np.float32(dither)
    for chunk in prange(n_chunks):
        lo = chunk * total // n_chunks
        hi = (chunk + 1) * total // n_chunks
        frame = np.empty(win, np.float32)
        zr = np.empty(m_half, np.float32)
        zi = np.empty(m_half, np.float32)
        power = np.empty(m_half, np.float32)
        for f in range(lo, hi):
            b = frame_utt[f]
            t = frame_t[f]
            start = t * shift
            # 1. frame (+ dither), and its mean for DC removal.
            acc = np.float32(0.0)
            if dither != 0.0:
                base = _splitmix64(np.uint64(seeds[b]))
                counter = np.uint64(t) * np.uint64(win)
                for i in range(win):
                    g = _gauss(_splitmix64(base + counter + np.uint64(i)))
                    v = np.float32(pcm[b, start + i]) + dith * np.float32(g)
                    frame[i] = v
                    acc += v
            else:
                for i in range(win):
                    v = np.float32(pcm[b, start + i])
                    frame[i] = v
                    acc += v
            mu = acc / np.float32(win) if remove_dc else np.float32(0.0)
            # 2. pre-emphasis + window + zero pad, written even/odd-packed in bit-reversed order.
            for n in range(pad):
                if n < win:
                    prev = frame[n - 1] if n > 0 else frame[0]
                    x = (frame[n] - c * prev - one_minus_c * mu) * window[n]
                else:
                    x = np.float32(0.0)
                k = bitrev[n >> 1]
                if n & 1:
                    zi[k] = x
                else:
                    zr[k] = x
            # 3. pad/2-point complex FFT, then split into the pad-point real spectrum's power.
            _fft_inplace(zr, zi, tw_re, tw_im)
            for k in range(m_half):
                mk = (m_half - k) & (m_half - 1)
                ar = zr[k]
                ai = zi[k]
                cr = zr[mk]
                ci = -zi[mk]
                er = np.float32(0.5) * (ar + cr)
                ei = np.float32(0.5) * (ai + ci)
                od_r = np.float32(0.5) * (ai - ci)
                od_i = np.float32(-0.5) * (ar - cr)
                wr = post_re[k]
                wi = post_im[k]
                xr = er + wr * od_r - wi * od_i
                xi = ei + wr * od_i + wi * od_r
                power[k] = xr * xr + xi * xi
            # 4. sparse mel + log floor.
            for m in range(n_mels):
                s = np.float32(0.0)
                off = mel_off[m]
                st = mel_start[m]
                for q in range(mel_len[m]):
                    s += mel_w[off + q] * power[st + q]
                out[b, t, m] = math.log(max(s, eps))


def run_frames(pcm: np.ndarray, frame_utt: np.ndarray, frame_t: np.ndarray, seeds: np.ndarray,
               out: np.ndarray, cfg: FbankConfig, tables: FbankTables) -> None:
    """Fill `out[b, t, :]` for every listed frame (the caller zeroes the padding)."""
    if frame_utt.size == 0:
        return
    # A few chunks per thread balance the load without per-frame scratch allocation.
    n_chunks = max(1, min(frame_utt.size, 4 * numba.get_num_threads()))
    _fbank_frames(pcm, frame_utt, frame_t, seeds, out, cfg.win_length, cfg.shift_length, cfg.pad_length,
                  float(cfg.dither), float(cfg.preemph), bool(cfg.remove_dc), tables.window, tables.bitrev,
                  tables.tw_re, tables.tw_im, tables.post_re, tables.post_im, tables.mel_start, tables.mel_len,
                  tables.mel_off, tables.mel_w, n_chunks)
