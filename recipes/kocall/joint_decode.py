"""Decoding modes beside the CTC beam search: attention rescoring and joint CTC/attention search.

Three modes (`MODES`), one per speed/accuracy point:

* `ctc`: the CTC prefix beam search with the n-gram LM (kocall.decode), the fastest;
* `rescore`: that search's N-best list, each hypothesis scored teacher-forced by an attention
  decoder (Whisper's, one batch per utterance), the best by
      ctc score (am + LM + bonus, as the beam search ranks it) + attention_weight x log P_att;
  the answer is always one of the N-best;
* `joint`: the attention decoder's own beam search (ESPnet's hybrid CTC/attention decoding),
  each hypothesis scored by
      (1 - ctc_weight) x log P_att + ctc_weight x CTC prefix log-prob
      + lm_weight x LM (ln) + char_bonus x characters [+ hotword bonus]
  where the CTC prefix log-prob (kocall_kernels.ctc_prefix) is that of the hypothesis's units
  over every frame, and at the end of sentence the CTC's full probability of them.

Two vocabularies. The decoder proposes Whisper's byte-level BPE tokens; our CTC head, the
n-gram LM and hotwords work in our units (jamo, char). A hypothesis's tokens are joined into
bytes, and only its COMPLETE characters are scored (`UnitMapper`): the longest prefix that is
whole UTF-8 goes through the one normaliser (kocall.text_norm: numbers read out, punctuation
dropped) and `Tokenizer.encode`; a token ending inside a character (a Hangul syllable is three
bytes, often split over two tokens) adds nothing until a later token completes it. Because the
normaliser looks at context (`3` then `3명` reads 삼 then 세 명), the new unit sequence need
not extend the old one: scoring resumes from the longest common prefix, whose CTC, LM and
hotword states every hypothesis keeps per unit. Characters the normaliser drops (punctuation,
Hanja, emoji) are neither scored nor output; a character it keeps that our units cannot spell
(a Latin letter the training text never had) ends the hypothesis (the CTC head can never say
it, and a hypothesis must not dodge the CTC score by writing it). The output text is
`Tokenizer.decode` of the final units, so every mode's hypotheses are scored alike.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from kocall.errors import KocallError
from kocall.text_norm import normalize_text

MODES = ("ctc", "rescore", "joint")
LN10 = math.log(10.0)
# Whisper writes a space before the first word; hypotheses are scored as it would write them.
LEADING_SPACE = " "


def check_number(name: str, value: float, low: float, high: float) -> float:
    """`value` as a float within [low, high]; anything else (nan, inf, out of range) is one line."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise KocallError(f"{name} must be a number in [{low:g}, {high:g}], not {value!r}") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise KocallError(f"{name} must be a finite number in [{low:g}, {high:g}], not {value!r}")
    return number


