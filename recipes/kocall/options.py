"""Bounds of kocall's numeric options and config values: one table, one click type, one check.

Every numeric option of every command is finite and inside a sane range: `--beam 100000`
(minutes per utterance), `--nj 1000000000` (10^9 job ids), `--lm-weight nan` (every hypothesis
empty), `--max-seconds nan` (no length limit) are each one line naming the option and its
range, before any work. A command declares an option with the bound's name:

    @click.option("--beam", type=bounded("beam"), default=16)

config values (conf/decode.yaml, a hotwords file's weights) go through `check_bound(name,
value, where)`, and argparse entry points use `argparse_type(name)`. A new numeric option
adds its row to BOUNDS. The ranges are wide enough for any real use and tight enough that
nothing downstream can overflow, hang or allocate without limit.
"""
from __future__ import annotations

import argparse
import math

import click

from kocall.errors import KocallError

# name -> (low, high, kind); both ends allowed. Kinds: int or float.
BOUNDS: dict[str, tuple[float, float, type]] = {
    "beam": (1, 1024, int),                      # hypotheses kept per frame
    "nj": (1, 1024, int),                        # parallel jobs (never more than utterances: the stages clamp)
    "job": (1, 1024, int),                       # one job's index
    "threads": (1, 1024, int),                   # CPU threads of one process
    "num_threads": (1, 1024, int),
    "batch_size": (1, 4096, int),                # utterances per forward pass
    "token_topk": (1, 4096, int),                # units tried per frame
    "nbest": (1, 1024, int),
    "lm_weight": (0.0, 10.0, float),             # alpha; the dev grid tops out at 1.5
    "word_bonus": (-50.0, 50.0, float),          # beta per unit or word
    "token_min_logp": (-1000.0, 0.0, float),
    "hotword_weight": (0.0, 100.0, float),       # bonus per character (ln); the default is 1.5
    "hotword_lm_compensation": (0.0, 10.0, float),
    "max_seconds": (0.01, 3600.0, float),        # longest input accepted
    "max_minutes": (0.0, 7 * 24 * 60.0, float),  # a training budget
    "avg": (1, 1000, int),                       # checkpoints averaged
    "stop_after_steps": (1, 10**9, int),
    "max_utts": (0, 10**8, int),                 # 0: all
    "seed": (0, 2**32 - 1, int),
    "dev_fraction": (0.0, 0.9, float),
    "speakers": (0, 10**6, int),
    "hours": (0.0, 1000.0, float),              # synthetic audio: its plan is held in memory
    "minutes": (0.0, 60_000.0, float),
    "sentences": (0, 2_000_000, int),
    "std_floor": (1e-8, 1e3, float),
    "vocab_size": (2, 1_000_000, int),
}


def _describe(name: str) -> str:
    low, high, kind = BOUNDS[name]
    if kind is int:
        return f"a whole number from {int(low):,} to {int(high):,}"
    return f"a number from {low:g} to {high:g}"


def check_bound(name: str, value: object, where: str) -> int | float:
    """`value` (a number or its text) as BOUNDS[name]'s kind, or a KocallError naming `where`
    (the option or the config file and key) and the range. NaN and infinities are refused."""
    low, high, kind = BOUNDS[name]
    text = str(value).strip()
    try:
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            if len(text) > 20:   # int('9' * 5000) costs time and says nothing
                raise ValueError
            number: int | float = int(value) if isinstance(value, (int, float)) else int(text)
        else:
            if isinstance(value, bool) or len(text) > 64:
                raise ValueError
            number = float(value) if isinstance(value, (int, float)) else float(text)
    except (TypeError, ValueError, OverflowError):
        raise KocallError(f"{where} must be {_describe(name)}, not '{text[:40]}'") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise KocallError(f"{where} must be {_describe(name)}, not {text[:40]}")
    return number


class Bounded(click.ParamType):
    """A click type for one row of BOUNDS."""

    def __init__(self, name: str) -> None:
        if name not in BOUNDS:
            raise KeyError(f"no bound named {name!r} in kocall.options.BOUNDS")
        self.bound = name
        self.name = "integer" if BOUNDS[name][2] is int else "float"

    def convert(self, value, param, ctx):
        if value is None:
            return None
        option = f"--{param.name.replace('_', '-')}" if param is not None and param.name else self.bound
        try:
            return check_bound(self.bound, value, option)
        except KocallError as err:
            self.fail(err.message.removeprefix(f"{option} "), param, ctx)

    def get_metavar(self, param, ctx=None) -> str:   # click 8.1 and 8.2 call it differently
        low, high, kind = BOUNDS[self.bound]
        return f"{'INTEGER' if kind is int else 'FLOAT'} {low:g}..{high:g}"


def bounded(name: str) -> Bounded:
    return Bounded(name)


def argparse_type(name: str, option: str):
    """An argparse `type=` for BOUNDS[name]: argparse prints its own one-line usage error."""
    def parse(text: str):
        try:
            return check_bound(name, text, option)
        except KocallError as err:
            raise argparse.ArgumentTypeError(err.message) from None

    parse.__name__ = name
    return parse
