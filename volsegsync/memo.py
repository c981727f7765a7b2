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
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from volsegsync.errors import VolsegsyncError
from volsegsync.fsutil import MEMO_LIMIT, check_state_dir, make_temp, open_fd, read_small

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
    return _save_blob(path, blob)


def _save_blob(path: Path, blob: bytes | Iterable[bytes]) -> bool:
    try:
        check_state_dir(path.parent.parent)  # never write through a linked state folder
        path.parent.mkdir(exist_ok=True)
        if path.parent.is_symlink():
            return False
        fd, tmp = make_temp(path)
        try:
            with os.fdopen(fd, "wb") as f:
                f.writelines([blob] if isinstance(blob, bytes) else blob)
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


# -- packs: many shards in one file -----------------------------------------------------
#
# A first run fills every shard of a memo at once; writing them as one pack costs one
# new file instead of SHARDS (creating a file is what costs, not its bytes). A later
# run reads one shard of the pack by its span and writes the shards it changes as
# files of their own; who reads knows which file holds a shard by the id that each
# pack and shard file carries (see volsegsync.ops.snapshot).
#
# Layout: PACK_MAGIC, the shards' marshal data one after the other, the header (the
# marshal data of key, id and each shard's span within the body), then a footer of
# the body's length (8 bytes) and the header's (4 bytes), little-endian: a pack is
# written as its shards are turned into bytes, one at a time (memory: one shard).

PACK_MAGIC = b"VSSPACK2"
PACK_HEADER_LIMIT = 1 << 20  # key, id and SHARDS spans: a few KiB
_FOOTER = 12


def save_pack(path: Path, key: str, pack_id: str, shards: Iterable[Any]) -> bool:
    """Store the plain data of each shard (the ``i``-th for shard ``i``) as one pack
    under ``key`` and ``pack_id``; False when it could not be."""
    spans: list[tuple[int, int]] = []

    def pieces() -> Iterator[bytes]:
        yield PACK_MAGIC
        offset = 0
        for data in shards:
            blob = marshal.dumps(data)
            spans.append((offset, len(blob)))
            offset += len(blob)
            yield blob
        header = marshal.dumps({"key": key, "id": pack_id, "spans": spans})
        yield header
        yield offset.to_bytes(8, "little") + len(header).to_bytes(4, "little")

    try:
        return _save_blob(path, pieces())
    except ValueError:  # something not plain data: simply not memoised
        return False


class PackReader:
    """Reads shards of one pack, checking its key and id once; any damage is a miss
    (None). Only a regular file is opened, never through a link, and every span is
    checked against the file's size and :data:`MEMO_LIMIT` before it is read."""

    def __init__(self, path: Path, key: str, pack_id: str) -> None:
        self.path, self.key, self.pack_id = path, key, pack_id
        self._spans: list[tuple[int, int]] | None = None

    def load(self, shard: int) -> Any:
        try:
            fd = open_fd(self.path)
        except OSError:
            return None
        try:
            if self._spans is None and not self._read_header(fd, os.fstat(fd).st_size):
                return None
            assert self._spans is not None
            start, length = self._spans[shard]
            blob = os.pread(fd, length, len(PACK_MAGIC) + start)
            if len(blob) != length:
                return None
            return marshal.loads(blob)
        except (OSError, EOFError, ValueError, TypeError, IndexError):
            return None
        finally:
            os.close(fd)

    def _read_header(self, fd: int, size: int) -> bool:
        if size < len(PACK_MAGIC) + _FOOTER or os.pread(fd, len(PACK_MAGIC), 0) != PACK_MAGIC:
            return False
        footer = os.pread(fd, _FOOTER, size - _FOOTER)
        body, length = int.from_bytes(footer[:8], "little"), int.from_bytes(footer[8:], "little")
        if length > PACK_HEADER_LIMIT or len(PACK_MAGIC) + body + length + _FOOTER != size:
            return False
        raw = os.pread(fd, length, len(PACK_MAGIC) + body)
        header = marshal.loads(raw) if len(raw) == length else None
        if not isinstance(header, dict) or header.get("key") != self.key:
            return False
        spans = header.get("id") == self.pack_id and header.get("spans")
        if not isinstance(spans, list) or len(spans) != SHARDS:
            return False
        for span in spans:
            if not (
                isinstance(span, tuple)
                and len(span) == 2
                and all(type(n) is int and 0 <= n <= MEMO_LIMIT for n in span)
                and span[0] + span[1] <= body
            ):
                return False
        self._spans = spans
        return True
