"""`kocall train`: THE trainer of every CTC model family; resumable, time-budgeted, DDP-ready.

The family (`arch:` in the model YAML, kocall.models) supplies the network, its pretrained
initialisation, its parameter groups (freezing, layer-wise lr decay) and whether frozen
lower blocks may be cached (`finetune.cache_frozen`: their outputs are computed once per
augmented view, then only the upper part trains). Everything else below is shared.

    kocall train --config conf/model_small.yaml --train data/train --dev data/dev \
        --lang data/lang_char --exp-dir exp/conformer_ctc_small_char [--device cpu|cuda]
        [--threads 2] [--seed 1] [--max-minutes 9] [--avg 3]
    torchrun --nproc_per_node 4 -m kocall.cli train ... --device cuda     # several GPUs

Outputs in EXP_DIR: checkpoints/ckpt-<step>.pt (full state; the latest few are kept),
checkpoints/epoch-<n>.pt (weights only, for averaging), train_log.csv, train_curves.png,
final/ (the model dir of CONTRACTS.md).

* Resume: a rerun loads the checkpoint with the highest step and continues exactly where
  it stopped: the model, optimiser, scheduler, AMP scaler, sampler position (epoch and
  batch) and the torch/numpy/python RNG states of every rank are all in the checkpoint, and
  the batch list and augmentation are functions of (seed, epoch, batch), so the parameters
  after a kill and a rerun equal those of an uninterrupted run.
* Loss: CTC summed over utterances, divided by the number of target units in the global
  batch (all ranks). With DDP's gradient averaging that is exactly the single-process
  gradient of the whole batch.
* Final weights: the average of the last `avg` epoch checkpoints and the epoch with the
  best dev CER are both scored on dev (greedy CTC); the lower dev CER wins (the average on a
  tie, because averaging usually generalises better). The choice is in final/config.json.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import random
import re
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import click
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import nn
from kocall.progress import progress_bar

from kocall.augment import AugmentConfig
from kocall.model_dir import init_from_model_dir, save_model_dir
from kocall.dataset import (Batch, CachedHiddenSet, SpeechDataset, batch_loader, build_hidden_cache,
                            filter_trainable, load_cmvn_stats, load_entries, make_batches, shard_batches)
from kocall.errors import DataError, KocallError
from kocall.fileio import atomic_write, check_output_dir, read_text
from kocall.models import count_parameters, make_config
from kocall.models import family as model_family
from kocall.options import bounded
from kocall.rxspec import allow_pipes_option

log = logging.getLogger("kocall.train")

CSV_COLUMNS = ("step", "epoch", "lr", "train_loss", "dev_loss", "dev_cer", "elapsed_s")


# ------------------------------------------------------------------------------ config


@dataclass
class OptimConfig:
    lr: float = 2e-3
    weight_decay: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    grad_clip: float = 5.0


@dataclass
class ScheduleConfig:
    kind: str = "cosine"          # cosine: linear warm-up then cosine decay; noam: warm-up then inverse sqrt
    warmup_steps: int = 200
    final_lr_ratio: float = 0.05  # cosine: lr at the last step / peak lr
    span: str = "epochs"          # cosine: decay over the run (training.max_steps, else `epochs`), or
                                  # ("budget") over the steps that
                                  # training.max_minutes allows: planned after probe_steps, re-planned
                                  # at each epoch end (Trainer._plan_schedule)
    probe_steps: int = 50


@dataclass
class BatchingConfig:
    max_frames: int = 20000       # padded input frames per batch (per rank)
    jitter: float = 0.1           # per-epoch length jitter before sorting (varies batch composition)
    num_workers: int = 0
    cache_feats: bool = True      # keep normalised training features in memory after the first epoch
    features: str = "auto"        # auto | feats | wav (auto: wav when augmentation needs waveforms)


MAX_STEPS = 100_000_000


@dataclass
class TrainingConfig:
    epochs: int = 10
    max_steps: int = 0            # > 0: the run is this many optimiser steps, as many epochs as that
                                  # takes (`epochs` is then unused): the same model on any machine
    max_minutes: float = 0.0      # 0 = no time budget
    checkpoint_every: int = 200   # steps
    keep_checkpoints: int = 2     # full-state step checkpoints kept (epoch weights are all kept)
    avg: int = 3                  # epoch checkpoints to average for the final model
    log_every: int = 20           # steps per CSV row of train loss
    amp: bool = True              # CUDA only
    ctc_backend: str = "torch"    # torch | k2 (only where `import k2` works)


@dataclass
class PretrainedConfig:
    checkpoint: str | None = None  # a file; None: the family's default places for `size`; "none": random init
    size: str = "base"
    tokenizer: str | None = None   # whisper_hybrid: Whisper's tokenizer.json (or its folder); None: beside
                                   # the checkpoint, then tools/whisper-<size>-ct2
    init_model: str | None = None  # a trained kocall model dir over the same units: its tensors of the
                                   # same names and shapes are copied after `checkpoint` (two-phase
                                   # training: a whisper_base_ctc starts a whisper_hybrid's CTC branch)


@dataclass
class FinetuneConfig:
    freeze_frontend: bool = False  # the conv front end
    freeze_blocks: int = 0         # the lowest N encoder blocks (implies a frozen front end)
    layer_lr_decay: float = 1.0    # lr x decay ** (depth below the top block)
    cache_frozen: bool = False     # compute the frozen part once per cached view (CPU budgets)
    cache_views: int = 1           # cached copies: view 0 clean, the others through `augment:`


@dataclass
class TrainConfig:
    model: dict
    arch: str = "conformer_ctc"    # the model family (kocall.models)
    fbank: str = "conf/fbank.yaml"  # the front end the model declares (run.sh's feature stage uses it)
    unit: str = ""                 # the output units run.sh uses for this model when --unit is not given
    pretrained: PretrainedConfig = field(default_factory=PretrainedConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> "TrainConfig":
        if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
            raise KocallError(f"{source}: expected a mapping with a 'model:' section")
        known = {"arch", "fbank", "unit", "model", "pretrained", "finetune", "optim", "schedule", "batching", "augment", "training"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise KocallError(f"{source}: unknown section(s) {unknown}; known: {sorted(known)}")

        def section(name: str, kind: type) -> Any:
            values = dict(raw.get(name) or {})
            names = {f.name for f in fields(kind)}
            bad = sorted(set(values) - names)
            if bad:
                raise KocallError(f"{source}: unknown key(s) {bad} in '{name}:'; known: {sorted(names)}")
            return kind(**values)

        cfg = cls(model=dict(raw["model"]), arch=str(raw.get("arch") or "conformer_ctc"),
                  fbank=str(raw.get("fbank") or "conf/fbank.yaml"), unit=str(raw.get("unit") or ""),
                  pretrained=section("pretrained", PretrainedConfig), finetune=section("finetune", FinetuneConfig),
                  optim=section("optim", OptimConfig),
                  schedule=section("schedule", ScheduleConfig), batching=section("batching", BatchingConfig),
                  augment=AugmentConfig.from_dict(raw.get("augment")), training=section("training", TrainingConfig))
        if cfg.unit not in ("", "char", "jamo", "bpe"):
            raise KocallError(f"{source}: unit must be char, jamo or bpe, not '{cfg.unit}'")
        if cfg.schedule.kind not in ("cosine", "noam"):
            raise KocallError(f"{source}: schedule.kind must be cosine or noam, not '{cfg.schedule.kind}'")
        if cfg.schedule.span not in ("epochs", "budget"):
            raise KocallError(f"{source}: schedule.span must be epochs or budget, not '{cfg.schedule.span}'")
        if cfg.batching.features not in ("auto", "feats", "wav"):
            raise KocallError(f"{source}: batching.features must be auto, feats or wav")
        model_family(cfg.arch)   # an unknown arch fails here, naming the known ones
        if cfg.finetune.cache_views < 1:
            raise KocallError(f"{source}: finetune.cache_views must be >= 1")
        if not 0 <= cfg.training.max_steps <= MAX_STEPS:
            raise KocallError(f"{source}: training.max_steps must be in 0..{MAX_STEPS}, not {cfg.training.max_steps}")
        return cfg


def load_train_config(path: str | os.PathLike) -> tuple[TrainConfig, dict]:
    path = Path(path)
    try:
        raw = yaml.safe_load(read_text(path, "model config"))
    except FileNotFoundError:
        raise KocallError(f"model config '{path}' is missing") from None
    except yaml.YAMLError as err:
        raise KocallError(f"model config '{path}': invalid YAML ({str(err).splitlines()[0]})") from None
    return TrainConfig.from_dict(raw, f"model config '{path}'"), raw


@dataclass
class RunOptions:
    model_conf: str
    train_dir: str
    dev_dir: str
    lang_dir: str
    exp_dir: str
    device: str = "cpu"
    threads: int = 1                      # torch CPU threads of each process
    seed: int = 1
    max_minutes: float | None = None
    avg: int | None = None
    stop_after_steps: int | None = None   # testing: stop (as if killed) after this global step
    progress: bool = True
    pretrained: str | None = None         # overrides the config's pretrained.checkpoint
    init_model: str | None = None         # overrides the config's pretrained.init_model
    cache_dir: str | None = None          # cached frozen blocks (default EXP_DIR/cache)


# ------------------------------------------------------------------------- distributed


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (nothing for one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


MAX_TRAIN_SECONDS = 120.0   # a 1 h utterance would ask for ~130 GB of activations; decoding's limit too


def check_utterance_lengths(entries: list, frame_shift_s: float, limit_s: float, limit_by: str, data_dir: Path) -> None:
    """DataError naming the first utterance longer than `limit_s`, before any batch is built."""
    for entry in entries:
        seconds = entry.num_frames * frame_shift_s
        if seconds > limit_s:
            raise DataError(f"utterance '{entry.utt_id}' (data dir '{data_dir}') lasts {seconds:.1f} s, over the "
                            f"{limit_s:g} s {limit_by}; split it or leave it out")


def check_finite_loss(loss: float, what: str, every_rank: bool = True) -> None:
    """Stop training in one line when the loss is NaN or infinite (NaN weights, a corrupt cache,
    a diverged run): nothing after it, final/ included, is written. `every_rank`: all ranks call
    it together (so all stop together); else only this rank looks (the dev pass of rank 0)."""
    bad = torch.tensor(0.0 if math.isfinite(loss) else 1.0, dtype=torch.float64)
    if float(all_reduce_sum(bad) if every_rank else bad) > 0:
        raise KocallError(f"training stopped: {what} is not finite ({loss}); no final model was written "
                          "(check --pretrained weights, cached features, the learning rate)")


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value)
    return value


# ------------------------------------------------------------------------------ loss


def ctc_loss_sum(log_probs: torch.Tensor, out_lens: torch.Tensor, targets: torch.Tensor,
                 target_lens: torch.Tensor, backend: str = "torch") -> torch.Tensor:
    """Sum over the batch of per-utterance CTC negative log-likelihoods (blank 0)."""
    if backend == "k2":
        return _k2_ctc_loss_sum(log_probs, out_lens, targets, target_lens)
    return F.ctc_loss(log_probs.transpose(0, 1), targets, out_lens, target_lens,
                      blank=0, reduction="sum", zero_infinity=True)


def _k2_ctc_loss_sum(log_probs, out_lens, targets, target_lens) -> torch.Tensor:
    try:
        import k2
    except ImportError:
        raise KocallError("training.ctc_backend is k2 but `import k2` fails; use ctc_backend: torch") from None
    order = torch.argsort(out_lens, descending=True)  # k2 wants segments by decreasing length
    seqs = [t.tolist() for t in torch.split(targets.cpu(), target_lens.cpu().tolist())]
    segments = torch.stack([order, torch.zeros_like(order), out_lens[order]], 1).to(torch.int32).cpu()
    dense = k2.DenseFsaVec(log_probs, segments)
    graph = k2.ctc_graph([seqs[i] for i in order.tolist()], device=log_probs.device)
    return k2.ctc_loss(graph, dense, output_beam=10, reduction="sum", use_double_scores=True)


def forward_backward(model: nn.Module, batch: Batch, device: torch.device, amp_dtype: torch.dtype | None,
                     scaler: torch.amp.GradScaler | None, backend: str = "torch",
                     family_loss: Callable | None = None) -> tuple[float, int]:
    """One forward and backward pass on this rank's batch; gradients = d(global loss per unit).

    `family_loss` is the family's `loss` hook (kocall.models.ModelFamily.loss); without one the
    loss is CTC. Returns (summed loss on this rank, units on this rank) for logging.
    """
    batch = batch.to(device)
    autocast = torch.autocast(device_type="cuda", dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    with autocast:
        if family_loss is not None:
            loss_sum, units = family_loss(model, batch, backend)
        else:
            log_probs, out_lens = model(batch.feats, batch.feat_lens)
    if family_loss is None:
        loss_sum = ctc_loss_sum(log_probs.float(), out_lens, batch.targets, batch.target_lens, backend)
        units = batch.target_lens.sum()
    units = units.to(torch.float64)
    global_units = all_reduce_sum(units)
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    # DDP averages gradients over ranks, so scale by world / global units to get sum / global units.
    loss = loss_sum * (world / global_units.item())
    if scaler is not None:
        scaler.scale(loss).backward()
    else:
        loss.backward()
    return float(loss_sum.detach()), int(units.item())


# ---------------------------------------------------------------------- lr schedule


def lr_factor(step: int, cfg: ScheduleConfig, total_steps: int) -> float:
    """Multiplier of the peak lr at optimiser step `step` (0-based)."""
    step = step + 1
    warmup = max(1, cfg.warmup_steps)
    if step <= warmup:
        return step / warmup
    if cfg.kind == "noam":
        return math.sqrt(warmup / step)
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return cfg.final_lr_ratio + (1 - cfg.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def plan_steps(step: int, seconds_per_step: float, remaining_s: float, total_steps: int, warmup_steps: int) -> int:
    """The step a budget-spanning schedule ends at: what the remaining time allows at the measured
    speed, less 5 % for the epoch-end dev passes and checkpoints; never beyond `total_steps`
    (the configured epochs) nor inside the warm-up."""
    affordable = int(0.95 * max(0.0, remaining_s) / max(seconds_per_step, 1e-9))
    return max(warmup_steps + 1, min(total_steps, step + affordable))


# ------------------------------------------------------------------------ checkpoints


@dataclass
class TrainState:
    epoch: int = 0             # epochs completed
    batch_in_epoch: int = 0    # batches of the current epoch already trained (this rank's list)
    step: int = 0              # optimiser steps
    elapsed: float = 0.0       # training seconds over all runs
    planned_steps: int = 0     # schedule.span budget: steps the lr schedule spans (0: epochs' worth)
    log_rows: list = field(default_factory=list)
    epoch_results: list = field(default_factory=list)   # {"epoch", "step", "dev_loss", "dev_cer"}


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def checkpoint_dir(exp_dir: Path) -> Path:
    return exp_dir / "checkpoints"


def latest_checkpoint(exp_dir: Path) -> Path | None:
    found = []
    for path in checkpoint_dir(exp_dir).glob("ckpt-*.pt"):
        match = re.fullmatch(r"ckpt-(\d+)\.pt", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file, then rename: a kill never leaves a truncated checkpoint."""
    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or foreign file
        raise KocallError(f"checkpoint '{path}' cannot be read ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}); delete it to start over") from None


