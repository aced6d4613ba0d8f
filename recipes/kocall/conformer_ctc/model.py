"""Conformer-CTC acoustic model.

    feats (B, T, F) --Conv2d subsampling (4x, 6x or 8x)--> (B, T', d)
      + sinusoidal absolute positions
      --N x Conformer block [½FF, MHSA, depthwise conv, ½FF, LayerNorm]-->
      --LayerNorm, Linear(vocab)--> log_softmax (B, T', V)

Padding is honoured everywhere: attention masks padded keys, the conv module zeroes
padded frames before its depthwise convolution, and the subsampling front end has no
time padding, so a valid output frame never sees a padded input frame. The output for
an utterance is therefore independent of what else shares its batch (DDP tests rely on it).

The conv module uses LayerNorm, not BatchNorm: BatchNorm statistics depend on the batch
composition, which would break both padding independence and DDP/single-process equality.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kocall.errors import KocallError
from kocall.models import ModelConfig

ARCH = "conformer_ctc"


@dataclass
class ConformerConfig(ModelConfig):
    """Model hyper-parameters: the `model:` section of conf/model_*.yaml, and config.json."""

    n_mels: int = 80
    vocab_size: int = 0
    d_model: int = 144
    num_layers: int = 6
    num_heads: int = 4
    ff_mult: int = 4
    conv_kernel: int = 15
    subsampling: int = 4          # 4, 6 or 8 (frames per output frame)
    subsampling_channels: int = 64
    dropout: float = 0.1

    def validate(self) -> None:
        if self.subsampling not in (4, 6, 8):
            raise KocallError(f"model config: subsampling must be 4, 6 or 8, not {self.subsampling}")
        if self.d_model % self.num_heads:
            raise KocallError(f"model config: d_model {self.d_model} is not divisible by num_heads {self.num_heads}")
        if self.vocab_size < 2:
            raise KocallError(f"model config: vocab_size {self.vocab_size} (needs blank + at least one unit)")
        if self.conv_kernel % 2 == 0:
            raise KocallError(f"model config: conv_kernel must be odd, not {self.conv_kernel}")


def _conv_out(length: torch.Tensor | int, kernel: int, stride: int):
    return (length - kernel) // stride + 1


# (kernel, stride) of each time/frequency convolution, per subsampling factor.
_SUBSAMPLING_LAYERS: dict[int, list[tuple[int, int]]] = {
    4: [(3, 2), (3, 2)],
    6: [(3, 2), (5, 3)],
    8: [(3, 2), (3, 2), (3, 2)],
}


class ConvSubsampling(nn.Module):
    """Conv2d stack over (time, frequency) with no time padding, then a linear projection."""

    def __init__(self, n_mels: int, d_model: int, factor: int, channels: int) -> None:
        super().__init__()
        self.layers_spec = _SUBSAMPLING_LAYERS[factor]
        convs: list[nn.Module] = []
        in_ch, freq = 1, n_mels
        for kernel, stride in self.layers_spec:
            convs += [nn.Conv2d(in_ch, channels, kernel, stride), nn.ReLU()]
            in_ch, freq = channels, _conv_out(freq, kernel, stride)
        if freq < 1:
            raise KocallError(f"model config: n_mels {n_mels} is too small for {factor}x subsampling")
        self.conv = nn.Sequential(*convs)
        self.out = nn.Linear(channels * freq, d_model)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for kernel, stride in self.layers_spec:
            lengths = _conv_out(lengths, kernel, stride)
        return lengths.clamp(min=0)

    def min_input_frames(self) -> int:
        """Fewest input frames that give one output frame."""
        need = 1
        for kernel, stride in reversed(self.layers_spec):
            need = (need - 1) * stride + kernel
        return need

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(x.unsqueeze(1))                      # (B, C, T', F')
        b, c, t, f = x.shape
        x = self.out(x.transpose(1, 2).reshape(b, t, c * f))
        return x, self.output_lengths(lengths)


class PositionalEncoding(nn.Module):
    """Sinusoidal absolute positions, added after scaling the input by sqrt(d_model)."""

    def __init__(self, d_model: int, dropout: float, max_len: int = 5000) -> None:
        super().__init__()
        self.d_model = d_model
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("pe", self._table(max_len), persistent=False)

    def _table(self, length: int) -> torch.Tensor:
        pos = torch.arange(length, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, self.d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / self.d_model))
        pe = torch.zeros(length, self.d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        return pe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(1) > self.pe.size(0):  # longer than any seen before: extend the table
            self.pe = self._table(x.size(1)).to(self.pe.device)
        return self.dropout(x * math.sqrt(self.d_model) + self.pe[: x.size(1)].to(x.dtype))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, mult: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, d_model * mult), nn.SiLU(),
                                 nn.Dropout(dropout), nn.Linear(d_model * mult, d_model), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv, LayerNorm, SiLU, pointwise conv."""

    def __init__(self, d_model: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.norm_in = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model)
        self.norm_mid = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        x = F.glu(self.pointwise_in(self.norm_in(x)), dim=-1)
        x = x.masked_fill(pad_mask.unsqueeze(-1), 0.0)  # padded frames must not leak into valid ones
        x = self.depthwise(x.transpose(1, 2)).transpose(1, 2)
        x = self.pointwise_out(F.silu(self.norm_mid(x)))
        return self.dropout(x)


