"""Training data pipeline: utterance index, features, dynamic batching, collation.

* Features come from `feats.scp` (kaldiio) with global CMVN, or are computed on the fly
  from `wav.scp` (`kocall.features.wav_to_fbank`) when augmentation acts on waveforms
  (speed perturbation, online telephone channel).
* Batches hold at most `max_frames` *padded* input frames (batch size x longest
  utterance). Utterances are sorted by length (with a little per-epoch jitter so batch
  composition varies), packed greedily, and the batch order is shuffled per epoch. All of
  it is a pure function of (seed, epoch): a resumed run rebuilds the same list and skips
  the batches already done, which is all the sampler state there is.
* Sharding for DDP: rank r takes batches r, r+W, ... of a list cut to a multiple of W, so
  every rank runs the same number of steps (DistributedSampler's contract).
* Each batch draws its augmentation from a generator seeded by (seed, epoch, batch index),
  so augmentation does not depend on workers or on interruptions.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from kocall.augment import AugmentConfig, augment_waveform, spec_augment
from kocall.errors import DataError, KocallError, where
from kocall.features import load_feats, wav_to_fbank
from kocall.fileio import read_table

log = logging.getLogger(__name__)


@dataclass
class UttEntry:
    utt_id: str
    source: str          # feats.scp rxspecifier, or wav.scp value (on-the-fly features)
    num_frames: int
    tokens: list[int]
    text: str


@dataclass
class Batch:
    utt_ids: list[str]
    feats: torch.Tensor        # (B, T, F) float32
    feat_lens: torch.Tensor    # (B,) int64
    targets: torch.Tensor      # (sum U,) int64, concatenated
    target_lens: torch.Tensor  # (B,) int64
    texts: list[str]

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.utt_ids, self.feats.to(device), self.feat_lens.to(device),
                     self.targets.to(device), self.target_lens.to(device), self.texts)


def ctc_min_frames(tokens: Sequence[int]) -> int:
    """CTC needs one output frame per token plus one blank between repeated tokens."""
    repeats = sum(1 for a, b in zip(tokens, tokens[1:]) if a == b)
    return len(tokens) + repeats


def load_cmvn_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) float32 from a cmvn.json {"mean", "std", "frames"} (CONTRACTS.md)."""
    from kocall.fileio import read_json

    path = Path(path)
    try:
        stats = read_json(path, "global CMVN file")
        mean = np.asarray(stats["mean"], dtype=np.float32)
        std = np.asarray(stats["std"], dtype=np.float32)
    except FileNotFoundError:
        raise DataError(f"file '{path}' is missing (global CMVN; run the feature stage)") from None
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"file '{path}': not a CMVN JSON with 'mean' and 'std' ({err})") from None
    if mean.shape != std.shape or mean.ndim != 1 or not np.all(std > 0):
        raise DataError(f"file '{path}': mean/std must be equal-length vectors with std > 0")
    return mean, std


def read_frame_counts(data_dir: Path, frame_shift_s: float, win_s: float) -> dict[str, int] | None:
    """utt2num_frames if present, else frames implied by utt2dur (snip_edges framing)."""
    if (data_dir / "utt2num_frames").is_file():
        table = read_table(data_dir / "utt2num_frames")
        try:
            return {u: int(v) for u, v in table.items()}
        except ValueError as err:
            raise DataError(f"file '{data_dir / 'utt2num_frames'}': bad frame count ({err})") from None
    if (data_dir / "utt2dur").is_file():
        return {u: max(0, int((float(v) - win_s) / frame_shift_s) + 1)
                for u, v in read_table(data_dir / "utt2dur").items()}
    return None


def load_entries(data_dir: str | Path, encode: Callable[[str], list[int]], use_wav: bool,
                 frame_shift_s: float = 0.01, win_s: float = 0.025) -> list[UttEntry]:
    """Index a data dir: one entry per utterance with its feature source, length and targets."""
    data_dir = Path(data_dir)
    scp_name = "wav.scp" if use_wav else "feats.scp"
    if not (data_dir / scp_name).is_file():
        hint = "" if use_wav else " (run the feature stage, or use on-the-fly features)"
        raise DataError(f"data dir '{data_dir}': file '{data_dir / scp_name}' is missing{hint}")
    sources = read_table(data_dir / scp_name)
    texts = read_table(data_dir / "text", allow_empty_value=True)
    frames = read_frame_counts(data_dir, frame_shift_s, win_s)
    entries = []
    for utt_id, source in sources.items():
        if utt_id not in texts:
            raise DataError(f"{where(utt_id, str(data_dir / 'text'))}: no transcript")
        if frames is not None and utt_id in frames:
            num_frames = frames[utt_id]
        elif use_wav:
            raise DataError(f"{where(utt_id, str(data_dir / 'utt2dur'))}: no duration (needed for batching)")
        else:
            num_frames = load_feats(source, utt_id).shape[0]
        tokens = list(encode(texts[utt_id]))
        if not tokens:
            raise DataError(f"{where(utt_id, str(data_dir / 'text'))}: transcript encodes to no units")
        entries.append(UttEntry(utt_id, source, num_frames, tokens, texts[utt_id]))
    if not entries:
        raise DataError(f"data dir '{data_dir}': no utterances")
    return entries


