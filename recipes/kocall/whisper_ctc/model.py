"""Whisper-encoder CTC model: OpenAI Whisper's audio encoder, a few new layers, a CTC head.

    log-mel (B, T, n_mels)  [Whisper's front end: conf/fbank_whisper.yaml]
      --conv1 (k3) GELU, conv2 (k3, stride 2) GELU-->  (B, T/2, d)     50 output frames/s
      + sinusoidal positions, SLICED to the true length (no padding to 30 s)
      --N x pre-LN transformer block [attn_ln, MHSA, mlp_ln, MLP(4d, GELU)]--> ln_post
      --M x new transformer block (randomly initialised, same shape)-->
      --LayerNorm, Linear(vocab)--> log_softmax (B, T/2, V)

The encoder's parameter names are OpenAI's (`encoder.conv1.weight`,
`encoder.blocks.3.attn.query.weight`, ...), so an OpenAI checkpoint's encoder tensors load
by name (`checkpoint.py`). The dims (n_mels, n_audio_state, n_audio_head, n_audio_layer,
n_audio_ctx) are read from the checkpoint and stored in config.json; any Whisper size works.

Whisper was trained on 30-s windows, but its encoder is a plain transformer with absolute
positions: running it on the true length (positions 0..T'-1) costs a fraction of the
compute for a short call-centre query and, once fine-tuned with CTC, works as well. An
input longer than n_audio_ctx output frames (30 s) is refused with a clear message.

Padding is honoured: padded frames are zeroed between the two convolutions (so a valid
frame never sees a neighbour's padding) and masked as attention keys, so the output for an
utterance does not depend on its batch (the DDP and decode tests rely on it).

`forward_from(hidden, lens, start)` runs blocks start.. onwards: the trainer caches the
outputs of frozen lower blocks and trains the rest from there (`train.py`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kocall.errors import KocallError
from kocall.models import ModelConfig

ARCH = "whisper_ctc"


@dataclass
class WhisperCTCConfig(ModelConfig):
    """The `model:` section of conf/model_whisper_*.yaml, completed with the checkpoint's dims."""

    n_mels: int = 80
    vocab_size: int = 0
    n_audio_ctx: int = 1500       # output frames the positional table covers (30 s)
    n_audio_state: int = 512
    n_audio_head: int = 8
    n_audio_layer: int = 6
    extra_layers: int = 0         # new transformer blocks between ln_post and the CTC head
    dropout: float = 0.0          # on the new layers and the head's input (Whisper itself has none)

    def validate(self) -> None:
        if self.n_audio_state % self.n_audio_head:
            raise KocallError(f"model config: n_audio_state {self.n_audio_state} is not divisible by "
                              f"n_audio_head {self.n_audio_head}")
        if self.vocab_size < 2:
            raise KocallError(f"model config: vocab_size {self.vocab_size} (needs blank + at least one unit)")
        if min(self.n_mels, self.n_audio_ctx, self.n_audio_layer) < 1 or self.extra_layers < 0:
            raise KocallError("model config: n_mels, n_audio_ctx and n_audio_layer must be >= 1, "
                              "extra_layers >= 0")


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's positional table (whisper/model.py `sinusoids`): [sin | cos] halves."""
    if channels % 2:
        raise KocallError(f"model config: n_audio_state {channels} must be even (sinusoidal positions)")
    log_increment = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-log_increment * torch.arange(channels // 2, dtype=torch.float32))
    scaled = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


def conv_out_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Frames after conv2 (kernel 3, stride 2, padding 1): ceil(T / 2)."""
    return torch.div(lengths + 1, 2, rounding_mode="floor")


class MultiHeadAttention(nn.Module):
    """Whisper's attention: separate query/key/value/out Linears, no bias on key."""

    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape
        heads = lambda y: y.view(b, t, self.n_head, d // self.n_head).transpose(1, 2)  # noqa: E731
        # Whisper scales q and k by d_head^-0.25 each: the same as SDPA's 1/sqrt(d_head).
        out = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)),
                                             attn_mask=key_mask)
        return self.out(out.transpose(1, 2).reshape(b, t, d))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = nn.LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = nn.LayerNorm(n_state)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_ln(x), key_mask))
        return x + self.drop(self.mlp(self.mlp_ln(x)))


