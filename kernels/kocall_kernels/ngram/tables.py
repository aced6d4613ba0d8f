"""`NgramTables`: a back-off n-gram LM as flat, device-friendly arrays (see the package docstring).

The arrays are plain NumPy; `kocall_kernels.ngram.cuda.to_device` copies them to the GPU.
Saved as one `.npz` (uncompressed, so loading is a memcpy).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kocall.errors import DataError
from kocall.fileio import atomic_write

# (name, dtype) of every array, in the order the query functions take them.
ARRAY_DTYPES: tuple[tuple[str, type], ...] = (
    ("state_arc_start", np.int64),       # [S+1] CSR offsets into the arc arrays
    ("arc_token", np.int32),             # [A] token id, ascending within a state
    ("arc_logprob", np.float32),         # [A] log10 P(token | state's context)
    ("arc_next_state", np.int32),        # [A] state after reading the token
    ("state_backoff_weight", np.float32),  # [S] log10 back-off weight of the context
    ("state_backoff_to", np.int32),      # [S] state of the context minus its first word
)
FORMAT_VERSION = 1


@dataclass
class NgramTables:
    state_arc_start: np.ndarray
    arc_token: np.ndarray
    arc_logprob: np.ndarray
    arc_next_state: np.ndarray
    state_backoff_weight: np.ndarray
    state_backoff_to: np.ndarray
    bos_state: int      # the state of the context `<s>`
    vocab_size: int     # V = len(tokens.txt); token V is `</s>`; rows of scores are V+1 wide
    order: int

    def __post_init__(self) -> None:
        for name, dtype in ARRAY_DTYPES:
            setattr(self, name, np.ascontiguousarray(getattr(self, name), dtype=dtype))
        self.bos_state, self.vocab_size, self.order = int(self.bos_state), int(self.vocab_size), int(self.order)

    # --- sizes ---------------------------------------------------------------
    @property
    def num_states(self) -> int:
        return int(self.state_backoff_weight.shape[0])

    @property
    def num_arcs(self) -> int:
        return int(self.arc_token.shape[0])

    @property
    def eos_id(self) -> int:
        return self.vocab_size

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The six arrays in the argument order of `lm_score` / `lm_score_device`."""
        return tuple(getattr(self, name) for name, _ in ARRAY_DTYPES)

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays()))

    # --- invariants ------------------------------------------------------------
    def validate(self, source: str = "tables") -> None:
        """Check the CSR layout and that the root holds every token 1..V (so queries terminate)."""
        S, A, V = self.num_states, self.num_arcs, self.vocab_size
        start = self.state_arc_start
        problems = []
        if start.shape != (S + 1,) or start[0] != 0 or start[-1] != A or np.any(np.diff(start) < 0):
            problems.append("state_arc_start is not a CSR offset array over the arcs")
        if not (self.arc_logprob.shape == self.arc_next_state.shape == (A,)) or self.state_backoff_to.shape != (S,):
            problems.append("array lengths disagree")
        if A and (self.arc_token.min() < 1 or self.arc_token.max() > V):
            problems.append(f"arc tokens outside 1..{V}")
        if S and (self.arc_next_state.min(initial=0) < 0 or self.arc_next_state.max(initial=0) >= S
                  or self.state_backoff_to.min() < 0 or self.state_backoff_to.max() >= S):
            problems.append("state index out of range")
        if not problems:
            root = self.arc_token[start[0]:start[1]]
            if not np.array_equal(root, np.arange(1, V + 1, dtype=np.int32)):
                problems.append(f"root state must hold exactly one arc per token 1..{V}")
            # ascending tokens within each state: a decrease is only allowed at a state boundary
            steps = np.diff(self.arc_token.astype(np.int64))
            boundary = np.zeros(max(A - 1, 0), dtype=bool)
            inner = start[1:-1]
            boundary[inner[(inner > 0) & (inner < A)] - 1] = True
            if np.any((steps <= 0) & ~boundary):
                problems.append("arc tokens are not strictly ascending within a state")
            if not 0 <= self.bos_state < S:
                problems.append("bos_state out of range")
        if problems:
            raise DataError(f"file '{source}': invalid n-gram tables: {'; '.join(problems)}")

    # --- I/O -------------------------------------------------------------------
    @classmethod
    def from_arpa(cls, arpa_path: str | os.PathLike, tokens_txt: str | os.PathLike,
                  progress: bool = True) -> "NgramTables":
        from kocall_kernels.ngram.arpa import tables_from_arpa

        return tables_from_arpa(arpa_path, tokens_txt, progress=progress)

    def save(self, path: str | os.PathLike) -> None:
        meta = np.array([FORMAT_VERSION, self.bos_state, self.vocab_size, self.order], dtype=np.int64)
        with atomic_write(path, "wb") as handle:
            np.savez(handle, meta=meta, **{name: getattr(self, name) for name, _ in ARRAY_DTYPES})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NgramTables":
        path = Path(path)
        if not path.is_file():
            raise DataError(f"file '{path}' is missing")
        try:
            with np.load(path) as data:
                meta = data["meta"]
                arrays = {name: data[name] for name, _ in ARRAY_DTYPES}
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"file '{path}': not an n-gram tables .npz ({exc})") from None
        if int(meta[0]) != FORMAT_VERSION:
            raise DataError(f"file '{path}': tables format {int(meta[0])}, expected {FORMAT_VERSION}")
        tables = cls(**arrays, bos_state=int(meta[1]), vocab_size=int(meta[2]), order=int(meta[3]))
        tables.validate(str(path))
        return tables

    # --- reference scoring -------------------------------------------------------
    def score(self, state: int, token: int) -> tuple[float, int]:
        """log10 P(token | state) and the next state (the CPU twin)."""
        from kocall_kernels.ngram.cpu import lm_score

        logprob, nxt = lm_score(*self.arrays(), np.int32(state), np.int32(token))
        return float(logprob), int(nxt)

    def score_sentence(self, token_ids, bos: bool = True, eos: bool = True) -> tuple[float, np.ndarray]:
        """Total and per-token log10 probabilities of a token sequence (+ `</s>` when eos).

        Matches `kenlm.Model.score(" ".join(symbols), bos, eos)` / `full_scores`."""
        state = self.bos_state if bos else 0
        seq = [int(t) for t in token_ids] + ([self.eos_id] if eos else [])
        per_token = np.empty(len(seq), dtype=np.float64)
        for i, token in enumerate(seq):
            if not 1 <= token <= self.vocab_size:
                raise ValueError(f"token id {token} outside 1..{self.vocab_size} (blank is never scored)")
            per_token[i], state = self.score(state, token)
        return float(per_token.sum()), per_token