def check_count(name: str, value: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise KocallError(f"{name} must be a whole number in [{low}, {high}], not {value!r}")
    return int(value)


@dataclass(frozen=True)
class RescoreConfig:
    attention_weight: float = 1.0   # x the decoder's log-prob, added to the CTC+LM score
    nbest: int = 32                 # hypotheses of the CTC+LM search rescored (conf/decode.yaml)

    def __post_init__(self) -> None:
        check_number("attention weight", self.attention_weight, 0.0, 100.0)
        check_count("rescore N-best", self.nbest, 1, 1024)


@dataclass(frozen=True)
class JointConfig:
    ctc_weight: float = 0.3     # lambda: (1 - lambda) x attention + lambda x CTC prefix score
    lm_weight: float = 0.0      # x the n-gram LM's ln score
    char_bonus: float = 0.0     # per output character (spaces not counted)
    beam: int = 8
    pre_beam: int = 12          # attention candidates per hypothesis that CTC and the LM score
    max_tokens: int = 200       # decoder tokens per utterance at most (also capped by frames)

    def __post_init__(self) -> None:
        check_number("CTC weight", self.ctc_weight, 0.0, 1.0)
        check_number("LM weight", self.lm_weight, 0.0, 100.0)
        check_number("character bonus", self.char_bonus, -100.0, 100.0)
        check_count("joint beam", self.beam, 1, 256)
        check_count("joint pre-beam", self.pre_beam, 1, 4096)
        check_count("joint max tokens", self.max_tokens, 1, 100000)


# ------------------------------------------------------------------ Whisper bytes -> our units

def complete_prefix(data: bytes) -> bytes | None:
    """The longest prefix of `data` that is whole UTF-8 characters (a character cut at the end
    waits for the next token); None when `data` holds bytes that no continuation makes UTF-8."""
    try:
        data.decode("utf-8")
        return data
    except UnicodeDecodeError as err:
        if err.reason == "unexpected end of data" and err.end == len(data):
            return data[:err.start]
        return None


def _foreign_letter(ch: str) -> bool:
    """A letter or digit the normaliser would drop rather than read (Hanja, kana, Cyrillic,
    compatibility jamo): writing it must not be a way round the CTC score, so it ends the
    hypothesis. Hangul syllables, ASCII and what folds to ASCII (full-width forms, accents) pass."""
    import unicodedata

    if not ch.isalnum() or ch.isascii() or "\uac00" <= ch <= "\ud7a3":
        return False
    return not unicodedata.normalize("NFKD", ch)[:1].isascii()


def _plain_hangul(text: str) -> bool:
    """Hangul syllables and spaces only: text the normaliser leaves as it is (spaces collapsed)."""
    return all(ch == " " or "\uac00" <= ch <= "\ud7a3" for ch in text)


class UnitMapper:
    """Whisper token bytes -> our unit ids of the complete, normalised characters."""

    def __init__(self, tokenizer: Any, token_bytes: Callable[[int], bytes]) -> None:
        self.tokenizer = tokenizer
        self.token_bytes = token_bytes
        self._cache: dict[bytes, tuple[int, ...] | None] = {}

    def units(self, data: bytes) -> tuple[int, ...] | None:
        """Units of the complete characters of `data`; None when our units cannot spell them
        (or the bytes are not UTF-8)."""
        key = complete_prefix(data)
        if key is None:
            return None
        if key in self._cache:
            return self._cache[key]
        text = key.decode("utf-8", errors="ignore")
        if _plain_hangul(text):
            text = " ".join(text.split())
        elif any(_foreign_letter(ch) for ch in text):
            text = None
        else:
            text = normalize_text(text)
        if text is None:
            hit = None
        else:
            hit = tuple(self.tokenizer.encode(text)) if text else ()
            if hit and self.tokenizer.unk_id in hit:
                hit = None
        if len(self._cache) > 200_000:   # a bound on memory over a long run
            self._cache.clear()
        self._cache[key] = hit
        return hit

    def text(self, units: Sequence[int]) -> str:
        return self.tokenizer.decode(list(units))


def count_chars(tokenizer: Any, units: Sequence[int]) -> int:
    """Output characters of a unit sequence (spaces not counted), the unit of the bonus."""
    return len(tokenizer.decode(list(units)).replace(" ", ""))


HANGUL_LEAD_BYTES = range(0xEA, 0xEE)   # UTF-8 lead bytes of the syllables U+AC00-U+D7A3


def token_can_be_spelt(data: bytes, mapper: UnitMapper) -> bool:
    """Whether a token's bytes can be part of a text our units spell: up to two continuation bytes
    (the end of a syllable), whole characters that normalise to spellable text (or to nothing:
    punctuation), and at most the start of a Hangul syllable at the end."""
    start = 0
    while start < len(data) and 0x80 <= data[start] < 0xC0:
        start += 1
    if start > 2:
        return False
    end = len(data)
    for back in range(1, min(3, len(data) - start) + 1):   # an unfinished character at the end
        byte = data[end - back]
        if byte >= 0xC0:
            if back < (3 if byte >= 0xE0 else 2) or byte >= 0xF0:
                if byte not in HANGUL_LEAD_BYTES:
                    return False
                end -= back
            break
        if byte < 0x80:
            break
    middle = data[start:end]
    try:
        middle.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return mapper.units(middle) is not None


def searchable_tokens(tokenizer: Any, mapper: UnitMapper) -> np.ndarray:
    """Text token ids (below eot) whose bytes can be part of a spellable text, then eot: the joint
    search's vocabulary. Every other token would end its hypothesis (module docstring), so the
    decoder's output projection and softmax skip them (Whisper base: 51,865 rows)."""
    ids = [t for t in range(int(tokenizer.eot)) if token_can_be_spelt(tokenizer.token_bytes(t), mapper)]
    return np.array(ids + [int(tokenizer.eot)], dtype=np.int64)


# ------------------------------------------------------------------ the decoder side

@dataclass
class AttentionSide:
    """What the decoder modes need of an attention model: Whisper's text decoder
    (kocall.whisper_ctc.decoder.TextDecoder: forward(tokens, audio_features, kv_cache,
    audio_mask) and reorder_cache), its tokenizer (sot_sequence, eot, encode, token_bytes)
    and the language of the sot sequence."""
    decoder: Any
    tokenizer: Any
    language: str = "ko"
    _vocab: tuple | None = None   # (the mapper's units, token ids, their output rows) of the last search

    def search_vocabulary(self, mapper: UnitMapper):
        """(token ids (N,) numpy, the decoder's output rows for them (N, d)): the joint search's
        vocabulary (`searchable_tokens`), computed once per unit inventory."""
        import torch

        key = tuple(mapper.tokenizer.symbols)
        if self._vocab is None or self._vocab[0] != key:
            ids = searchable_tokens(self.tokenizer, mapper)
            with torch.no_grad():
                rows = self.decoder.output_embedding(torch.from_numpy(ids)).clone()
            self._vocab = (key, ids, rows)
        return self._vocab[1], self._vocab[2]

    @property
    def sot(self) -> list[int]:
        return list(self.tokenizer.sot_sequence(language=self.language))

    @property
    def eot(self) -> int:
        return int(self.tokenizer.eot)

    def teacher_forced(self, audio_features, texts: Sequence[str], mapper: UnitMapper | None = None) -> np.ndarray:
        """log P_att(text + eot) per text, one batch (texts are normalised; scored as Whisper writes
        them, after a space). With `mapper`, over the joint search's vocabulary (the softmax over the
        tokens that can be spelt, `search_vocabulary`), the sot sequence and the audio's keys and
        values computed once for all texts; without, over the whole vocabulary (token_log_probs)."""
        import torch

        from kocall.whisper_ctc.decoder import token_log_probs

        if not texts:
            return np.zeros(0)
        hyps = [self.tokenizer.encode(LEADING_SPACE + t) if t else [] for t in texts]
        room = int(getattr(self.decoder, "n_ctx", 448)) - len(self.sot) - 1   # positions left for text (+ eot)
        fits = [i for i, h in enumerate(hyps) if len(h) <= room]
        scores = np.full(len(hyps), -np.inf)   # a text the decoder cannot hold cannot be scored by it
        if not fits:
            return scores
        with torch.inference_mode():
            if mapper is None:
                scored = token_log_probs(self.decoder, audio_features, self.sot, [hyps[i] for i in fits], self.eot)
                scores[fits] = scored.double().cpu().numpy()
                return scores
            scores[fits] = self._teacher_forced_shared(audio_features, [hyps[i] for i in fits], mapper)
        return scores

    def _teacher_forced_shared(self, audio_features, hyps: list[list[int]], mapper: UnitMapper) -> np.ndarray:
        import torch

        vocab, rows = self.search_vocabulary(mapper)
        column = np.full(int(vocab.max()) + 1, -1, dtype=np.int64)
        column[vocab] = np.arange(len(vocab))
        device = audio_features.device
        rows = rows.to(device)   # once: every tree of the N-best reads them
        cache: dict = {}
        first = self.decoder(torch.tensor([self.sot], device=device), audio_features[:1], kv_cache=cache,
                             output_rows=rows)[0, -1]                       # (N,): the first token
        # A token outside the search's vocabulary (a lone jamo's bytes) has probability 0 there,
        # and a pruned decoder has no row for it: such a text scores -inf without the decoder.
        scorable = [i for i, h in enumerate(hyps) if all(t < len(column) and column[t] >= 0 for t in h)]
        # The N-best's prefix trie: hypotheses share most of their tokens, and each shared prefix
        # goes through the decoder once (tree attention, TextDecoder's `parents`).
        out = np.full(len(hyps), -np.inf)
        first_logp = torch.log_softmax(first.float(), dim=-1)[None]                     # node -1: after sot
        for group in trie_groups([hyps[i] for i in scorable], MAX_TREE_TOKENS):
            members = [scorable[g] for g in group]
            tokens, parents, paths = prefix_trie([hyps[i] for i in members])
            logp = [first_logp]
            if tokens:
                logits = self.decoder(torch.tensor([tokens], device=device), audio_features[:1], kv_cache=cache,
                                      output_rows=rows, parents=parents)[0]
                logp.append(torch.log_softmax(logits.float(), dim=-1))
            logp_nodes = torch.cat(logp).double().cpu().numpy()                        # (1 + nodes, N)
            for i, path in zip(members, paths):
                # token j is read after node path[j - 1] (the sot sequence for j = 0); eot after the last
                out[i] = sum(logp_nodes[before + 1, column[token]]
                             for before, token in zip([-1] + path, hyps[i] + [self.eot]))
        return out


# The tree's self-attention holds (tokens x tokens) scores per head: a longer N-best goes
# through in several trees of at most this many tokens (8 heads x 1024^2 floats: 32 MB).
MAX_TREE_TOKENS = 1024


def trie_groups(sequences: Sequence[Sequence[int]], limit: int) -> list[list[int]]:
    """Consecutive groups of sequence indices whose prefix trie has at most `limit` nodes (a
    sequence longer than that alone in its group)."""
    groups: list[list[int]] = []
    current: list[int] = []
    for index, seq in enumerate(sequences):
        if current and len(prefix_trie([sequences[j] for j in current] + [seq])[0]) > limit:
            groups.append(current)
            current = []
        current.append(index)
    return groups + [current] if current else groups


def prefix_trie(sequences: Sequence[Sequence[int]]) -> tuple[list[int], list[int], list[list[int]]]:
    """(node tokens, node parents (-1 = the root), each sequence's path of node indices): the
    sequences' prefix trie, a parent before its children; a prefix shared by several sequences is
    one node per token."""
    tokens: list[int] = []
    parents: list[int] = []
    child: dict[tuple[int, int], int] = {}
    paths = []
    for seq in sequences:
        node, path = -1, []
        for token in seq:
            key = (node, int(token))
            if key not in child:
                child[key] = len(tokens)
                tokens.append(int(token))
                parents.append(node)
            node = child[key]
            path.append(node)
        paths.append(path)
    return tokens, parents, paths


# ------------------------------------------------------------------ rescore mode

def rescore_nbest(ctc_scores: Sequence[float], att_scores: Sequence[float], cfg: RescoreConfig) -> int:
    """Index of the N-best entry with the best combined score (ties: the earlier, i.e. CTC's order)."""
    # weight 0 ignores the decoder entirely (0 x -inf, a text it cannot hold, would be nan)
    combined = [c + (cfg.attention_weight * a if cfg.attention_weight else 0.0) for c, a in zip(ctc_scores, att_scores)]
    if not combined:
        raise KocallError("rescore: an empty N-best list")
    return max(range(len(combined)), key=lambda i: (combined[i], -i))


def rescore_utterance(side: AttentionSide, audio_features, nbest: Sequence[tuple[float, str]],
                      cfg: RescoreConfig, mapper: UnitMapper | None = None) -> tuple[int, np.ndarray]:
    """(index of the chosen hypothesis, attention log-probs) for one utterance's N-best
    [(CTC+LM score, text)], scored in one decoder batch (with `mapper`: over the joint search's
    vocabulary, AttentionSide.teacher_forced)."""
    att = side.teacher_forced(audio_features, [text for _, text in nbest], mapper)
    return rescore_nbest([score for score, _ in nbest], att, cfg), att


# ------------------------------------------------------------------ joint mode

@dataclass
class _UnitState:
    """Scores after one more unit of a hypothesis (shared by every hypothesis with that prefix)."""
    r: np.ndarray        # CTC prefix state (T, 2)
    psi: float           # CTC prefix log-prob
    lm_state: int
    lm10: float          # LM log10, cumulative
    ctx_state: int
    ctx: float           # hotword bonus (ln), cumulative


@dataclass
class _Hyp:
    tokens: list[int]                 # decoder tokens after the sot sequence
    data: bytes                       # their bytes
    att: float                        # cumulative attention log-prob
    units: tuple[int, ...]            # our units scored so far (complete characters)
    states: tuple[_UnitState, ...]    # states[i]: after units[:i]; len(units) + 1 entries
    score: float = 0.0
    ended: bool = False


@dataclass
class JointHypothesis:
    text: str
    score: float
    att: float          # attention log-prob (eot included)
    ctc: float          # CTC log-prob of the units (the full probability)
    lm10: float         # LM log10 (`</s>` included; 0 without LM)
    context_score: float = 0.0
    tokens: list[int] = field(default_factory=list)


class JointScorer:
    """CTC prefix + LM + hotword scores of unit sequences for one utterance, batched per step."""

    def __init__(self, log_probs: np.ndarray, blank: int, lm_tables=None, context=None, backend: str = "cpu") -> None:
        if backend == "cuda":
            from kocall_kernels.ctc_prefix import cuda as prefix_impl
        else:
            from kocall_kernels.ctc_prefix import cpu as prefix_impl
        from kocall_kernels.ctc_prefix import cpu as prefix_cpu

        self.impl = prefix_impl
        self.lp = np.ascontiguousarray(log_probs[None], dtype=np.float32)
        self.lens = np.array([log_probs.shape[0]], np.int32)
        self.blank = blank
        self.lm = lm_tables
        self.context = context
        root_r = prefix_cpu.initial_state(self.lp, self.lens, np.zeros(1, np.int32), blank)[0]
        self.root = _UnitState(root_r, 0.0, int(lm_tables.bos_state) if lm_tables is not None else 0, 0.0, 0, 0.0)

    def extend_many(self, jobs: list[tuple[tuple[_UnitState, ...], tuple[int, ...], tuple[int, ...]]]
                    ) -> list[tuple[_UnitState, ...]]:
        """For each (states of a prefix, its units, new units that extend it from `common`...):
        the states after every new unit. All jobs' k-th new units go through one kernel call."""
        out = [list(states) for states, _, _ in jobs]
        units_of = [list(units) for _, units, _ in jobs]
        longest = max((len(new) for _, _, new in jobs), default=0)
        for k in range(longest):
            rows = [j for j, (_, _, new) in enumerate(jobs) if k < len(new)]
            prev = [out[j][-1] for j in rows]
            unit = np.array([jobs[j][2][k] for j in rows], np.int32)
            last = np.array([units_of[j][-1] if units_of[j] else -1 for j in rows], np.int32)
            plen = np.array([len(units_of[j]) for j in rows], np.int32)
            r_prev = np.stack([p.r for p in prev])
            psi, r = self.impl.extend(self.lp, self.lens, np.zeros(len(rows), np.int32), r_prev, last, plen, unit,
                                      self.blank)
            for i, j in enumerate(rows):
                c = int(unit[i])
                p = prev[i]
                lm10, lm_state = (self.lm.score(p.lm_state, c) if self.lm is not None else (0.0, 0))
                bonus, ctx_state = (self.context.step(p.ctx_state, c) if self.context is not None else (0.0, 0))
                out[j].append(_UnitState(r[i], float(psi[i]), int(lm_state), p.lm10 + float(lm10), int(ctx_state),
                                         p.ctx + float(bonus)))
                units_of[j].append(c)
        return [tuple(states) for states in out]

    def final(self, state: _UnitState) -> tuple[float, float, float]:
        """(CTC full log-prob, LM log10 with </s>, hotword bonus after giving back a half-said phrase)."""
        from kocall_kernels.ctc_prefix.cpu import full_log_prob

        ctc = float(full_log_prob(state.r[None], self.lens, np.zeros(1, np.int32))[0])
        lm10 = state.lm10 + (float(self.lm.score(state.lm_state, self.lm.eos_id)[0]) if self.lm is not None else 0.0)
        ctx = state.ctx + (float(self.context.final_bonus(state.ctx_state)) if self.context is not None else 0.0)
        return ctc, lm10, ctx


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def reorder_cache(cache: dict, rows: list[int]) -> dict:
    """The decoder's kv cache for the selected hypotheses `rows`: self-attention entries gathered
    (TextDecoder.reorder_cache's layout); the audio's keys, values and mask are the same for every
    hypothesis of an utterance, so they are row 0 broadcast (a view: no copy per step)."""
    import torch

    index = torch.tensor(rows, dtype=torch.long)
    out = {}
    for key, value in cache.items():
        if ".cross_attn." in key or key == "audio_mask":
            out[key] = value[:1].expand(len(rows), *value.shape[1:])
        else:
            out[key] = value.index_select(0, index.to(value.device))
    return out


@contextlib.contextmanager
def one_torch_thread():
    """torch on one intra-op thread inside: the search's decoder steps multiply a few rows (the
    beam) by each weight matrix, too little work to share; a second thread only adds its
    hand-offs (shared-ko dev, 2 threads: search 29 % slower than on one). The encoder, before
    the search, keeps every thread."""
    import torch

    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


def joint_decode_utterance(side: AttentionSide, audio_features, log_probs: np.ndarray, mapper: UnitMapper,
                           cfg: JointConfig, blank: int = 0, lm_tables=None, context=None, nbest: int = 1,
                           backend: str = "cpu", audio_mask=None) -> list[JointHypothesis]:
    """The decoder's beam search over one utterance, scored jointly (module docstring).

    audio_features: (1, T', d) for the decoder; log_probs: (T, V) CTC log-posteriors of the
    same audio. Returns up to `nbest` ended hypotheses, best first."""
    import torch

    lam = cfg.ctc_weight
    alpha = cfg.lm_weight * LN10 if lm_tables is not None else 0.0
    scorer = JointScorer(log_probs, blank, lm_tables, context, backend)
    eot = side.eot
    sot = side.sot
    n_ctx = int(getattr(side.decoder, "n_ctx", 448))
    max_tokens = max(1, min(cfg.max_tokens, n_ctx - len(sot), int(log_probs.shape[0]) * 4 + 8))
    char_count: dict[tuple[int, ...], int] = {}

    def chars(units: tuple[int, ...]) -> int:
        if units not in char_count:
            char_count[units] = count_chars(mapper.tokenizer, units)
        return char_count[units]

    def total(att: float, units: tuple[int, ...], ctc: float, lm10: float, ctx: float) -> float:
        return (1.0 - lam) * att + lam * ctc + alpha * lm10 + cfg.char_bonus * chars(units) + ctx

    device = audio_features.device
    # The search's vocabulary: text tokens that can be spelt, and eot (column j is token vocab[j]);
    # the softmax is over these alone, as if the others had been ruled out beforehand.
    vocab, out_rows = side.search_vocabulary(mapper)
    out_rows = out_rows.to(device)
    cache: dict = {}
    hyps = [_Hyp([], b"", 0.0, (), (scorer.root,))]
    ended: list[JointHypothesis] = []
    with torch.inference_mode(), one_torch_thread():
        logits = side.decoder(torch.tensor([sot], device=device), audio_features, kv_cache=cache,
                              audio_mask=audio_mask, output_rows=out_rows)[:, -1]
        for step in range(max_tokens):
            att_cols = torch.log_softmax(logits.float(), dim=-1).cpu().numpy().astype(np.float64)
            k = min(cfg.pre_beam, len(vocab))
            top_cols = np.argpartition(-att_cols, k - 1, axis=1)[:, :k]
            top = vocab[top_cols]
            att = {(h, int(vocab[c])): att_cols[h, c] for h in range(len(hyps)) for c in top_cols[h]}
            # candidates: (hyp index, token, new bytes, units)
            cands = []
            jobs: dict[tuple[int, tuple[int, ...]], int] = {}
            job_list = []
            for h, hyp in enumerate(hyps):
                for token in top[h]:
                    token = int(token)
                    if token == eot:
                        cands.append((h, token, hyp.data, hyp.units, None))
                        continue
                    data = hyp.data + mapper.token_bytes(token)
                    units = mapper.units(data)
                    if units is None:
                        continue
                    common = _common(hyp.units, units)
                    key = (h, units)
                    if common == len(units) == len(hyp.units):
                        cands.append((h, token, data, units, -1))   # nothing new to score
                        continue
                    if key not in jobs:
                        jobs[key] = len(job_list)
                        job_list.append((hyp.states[: common + 1], units[:common], units[common:]))
                    cands.append((h, token, data, units, jobs[key]))
            extended = scorer.extend_many(job_list) if job_list else []
            scored = []
            for h, token, data, units, job in cands:
                hyp = hyps[h]
                a = hyp.att + float(att[h, token])   # (hypothesis, token) -> its log-prob
                if job is None:    # end of sentence: the CTC's full probability of the units
                    ctc, lm10, ctx = scorer.final(hyp.states[-1])
                    states = hyp.states
                else:
                    states = hyp.states if job < 0 else extended[job]
                    last = states[-1]
                    ctc, lm10, ctx = last.psi, last.lm10, last.ctx
                s = total(a, units, ctc, lm10, ctx)
                if s == -math.inf or math.isnan(s):
                    continue
                scored.append((s, h, token, data, units, states, a, ctc, lm10, ctx))
            scored.sort(key=lambda c: (-c[0], c[1], c[2]))
            running, rows = [], []
            for s, h, token, data, units, states, a, ctc, lm10, ctx in scored[: cfg.beam]:
                if token == eot:
                    ended.append(JointHypothesis(mapper.text(units), s, a, ctc, lm10, ctx, hyps[h].tokens))
                else:
                    running.append(_Hyp(hyps[h].tokens + [token], data, a, units, states, s))
                    rows.append(h)
            # Stop when nothing runs, enough have ended, or no running hypothesis can still win:
            # without a positive bonus (characters, hotwords) a running score only falls.
            if not running or len(ended) >= cfg.beam:
                break
            if ended and cfg.char_bonus <= 0 and context is None and max(e.score for e in ended) >= max(r.score for r in running):
                break
            hyps = running
            cache = reorder_cache(cache, rows)
            if audio_features.size(0) != len(rows):
                audio_features = audio_features[:1].expand(len(rows), -1, -1)
            last_tokens = torch.tensor([[h.tokens[-1]] for h in hyps], device=device)
            logits = side.decoder(last_tokens, audio_features, kv_cache=cache, output_rows=out_rows)[:, -1]
    if not ended:   # ran out of tokens: end the running hypotheses where they are
        for hyp in hyps:
            ctc, lm10, ctx = scorer.final(hyp.states[-1])
            ended.append(JointHypothesis(mapper.text(hyp.units), total(hyp.att, hyp.units, ctc, lm10, ctx), hyp.att,
                                         ctc, lm10, ctx, hyp.tokens))
    ended.sort(key=lambda e: -e.score)
    return ended[:nbest]


# ------------------------------------------------------------------ model dirs -> the three modes

def quiet_openmp() -> None:
    """Idle OpenMP workers sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE), unless the user
    chose otherwise. numba's parallel kernels (features, CTC search) and torch share libgomp; the
    decoder's many small torch calls ran about five times slower in CPU time beside the spinning
    workers. Read when libgomp loads: call before torch is imported (the CLI imports it lazily)."""
    import os
    import sys

    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@dataclass
class JointModel:
    """A CTC model dir with an attention decoder beside it: `encode(feats)` gives, from one encoder
    pass, the decoder's audio features (1, T', d) and the CTC log-probs (T', V) of one utterance.

    * a `whisper_hybrid` model dir holds both (its own fine-tuned decoder, its tokenizer);
    * a `whisper_ctc` model dir whose Whisper encoder is frozen takes the decoder of a full
      Whisper checkpoint (`attention_checkpoint`, e.g. `kocall convert-whisper` of the
      CTranslate2 folder): the decoder reads the encoder blocks' output through the
      checkpoint's own ln_post, so the CTC model's encoder must be the checkpoint's (checked
      tensor by tensor; a fine-tuned encoder needs a hybrid model)."""
    model: Any
    side: AttentionSide
    ln_post: Any = None   # the checkpoint's final encoder norm (whisper_ctc + checkpoint), else None

    def encode(self, feats: np.ndarray):
        import torch

        x = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))[None]
        lens = torch.tensor([feats.shape[0]])
        with torch.inference_mode():
            if self.ln_post is None:
                audio, _, log_probs, out_lens = self.model.encode(x, lens)
            else:
                n_blocks = len(self.model.encoder.blocks)
                hidden, out_lens = self.model.frozen_front(x, lens, n_blocks)
                audio = self.ln_post(hidden)
                log_probs, out_lens = self.model.forward_from(hidden, out_lens, n_blocks)
        length = int(out_lens[0])
        return audio[:, :length], log_probs[0, :length].float().numpy()