class AudioEncoder(nn.Module):
    """Whisper's AudioEncoder with OpenAI's parameter names, run on the true length."""

    def __init__(self, cfg: WhisperCTCConfig) -> None:
        super().__init__()
        d = cfg.n_audio_state
        self.n_ctx = cfg.n_audio_ctx
        self.conv1 = nn.Conv1d(cfg.n_mels, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        # Not persistent: it is a fixed function of the dims (the loader checks a checkpoint's
        # copy against it), so the model dir does not carry 3 MB of sinusoids.
        self.register_buffer("positional_embedding", sinusoids(cfg.n_audio_ctx, d), persistent=False)
        self.blocks = nn.ModuleList(ResidualAttentionBlock(d, cfg.n_audio_head) for _ in range(cfg.n_audio_layer))
        self.ln_post = nn.LayerNorm(d)

    def front(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, n_mels) -> conv front end + positions: (B, T', d), out_lens."""
        valid = (torch.arange(feats.size(1), device=feats.device)[None, :] < feat_lens[:, None])
        x = F.gelu(self.conv1(feats.transpose(1, 2) * valid[:, None, :].to(feats.dtype)))
        x = x * valid[:, None, :].to(x.dtype)   # padding stays zero for conv2's receptive field
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        out_lens = conv_out_lengths(feat_lens)
        if x.size(1) > self.n_ctx:
            raise KocallError(f"model input: {x.size(1)} encoder frames ({x.size(1) / 50:.1f} s) exceed the "
                              f"encoder's {self.n_ctx} positions ({self.n_ctx / 50:.0f} s); split the audio")
        return x + self.positional_embedding[: x.size(1)].to(x.dtype), out_lens


def key_padding_mask(lens: torch.Tensor, length: int) -> torch.Tensor:
    """(B, 1, 1, T) boolean SDPA mask, True = attend. An empty row keeps key 0 (its output is ignored)."""
    mask = torch.arange(length, device=lens.device)[None, :] < lens[:, None]
    mask[:, 0] = True
    return mask[:, None, None, :]


class WhisperCTC(nn.Module):
    def __init__(self, cfg: WhisperCTCConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = AudioEncoder(cfg)
        d = cfg.n_audio_state
        self.extra = nn.ModuleList(ResidualAttentionBlock(d, cfg.n_audio_head, cfg.dropout)
                                   for _ in range(cfg.extra_layers))
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(d, cfg.vocab_size)

    def output_lengths(self, feat_lens: torch.Tensor) -> torch.Tensor:
        return conv_out_lengths(feat_lens)

    def frozen_front(self, feats: torch.Tensor, feat_lens: torch.Tensor, upto: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """The front end and blocks [0, upto): what the trainer may cache when they are frozen."""
        self._check_input(feats)
        x, lens = self.encoder.front(feats, feat_lens)
        mask = key_padding_mask(lens, x.size(1)) if x.size(0) > 1 else None
        for block in self.encoder.blocks[:upto]:
            x = block(x, mask)
        return x, lens

    def frozen_front_parameters(self, upto: int):
        """(name, parameter) of what `frozen_front(..., upto)` reads: the cache's key hashes these
        (not, say, a decoder's frozen layers, which the cached frames do not depend on)."""
        prefixes = ("encoder.conv1.", "encoder.conv2.", "encoder.positional_embedding",
                    *(f"encoder.blocks.{index}." for index in range(upto)))
        return ((name, param) for name, param in self.named_parameters() if name.startswith(prefixes))

    def encode_from(self, x: torch.Tensor, lens: torch.Tensor, start: int
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encoder blocks start.. and ln_post: Whisper's audio features (B, T', d), and the SDPA key
        mask (None for a batch of one)."""
        mask = key_padding_mask(lens, x.size(1)) if x.size(0) > 1 else None
        for block in self.encoder.blocks[start:]:
            x = block(x, mask)
        return self.encoder.ln_post(x), mask

    def ctc_head(self, audio: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The new layers and the CTC head on the encoder's output: log-probs (B, T', V) float32."""
        x = audio
        for block in self.extra:
            x = block(x, mask)
        logits = self.output(self.drop(self.norm(x)))
        return F.log_softmax(logits.float(), dim=-1)

    def forward_from(self, x: torch.Tensor, lens: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder blocks start.., ln_post, the new layers and the head: (B, T', d) -> log-probs."""
        audio, mask = self.encode_from(x, lens, start)
        return self.ctc_head(audio, mask), lens

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, T, n_mels), feat_lens (B,) -> log_probs (B, ceil(T/2), V), out_lens (B,)."""
        x, lens = self.frozen_front(feats, feat_lens, 0)
        return self.forward_from(x, lens, 0)

    def _check_input(self, feats: torch.Tensor) -> None:
        if feats.dim() != 3 or feats.size(-1) != self.cfg.n_mels:
            raise KocallError(f"model input: expected (batch, frames, {self.cfg.n_mels}) features, "
                              f"got shape {tuple(feats.shape)}")