# ------------------------------------------------------------------------- logging


def write_csv(path: Path, rows: list[dict]) -> None:
    with atomic_write(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in CSV_COLUMNS})


def write_plot(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_cer) = plt.subplots(1, 2, figsize=(10, 4))
    train = [(r["step"], r["train_loss"]) for r in rows if r.get("train_loss") is not None]
    dev = [(r["step"], r["dev_loss"]) for r in rows if r.get("dev_loss") is not None]
    cer = [(r["step"], r["dev_cer"]) for r in rows if r.get("dev_cer") is not None]
    if train:
        ax_loss.plot(*zip(*train), label="train")
    if dev:
        ax_loss.plot(*zip(*dev), marker="o", label="dev")
    ax_loss.set(xlabel="step", ylabel="CTC loss per unit", yscale="log", title="loss")
    if train or dev:
        ax_loss.legend()
    if cer:
        ax_cer.plot(*zip(*cer), marker="o")
    ax_cer.set(xlabel="step", ylabel="CER %", title="dev CER (greedy)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())


# -------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model: nn.Module, dataset: SpeechDataset, batches: list[list[int]], device: torch.device,
             decode: Callable[[list[int]], str], amp_dtype: torch.dtype | None,
             family_loss: Callable | None = None) -> tuple[float, float]:
    """(dev loss per unit, CTC greedy CER %) over the whole dev set. The loss is the family's
    training loss (`family_loss`, e.g. a hybrid's CTC + attention) or else CTC's."""
    from kocall.scoring import score_texts
    from kocall_kernels.ctc_decoder.greedy import greedy_decode

    was_training = model.training
    model.eval()
    loss_sum, units = 0.0, 0
    refs, hyps = {}, {}
    for batch in batch_loader(dataset, batches, epoch=0, train=False):
        batch = batch.to(device)
        autocast = torch.autocast(device_type="cuda", dtype=amp_dtype) if amp_dtype is not None else nullcontext()
        with autocast:
            log_probs, out_lens = model(batch.feats, batch.feat_lens)
            if family_loss is not None:
                family_sum, family_units = family_loss(model, batch, "torch")
        log_probs = log_probs.float()
        if family_loss is None:
            loss_sum += float(ctc_loss_sum(log_probs, out_lens, batch.targets, batch.target_lens))
            units += int(batch.target_lens.sum())
        else:
            loss_sum += float(family_sum)
            units += int(family_units)
        for utt_id, text, ids in zip(batch.utt_ids, batch.texts, greedy_decode(log_probs, out_lens, 0)):
            refs[utt_id], hyps[utt_id] = text, decode(ids)
    model.train(was_training)
    return loss_sum / max(units, 1), score_texts(refs, hyps).cer


