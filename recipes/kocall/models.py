"""Model families: the one registry that the shared trainer, the model-dir loader, the int8
exporter and decoding consult, so a new family plugs in without copying any of them.

A family is a module under kocall/<arch>/ with `ARCH`, `build_model(config)` (a config.json-
style dict -> nn.Module whose forward is `(feats, feat_lens) -> (log_probs, out_lens)`) and a
`family.py` defining `FAMILY`, an object with the training hooks below (see ModelFamily).
config.json's "arch" names the family; a dir without one is a Conformer-CTC (the first family).
"""
from __future__ import annotations

import importlib
from dataclasses import asdict, fields
from typing import Any, Protocol

from torch import nn

from kocall.errors import KocallError

DEFAULT_ARCH = "conformer_ctc"
FAMILY_MODULES = {"conformer_ctc": "kocall.conformer_ctc.family", "whisper_ctc": "kocall.whisper_ctc.family",
                  "whisper_hybrid": "kocall.whisper_hybrid.family"}


class ModelFamily(Protocol):
    """What the shared trainer, model-dir loader and decoders ask of a family (kocall.trainer.Trainer)."""

    arch: str
    uses_cmvn: bool   # False: the front end normalises itself; the model dir gets an identity cmvn.json
    int8_activations: str   # int8 export's default (kocall.export): "dynamic" int8 matmuls, "float"
                            # (int8 weights dequantised at load) where activations have outliers, or
                            # "dynamic-decoder" (int8 matmuls in the attention decoder only)

    def model_config(self, cfg: Any, n_mels: int, vocab_size: int) -> dict:
        """The complete `model` dict of config.json (hyper-parameters + data dims + pretrained dims)."""

    def build(self, model_cfg: dict) -> nn.Module: ...

    def initialise(self, model: nn.Module, cfg: Any) -> str | None:
        """Load pretrained weights into a fresh model; returns a line saying from where (or None)."""

    def param_groups(self, model: nn.Module, cfg: Any) -> list[dict]:
        """AdamW parameter groups (frozen parameters left out, per-group lr and weight decay)."""

    def cached_blocks(self, cfg: Any) -> int | None:
        """None, or K: the frozen front end and blocks [0, K) are computed once per cached view
        (`model.frozen_front`) and training runs `model.forward_from(hidden, lens, K)`."""

    def max_input_seconds(self, config: dict) -> float | None:
        """The longest input a model dir (its config.json dict) takes; None: no limit of its own."""

    # Optional hooks (looked up with getattr; absent = the default):
    # loss(module, batch, ctc_backend) -> (loss_sum, units): the training loss summed over the
    #   batch and the units it is normalised by (tensors); called by kocall.trainer.forward_backward
    #   under autocast, `module` being what a batch goes through (the model, ForwardFrom or DDP).
    #   Default: CTC over the lang units.
    #   The dev loss the trainer logs is this loss too.
    # select_by: "dev_cer" (default: the CTC greedy CER) or "dev_loss": what picks the final
    #   weights among the best epoch, the average and the last step (a hybrid's decoder is
    #   seen by its loss only).
    # model_dir_files(cfg) -> {name: source path}: side files the family's model dir carries
    #   (copied by save_model_dir, and by the int8 exporter like every side file).
    # export_state(config, state, model_dir) -> (config, state): the float model the int8 exporter
    #   quantises, e.g. whisper_hybrid's decoder vocabulary pruned to what decoding can use.
    #   Default: the model dir's own.


class ModelConfig:
    """from_dict (unknown keys refused, then `validate()`) and to_dict for a family's dataclass config."""

    @classmethod
    def from_dict(cls, values: dict):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KocallError(f"model config: unknown key(s) {unknown}; known: {sorted(known)}")
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        pass

    def to_dict(self) -> dict:
        return asdict(self)


def family(arch: str | None) -> ModelFamily:
    arch = arch or DEFAULT_ARCH
    if arch not in FAMILY_MODULES:
        raise KocallError(f"model config: unknown arch '{arch}'; known: {sorted(FAMILY_MODULES)}")
    return importlib.import_module(FAMILY_MODULES[arch]).FAMILY


def arch_of(config: dict) -> str:
    """The family a config.json dict belongs to."""
    arch = config.get("arch", DEFAULT_ARCH) if isinstance(config, dict) else DEFAULT_ARCH
    if arch not in FAMILY_MODULES:
        raise KocallError(f"model config: unknown arch '{arch}'; known: {sorted(FAMILY_MODULES)}")
    return arch


def build_model(config: dict) -> nn.Module:
    """Any family's model from a config.json dict (dispatch on "arch")."""
    return family(arch_of(config)).build(config["model"] if "model" in config else config)


def make_config(arch: str, model_cfg: dict, features: dict, subsampling: int, training: dict | None = None) -> dict:
    """The config.json dict of a float model dir (`subsampling`: input frames per output frame)."""
    return {"arch": arch, "model": dict(model_cfg), "vocab_size": int(model_cfg["vocab_size"]),
            "features": dict(features), "subsampling": int(subsampling), "quantized": False,
            "training": dict(training or {})}


def max_input_seconds(config: dict) -> float | None:
    """The longest input a model dir's network takes (None: no limit of its own)."""
    return family(arch_of(config)).max_input_seconds(config if isinstance(config, dict) else {})


def decay_groups(named_params, lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and norm gains (standard practice)."""
    decay, no_decay = [], []
    for _, param in named_params:
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [g for g in ({"params": decay, "weight_decay": weight_decay, "lr": lr},
                        {"params": no_decay, "weight_decay": 0.0, "lr": lr}) if g["params"]]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
