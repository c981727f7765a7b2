"""Memo files in the state folder: one definition of how they are read and written.

A memo is plain data stored with :mod:`marshal` (loading it runs no code) under a
``key`` that names everything that decided its content (volsegsync's version, the
config's digest, a format number). A memo that is missing, damaged or made under
another key is a miss, never an error; writing one is an optimisation, never a
failure.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import zlib
from pathlib import Path
from typing import Any

from volsegsync.errors import VolsegsyncError
from volsegsync.fsutil import MEMO_LIMIT, check_state_dir, make_temp, read_small

SHARDS = 256  # memos kept per case key are split in this many files by key


def shard_of(key: str) -> int:
    """The shard of a case key (see :data:`SHARDS`)."""
    return zlib.crc32(key.encode("utf-8", "surrogateescape")) & (SHARDS - 1)


def load_memo(path: Path, key: str) -> dict[str, Any] | None:
    """The memo at ``path`` if it was made under ``key``, else None."""
    try:  # a regular file only, never through a link, capped (hostile state folders)
        data = marshal.loads(read_small(path, MEMO_LIMIT, "memo"))
    except (OSError, VolsegsyncError, EOFError, ValueError, TypeError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    return data


def save_memo(path: Path, data: dict[str, Any]) -> bool:
    """Store ``data`` (which holds its ``key``) atomically; False when it could not be."""
    try:
        blob = marshal.dumps(data)
    except ValueError:  # something not plain data: simply not memoised
        return False
    try:
        check_state_dir(path.parent.parent)  # never write through a linked state folder
        path.parent.mkdir(exist_ok=True)
        if path.parent.is_symlink():
            return False
        fd, tmp = make_temp(path)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            # no fsync: a memo that a crash leaves empty or torn is a miss, and a miss
            # of any pipeline memo file makes the next run start afresh
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except (OSError, VolsegsyncError):
        return False
    return True


def forget_memo(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