class ConformerBlock(nn.Module):
    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.ff1 = FeedForward(d, cfg.ff_mult, cfg.dropout)
        self.norm_att = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, cfg.num_heads, dropout=cfg.dropout, batch_first=True)
        self.drop_att = nn.Dropout(cfg.dropout)
        self.conv = ConvModule(d, cfg.conv_kernel, cfg.dropout)
        self.ff2 = FeedForward(d, cfg.ff_mult, cfg.dropout)
        self.norm_out = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        h = self.norm_att(x)
        h, _ = self.attn(h, h, h, key_padding_mask=pad_mask, need_weights=False)
        x = x + self.drop_att(h)
        x = x + self.conv(x, pad_mask)
        x = x + 0.5 * self.ff2(x)
        return self.norm_out(x)


class ConformerCTC(nn.Module):
    def __init__(self, cfg: ConformerConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.subsampling = ConvSubsampling(cfg.n_mels, cfg.d_model, cfg.subsampling, cfg.subsampling_channels)
        self.pos = PositionalEncoding(cfg.d_model, cfg.dropout)
        self.blocks = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.output = nn.Linear(cfg.d_model, cfg.vocab_size)

    def output_lengths(self, feat_lens: torch.Tensor) -> torch.Tensor:
        return self.subsampling.output_lengths(feat_lens)

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, T, F), feat_lens (B,) -> log_probs (B, T', V), out_lens (B,)."""
        if feats.dim() != 3 or feats.size(-1) != self.cfg.n_mels:
            raise KocallError(f"model input: expected (batch, frames, {self.cfg.n_mels}) features, "
                              f"got shape {tuple(feats.shape)}")
        if feats.size(1) < self.subsampling.min_input_frames():
            # Too short for the front end: pad so every utterance still gets its (zero-length) output.
            feats = F.pad(feats, (0, 0, 0, self.subsampling.min_input_frames() - feats.size(1)))
        x, out_lens = self.subsampling(feats, feat_lens)
        pad_mask = torch.arange(x.size(1), device=x.device).unsqueeze(0) >= out_lens.unsqueeze(1)
        # An all-padded row would make attention softmax NaN; unmask one key for it (its output is ignored).
        pad_mask[:, 0] &= out_lens.ne(0)
        x = self.pos(x)
        for block in self.blocks:
            x = block(x, pad_mask)
        logits = self.output(self.norm(x))
        return F.log_softmax(logits.float(), dim=-1), out_lens


def build_model(config: dict) -> ConformerCTC:
    """Build the model from a config.json-style dict (`{"arch": ..., "model": {...}}`) or a bare model dict."""
    arch = config.get("arch", ARCH) if "model" in config else ARCH
    if arch != ARCH:
        raise KocallError(f"model config: arch '{arch}' is not '{ARCH}'")
    model_cfg = config["model"] if "model" in config else config
    return ConformerCTC(ConformerConfig.from_dict(dict(model_cfg)))

