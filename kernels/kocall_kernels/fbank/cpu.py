"""CPU twin of the fused log-mel filterbank: numba, parallel over groups of 16 frames.

For every valid (utterance, frame) pair: framing (kaldi: snip_edges; whisper: centred, reflect
padding at the ends) -> optional seeded dither -> DC removal -> pre-emphasis (Kaldi's
first-sample rule x[0] -= c * x[0]) -> window -> zero-pad -> real FFT (pad/2-point complex
mixed-radix FFT on the even/odd packed frame, then the split step) -> power -> sparse mel
weights -> kaldi: ln(max(e, FLT_EPSILON)); whisper: log10(max(e, 1e-10)). The whisper flavour
has no DC removal or pre-emphasis (those steps are skipped), and a second pass per utterance
(`_dynamic_range`) floors at the utterance max - 8 and maps x -> (x + 4) / 4.

The log is a vectorised polynomial (see step 6), within a few float32 ulp of libm.

The FFT is decimation in time over stages of radix 2, 3 or 5 (config.fft_radices): M = 128
(Kaldi 8 kHz) is seven radix-2 stages, Whisper's M = 200 is 2, 2, 2, 5, 5. Each stage of
radix r combines r sub-FFTs of length L into one of length r*L, in place: element j of
sub-FFT q sits at block + q*L + j, is multiplied by the twiddle W^(q*j*M/(r*L)) and the r
values go through an r-point DFT (hand-written butterflies).

Frames are processed LANES (16) at a time in lane-minor scratch buffers ([sample, lane]):
every step's innermost loop runs over the 16 frames with no data-dependent indexing, so LLVM
turns it into SIMD (one AVX-512 or two AVX2 instructions), the bit-reversal and twiddle
lookups are paid once per group, and the per-thread buffers stay in L1/L2. That made the
twin 2x faster than the one-frame-at-a-time loop it replaced (same arithmetic per frame).
DC removal is folded into pre-emphasis: (s_i - mu) - c (s_{i-1} - mu) = s_i - c s_{i-1} - (1 - c) mu.

The dither noise is a counter-based hash (splitmix64 + Box-Muller) of (utterance seed,
frame, sample), so it is identical whatever the batching, thread count or backend.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange
from numba.extending import register_jitable

from kocall_kernels.fbank.config import FLT_EPSILON, WHISPER_DYN_RANGE, WHISPER_LOG_FLOOR, FbankConfig, FbankTables

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


LANES = 16  # frames transformed together: the innermost loops run over them, so LLVM vectorises
            # every step (16 float32 = one AVX-512 register, two AVX2 registers)


def reflect_index(j: int, n: int) -> int:
    """numpy.pad(mode='reflect') source index of padded position j (j < 0 or j >= n) of an
    n-sample signal: the signal mirrored about its end samples, repeatedly if needed."""
    if n <= 1:
        return 0
    period = 2 * (n - 1)
    j = abs(j) % period
    return period - j if j >= n else j


_reflect = njit(cache=True, inline="always")(reflect_index)

# 5-point DFT constants: cos/sin of 2 pi/5 and 4 pi/5; 3-point: sin(2 pi/3).
C51, C52 = np.float32(math.cos(2 * math.pi / 5)), np.float32(math.cos(4 * math.pi / 5))
S51, S52 = np.float32(math.sin(2 * math.pi / 5)), np.float32(math.sin(4 * math.pi / 5))
S3 = np.float32(math.sin(2 * math.pi / 3))
SQRT2 = np.float32(math.sqrt(2.0))
LN2 = np.float32(math.log(2.0))


# The radix-3 and radix-5 butterflies, written once in the Python subset that numba.njit
# (here, inlined into the lane loop) and numba.cuda.jit(device=True) (cuda.py) both compile:
# the r inputs of one butterfly (x0 in place, x1.. to be twiddled by w1..) -> its r outputs.
@register_jitable(inline="always")
def cmul(xr, xi, wr, wi):
    """(xr + i xi) (wr + i wi)."""
    return wr * xr - wi * xi, wr * xi + wi * xr


def radix3_butterfly(x0r, x0i, x1r, x1i, x2r, x2i, w1r, w1i, w2r, w2i):
    y1r, y1i = cmul(x1r, x1i, w1r, w1i)
    y2r, y2i = cmul(x2r, x2i, w2r, w2i)
    sr = y1r + y2r
    si = y1i + y2i
    mr = x0r - np.float32(0.5) * sr
    mi = x0i - np.float32(0.5) * si
    dr = S3 * (y1r - y2r)
    di = S3 * (y1i - y2i)
    # X0 = x0 + s, X1 = m - i d, X2 = m + i d
    return x0r + sr, x0i + si, mr + di, mi - dr, mr - di, mi + dr


def radix5_butterfly(x0r, x0i, x1r, x1i, x2r, x2i, x3r, x3i, x4r, x4i, w1r, w1i, w2r, w2i, w3r, w3i, w4r, w4i):
    y1r, y1i = cmul(x1r, x1i, w1r, w1i)
    y2r, y2i = cmul(x2r, x2i, w2r, w2i)
    y3r, y3i = cmul(x3r, x3i, w3r, w3i)
    y4r, y4i = cmul(x4r, x4i, w4r, w4i)
    t1r = y1r + y4r
    t1i = y1i + y4i
    t2r = y2r + y3r
    t2i = y2i + y3i
    t3r = y1r - y4r
    t3i = y1i - y4i
    t4r = y2r - y3r
    t4i = y2i - y3i
    p1r = x0r + C51 * t1r + C52 * t2r
    p1i = x0i + C51 * t1i + C52 * t2i
    p2r = x0r + C52 * t1r + C51 * t2r
    p2i = x0i + C52 * t1i + C51 * t2i
    q1r = S51 * t3r + S52 * t4r
    q1i = S51 * t3i + S52 * t4i
    q2r = S52 * t3r - S51 * t4r
    q2i = S52 * t3i - S51 * t4i
    # X0 = x0 + t1 + t2, X1 = p1 - i q1, X2 = p2 - i q2, X3 = p2 + i q2, X4 = p1 + i q1
    return (x0r + t1r + t2r, x0i + t1i + t2i, p1r + q1i, p1i - q1r, p2r + q2i, p2i - q2r,
            p2r - q2i, p2i + q2r, p1r - q1i, p1i + q1r)


_radix3 = njit(cache=True, inline="always")(radix3_butterfly)
_radix5 = njit(cache=True, inline="always")(radix5_butterfly)


@njit(parallel=True, fastmath=True, cache=True)
def _fbank_frames(pcm, lengths, frame_utt, frame_t, seeds, out, win, shift, pad, center, dither, preemph, remove_dc,
                  use_log10, log_floor, window, fft_perm, radix, tw_re, tw_im, post_re, post_im, mel_start, mel_len,
                  mel_off, mel_w, n_chunks):
    total = frame_utt.size
    n_cols = np.int64(pcm.shape[1])
    flat = pcm.reshape(pcm.size)
    n_groups = (total + LANES - 1) // LANES
    m_half = pad // 2
    n_mels = mel_start.size
    floor = np.float32(log_floor)
    log_scale = np.float32(1.0 / math.log(10.0)) if use_log10 else np.float32(1.0)
    floor_log = np.float32(math.log10(log_floor)) if use_log10 else np.float32(math.log(log_floor))
    c = np.float32(preemph)
    one_minus_c = np.float32(1.0) - c
    dith = np.float32(dither)
    plain = preemph == 0.0 and not remove_dc   # whisper: window only
    for chunk in prange(n_chunks):
        g_lo = chunk * n_groups // n_chunks
        g_hi = (chunk + 1) * n_groups // n_chunks
        # Lane-minor scratch: element [i, l] is sample/bin i of the group's frame l.
        frame = np.empty((win, LANES), np.float32)
        zr = np.empty((m_half, LANES), np.float32)
        zi = np.empty((m_half, LANES), np.float32)
        power = np.empty((m_half + 1, LANES), np.float32)
        mu = np.empty(LANES, np.float32)
        acc = np.empty(LANES, np.float32)
        acc_bits = acc.view(np.int32)
        mant = np.empty(LANES, np.float32)
        mant_bits = mant.view(np.int32)
        expo = np.empty(LANES, np.float32)
        floored = np.empty(LANES, np.bool_)
        base = np.empty(LANES, np.int64)
        start = np.empty(LANES, np.int64)
        for grp in range(g_lo, g_hi):
            f0 = grp * LANES
            used = min(LANES, total - f0)
            # 1. frames (+ dither) into the lanes. Unused lanes of the last group repeat its first
            #    frame (computed, never written out). Frames reaching past either end of their
            #    signal (whisper's centred first and last frames) read it reflected.
            inside = True
            for l in range(LANES):
                fl = f0 + l if l < used else f0
                b = frame_utt[fl]
                base[l] = np.int64(b) * n_cols
                start[l] = np.int64(frame_t[fl]) * shift - center
                if start[l] < 0 or start[l] + win > lengths[b]:
                    inside = False
            if inside and dither == 0.0:
                # i outer, lanes inner: contiguous stores, one gather load per i.
                for l in range(LANES):
                    base[l] += start[l]
                for i in range(win):
                    for l in range(LANES):
                        frame[i, l] = np.float32(flat[base[l] + i])
            else:
                for l in range(LANES):
                    fl = f0 + l if l < used else f0
                    b = frame_utt[fl]
                    n_b = lengths[b]
                    hashed = _splitmix64(np.uint64(seeds[b]))
                    counter = np.uint64(frame_t[fl]) * np.uint64(win)
                    for i in range(win):
                        j = start[l] + i
                        if j < 0 or j >= n_b:
                            j = _reflect(j, n_b)
                        v = np.float32(flat[base[l] + j])
                        if dither != 0.0:
                            v += dith * np.float32(_gauss(_splitmix64(hashed + counter + np.uint64(i))))
                        frame[i, l] = v
            # 2. the mean for DC removal.
            for l in range(LANES):
                acc[l] = np.float32(0.0)
            if remove_dc:
                for i in range(win):
                    for l in range(LANES):
                        acc[l] += frame[i, l]
            for l in range(LANES):
                mu[l] = acc[l] / np.float32(win)
            # 3. pre-emphasis + window + zero pad, written even/odd-packed in digit-reversed order.
            for n in range(pad):
                k = fft_perm[n >> 1]
                dst = zi if n & 1 else zr
                if n < win:
                    wn = window[n]
                    if plain:
                        for l in range(LANES):
                            dst[k, l] = frame[n, l] * wn
                    else:
                        p = n - 1 if n > 0 else 0
                        for l in range(LANES):
                            dst[k, l] = (frame[n, l] - c * frame[p, l] - one_minus_c * mu[l]) * wn
                else:
                    for l in range(LANES):
                        dst[k, l] = np.float32(0.0)
            # 4. pad/2-point complex FFT (mixed-radix DIT), every butterfly on all lanes at once.
            size = 1
            for stage in range(radix.size):
                r = radix[stage]
                span = size           # length of the sub-FFTs this stage combines
                size = span * r
                step = m_half // size
                for s0 in range(0, m_half, size):
                    for j in range(span):
                        a = s0 + j
                        if r == 2:
                            wr = tw_re[j * step]
                            wi = tw_im[j * step]
                            bb = a + span
                            for l in range(LANES):
                                tr = wr * zr[bb, l] - wi * zi[bb, l]
                                ti = wr * zi[bb, l] + wi * zr[bb, l]
                                zr[bb, l] = zr[a, l] - tr
                                zi[bb, l] = zi[a, l] - ti
                                zr[a, l] += tr
                                zi[a, l] += ti
                        elif r == 3:
                            a1 = a + span
                            a2 = a1 + span
                            w1r, w1i = tw_re[j * step], tw_im[j * step]
                            w2r, w2i = tw_re[2 * j * step], tw_im[2 * j * step]
                            for l in range(LANES):
                                (zr[a, l], zi[a, l], zr[a1, l], zi[a1, l], zr[a2, l], zi[a2, l]) = _radix3(
                                    zr[a, l], zi[a, l], zr[a1, l], zi[a1, l], zr[a2, l], zi[a2, l],
                                    w1r, w1i, w2r, w2i)
                        else:  # r == 5
                            a1 = a + span
                            a2 = a1 + span
                            a3 = a2 + span
                            a4 = a3 + span
                            w1r, w1i = tw_re[j * step], tw_im[j * step]
                            w2r, w2i = tw_re[2 * j * step], tw_im[2 * j * step]
                            w3r, w3i = tw_re[3 * j * step], tw_im[3 * j * step]
                            w4r, w4i = tw_re[4 * j * step], tw_im[4 * j * step]
                            for l in range(LANES):
                                (zr[a, l], zi[a, l], zr[a1, l], zi[a1, l], zr[a2, l], zi[a2, l], zr[a3, l], zi[a3, l],
                                 zr[a4, l], zi[a4, l]) = _radix5(
                                    zr[a, l], zi[a, l], zr[a1, l], zi[a1, l], zr[a2, l], zi[a2, l],
                                    zr[a3, l], zi[a3, l], zr[a4, l], zi[a4, l],
                                    w1r, w1i, w2r, w2i, w3r, w3i, w4r, w4i)
            # 5. split into the pad-point real spectrum's power, bins 0..M (M = Nyquist).
            for k in range(m_half):
                mk = m_half - k if k > 0 else 0
                wr = post_re[k]
                wi = post_im[k]
                for l in range(LANES):
                    ar = zr[k, l]
                    ai = zi[k, l]
                    cr = zr[mk, l]
                    ci = -zi[mk, l]
                    er = np.float32(0.5) * (ar + cr)
                    ei = np.float32(0.5) * (ai + ci)
                    od_r = np.float32(0.5) * (ai - ci)
                    od_i = np.float32(-0.5) * (ar - cr)
                    xr = er + wr * od_r - wi * od_i
                    xi = ei + wr * od_i + wi * od_r
                    power[k, l] = xr * xr + xi * xi
            for l in range(LANES):
                nyq = zr[0, l] - zi[0, l]
                power[m_half, l] = nyq * nyq
            # 6. sparse mel + log floor; only the used lanes are written out.
            for m in range(n_mels):
                off = mel_off[m]
                st = mel_start[m]
                for l in range(LANES):
                    acc[l] = np.float32(0.0)
                for q in range(mel_len[m]):
                    wq = mel_w[off + q]
                    for l in range(LANES):
                        acc[l] += wq * power[st + q, l]
                # log(max(e, floor)) on all lanes at once: e = 2^x * mant, mant in [sqrt(1/2), sqrt(2)),
                # ln(mant) = 2 atanh(s), s = (mant - 1) / (mant + 1), |s| <= 0.172, by its series to
                # s^9 (truncation < 1e-9; within a few float32 ulp of libm). libm's scalar logf was a
                # quarter of the whisper flavour's time; this loop is SIMD. Floored values get the
                # floor's log exactly (silence is exactly Whisper's -1.5).
                for l in range(LANES):
                    floored[l] = acc[l] <= floor
                    acc[l] = max(acc[l], floor)
                for l in range(LANES):
                    bits = acc_bits[l]
                    expo[l] = np.float32((bits >> 23) - 127)
                    mant_bits[l] = (bits & 0x007FFFFF) | 0x3F800000
                for l in range(LANES):
                    mm = mant[l]
                    ex = expo[l]
                    if mm > SQRT2:
                        mm *= np.float32(0.5)
                        ex += np.float32(1.0)
                    sv = (mm - np.float32(1.0)) / (mm + np.float32(1.0))
                    s2 = sv * sv
                    series = np.float32(1.0) + s2 * (np.float32(1 / 3) + s2 * (np.float32(0.2) + s2 * (
                        np.float32(1 / 7) + s2 * np.float32(1 / 9))))
                    value = (ex * LN2 + np.float32(2.0) * sv * series) * log_scale
                    acc[l] = floor_log if floored[l] else value
                for l in range(used):
                    out[frame_utt[f0 + l], frame_t[f0 + l], m] = acc[l]


@njit(parallel=True, fastmath=True, cache=True)
def _dynamic_range(out, num_frames, dyn_range):
    """Whisper's per-utterance second pass: max(x, x.max() - dyn_range), then (x + 4) / 4."""
    four = np.float32(4.0)
    for b in prange(out.shape[0]):
        n = num_frames[b]
        if n == 0:
            continue
        top = np.float32(-np.inf)
        for t in range(n):
            for m in range(out.shape[2]):
                top = max(top, out[b, t, m])
        low = top - np.float32(dyn_range)
        for t in range(n):
            for m in range(out.shape[2]):
                out[b, t, m] = (max(out[b, t, m], low) + four) / four


