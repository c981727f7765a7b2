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
                view = memoryview(framed(marshal.dumps(work())))
                while view:  # its length first: the parent reads it into one buffer
                    view = view[os.write(write, view) :]
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        self.pid, self.pipe = pid, read
        self.status = 1 << 8  # as "exited with 1" until reaped

    def result(self) -> Any:
        """The child's answer; None when it died without giving one."""
        import marshal

        data = read_framed(self.pipe)
        self.close(kill=False)
        if data is None or not os.WIFEXITED(self.status) or os.WEXITSTATUS(self.status):
            return None
        try:
            return marshal.loads(data)
        except (EOFError, ValueError, TypeError):
            return None

    def close(self, kill: bool = True) -> None:
        """Reap the child (stopped first unless it has answered)."""
        if self.pid:
            if kill:
                with contextlib.suppress(OSError):
                    os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                self.status = os.waitpid(self.pid, 0)[1]
            self.pid = 0
        if self.pipe >= 0:
            os.close(self.pipe)
            self.pipe = -1


def framed(data: bytes) -> bytes:
    """``data`` behind its length, for a pipe: :func:`read_framed` reads it whole without
    waiting for the pipe's end (which a process forked meanwhile may hold open)."""
    return len(data).to_bytes(8, "little") + data


def read_framed(fd: int) -> bytearray | None:
    """What :func:`framed` wrapped, read from ``fd`` into one buffer; None when the pipe
    ends first (an answer cut short is no answer)."""
    head = _read_into(fd, bytearray(8))
    if len(head) != 8:
        return None
    size = int.from_bytes(head, "little")
    data = _read_into(fd, bytearray(size))
    return data if len(data) == size else None


def _read_into(fd: int, buffer: bytearray) -> bytearray:
    """Fill ``buffer`` from ``fd``; shorter (a prefix) when the pipe ends first."""
    view, done = memoryview(buffer), 0
    while done < len(buffer):
        n = os.readv(fd, [view[done:]])
        if n == 0:
            del view
            del buffer[done:]
            return buffer
        done += n
    return buffer
