"""Numba CUDA kernel of the fused log-mel filterbank: one thread block per frame.

Each block reads its frame of PCM from global memory once, and keeps everything else
on chip: the (dithered) frame, the even/odd-packed FFT buffer and the power spectrum
live in shared memory; the mean for DC removal is a shared-memory tree reduction.
Only the n_mels log energies are written back. Threads stride over samples, butterflies,
bins and mel bands, so any power-of-two block size up to MAX_THREADS works (the
simulator tests use a small one).

Both flavours of config.py run through the same kernel. The whisper flavour reads its
centred frames with reflect padding at the signal's ends, skips DC removal and
pre-emphasis, transforms with the mixed-radix FFT (M = 200: radix 2, 2, 2, 5, 5), takes
log10, and reduces the block's largest value into a per-utterance maximum (atomic max);
a second, elementwise kernel (`_dynamic_range_kernel`) then applies max(x, max - 8) and
(x + 4) / 4 to every valid frame.

The arithmetic, tables and dither hash are those of the CPU twin (cpu.py), so the two
agree to float32 rounding. Runs under NUMBA_ENABLE_CUDASIM=1.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from kocall_kernels.fbank.config import MAX_PAD, WHISPER_DYN_RANGE, FbankConfig, FbankTables
from kocall_kernels.fbank.cpu import (TABLE_NAMES, gauss_from_hash, kernel_params, radix3_butterfly,
                                      radix5_butterfly, reflect_index, splitmix64)

MAX_THREADS = 256
_HALF_PAD = MAX_PAD // 2

_splitmix64_dev = cuda.jit(device=True)(splitmix64)
_gauss_dev = cuda.jit(device=True)(gauss_from_hash)
_reflect_dev = cuda.jit(device=True)(reflect_index)
_radix3_dev = cuda.jit(device=True, inline=True)(radix3_butterfly)
_radix5_dev = cuda.jit(device=True, inline=True)(radix5_butterfly)


@cuda.jit
def _fbank_kernel(pcm, lengths, frame_utt, frame_t, seeds, out, utt_max, win, shift, pad, center, dither, preemph,
                  remove_dc, use_log10, log_floor, window, fft_perm, radix, tw_re, tw_im, post_re, post_im, mel_start,
                  mel_len, mel_off, mel_w):
    frame = cuda.shared.array(MAX_PAD, dtype=np.float32)    # frame samples, later the power spectrum
    zr = cuda.shared.array(_HALF_PAD, dtype=np.float32)
    zi = cuda.shared.array(_HALF_PAD, dtype=np.float32)
    red = cuda.shared.array(MAX_THREADS, dtype=np.float32)

    f = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    b = frame_utt[f]
    t = frame_t[f]
    n_b = lengths[b]
    start = t * shift - center
    m_half = pad // 2
    c = np.float32(preemph)

    # 1. frame (+ dither) into shared memory (reflected past the signal's ends); block-sum for the mean.
    acc = np.float32(0.0)
    base = _splitmix64_dev(np.uint64(seeds[b]))
    counter = np.uint64(t) * np.uint64(win)
    for i in range(tid, win, nt):
        j = start + i
        if j < 0 or j >= n_b:
            j = _reflect_dev(j, n_b)
        v = np.float32(pcm[b, j])
        if dither != 0.0:
            v += np.float32(dither) * np.float32(_gauss_dev(_splitmix64_dev(base + counter + np.uint64(i))))
        frame[i] = v
        acc += v
    red[tid] = acc
    cuda.syncthreads()
    s = nt // 2
    while s > 0:
        if tid < s:
            red[tid] += red[tid + s]
        cuda.syncthreads()
        s //= 2
    mu = red[0] / np.float32(win) if remove_dc else np.float32(0.0)

    # 2. pre-emphasis + window + zero pad, even/odd-packed in digit-reversed order.
    for n in range(tid, pad, nt):
        x = np.float32(0.0)
        if n < win:
            prev = frame[n - 1] if n > 0 else frame[0]
            x = (frame[n] - c * prev - (np.float32(1.0) - c) * mu) * window[n]
        k = fft_perm[n >> 1]
        if n & 1:
            zi[k] = x
        else:
            zr[k] = x
    cuda.syncthreads()

    # 3. mixed-radix DIT complex FFT of pad/2 points, one butterfly per thread-iteration.
    size = 1
    for stage in range(radix.size):
        r = radix[stage]
        span = size
        size = span * r
        step = m_half // size
        for bf in range(tid, m_half // r, nt):
            j = bf % span
            a = (bf // span) * size + j
            if r == 2:
                bb = a + span
                wr = tw_re[j * step]
                wi = tw_im[j * step]
                tr = wr * zr[bb] - wi * zi[bb]
                ti = wr * zi[bb] + wi * zr[bb]
                ar = zr[a]
                ai = zi[a]
                zr[bb] = ar - tr
                zi[bb] = ai - ti
                zr[a] = ar + tr
                zi[a] = ai + ti
            elif r == 3:
                a1 = a + span
                a2 = a1 + span
                (zr[a], zi[a], zr[a1], zi[a1], zr[a2], zi[a2]) = _radix3_dev(
                    zr[a], zi[a], zr[a1], zi[a1], zr[a2], zi[a2],
                    tw_re[j * step], tw_im[j * step], tw_re[2 * j * step], tw_im[2 * j * step])
            else:  # r == 5
                a1 = a + span
                a2 = a1 + span
                a3 = a2 + span
                a4 = a3 + span
                (zr[a], zi[a], zr[a1], zi[a1], zr[a2], zi[a2], zr[a3], zi[a3], zr[a4], zi[a4]) = _radix5_dev(
                    zr[a], zi[a], zr[a1], zi[a1], zr[a2], zi[a2], zr[a3], zi[a3], zr[a4], zi[a4],
                    tw_re[j * step], tw_im[j * step], tw_re[2 * j * step], tw_im[2 * j * step],
                    tw_re[3 * j * step], tw_im[3 * j * step], tw_re[4 * j * step], tw_im[4 * j * step])
        cuda.syncthreads()

    # 4. split step to the real spectrum; power of bins 0..M into `frame` (no longer needed).
    for k in range(tid, m_half + 1, nt):
        if k == m_half:
            nyq = zr[0] - zi[0]
            frame[k] = nyq * nyq
        else:
            mk = m_half - k if k > 0 else 0
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
            frame[k] = xr * xr + xi * xi
    cuda.syncthreads()

    # 5. sparse mel + log floor: the only global write (plus, for whisper, one atomic max per block).
    top = np.float32(-np.inf)
    for m in range(tid, mel_start.size, nt):
        e = np.float32(0.0)
        off = mel_off[m]
        st = mel_start[m]
        for q in range(mel_len[m]):
            e += mel_w[off + q] * frame[st + q]
        v = math.log10(max(e, np.float32(log_floor))) if use_log10 else math.log(max(e, np.float32(log_floor)))
        out[b, t, m] = v
        top = max(top, v)
    if use_log10:  # uniform over the block, so the barriers below are safe
        red[tid] = top
        cuda.syncthreads()
        s = nt // 2
        while s > 0:
            if tid < s:
                red[tid] = max(red[tid], red[tid + s])
            cuda.syncthreads()
            s //= 2
        if tid == 0:
            cuda.atomic.max(utt_max, b, red[0])


@cuda.jit
def _dynamic_range_kernel(out, num_frames, utt_max, dyn_range):
    """Whisper's second pass, one thread per output value: max(x, utt max - range), (x + 4) / 4."""
    i = cuda.grid(1)
    per_utt = out.shape[1] * out.shape[2]
    if i < out.shape[0] * per_utt:
        b = i // per_utt
        t = (i // out.shape[2]) % out.shape[1]
        m = i % out.shape[2]
        if t < num_frames[b]:
            low = utt_max[b] - np.float32(dyn_range)
            out[b, t, m] = (max(out[b, t, m], low) + np.float32(4.0)) / np.float32(4.0)


def launch_frames(d_pcm, d_lengths, d_num_frames, d_frame_utt, d_frame_t, d_seeds, d_out, cfg: FbankConfig,
                  tables: FbankTables, threads_per_block: int = 128, stream=0) -> None:
    """Both passes on device arrays: the frame kernel (one block per listed frame) and, for the
    whisper flavour, the per-utterance dynamic range. `d_out` must hold zeros in its padding."""
    n_frames = d_frame_utt.shape[0]
    if n_frames == 0:
        return
    whisper = cfg.flavour == "whisper"
    utt_max = cuda.to_device(np.full(max(d_out.shape[0], 1), -np.inf, np.float32), stream=stream)
    _fbank_kernel[n_frames, threads_per_block, stream](
        d_pcm, d_lengths, d_frame_utt, d_frame_t, d_seeds, d_out, utt_max, *kernel_params(cfg),
        *(device_tables(tables)[name] for name in TABLE_NAMES))
    if whisper:
        _dynamic_range_kernel[(d_out.size + 255) // 256, 256, stream](d_out, d_num_frames, utt_max,
                                                                      WHISPER_DYN_RANGE)


def run_frames_cuda(pcm: np.ndarray, lengths: np.ndarray, num_frames: np.ndarray, frame_utt: np.ndarray,
                    frame_t: np.ndarray, seeds: np.ndarray, out_shape: tuple[int, int, int], cfg: FbankConfig,
                    tables: FbankTables, threads_per_block: int = 128, stream=0, return_device: bool = False):
    """Launch one block per frame. `pcm` may be a host array or a device array."""
    if threads_per_block < 1 or threads_per_block > MAX_THREADS or threads_per_block & (threads_per_block - 1):
        raise ValueError(f"threads_per_block must be a power of two <= {MAX_THREADS}")
    d_out = cuda.device_array(out_shape, dtype=np.float32, stream=stream)
    if d_out.size:
        _zero_kernel[(d_out.size + 255) // 256, 256, stream](d_out.reshape(d_out.size))
    if frame_utt.size:
        to_dev = (lambda a: cuda.to_device(a, stream=stream) if isinstance(a, np.ndarray) else a)
        launch_frames(to_dev(pcm), to_dev(lengths), to_dev(num_frames), to_dev(frame_utt), to_dev(frame_t),
                      to_dev(seeds), d_out, cfg, tables, threads_per_block, stream)
    return d_out if return_device else d_out.copy_to_host(stream=stream)


@cuda.jit
def _zero_kernel(flat):
    i = cuda.grid(1)
    if i < flat.size:
        flat[i] = np.float32(0.0)


_DEVICE_TABLES: dict[int, tuple[FbankTables, dict]] = {}


def device_tables(tables: FbankTables) -> dict:
    """The constant tables on the device, uploaded once per FbankTables object."""
    key = id(tables)
    if key not in _DEVICE_TABLES or _DEVICE_TABLES[key][0] is not tables:
        # The tables object is kept alongside, so its id cannot be reused while cached.
        _DEVICE_TABLES[key] = (tables, {name: cuda.to_device(getattr(tables, name)) for name in TABLE_NAMES})
    return _DEVICE_TABLES[key][1]