def _checkpoint_tokenizer(checkpoint: Path):
    from kocall.paths import REPO_ROOT
    from kocall.whisper_ctc.tokenizer import WhisperTokenizer

    for folder in (checkpoint.parent, REPO_ROOT / "tools" / f"{checkpoint.stem}-ct2"):
        if (folder / "tokenizer.json").is_file() or (folder / "whisper_tokenizer.json").is_file():
            return WhisperTokenizer.from_dir(folder)
    raise KocallError(f"file '{checkpoint}': no Whisper tokenizer.json beside it nor in "
                      f"'{REPO_ROOT / 'tools' / (checkpoint.stem + '-ct2')}'")


def load_joint_model(model, config: dict, model_dir: str | Path, attention_checkpoint: str | Path | None = None
                     ) -> JointModel:
    """The JointModel of a loaded model dir (see JointModel); one line naming the file otherwise."""
    import torch

    arch = config.get("arch", "conformer_ctc")
    if arch == "whisper_hybrid" and attention_checkpoint is None:
        from kocall.whisper_ctc.tokenizer import WhisperTokenizer

        language = str(config.get("model", {}).get("language", "ko"))
        return JointModel(model, AttentionSide(model.decoder, WhisperTokenizer.from_dir(model_dir), language))
    if arch not in ("whisper_ctc", "whisper_hybrid"):
        raise KocallError(f"model dir '{model_dir}': arch '{arch}' has no Whisper encoder; the rescore and joint "
                          f"modes need a whisper_hybrid model, or a whisper_ctc model and --attention-checkpoint")
    if attention_checkpoint is None:
        raise KocallError(f"model dir '{model_dir}' has no attention decoder: give --attention-checkpoint (a full "
                          f"Whisper checkpoint, e.g. `kocall convert-whisper tools/whisper-base-ct2 tools/whisper-base.pt`)")
    from kocall.whisper_ctc.checkpoint import load_whisper_checkpoint
    from kocall.whisper_ctc.decoder import TextDecoder, load_decoder_state

    checkpoint = Path(attention_checkpoint)
    dims, state = load_whisper_checkpoint(checkpoint)
    for key, value in model.encoder.state_dict().items():
        if key.startswith("ln_post."):
            continue
        theirs = state.get(f"encoder.{key}")
        # The positional table is Whisper's sinusoids, stored rounded to float16 by some checkpoints.
        same = (theirs is not None and theirs.shape == value.shape
                and (torch.allclose(theirs.to(value.dtype), value, atol=2e-3) if key == "positional_embedding"
                     else torch.equal(theirs.to(value.dtype), value)))
        if not same:
            raise KocallError(f"file '{checkpoint}': tensor 'encoder.{key}' differs from model dir '{model_dir}' "
                              f"(its encoder was fine-tuned, or is another Whisper): the decoder must read the "
                              f"encoder it was trained with; use a whisper_hybrid model")
    decoder = TextDecoder(dims)
    load_decoder_state(decoder, state, str(checkpoint))
    decoder.eval()
    width = int(dims["n_audio_state"])
    ln_post = torch.nn.LayerNorm(width)
    ln_post.load_state_dict({"weight": state["encoder.ln_post.weight"], "bias": state["encoder.ln_post.bias"]})
    return JointModel(model, AttentionSide(decoder, _checkpoint_tokenizer(checkpoint)), ln_post.eval())


