"""Where things are: the repository root and the optional shared data beside it."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]   # recipes/kocall/paths.py -> the checkout


def shared_root() -> Path:
    """Real Korean speech and text, if present: $KOCALL_SHARED, else `../shared` beside the repo."""
    return Path(os.environ.get("KOCALL_SHARED", REPO_ROOT.parent / "shared"))


def shared_corpora() -> Path:
    return shared_root() / "corpora"


def shared_text() -> Path:
    return shared_root() / "text"


# The configs ship inside the package (the recipe's conf/ is a link to this folder), so a
# command's default config is found from any working directory and in an installed wheel.
PACKAGE_CONF = Path(__file__).resolve().parent / "conf"


def conf_file(path: str | os.PathLike) -> Path:
    """A config path as the user gave it; a relative `conf/NAME` absent from the working
    directory is the packaged one (so `conf/fbank.yaml` means the same file everywhere)."""
    given = Path(path)
    if given.exists() or given.is_absolute() or given.parts[:1] != ("conf",):
        return given
    packaged = PACKAGE_CONF.joinpath(*given.parts[1:])
    return packaged if packaged.exists() else given
