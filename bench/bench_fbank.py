"""Benchmark: the fused log-mel filterbank (kocall_kernels.fbank) against its peers.

Same audio, same settings for every row (conf/fbank.yaml: 8 kHz, 25/10 ms frames, 256-point
FFT, povey window, pre-emphasis 0.97, per-frame DC removal, 80 mels over 20-3800 Hz, no dither):

CPU
  ours            numba CPU twin (kernels/kocall_kernels/fbank/cpu.py), --threads numba threads, 64 utterances a call
  knf             kaldi-native-fbank OnlineFbank, one utterance at a time, 1 process
  knf xN          the same over N = --threads forked processes (the peer on as many cores as ours)
  librosa         librosa 0.11 melspectrogram (povey window padded to 256, htk mel, norm=None,
                  pre-emphasis over the whole signal; librosa has no per-frame DC removal) + log
  librosa xN      the same over N processes
GPU (only where numba finds a CUDA device, else skipped with a message; the torch rows also
     need a CUDA build of torch, and are skipped with a message without one)
  ours            the Numba CUDA kernel on one ragged batch of every utterance, already on the device
  ours e2e        compute_fbank(backend="cuda") from host arrays: frame index, H2D, kernel, D2H
  torch-stft      torch.stft (padded batch) + power + mel matmul + log, the usual PyTorch recipe
  torch-exact     torch on the valid frames only: gather, DC removal, pre-emphasis, window,
                  rfft, power, mel matmul, log (Kaldi's arithmetic, the same work as ours)
  GPU times are CUDA-event times after warm-up (best of --repeats); the memory-bandwidth floor
  is (PCM bytes read once + feature bytes written) / peak bandwidth, the peak taken from the
  device's memory clock and bus width (fallback: NVIDIA's figures for H100/H200).

Whisper's log-mel (--flavour whisper; conf/fbank_whisper.yaml: 16 kHz, 400-point DFT of centred
Hann frames, hop 160, 80 Slaney mels, log10, per-utterance dynamic range; the same audio,
upsampled to 16 kHz as the feature stage does):
CPU
  ours            the same numba CPU twin, whisper flavour, --threads threads, 64 utterances a call
  faster-whisper  faster-whisper 1.2's NumPy FeatureExtractor (padding=0), one utterance at a
                  time, 1 process; and over N = --threads forked processes
  openai-whisper  openai-whisper's log_mel_spectrogram recipe (torch.stft + mel matmul + log10 +
                  dynamic range), one utterance at a time, torch on --threads threads
GPU
  ours / ours e2e as above (both passes: frame kernel + per-utterance dynamic range)
  torch           openai-whisper's recipe on the GPU, one utterance at a time (where torch has CUDA)
The agreement check is max |ours - faster-whisper| over every value of the first 20 utterances
(contract: 1e-4, kernels/kocall_kernels/fbank/test_fbank.py).

Columns: seconds (best of --repeats, after a warm-up that also compiles numba), x real time
(audio seconds / compute seconds), and the ratio peer seconds / our seconds (how many times
faster ours is; rows of one section compare with that section's "ours").

Audio: the 8 kHz emotiontts_ko corpus under kocall.paths.shared_corpora() when present (the
first --minutes of it), else generated speech-like signals (harmonic sweeps in noise, 2-8 s).

    .venv/bin/python bench/bench_fbank.py [--minutes 15] [--device cpu|cuda|all] [--threads 2]
                                          [--flavour kaldi|whisper|all] [--repeats 3] [--out-json FILE]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench_common import best_of

from kocall_kernels.fbank import FbankConfig, compute_fbank
from kocall_kernels.fbank.peer import knf_fbank, knf_features, knf_options, whisper_log_mel, whisper_log_mel_torch

REPO = Path(__file__).resolve().parents[1]
CONFS = {"kaldi": REPO / "conf" / "fbank.yaml", "whisper": REPO / "conf" / "fbank_whisper.yaml"}
BATCH = 64
DYN_RANGE, TOL = 18.0, 1e-3  # agreement contract of kernels/kocall_kernels/fbank/test_fbank.py
WHISPER_TOL = 1e-4           # the whisper flavour's contract (every value)
# NVIDIA datasheet peak memory bandwidth (bytes/s), used when the device attributes are missing.
PEAK_BW = {"H200": 4.8e12, "H100 NVL": 3.9e12, "H100 SXM": 3.35e12, "H100 PCIe": 2.0e12, "H100": 3.35e12}

# flavour -> utterances at that flavour's rate; set before the peer pool forks, so workers inherit it
AUDIO: dict[str, list[np.ndarray]] = {}


@dataclass
class Row:
    section: str
    name: str
    seconds: float
    x_realtime: float
    ratio: float       # this row's seconds / ours seconds in the same section (1.0 for ours)
    note: str = ""


# ------------------------------------------------------------------ audio
def load_corpus(minutes: float, sample_rate: int) -> tuple[list[np.ndarray], str]:
    from kocall.audio import load_audio
    from kocall.paths import shared_corpora

    root = shared_corpora() / "emotiontts_ko"
    files = sorted(root.rglob("*.flac")) if root.is_dir() else []
    if not files:
        return generated_audio(minutes, sample_rate), "generated (no shared corpora)"
    need, utts = minutes * 60 * sample_rate, []
    for path in files:
        samples, _ = load_audio(str(path), path.stem, expected_sr=sample_rate, resample=True)
        utts.append(samples)
        need -= samples.size
        if need <= 0:
            break
    return utts, f"shared corpora emotiontts_ko ({len(utts)} utterances, 8 kHz FLAC)"


def generated_audio(minutes: float, sample_rate: int, seed: int = 0) -> list[np.ndarray]:
    """Harmonic sweeps (a voice-like pitch track) in noise, 2-8 s each, int16 scale."""
    rng = np.random.default_rng(seed)
    need, utts = minutes * 60 * sample_rate, []
    while need > 0:
        n = int(rng.uniform(2.0, 8.0) * sample_rate)
        t = np.arange(n) / sample_rate
        f0 = rng.uniform(90, 250) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        x = sum(3000 / h * np.sin(h * phase) for h in range(1, 12)) + 200 * rng.standard_normal(n)
        utts.append(np.round(x).astype(np.float32))
        need -= n
    return utts


def pad(utts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([u.size for u in utts], dtype=np.int64)
    pcm = np.zeros((len(utts), int(lengths.max())), dtype=np.float32)
    for row, u in enumerate(utts):
        pcm[row, : u.size] = u
    return pcm, lengths





# ------------------------------------------------------------------ CPU peers
def ours_cpu(utts: list[np.ndarray], cfg: FbankConfig) -> int:
    frames = 0
    for i in range(0, len(utts), BATCH):
        pcm, lengths = pad(utts[i:i + BATCH])
        _, n = compute_fbank(pcm, lengths, cfg)
        frames += int(n.sum())
    return frames


def librosa_one(x: np.ndarray, cfg: FbankConfig, window: np.ndarray) -> np.ndarray:
    import librosa

    y = librosa.effects.preemphasis(x, coef=cfg.preemph)
    mel = librosa.feature.melspectrogram(y=y, sr=cfg.sample_rate, n_fft=cfg.pad_length, hop_length=cfg.shift_length,
                                         win_length=cfg.win_length, window=window, center=False, power=2.0,
                                         n_mels=cfg.n_mels, fmin=cfg.low_freq, fmax=cfg.effective_high_freq,
                                         htk=True, norm=None)
    return np.log(np.maximum(mel, np.finfo(np.float32).eps)).T


def _peer_shard(args: tuple[str, int, int, dict]) -> int:
    """Worker: one peer over AUDIO[lo:hi] (inherited through fork); returns frames made."""
    name, lo, hi, cfg_dict = args
    cfg = FbankConfig.from_dict(cfg_dict)
    return sum(_peer_fn(name, cfg)(x).shape[0] for x in AUDIO[cfg.flavour][lo:hi])


def _peer_fn(name: str, cfg: FbankConfig):
    if name == "knf":
        opts = knf_options(cfg)
        return lambda x: knf_features(x, opts, cfg.sample_rate, cfg.n_mels)
    if name == "faster-whisper":
        return lambda x: whisper_log_mel(x, cfg.n_mels)
    if name == "openai-whisper":
        return lambda x: whisper_log_mel_torch(x, cfg.n_mels)
    from kocall_kernels.fbank.config import make_window

    window = make_window(cfg.window, cfg.win_length)
    return lambda x: librosa_one(x, cfg, window)


# (peer, label, runs in the forked pool too) per flavour
CPU_PEERS = {"kaldi": (("knf", "kaldi-native-fbank", True), ("librosa", "librosa 0.11", True)),
             "whisper": (("faster-whisper", "faster-whisper 1.2 NumPy extractor", True),
                         ("openai-whisper", "openai-whisper recipe (torch.stft)", False))}


def cpu_section(cfg: FbankConfig, threads: int, repeats: int, pool) -> tuple[list[Row], dict]:
    import numba

    numba.set_num_threads(threads)
    audio = AUDIO[cfg.flavour]
    section = f"cpu {cfg.flavour}"
    audio_s = sum(u.size for u in audio) / cfg.sample_rate
    t_ours = best_of(lambda: ours_cpu(audio, cfg), repeats)
    rows = [Row(section, f"ours (numba twin, {threads} threads)", t_ours, audio_s / t_ours, 1.0)]
    n = len(audio)
    shards = [(i * n // threads, (i + 1) * n // threads) for i in range(threads)]
    for peer, label, forks in CPU_PEERS[cfg.flavour]:
        fn = _peer_fn(peer, cfg)
        if forks:
            t1 = best_of(lambda: [fn(x) for x in audio], repeats)
            rows.append(Row(section, f"{label} (1 process)", t1, audio_s / t1, t1 / t_ours))
        else:  # torch: its own threads in this process
            import torch

            torch.set_num_threads(threads)
            t1 = best_of(lambda: [fn(x) for x in audio], repeats)
            rows.append(Row(section, f"{label} ({threads} torch threads)", t1, audio_s / t1, t1 / t_ours))
        if pool is not None and forks:
            jobs = [(peer, lo, hi, cfg.to_dict()) for lo, hi in shards]
            tn = best_of(lambda: pool.map(_peer_shard, jobs), repeats)
            rows.append(Row(section, f"{label} ({threads} processes)", tn, audio_s / tn, tn / t_ours))
    return rows, (agreement_whisper(cfg) if cfg.flavour == "whisper" else agreement_cpu(cfg))


def agreement_whisper(cfg: FbankConfig, count: int = 20) -> dict:
    """Max |ours - peer| over every value of the first `count` utterances (no resolution caveat:
    Whisper's floor at max - 8 keeps every value within float32's reach)."""
    worst_fw = worst_torch = 0.0
    for x in AUDIO["whisper"][:count]:
        ours, n = compute_fbank(x[None], [x.size], cfg)
        ours = ours[0, : n[0]]
        worst_fw = max(worst_fw, float(np.abs(ours - whisper_log_mel(x, cfg.n_mels)).max()))
        worst_torch = max(worst_torch, float(np.abs(ours - whisper_log_mel_torch(x, cfg.n_mels)).max()))
    return {"max_abs_diff_vs_faster_whisper": worst_fw, "max_abs_diff_vs_openai_whisper_torch": worst_torch}


def agreement_cpu(cfg: FbankConfig) -> dict:
    """Max |ours - peer| over the first utterance, on bands within 18 nats of the frame peak
    (below that float32 cannot resolve 1e-3; see kernels/kocall_kernels/fbank/test_fbank.py)."""
    x = AUDIO["kaldi"][0]
    ours, n = compute_fbank(x[None], [x.size], cfg)
    ours = ours[0, : n[0]]
    ref = knf_fbank(x, cfg)
    lib = _peer_fn("librosa", cfg)(x)
    t = min(lib.shape[0], ours.shape[0])
    return {"max_abs_diff_vs_knf": resolved_max_diff(ours, ref),
            "mean_abs_diff_vs_librosa": float(np.abs(ours[:t] - lib[:t]).mean())}


def resolved_max_diff(ours: np.ndarray, ref: np.ndarray) -> float:
    resolved = ref > ref.max(axis=1, keepdims=True) - DYN_RANGE
    return float(np.abs(ours - ref)[resolved].max())


# ------------------------------------------------------------------ GPU
def torch_mel(cfg: FbankConfig, device) -> "torch.Tensor":
    import torch

    from kocall_kernels.fbank import mel_matrix

    return torch.tensor(mel_matrix(cfg).T, dtype=torch.float32, device=device)  # (pad/2, n_mels)


def torch_stft_fbank(x, lengths, cfg: FbankConfig, window, mel):
    """The usual PyTorch recipe on the padded batch: torch.stft + power + mel matmul + log."""
    import torch

    spec = torch.stft(x, n_fft=cfg.pad_length, hop_length=cfg.shift_length, win_length=cfg.win_length,
                      window=window, center=False, return_complex=True)           # (B, pad/2+1, T)
    power = spec.real.square() + spec.imag.square()
    return torch.matmul(power[:, : cfg.pad_length // 2].transpose(1, 2), mel).clamp_min(1.1920929e-07).log()


def torch_exact_fbank(x_flat, starts, cfg: FbankConfig, window, mel):
    """Kaldi's arithmetic in torch on the valid frames only (the work our kernel does)."""
    import torch

    idx = starts[:, None] + torch.arange(cfg.win_length, device=x_flat.device)
    frames = x_flat[idx]                                                             # (F, win) gather
    if cfg.remove_dc:
        frames = frames - frames.mean(dim=1, keepdim=True)
    prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    emph = (frames - cfg.preemph * prev) * window
    spec = torch.fft.rfft(emph, n=cfg.pad_length)
    power = spec.real.square() + spec.imag.square()
    return torch.matmul(power[:, : cfg.pad_length // 2], mel).clamp_min(1.1920929e-07).log()


def peak_bandwidth() -> tuple[float, str]:
    from numba import cuda

    if not hasattr(cuda, "get_current_device"):
        return float("nan"), "CUDA simulator: no peak bandwidth"
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    try:
        clock_khz, bus_bits = dev.MEMORY_CLOCK_RATE, dev.GLOBAL_MEMORY_BUS_WIDTH
        if clock_khz and bus_bits:
            return 2.0 * clock_khz * 1e3 * bus_bits / 8, f"{name}: 2 x {clock_khz / 1e3:.0f} MHz x {bus_bits} bit"
    except Exception:  # attribute missing in this driver / numba version: use the datasheet
        pass
    for key, value in PEAK_BW.items():
        if key in name:
            return value, f"{name}: datasheet {value / 1e12:.2f} TB/s"
    return float("nan"), f"{name}: peak memory bandwidth unknown"


def gpu_section(cfg: FbankConfig, repeats: int, torch_device: str | None = "cuda") -> tuple[list[Row], dict]:
    """The GPU rows; the torch rows only when torch_device is given (None: torch has no CUDA).
    torch_device="cpu" under NUMBA_ENABLE_CUDASIM=1 only smoke-tests this code."""
    from numba import cuda

    from kocall_kernels.fbank import make_tables, prepare_batch
    from kocall_kernels.fbank.config import frame_index
    from kocall_kernels.fbank.cuda import launch_frames

    pcm, lengths = pad(AUDIO[cfg.flavour])
    section = f"gpu {cfg.flavour}"
    p, nf, seeds, lens = prepare_batch(pcm, lengths, cfg, None)
    fu, ft = frame_index(nf)
    tables = make_tables(cfg)
    d_pcm, d_lens, d_nf, d_fu, d_ft, d_seeds = (cuda.to_device(a) for a in (p, lens, nf, fu, ft, seeds))
    d_out = cuda.device_array((p.shape[0], int(nf.max()), cfg.n_mels), dtype=np.float32)

    def ours_kernel() -> None:
        # Both passes for the whisper flavour (the dynamic range reads only valid frames, so the
        # uninitialised padding of d_out does not matter here).
        launch_frames(d_pcm, d_lens, d_nf, d_fu, d_ft, d_seeds, d_out, cfg, tables)

    def numba_time(fn) -> float:
        fn()
        cuda.synchronize()
        best = np.inf
        for _ in range(repeats):
            start, end = cuda.event(), cuda.event()  # timing events (the default)
            start.record()
            fn()
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        return max(best, 1e-9)  # the simulator's events read 0

    audio_s = float(lengths.sum()) / cfg.sample_rate
    t_ours = numba_time(ours_kernel)
    t_e2e = best_of(lambda: compute_fbank(pcm, lengths, cfg, backend="cuda"), repeats)
    bw, bw_source = peak_bandwidth()
    # The floor: every PCM sample read once (float32) and every feature written once.
    floor_bytes = 4.0 * float(lengths.sum()) + 4.0 * fu.size * cfg.n_mels
    floor_s = floor_bytes / bw
    rows = [Row(section, "ours (Numba CUDA kernel)", t_ours, audio_s / t_ours, 1.0,
                f"{100 * floor_s / t_ours:.0f}% of the memory-bandwidth floor ({1e6 * floor_s:.0f} us)"),
            Row(section, "ours e2e (compute_fbank from host)", t_e2e, audio_s / t_e2e, t_e2e / t_ours, "incl. H2D/D2H")]
    ours = d_out.copy_to_host()
    cpu, _ = compute_fbank(pcm, lengths, cfg)
    extra = {"gpu": bw_source, "peak_bandwidth_Bps": bw, "floor_bytes": floor_bytes, "floor_s": floor_s,
             "frames": int(fu.size), "utterances": int(p.shape[0]),
             "max_abs_diff_cuda_vs_cpu": float(np.abs(ours[fu, ft] - cpu[fu, ft]).max()),  # padding unwritten
             "max_abs_diff_cuda_vs_cpu_resolved": resolved_max_diff(ours[fu, ft], cpu[fu, ft])}
    if torch_device is None:
        print("GPU torch rows skipped: this torch has no CUDA (install a CUDA build of torch for the baseline)")
        return rows, extra
    if cfg.flavour == "whisper":
        rows_t, extra_t = torch_whisper_rows(cfg, repeats, torch_device, ours, nf, t_ours, audio_s, section)
    else:
        rows_t, extra_t = torch_rows(cfg, repeats, torch_device, pcm, lengths, fu, ft, ours, t_ours, audio_s)
    extra.update(extra_t)
    return rows + rows_t, extra


def cuda_time(fn, repeats: int, device) -> float:
    """Best of `repeats` CUDA-event timings after a warm-up (wall clock off the GPU)."""
    import torch

    if device.type != "cuda":
        return best_of(fn, repeats)
    fn()
    torch.cuda.synchronize()
    best = np.inf
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return best


def torch_whisper_rows(cfg: FbankConfig, repeats: int, torch_device: str, ours: np.ndarray, num_frames: np.ndarray,
                       t_ours: float, audio_s: float, section: str) -> tuple[list[Row], dict]:
    """openai-whisper's recipe on the GPU, one utterance at a time (as whisper runs it)."""
    import torch

    dev = torch.device(torch_device)
    audio = AUDIO["whisper"]
    with torch.inference_mode():
        t_torch = cuda_time(lambda: [whisper_log_mel_torch(x, cfg.n_mels, device=torch_device) for x in audio],
                            repeats, dev)
    diff = max(float(np.abs(ours[i, : num_frames[i]] - whisper_log_mel_torch(x, cfg.n_mels)).max())
               for i, x in enumerate(audio[:20]))
    rows = [Row(section, "openai-whisper recipe (torch.stft, per utterance)", t_torch, audio_s / t_torch,
                t_torch / t_ours, "incl. H2D/D2H per utterance")]
    return rows, {"max_abs_diff_cuda_vs_openai_whisper_torch": diff}


def torch_rows(cfg: FbankConfig, repeats: int, torch_device: str, pcm: np.ndarray, lengths: np.ndarray,
               fu: np.ndarray, ft: np.ndarray, ours: np.ndarray, t_ours: float, audio_s: float
               ) -> tuple[list[Row], dict]:
    import torch

    from kocall_kernels.fbank.config import make_window

    dev = torch.device(torch_device)

    def torch_time(fn) -> float:
        return cuda_time(fn, repeats, dev)

    x = torch.from_numpy(pcm).to(dev)
    x_flat = x.reshape(-1)
    starts = torch.from_numpy(fu.astype(np.int64) * pcm.shape[1] + ft.astype(np.int64) * cfg.shift_length).to(dev)
    window = torch.tensor(make_window(cfg.window, cfg.win_length), dtype=torch.float32, device=dev)
    mel = torch_mel(cfg, dev)
    with torch.inference_mode():
        t_stft = torch_time(lambda: torch_stft_fbank(x, lengths, cfg, window, mel))
        t_exact = torch_time(lambda: torch_exact_fbank(x_flat, starts, cfg, window, mel))
        exact = torch_exact_fbank(x_flat, starts, cfg, window, mel).cpu().numpy()
    padded = 1.0 - fu.size / (pcm.shape[0] * (1 + (pcm.shape[1] - cfg.win_length) // cfg.shift_length))
    rows = [Row(f"gpu {cfg.flavour}", "torch.stft + mel matmul (padded batch)", t_stft, audio_s / t_stft, t_stft / t_ours,
                f"{100 * padded:.0f}% of its frames are padding"),
            Row(f"gpu {cfg.flavour}", "torch exact (valid frames, rfft)", t_exact, audio_s / t_exact, t_exact / t_ours)]
    return rows, {"max_abs_diff_torch_exact_vs_ours": float(np.abs(exact - ours[fu, ft]).max())}


def cuda_ready() -> tuple[bool, str]:
    try:
        from numba import cuda
    except ImportError as err:
        return False, f"import failed ({err})"
    if not cuda.is_available():
        return False, "numba finds no CUDA device/driver"
    return True, ""


def torch_cuda() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return "cuda" if torch.cuda.is_available() else None


# ------------------------------------------------------------------ report
def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or platform.machine()
    return f"{os.cpu_count()}-core {model}"


def print_table(rows: list[Row]) -> None:
    print("| section | implementation | seconds | x real time | ours faster by | note |")
    print("|---|---|---:|---:|---:|---|")
    for r in rows:
        ratio = "-" if r.ratio == 1.0 else f"{r.ratio:.2f}x"
        print(f"| {r.section} | {r.name} | {r.seconds:.3f} | {r.x_realtime:,.0f} | {ratio} | {r.note} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0, help="minutes of audio")
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    parser.add_argument("--threads", type=int, default=2, help="numba threads for ours = processes for the peers")
    parser.add_argument("--flavour", choices=("kaldi", "whisper", "all"), default="all",
                        help="which front end's rows (conf/fbank.yaml, conf/fbank_whisper.yaml)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--generated", action="store_true", help="generated audio even if the corpora exist")
    parser.add_argument("--out-json", type=Path, default=None)
    args = parser.parse_args()

    flavours = ["kaldi", "whisper"] if args.flavour == "all" else [args.flavour]
    cfgs = {flavour: FbankConfig.from_yaml(CONFS[flavour]) for flavour in flavours}
    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "command": " ".join(sys.argv),
              "threads": args.threads, "flavours": {}}
    for flavour, cfg in cfgs.items():  # the same audio at each flavour's rate (as the feature stage resamples)
        if args.generated:
            audio, source = generated_audio(args.minutes, cfg.sample_rate), "generated"
        else:
            audio, source = load_corpus(args.minutes, cfg.sample_rate)
        AUDIO[flavour] = audio
        audio_s = sum(u.size for u in audio) / cfg.sample_rate
        result["flavours"][flavour] = {"audio": source, "audio_seconds": audio_s, "config": cfg.to_dict()}
        print(f"{flavour}: audio {audio_s / 60:.1f} min at {cfg.sample_rate} Hz, {source}")
    print(f"{machine()}; load average {os.getloadavg()[0]:.2f}")
    rows: list[Row] = []
    if args.device in ("cpu", "all"):
        # Fork the peers' pool before numba starts its (fork-unsafe) OpenMP threads in this process.
        pool = mp.get_context("fork").Pool(args.threads) if args.threads > 1 else None
        try:
            for flavour, cfg in cfgs.items():
                cpu_rows, result["flavours"][flavour]["cpu_agreement"] = cpu_section(cfg, args.threads, args.repeats,
                                                                                     pool)
                rows += cpu_rows
        finally:
            if pool is not None:
                pool.terminate()
    if args.device in ("cuda", "all"):
        ok, why = cuda_ready()
        for flavour, cfg in cfgs.items():
            if ok:
                gpu_rows, result["flavours"][flavour]["gpu"] = gpu_section(cfg, args.repeats, torch_cuda())
                rows += gpu_rows
            else:
                print(f"GPU section ({flavour}) skipped: {why}")
                result["flavours"][flavour]["gpu_skipped"] = why
    result["load_average_after"] = os.getloadavg()[0]
    print_table(rows)
    for flavour, res in result["flavours"].items():
        for key in ("cpu_agreement", "gpu"):
            if key in res:
                print(f"{flavour} {key}: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                                      for k, v in res[key].items()))
    result["rows"] = [asdict(r) for r in rows]
    if args.out_json:
        args.out_json.write_text(json.dumps(result, indent=1) + "\n")
    failed = [f"{name}: {diff:.2e} > {tol}" for name, diff, tol in agreement_checks(result) if not diff <= tol]
    if failed:
        print("AGREEMENT CHECK FAILED: " + "; ".join(failed))
        sys.exit(1)


def agreement_checks(result: dict) -> list[tuple[str, float, float]]:
    """(what, measured max |diff|, contract) for every comparison the run made."""
    kaldi = result["flavours"].get("kaldi", {})
    whisper = result["flavours"].get("whisper", {})
    checks = [("kaldi: ours vs kaldi-native-fbank (resolved bands)",
               kaldi.get("cpu_agreement", {}).get("max_abs_diff_vs_knf"), TOL),
              ("kaldi: CUDA vs CPU twin (resolved bands)", kaldi.get("gpu", {}).get("max_abs_diff_cuda_vs_cpu_resolved"),
               TOL),
              ("whisper: ours vs faster-whisper", whisper.get("cpu_agreement", {}).get("max_abs_diff_vs_faster_whisper"),
               WHISPER_TOL),
              ("whisper: ours vs openai-whisper torch",
               whisper.get("cpu_agreement", {}).get("max_abs_diff_vs_openai_whisper_torch"), WHISPER_TOL),
              ("whisper: CUDA vs CPU twin", whisper.get("gpu", {}).get("max_abs_diff_cuda_vs_cpu"), WHISPER_TOL),
              ("whisper: CUDA vs openai-whisper torch",
               whisper.get("gpu", {}).get("max_abs_diff_cuda_vs_openai_whisper_torch"), WHISPER_TOL)]
    return [(name, diff, tol) for name, diff, tol in checks if diff is not None]


if __name__ == "__main__":
    main()
