"""One way to run per-utterance work over --nj processes with a progress bar."""
from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from kocall.progress import progress_bar


def imap_progress(fn: Callable[[Any], Any], jobs: Sequence[Any], nj: int, desc: str,
                  initializer: Callable[..., None] | None = None, initargs: tuple = ()) -> Iterator[Any]:
    """fn(job) for every job, in completion order, in nj forked processes (in this process when
    nj <= 1), with a tqdm bar. `fn` must draw its randomness from the job, not the process, so
    results do not depend on nj."""
    bar = progress_bar(total=len(jobs), desc=desc, unit="utt")
    pool = None
    nj = min(nj, len(jobs))   # never a process without a job (--nj 1000 on 6 files forks 6, not 1000)
    if nj <= 1:
        if initializer is not None:
            initializer(*initargs)
        results: Iterator[Any] = map(fn, jobs)
    else:
        pool = multiprocessing.get_context("fork").Pool(nj, initializer=initializer, initargs=initargs)
        results = pool.imap_unordered(fn, jobs, chunksize=8)
    try:
        for result in results:
            yield result
            bar.update()
    finally:
        bar.close()
        if pool is not None:  # close + join, not terminate: terminate can deadlock on the task queue
            pool.close()
            pool.join()
