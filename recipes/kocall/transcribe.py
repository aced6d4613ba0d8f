"""Transcribe recordings with a model package (or model dir): text, words with times, segments.

    from kocall import Transcriber
    result = Transcriber("exp/conformer_ctc_small_jamo/package").transcribe("call.wav")
    print(result.text)
    for word, start, end, confidence in result.words: ...

How a recording is decoded:
* mono and at most `max_seconds` long (the decoder's utterance limit, 120 s): whole, exactly as
  the recipe's decode stage does (same samples, features, network and search: the same text);
* longer, or two channels: each channel is cut into speech segments by kocall.vad (streamed from
  the file in blocks, never loaded whole), each segment decoded on its own, and the segments
  of both channels merged by start time, labelled with `channel_labels` (agent, customer).

Word times come from the search: each unit's first frame (Hypothesis.frames) starts it; it lasts
while the frame's best unit stays the same. A word spans its units; its confidence is the mean
posterior of its units at their frames. Times are seconds from the start of the recording.
Audio arrays: int16 arrays as they are, float arrays as [-1, 1] (soundfile's convention);
shape (samples,) or (samples, channels).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np

from kocall.audio import MAX_AUDIO_BYTES, MIN_SAMPLES, PCM_SAMPLE_RATE, check_sample_rate, resample_audio
from kocall.errors import AudioError, DataError, KocallError, where
from kocall.vad import EnergyMeter, VadConfig, speech_segments

MAX_CHANNELS = 2
DEFAULT_CHANNEL_LABELS = ("agent", "customer")
BLOCK_SECONDS = 30.0        # audio read at a time by the VAD pass
SEGMENTATIONS = ("auto", "vad")


class Word(NamedTuple):
    word: str
    start: float        # seconds from the start of the recording
    end: float
    confidence: float   # mean posterior of its units, 0..1


@dataclass
class Segment:
    start: float
    end: float
    text: str
    channel: str | None          # the channel's label (None: mono)
    words: list[Word] = field(default_factory=list)


@dataclass
class Transcript:
    source: str                  # the file, or "<array>"
    duration: float
    segments: list[Segment]      # by start time
    channels: list[str | None]

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.text)

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]

    def channel_text(self, channel: str | None) -> str:
        return " ".join(s.text for s in self.segments if s.channel == channel and s.text)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "duration": round(self.duration, 3), "channels": self.channels,
                "text": self.text,
                "segments": [{"start": round(s.start, 3), "end": round(s.end, 3), "channel": s.channel,
                              "text": s.text,
                              "words": [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3),
                                         "confidence": round(w.confidence, 4)} for w in s.words]}
                             for s in self.segments]}


# ------------------------------------------------------------------------------ audio sources


class AudioSource:
    """A recording read in pieces: `read(start, stop)` -> (n, channels) float32 at int16 scale."""

    name: str
    rate: int
    channels: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.rate

    def read(self, start: int, stop: int) -> np.ndarray:
        raise KocallError(f"{type(self).__name__} cannot be read")

    def blocks(self, seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
        step = max(1, int(seconds * self.rate))
        for start in range(0, self.frames, step):
            yield self.read(start, min(self.frames, start + step))

    def close(self) -> None:
        pass

    def check(self, utt_id: str | None) -> None:
        check_sample_rate(self.rate, utt_id, self.name)
        if not 1 <= self.channels <= MAX_CHANNELS:
            raise AudioError(f"{where(utt_id, self.name)}: {self.channels} channels; kocall decodes mono or "
                             "two-channel (agent/customer) recordings")
        if self.frames < MIN_SAMPLES * self.rate // 16000:
            raise AudioError(f"{where(utt_id, self.name)}: audio too short ({self.frames} samples at {self.rate} Hz)")


def _check_wav_length(path: Path, utt_id: str | None) -> None:
    """A WAV whose data chunk claims more bytes than the file holds is truncated (libsndfile
    would read the short chunk silently); read the chunk headers only."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        pos = 12
        while pos + 8 <= size:
            handle.seek(pos)
            chunk = handle.read(8)
            length = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                if length != 0xFFFFFFFF and size - (pos + 8) < length:
                    raise AudioError(f"{where(utt_id, str(path))}: truncated WAV (header says {length} data bytes, "
                                     f"file has {size - (pos + 8)})")
                return
            pos += 8 + length + (length & 1)


