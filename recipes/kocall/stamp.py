"""Stage completion markers: a stage is up to date when its marker holds the hash of
its inputs and config. run.sh chains stages by feeding upstream markers in as inputs,
so a change anywhere upstream reruns everything downstream, and nothing else.

Files are hashed by content; audio, feature archives and checkpoints (STAT_SUFFIXES), and any
file over BIG_FILE bytes, by size and mtime (a 100-hour corpus would otherwise cost more to
hash than to skip). So a corpus directory can be a stage input as a whole: its transcripts,
manifests and label files by content, its audio by size and mtime.

Only regular files are read: a FIFO, a device (a symlink to /dev/zero), anything under /proc,
/sys or /dev, or a folder that resolves to / would block or never end the hash, so each is a
one-line DataError naming it (a broken symlink is part of the hash, not an error).
"""
from __future__ import annotations

import hashlib
import os
import stat as stat_mode
from pathlib import Path

import click

from kocall.errors import DataError
from kocall.fileio import atomic_write

BIG_FILE = 32 * 1024 * 1024
STAT_SUFFIXES = {".wav", ".flac", ".pcm", ".ogg", ".mp3", ".sph", ".ark", ".pt", ".bin", ".npy", ".npz"}
SKIP_NAMES = {".done", "__pycache__"}
SYSTEM_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))   # pseudo files: endless, blocking or unreadable


def _check_hashable(path: Path, is_dir: bool) -> None:
    """A DataError for an input whose reading would hang, never end or fail (see the docstring)."""
    real = path.resolve()
    if any(real == root or root in real.parents for root in SYSTEM_ROOTS):
        raise DataError(f"stage input '{path}' resolves to '{real}', a system pseudo file; give real files")
    if is_dir and real == Path(real.anchor):
        raise DataError(f"stage input '{path}' resolves to the root folder '/'; give the corpus folder")


def _hash_file(digest: "hashlib._Hash", path: Path) -> None:
    try:
        stat = path.stat()
    except OSError:  # a broken symlink or a file removed meanwhile: part of the hash, not a crash
        digest.update(f"F {path.name} MISSING\n".encode())
        return
    if stat_mode.S_ISDIR(stat.st_mode):   # a symlink to a folder: os.walk does not follow it
        digest.update(f"L {path.name} -> {os.readlink(path) if path.is_symlink() else ''}\n".encode())
        return
    if not stat_mode.S_ISREG(stat.st_mode):
        kind = "a FIFO" if stat_mode.S_ISFIFO(stat.st_mode) else "a device or socket"
        raise DataError(f"stage input '{path}' is {kind}, not a regular file (reading it could block forever); "
                        "remove it or give its data as a file")
    _check_hashable(path, is_dir=False)
    digest.update(f"F {path.name} {stat.st_size}\n".encode())
    if stat.st_size > BIG_FILE or path.suffix.lower() in STAT_SUFFIXES:
        digest.update(f"{stat.st_mtime_ns}\n".encode())
        return
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise DataError(f"stage input '{path}' cannot be read ({err.strerror})") from None


def hash_inputs(paths: list[str], texts: list[str]) -> str:
    """sha1 over option strings and the content of files/directories (recursively, sorted)."""
    digest = hashlib.sha1()
    for text in texts:
        digest.update(f"T {text}\n".encode())
    for raw in paths:
        path = Path(raw)
        digest.update(f"P {raw}\n".encode())
        if path.is_dir():
            _check_hashable(path, is_dir=True)
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d not in SKIP_NAMES and not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        _hash_file(digest, Path(root) / name)
        elif path.exists():
            _hash_file(digest, path)
        else:
            digest.update(b"MISSING\n")
    return digest.hexdigest()


@click.group("stamp")
def stamp_cmd() -> None:
    """Stage markers: hash inputs, check and write .done files."""


@stamp_cmd.command("hash")
@click.option("--text", "texts", multiple=True, help="an option string that belongs to the hash")
@click.argument("paths", nargs=-1)
def hash_cmd(texts: tuple[str, ...], paths: tuple[str, ...]) -> None:
    """Print the hash of PATHS (files or directories) and the --text strings."""
    click.echo(hash_inputs(list(paths), list(texts)))


@stamp_cmd.command("write")
@click.argument("marker")
@click.argument("digest")
def write_cmd(marker: str, digest: str) -> None:
    """Atomically write DIGEST to MARKER."""
    with atomic_write(marker) as handle:
        handle.write(digest + "\n")
