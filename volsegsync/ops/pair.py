"""``volsegsync pair``: scan, hash, pair and write the index."""

from __future__ import annotations

import contextlib
from typing import NamedTuple

from volsegsync.dataset import Dataset
from volsegsync.errors import IndexFormatError, VolsegsyncError
from volsegsync.fsutil import INDEX_LIMIT, read_small
from volsegsync.index import Entry, FileRecord, format_index, parse_index
from volsegsync.ops.snapshot import ProgressFactory, Snapshot, index_digest, take_snapshot
from volsegsync.ops.storing import StoreReport, store_enabled, store_entries


class PairReport(NamedTuple):
    snapshot: Snapshot
    index_changed: bool
    written: bool
    added: list[Entry]  # entries the index did not hold as they are now
    removed: list[tuple[str, str]]  # (volume, segmentation) of index lines now gone
    stored: StoreReport | None = None  # what went into the content store (None: not stored)


def run_pair(
    ds: Dataset,
    by: str | None = None,
    jobs: int | None = None,
    progress: ProgressFactory | None = None,
    dry_run: bool = False,
    store: bool | None = None,
) -> PairReport:
    """Pair the dataset and (unless ``dry_run``) write the index atomically, under the lock.

    Unless ``store`` is False (default: the config's ``store.enabled``), the content
    of every recorded file goes into the content store first (docs/store.md).
    """
    with contextlib.nullcontext() if dry_run else ds.lock():  # a dry run writes nothing
        snap = take_snapshot(ds, by=by, jobs=jobs, progress=progress)
        new_text = format_index(snap.entries, ds.config.store.hash)
        try:
            old_text = read_small(ds.index_path, INDEX_LIMIT, "index").decode("utf-8")
        except (OSError, UnicodeDecodeError, VolsegsyncError):  # rewritten below
            old_text = None
        changed = new_text != old_text
        stored = None
        if not dry_run and (store if store is not None else store_enabled(ds)):
            stored = store_entries(
                ds,
                snap.entries,
                jobs=jobs,
                progress=progress,
                index_key=index_digest(new_text.encode()),
            )
        if changed and not dry_run:
            ds.write_index(snap.entries)
        added, removed = _line_changes(snap.entries, old_text or "")
        return PairReport(snap, changed, changed and not dry_run, added, removed, stored)


def _line_changes(entries: list[Entry], old_text: str) -> tuple[list[Entry], list[tuple[str, str]]]:
    """What a reviewer sees in the index's diff: pairs added, pairs removed."""
    try:
        old_entries = parse_index(old_text)
    except IndexFormatError:
        old_entries = []
    old = {_pair_of(e) for e in old_entries}
    added = [e for e in entries if _pair_of(e) not in old]
    removed = sorted({_names(e) for e in old_entries} - {_names(e) for e in entries})
    return added, removed


def _pair_of(e: Entry) -> tuple[FileRecord | None, FileRecord | None, int | None]:
    return (e.volume, e.segmentation, e.version)


def _names(e: Entry) -> tuple[str, str]:
    return (e.volume.path if e.volume else "-", e.segmentation.path if e.segmentation else "-")
