"""Conformer-CTC's hooks for the shared trainer (kocall.models.ModelFamily)."""
from __future__ import annotations

from typing import Any

from torch import nn

from kocall.conformer_ctc.model import ARCH, ConformerConfig, ConformerCTC
from kocall.models import decay_groups


class ConformerFamily:
    arch = ARCH
    uses_cmvn = True
    int8_activations = "dynamic"

    def model_config(self, cfg: Any, n_mels: int, vocab_size: int) -> dict:
        return ConformerConfig.from_dict(dict(cfg.model, n_mels=n_mels, vocab_size=vocab_size)).to_dict()

    def build(self, model_cfg: dict) -> nn.Module:
        return ConformerCTC(ConformerConfig.from_dict(dict(model_cfg)))

    def initialise(self, model: nn.Module, cfg: Any) -> str | None:
        return None   # trained from scratch

    def param_groups(self, model: nn.Module, cfg: Any) -> list[dict]:
        return decay_groups(model.named_parameters(), cfg.optim.lr, cfg.optim.weight_decay)

    def cached_blocks(self, cfg: Any) -> int | None:
        return None

    def max_input_seconds(self, config: dict) -> float | None:
        return None   # convolution and relative attention: any length


FAMILY = ConformerFamily()
