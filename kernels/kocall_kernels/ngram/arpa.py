"""ARPA back-off LM -> `NgramTables` (flat CSR arrays; layout in the package docstring).

Mapping of ARPA words to token ids:
- a word that is a symbol of tokens.txt gets that symbol's id (the LM's words are the units);
- `</s>` gets id V = len(tokens.txt); `<s>` gets no id: it only appears as context, and the
  state of the context `<s>` is `bos_state`; n-grams predicting `<s>` are dropped;
- an ARPA word that is not in tokens.txt can never be emitted by the acoustic model, so every
  n-gram holding it is dropped (counted in the log);
- every token 1..V without a unigram gets an arc at the root with the ARPA's `<unk>` log-prob
  (-100 if the ARPA has no `<unk>`, as KenLM assumes) and next state = root, which is exactly
  how KenLM scores an out-of-vocabulary word (backing off to the root on the way).

States are the n-gram contexts: the root (state 0) and every n-gram of order < N that is in
the ARPA (plus any missing prefix of an n-gram, with back-off 0, for hand-made ARPAs).
`</s>`-final n-grams are not contexts. The back-off state of a context is its longest proper
suffix that is a state; the next state of an arc is the longest suffix of context+token (at
most N-1 words) that is a state.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from kocall.progress import progress_bar

from kocall.errors import DataError
from kocall_kernels.ngram.tables import NgramTables

log = logging.getLogger(__name__)

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
KENLM_DEFAULT_UNK = -100.0


def read_tokens(tokens_txt: str | os.PathLike) -> list[str]:
    """tokens.txt (`symbol id` per line, ids 0..V-1 in any order) -> symbols indexed by id."""
    path = Path(tokens_txt)
    if not path.is_file():
        raise DataError(f"file '{path}' is missing")
    by_id: dict[int, str] = {}
    from kocall.fileio import read_text

    for lineno, line in enumerate(read_text(path).split("\n"), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise DataError(f"file '{path}', line {lineno}: expected 'symbol id', got {line!r}")
        symbol, index = parts[0], int(parts[1])
        if index in by_id:
            raise DataError(f"file '{path}', line {lineno}: id {index} used twice")
        by_id[index] = symbol
    if sorted(by_id) != list(range(len(by_id))):
        raise DataError(f"file '{path}': ids must be 0..{len(by_id) - 1} without gaps")
    return [by_id[i] for i in range(len(by_id))]


def parse_arpa(arpa_path: str | os.PathLike, progress: bool = True
               ) -> tuple[list[dict[tuple[str, ...], tuple[float, float]]], float | None]:
    """Read an ARPA file: per order, {words: (log10 prob, log10 backoff)}; and the `<unk>` log-prob."""
    path = Path(arpa_path)
    if not path.is_file():
        raise DataError(f"file '{path}' is missing")
    from kocall.fileio import check_utf8

    check_utf8(path)  # a non-UTF-8 ARPA is one line naming the line, not a traceback mid-parse
    counts: dict[int, int] = {}
    grams: list[dict[tuple[str, ...], tuple[float, float]]] = []
    order = 0
    section = "start"
    with open(path, encoding="utf-8") as handle, \
            progress_bar(desc=f"reading {path.name}", unit=" n-grams", disable=not progress, leave=False) as bar:
        for lineno, raw in enumerate(handle, 1):
            line = raw.strip()
            if not line:
                continue
            if line == "\\data\\":
                section = "data"
            elif line == "\\end\\":
                section = "end"
                break
            elif line.startswith("\\") and line.endswith("-grams:"):
                order = int(line[1:-len("-grams:")])
                if order != len(grams) + 1:
                    raise DataError(f"file '{path}', line {lineno}: section {line} out of order")
                grams.append({})
                section = "grams"
            elif section == "data":
                if not line.startswith("ngram ") or "=" not in line:
                    raise DataError(f"file '{path}', line {lineno}: bad header line {line!r}")
                n, _, count = line[len("ngram "):].partition("=")
                counts[int(n)] = int(count)
                bar.total = sum(counts.values())
            elif section == "grams":
                fields = line.split()
                if len(fields) not in (order + 1, order + 2):
                    raise DataError(f"file '{path}', line {lineno}: expected {order} words, "
                                    f"a log-prob and an optional back-off, got {line!r}")
                try:
                    logprob = float(fields[0])
                    backoff = float(fields[order + 1]) if len(fields) == order + 2 else 0.0
                except ValueError:
                    raise DataError(f"file '{path}', line {lineno}: bad number in {line!r}") from None
                grams[-1][tuple(fields[1:order + 1])] = (logprob, backoff)
                bar.update()
            else:
                raise DataError(f"file '{path}', line {lineno}: text outside a section: {line!r}")
    if section != "end" or not grams:
        raise DataError(f"file '{path}': not a complete ARPA file (no \\end\\ or no n-grams)")
    for n, count in counts.items():
        if n > len(grams) or len(grams[n - 1]) != count:
            found = len(grams[n - 1]) if n <= len(grams) else 0
            raise DataError(f"file '{path}': header says {count} {n}-grams, found {found}")
    unk = grams[0].get((UNK,))
    return grams, (unk[0] if unk else None)


def tables_from_arpa(arpa_path: str | os.PathLike, tokens_txt: str | os.PathLike,
                     progress: bool = True) -> NgramTables:
    """Build the flat tables for the AM's token ids (see the module docstring)."""
    symbols = read_tokens(tokens_txt)
    vocab = len(symbols)
    bos_id = vocab + 1                      # internal only: never an arc token
    word_id = {sym: i for i, sym in enumerate(symbols) if i > 0}   # blank is never an LM word
    word_id[EOS], word_id[BOS] = vocab, bos_id
    grams, unk_logprob = parse_arpa(arpa_path, progress)
    order = len(grams)

    # n-grams as id tuples; drop those with words the AM cannot emit
    id_grams: list[list[tuple[tuple[int, ...], float, float]]] = []
    dropped = 0
    for table in grams:
        kept = []
        for words, (logprob, backoff) in table.items():
            ids = tuple(word_id.get(w, -1) for w in words)
            if -1 in ids:
                dropped += 1
                continue
            kept.append((ids, logprob, backoff))
        id_grams.append(kept)
    if dropped:
        log.warning("%s: dropped %d n-grams with words not in %s", arpa_path, dropped, tokens_txt)

    # states: root, every context-capable n-gram of order < N, then missing prefixes
    state_of: dict[tuple[int, ...], int] = {(): 0}
    backoff_weight = [0.0]
    for n in range(1, order):
        for ids, _, backoff in id_grams[n - 1]:
            if ids[-1] != vocab:
                state_of[ids] = len(backoff_weight)
                backoff_weight.append(backoff)
    for n in range(2, order + 1):
        for ids, _, _ in id_grams[n - 1]:
            for k in range(1, n):
                if ids[:k] not in state_of:
                    state_of[ids[:k]] = len(backoff_weight)
                    backoff_weight.append(0.0)

    def longest_state_suffix(ids: tuple[int, ...]) -> int:
        for k in range(len(ids)):
            found = state_of.get(ids[k:])
            if found is not None:
                return found
        return 0

    backoff_to = np.zeros(len(backoff_weight), dtype=np.int32)
    for ids, state in state_of.items():
        if ids:
            backoff_to[state] = longest_state_suffix(ids[1:])

    arc_state, arc_token, arc_logprob, arc_next = [], [], [], []
    keep_words = max(order - 1, 0)
    for n in range(1, order + 1):
        for ids, logprob, _ in id_grams[n - 1]:
            if ids[-1] == bos_id:
                continue
            arc_state.append(state_of[ids[:-1]])
            arc_token.append(ids[-1])
            arc_logprob.append(logprob)
            arc_next.append(longest_state_suffix(ids[-keep_words:]) if keep_words else 0)
    have_unigram = {ids[0] for ids, _, _ in id_grams[0]}
    fill = KENLM_DEFAULT_UNK if unk_logprob is None else unk_logprob
    for token in range(1, vocab + 1):
        if token not in have_unigram:
            arc_state.append(0)
            arc_token.append(token)
            arc_logprob.append(fill)
            arc_next.append(0)

    states = np.asarray(arc_state, dtype=np.int64)
    tokens = np.asarray(arc_token, dtype=np.int32)
    perm = np.lexsort((tokens, states))
    arc_start = np.zeros(len(backoff_weight) + 1, dtype=np.int64)
    np.cumsum(np.bincount(states, minlength=len(backoff_weight)), out=arc_start[1:])
    tables = NgramTables(
        state_arc_start=arc_start,
        arc_token=tokens[perm],
        arc_logprob=np.asarray(arc_logprob, dtype=np.float32)[perm],
        arc_next_state=np.asarray(arc_next, dtype=np.int32)[perm],
        state_backoff_weight=np.asarray(backoff_weight, dtype=np.float32),
        state_backoff_to=backoff_to,
        bos_state=state_of.get((bos_id,), 0),
        vocab_size=vocab,
        order=order,
    )
    tables.validate(str(arpa_path))
    return tables
