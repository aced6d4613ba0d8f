"""Atomic writes, Kaldi-style table files (`key value...` per line) and text input.

Every artifact a stage produces goes through `atomic_write` or `atomic_dir`, so an
interrupted stage never leaves a half-written file that a later run mistakes for done.
Their temp names carry the writer's pid and host (`.NAME.<pid>@<host>.XXXX.tmp`):
`remove_stale_temps(dir)` removes those of this host whose process is gone (a killed run),
never a live run's nor another machine's (an exp dir shared over NFS by cluster jobs).
`staged_dirs(root)` builds several directories (a multi-set stage) in one temp dir and
renames them into ROOT only when all of them succeeded. Files and
directories get the modes the umask gives (not mkstemp's private 0600/0700), so a shared
exp dir stays readable by colleagues.

Text input goes through `read_text` / `read_json`: bytes that are not UTF-8 (a cp949 file),
malformed or absurdly nested JSON are one-line DataErrors naming the file and the line.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping

from kocall.errors import DataError

_TEMP_NAME = re.compile(r"^\..+\.(\d+)@([^.@]+)\.[^.]+\.tmp$")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(is_dir: bool = False) -> int:
    """What open()/mkdir() would give under the current umask (0644/0755 with umask 022)."""
    return (0o777 if is_dir else 0o666) & ~_umask()


def _host() -> str:
    return socket.gethostname().split(".")[0].replace("@", "_") or "localhost"


def temp_prefix(name: str) -> str:
    """`.NAME.<pid>@<host>.`: the prefix of every temp file or dir kocall creates."""
    return f".{name}.{os.getpid()}@{_host()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Remove temp files/dirs in `directory` left by writers that no longer run (a killed
    stage); returns what was removed. A live process's temps are left alone."""
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        match = _TEMP_NAME.match(entry.name)
        if match is None or match.group(2) != _host() or _pid_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed


LOCK_NAME = ".kocall-lock"


