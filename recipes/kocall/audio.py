"""Audio loading with validation: one place that turns a wav.scp entry into samples.

Samples come back as float32 at **int16 scale** (-32768..32767), the convention of
Kaldi and kaldi-native-fbank, so features are comparable with theirs bit for bit.

A wav.scp value is one of:
  * a path to a WAV/FLAC/OGG file (read with soundfile);
  * a path to a raw `.pcm` file: headerless s16le mono at 16 kHz (KsponSpeech);
  * a shell pipe ending in `|` (Kaldi's extended filename). Pipes run only when the
    caller allows them (`allow_pipes=True`, or KOCALL_ALLOW_PIPES=1), because a
    wav.scp from elsewhere must not be able to run arbitrary commands by default.
"""
from __future__ import annotations

import io
import os
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np

from kocall.errors import AudioError, where
from kocall.rxspec import check_rxspec

PCM_SAMPLE_RATE = 16000
MIN_SAMPLES = 400  # one 25 ms frame at 16 kHz; anything shorter cannot give a feature frame
# Speech below 4 kHz sampling has no usable band; a header claiming 10 Hz would also make
# resampling to 8 kHz allocate 800x the file. Above 384 kHz no audio interface records.
MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 384000
MAX_AUDIO_BYTES = 1 << 30  # 9 h of 16 kHz 16-bit audio: no single utterance is that long


def check_sample_rate(rate: int, utt_id: str | None, label: str) -> None:
    """An implausible sample rate (a corrupt or hostile header) is an error naming the file."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"{where(utt_id, label)}: implausible sample rate {rate} Hz "
                         f"(kocall reads {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)")


def _decode_bytes(data: bytes, utt_id: str | None, label: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        with sf.SoundFile(io.BytesIO(data)) as snd:
            channels = snd.channels
            rate = snd.samplerate
            frames = snd.frames
            check_sample_rate(rate, utt_id, label)
            if channels != 1:
                raise AudioError(f"{where(utt_id, label)}: {channels} channels; kocall expects mono audio")
            # float64 for every subtype: libsndfile scales integer PCM to [-1, 1) and passes float
            # WAVs through, whereas reading a float WAV as int16 truncates it to silence.
            samples = snd.read(dtype="float64", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, ValueError, EOFError, MemoryError) as exc:
        raise AudioError(f"{where(utt_id, label)}: unreadable or corrupt audio ({exc})") from None
    if samples.shape[0] < frames:
        raise AudioError(f"{where(utt_id, label)}: truncated audio ({samples.shape[0]} of {frames} frames)")
    if not np.all(np.isfinite(samples)):
        raise AudioError(f"{where(utt_id, label)}: audio holds NaN or infinite samples")
    return (samples[:, 0] * 32768.0).astype(np.float32), rate


def _check_truncated_wav(data: bytes, utt_id: str | None, label: str) -> None:
    """libsndfile silently reads a short data chunk; compare the header's size with the bytes."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos:pos + 4]
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        if chunk_id == b"data":
            available = len(data) - (pos + 8)
            if size != 0xFFFFFFFF and available < size:
                raise AudioError(
                    f"{where(utt_id, label)}: truncated WAV (header says {size} data bytes, file has {available})")
            return
        pos += 8 + size + (size & 1)


def read_audio_bytes(spec: str, utt_id: str | None = None, allow_pipes: bool | None = None) -> tuple[bytes, str]:
    """Fetch the raw bytes behind a wav.scp value; returns (bytes, label for messages)."""
    spec = spec.strip()
    if check_rxspec(spec, utt_id, allow_pipes, kind="wav.scp"):
        if not spec.endswith("|"):
            raise AudioError(f"{where(utt_id, spec)}: only `cmd |` pipes are supported in wav.scp")
        command = spec[:-1].strip()
        proc = subprocess.run(command, shell=True, capture_output=True)
        if proc.returncode != 0:
            raise AudioError(f"{where(utt_id, command)}: pipe failed with status {proc.returncode}: "
                             f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
        return proc.stdout, command
    path = Path(spec)
    if not path.is_file():
        raise AudioError(f"{where(utt_id, spec)}: audio file is missing")
    size = path.stat().st_size
    if size > MAX_AUDIO_BYTES:  # e.g. a sparse file: reading it would exhaust memory
        raise AudioError(f"{where(utt_id, spec)}: {size / 2**30:.1f} GiB of audio in one file; kocall reads "
                         f"utterances of up to {MAX_AUDIO_BYTES // 2**30} GiB (split the recording)")
    return path.read_bytes(), spec


def load_audio(spec: str, utt_id: str | None = None, expected_sr: int | None = None,
               resample: bool = False, allow_pipes: bool | None = None) -> tuple[np.ndarray, int]:
    """Load one utterance as float32 int16-scale mono samples and its sample rate.

    With `expected_sr`, a file at another rate is an error unless `resample` is set,
    in which case it is resampled (polyphase, scipy) to `expected_sr`.
    """
    data, label = read_audio_bytes(spec, utt_id, allow_pipes)
    if len(data) == 0:
        raise AudioError(f"{where(utt_id, label)}: empty audio file")
    if label.lower().endswith(".pcm"):
        if len(data) % 2:
            raise AudioError(f"{where(utt_id, label)}: truncated raw PCM (odd byte count)")
        samples = np.frombuffer(data, dtype="<i2").astype(np.float32)
        rate = PCM_SAMPLE_RATE
    else:
        _check_truncated_wav(data, utt_id, label)
        samples, rate = _decode_bytes(data, utt_id, label)
    if samples.size == 0:
        raise AudioError(f"{where(utt_id, label)}: audio has no samples")
    if expected_sr is not None and rate != expected_sr:
        if not resample:
            raise AudioError(f"{where(utt_id, label)}: sample rate {rate} Hz, expected {expected_sr} Hz")
        samples = resample_audio(samples, rate, expected_sr)
        rate = expected_sr
    if samples.size < MIN_SAMPLES * rate // 16000:
        raise AudioError(f"{where(utt_id, label)}: audio too short ({samples.size} samples at {rate} Hz)")
    return samples, rate


def resample_audio(samples: np.ndarray, from_sr: int, to_sr: int) -> np.ndarray:
    """Polyphase resampling (scipy.signal.resample_poly, Kaiser window)."""
    if from_sr == to_sr:
        return samples.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    ratio = Fraction(to_sr, from_sr)
    out = resample_poly(samples.astype(np.float64), ratio.numerator, ratio.denominator)
    return out.astype(np.float32)


def write_wav(path: str | os.PathLike, samples: np.ndarray, sample_rate: int) -> None:
    """Write int16 mono WAV atomically. Float input is taken as int16 scale and clipped."""
    import soundfile as sf

    from kocall.fileio import atomic_write

    pcm = np.clip(np.round(samples), -32768, 32767).astype(np.int16)
    with atomic_write(path, "wb") as handle:
        sf.write(handle, pcm, sample_rate, subtype="PCM_16", format="WAV")


def duration_seconds(spec: str, utt_id: str | None = None, allow_pipes: bool | None = None) -> float:
    samples, rate = load_audio(spec, utt_id, allow_pipes=allow_pipes)
    return samples.size / rate
