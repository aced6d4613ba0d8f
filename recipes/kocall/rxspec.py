"""The one gate for Kaldi rxspecifiers (wav.scp and feats.scp values alike).

A Kaldi table value can be a shell pipe: `cmd |` (wav.scp, feats.scp), `| cmd`, or a pipe
followed by an offset, `cmd |:123` (kaldiio opens the part before the offset with a shell).
An scp from elsewhere must not be able to run commands, so every reader of an rxspec calls
`check_rxspec` first: a pipe is refused unless the user allowed pipes, with `--allow-pipes`
(on run.sh and on every kocall command that reads scp files) or `KOCALL_ALLOW_PIPES=1`.
"""
from __future__ import annotations

import os
import re

import click

from kocall.errors import AudioError, where

ENV_VAR = "KOCALL_ALLOW_PIPES"
# kaldiio's `ark:offset` and `ark:offset[slices]` suffixes, stripped before looking for a pipe
_OFFSET_SUFFIX = re.compile(r":\d+(\[[^\]]*\])?$")


def ark_part(spec: str) -> str:
    """What kaldiio would open for `spec`: the spec without a trailing `:offset[slices]`."""
    return _OFFSET_SUFFIX.sub("", spec.strip()).strip()


def is_pipe(spec: str) -> bool:
    """True for `cmd |`, `| cmd` and `cmd |:offset`: anything kaldiio or Kaldi would run in a shell."""
    for part in (spec.strip(), ark_part(spec)):
        if part.startswith("|") or part.endswith("|"):
            return True
    return False


def pipes_allowed(allow_pipes: bool | None = None) -> bool:
    """An explicit True/False wins; None means the environment (KOCALL_ALLOW_PIPES=1)."""
    if allow_pipes is not None:
        return allow_pipes
    return os.environ.get(ENV_VAR, "0") == "1"


def check_rxspec(spec: str, utt_id: str | None = None, allow_pipes: bool | None = None,
                 kind: str = "scp") -> bool:
    """Refuse a pipe unless allowed (AudioError naming the utterance and the command);
    returns whether `spec` is a (permitted) pipe."""
    if not is_pipe(spec):
        return False
    if not pipes_allowed(allow_pipes):
        raise AudioError(
            f"{where(utt_id, spec.strip())}: {kind} entry is a shell pipe; pipes run only when allowed "
            f"(pass --allow-pipes, or set {ENV_VAR}=1)")
    return True


def _set_allow_pipes(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    # The flag reaches every reader of this process and of its workers through the environment.
    if value:
        os.environ[ENV_VAR] = "1"
    return value


def allow_pipes_option(func):
    """`--allow-pipes` for a kocall command that reads wav.scp or feats.scp (sets KOCALL_ALLOW_PIPES=1)."""
    return click.option("--allow-pipes", is_flag=True, expose_value=False, is_eager=True,
                        callback=_set_allow_pipes,
                        help="let wav.scp/feats.scp entries be shell pipes (`cmd |`); default: KOCALL_ALLOW_PIPES")(func)
