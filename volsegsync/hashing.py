"""Content hashing (streaming xxh3-128, in parallel) and the racy-clean rule.

The pipeline (:mod:`volsegsync.ops.snapshot`) keeps each file's hash with its
stat ``(size, mtime_ns, inode)``; a file whose stat is unchanged is never read
again. Files modified in the last seconds are not trusted by their stat: a
coarse filesystem clock could hide a later change of the same size within the
same tick (git's "racily clean" problem).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import xxhash

from volsegsync.magic import HEAD_BYTES, sniff

CHUNK = 1 << 20
RACY_NS = 2_000_000_000


def racy_limit(now_ns: int | None = None) -> int:
    """Files modified at or after this time (ns) may change again unseen: do not cache."""
    return (now_ns if now_ns is not None else time.time_ns()) - RACY_NS


class Stat(NamedTuple):
    size: int
    mtime_ns: int
    ino: int


class Hashed(NamedTuple):
    path: str
    stat: Stat
    digest: str
    problem: str | None  # why the content is not the image its name claims, if it is not


def hash_file(path: str | os.PathLike[str]) -> tuple[str, Stat, bytes]:
    """xxh3-128 hex digest of a file, streamed; its stat after reading; its first bytes."""
    h = xxhash.xxh3_128()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    head = b""
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            if total == 0:
                head = bytes(view[: min(n, HEAD_BYTES)])
            h.update(view[:n])
            total += n
        st = os.fstat(f.fileno())
    return h.hexdigest(), Stat(st.st_size, st.st_mtime_ns, st.st_ino), head


BATCH = 64  # files per task: a task per tiny file costs more than hashing it
THREADS_FROM_BYTES = 256 * 1024  # mean file size from which parallel reads pay off


def hash_many(
    root: Path,
    todo: list[tuple[str, Stat]],
    jobs: int,
    on_done: Callable[[], None] | None = None,
) -> Iterator[Hashed | tuple[str, str]]:
    """Hash files in parallel; yields :class:`Hashed` or ``(path, reason)`` when unreadable."""

    def one(item: tuple[str, Stat]) -> Hashed | tuple[str, str]:
        rel = item[0]
        try:
            digest, st, head = hash_file(root / rel)
        except OSError as e:
            return rel, f"cannot read: {e.strerror or e}"
        # the stat taken after reading is stored: a file changed meanwhile looks recent
        # and so stays out of the cache (see RACY_NS)
        return Hashed(rel, st, digest, sniff(rel, head))

    def batch(items: list[tuple[str, Stat]]) -> list[Hashed | tuple[str, str]]:
        return [one(item) for item in items]

    # small files are hashed faster by one thread than by several fighting for the GIL
    small = sum(st.size for _, st in todo) < len(todo) * THREADS_FROM_BYTES
    if jobs <= 1 or len(todo) < 2 or small:
        for item in todo:
            yield one(item)
            if on_done:
                on_done()
        return
    size = max(1, min(BATCH, len(todo) // (jobs * 4)))
    batches = [todo[i : i + size] for i in range(0, len(todo), size)]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for results in pool.map(batch, batches):
            for result in results:
                yield result
                if on_done:
                    on_done()