class FileSource(AudioSource):
    """A WAV/FLAC/OGG file (soundfile), or raw `.pcm` (s16le mono 16 kHz), read by seeking."""

    def __init__(self, path: str | os.PathLike, utt_id: str | None = None) -> None:
        import soundfile as sf

        self.path, self.name, self.utt_id = Path(path), str(path), utt_id
        if not self.path.is_file():
            raise AudioError(f"{where(utt_id, self.name)}: audio file is missing")
        size = self.path.stat().st_size
        if size == 0:
            raise AudioError(f"{where(utt_id, self.name)}: empty audio file")
        if size > 4 * MAX_AUDIO_BYTES:   # streamed, so longer than one utterance may be; a sparse file is not
            raise AudioError(f"{where(utt_id, self.name)}: {size / 2**30:.1f} GiB of audio; split the recording")
        try:
            if self.path.suffix.lower() == ".pcm":
                if size % 2:
                    raise AudioError(f"{where(utt_id, self.name)}: truncated raw PCM (odd byte count)")
                self._snd = sf.SoundFile(self.path, samplerate=PCM_SAMPLE_RATE, channels=1, subtype="PCM_16",
                                         format="RAW", endian="LITTLE")
            else:
                _check_wav_length(self.path, utt_id)
                self._snd = sf.SoundFile(self.path)
        except (RuntimeError, sf.LibsndfileError, ValueError, EOFError) as exc:
            raise AudioError(f"{where(utt_id, self.name)}: unreadable or corrupt audio ({exc})") from None
        self.rate, self.channels, self.frames = self._snd.samplerate, self._snd.channels, self._snd.frames
        try:
            self.check(utt_id)
        except KocallError:
            self.close()
            raise

    def read(self, start: int, stop: int) -> np.ndarray:
        import soundfile as sf

        try:
            self._snd.seek(start)
            # float64 then x32768, as kocall.audio.load_audio: the same samples as the recipe's
            data = self._snd.read(stop - start, dtype="float64", always_2d=True)
        except (RuntimeError, sf.LibsndfileError, ValueError) as exc:
            raise AudioError(f"{where(self.utt_id, self.name)}: unreadable audio at sample {start} ({exc})") from None
        if data.shape[0] < stop - start:
            raise AudioError(f"{where(self.utt_id, self.name)}: truncated audio ({start + data.shape[0]} of "
                             f"{self.frames} frames)")
        if not np.all(np.isfinite(data)):
            raise AudioError(f"{where(self.utt_id, self.name)}: audio holds NaN or infinite samples")
        return (data * 32768.0).astype(np.float32)

    def close(self) -> None:
        snd = getattr(self, "_snd", None)
        if snd is not None:
            snd.close()


class ArraySource(AudioSource):
    """A NumPy array: int16 as is, floats taken as [-1, 1]; (samples,) or (samples, channels)."""

    def __init__(self, audio: np.ndarray, sample_rate: int | None, name: str = "<array>") -> None:
        self.name = name
        if sample_rate is None:
            raise KocallError("transcribe: an array needs its sample_rate")
        audio = np.asarray(audio)
        if audio.ndim == 1:
            audio = audio[:, None]
        if audio.ndim != 2 or audio.dtype.kind not in "fiu":
            raise AudioError(f"{where(None, name)}: expected a (samples,) or (samples, channels) array of numbers, "
                             f"got shape {audio.shape} dtype {audio.dtype}")
        if audio.dtype.kind == "f":
            if not np.all(np.isfinite(audio)):
                raise AudioError(f"{where(None, name)}: audio holds NaN or infinite samples")
            audio = audio * 32768.0
        self.audio = audio.astype(np.float32)
        self.rate, self.channels, self.frames = int(sample_rate), self.audio.shape[1], self.audio.shape[0]
        self.check(None)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.audio[start:stop]


# ------------------------------------------------------------------------------ word times


def greedy_frames(log_probs: np.ndarray, blank_id: int = 0) -> list[int]:
    """The first frame of each unit greedy decoding emits (argmax runs, blanks dropped)."""
    frames, previous = [], blank_id
    for t, best in enumerate(log_probs.argmax(axis=-1)):
        if best != blank_id and best != previous:
            frames.append(t)
        previous = best
    return frames