@dataclass
class ModeSettings:
    """Everything a mode needs besides the model (one utterance at a time)."""
    mode: str
    tokenizer: Any                 # ours (kocall.lang.Tokenizer)
    ctc: Any                       # kocall_kernels.ctc_decoder.DecoderConfig (ctc mode, rescore's N-best)
    lm_tables: Any = None
    context: Any = None            # hotwords (ContextGraph over our units)
    rescore: RescoreConfig = field(default_factory=RescoreConfig)
    joint: JointConfig = field(default_factory=JointConfig)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise KocallError(f"decoding mode must be one of {', '.join(MODES)}, not {self.mode!r}")


def decode_one(jm: JointModel | None, model, feats: np.ndarray, settings: ModeSettings,
               mapper: UnitMapper | None = None) -> str:
    """The text of one utterance's model-ready features in `settings.mode`."""
    import dataclasses

    import torch

    from kocall.decode import decode_posteriors

    tok = settings.tokenizer
    if settings.mode == "ctc":
        x = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))[None]
        with torch.inference_mode():
            lp, lens = model(x, torch.tensor([feats.shape[0]]))
        hyps = decode_posteriors(lp.float().numpy(), lens.numpy(), settings.ctc, settings.lm_tables,
                                 suppress=tok.suppressed_ids, context=settings.context)[0]
        return tok.decode(hyps[0].tokens) if hyps else ""
    if jm is None:
        raise KocallError(f"mode {settings.mode} needs an attention decoder")
    audio, lp = jm.encode(feats)
    lp = lp.copy()
    lp[:, tok.suppressed_ids] = -np.inf
    if settings.mode == "rescore":
        n = settings.rescore.nbest
        cfg = dataclasses.replace(settings.ctc, nbest=n, beam=max(settings.ctc.beam, n))
        hyps = decode_posteriors(lp[None], np.array([lp.shape[0]]), cfg, settings.lm_tables,
                                 context=settings.context)[0]
        if not hyps:
            return ""
        nbest = [(h.score, tok.decode(h.tokens)) for h in hyps]
        mapper = mapper or UnitMapper(tok, jm.side.tokenizer.token_bytes)
        chosen, _ = rescore_utterance(jm.side, audio, nbest, settings.rescore, mapper)
        return nbest[chosen][1]
    mapper = mapper or UnitMapper(tok, jm.side.tokenizer.token_bytes)
    tables = settings.lm_tables if settings.joint.lm_weight > 0 else None
    hyps = joint_decode_utterance(jm.side, audio, lp, mapper, settings.joint, tok.blank_id, tables,
                                  settings.context, backend="cuda" if settings.device == "cuda" else "cpu")
    return hyps[0].text if hyps else ""


