"""Errors that kocall reports to the user as one clear line, never a traceback."""
from __future__ import annotations

import click


class KocallError(click.ClickException):
    """A user-facing failure. The message names the utterance and file involved."""

    exit_code = 1


class DataError(KocallError):
    """Malformed data directory, transcript or label file."""


class AudioError(DataError):
    """Audio that cannot be used: corrupt, empty, truncated, stereo, wrong rate, missing."""


def where(utt_id: str | None, path: str | None) -> str:
    """The 'utterance X (file Y)' phrase every data error starts with."""
    parts = []
    if utt_id is not None:
        parts.append(f"utterance '{utt_id}'")
    if path is not None:
        parts.append(f"file '{path}'")
    return " ".join(parts) if parts else "input"