def hypothesis_words(tokens: Sequence[int], frames: Sequence[int], log_probs: np.ndarray, tokenizer: Any,
                     frame_s: float, offset_s: float = 0.0) -> list[Word]:
    """Words of one hypothesis with times: a word's units lie between word separators (`▁`, or
    a piece starting with `▁`); a unit lasts from its frame while that frame's argmax repeats it."""
    best = log_probs.argmax(axis=-1)
    groups: list[list[int]] = [[]]
    for k, token in enumerate(tokens):
        symbol = tokenizer.symbols[token]
        if token == tokenizer.space_id:
            groups.append([])
            continue
        if symbol.startswith("\u2581") and groups[-1]:   # a sentencepiece word start
            groups.append([])
        groups[-1].append(k)
    words = []
    for group in (g for g in groups if g):
        text = tokenizer.decode([tokens[k] for k in group]).strip()
        if not text:
            continue
        last = group[-1]
        limit = frames[last + 1] if last + 1 < len(frames) else log_probs.shape[0]
        end = frames[last]
        while end + 1 < limit and best[end + 1] == tokens[last]:
            end += 1
        confidence = float(np.mean([math.exp(float(log_probs[frames[k], tokens[k]])) for k in group]))
        words.append(Word(text, round(offset_s + frames[group[0]] * frame_s, 3),
                          round(offset_s + (end + 1) * frame_s, 3), confidence))
    return words


# ------------------------------------------------------------------------------ the transcriber


@dataclass
class _Job:
    """One piece to decode: samples [start, stop) of `channel` of input `index`."""
    index: int
    channel: int
    start: int
    stop: int


@dataclass
class _Input:
    source: AudioSource | None
    utt_id: str | None
    labels: list[str | None]
    error: KocallError | None = None
    segments: list[Segment] = field(default_factory=list)


