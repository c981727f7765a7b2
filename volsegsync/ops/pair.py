"""``volsegsync pair``: scan, hash, pair and write the index."""

from __future__ import annotations

from typing import NamedTuple

from volsegsync.dataset import Dataset
from volsegsync.index import format_index
from volsegsync.ops.snapshot import ProgressFactory, Snapshot, take_snapshot


class PairReport(NamedTuple):
    snapshot: Snapshot
    index_changed: bool
    written: bool


def run_pair(
    ds: Dataset,
    by: str | None = None,
    jobs: int | None = None,
    progress: ProgressFactory | None = None,
    dry_run: bool = False,
) -> PairReport:
    """Pair the dataset and (unless ``dry_run``) write the index atomically, under the lock."""
    with ds.lock():
        snap = take_snapshot(ds, by=by, jobs=jobs, progress=progress)
        new_text = format_index(snap.entries)
        try:
            old_text = ds.index_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):  # missing or unreadable: rewritten below
            old_text = None
        changed = new_text != old_text
        if changed and not dry_run:
            ds.write_index(snap.entries)
        return PairReport(snap, changed, changed and not dry_run)
