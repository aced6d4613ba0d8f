"""Hybrid CTC/attention Whisper's hooks for the shared trainer: whisper_ctc's, plus the decoder.

* Weights and all ten dims come from a FULL Whisper checkpoint (encoder + decoder: OpenAI's
  .pt, e.g. `kocall convert-whisper tools/whisper-base-ct2 tools/whisper-base.pt`, or HF
  safetensors); an encoder-only file is one line saying how to get the full one.
* Whisper's tokenizer (`pretrained.tokenizer`, else tokenizer.json beside the checkpoint,
  else tools/whisper-<size>-ct2/) gives the decoder's targets and is shipped in the model dir
  as whisper_tokenizer.json; its sot sequence and eot are stored in config.json.
* Encoder freezing, block caching and the CTC branch's learning rates are whisper_ctc's; the
  pretrained decoder and ln_post (whose output the decoder reads) train at lr x decoder_lr_scale,
  the whole decoder or (decoder_train: cross_attention) only its cross-attention layers.
* `loss`: ctc_weight x CTC per unit + (1 - ctc_weight) x label-smoothed CE per Whisper token.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kocall.errors import KocallError
from kocall.models import decay_groups
from kocall.paths import REPO_ROOT
from kocall.whisper_ctc.checkpoint import ALL_DIM_KEYS, init_from_checkpoint, load_whisper_checkpoint, resolve_checkpoint
from kocall.whisper_ctc.decoder import load_decoder_state
from kocall.whisper_ctc.family import WhisperFamily, uses_pretrained
from kocall.whisper_ctc.tokenizer import MODEL_DIR_TOKENIZER_FILE, TOKENIZER_FILE, WhisperTokenizer
from kocall.whisper_hybrid.model import (ARCH, WhisperHybrid, WhisperHybridConfig, attention_loss_sum,
                                         teacher_forcing)


def default_full_checkpoints(size: str) -> list[Path]:
    """Where a full Whisper-`size` checkpoint is looked for when the config names none."""
    return [REPO_ROOT / "tools" / f"whisper-{size}.pt", Path.home() / ".cache" / "whisper" / f"{size}.pt"]


def unwrap(module: nn.Module) -> nn.Module:
    """The WhisperHybrid inside DistributedDataParallel and/or the trainer's ForwardFrom."""
    while not isinstance(module, WhisperHybrid):
        inner = getattr(module, "module", None) or getattr(module, "model", None)
        if inner is None:
            raise KocallError(f"whisper_hybrid loss: {type(module).__name__} holds no WhisperHybrid")
        module = inner
    return module


