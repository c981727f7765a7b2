"""The content cache: a :class:`ContentReport` per content, decoded once, ever.

Keyed by everything that decides a report: the content hash, the role, the
format the name claims (the same bytes are a valid ``.nii`` and a misnamed
``.nii.gz``), the size limit, and :data:`ANALYSIS_VERSION`. Reports decoded
from a detached NRRD data file are not cached: the header's hash does not
cover the data. Opened with the one cache opener (:func:`open_cache_db`): a
damaged database is replaced, an unusable state folder gives an in-memory one.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import TracebackType

from volsegsync.decode import DEFAULT_MAX_BYTES
from volsegsync.fsutil import open_cache_db
from volsegsync.labels import ContentReport

ANALYSIS_VERSION = 2  # bump when the analysis changes: old cache entries are then ignored

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS content (hash TEXT NOT NULL, role TEXT NOT NULL, "
    "version INTEGER NOT NULL, report TEXT NOT NULL, PRIMARY KEY (hash, role, version))"
)


def image_format(name: str) -> str:
    """The format a file name claims, as far as it decides a content report."""
    name = name.lower()
    for ext in (".seg.nrrd", ".nrrd", ".nhdr", ".nii.gz", ".nii"):
        if name.endswith(ext):
            return ext
    return name.rpartition(".")[2] if "." in name else ""


def content_key(role: str, name: str = "", max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """The part of the cache key beside the content hash."""
    fmt = image_format(name) if name else ""
    return role if not fmt and max_bytes == DEFAULT_MAX_BYTES else f"{role}|{fmt}|{max_bytes}"


class ContentCache:
    """SQLite cache of ContentReport by (content hash, role/format/limit, version).

    Safe to share between threads. A row that no longer parses is a miss.
    """

    def __init__(self, db_path: Path) -> None:
        self._lock = threading.Lock()
        self._db = open_cache_db(db_path, _SCHEMA, check_same_thread=False)

    def get(
        self, content_hash: str, role: str, name: str = "", max_bytes: int = DEFAULT_MAX_BYTES
    ) -> ContentReport | None:
        with self._lock:
            row = self._db.execute(
                "SELECT report FROM content WHERE hash = ? AND role = ? AND version = ?",
                (content_hash, content_key(role, name, max_bytes), ANALYSIS_VERSION),
            ).fetchone()
        if row is None:
            return None
        try:
            report = ContentReport.from_json(json.loads(row[0]))
        except (ValueError, TypeError, KeyError):
            return None
        return report if report.role == role and not report.detached else None

    def put(
        self,
        content_hash: str,
        role: str,
        report: ContentReport,
        name: str = "",
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if report.detached:
            return
        text = json.dumps(report.to_json(), separators=(",", ":"), allow_nan=False)
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO content VALUES (?, ?, ?, ?)",
                (content_hash, content_key(role, name, max_bytes), ANALYSIS_VERSION, text),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ContentCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