def average_state_dicts(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of float tensors (others taken from the last checkpoint)."""
    states = [load_checkpoint(p)["model"] for p in paths]
    result = {}
    for key, last in states[-1].items():
        if last.is_floating_point():
            result[key] = sum(s[key].to(torch.float64) for s in states).div(len(states)).to(last.dtype)
        else:
            result[key] = last.clone()
    return result


# ------------------------------------------------------------------------ training run


class ForwardFrom(nn.Module):
    """The model from block `start` on: what a batch of cached frozen-block outputs goes through."""

    def __init__(self, model: nn.Module, start: int) -> None:
        super().__init__()
        self.model = model
        self.start = start

    def forward(self, hidden: torch.Tensor, lens: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        return self.model.forward_from(hidden, lens, self.start, **kwargs)   # kwargs: a family's (loss hook)



class Trainer:
    """Holds everything of one training run; `run()` trains and writes the final model dir."""

    def __init__(self, opts: RunOptions, tokenizer: Any = None) -> None:
        self.opts = opts
        self.exp_dir = Path(opts.exp_dir)
        self.cfg, self.raw_cfg = load_train_config(opts.model_conf)
        if opts.max_minutes is not None:
            self.cfg.training.max_minutes = opts.max_minutes
        if opts.avg is not None:
            self.cfg.training.avg = opts.avg
        if opts.pretrained is not None:
            self.cfg.pretrained.checkpoint = opts.pretrained
        if opts.init_model is not None:
            self.cfg.pretrained.init_model = opts.init_model or None
        self.family = model_family(self.cfg.arch)
        # What picks the final weights among the candidates (kocall.models: `select_by`).
        self.select_by = getattr(self.family, "select_by", "dev_cer")
        if self.select_by not in ("dev_cer", "dev_loss"):
            raise KocallError(f"model family {self.cfg.arch}: select_by {self.select_by!r} is not dev_cer or dev_loss")
        torch.set_num_threads(max(1, opts.threads))
        if opts.device == "cuda" and not torch.cuda.is_available():
            raise KocallError("--device cuda: no CUDA device is available (use --device cpu)")
        self.dist = init_distributed(opts.device)
        self.device = torch.device(f"cuda:{self.dist.local_rank}" if opts.device == "cuda" else "cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.amp_dtype = self._amp_dtype()
        self.tokenizer = tokenizer or self._load_tokenizer()
        seed_everything(opts.seed)
        self._prepare_data()
        self._prepare_model()

    # ---------------------------------------------------------------- setup
    def _amp_dtype(self) -> torch.dtype | None:
        if self.device.type != "cuda" or not self.cfg.training.amp:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _load_tokenizer(self) -> Any:
        from kocall.lang import Tokenizer

        return Tokenizer.from_lang_dir(self.opts.lang_dir)

    def _prepare_data(self) -> None:
        train_dir, dev_dir = Path(self.opts.train_dir), Path(self.opts.dev_dir)
        self.cmvn_path = train_dir / "cmvn.json"
        self.fbank_path = train_dir / "fbank.yaml"
        self.features_cfg = self._read_fbank_yaml()
        aug = self.cfg.augment
        mode = self.cfg.batching.features
        use_wav = aug.needs_waveforms if mode == "auto" else mode == "wav"
        if aug.needs_waveforms and not use_wav:
            raise KocallError("augment: speed perturbation / telephone channel act on waveforms; "
                              "set batching.features to auto or wav")
        shift = float(self.features_cfg.get("frame_shift_ms", 10.0)) / 1000
        win = float(self.features_cfg.get("frame_length_ms", 25.0)) / 1000
        # A family whose front end normalises itself (Whisper) gets no CMVN; its model dir
        # carries an identity cmvn.json so that every decoder applies the same rule.
        self._check_front_end()
        cmvn = load_cmvn_stats(self.cmvn_path) if self.family.uses_cmvn else None
        fbank_cfg = self._fbank_config() if use_wav else None
        encode = self.tokenizer.encode
        train_entries = load_entries(train_dir, encode, use_wav, shift, win)
        self.n_mels = int(cmvn[0].shape[0]) if cmvn is not None else int(self.features_cfg.get("n_mels", 80))
        self.vocab_size = len(self.tokenizer)
        # A probe of the model says which utterances fit CTC after subsampling.
        self.model_cfg = self.family.model_config(self.cfg, self.n_mels, self.vocab_size)
        probe = self.family.build(self.model_cfg)
        min_speed = aug.min_speed if use_wav else 1.0
        frames_out = lambda n: int(probe.output_lengths(torch.tensor(int(n / min_speed))))  # noqa: E731
        self.train_entries = filter_trainable(train_entries, frames_out, str(train_dir))
        self.dev_entries = load_entries(dev_dir, encode, False, shift, win)
        limit = self.family.max_input_seconds({"model": self.model_cfg, "features": self.features_cfg})
        for name, entries in ((train_dir, self.train_entries), (dev_dir, self.dev_entries)):
            check_utterance_lengths(entries, shift, min(limit or MAX_TRAIN_SECONDS, MAX_TRAIN_SECONDS),
                                    "the model's input limit" if limit and limit < MAX_TRAIN_SECONDS else
                                    "the training limit", Path(name))
        self.train_set = SpeechDataset(self.train_entries, cmvn, use_wav, fbank_cfg, aug, self.opts.seed,
                                       cache=self.cfg.batching.cache_feats)
        self.dev_set = SpeechDataset(self.dev_entries, cmvn, False, None, None, self.opts.seed, cache=True)
        self.train_lengths = [e.num_frames for e in self.train_entries]
        self.dev_batches = make_batches([e.num_frames for e in self.dev_entries], self.cfg.batching.max_frames,
                                        self.opts.seed, 0, shuffle=False)
        self.steps_per_epoch = len(self._epoch_batches(0))
        # The lr schedule spans the run: training.max_steps when set, else `epochs`' worth.
        max_steps = self.cfg.training.max_steps
        self.total_steps = max_steps or self.steps_per_epoch * self.cfg.training.epochs
        self.num_epochs = -(-max_steps // self.steps_per_epoch) if max_steps else self.cfg.training.epochs

    def _check_front_end(self) -> None:
        """The features must come from the front end the model declares (e.g. Whisper's log-mel)."""
        from kocall.paths import conf_file

        declared_path = conf_file(self.cfg.fbank)
        if not declared_path.is_file():
            return   # a config used outside the repo root: nothing to compare with
        declared = yaml.safe_load(declared_path.read_text(encoding="utf-8")) or {}
        flavour = lambda values: values.get("flavour", "kaldi")  # noqa: E731
        if flavour(declared) != flavour(self.features_cfg):
            raise KocallError(f"model config '{self.opts.model_conf}' declares front end '{declared_path}' "
                              f"({flavour(declared)}) but '{self.fbank_path}' holds {flavour(self.features_cfg)} "
                              f"features: rerun steps/make_fbank.sh --config {declared_path}")

    def _read_fbank_yaml(self) -> dict:
        if not self.fbank_path.is_file():
            raise KocallError(f"file '{self.fbank_path}' is missing (the feature config; run the feature stage)")
        values = yaml.safe_load(read_text(self.fbank_path)) or {}
        if not isinstance(values, dict):
            raise KocallError(f"file '{self.fbank_path}': must hold a YAML mapping")
        return values

    def _fbank_config(self):
        from kocall_kernels.fbank.config import FbankConfig

        known = {f.name for f in fields(FbankConfig)}
        return FbankConfig(**{k: v for k, v in self.features_cfg.items() if k in known})

    def _prepare_model(self) -> None:
        # Built after the probe, as always: the same seed gives the same initial weights as before.
        self.model = self.family.build(self.model_cfg)
        self.init_source = self.family.initialise(self.model, self.cfg)
        if self.cfg.pretrained.init_model:
            copied = init_from_model_dir(self.model, self.cfg.pretrained.init_model, self.opts.lang_dir)
            self.init_source = "; ".join(filter(None, [self.init_source, copied]))
        if self.init_source and self.dist.is_main:
            log.info("%s", self.init_source)
        self.model = self.model.to(self.device)
        opt = self.cfg.optim
        self.state = TrainState()
        self._run_start_step: int | None = None   # first step of this process (schedule probe)
        self.optimizer = torch.optim.AdamW(self.family.param_groups(self.model, self.cfg),
                                           lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, self.cfg.schedule, self.state.planned_steps or self.total_steps))
        use_scaler = self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        # What a batch goes through: the whole model, or (frozen part cached) its upper part.
        self.forward_module: nn.Module = self.model
        cached = self.family.cached_blocks(self.cfg)
        if cached is not None:
            self._use_hidden_cache(cached)
        self.ddp_model: nn.Module = self.forward_module
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = nn.parallel.DistributedDataParallel(self.forward_module, device_ids=ids)

    def _use_hidden_cache(self, blocks: int) -> None:
        """Replace the train/dev sets by cached outputs of the frozen front end and blocks [0, blocks).

        Views: 0 is the clean input; views 1.. draw waveform and SpecAugment augmentation from
        `augment:` (one generator per view and utterance), so augmentation still reaches the
        trained layers; training picks a view per utterance and batch and adds time masks on
        the cached frames. The cache is deterministic, named by its key (data, augmentation,
        seed, frozen weights) and kept in --cache-dir (default EXP_DIR/cache): a resume, or
        another model over the same frozen part (e.g. other units), reuses it.
        """
        views = self.cfg.finetune.cache_views
        cache_dir = Path(self.opts.cache_dir) if self.opts.cache_dir else self.exp_dir / "cache"
        common = dict(model=self.model, blocks=blocks, device=self.device, seed=self.opts.seed,
                      progress=self.opts.progress and self.dist.is_main)
        self.train_set = CachedHiddenSet(
            build_hidden_cache(self.train_set, views, cache_dir / "train", **common), self.train_entries,
            self.cfg.augment.spec_augment, self.opts.seed)
        self.dev_set = CachedHiddenSet(build_hidden_cache(self.dev_set, 1, cache_dir / "dev", **common),
                                       self.dev_entries, None, self.opts.seed)
        self.forward_module = ForwardFrom(self.model, blocks)

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        batches = make_batches(self.train_lengths, self.cfg.batching.max_frames, self.opts.seed, epoch,
                               shuffle=True, jitter=self.cfg.batching.jitter)
        return shard_batches(batches, self.dist.rank, self.dist.world_size)

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> None:
        rngs = [rng_state()]
        if self.dist.world_size > 1:
            rngs = [None] * self.dist.world_size
            dist.all_gather_object(rngs, rng_state())
        if not self.dist.is_main:
            return
        ckpt = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "state": asdict(self.state), "rng": rngs, "config": self.raw_cfg, "seed": self.opts.seed,
                "world_size": self.dist.world_size}
        cdir = checkpoint_dir(self.exp_dir)
        save_atomic(ckpt, cdir / f"ckpt-{self.state.step:08d}.pt")
        steps = sorted(cdir.glob("ckpt-*.pt"))
        for old in steps[: -self.cfg.training.keep_checkpoints]:
            old.unlink(missing_ok=True)

    def try_resume(self) -> bool:
        path = latest_checkpoint(self.exp_dir)
        if path is None:
            return False
        ckpt = load_checkpoint(path)
        if ckpt.get("config", {}).get("model") != self.raw_cfg.get("model"):
            raise KocallError(f"checkpoint '{path}' was trained with another model config; "
                              f"use a new --exp-dir or delete '{checkpoint_dir(self.exp_dir)}'")
        if ckpt.get("world_size", 1) != self.dist.world_size:
            raise KocallError(f"checkpoint '{path}' was written by {ckpt.get('world_size')} process(es), "
                              f"this run has {self.dist.world_size}: the sampler position would not match")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainState(**ckpt["state"])
        set_rng_state(ckpt["rng"][self.dist.rank])
        if self.dist.is_main:
            log.info("resumed from %s (epoch %d, batch %d, step %d)", path, self.state.epoch,
                     self.state.batch_in_epoch, self.state.step)
        return True

    def save_epoch_weights(self) -> None:
        if self.dist.is_main:
            save_atomic({"model": self.model.state_dict()},
                        checkpoint_dir(self.exp_dir) / f"epoch-{self.state.epoch}.pt")

    # ---------------------------------------------------------------- loop
    def _out_of_time(self, run_start: float) -> bool:
        budget = self.cfg.training.max_minutes
        if budget <= 0:
            return False
        over = torch.tensor(float(self.state.elapsed + time.time() - run_start > budget * 60))
        return bool(all_reduce_sum(over).item() > 0)   # every rank stops at the same step

    def _log_row(self, **values: Any) -> None:
        row = {"step": self.state.step, "epoch": self.state.epoch + 1,
               "lr": round(self.optimizer.param_groups[0]["lr"], 8), **values}
        self.state.log_rows.append(row)

    def _flush_logs(self) -> None:
        if self.dist.is_main:
            write_csv(self.exp_dir / "train_log.csv", self.state.log_rows)
            write_plot(self.exp_dir / "train_curves.png", self.state.log_rows)

    def train_epoch(self, run_start: float) -> str:
        """Train the rest of the current epoch. Returns "done", "steps" (max_steps reached inside
        it), "time" or "stopped"."""
        tcfg = self.cfg.training
        batches = self._epoch_batches(self.state.epoch)
        loader = batch_loader(self.train_set, batches, self.state.epoch, self.state.batch_in_epoch,
                              train=True, num_workers=self.cfg.batching.num_workers)
        self.ddp_model.train()
        interval_loss, interval_units = 0.0, 0
        bar = progress_bar(loader, desc=f"epoch {self.state.epoch + 1}/{self.num_epochs}", initial=self.state.batch_in_epoch,
                   total=len(batches), disable=not (self.opts.progress and self.dist.is_main), leave=False)
        for batch in bar:
            self._plan_schedule(run_start)
            self.optimizer.zero_grad(set_to_none=True)
            loss_sum, units = forward_backward(self.ddp_model, batch, self.device, self.amp_dtype,
                                               self.scaler, tcfg.ctc_backend, getattr(self.family, "loss", None))
            if self.scaler is None:   # with a GradScaler an overflow is a skipped step, not an error
                check_finite_loss(loss_sum, f"the training loss at step {self.state.step + 1} "
                                  f"(utterances {', '.join(batch.utt_ids[:3])}{'...' if len(batch.utt_ids) > 3 else ''})")
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.scheduler.step()
            self.state.step += 1
            self.state.batch_in_epoch += 1
            interval_loss += loss_sum
            interval_units += units
            bar.set_postfix(loss=f"{loss_sum / max(units, 1):.3f}")
            if self.state.step % tcfg.log_every == 0:
                totals = all_reduce_sum(torch.tensor([interval_loss, float(interval_units)], dtype=torch.float64))
                self._log_row(train_loss=round(float(totals[0] / max(totals[1], 1)), 5),
                              elapsed_s=round(self.state.elapsed + time.time() - run_start, 1))
                interval_loss, interval_units = 0.0, 0
            if self.state.step % tcfg.checkpoint_every == 0:
                self._checkpoint(run_start)
            if self.opts.stop_after_steps is not None and self.state.step >= self.opts.stop_after_steps:
                return "stopped"
            if tcfg.max_steps and self.state.step >= tcfg.max_steps and self.state.batch_in_epoch < len(batches):
                self._checkpoint(run_start)   # the run ends inside this epoch; a rerun goes to the final model
                return "steps"
            if self._out_of_time(run_start):
                self._checkpoint(run_start)
                return "time"
        return "done"

    def _plan_schedule(self, run_start: float, replan: bool = False) -> None:
        """schedule.span budget: after probe_steps of this run, plan the steps the lr decays over.

        On a CPU budget a cosine over `epochs` would be cut while the lr is still high; this
        spans what max_minutes allows at the measured speed instead (at most `epochs`). Each
        epoch end (`replan`) plans again from the speed so far, checkpoints and dev passes
        included, which the probe's first steps do not see. The plan is kept in the
        checkpoint, so a resumed run follows it.
        """
        sched, budget = self.cfg.schedule, self.cfg.training.max_minutes
        if sched.span != "budget" or budget <= 0 or (self.state.planned_steps and not replan):
            return
        if self._run_start_step is None:
            self._run_start_step = self.state.step
        done = self.state.step - self._run_start_step
        if done < sched.probe_steps or (replan and not self.state.planned_steps):
            return
        seconds = all_reduce_sum(torch.tensor(time.time() - run_start, dtype=torch.float64)).item()
        per_step = seconds / self.dist.world_size / done
        remaining = budget * 60 - self.state.elapsed - (time.time() - run_start)
        self.state.planned_steps = plan_steps(self.state.step, per_step, remaining, self.total_steps,
                                              sched.warmup_steps)
        if self.dist.is_main:
            log.info("schedule%s: %.2f s/step, the lr decays over %d steps (%.1f of %d epochs) in the %.0f-min budget",
                     " (re-planned)" if replan else "", per_step, self.state.planned_steps,
                     self.state.planned_steps / self.steps_per_epoch, self.cfg.training.epochs, budget)

    def _checkpoint(self, run_start: float) -> None:
        saved_elapsed = self.state.elapsed
        self.state.elapsed = saved_elapsed + time.time() - run_start
        self.save_checkpoint()
        self._flush_logs()
        self.state.elapsed = saved_elapsed

    def end_epoch(self, run_start: float) -> None:
        self.state.epoch += 1
        self.state.batch_in_epoch = 0
        if self.dist.is_main:
            dev_loss, dev_cer = evaluate(self.forward_module, self.dev_set, self.dev_batches, self.device,
                                         self.tokenizer.decode, self.amp_dtype, getattr(self.family, "loss", None))
            check_finite_loss(dev_loss, f"the dev loss after epoch {self.state.epoch}", every_rank=False)
            self.state.epoch_results.append({"epoch": self.state.epoch, "step": self.state.step,
                                             "dev_loss": dev_loss, "dev_cer": dev_cer})
            self.state.log_rows.append({"step": self.state.step, "epoch": self.state.epoch,
                                        "lr": round(self.optimizer.param_groups[0]["lr"], 8),
                                        "dev_loss": round(dev_loss, 5), "dev_cer": round(dev_cer, 3),
                                        "elapsed_s": round(self.state.elapsed + time.time() - run_start, 1)})
            log.info("epoch %d step %d: dev loss %.4f, dev CER %.2f%%", self.state.epoch, self.state.step,
                     dev_loss, dev_cer)
        self.save_epoch_weights()
        self._plan_schedule(run_start, replan=True)
        self._checkpoint(run_start)

    def _more_to_train(self) -> bool:
        """Steps left (training.max_steps), else epochs left."""
        tcfg = self.cfg.training
        return self.state.step < tcfg.max_steps if tcfg.max_steps else self.state.epoch < tcfg.epochs

    def run(self) -> dict:
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        self.try_resume()
        if self.dist.is_main:
            log.info("%s: %d parameters, %d train utterances (%d steps/epoch), %d dev", self.opts.model_conf,
                     count_parameters(self.model), len(self.train_entries), self.steps_per_epoch,
                     len(self.dev_entries))
        run_start = time.time()
        stop = None
        while self._more_to_train():
            if self._out_of_time(run_start):  # a rerun after a time stop goes straight to the final model
                stop = "time"
                break
            stop = self.train_epoch(run_start)
            if stop == "stopped":
                return {"stopped_at_step": self.state.step}
            if stop == "done":
                self.end_epoch(run_start)
            else:
                break
        if stop == "time" and self.dist.is_main:
            log.warning("time budget of %.1f min reached at step %d (epoch %d)",
                        self.cfg.training.max_minutes, self.state.step, self.state.epoch + 1)
        self.state.elapsed += time.time() - run_start
        # The weights of a partial last epoch (time or step limit) are a candidate too.
        result = self.finish(partial=stop == "time" or self.state.batch_in_epoch > 0)
        return result

    # ---------------------------------------------------------------- final model
    def finish(self, partial: bool) -> dict:
        """Pick final weights by dev CER and write EXP_DIR/final (rank 0)."""
        summary: dict[str, Any] = {"steps": self.state.step, "epochs": self.state.epoch,
                                   "train_seconds": round(self.state.elapsed, 1)}
        if self.dist.is_main:
            candidates = self._candidates(partial)
            best = min(candidates, key=lambda c: (c[self.select_by], c["rank"]))
            self.model.load_state_dict(best["weights"])
            training = {"source": best["name"], "dev_cer": round(best["dev_cer"], 3),
                        "dev_loss": round(best["dev_loss"], 5), "steps": self.state.step,
                        "epochs_completed": self.state.epoch, "train_seconds": round(self.state.elapsed, 1),
                        "selected_by": self.select_by,
                        "candidates": {c["name"]: round(c[self.select_by], 5) for c in candidates},
                        "model_conf": Path(self.opts.model_conf).name, "seed": self.opts.seed}
            if self.init_source:
                training["initialised_from"] = self.init_source
            subsampling = round(1000 / int(self.model.output_lengths(torch.tensor(1000))))
            config = make_config(self.family.arch, self.model_cfg, self.features_cfg, subsampling, training)
            side_files = getattr(self.family, "model_dir_files", None)   # a family's own side files
            save_model_dir(self.exp_dir / "final", self.model, config, self.opts.lang_dir,
                           self._model_cmvn_path(), self.fbank_path, side_files(self.cfg) if side_files else None)
            self._flush_logs()
            summary.update(training)
            log.info("final model: %s (dev CER %.2f%%) -> %s", best["name"], best["dev_cer"], self.exp_dir / "final")
        if self.dist.world_size > 1:
            dist.barrier()
        return summary

    def _model_cmvn_path(self) -> Path:
        """train/cmvn.json, or for a self-normalising front end an identity one (mean 0, std 1)."""
        if self.family.uses_cmvn:
            return self.cmvn_path
        path = self.exp_dir / "identity_cmvn.json"
        with atomic_write(path) as handle:
            handle.write(json.dumps({"mean": [0.0] * self.n_mels, "std": [1.0] * self.n_mels, "frames": 0,
                                     "identity": True}) + "\n")
        return path

    def _candidates(self, partial: bool) -> list[dict]:
        """Best epoch, average of the last `avg` epochs, and (after a time stop) the last weights."""
        cdir = checkpoint_dir(self.exp_dir)
        results = {r["epoch"]: r for r in self.state.epoch_results}
        candidates = []
        epochs = sorted(e for e in results if (cdir / f"epoch-{e}.pt").is_file())
        if epochs:
            best_epoch = min(epochs, key=lambda e: results[e][self.select_by])
            r = results[best_epoch]
            candidates.append({"name": f"epoch-{best_epoch}", "rank": 1, "dev_cer": r["dev_cer"],
                               "dev_loss": r["dev_loss"],
                               "weights": load_checkpoint(cdir / f"epoch-{best_epoch}.pt")["model"]})
        avg = self.cfg.training.avg
        if avg > 1 and len(epochs) >= 2:
            chosen = epochs[-avg:]
            weights = average_state_dicts([cdir / f"epoch-{e}.pt" for e in chosen])
            candidates.append(self._scored(f"avg-epochs-{chosen[0]}-{chosen[-1]}", 0, weights))
        if partial or not candidates:
            weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            candidates.append(self._scored(f"last-step-{self.state.step}", 2, weights))
        return candidates

    def _scored(self, name: str, rank: int, weights: dict) -> dict:
        saved = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(weights)
        dev_loss, dev_cer = evaluate(self.forward_module, self.dev_set, self.dev_batches, self.device,
                                     self.tokenizer.decode, self.amp_dtype, getattr(self.family, "loss", None))
        self.model.load_state_dict(saved)
        return {"name": name, "rank": rank, "dev_cer": dev_cer, "dev_loss": dev_loss, "weights": weights}