class WhisperHybridFamily(WhisperFamily):
    arch = ARCH
    dim_keys = tuple(ALL_DIM_KEYS)
    config_class = WhisperHybridConfig
    model_class = WhisperHybrid
    select_by = "dev_loss"   # CTC + attention: the CTC greedy CER does not see the decoder
    # int8 matmuls in the decoder alone: its search steps read all its weights for a few rows
    # (memory-bound), int8 reads a quarter of the bytes; the encoder keeps float activations as
    # whisper_ctc's. shared-ko, joint mode, 1 thread (whisper_hybrid/RESULTS.md): search -35 %,
    # CRR within 0.5 of the dequantised-float decoder on dev and both test sets.
    int8_activations = "dynamic-decoder"

    def __init__(self) -> None:
        super().__init__()
        self._tokenizer: WhisperTokenizer | None = None
        self._token_cache: dict[str, list[int]] = {}
        self.last_terms: dict[str, float] = {}   # the last batch's CTC and attention losses (logs, tests)

    def checkpoint_path(self, cfg: Any) -> Path:
        given = cfg.pretrained.checkpoint
        if given:
            return resolve_checkpoint(given, cfg.pretrained.size)
        found = [p for p in default_full_checkpoints(cfg.pretrained.size) if p.is_file()]
        if not found:
            tried = ", ".join(f"'{p}'" for p in default_full_checkpoints(cfg.pretrained.size))
            raise KocallError(f"no full Whisper-{cfg.pretrained.size} checkpoint (encoder + decoder) found "
                              f"(tried {tried}): `kocall convert-whisper tools/whisper-{cfg.pretrained.size}-ct2 "
                              f"tools/whisper-{cfg.pretrained.size}.pt` makes one from a CTranslate2 folder")
        return found[0]

    def read_checkpoint(self, path: Path) -> tuple[dict, dict]:
        return load_whisper_checkpoint(path)

    def tokenizer_path(self, cfg: Any) -> Path:
        """pretrained.tokenizer (a file or a folder), else beside the checkpoint, else tools/whisper-<size>-ct2."""
        given = getattr(cfg.pretrained, "tokenizer", None)
        candidates = [Path(given).expanduser()] if given else []
        if not given and uses_pretrained(cfg) and cfg.pretrained.checkpoint:
            candidates.append(Path(cfg.pretrained.checkpoint).expanduser().parent)
        if not given:
            candidates.append(REPO_ROOT / "tools" / f"whisper-{cfg.pretrained.size}-ct2")
        for candidate in candidates:
            if candidate.is_file():
                return candidate
            for name in (MODEL_DIR_TOKENIZER_FILE, TOKENIZER_FILE):
                if (candidate / name).is_file():
                    return candidate / name
        tried = ", ".join(f"'{c}'" for c in candidates)
        raise KocallError(f"no Whisper tokenizer.json found (tried {tried}): set pretrained.tokenizer to the "
                          f"tokenizer.json of a CTranslate2 / Hugging Face Whisper folder "
                          f"(`bash bench/install_peers.sh whisper` puts one in tools/whisper-base-ct2)")

    def tokenizer(self, cfg: Any) -> WhisperTokenizer:
        if self._tokenizer is None:
            self._tokenizer = WhisperTokenizer(self.tokenizer_path(cfg))
        return self._tokenizer

    def extra_config(self, cfg: Any, values: dict) -> None:
        """The decoder's vocabulary, sot sequence and eot, from Whisper's tokenizer."""
        tokenizer = self.tokenizer(cfg)
        values.setdefault("n_vocab", tokenizer.n_vocab)
        if values["n_vocab"] != tokenizer.n_vocab:
            raise KocallError(f"Whisper tokenizer '{tokenizer.path}' has {tokenizer.n_vocab} tokens but the decoder "
                              f"{values['n_vocab']}: use the tokenizer of the same model")
        values["sot_sequence"] = tokenizer.sot_sequence(values.get("language", "ko"))
        values["eot"] = tokenizer.eot

    def initialise(self, model: nn.Module, cfg: Any) -> str | None:
        if not uses_pretrained(cfg):
            return None
        path, _, state = self._checkpoint(cfg)
        encoder = {k: v for k, v in state.items() if k.startswith("encoder.")}
        copied = init_from_checkpoint(model, encoder, path)
        copied += load_decoder_state(model.decoder, state, str(path))
        self._loaded = {}
        return f"initialised {copied} encoder and decoder tensors from '{path}'"

    def param_groups(self, model: nn.Module, cfg: Any) -> list[dict]:
        slow = list(model.decoder.parameters()) + list(model.encoder.ln_post.parameters())
        slow_ids = {id(p) for p in slow}
        groups = []
        for group in super().param_groups(model, cfg):
            kept = [p for p in group["params"] if id(p) not in slow_ids]
            if kept:
                groups.append(dict(group, params=kept))
        scale = model.cfg.decoder_lr_scale
        if model.cfg.decoder_train == "cross_attention":
            for name, param in model.decoder.named_parameters():
                param.requires_grad_(".cross_attn" in name)
        named = [(n, p) for n, p in model.decoder.named_parameters() if p.requires_grad]
        named += list(model.encoder.ln_post.named_parameters())
        return groups + decay_groups(named, cfg.optim.lr * scale, cfg.optim.weight_decay)

    def whisper_ids(self, text: str) -> list[int]:
        """A normalised transcript in Whisper's tokens (with the leading space Whisper writes)."""
        if text not in self._token_cache:
            if self._tokenizer is None:
                raise KocallError("whisper_hybrid: the Whisper tokenizer is not loaded (model_config first)")
            self._token_cache[text] = self._tokenizer.encode(" " + text.strip())
        return self._token_cache[text]

    def loss(self, module: nn.Module, batch: Any, ctc_backend: str) -> tuple[torch.Tensor, torch.Tensor]:
        from kocall.trainer import ctc_loss_sum

        model = unwrap(module)
        cfg = model.cfg
        ids = [self.whisper_ids(text) for text in batch.texts]
        inputs, targets = teacher_forcing(ids, list(cfg.sot_sequence), cfg.eot, cfg.n_text_ctx, batch.utt_ids,
                                          batch.feats.device)
        log_probs, out_lens, logits = module(batch.feats, batch.feat_lens, decoder_tokens=inputs)
        ctc_sum = ctc_loss_sum(log_probs.float(), out_lens, batch.targets, batch.target_lens, ctc_backend)
        att_sum = attention_loss_sum(logits, targets, cfg.label_smoothing)
        units = batch.target_lens.sum()
        tokens = (targets != -100).sum()
        ctc, att = ctc_sum / units.clamp(min=1), att_sum / tokens.clamp(min=1)
        self.last_terms = {"ctc": float(ctc.detach()), "attention": float(att.detach())}
        combined = cfg.ctc_weight * ctc + (1.0 - cfg.ctc_weight) * att
        return combined * units, units   # the trainer divides by the (global) units

    def model_dir_files(self, cfg: Any) -> dict[str, Path]:
        return {MODEL_DIR_TOKENIZER_FILE: self.tokenizer_path(cfg)}

    def export_state(self, config: dict, state: dict[str, torch.Tensor], model_dir: Path
                     ) -> tuple[dict, dict[str, torch.Tensor]]:
        """The int8 export's model: the decoder's vocabulary pruned to the tokens the rescore and
        joint modes can use with this model's units (kocall.joint_decode.searchable_tokens: their
        softmax runs over exactly those) plus the prompt. Whisper base with jamo units keeps about
        4 k of 51,865 rows: 24 MB less at int8, the same decoding."""
        import copy

        from kocall.joint_decode import UnitMapper, searchable_tokens
        from kocall.lang import Tokenizer

        model_cfg = config["model"]
        if model_cfg.get("vocab_ids"):
            return config, state
        tokenizer = WhisperTokenizer.from_dir(model_dir)
        mapper = UnitMapper(Tokenizer.from_lang_dir(model_dir), tokenizer.token_bytes)
        kept = set(searchable_tokens(tokenizer, mapper).tolist()) | set(model_cfg["sot_sequence"]) | {model_cfg["eot"]}
        vocab_ids = sorted(int(t) for t in kept)
        pruned = copy.deepcopy(config)
        pruned["model"]["vocab_ids"] = vocab_ids
        key = "decoder.token_embedding.weight"
        return pruned, {**state, key: state[key].index_select(0, torch.tensor(vocab_ids)).clone()}


FAMILY = WhisperHybridFamily()