def kernel_params(cfg: FbankConfig) -> tuple:
    """The scalar arguments of both backends' frame kernels, after (pcm, lengths, frames, seeds, out)."""
    whisper = cfg.flavour == "whisper"
    return (cfg.win_length, cfg.shift_length, cfg.pad_length, cfg.center_pad, float(cfg.dither),
            float(cfg.preemph), bool(cfg.remove_dc), whisper, WHISPER_LOG_FLOOR if whisper else FLT_EPSILON)


TABLE_NAMES = ("window", "fft_perm", "radix", "tw_re", "tw_im", "post_re", "post_im", "mel_start", "mel_len",
               "mel_off", "mel_w")


def run_frames(pcm: np.ndarray, lengths: np.ndarray, num_frames: np.ndarray, frame_utt: np.ndarray,
               frame_t: np.ndarray, seeds: np.ndarray, out: np.ndarray, cfg: FbankConfig, tables: FbankTables) -> None:
    """Fill `out[b, t, :]` for every listed frame (the caller zeroes the padding); for the
    whisper flavour also apply the per-utterance dynamic range to every valid frame."""
    if frame_utt.size == 0:
        return
    # A few chunks per thread balance the load without per-group scratch allocation.
    n_groups = (frame_utt.size + LANES - 1) // LANES
    n_chunks = max(1, min(n_groups, 4 * numba.get_num_threads()))
    _fbank_frames(pcm, lengths, frame_utt, frame_t, seeds, out, *kernel_params(cfg),
                  *(getattr(tables, name) for name in TABLE_NAMES), n_chunks)
    if cfg.flavour == "whisper":
        _dynamic_range(out, num_frames, WHISPER_DYN_RANGE)
