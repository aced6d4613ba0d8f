"""CTC prefix beam search with n-gram LM shallow fusion (reference, CPU twin, CUDA kernel).

Conventions shared by every implementation (`reference.py` is the specification):

* Inputs are natural-log posteriors `(B, T, V)` float32 with per-utterance lengths;
  token 0 is the CTC blank.
* Per frame, the candidate (non-blank) tokens are the `token_topk` best tokens whose
  log-prob is >= `token_min_logp`, ordered by (log-prob desc, id asc). Only these extend a
  prefix; staying on a prefix (through blank, or by repeating its last token) is always scored.
* Standard prefix recursion: `p_b` (ends in blank) and `p_nb` (ends in a token). A repeated
  token extends a prefix only from its blank-ending path; from the token-ending path it
  stays on the same prefix. Equal prefixes are merged (log-add); prefixes are identified by
  a 64-bit rolling hash plus their length.
* Score used for ranking:
      score = am + lm_weight * ln(10) * lm10 + word_bonus * n_bonus
  `am` is the acoustic log-prob of the prefix (ln, log-add of p_b and p_nb); `lm10` is the
  summed n-gram log10 probability (KenLM/ARPA units), so `ln(10)` converts it to ln before
  weighting; `n_bonus` counts emitted non-blank tokens: every token when `bonus_token < 0`
  (default: a per-unit insertion bonus, the usual choice for a syllable LM), else only
  occurrences of `bonus_token` (e.g. the `▁` id: a per-word bonus). The CLI calls the
  weight `--word-bonus` either way.
* Hotwords (optional `context`, a `context_graph.ContextGraph`): each hypothesis carries
  its context state and bonus; the bonus (ln) is added to the score above, every
  implementation steps the same automaton (see `context_graph` for the rules).
* After the last frame the LM's `</s>` score is added (and the hotword bonus still held by a
  half-said phrase is given back), and the N-best list is ranked by the same score. Ties are broken by prefix hash (ascending), so every implementation
  orders candidates identically.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

LN10 = math.log(10.0)
NEG_INF = float("-inf")
# 64-bit FNV-1a style constants for the rolling prefix hash: h' = h * MULT + token + 1 (mod 2^64).
HASH_INIT = 14695981039346656037
HASH_MULT = 1099511628211
HASH_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class DecoderConfig:
    beam: int = 16
    token_topk: int = 16          # at most this many extending tokens per frame
    token_min_logp: float = -12.0  # ... each with log-prob >= this (ln)
    lm_weight: float = 0.0        # alpha, applied to the LM score converted to ln
    word_bonus: float = 0.0       # beta, per counted token (see bonus_token)
    bonus_token: int = -1         # -1: every non-blank token counts; else only this id (e.g. ▁)
    nbest: int = 1
    blank_id: int = 0

    def __post_init__(self) -> None:
        if self.beam < 1 or self.token_topk < 1 or self.nbest < 1:
            raise ValueError("beam, token_topk and nbest must be >= 1")
        if self.nbest > self.beam:
            raise ValueError(f"nbest ({self.nbest}) cannot exceed beam ({self.beam})")


@dataclass
class Hypothesis:
    tokens: list[int]
    score: float       # total ranking score (see module docstring)
    am_score: float    # acoustic log-prob (ln)
    lm_score: float    # LM log10 probability, `</s>` included (0 without LM)
    frames: list[int] = field(default_factory=list)  # frame of each token's first emission
    context_score: float = 0.0  # hotword bonus (ln), included in `score`
