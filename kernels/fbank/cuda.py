"""Numba CUDA kernel of the fused log-mel filterbank: one thread block per frame.

Each block reads its frame of PCM from global memory once, and keeps everything else
on chip: the (dithered) frame, the even/odd-packed FFT buffer and the power spectrum
live in shared memory; the mean for DC removal is a shared-memory tree reduction.
Only the n_mels log energies are written back. Threads stride over samples, butterflies,
bins and mel bands, so any power-of-two block size up to MAX_THREADS works (the
simulator tests use a small one).

The arithmetic, tables and dither hash are those of the CPU twin (cpu.py), so the two
agree to float32 rounding. Runs under NUMBA_ENABLE_CUDASIM=1.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from kocall_kernels.fbank.config import FLT_EPSILON, MAX_PAD, FbankConfig, FbankTables
from kocall_kernels.fbank.cpu import gauss_from_hash, splitmix64

MAX_THREADS = 256
_HALF_PAD = MAX_PAD // 2

_splitmix64_dev = cuda.jit(device=True)(splitmix64)
_gauss_dev = cuda.jit(device=True)(gauss_from_hash)


@cuda.jit
def _fbank_kernel(pcm, frame_utt, frame_t, seeds, out, win, shift, pad, dither, preemph, remove_dc,
                  window, bitrev, tw_re, tw_im, post_re, post_im, mel_start, mel_len, mel_off, mel_w):
    frame = cuda.shared.array(MAX_PAD, dtype=np.float32)    # frame samples, later the power spectrum
    zr = cuda.shared.array(_HALF_PAD, dtype=np.float32)
    zi = cuda.shared.array(_HALF_PAD, dtype=np.float32)
    red = cuda.shared.array(MAX_THREADS, dtype=np.float32)

    f = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    b = frame_utt[f]
    t = frame_t[f]
    start = t * shift
    m_half = pad // 2
    c = np.float32(preemph)

    # 1. frame (+ dither) into shared memory; block-sum for the mean.
    acc = np.float32(0.0)
    base = _splitmix64_dev(np.uint64(seeds[b]))
    counter = np.uint64(t) * np.uint64(win)
    for i in range(tid, win, nt):
        v = np.float32(pcm[b, start + i])
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

    # 2. pre-emphasis + window + zero pad, even/odd-packed in bit-reversed order.
    for n in range(tid, pad, nt):
        x = np.float32(0.0)
        if n < win:
            prev = frame[n - 1] if n > 0 else frame[0]
            x = (frame[n] - c * prev - (np.float32(1.0) - c) * mu) * window[n]
        k = bitrev[n >> 1]
        if n & 1:
            zi[k] = x
        else:
            zr[k] = x
    cuda.syncthreads()

    # 3. radix-2 DIT complex FFT of pad/2 points, one butterfly per thread-iteration.
    size = 2
    while size <= m_half:
        half = size >> 1
        step = m_half // size
        for bf in range(tid, m_half // 2, nt):
            j = bf % half
            a = (bf // half) * size + j
            bb = a + half
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
        cuda.syncthreads()
        size <<= 1

    # 4. split step to the real spectrum; power into `frame` (no longer needed).
    for k in range(tid, m_half, nt):
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
        frame[k] = xr * xr + xi * xi
    cuda.syncthreads()

    # 5. sparse mel + log floor: the only global write.
    for m in range(tid, mel_start.size, nt):
        e = np.float32(0.0)
        off = mel_off[m]
        st = mel_start[m]
        for q in range(mel_len[m]):
            e += mel_w[off + q] * frame[st + q]
        out[b, t, m] = math.log(max(e, np.float32(FLT_EPSILON)))


def run_frames_cuda(pcm: np.ndarray, frame_utt: np.ndarray, frame_t: np.ndarray, seeds: np.ndarray,
                    out_shape: tuple[int, int, int], cfg: FbankConfig, tables: FbankTables,
                    threads_per_block: int = 128, stream=0, return_device: bool = False):
    """Launch one block per frame. `pcm` may be a host array or a device array."""
    if threads_per_block < 1 or threads_per_block > MAX_THREADS or threads_per_block & (threads_per_block - 1):
        raise ValueError(f"threads_per_block must be a power of two <= {MAX_THREADS}")
    d_out = cuda.device_array(out_shape, dtype=np.float32, stream=stream)
    if d_out.size:
        _zero_kernel[(d_out.size + 255) // 256, 256, stream](d_out.reshape(d_out.size))
    if frame_utt.size:
        to_dev = (lambda a: cuda.to_device(a, stream=stream) if isinstance(a, np.ndarray) else a)
        args = [to_dev(pcm), to_dev(frame_utt), to_dev(frame_t), to_dev(seeds), d_out,
                cfg.win_length, cfg.shift_length, cfg.pad_length, float(cfg.dither), float(cfg.preemph),
                bool(cfg.remove_dc)]
        args += [device_tables(tables)[name] for name in _TABLE_NAMES]
        _fbank_kernel[frame_utt.size, threads_per_block, stream](*args)
    return d_out if return_device else d_out.copy_to_host(stream=stream)


@cuda.jit
def _zero_kernel(flat):
    i = cuda.grid(1)
    if i < flat.size:
        flat[i] = np.float32(0.0)


_TABLE_NAMES = ("window", "bitrev", "tw_re", "tw_im", "post_re", "post_im", "mel_start", "mel_len", "mel_off",
                "mel_w")
_DEVICE_TABLES: dict[int, tuple[FbankTables, dict]] = {}


def device_tables(tables: FbankTables) -> dict:
    """The constant tables on the device, uploaded once per FbankTables object."""
    key = id(tables)
    if key not in _DEVICE_TABLES or _DEVICE_TABLES[key][0] is not tables:
        # The tables object is kept alongside, so its id cannot be reused while cached.
        _DEVICE_TABLES[key] = (tables, {name: cuda.to_device(getattr(tables, name)) for name in _TABLE_NAMES})
    return _DEVICE_TABLES[key][1]
