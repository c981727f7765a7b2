"""Parallel map over worker processes, for CPU-bound work on many files."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")
INLINE_LIMIT = 64  # fewer tasks than this run in-process: a worker pool costs more


PR_SET_PDEATHSIG = 1


def tie_to_parent(parent: int) -> None:
    """Worker initializer: end this worker when its parent dies (SIGTERM, SIGKILL,
    a crash), so no worker outlives the run it belongs to.

    Linux: the kernel sends SIGKILL on the parent's death (prctl PR_SET_PDEATHSIG).
    Elsewhere: a watchdog thread checks the parent every half second.
    """
    armed = False
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


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
    # a run that needs no pool imports none of this (with logging and tempfile: ~15 ms)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context: Any = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    chunk = max(1, min(256, len(tasks) // (workers * 8)))
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=tie_to_parent,
        initargs=(os.getpid(),),
    ) as pool:
        for result in pool.map(func, tasks, chunksize=chunk):
            yield result
            if tick:
                tick(1)


def can_fork() -> bool:
    """Whether a child can be forked safely: POSIX, and no other thread (one could hold
    a lock the child needs; the command line has none at the points that fork, a
    program calling the API from a thread might)."""
    return hasattr(os, "fork") and threading.active_count() == 1


class Forked:
    """``work()`` run by a forked child (tied to this process: it ends when this process
    dies), its marshalled answer read back through a pipe. The child shares this
    process's memory as it was at the fork: ``work`` reads it, and only the answer
    travels. :meth:`result` is None when the child died or answered nothing usable, so
    that the caller does the work itself: a child never changes an outcome."""

    def __init__(self, work: Callable[[], Any]) -> None:
        import marshal

        parent = os.getpid()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: work, answer, leave without any cleanup of the parent's
            code = 1
            try:
                os.close(read)
                tie_to_parent(parent)
                data = framed(marshal.dumps(work()))
                while data:
                    data = data[os.write(write, data) :]
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        self.pid, self.pipe = pid, read
        self.answered = False

    def result(self) -> Any:
        """The child's answer, taken as soon as it is whole (the child is reaped by
        :meth:`close` while it exits); None when it died without giving one."""
        import marshal

        data = read_framed(self.pipe)
        if data is None:
            return None
        self.answered = True
        try:
            return marshal.loads(data)
        except (EOFError, ValueError, TypeError):
            return None

    def close(self, kill: bool = True) -> None:
        """Reap the child (stopped first unless it has answered)."""
        if self.pid:
            if kill and not self.answered:
                with contextlib.suppress(OSError):
                    os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = 0
        if self.pipe >= 0:
            os.close(self.pipe)
            self.pipe = -1


def framed(data: bytes) -> bytes:
    """``data`` behind its length, for a pipe: read whole by :func:`read_framed` without
    waiting for the pipe's end (which a process forked meanwhile may hold open)."""
    return len(data).to_bytes(8, "little") + data


def read_framed(pipe: int) -> bytes | None:
    """What :func:`framed` wrapped, read from ``pipe``; None when the pipe ends first."""
    data = b""
    while len(data) < 8 or len(data) < 8 + int.from_bytes(data[:8], "little"):
        chunk = os.read(pipe, 1 << 16)
        if not chunk:
            return None
        data += chunk
    return data[8:]
