"""``volsegsync status``: what changed since the index was written.

The comparison itself is :func:`volsegsync.changes.diff` (shared with ``log``
and ``diff``); ``KINDS``, ``Change`` and ``diff`` are re-exported here.
"""

from __future__ import annotations

from typing import NamedTuple

from volsegsync.changes import KINDS, Change, diff
from volsegsync.dataset import Dataset
from volsegsync.errors import VolsegsyncError
from volsegsync.fsutil import INDEX_LIMIT, read_small
from volsegsync.ops.snapshot import ProgressFactory, index_digest, snapshot_memo, take_snapshot
from volsegsync.problems import Problem

UNREADABLE = ("unreadable", "not_an_image")

__all__ = ["KINDS", "Change", "StatusReport", "diff", "run_status"]


class StatusReport(NamedTuple):
    changes: list[Change]
    problems: list[Problem]  # files that could not be read or understood now
    indexed_pairs: int
    current_pairs: int

    @property
    def in_sync(self) -> bool:
        """No change, and no file that could not be read (it may hide one)."""
        return not self.changes and not any(p.category in UNREADABLE for p in self.problems)


def run_status(
    ds: Dataset, jobs: int | None = None, progress: ProgressFactory | None = None
) -> StatusReport:
    scan = ds.scan()
    hit = snapshot_memo(ds).match(scan)  # every file as the memoised snapshot saw it?
    if hit is not None and _index_digest(ds) == hit.index_digest:
        # in sync, decided without hashing, pairing or parsing: the index holds exactly
        # the text that snapshot writes
        return StatusReport([], hit.problems, hit.pairs, hit.pairs)
    old = ds.read_index()
    snap = (hit.snapshot() if hit else None) or take_snapshot(
        ds, jobs=jobs, progress=progress, scan=scan
    )
    return StatusReport(
        diff(old, snap.entries, present=scan.files),
        snap.problems,
        sum(1 for e in old if e.volume and e.segmentation),
        sum(1 for e in snap.entries if e.volume and e.segmentation),
    )


def _index_digest(ds: Dataset) -> str | None:
    try:
        return index_digest(read_small(ds.index_path, INDEX_LIMIT, "index"))
    except (OSError, VolsegsyncError):
        return None
