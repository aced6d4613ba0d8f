"""Whisper-CTC's hooks for the shared trainer (kocall.models.ModelFamily).

* Dims come from the pretrained checkpoint (`pretrained:` in the model YAML), so one YAML
  per size is all a user writes; `pretrained.checkpoint: none` trains from random
  initialisation with the dims given in `model:` (tests, ablations).
* `finetune:` freezes the conv front end and/or the lowest N blocks, and decays the
  learning rate layer by layer downwards (layer_lr_decay ** depth-from-the-top), the
  usual recipe for fine-tuning a pretrained encoder on little data.
* The new layers and the CTC head train at the full lr.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from kocall.errors import KocallError
from kocall.models import decay_groups
from kocall.whisper_ctc.checkpoint import DIM_KEYS, init_from_checkpoint, load_encoder_checkpoint, resolve_checkpoint
from kocall.whisper_ctc.model import ARCH, WhisperCTC, WhisperCTCConfig


def uses_pretrained(cfg: Any) -> bool:
    """False only for an explicit `checkpoint: none` (or false/off); null means "the default places"."""
    value = cfg.pretrained.checkpoint
    if value is None:
        return True
    return value is not False and str(value).strip().lower() not in ("none", "false", "off")


class WhisperFamily:
    arch = ARCH
    uses_cmvn = False   # Whisper's log-mel is normalised by its own (x + 4) / 4
    # Whisper's activations have outlier channels that per-batch int8 activations clip: on
    # shared-ko dev, greedy CRR 68.41 float, 65.89 with dynamic int8 matmuls, 67.91 with int8
    # weights only (per-channel, dequantised at load).
    int8_activations = "float"
    # What a subclass (whisper_hybrid) changes: the dims its checkpoint carries, how it is read,
    # and its config class; model_config and the checkpoint cache below serve both.
    dim_keys: tuple[str, ...] = tuple(DIM_KEYS)
    config_class: type = WhisperCTCConfig
    model_class: type = WhisperCTC

    def __init__(self) -> None:
        self._loaded: dict[str, tuple[Path, dict, dict]] = {}

    def checkpoint_path(self, cfg: Any) -> Path:
        return resolve_checkpoint(cfg.pretrained.checkpoint, cfg.pretrained.size)

    def read_checkpoint(self, path: Path) -> tuple[dict, dict]:
        return load_encoder_checkpoint(path)

    def _checkpoint(self, cfg: Any) -> tuple[Path, dict, dict]:
        path = self.checkpoint_path(cfg)
        key = str(path.resolve())
        if key not in self._loaded:   # read once per process (dims, then weights)
            dims, state = self.read_checkpoint(path)
            self._loaded = {key: (path, dims, state)}
        return self._loaded[key]

    def extra_config(self, cfg: Any, values: dict) -> None:
        """Complete `values` (the model config being built) with what the family adds."""

    def model_config(self, cfg: Any, n_mels: int, vocab_size: int) -> dict:
        values = dict(cfg.model, vocab_size=vocab_size)
        if uses_pretrained(cfg):
            path, dims, _ = self._checkpoint(cfg)
            clash = {k: values[k] for k in self.dim_keys if k in values and values[k] != dims[k]}
            if clash:
                raise KocallError(f"model config: {clash} differ from the checkpoint '{path}' dims {dims}")
            values.update(dims)
            if dims["n_mels"] != n_mels:
                raise KocallError(f"checkpoint '{path}' expects {dims['n_mels']} mel bands but the features have "
                                  f"{n_mels}: use a front end with n_mels: {dims['n_mels']} (fbank.yaml)")
        else:
            values.setdefault("n_mels", n_mels)
        self.extra_config(cfg, values)
        config = self.config_class.from_dict(values)
        if config.n_mels != n_mels:
            raise KocallError(f"model config: n_mels {config.n_mels} but the features have {n_mels}")
        return config.to_dict()

    def build(self, model_cfg: dict) -> nn.Module:
        return self.model_class(self.config_class.from_dict(dict(model_cfg)))

    def initialise(self, model: nn.Module, cfg: Any) -> str | None:
        if not uses_pretrained(cfg):
            return None
        path, _, state = self._checkpoint(cfg)
        copied = init_from_checkpoint(model, state, path)
        self._loaded = {}   # the weights now live in the model
        return f"initialised {copied} encoder tensors from '{path}'"

    def param_groups(self, model: nn.Module, cfg: Any) -> list[dict]:
        ft, lr, wd = cfg.finetune, cfg.optim.lr, cfg.optim.weight_decay
        encoder = model.encoder
        n_blocks = len(encoder.blocks)
        if not 0 <= ft.freeze_blocks <= n_blocks:
            raise KocallError(f"finetune.freeze_blocks {ft.freeze_blocks} is not in [0, {n_blocks}]")
        front = [encoder.conv1, encoder.conv2]
        frozen = (front if ft.freeze_frontend or ft.freeze_blocks else []) + list(encoder.blocks[:ft.freeze_blocks])
        for module in frozen:
            module.requires_grad_(False)
        groups = decay_groups([(n, p) for n, p in model.named_parameters() if not n.startswith("encoder.")], lr, wd)
        groups += decay_groups(encoder.ln_post.named_parameters(), lr, wd)
        for index in range(ft.freeze_blocks, n_blocks):   # block n_blocks-1 gets lr * decay
            scale = ft.layer_lr_decay ** (n_blocks - index)
            groups += decay_groups(encoder.blocks[index].named_parameters(), lr * scale, wd)
        if not (ft.freeze_frontend or ft.freeze_blocks):
            scale = ft.layer_lr_decay ** (n_blocks + 1)
            for conv in front:
                groups += decay_groups(conv.named_parameters(), lr * scale, wd)
        return groups

    def cached_blocks(self, cfg: Any) -> int | None:
        ft = cfg.finetune
        if not ft.cache_frozen:
            return None
        if not (ft.freeze_frontend or ft.freeze_blocks):
            raise KocallError("finetune.cache_frozen needs a frozen front end (freeze_frontend or freeze_blocks)")
        return ft.freeze_blocks

    def max_input_seconds(self, config: dict) -> float | None:
        model = config.get("model", {})
        if "n_audio_ctx" not in model:
            return None
        shift_ms = float(config.get("features", {}).get("frame_shift_ms", 10.0))
        return 2 * int(model["n_audio_ctx"]) * shift_ms / 1000   # conv2 halves the frame rate


FAMILY = WhisperFamily()