class Transcriber:
    """A model package (or model dir) ready to transcribe; see the module docstring.

    Decoding settings default to the package's (its LM, dev-tuned LM weight and bonus, beam);
    any argument given overrides them. lm: a path (.npz tables or .arpa), or False for none."""

    def __init__(self, model: str | os.PathLike, device: str = "cpu", threads: int | None = None,
                 precision: str = "float", lm: str | os.PathLike | bool | None = None,
                 lm_weight: float | None = None, word_bonus: float | None = None, beam: int | None = None,
                 token_topk: int | None = None, token_min_logp: float | None = None, bonus_unit: str | None = None,
                 greedy: bool = False, hotwords: str | os.PathLike | None = None, hotword_weight: float | None = None,
                 hotword_lm_compensation: float | None = None,
                 channel_labels: Sequence[str] = DEFAULT_CHANNEL_LABELS, segmentation: str = "auto",
                 vad: VadConfig | None = None, max_seconds: float | None = None, batch_size: int = 16) -> None:
        from kocall.decode import MAX_DECODE_SECONDS, load_lm_tables
        from kocall.device import require_device
        from kocall.model_dir import load_model_dir
        from kocall.package import decoding_setup
        from kocall_kernels.ctc_decoder import DecoderConfig

        require_device(device)
        if threads is not None:
            set_threads(threads)
        if segmentation not in SEGMENTATIONS:
            raise KocallError(f"segmentation must be one of {', '.join(SEGMENTATIONS)}, not '{segmentation}'")
        labels = [str(x) for x in channel_labels]
        if len(labels) != MAX_CHANNELS or len(set(labels)) != MAX_CHANNELS or not all(
                x and not any(c.isspace() for c in x) for x in labels):
            raise KocallError(f"channel labels must be two different words without spaces, not {labels}")
        if batch_size < 1:
            raise KocallError(f"batch_size must be >= 1, not {batch_size}")
        self.labels, self.segmentation, self.device = labels, segmentation, device
        self.vad = vad or VadConfig()
        model_dir, lm_path, search = decoding_setup(
            model, precision, lm, lm_weight=lm_weight, word_bonus=word_bonus, beam=beam, token_topk=token_topk,
            token_min_logp=token_min_logp, bonus_unit=bonus_unit)
        self.model_dir, self.search = model_dir, search
        self.model, self.tokenizer, self.config = load_model_dir(model_dir, device)
        self.greedy = greedy
        self.tables = load_lm_tables(lm_path, model_dir / "tokens.txt") if lm_path and not greedy else None
        bonus_token = -1 if search["bonus_unit"] == "token" else (
            self.tokenizer.space_id if self.tokenizer.space_id is not None else -1)
        self.decoder_cfg = DecoderConfig(beam=int(search["beam"]), token_topk=int(search["token_topk"]),
                                         token_min_logp=float(search["token_min_logp"]),
                                         lm_weight=float(search["lm_weight"]) if self.tables is not None else 0.0,
                                         word_bonus=float(search["word_bonus"]), bonus_token=bonus_token,
                                         blank_id=self.tokenizer.blank_id)
        self.context = None
        if hotwords:
            if greedy:
                raise KocallError("hotwords bias the beam search; they cannot be used with greedy decoding")
            from kocall.hotwords import DEFAULT_LM_COMPENSATION, DEFAULT_WEIGHT, compile_hotwords

            self.context = compile_hotwords(
                hotwords, self.tokenizer, DEFAULT_WEIGHT if hotword_weight is None else hotword_weight, self.tables,
                self.decoder_cfg.lm_weight * math.log(10),
                DEFAULT_LM_COMPENSATION if hotword_lm_compensation is None else hotword_lm_compensation)
        from kocall.dataset import load_cmvn_stats
        from kocall.features import model_fbank_config
        from kocall.models import max_input_seconds

        self.mean, self.std = load_cmvn_stats(model_dir / "cmvn.json")
        self.fbank_cfg = model_fbank_config(model_dir)
        limit = max_input_seconds(self.config)
        self.max_seconds = min(x for x in (max_seconds or MAX_DECODE_SECONDS, limit) if x)
        # a VAD segment must fit the network too (Whisper's encoder: 30 s)
        if self.vad.max_segment_s > self.max_seconds:
            self.vad = VadConfig(**{**self.vad.__dict__, "max_segment_s": self.max_seconds})
        self.batch_size = batch_size
        self.frame_s = float(self.config.get("subsampling", 4)) * self.fbank_cfg.frame_shift_ms / 1000.0

    # ---------------------------------------------------------------- public
    def transcribe(self, audio: str | os.PathLike | np.ndarray, sample_rate: int | None = None) -> Transcript:
        """One recording (a path, or an array with its sample_rate) -> Transcript."""
        if isinstance(audio, (str, os.PathLike)):
            if sample_rate is not None:
                raise KocallError("transcribe: sample_rate is for arrays; a file says its own")
            return self.transcribe_batch([audio])[0]
        result = self._run([(None, ArraySource(audio, sample_rate))])[0]
        if isinstance(result, KocallError):
            raise result
        return result

    def transcribe_batch(self, paths: Sequence[str | os.PathLike], errors: str = "raise"
                         ) -> list[Transcript | KocallError]:
        """Several files, their short pieces decoded together. errors="raise": the first bad
        file raises; "return": its place in the list holds the error and the others decode."""
        if errors not in ("raise", "return"):
            raise KocallError(f"errors must be 'raise' or 'return', not '{errors}'")
        from kocall.datadir import utt_id_for_file

        items: list[tuple[str | None, AudioSource | KocallError]] = []
        for path in paths:
            utt_id = utt_id_for_file(path)
            try:
                items.append((utt_id, FileSource(path, utt_id)))
            except KocallError as err:
                if errors == "raise":
                    self._close(items)
                    raise
                items.append((utt_id, err))
        results = self._run(items)
        if errors == "raise":
            for result in results:
                if isinstance(result, KocallError):
                    raise result
        return results

    # ---------------------------------------------------------------- internals
    @staticmethod
    def _close(items) -> None:
        for _, source in items:
            if isinstance(source, AudioSource):
                source.close()

    def _plan(self, index: int, item: _Input) -> list[_Job]:
        """The pieces of one input: the whole of a short mono recording, else VAD segments."""
        source = item.source
        if source.channels == 1 and self.segmentation == "auto" and source.seconds <= self.max_seconds:
            return [_Job(index, 0, 0, source.frames)]
        from kocall.progress import progress_bar

        meters = [EnergyMeter(source.rate, self.vad) for _ in range(source.channels)]
        with progress_bar(total=math.ceil(source.seconds), desc=f"vad {item.utt_id or source.name}", unit="s",
                          disable=source.seconds < 600) as bar:
            for block in source.blocks():
                for channel, meter in enumerate(meters):
                    meter.feed(block[:, channel])
                bar.update(round(block.shape[0] / source.rate))
        jobs = []
        for channel, meter in enumerate(meters):
            for start_s, end_s in speech_segments(meter.energies(), self.vad):
                start, stop = int(start_s * source.rate), min(source.frames, int(end_s * source.rate))
                if stop - start >= MIN_SAMPLES * source.rate // 16000:
                    jobs.append(_Job(index, channel, start, stop))
        return jobs

    def _features(self, samples: np.ndarray, rate: int, item: _Input) -> np.ndarray:
        from kocall.features import wav_to_fbank

        samples = resample_audio(samples, rate, self.fbank_cfg.sample_rate)
        feats = np.asarray(wav_to_fbank(samples, self.fbank_cfg.sample_rate, self.fbank_cfg), dtype=np.float32)
        if feats.ndim != 2 or feats.shape[0] == 0:
            raise DataError(f"{where(item.utt_id, item.source.name)}: audio too short for one feature frame")
        if feats.shape[1] != self.mean.shape[0]:
            raise DataError(f"{where(item.utt_id, item.source.name)}: {feats.shape[1]} feature bins, the model's "
                            f"CMVN has {self.mean.shape[0]}")
        return (feats - self.mean) / self.std

    def _run(self, items: list[tuple[str | None, AudioSource | KocallError]]) -> list[Transcript | KocallError]:
        from kocall.decode import compute_log_probs, decode_rows
        from kocall.progress import progress_bar

        inputs = []
        for utt_id, source in items:
            if isinstance(source, KocallError):
                inputs.append(_Input(None, utt_id, [], source))
            else:
                inputs.append(_Input(source, utt_id, [None] if source.channels == 1 else list(self.labels)))
        jobs: list[_Job] = []
        for index, item in enumerate(inputs):
            if item.error is None:
                try:
                    jobs += self._plan(index, item)
                except KocallError as err:
                    item.error = err
        try:
            with progress_bar(total=len(jobs), desc="transcribe", unit="seg", disable=len(jobs) < 20) as bar:
                for start in range(0, len(jobs), self.batch_size):
                    batch = [j for j in jobs[start:start + self.batch_size] if inputs[j.index].error is None]
                    feats, kept = [], []
                    for job in batch:
                        item = inputs[job.index]
                        try:
                            samples = item.source.read(job.start, job.stop)[:, job.channel]
                            feats.append(self._features(samples, item.source.rate, item))
                            kept.append(job)
                        except KocallError as err:
                            item.error = err
                    rows = compute_log_probs(self.model, feats, self.device) if feats else []
                    hyps = decode_rows(rows, self.decoder_cfg, self.tables, self.device, self.greedy,
                                       self.tokenizer.suppressed_ids, self.batch_size, self.context) if rows else []
                    for job, row, nbest in zip(kept, rows, hyps):
                        self._add_segment(inputs[job.index], job, row, nbest[0] if nbest else None)
                    bar.update(len(jobs[start:start + self.batch_size]))
        finally:
            self._close(items)
        results: list[Transcript | KocallError] = []
        for item in inputs:
            if item.error is not None:
                results.append(item.error)
                continue
            segments = sorted(item.segments, key=lambda s: (s.start, item.labels.index(s.channel)))
            results.append(Transcript(item.source.name, item.source.seconds, segments, item.labels))
        return results

    def _add_segment(self, item: _Input, job: _Job, log_probs: np.ndarray, hyp) -> None:
        tokens = list(hyp.tokens) if hyp is not None else []
        text = self.tokenizer.decode(tokens) if tokens else ""
        whole = job.start == 0 and job.stop == item.source.frames and item.source.channels == 1
        if not text and not whole:
            return   # a VAD segment with nothing recognised: no segment
        if hyp is not None and hyp.frames:
            frames = list(hyp.frames)
        else:   # greedy hypotheses carry no frames: the argmax path of the same (suppressed) posteriors
            masked = log_probs.copy()
            masked[:, self.tokenizer.suppressed_ids] = -np.inf
            frames = greedy_frames(masked, self.tokenizer.blank_id)
        offset = job.start / item.source.rate
        words = hypothesis_words(tokens, frames, log_probs, self.tokenizer, self.frame_s, offset) if tokens else []
        item.segments.append(Segment(round(offset, 3), round(job.stop / item.source.rate, 3), text,
                                     item.labels[job.channel], words))


def set_threads(threads: int) -> None:
    """CPU threads of the network (torch) and of the search (numba)."""
    import numba
    import torch

    if not isinstance(threads, int) or threads < 1:
        raise KocallError(f"threads must be a whole number >= 1, not {threads!r}")
    torch.set_num_threads(threads)
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
