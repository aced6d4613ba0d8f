"""Atomic writes and Kaldi-style table files (`key value...` per line).

Every artifact a stage produces goes through `atomic_write` or `atomic_dir`, so an
interrupted stage never leaves a half-written file that a later run mistakes for done.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator, Mapping

from kocall.errors import DataError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temp file beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        kwargs = {"encoding": encoding} if "b" not in mode else {}
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_output_dir(out: str | os.PathLike, inputs: Mapping[str, str | os.PathLike | None]) -> None:
    """Refuse an output directory that is, contains, or lies inside one of `inputs`
    ({label: path}; None entries are skipped): writing it would replace or mix with the input.
    Also refuse one that is or contains the working directory. DataError names both paths."""
    out_r = Path(out).resolve()
    checks = dict(inputs)
    cwd = Path.cwd().resolve()
    for label, raw in checks.items():
        if raw is None or str(raw) == "":
            continue
        in_r = Path(raw).resolve()
        if out_r == in_r:
            relation = "is"
        elif out_r in in_r.parents:
            relation = "contains"
        elif in_r in out_r.parents:
            relation = "lies inside"
        else:
            continue
        raise DataError(f"output directory '{out}' {relation} the input {label} '{raw}'; writing it would "
                        "replace or mix with the input: choose another output directory (nothing was written)")
    if out_r == cwd or out_r in cwd.parents:
        raise DataError(f"output directory '{out}' is or contains the working directory '{cwd}'; "
                        "choose another output directory (nothing was written)")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike,
               inputs: Mapping[str, str | os.PathLike | None] | None = None) -> Iterator[Path]:
    """Yield a temp directory that replaces `path` as a whole when the block succeeds.

    `path` is checked first with `check_output_dir` against `inputs` (what the block reads),
    so a directory writer never replaces its own input."""
    path = Path(path)
    check_output_dir(path, inputs or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_table(path: str | os.PathLike, allow_empty_value: bool = False) -> dict[str, str]:
    """Read a Kaldi table (`key rest-of-line`), rejecting duplicate keys and empty values."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file '{path}' is missing")
    table: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            key, _, value = line.partition(" ")
            value = value.strip()
            if key in table:
                raise DataError(f"utterance '{key}' (file '{path}', line {lineno}): duplicate id")
            if not value and not allow_empty_value:
                raise DataError(f"utterance '{key}' (file '{path}', line {lineno}): empty value")
            table[key] = value
    return table


def write_table(path: str | os.PathLike, table: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
    """Write a Kaldi table sorted by key (C locale byte order, as Kaldi's sort wants)."""
    items = table.items() if isinstance(table, Mapping) else table
    rows = sorted(items, key=lambda kv: kv[0].encode("utf-8"))
    with atomic_write(path) as handle:
        for key, value in rows:
            handle.write(f"{key} {value}\n" if value != "" else f"{key}\n")
