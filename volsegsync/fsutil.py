"""Filesystem primitives: atomic writes and the dataset write lock."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from volsegsync.errors import LockedError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def write_lock(lock_path: Path, timeout: float = 5.0) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``lock_path`` for the duration of the block."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockedError(
                        f"{lock_path}: another volsegsync run is writing this dataset; "
                        "try again when it has finished"
                    ) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def open_cache_db(db_path: Path, schema: str) -> sqlite3.Connection:
    """Open (or create) a cache database in the state folder.

    Caches are disposable: a file that is not a database (damaged, truncated) is
    replaced by an empty one rather than stopping the run.
    """
    db_path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in (1, 2):
        db = sqlite3.connect(db_path, timeout=30)
        try:
            db.execute(schema)
            return db
        except sqlite3.DatabaseError:
            db.close()
            if attempt == 2 or not db_path.is_file():
                raise
            db_path.unlink()
    raise AssertionError("unreachable")