def run_training(opts: RunOptions, tokenizer: Any = None) -> dict:
    return Trainer(opts, tokenizer).run()


# -------------------------------------------------------------------------------- CLI


@click.command("train")
@click.option("--config", "model_conf", required=True, type=click.Path(dir_okay=False),
              help="model config, e.g. conf/model_small.yaml")
@click.option("--train", "train_dir", required=True, help="training data dir (feats.scp, cmvn.json, fbank.yaml)")
@click.option("--dev", "dev_dir", required=True, help="dev data dir (feats.scp)")
@click.option("--lang", "lang_dir", required=True, help="lang dir with tokens.txt")
@click.option("--exp-dir", required=True, help="output dir; a rerun resumes from its latest checkpoint")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="where to train (cuda: one GPU per process under torchrun)")
@click.option("--threads", type=bounded("threads"), default=1, show_default=True,
              help="torch CPU threads of each process")
@click.option("--seed", type=bounded("seed"), default=1, show_default=True,
              help="seed of the initial weights, batch order and augmentation")
@click.option("--max-minutes", type=bounded("max_minutes"), default=None, help="training time budget (overrides the config)")
@click.option("--avg", type=bounded("avg"), default=None, help="epoch checkpoints to average (overrides the config)")
@click.option("--stop-after-steps", type=bounded("stop_after_steps"), default=None,
              help="stop after this global step as if killed (for testing resume)")
