"""Parallel map over worker processes, for CPU-bound work on many files."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")
INLINE_LIMIT = 64  # fewer tasks than this run in-process: a worker pool costs more


def parallel_map(
    func: Callable[[T], R],
    tasks: list[T],
    workers: int,
    tick: Callable[[int], None] | None = None,
    inline_limit: int = INLINE_LIMIT,
) -> Iterator[R]:
    """``map`` over worker processes (in-process for small batches), ticking progress.

    ``func`` and the tasks must be picklable; results come back in task order.
    Starting a pool costs about as much as reading a thousand headers: callers
    with cheap tasks pass a higher ``inline_limit``.
    """
    if workers <= 1 or len(tasks) < inline_limit:
        for task in tasks:
            yield func(task)
            if tick:
                tick(1)
        return
    context: Any = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    chunk = max(1, min(256, len(tasks) // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for result in pool.map(func, tasks, chunksize=chunk):
            yield result
            if tick:
                tick(1)
