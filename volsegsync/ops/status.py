"""``volsegsync status``: what changed since the index was written.

The comparison itself is :func:`volsegsync.changes.diff` (shared with ``log``
and ``diff``); ``KINDS``, ``Change`` and ``diff`` are re-exported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from volsegsync.changes import KINDS, Change, diff
from volsegsync.dataset import Dataset
from volsegsync.index import Entry
from volsegsync.ops.monitoring import monitor_for
from volsegsync.ops.snapshot import Kept, ProgressFactory, Snapshot, settle, take_snapshot
from volsegsync.problems import Problem

if TYPE_CHECKING:
    from volsegsync.ops.fsmonitor import Monitor

UNREADABLE = ("unreadable",)

__all__ = ["KINDS", "Change", "StatusReport", "diff", "run_status"]


class StatusReport(NamedTuple):
    """Is the index up to date with the working tree?"""

    changes: list[Change]  # what ``pair`` would record
    kept: list[Kept]  # indexed files missing from disk, outside the scan or unreadable
    problems: list[Problem]  # files that cannot be read now (they may hide a change)
    indexed_pairs: int
    current_pairs: int
    known_problems: int  # problems ``verify`` reports in detail (status only counts them)

    @property
    def in_sync(self) -> bool:
        """The index records the tree as it is: no change, nothing missing or unreadable.
        Content problems of files indexed as they are do not matter here."""
        return not self.changes and not self.kept and not self.problems


def run_status(
    ds: Dataset,
    jobs: int | None = None,
    progress: ProgressFactory | None = None,
    fsmonitor: bool | None = None,
    monitor: Monitor | None = None,
) -> StatusReport:
    """``fsmonitor``: use the file-system monitor (None: as the local config says)."""
    monitor = monitor if monitor is not None else monitor_for(ds, fsmonitor)
    snap = take_snapshot(ds, jobs=jobs, progress=progress, monitor=monitor)
    # only the cases whose index entry differs, as ``pair`` would record them
    cases = settle(snap.pipeline, snap.cases(snap.dirty_keys))
    old = [c.indexed for c in cases if c.indexed is not None]
    new = [c.entry for c in cases if c.entry is not None]
    old.sort(key=lambda e: e.sort_key)
    new.sort(key=lambda e: e.sort_key)
    kept = sorted((k for c in cases for k in c.kept), key=lambda k: k.path)
    unreadable = [p for c in cases for p in c.problems if p.category in UNREADABLE]
    return StatusReport(
        diff(old, new, present=_on_disk(snap, old)),
        kept,
        sorted(unreadable, key=lambda p: p.files),
        snap.indexed_pairs,
        snap.pairs,
        snap.problem_count,
    )


def _on_disk(snap: Snapshot, old: list[Entry]) -> set[str]:
    """The indexed paths still on disk: never the source of a rename (a copy is new)."""
    locate = snap.pipeline.locate
    return {r.path for e in old for r in e.records() if locate(r.path) != "missing"}
