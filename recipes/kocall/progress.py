"""Progress of long work: a tqdm bar on a terminal; in a log file, one plain line every
PERIOD seconds (and a last one when the work took that long), never a carriage-return bar,
so that a log reads line by line and an error message starts on a line of its own.

`progress_bar(...)` takes the tqdm arguments kocall uses (iterable, total, desc, unit, disable,
leave, initial) and offers iteration, `update`, `set_postfix`, `close` and `with`.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

PERIOD = 10.0  # seconds between plain lines in a log


def on_terminal() -> bool:
    """Whether stderr (where progress goes) is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class progress_bar:  # noqa: N801 (used like tqdm)
    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", disable: bool = False, leave: bool = False, initial: int = 0,
                 **tqdm_kwargs: Any) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit = total, desc, unit.strip() or "it"
        self.n = initial
        self.postfix = ""
        self._bar = None
        self._plain = not disable and not on_terminal()
        self._start = self._last = time.monotonic()
        self._printed = False
        if not disable and not self._plain:
            from tqdm import tqdm

            self._bar = tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, initial=initial,
                             **tqdm_kwargs)

    def __iter__(self) -> Iterator:
        try:
            if self._bar is not None:
                yield from self._bar
            else:
                for item in self.iterable:
                    yield item
                    self.update(1)
        finally:
            self.close()   # also on an error: the bar is gone before the message is printed

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)
            return
        self.n += n
        now = time.monotonic()
        if self._plain and now - self._last >= PERIOD:
            self._last = now
            self._line()

    def set_postfix(self, **values: Any) -> None:
        if self._bar is not None:
            self._bar.set_postfix(**values)
        else:
            self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def _line(self, final: bool = False) -> None:
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        state = "done" if final else "running"
        extra = f", {self.postfix}" if self.postfix else ""
        sys.stderr.write(f"{self.desc}: {done} {self.unit}{pct}, {time.monotonic() - self._start:.0f} s {state}"
                         f"{extra}\n")
        sys.stderr.flush()
        self._printed = True

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._plain and self._printed:
            self._plain = False
            self._line(final=True)

    def __enter__(self) -> "progress_bar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