# ------------------------------------------------------------------ the decode stage's attention modes

def masked(log_probs: np.ndarray, suppressed: Sequence[int]) -> np.ndarray:
    """CTC log-probs with the units a decoder never emits (`<unk>`) at -inf."""
    out = log_probs.copy()
    out[:, list(suppressed)] = -np.inf
    return out


def rescore_lists(jm: JointModel, encoded: list, tokenizer, ctc_cfg, lm_tables, nbest: int, context=None,
                  mapper: UnitMapper | None = None) -> list:
    """Per utterance (CTC+LM N-best [(score, text)], the decoder's log-prob of each): computed once,
    so that every attention weight only recombines them."""
    import dataclasses

    from kocall.decode import decode_posteriors

    cfg = dataclasses.replace(ctc_cfg, nbest=nbest, beam=max(ctc_cfg.beam, nbest))
    out = []
    for audio, lp in encoded:
        lp = masked(lp, tokenizer.suppressed_ids)
        hyps = decode_posteriors(lp[None], np.array([lp.shape[0]]), cfg, lm_tables, context=context)[0]
        nbest_list = [(h.score, tokenizer.decode(h.tokens)) for h in hyps] or [(0.0, "")]
        out.append((nbest_list, jm.side.teacher_forced(audio, [t for _, t in nbest_list], mapper)))
    return out


