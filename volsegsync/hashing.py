"""Content hashing, streamed (xxh3-128 by default; sha256 or blake3 on demand), and the
stat cache that avoids re-reading.

The pipeline (:mod:`volsegsync.ops.snapshot`) keeps each file's hash with its
stat ``(size, mtime_ns, inode)`` in its memo; the stat cache (``StatCache``) does
the same for checkout, storing and report. A file whose stat is unchanged is never
read again. Files modified in the last seconds are not trusted by their stat: a
coarse filesystem clock could hide a later change of the same size within the
same tick (git's "racily clean" problem).
"""

from __future__ import annotations

import os
import stat as statmod
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import xxhash

from volsegsync.errors import VolsegsyncError
from volsegsync.fsutil import DIR_FLAGS, READ_FLAGS, open_cache_db, open_in_dataset, open_regular
from volsegsync.magic import HEAD_BYTES, names_data_file, sniff

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
    detached: bool = False  # a NRRD header that may name a detached data file


DEFAULT_ALGORITHM = "xxh3-128"


def new_hasher(algorithm: str = DEFAULT_ALGORITHM) -> Any:
    """A fresh hash object (``update``/``hexdigest``) of ``algorithm``."""
    if algorithm == "xxh3-128":
        return xxhash.xxh3_128()
    if algorithm == "sha256":
        import hashlib

        return hashlib.sha256()
    if algorithm == "blake3":
        try:
            import blake3  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise VolsegsyncError(
                "hash algorithm blake3 needs the 'blake3' package: pip install blake3"
            ) from None
        return blake3.blake3()
    raise VolsegsyncError(f"unknown hash algorithm {algorithm!r}")


def hash_bytes(data: bytes, algorithm: str = DEFAULT_ALGORITHM) -> str:
    if algorithm == "xxh3-128":
        return str(xxhash.xxh3_128_hexdigest(data))  # one call, no hasher object
    h = new_hasher(algorithm)
    h.update(data)
    return str(h.hexdigest())


def hash_file(
    path: str | os.PathLike[str], root: Path | None = None, algorithm: str = DEFAULT_ALGORITHM
) -> tuple[str, Stat, bytes]:
    """Hex digest of a file, streamed; its stat after reading; its first bytes.

    With ``root``, ``path`` is relative to it and opened under the dataset's link
    policy (:func:`open_in_dataset`); else only a regular file, not a link, is read.
    """
    small = _hash_small(os.path.join(root, path) if root else path, algorithm)
    if small is not None:
        return small
    h = new_hasher(algorithm)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    head = b""
    with open_in_dataset(root, os.fspath(path)) if root else open_regular(path) as f:
        while n := f.readinto(buf):
            if total == 0:
                head = bytes(view[: min(n, HEAD_BYTES)])
            h.update(view[:n])
            total += n
        st = os.fstat(f.fileno())
    return str(h.hexdigest()), Stat(st.st_size, st.st_mtime_ns, st.st_ino), head


def read_small_file(path: str | os.PathLike[str]) -> tuple[bytes, os.stat_result] | None:
    """Content and stat of a regular file smaller than one chunk, in four system calls
    (open, fstat, read, fstat) and no Python loop; None for anything else (a link, a
    FIFO, a larger or growing file, an error): the caller's general path handles it."""
    try:
        fd = os.open(path, READ_FLAGS)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not statmod.S_ISREG(st.st_mode) or st.st_size >= CHUNK:
            return None
        # what the stat says and a byte more (a file that grew shows): a read of a
        # whole chunk would allocate and map a megabyte for a file of a few bytes,
        # which costs more than reading it
        data = os.read(fd, st.st_size + 1)  # O_NONBLOCK: never a hang
        st = os.fstat(fd)  # the stat after reading: a file changed meanwhile looks recent
    except OSError:
        return None
    finally:
        os.close(fd)
    if not statmod.S_ISREG(st.st_mode) or st.st_size != len(data) or len(data) >= CHUNK:
        return None
    return data, st


def _hash_small(path: str | os.PathLike[str], algorithm: str) -> tuple[str, Stat, bytes] | None:
    small = read_small_file(path)
    if small is None:
        return None
    data, st = small
    return (
        hash_bytes(data, algorithm),
        Stat(st.st_size, st.st_mtime_ns, st.st_ino),
        data[:HEAD_BYTES],
    )


SmallHashed = tuple[int, str, "str | None", bool]


