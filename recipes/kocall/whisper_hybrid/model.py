"""Hybrid CTC/attention Whisper (ESPnet's ctc_weight, WeNet's U2): whisper_ctc + Whisper's decoder.

    log-mel --Whisper encoder (whisper_ctc: frozen blocks cached by the trainer)--> ln_post
        |--> new blocks, LayerNorm, Linear --> CTC log-probs over the lang units (the CTC contract)
        `--> Whisper's TextDecoder (cross-attention on the true-length encoder output)
             --> logits over Whisper's byte-level BPE tokens

The network IS a WhisperCTC (same encoder, same CTC branch and names) with a `decoder`
submodule named as OpenAI names it, so `(feats, feat_lens) -> (log_probs, out_lens)` still
holds and every CTC decoder and export path works unchanged. With `decoder_tokens` the
forward also returns the decoder's logits (training). `encode()` gives what joint decoding
needs from one encoder pass: the decoder's audio features, their mask and the CTC log-probs.

Loss (family.py): ctc_weight x CTC (per lang unit) + (1 - ctc_weight) x label-smoothed cross
entropy (per Whisper token) of the same normalised transcript, teacher-forced after Whisper's
sot sequence (<|startoftranscript|><|ko|><|transcribe|><|notimestamps|>) and ending in <|endoftext|>.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from kocall.errors import KocallError
from kocall.whisper_ctc.decoder import TextDecoder
from kocall.whisper_ctc.model import WhisperCTC, WhisperCTCConfig

ARCH = "whisper_hybrid"
IGNORE = -100   # cross-entropy targets of the prompt and of padding
DECODER_TRAIN = ("all", "cross_attention")


@dataclass
class WhisperHybridConfig(WhisperCTCConfig):
    """whisper_ctc's config + the decoder's dims (from the full checkpoint) and the hybrid loss."""

    n_vocab: int = 51865
    n_text_ctx: int = 448
    n_text_state: int = 512
    n_text_head: int = 8
    n_text_layer: int = 6
    decoder_dropout: float = 0.0
    ctc_weight: float = 0.3          # ESPnet's mtlalpha: CTC's share of the loss
    label_smoothing: float = 0.1
    decoder_lr_scale: float = 0.05   # the pretrained decoder (and ln_post) train at lr x this
    decoder_train: str = "all"       # all | cross_attention: only how the decoder reads the audio adapts;
                                     # its text model (embeddings, self-attention, MLPs) stays Whisper's
    language: str = "ko"
    sot_sequence: list[int] = field(default_factory=list)   # the decoder's prompt (from the tokenizer)
    eot: int = 50257
    vocab_ids: list[int] = field(default_factory=list)   # a pruned decoder vocabulary (int8 export); [] = all

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise KocallError(f"model config: ctc_weight {self.ctc_weight} is not in [0, 1]")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise KocallError(f"model config: label_smoothing {self.label_smoothing} is not in [0, 1)")
        if not 0.0 <= self.decoder_lr_scale <= 1.0:
            raise KocallError(f"model config: decoder_lr_scale {self.decoder_lr_scale} is not in [0, 1]")
        if self.decoder_train not in DECODER_TRAIN:
            raise KocallError(f"model config: decoder_train {self.decoder_train!r} is not one of {', '.join(DECODER_TRAIN)}")
        if not 0.0 <= self.decoder_dropout < 1.0:
            raise KocallError(f"model config: decoder_dropout {self.decoder_dropout} is not in [0, 1)")
        if self.n_text_state != self.n_audio_state:
            raise KocallError(f"model config: n_text_state {self.n_text_state} differs from n_audio_state "
                              f"{self.n_audio_state} (the decoder attends to the encoder's output)")
        if not self.sot_sequence or not all(0 <= t < self.n_vocab for t in self.sot_sequence + [self.eot]):
            raise KocallError(f"model config: sot_sequence {self.sot_sequence} / eot {self.eot} are not "
                              f"token ids below n_vocab {self.n_vocab}")
        missing = sorted(set(self.sot_sequence + [self.eot]) - set(self.vocab_ids)) if self.vocab_ids else []
        if missing:
            raise KocallError(f"model config: vocab_ids leaves out the prompt or eot tokens {missing}")
        if len(self.sot_sequence) >= self.n_text_ctx:
            raise KocallError(f"model config: the sot sequence fills the decoder's {self.n_text_ctx} positions")

    def decoder_dims(self) -> dict[str, int]:
        return {"n_vocab": self.n_vocab, "n_text_ctx": self.n_text_ctx, "n_text_state": self.n_text_state,
                "n_text_head": self.n_text_head, "n_text_layer": self.n_text_layer}


def valid_frames(lens: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T) bool, True = a frame inside the utterance (the decoder's audio_mask)."""
    return torch.arange(length, device=lens.device)[None, :] < lens[:, None]


