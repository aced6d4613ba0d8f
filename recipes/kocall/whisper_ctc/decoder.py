"""Whisper's text decoder with OpenAI's parameter names, run on the true-length audio.

    tokens (B, U) --token_embedding + positional_embedding[offset:offset+U]-->
      --N x block [attn_ln, causal self-attention, cross_attn_ln, cross-attention over the
                   audio features, mlp_ln, MLP(4d, GELU)]--> ln --> x @ token_embedding.T
      --> logits (B, U, n_vocab), float32 (a pruned vocabulary: see TextDecoder)

As a submodule named `decoder`, its tensors are `decoder.token_embedding.weight`,
`decoder.positional_embedding`, `decoder.blocks.N.{attn,cross_attn}.{query,key,value,out}.*`
(the key has no bias), `decoder.blocks.N.{attn_ln,cross_attn_ln,mlp_ln}.*`,
`decoder.blocks.N.mlp.{0,2}.*` and `decoder.ln.*`: an OpenAI checkpoint's decoder loads by
name (`load_decoder_state`).

`audio_features` is the encoder's ln_post output on the TRUE length (Whisper pads to 30 s;
we do not), with `audio_mask` (True = a valid frame) for a batch of different lengths.

Incremental decoding (beam search) keeps keys and values in `kv_cache`, a plain dict of
tensors whose first dimension is the batch row:
    "blocks.{i}.attn.key" / ".attn.value"              (B, tokens so far, d)  self-attention
    "blocks.{i}.cross_attn.key" / ".cross_attn.value"  (B, T, d)  computed on the first call
    "audio_mask"                                       (B, T)     when one was given
Pass an empty dict and the whole prefix (the sot sequence) first, then one new token per row
per call; positions continue from the cached length. After pruning, `reorder_cache(cache,
rows)` keeps/duplicates rows (index_select on dim 0) of every entry.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kocall.errors import KocallError
from kocall.whisper_ctc.model import MultiHeadAttention

DECODER_DIM_KEYS = ("n_vocab", "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer")
KVCache = dict[str, torch.Tensor]


def decoder_dims(dims: Mapping[str, Any] | Any) -> dict[str, int]:
    """The five decoder dims from a dict or an object with those attributes (whisper's ModelDimensions)."""
    get = dims.get if isinstance(dims, Mapping) else (lambda key: getattr(dims, key, None))
    values = {key: get(key) for key in DECODER_DIM_KEYS}
    bad = [key for key, value in values.items() if not isinstance(value, int) or isinstance(value, bool) or value < 1]
    if bad:
        raise KocallError(f"decoder dims: {bad} missing or not positive integers (got {values})")
    if values["n_text_state"] % values["n_text_head"]:
        raise KocallError(f"decoder dims: n_text_state {values['n_text_state']} is not divisible by "
                          f"n_text_head {values['n_text_head']}")
    return values


class Attention(MultiHeadAttention):
    """Whisper's MultiHeadAttention (the encoder's layers: query/key/value/out Linears, no key
    bias), read through keys and values the decoder caches."""

    def _heads(self, y: torch.Tensor) -> torch.Tensor:
        b, t, d = y.shape
        return y.view(b, t, self.n_head, d // self.n_head).transpose(1, 2)

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        b, u, d = x.shape
        # Whisper scales q and k by d_head^-0.25 each: the same as SDPA's 1/sqrt(d_head).
        out = F.scaled_dot_product_attention(self._heads(self.query(x)), self._heads(keys), self._heads(values),
                                             attn_mask=mask)
        return self.out(out.transpose(1, 2).reshape(b, u, d))


class DecoderBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = Attention(n_state, n_head)
        self.attn_ln = nn.LayerNorm(n_state)
        self.cross_attn = Attention(n_state, n_head)
        self.cross_attn_ln = nn.LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = nn.LayerNorm(n_state)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, audio: torch.Tensor, self_mask: torch.Tensor | None,
                audio_mask: torch.Tensor | None, cache: KVCache | None, name: str) -> torch.Tensor:
        h = self.attn_ln(x)
        keys, values = self.attn.key(h), self.attn.value(h)
        if cache is not None:
            if f"{name}.attn.key" in cache:
                keys = torch.cat([cache[f"{name}.attn.key"], keys], dim=1)
                values = torch.cat([cache[f"{name}.attn.value"], values], dim=1)
            cache[f"{name}.attn.key"], cache[f"{name}.attn.value"] = keys, values
        x = x + self.drop(self.attn(h, keys, values, self_mask))
        if cache is not None and f"{name}.cross_attn.key" in cache:
            audio_keys, audio_values = cache[f"{name}.cross_attn.key"], cache[f"{name}.cross_attn.value"]
        else:
            audio_keys, audio_values = self.cross_attn.key(audio), self.cross_attn.value(audio)
            if cache is not None:
                cache[f"{name}.cross_attn.key"], cache[f"{name}.cross_attn.value"] = audio_keys, audio_values
        x = x + self.drop(self.cross_attn(self.cross_attn_ln(x), audio_keys, audio_values, audio_mask))
        return x + self.drop(self.mlp(self.mlp_ln(x)))


def tree_attention(parents: Sequence[int], offset: int, device: torch.device | str = "cpu"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions (U,), self-attention mask (U, offset + U), True = may attend) of U tree tokens
    after `offset` cached ones: token i sits at offset + its depth and sees the cache, its
    ancestors and itself."""
    n = len(parents)
    depth = [0] * n
    mask = torch.zeros(n, offset + n, dtype=torch.bool)
    mask[:, :offset] = True
    for i, parent in enumerate(parents):
        parent = int(parent)
        if not -1 <= parent < i:
            raise KocallError(f"decoder tree: token {i} has parent {parent}; a parent is -1 or an earlier token")
        if parent >= 0:
            depth[i] = depth[parent] + 1
            mask[i, offset:] = mask[parent, offset:]
        mask[i, offset + i] = True
    return torch.tensor(depth, dtype=torch.long, device=device) + offset, mask.to(device)


def check_vocab_ids(vocab_ids: Sequence[int], n_vocab: int) -> list[int]:
    """A pruned vocabulary: strictly increasing token ids below n_vocab (one line otherwise)."""
    ids = [int(t) for t in vocab_ids]
    if not ids or any(not 0 <= t < n_vocab for t in ids) or any(a >= b for a, b in zip(ids, ids[1:])):
        raise KocallError(f"decoder vocab_ids: need strictly increasing token ids in 0..{n_vocab - 1}, got "
                          f"{len(ids)} ids from {ids[:1]} to {ids[-1:]}")
    return ids


class TextDecoder(nn.Module):
    """Whisper's TextDecoder. `dims`: n_vocab, n_text_ctx, n_text_state, n_text_head, n_text_layer.

    `vocab_ids` (a pruned vocabulary, e.g. of an int8 export: kocall.whisper_hybrid.family): the
    token embedding holds only those tokens' rows, row i being token vocab_ids[i]. Token ids in
    and out stay Whisper's: inputs are mapped to rows, full-vocabulary logits are -inf for the
    tokens left out, and `output_embedding(ids)` gives the rows of a search's subset.
    """

    def __init__(self, dims: Mapping[str, Any] | Any, dropout: float = 0.0,
                 vocab_ids: Sequence[int] | None = None) -> None:
        super().__init__()
        self.dims = decoder_dims(dims)
        d, n_ctx = self.dims["n_text_state"], self.dims["n_text_ctx"]
        self.n_ctx = n_ctx
        ids = row_of = None   # row_of: token id -> embedding row, -1 = pruned away
        if vocab_ids:
            ids = torch.tensor(check_vocab_ids(vocab_ids, self.dims["n_vocab"]), dtype=torch.long)
            row_of = torch.full((self.dims["n_vocab"],), -1, dtype=torch.long)
            row_of[ids] = torch.arange(len(ids))
        # Not in the state dict: they follow from config.json's vocab_ids.
        self.register_buffer("vocab_ids", ids, persistent=False)
        self.register_buffer("row_of", row_of, persistent=False)
        n_rows = self.dims["n_vocab"] if self.vocab_ids is None else len(self.vocab_ids)
        self.token_embedding = nn.Embedding(n_rows, d)
        self.positional_embedding = nn.Parameter(torch.zeros(n_ctx, d))
        self.blocks = nn.ModuleList(DecoderBlock(d, self.dims["n_text_head"], dropout)
                                    for _ in range(self.dims["n_text_layer"]))
        self.ln = nn.LayerNorm(d)
        nn.init.normal_(self.positional_embedding, std=0.01)

    def rows(self, token_ids: torch.Tensor) -> torch.Tensor:
        """The embedding rows of Whisper token ids (the ids themselves without a pruned vocabulary)."""
        if self.row_of is None:
            return token_ids
        rows = self.row_of[token_ids]   # a buffer: on the module's device, as the tokens are
        if bool((rows < 0).any()):
            missing = int(token_ids[rows < 0][0])
            raise KocallError(f"decoder: token {missing} is not in this decoder's pruned vocabulary "
                              f"({len(self.vocab_ids)} of {self.dims['n_vocab']} tokens kept)")
        return rows

    def output_embedding(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(N, d): the output projection's rows for these Whisper token ids (`forward`'s output_rows)."""
        return self.token_embedding.weight.index_select(0, self.rows(token_ids))

    @staticmethod
    def cached_length(kv_cache: KVCache | None) -> int:
        """Tokens already in the cache (the position of the next token)."""
        if not kv_cache or "blocks.0.attn.key" not in kv_cache:
            return 0
        return int(kv_cache["blocks.0.attn.key"].shape[1])

    def forward(self, tokens: torch.Tensor, audio_features: torch.Tensor, kv_cache: KVCache | None = None,
                audio_mask: torch.Tensor | None = None, output_rows: torch.Tensor | None = None,
                parents: Sequence[int] | None = None) -> torch.Tensor:
        """tokens (B, U) int64, audio_features (B, T, d) -> logits (B, U, n_vocab) float32.

        Without a cache the tokens are whole sequences (teacher forcing; right padding does not
        change the earlier positions' logits). With a dict, they continue what it holds and the
        dict is updated in place; audio_mask is stored on the first call and reused.
        output_rows (N, d): the output projection's rows (default: the whole token embedding); a
        search over a subset of the vocabulary passes `token_embedding.weight[ids]` and gets
        logits (B, U, N) for those ids, without the cost of the other rows.
        parents (U,): the tokens form a tree (a prefix trie of hypotheses, as SpecInfer's and
        Medusa's tree attention): token i follows token parents[i], or what the cache holds when
        parents[i] is -1 (a parent comes before its children). Each token sees the cache and its
        own ancestors, at the position of its depth, so its logits are those of its path decoded
        alone: many hypotheses with shared prefixes in one pass, each shared token computed once.
        The cache is read, not extended (a tree is no single sequence to continue).
        """
        if tokens.dim() != 2 or audio_features.dim() != 3 or tokens.size(0) != audio_features.size(0):
            raise KocallError(f"decoder input: tokens (B, U) and audio features (B, T, d) with the same B, got "
                              f"{tuple(tokens.shape)} and {tuple(audio_features.shape)}")
        if audio_features.size(-1) != self.dims["n_text_state"]:
            raise KocallError(f"decoder input: audio features of width {audio_features.size(-1)}, the decoder "
                              f"expects {self.dims['n_text_state']}")
        offset = self.cached_length(kv_cache)
        u = tokens.size(1)
        if parents is None and offset + u > self.n_ctx:
            raise KocallError(f"decoder input: {offset + u} tokens exceed the decoder's {self.n_ctx} positions")
        if kv_cache is not None:
            if audio_mask is None:
                audio_mask = kv_cache.get("audio_mask")
            elif "audio_mask" not in kv_cache:
                kv_cache["audio_mask"] = audio_mask
        if parents is not None:
            if u != len(parents):
                raise KocallError(f"decoder input: {u} tokens and {len(parents)} parents")
            positions, self_mask = tree_attention(parents, offset, tokens.device)
            if int(positions.max()) + 1 > self.n_ctx:
                raise KocallError(f"decoder input: a path of {int(positions.max()) + 1} tokens (cache included) "
                                  f"exceeds the decoder's {self.n_ctx} positions")
            kv_cache = dict(kv_cache) if kv_cache is not None else None   # read, not extended
        else:
            positions = torch.arange(offset, offset + u, device=tokens.device)
            self_mask = None
            if u > 1:   # query i (position offset+i) sees keys 0..offset+i
                key_pos = torch.arange(offset + u, device=tokens.device)
                self_mask = key_pos[None, :] <= positions[:, None]
        x = self.token_embedding(self.rows(tokens)) + self.positional_embedding[positions]
        x = x.to(audio_features.dtype)
        cross_mask = None
        if audio_mask is not None:
            if audio_mask.shape != audio_features.shape[:2]:
                raise KocallError(f"decoder input: audio_mask {tuple(audio_mask.shape)} does not match the "
                                  f"audio features {tuple(audio_features.shape[:2])}")
            cross_mask = audio_mask.bool().clone()
            cross_mask[:, 0] = True   # an empty row keeps frame 0 (its output is ignored), never NaN
            cross_mask = cross_mask[:, None, None, :]
        for index, block in enumerate(self.blocks):
            x = block(x, audio_features, self_mask, cross_mask, kv_cache, f"blocks.{index}")
        x = self.ln(x)
        rows = self.token_embedding.weight if output_rows is None else output_rows
        logits = (x @ rows.to(x.dtype).t()).float()
        if output_rows is None and self.vocab_ids is not None:   # back to Whisper's ids; the rest -inf
            full = logits.new_full((*logits.shape[:-1], self.dims["n_vocab"]), float("-inf"))
            logits = full.index_copy_(-1, self.vocab_ids.to(logits.device), logits)
        return logits

    @staticmethod
    def reorder_cache(kv_cache: KVCache, rows: torch.Tensor) -> KVCache:
        """The cache of rows `rows` (LongTensor, new batch order; rows may repeat): every entry,
        self- and cross-attention alike, index_select-ed on dim 0. Returns a new dict."""
        return {key: value.index_select(0, rows.to(value.device)) for key, value in kv_cache.items()}


def token_log_probs(decoder: TextDecoder, audio_features: torch.Tensor, prefix: list[int],
                    hypotheses: list[list[int]], eot: int | None = None,
                    audio_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Teacher-forced log P(hypothesis [+ eot] | prefix, audio) for each hypothesis: (N,) float32.

    audio_features is (1, T, d) (shared by every hypothesis) or (N, T, d). The prefix is the sot
    sequence (`WhisperTokenizer.sot_sequence()`); with `eot` the end token is scored too.
    """
    if not prefix:
        raise KocallError("decoder scoring: the prefix (sot sequence) is empty")
    if not hypotheses:
        return torch.zeros(0)
    tails = [list(h) + ([eot] if eot is not None else []) for h in hypotheses]
    width = len(prefix) + max(len(t) for t in tails)
    pad = eot if eot is not None else 0
    rows = torch.tensor([prefix + t + [pad] * (width - len(prefix) - len(t)) for t in tails], dtype=torch.long,
                        device=audio_features.device)
    audio = audio_features.expand(len(tails), -1, -1) if audio_features.size(0) == 1 else audio_features
    mask = audio_mask.expand(len(tails), -1) if audio_mask is not None and audio_mask.size(0) == 1 else audio_mask
    logp = torch.log_softmax(decoder(rows[:, :-1], audio, audio_mask=mask), dim=-1)
    picked = logp.gather(-1, rows[:, 1:, None])[..., 0]   # log p of token j+1 given tokens 0..j
    lengths = torch.tensor([len(t) for t in tails], device=picked.device)
    position = torch.arange(picked.size(1), device=picked.device)[None, :]
    scored = (position >= len(prefix) - 1) & (position < len(prefix) - 1 + lengths[:, None])
    return (picked * scored).sum(dim=1)


def load_decoder_state(decoder: TextDecoder, state: Mapping[str, torch.Tensor], source: str) -> int:
    """Copy the `decoder.*` tensors of an OpenAI state dict into `decoder`; every tensor must be
    present with its shape. Returns the number copied; one line naming `source` otherwise."""
    own = decoder.state_dict()
    theirs = {key.removeprefix("decoder."): value for key, value in state.items() if key.startswith("decoder.")}
    if not theirs:
        raise KocallError(f"file '{source}': no Whisper decoder tensors (decoder.*) in it; a full checkpoint "
                          f"(encoder + decoder) is needed (`kocall convert-whisper` makes one from a "
                          f"CTranslate2 folder)")
    missing = sorted(set(own) - set(theirs))
    if missing:
        raise KocallError(f"file '{source}': {len(missing)} decoder tensor(s) missing, e.g. 'decoder.{missing[0]}'")
    unknown = sorted(set(theirs) - set(own))
    if unknown:
        raise KocallError(f"file '{source}': tensor 'decoder.{unknown[0]}' is not part of the Whisper decoder")
    for key, value in own.items():
        if theirs[key].shape != value.shape:
            raise KocallError(f"file '{source}': tensor 'decoder.{key}' has shape {tuple(theirs[key].shape)}, "
                              f"the decoder expects {tuple(value.shape)}")
    with torch.no_grad():
        for key, value in own.items():
            value.copy_(theirs[key].float())
    return len(own)


def load_text_decoder(path: str | os.PathLike) -> TextDecoder:
    """The decoder of a FULL Whisper checkpoint (OpenAI .pt or HF safetensors), in eval mode:
    the zero-shot decoder beside a whisper_ctc model (whose frozen encoder is Whisper's, so
    `model.encode_from(*model.frozen_front(feats, lens, 0), 0)` gives its audio features)."""
    from kocall.whisper_ctc.checkpoint import load_whisper_checkpoint

    dims, state = load_whisper_checkpoint(path)
    decoder = TextDecoder(dims)
    load_decoder_state(decoder, state, str(path))
    return decoder.eval()
