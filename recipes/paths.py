"""Where things are: the repository root and the optional shared data beside it."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_root() -> Path:
    """Real Korean speech and text, if present: $KOCALL_SHARED, else `../shared` beside the repo."""
    return Path(os.environ.get("KOCALL_SHARED", REPO_ROOT.parent / "shared"))


def shared_corpora() -> Path:
    return shared_root() / "corpora"


def shared_text() -> Path:
    return shared_root() / "text"