@click.option("--no-progress", is_flag=True, help="no tqdm progress bars")
@click.option("--pretrained", default=None,
              help="pretrained checkpoint (overrides the model config's pretrained.checkpoint)")
@click.option("--init-model", default=None,
              help="a trained model dir over the same units whose tensors of the same names and shapes start "
                   "this model (overrides the model config's pretrained.init_model; '' = none)")
@click.option("--cache-dir", default=None,
              help="where cached frozen-block outputs live (default EXP_DIR/cache); files are named by "
                   "their key, so several models may share one dir")
@allow_pipes_option
def train_cmd(model_conf: str, train_dir: str, dev_dir: str, lang_dir: str, exp_dir: str, device: str, threads: int,
              seed: int, max_minutes: float | None, avg: int | None, stop_after_steps: int | None,
              no_progress: bool, pretrained: str | None, init_model: str | None, cache_dir: str | None) -> None:
    """Train an acoustic model (any family: conformer_ctc, whisper_ctc, whisper_hybrid); kill and rerun to resume."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    check_output_dir(exp_dir, {"--train": train_dir, "--dev": dev_dir, "--lang": lang_dir})
    from kocall.device import require_device

    require_device(device)
    opts = RunOptions(model_conf, train_dir, dev_dir, lang_dir, exp_dir, device, threads, seed, max_minutes, avg,
                      stop_after_steps, progress=not no_progress, pretrained=pretrained,
                      init_model=init_model, cache_dir=cache_dir)
    summary = run_training(opts)
    if "stopped_at_step" not in summary and summary.get("source"):
        click.echo(f"{exp_dir}/final: {summary['source']}, dev CER {summary['dev_cer']:.2f}% "
                   f"({summary['steps']} steps, {summary['train_seconds']:.0f} s)")
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