def filter_trainable(entries: list[UttEntry], output_frames: Callable[[int], int], name: str
                     ) -> list[UttEntry]:
    """Drop utterances whose targets cannot fit in the subsampled frames (CTC would be inf)."""
    kept = [e for e in entries if output_frames(e.num_frames) >= ctc_min_frames(e.tokens)]
    skipped = len(entries) - len(kept)
    if skipped:
        log.warning("%s: skipped %d of %d utterances whose units outnumber the subsampled frames",
                    name, skipped, len(entries))
    if not kept:
        raise DataError(f"{name}: every utterance is too short for its transcript after subsampling")
    return kept


def make_batches(lengths: Sequence[int], max_frames: int, seed: int, epoch: int, shuffle: bool = True,
                 jitter: float = 0.1) -> list[list[int]]:
    """Index lists, each with batch size x longest length <= max_frames (a longer single
    utterance gets a batch of its own). Deterministic in (seed, epoch)."""
    lengths = np.asarray(lengths, dtype=np.float64)
    rng = np.random.default_rng([seed, epoch])
    keys = lengths * (1.0 + rng.uniform(0.0, jitter, size=lengths.size)) if shuffle else lengths
    order = np.argsort(keys, kind="stable")
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0.0
    for idx in order:
        candidate = max(longest, lengths[idx])
        if current and candidate * (len(current) + 1) > max_frames:
            batches.append(current)
            current, candidate = [], lengths[idx]
        current.append(int(idx))
        longest = candidate
    if current:
        batches.append(current)
    if shuffle:
        perm = rng.permutation(len(batches))
        batches = [batches[i] for i in perm]
    return batches