def hash_small_files(
    folder: str,
    names: list[str],
    sizes: Sequence[int],
    todo: Iterable[int],
    algorithm: str = DEFAULT_ALGORITHM,
) -> tuple[list[SmallHashed], list[int]]:
    """Hash the small files ``names[i]`` (``i`` in ``todo``) of one folder by one thread,
    with as little Python per file as a tiny file allows: the folder opened once, then
    one ``open`` (relative to it), one ``read`` and one ``close`` a file.

    ``sizes[i]`` is the size the walk's stat gave: a file is read by that size and a
    byte more, and only a read of exactly that many bytes is taken (the walk's stat is
    then recorded with the digest: a file changed since has another stat, and is
    hashed again next run). Anything else, an empty file, a read error, a file that is
    not regular any more (a FIFO opens without blocking and reads nothing; a folder or
    socket fails; a link is not followed), is left to :func:`hash_many`, which checks
    the opened file's type. Returns ``(i, digest, problem, detached)`` for each file
    it hashed, and the indices it left."""
    done: list[SmallHashed] = []
    rest: list[int] = []
    try:  # the folder itself not followed if it became a link since the walk
        dir_fd = os.open(folder, DIR_FLAGS)
    except OSError:
        return done, list(todo)
    one_call = algorithm == "xxh3-128"
    hexdigest = xxhash.xxh3_128_hexdigest
    read, close, open_ = os.read, os.close, os.open
    add, leave = done.append, rest.append
    try:
        for i in todo:
            name, size = names[i], sizes[i]
            if not 0 < size < CHUNK:
                leave(i)
                continue
            try:
                fd = open_(name, READ_FLAGS, dir_fd=dir_fd)
            except OSError:
                leave(i)
                continue
            try:
                data = read(fd, size + 1)
            except OSError:
                data = b""
            finally:
                close(fd)
            if len(data) != size:  # grown, shrunk, not a regular file any more
                leave(i)
                continue
            digest = hexdigest(data) if one_call else hash_bytes(data, algorithm)
            head = data if size <= HEAD_BYTES else data[:HEAD_BYTES]
            add((i, digest, sniff(name, head), names_data_file(name, head)))
    finally:
        close(dir_fd)
    return done, rest


BATCH = 64  # files per task: a task per tiny file costs more than hashing it
THREADS_FROM_BYTES = 256 * 1024  # mean file size from which parallel reads pay off
CacheRow = tuple[int, int, int, str, "str | None"]


STAT_SCHEMA = 2  # bump when what is cached changes: an older cache is then emptied


class StatCache:
    """SQLite-backed ``path -> (stat, digest, problem)`` cache in the state folder.

    It carries a schema version (``PRAGMA user_version``): a cache written by
    another schema is emptied, never misread.
    """

    def __init__(self, db_path: Path) -> None:
        table = (
            "CREATE TABLE IF NOT EXISTS stat (path TEXT PRIMARY KEY, size INTEGER, "
            "mtime_ns INTEGER, ino INTEGER, digest TEXT, problem TEXT)"
        )
        self._db = open_cache_db(db_path, table)
        if self._db.execute("PRAGMA user_version").fetchone()[0] != STAT_SCHEMA:
            with self._db:
                self._db.execute("DROP TABLE stat")
                self._db.execute(table)
                self._db.execute(f"PRAGMA user_version = {STAT_SCHEMA}")

    def load(self) -> dict[str, CacheRow]:
        """``path -> (size, mtime_ns, ino, digest, problem)`` for every cached file."""
        rows = self._db.execute("SELECT path, size, mtime_ns, ino, digest, problem FROM stat")
        return {r[0]: r[1:] for r in rows}

    def store(self, items: Iterable[Hashed], now_ns: int | None = None) -> None:
        limit = racy_limit(now_ns)
        rows = [
            (h.path, h.stat.size, h.stat.mtime_ns, h.stat.ino, h.digest, h.problem)
            for h in items
            if h.stat.mtime_ns < limit
        ]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO stat VALUES (?, ?, ?, ?, ?, ?)", rows)

    def forget(self, paths: Iterable[str]) -> None:
        with self._db:
            self._db.executemany("DELETE FROM stat WHERE path = ?", ((p,) for p in paths))

    def close(self) -> None:
        self._db.close()


def settle_mtime(path: Path) -> Stat:
    """Set a file volsegsync just wrote to a modification time before the racy window,
    so that its stat can be cached at once: any later edit gives a newer mtime."""
    past = racy_limit() - 1_000_000_000
    os.utime(path, ns=(past, past), follow_symlinks=False)
    st = os.lstat(path)
    return Stat(st.st_size, st.st_mtime_ns, st.st_ino)


def hash_many(
    root: Path,
    todo: list[tuple[str, Stat]],
    jobs: int,
    on_done: Callable[[], None] | None = None,
    algorithm: str = DEFAULT_ALGORITHM,
) -> Iterator[Hashed | tuple[str, str]]:
    """Hash files in parallel; yields :class:`Hashed` or ``(path, reason)`` when unreadable."""

    def one(item: tuple[str, Stat]) -> Hashed | tuple[str, str]:
        rel = item[0]
        try:
            digest, st, head = hash_file(rel, root, algorithm)
        except OSError as e:
            return rel, f"cannot read: {e.strerror or e}"
        # the stat taken after reading is stored: a file changed meanwhile looks recent
        # and so stays out of the cache (see RACY_NS)
        return Hashed(rel, st, digest, sniff(rel, head), names_data_file(rel, head))

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
    from concurrent.futures import ThreadPoolExecutor  # not imported by a run without one

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for results in pool.map(batch, batches):
            for result in results:
                yield result
                if on_done:
                    on_done()