@contextlib.contextmanager
def dir_lock(directory: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `directory` (flock on DIRECTORY/.kocall-lock) for the block; a
    second holder is a one-line DataError saying the folder is in use (as run.sh's stage_lock
    does for a whole run). The lock goes with the process, so a killed run leaves none behind."""
    import fcntl

    lock_path = Path(directory) / LOCK_NAME
    try:
        handle = open(lock_path, "a")
    except OSError as err:
        raise DataError(f"cannot lock '{directory}' ({err.strerror})") from None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"'{directory}' is in use by another {what} (it holds '{lock_path}'); wait for it "
                            "to end") from None
        yield


def _special_file(path: Path) -> str | None:
    """None for a regular file or a missing one; "stream" for /dev/stdout, /dev/null, any path
    under /dev or /proc, a character device or a FIFO: written as they are, since the rename of
    an atomic write would replace /dev/null (or the /dev/stdout link) itself; else what it is
    (refused)."""
    import stat

    system = os.path.abspath(path).startswith(("/dev/", "/proc/"))
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "a path under /dev or /proc that does not exist" if system else None
    if stat.S_ISBLK(mode):
        return "a block device"
    if system or stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return "stream"
    if stat.S_ISREG(mode):
        return None
    return "a folder" if stat.S_ISDIR(mode) else "a socket"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temp file beside `path`; rename it over `path` only if the block succeeds.
    A filesystem that refuses (read-only, full, a file where a folder should be) is one
    DataError naming `path`, with nothing left behind."""
    path = Path(path)
    special = _special_file(path)
    if special == "stream":   # /dev/null, /dev/stdout, a FIFO: written as they are, never replaced
        kwargs = {"encoding": encoding} if "b" not in mode else {}
        try:
            with open(path, mode.replace("w", "a"), **kwargs) as handle:   # "a": /dev/stdout into a file
                yield handle
        except OSError as err:
            raise DataError(f"cannot write '{path}' ({err.strerror})") from None
        return
    if special:
        raise DataError(f"output '{path}' is {special}, not a file kocall may write; choose a file")
    if path.is_symlink():   # replace the file the link names, not the link
        path = Path(os.path.realpath(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise DataError(f"cannot write '{path}' ({err.strerror})") from None
    os.close(fd)
    try:
        os.chmod(tmp, default_mode())
        kwargs = {"encoding": encoding} if "b" not in mode else {}
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError) and not isinstance(err, DataError):
            raise DataError(f"cannot write '{path}' ({err.strerror})") from None
        raise


def _same_file(a: Path, b: Path) -> bool:
    """One file under two names (a hard link, or a symlink resolve() could not see through)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output_dir(out: str | os.PathLike, inputs: Mapping[str, str | os.PathLike | None]) -> None:
    """Refuse an output (file or directory) that is, contains, or lies inside one of `inputs`
    ({label: path}; None entries are skipped): writing it would replace or mix with the input.
    Also refuse one that is or contains the working directory. DataError names both paths."""
    out_r = Path(out).resolve()
    checks = dict(inputs)
    cwd = Path.cwd().resolve()
    for label, raw in checks.items():
        if raw is None or str(raw) == "" or str(raw) == "-":
            continue
        in_r = Path(raw).resolve()
        if out_r == in_r or _same_file(out_r, in_r):
            relation = "is"
        elif out_r in in_r.parents:
            relation = "contains"
        elif in_r in out_r.parents:
            relation = "lies inside"
        else:
            continue
        raise DataError(f"output '{out}' {relation} the input {label} '{raw}'; writing it would "
                        "replace or mix with the input: choose another output (nothing was written)")
    if out_r == cwd or out_r in cwd.parents:
        raise DataError(f"output '{out}' is or contains the working directory '{cwd}'; "
                        "choose another output (nothing was written)")


def check_output_files(outputs: Mapping[str, str | os.PathLike | None],
                       inputs: Mapping[str, str | os.PathLike | None]) -> None:
    """Refuse an output file ({label: path}; None, "" and "-" = standard output skipped) that is
    one of `inputs` or holds/lies inside one (check_output_dir), or two outputs that are one
    file: the second write would lose the first. DataError names both paths."""
    seen: dict[Path, tuple[str, str]] = {}
    for label, raw in outputs.items():
        if raw is None or str(raw) in ("", "-"):   # "-": standard output
            continue
        check_output_dir(raw, inputs)
        key = Path(raw).resolve()
        if key in seen:
            other_label, other = seen[key]
            raise DataError(f"outputs {other_label} '{other}' and {label} '{raw}' are one file; "
                            "choose two names (nothing was written)")
        seen[key] = (label, str(raw))


OUTPUT_MARK = ".kocall-output"   # in every directory atomic_dir/staged_dirs build: replaceable


def check_replaceable(path: str | os.PathLike) -> None:
    """Refuse to replace `path` unless it is missing, an empty directory, or a directory kocall
    built (it holds OUTPUT_MARK): a writer never removes what kocall did not write."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        raise DataError(f"output '{path}' exists and is not a folder kocall wrote; choose another output "
                        "or remove it yourself (nothing was written)")
    if (path / OUTPUT_MARK).is_file() or (path / ".done").is_file():   # .done: a corpus kocall synth wrote earlier
        return
    try:
        entries = sorted(entry.name for entry in path.iterdir())
    except OSError as err:
        raise DataError(f"output '{path}' cannot be listed ({err.strerror})") from None
    if entries:
        raise DataError(f"output '{path}' is a folder kocall did not write and it is not empty ({len(entries)} "
                        f"entries, e.g. '{entries[0]}'); kocall replaces its output folders as a whole: choose "
                        "another output or remove it yourself (nothing was written)")


def _mark_output(directory: Path) -> None:
    (directory / OUTPUT_MARK).write_text("written by kocall: replaced as a whole when rebuilt\n", encoding="utf-8")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike,
               inputs: Mapping[str, str | os.PathLike | None] | None = None) -> Iterator[Path]:
    """Yield a temp directory that replaces `path` as a whole when the block succeeds.

    `path` is checked first with `check_output_dir` against `inputs` (what the block reads),
    so a directory writer never replaces its own input, and with `check_replaceable`, so it
    never replaces a folder kocall did not write."""
    path = Path(path)
    check_output_dir(path, inputs or {})
    check_replaceable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent)
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent))
        os.chmod(tmp, default_mode(is_dir=True))
    except OSError as err:
        raise DataError(f"cannot write '{path}' ({err.strerror})") from None
    try:
        yield tmp
        _mark_output(tmp)
        replace_dir(tmp, path)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):   # a full or read-only filesystem while building the folder
            raise DataError(f"cannot write '{path}' ({err.strerror}); it is left as it was") from None
        raise