def shard_batches(batches: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """This rank's share; the list is cut to a multiple of world_size so all ranks step together."""
    usable = len(batches) // world_size * world_size
    return batches[rank:usable:world_size]


class SpeechDataset:
    """Loads, augments and collates whole batches (indexed by a batch descriptor)."""

    def __init__(self, entries: list[UttEntry], cmvn: tuple[np.ndarray, np.ndarray] | None,
                 use_wav: bool = False, fbank_cfg=None, augment: AugmentConfig | None = None,
                 seed: int = 0, cache: bool = False) -> None:
        self.entries = entries
        self.cmvn = cmvn
        self.use_wav = use_wav
        self.fbank_cfg = fbank_cfg
        self.augment = augment
        self.seed = seed
        self._cache: dict[int, np.ndarray] | None = {} if cache and not use_wav else None
        if use_wav and fbank_cfg is None:
            raise KocallError("on-the-fly features need the fbank config (fbank.yaml)")

    def features(self, index: int, rng: np.random.Generator | None) -> np.ndarray:
        entry = self.entries[index]
        if self.use_wav:
            feats = self._wav_features(entry, rng)
        elif self._cache is not None and index in self._cache:
            feats = self._cache[index]
        else:
            feats = load_feats(entry.source, entry.utt_id)
            if self.cmvn is not None:
                feats = self._normalise(feats, entry)
            if self._cache is not None:
                self._cache[index] = feats
        if rng is not None and self.augment is not None:
            feats = spec_augment(feats, self.augment.spec_augment, rng)
        return feats

    def _normalise(self, feats: np.ndarray, entry: UttEntry) -> np.ndarray:
        mean, std = self.cmvn
        if feats.shape[1] != mean.shape[0]:
            raise DataError(f"{where(entry.utt_id, entry.source)}: {feats.shape[1]} feature bins but "
                            f"CMVN has {mean.shape[0]}")
        return ((feats - mean) / std).astype(np.float32)

    def _wav_features(self, entry: UttEntry, rng: np.random.Generator | None) -> np.ndarray:
        from kocall.audio import load_audio

        samples, rate = load_audio(entry.source, entry.utt_id)
        if rng is not None and self.augment is not None:
            samples, rate = augment_waveform(samples, rate, self.augment, rng)
        feats = np.asarray(wav_to_fbank(samples, rate, self.fbank_cfg), dtype=np.float32)
        return self._normalise(feats, entry) if self.cmvn is not None else feats

    def collate(self, indices: Sequence[int], rng: np.random.Generator | None) -> Batch:
        return collate_batch([self.features(i, rng) for i in indices], [self.entries[i] for i in indices])


def pad_stack(mats: Sequence[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """(B, longest, F) zero-padded float32 array and the lengths."""
    lens = [m.shape[0] for m in mats]
    out = np.zeros((len(mats), max(lens), mats[0].shape[1]), dtype=np.float32)
    for row, mat in enumerate(mats):
        out[row, : mat.shape[0]] = mat
    return out, lens


def collate_batch(mats: Sequence[np.ndarray], entries: Sequence[UttEntry]) -> Batch:
    feats, lens = pad_stack(mats)
    tokens = [e.tokens for e in entries]
    return Batch(utt_ids=[e.utt_id for e in entries], feats=torch.from_numpy(feats),
                 feat_lens=torch.tensor(lens, dtype=torch.int64),
                 targets=torch.tensor([t for seq in tokens for t in seq], dtype=torch.int64),
                 target_lens=torch.tensor([len(seq) for seq in tokens], dtype=torch.int64),
                 texts=[e.text for e in entries])


class BatchLoaderDataset(torch.utils.data.Dataset):
    """Item k = batch k of one epoch's (rank-sharded, resumed) list, with its own augmentation RNG."""

    def __init__(self, dataset: SpeechDataset, batches: list[list[int]], epoch: int, start: int,
                 train: bool) -> None:
        self.dataset = dataset
        self.batches = batches
        self.epoch = epoch
        self.start = start
        self.train = train

    def __len__(self) -> int:
        return len(self.batches) - self.start

    def __getitem__(self, k: int) -> Batch:
        position = self.start + k
        rng = np.random.default_rng([self.dataset.seed, self.epoch, position]) if self.train else None
        return self.dataset.collate(self.batches[position], rng)


def _identity(batch: Batch) -> Batch:
    return batch


def batch_loader(dataset: SpeechDataset, batches: list[list[int]], epoch: int, start: int = 0,
                 train: bool = True, num_workers: int = 0) -> torch.utils.data.DataLoader:
    """Iterate batches[start:] in order (each element already a collated Batch)."""
    # A DataLoader iterator draws its workers' base seed from the generator it is given, or else
    # from torch's global RNG. A resumed run builds its loader mid-epoch, so drawing from the global
    # RNG would shift the dropout stream and break exact resume: give it its own generator.
    own_rng = torch.Generator().manual_seed(dataset.seed * 100003 + epoch)
    return torch.utils.data.DataLoader(BatchLoaderDataset(dataset, batches, epoch, start, train),
                                       batch_size=None, shuffle=False, num_workers=num_workers,
                                       collate_fn=_identity, persistent_workers=False, generator=own_rng)


# --------------------------------------------------------------- cached frozen-block outputs


def _frozen_fingerprint(model: torch.nn.Module, blocks: int) -> str:
    """A hash of the frozen part's weights: a cache made from other weights is not reused."""
    import hashlib

    digest = hashlib.sha1(f"blocks={blocks}".encode())
    front = getattr(model, "frozen_front_parameters", None)
    for name, param in (front(blocks) if front is not None else model.named_parameters()):
        if not param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().numpy().tobytes()[:4096])
            digest.update(np.float64(param.detach().double().sum()).tobytes())
    return digest.hexdigest()


def build_hidden_cache(source: SpeechDataset, views: int, path_prefix: Path, model: torch.nn.Module, blocks: int,
                       device: torch.device, seed: int, progress: bool = False,
                       max_frames: int = 12000) -> list[list[torch.Tensor]]:
    """Per view, per utterance: `model.frozen_front(feats, lens, blocks)` as float16 (T', d) tensors.

    View 0 is the clean input; view v > 0 draws its augmentation (the source set's waveform
    augmentation and SpecAugment) from a generator seeded by (seed, v, utterance index), so a
    cache is a pure function of the data (ids, sources, front end), the augmentation config, the
    seed and the frozen weights: that key names the file, `<path_prefix>-<key hash>-view<v>.pt`
    (atomic), so caches of other configs sit side by side and models that share the frozen part
    (another unit inventory, other upper layers) reuse one. Each file also holds the sha1 of its
    tensors: a file whose bytes changed (a flipped bit, a truncated copy) is reported and rebuilt,
    never trained on; a cache that cannot be written is one line naming it.
    """
    import dataclasses
    import hashlib

    from kocall.fileio import atomic_write
    from kocall.progress import progress_bar

    def plain(config: object) -> object:
        return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config

    key = {"utts": [e.utt_id for e in source.entries], "frames": [e.num_frames for e in source.entries],
           "sources": [e.source for e in source.entries], "use_wav": source.use_wav,
           "fbank": plain(source.fbank_cfg), "augment": plain(source.augment),
           "seed": seed, "weights": _frozen_fingerprint(model, blocks)}
    key_hash = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    order = sorted(range(len(source.entries)), key=lambda i: source.entries[i].num_frames)
    chunks, current = [], []
    for index in order:   # length-sorted chunks of at most max_frames padded frames
        if current and source.entries[index].num_frames * (len(current) + 1) > max_frames:
            chunks.append(current)
            current = []
        current.append(index)
    chunks.append(current)
    result = []
    model.eval()
    for view in range(views):
        path = Path(f"{path_prefix}-{key_hash}-view{view}.pt")
        stored = _read_hidden_cache(path)
        if stored is not None and stored.get("key") == {**key, "view": view}:
            result.append(stored["hidden"])
            continue
        hidden: list[torch.Tensor | None] = [None] * len(source.entries)
        bar = progress_bar(chunks, desc=f"caching frozen blocks ({path.name})", disable=not progress, leave=False)
        for done, chunk in enumerate(bar):
            mats = [source.features(i, np.random.default_rng([seed, 7919, view, i]) if view else None)
                    for i in chunk]
            feats, lens = pad_stack(mats)
            with torch.inference_mode():
                out, out_lens = model.frozen_front(torch.from_numpy(feats).to(device),
                                                   torch.tensor(lens, device=device), blocks)
            for row, index in enumerate(chunk):
                hidden[index] = out[row, : int(out_lens[row])].to(torch.float16).cpu().clone()
            if not progress and (done + 1) % max(1, len(chunks) // 10) == 0:
                log.info("%s: %d/%d chunks", path.name, done + 1, len(chunks))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path, "wb") as handle:
                torch.save({"key": {**key, "view": view}, "hidden": hidden, "sha1": _hidden_digest(hidden)}, handle)
        except OSError as err:
            raise DataError(f"cache file '{path}' cannot be written ({err.strerror}); give a writable "
                            "--cache-dir") from None
        result.append(hidden)
    return result


def _hidden_digest(hidden: list) -> str:
    import hashlib

    digest = hashlib.sha1()
    for tensor in hidden:
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _read_hidden_cache(path: Path) -> dict | None:
    """A cache file's content, or None (logged) when it is missing, unreadable or changed."""
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        intact = (isinstance(stored, dict) and isinstance(stored.get("hidden"), list)
                  and all(isinstance(t, torch.Tensor) for t in stored["hidden"])
                  and stored.get("sha1") == _hidden_digest(stored["hidden"]))
    except Exception as err:  # noqa: BLE001 - a damaged pickle fails in many ways; all mean "rebuild"
        log.warning("cache file '%s' cannot be read (%s); rebuilding it", path, type(err).__name__)
        return None
    if not intact:
        log.warning("cache file '%s' does not match its checksum (changed or damaged); rebuilding it", path)
        return None
    return stored


class CachedHiddenSet:
    """Batches of cached frozen-block outputs (build_hidden_cache), with the SpeechDataset interface.

    A training batch (rng given) takes, per utterance, a view drawn from the batch's generator
    and time masks (augment.spec_augment's time settings; no frequency masks on hidden
    channels); evaluation (rng None) takes view 0 as it is.
    """

    def __init__(self, views: list[list[torch.Tensor]], entries: list[UttEntry], spec, seed: int) -> None:
        from dataclasses import replace

        self.views = views
        self.entries = entries
        self.seed = seed
        self.time_masks = replace(spec, num_freq_masks=0, time_warp=0) if spec is not None else None

    def collate(self, indices: Sequence[int], rng: np.random.Generator | None) -> Batch:
        mats = []
        for i in indices:
            view = int(rng.integers(len(self.views))) if rng is not None else 0
            mat = self.views[view][i].float().numpy()
            if rng is not None and self.time_masks is not None:
                mat = spec_augment(mat, self.time_masks, rng)
            mats.append(mat)
        return collate_batch(mats, [self.entries[i] for i in indices])