class WhisperHybrid(WhisperCTC):
    def __init__(self, cfg: WhisperHybridConfig) -> None:
        super().__init__(cfg)
        self.decoder = TextDecoder(cfg.decoder_dims(), dropout=cfg.decoder_dropout, vocab_ids=cfg.vocab_ids or None)

    def forward_from(self, x: torch.Tensor, lens: torch.Tensor, start: int,
                     decoder_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """(log_probs, out_lens), plus the decoder's logits (B, U, n_vocab) when decoder_tokens is given."""
        audio, mask = self.encode_from(x, lens, start)
        log_probs = self.ctc_head(audio, mask)
        if decoder_tokens is None:
            return log_probs, lens
        audio_mask = valid_frames(lens, audio.size(1)) if audio.size(0) > 1 else None
        return log_probs, lens, self.decoder(decoder_tokens, audio, audio_mask=audio_mask)

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor,
                decoder_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """feats (B, T, n_mels), feat_lens (B,) -> log_probs (B, ceil(T/2), V), out_lens (B,)
        [, decoder logits (B, U, n_vocab) for decoder_tokens (B, U)]."""
        x, lens = self.frozen_front(feats, feat_lens, 0)
        return self.forward_from(x, lens, 0, decoder_tokens)

    def encode(self, feats: torch.Tensor, feat_lens: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One encoder pass for joint decoding: (audio_features (B, T', d) for the decoder,
        audio_mask (B, T') True = valid, CTC log_probs (B, T', V), out_lens (B,))."""
        x, lens = self.frozen_front(feats, feat_lens, 0)
        audio, mask = self.encode_from(x, lens, 0)
        return audio, valid_frames(lens, audio.size(1)), self.ctc_head(audio, mask), lens


def teacher_forcing(token_ids: list[list[int]], sot: list[int], eot: int, n_ctx: int, utt_ids: list[str],
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(decoder input (B, U), targets (B, U)) for transcripts already in Whisper ids:
    input = sot + text, target = text + eot at the same positions; the prompt's positions and
    the padding are IGNORE. A transcript the decoder's positions cannot hold is one line."""
    for utt_id, ids in zip(utt_ids, token_ids):
        if len(sot) + len(ids) + 1 > n_ctx:
            raise KocallError(f"utterance '{utt_id}': its transcript is {len(ids)} Whisper tokens, more than the "
                              f"decoder's {n_ctx} positions hold after the prompt; split it or leave it out")
    width = len(sot) + max(len(ids) for ids in token_ids)
    inputs = torch.full((len(token_ids), width), eot, dtype=torch.long)
    targets = torch.full((len(token_ids), width), IGNORE, dtype=torch.long)
    for row, ids in enumerate(token_ids):
        sequence = sot + ids
        inputs[row, :len(sequence)] = torch.tensor(sequence)
        targets[row, len(sot) - 1:len(sequence)] = torch.tensor(ids + [eot])
    return inputs.to(device), targets.to(device)


def attention_loss_sum(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Label-smoothed cross entropy summed over the scored tokens."""
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                           ignore_index=IGNORE, label_smoothing=label_smoothing, reduction="sum")


@torch.no_grad()
def attention_greedy(decoder: TextDecoder, audio: torch.Tensor, audio_mask: torch.Tensor | None, sot: list[int],
                     eot: int, max_tokens: int = 200) -> list[list[int]]:
    """The decoder alone, greedy, batched (the attention-only baseline; no CTC, no LM).
    audio (B, T, d); returns the text tokens of each row (without the prompt and eot)."""
    rows = audio.size(0)
    limit = min(max_tokens, decoder.n_ctx - len(sot))
    cache: dict = {}
    logits = decoder(torch.tensor([sot] * rows, device=audio.device), audio, cache, audio_mask=audio_mask)
    out: list[list[int]] = [[] for _ in range(rows)]
    done = torch.zeros(rows, dtype=torch.bool, device=audio.device)
    for _ in range(limit):
        nxt = logits[:, -1].argmax(dim=-1)
        nxt = torch.where(done, torch.full_like(nxt, eot), nxt)
        done |= nxt == eot
        for row in torch.nonzero(~done).flatten().tolist():
            out[row].append(int(nxt[row]))
        if bool(done.all()):
            break
        logits = decoder(nxt[:, None], audio, cache)
    return out