def replace_dir(built: Path, path: Path) -> None:
    """Put the finished directory `built` at `path`, replacing what was there (only a folder
    kocall wrote: check_replaceable)."""
    check_replaceable(path)
    if path.exists():
        old = path.with_name(f"{temp_prefix(path.name)}old.tmp")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(built, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(built, path)


@contextlib.contextmanager
def staged_dirs(root: str | os.PathLike, label: str = "stage") -> Iterator[Path]:
    """Yield a temp dir inside ROOT; build ROOT's new subdirectories in it. When the block
    succeeds, each of them replaces its namesake in ROOT; when it fails, none does."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(root)
    staging = Path(tempfile.mkdtemp(prefix=temp_prefix(label), suffix=".tmp", dir=root))
    os.chmod(staging, default_mode(is_dir=True))
    try:
        yield staging
        built_dirs = sorted(p for p in staging.iterdir() if p.is_dir())
        for built in built_dirs:   # all refused or none: no set replaced before a refusal
            check_replaceable(root / built.name)
        for built in built_dirs:
            _mark_output(built)
            replace_dir(built, root / built.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def decode_text(data: bytes, path: str | os.PathLike, first_line: int = 1) -> str:
    """UTF-8 (a leading BOM dropped); otherwise a DataError naming the file, the line (counted
    from `first_line`), and the utterance when the line starts with one, with a hint for cp949
    (EUC-KR) files."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        start = data.rfind(b"\n", 0, err.start) + 1
        end = data.find(b"\n", err.start)
        line_bytes = data[start:end if end >= 0 else len(data)]
        lineno = data.count(b"\n", 0, err.start) + first_line
        key = line_bytes.split(maxsplit=1)[0].decode("utf-8", errors="replace") if line_bytes.strip() else ""
        utt = f" (utterance '{key}'?)" if key and "\ufffd" not in key else ""
        hint = ""
        with contextlib.suppress(UnicodeDecodeError):
            data.decode("cp949")
            hint = "; it reads as cp949 (EUC-KR): convert it with `iconv -f cp949 -t utf-8`"
        raise DataError(f"file '{path}' line {lineno}{utt}: not valid UTF-8 "
                        f"(byte 0x{data[err.start]:02x} at column {err.start - start + 1}){hint}") from None


def check_utf8(path: str | os.PathLike, block: int = 1 << 20) -> None:
    """Validate a large file as UTF-8 in blocks (an ARPA LM), raising decode_text's one-line
    DataError; for readers that stream the file themselves afterwards."""
    line = 1
    carry = b""
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(block)
            data = carry + chunk
            if not data:
                return
            try:
                data.decode("utf-8")
                carry = b""
            except UnicodeDecodeError as err:
                if chunk and err.reason == "unexpected end of data" and len(data) - err.start < 4:
                    carry = data[err.start:]   # a character split across two blocks
                    data = data[:err.start]
                else:
                    decode_text(data, path, line)  # raises, naming the line
            line += data.count(b"\n")
            if not chunk:
                return


STDIN = "-"   # the path that names standard input (`kocall score --hyp -`)


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """The text of a UTF-8 file, or of standard input for "-"; missing, unreadable or non-UTF-8
    input is a one-line DataError."""
    if str(path) == STDIN:
        import sys

        return decode_text(sys.stdin.buffer.read(), "standard input")
    path = Path(path)
    import stat

    try:   # a device (/dev/zero, /dev/urandom) never ends: reading it would fill the memory
        if stat.S_ISCHR(os.stat(path).st_mode) or stat.S_ISBLK(os.stat(path).st_mode):
            raise DataError(f"{what} '{path}' is a device, not a file")
    except OSError:
        pass   # reported by the read below
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{what} '{path}' is missing") from None
    except (IsADirectoryError, PermissionError) as err:
        raise DataError(f"{what} '{path}' cannot be read ({err.strerror})") from None
    return decode_text(data, path)


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Parsed JSON; malformed or absurdly nested JSON is a one-line DataError naming the file."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"file '{path}' line {err.lineno}: not valid JSON ({err.msg})") from None
    except RecursionError:
        raise DataError(f"file '{path}': JSON nested too deeply to be a kocall file") from None


def read_table(path: str | os.PathLike, allow_empty_value: bool = False) -> dict[str, str]:
    """Read a Kaldi table (`key rest-of-line`; the key ends at the first space or tab),
    rejecting duplicate keys and empty values."""
    if str(path) != STDIN:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"file '{path}' is missing")
    table: dict[str, str] = {}
    for lineno, line in enumerate(read_text(path).split("\n"), 1):  # only \n ends a line, as in Kaldi
        if not line.strip():
            continue
        key, value = (line.split(None, 1) + [""])[:2]
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
    for key, value in rows:  # a space in a key or a newline in a value would shift every later field
        if not key or any(ch.isspace() for ch in key):
            raise DataError(f"utterance '{key}' (file '{path}'): ids must be non-empty with no white space")
        if "\n" in value or "\r" in value:
            raise DataError(f"utterance '{key}' (file '{path}'): value holds a line break")
    with atomic_write(path) as handle:
        for key, value in rows:
            handle.write(f"{key} {value}\n" if value != "" else f"{key}\n")
