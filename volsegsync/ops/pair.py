"""``volsegsync pair``: scan, hash, pair and write the index."""

from __future__ import annotations

import contextlib
from typing import NamedTuple

from volsegsync.dataset import Dataset
from volsegsync.errors import VolsegsyncError
from volsegsync.fsutil import INDEX_LIMIT, read_small
from volsegsync.index import Entry, format_entry, format_index
from volsegsync.ops.snapshot import ProgressFactory, Snapshot, take_snapshot


class PairReport(NamedTuple):
    snapshot: Snapshot
    index_changed: bool
    written: bool
    added: list[Entry]  # entries the index did not hold as they are now
    removed: list[tuple[str, str]]  # (volume, segmentation) of index lines now gone


def run_pair(
    ds: Dataset,
    by: str | None = None,
    jobs: int | None = None,
    progress: ProgressFactory | None = None,
    dry_run: bool = False,
) -> PairReport:
    """Pair the dataset and (unless ``dry_run``) write the index atomically, under the lock."""
    with contextlib.nullcontext() if dry_run else ds.lock():  # a dry run writes nothing
        snap = take_snapshot(ds, by=by, jobs=jobs, progress=progress)
        new_text = format_index(snap.entries)
        try:
            old_text = read_small(ds.index_path, INDEX_LIMIT, "index").decode("utf-8")
        except (OSError, UnicodeDecodeError, VolsegsyncError):  # rewritten below
            old_text = None
        changed = new_text != old_text
        if changed and not dry_run:
            ds.write_index(snap.entries)
        added, removed = _line_changes(snap.entries, old_text or "")
        return PairReport(snap, changed, changed and not dry_run, added, removed)


def _line_changes(entries: list[Entry], old_text: str) -> tuple[list[Entry], list[tuple[str, str]]]:
    """What a reviewer sees in the index's diff: lines added, lines removed."""
    old = {line.removesuffix("\r") for line in old_text.split("\n")}  # U+2028: no line end
    new = {format_entry(e): e for e in entries}
    added = [e for line, e in new.items() if line not in old]
    removed = [
        (cols[0], cols[2])
        for line in sorted(old - new.keys())
        if len(cols := line.split("\t")) > 2 and not line.startswith("#")
    ]
    return added, removed