def rescored_texts(lists: list, cfg: RescoreConfig) -> list[str]:
    return [nb[rescore_nbest([s for s, _ in nb], att, cfg)][1] for nb, att in lists]


def joint_texts(jm: JointModel, encoded: list, tokenizer, cfg: JointConfig, lm_tables, mapper: UnitMapper,
                context=None, device: str = "cpu") -> list[str]:
    from kocall.progress import progress_bar

    texts = []
    for audio, lp in progress_bar(encoded, desc="joint", unit="utt", disable=len(encoded) < 20):
        hyps = joint_decode_utterance(jm.side, audio, masked(lp, tokenizer.suppressed_ids), mapper, cfg,
                                      tokenizer.blank_id, lm_tables if cfg.lm_weight > 0 else None, context,
                                      backend="cuda" if device == "cuda" else "cpu")
        texts.append(hyps[0].text if hyps else "")
    return texts


def mode_grid(conf: dict, mode: str) -> list[Any]:
    """The configs of a mode's grid (conf/decode.yaml `rescore:` / `joint:`), in the config's order."""
    import itertools

    section = conf.get(mode) or {}
    try:
        if mode == "rescore":
            return [RescoreConfig(attention_weight=float(w), nbest=int(section.get("nbest", RescoreConfig.nbest)))
                    for w in section.get("attention_weight", [1.0])]
        return [JointConfig(ctc_weight=float(c), lm_weight=float(lw), char_bonus=float(b),
                            beam=int(section.get("beam", 4)), pre_beam=int(section.get("pre_beam", 8)))
                for c, lw, b in itertools.product(section.get("ctc_weight", [0.3]), section.get("lm_weight", [0.0]),
                                                  section.get("char_bonus", [0.0]))]
    except (TypeError, ValueError) as err:
        raise KocallError(f"decode config section '{mode}': not a list of numbers ({err})") from None
    except KocallError as err:
        raise KocallError(f"decode config section '{mode}': {err.format_message()}") from None


