"""Cache of header geometry, keyed by a file's stat ``(size, mtime_ns, inode)``.

A header whose file is unchanged is never parsed again. Failures are cached
too (category and reason), so a broken file costs one read, not one per run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from volsegsync.fsutil import open_cache_db
from volsegsync.hashing import Stat, racy_limit

if TYPE_CHECKING:
    from volsegsync.headers import Geometry


class HeaderResult(NamedTuple):
    """A file's geometry, or why it has none (``category`` as in problems.CATEGORIES)."""

    geometry: Geometry | None
    category: str | None = None
    reason: str | None = None

    def to_json(self) -> str:
        if self.geometry is not None:
            return json.dumps({"geometry": self.geometry.to_json()})
        return json.dumps({"category": self.category, "reason": self.reason})

    @classmethod
    def from_json(cls, text: str) -> HeaderResult:
        from volsegsync.headers import Geometry  # numpy: only when a cached header is used

        data = json.loads(text)
        if "geometry" in data:
            return cls(Geometry.from_json(data["geometry"]))
        return cls(None, data["category"], data["reason"])


class HeaderCache:
    def __init__(self, db_path: Path) -> None:
        self._db = open_cache_db(
            db_path,
            "CREATE TABLE IF NOT EXISTS headers (path TEXT PRIMARY KEY, size INTEGER, "
            "mtime_ns INTEGER, ino INTEGER, result TEXT)",
        )

    def lookup(self, files: dict[str, Stat]) -> dict[str, HeaderResult]:
        """Cached results for the files whose stat is unchanged."""
        out: dict[str, HeaderResult] = {}
        query = "SELECT path, size, mtime_ns, ino, result FROM headers"
        if len(files) > 500:  # many: one pass over the table beats a query each
            rows: Iterable[tuple[str, int, int, int, str]] = self._db.execute(query)
        else:
            rows = [r for p in files for r in self._db.execute(query + " WHERE path = ?", (p,))]
        for path, size, mtime_ns, ino, result in rows:
            st = files.get(path)
            if st is not None and st == (size, mtime_ns, ino):
                try:
                    out[path] = HeaderResult.from_json(result)
                except (ValueError, KeyError, TypeError):
                    continue  # a damaged entry is a miss: the header is read again
        return out

    def store(self, items: Iterable[tuple[str, Stat, HeaderResult]]) -> None:
        limit = racy_limit()
        rows = [
            (path, st.size, st.mtime_ns, st.ino, result.to_json())
            for path, st, result in items
            if st.mtime_ns < limit
        ]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO headers VALUES (?, ?, ?, ?, ?)", rows)

    def close(self) -> None:
        self._db.close()