def run_attention_mode(dec: Any, mode: str, data: Path, sets: list[str], checkpoint: str | None) -> dict:
    """The decode stage's rescore or joint mode, in this process, after the CTC part: the mode's grid
    (conf/decode.yaml) searched on the dev set by CER, the best written to
    AMDIR/decode_<dev>_<mode>/best_weights.json, and every set decoded with it into
    AMDIR/decode_<set>_<mode>/ (hyp.txt, decode_info.json). The CTC search (rescore's N-best)
    uses the weights the CTC grid chose."""
    import json

    from kocall.datadir import load_data_dir
    from kocall.fileio import atomic_write, read_json
    from kocall.scoring import score_texts
    from kocall.stage_decode import set_features, write_decode

    checkpoint = checkpoint or dec.conf.get("attention_checkpoint")
    config = read_json(dec.amdir / "final" / "config.json")
    jm = load_joint_model(dec.model, config, dec.amdir / "final", checkpoint)
    grid = mode_grid(dec.conf, mode)
    ctc_cfg = dec.best_config(dec.chosen_weights(sets[0]))
    mapper = UnitMapper(dec.tokenizer, jm.side.tokenizer.token_bytes)

    def encode(name: str) -> tuple[list[str], list]:
        ids, feats = set_features(data / name, dec.make_feats)
        return ids, [jm.encode(f) for f in feats]

    def texts_of(encoded: list, cfg: Any, lists: list | None) -> list[str]:
        if mode == "rescore":
            return rescored_texts(lists, cfg)
        return joint_texts(jm, encoded, dec.tokenizer, cfg, dec.tables, mapper, device=dec.device)

    dev_ids, dev_encoded = encode(sets[0])
    dev_lists = (rescore_lists(jm, dev_encoded, dec.tokenizer, ctc_cfg, dec.tables, grid[0].nbest, mapper=mapper)
                 if mode == "rescore" else None)
    refs_all = load_data_dir(data / sets[0]).text
    refs = {u: refs_all[u] for u in dev_ids}
    trials = []
    for cfg in grid:
        hyps = dict(zip(dev_ids, texts_of(dev_encoded, cfg, dev_lists)))
        trials.append({**{k: v for k, v in cfg.__dict__.items()}, "cer": score_texts(refs, hyps).cer})
    best_index = min(range(len(trials)), key=lambda i: (trials[i]["cer"], i))
    best = grid[best_index]
    with atomic_write(dec.amdir / f"decode_{sets[0]}_{mode}" / "best_weights.json") as handle:
        handle.write(json.dumps({**trials[best_index], "set": sets[0], "trials": trials,
                                 "attention_checkpoint": str(checkpoint) if checkpoint else None}, indent=1) + "\n")
    info = {"decoder": mode, "beam": ctc_cfg.beam, "lm": str(dec.lm_path), "lm_weight": ctc_cfg.lm_weight,
            "word_bonus": ctc_cfg.word_bonus, "attention_checkpoint": str(checkpoint) if checkpoint else None,
            **{f"{mode}_{k}": v for k, v in best.__dict__.items()}}
    for name in sets:
        ids, encoded = (dev_ids, dev_encoded) if name == sets[0] else encode(name)
        lists = (rescore_lists(jm, encoded, dec.tokenizer, ctc_cfg, dec.tables, best.nbest, mapper=mapper)
                 if mode == "rescore" else None)
        write_decode(dec.amdir / f"decode_{name}_{mode}", ids, texts_of(encoded, best, lists), info)
    return trials[best_index]
