"""``volsegsync pair``: scan, hash, pair and write the index; ``volsegsync rm``.

The index never silently loses a record: files that are missing, outside the scan
or unreadable keep their lines (and ``pair`` exits 1, naming them) until the user
drops them with ``pair --prune`` or ``volsegsync rm PATH``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import NamedTuple

from volsegsync.config import load_config
from volsegsync.dataset import Dataset
from volsegsync.errors import IndexFormatError, VolsegsyncError
from volsegsync.fsutil import CONFIG_LIMIT, INDEX_LIMIT, atomic_write_text, read_small
from volsegsync.index import (
    Entry,
    FileRecord,
    SegVersion,
    data_files,
    format_entry,
    format_index,
    no_collector,
    parse_index,
    with_data,
    write_index_text,
)
from volsegsync.ops.snapshot import (
    Case,
    Kept,
    Pipeline,
    ProgressFactory,
    Snapshot,
    entry_files,
    index_digest,
    record_index,
    settle,
)
from volsegsync.ops.storing import StoreReport, store_enabled, store_entries


class PairReport(NamedTuple):
    snapshot: Snapshot
    index_changed: bool
    written: bool
    added: list[Entry]  # entries the index did not hold as they are now
    removed: list[tuple[str, str]]  # (volume, segmentation) of index lines now gone
    kept: list[Kept]  # indexed files not on disk (or unreadable) whose records stay
    pruned: list[str]  # records dropped on request (--prune)
    stored: StoreReport | None = None  # what went into the content store (None: not stored)


def run_pair(
    ds: Dataset,
    by: str | None = None,
    jobs: int | None = None,
    progress: ProgressFactory | None = None,
    dry_run: bool = False,
    prune: bool = False,
    store: bool | None = None,
) -> PairReport:
    """Pair the dataset and (unless ``dry_run``) write the index atomically, under the lock.

    ``by`` other than the config's pairing mode is written to the config first, so
    that every later command pairs the same way. Unless ``store`` is False (default:
    the config's ``store.enabled``), the content of every recorded file on disk goes
    into the content store first (docs/store.md)."""
    with contextlib.nullcontext() if dry_run else ds.lock():  # a dry run writes no index
        if by is not None and by != ds.config.pairing.by and not dry_run:
            record_pairing_mode(ds, by)
            ds = Dataset.open(ds.root)
        pipeline = Pipeline(ds, by)
        # the memo files are written once, by record_index (or save, if it is not called)
        snap = pipeline.update(jobs=jobs, progress=progress, save=False)
        try:
            with no_collector():
                return _record(ds, pipeline, snap, jobs, progress, dry_run, prune, store)
        finally:
            pipeline.save()  # nothing left to write when record_index wrote them


def _record(
    ds: Dataset,
    pipeline: Pipeline,
    snap: Snapshot,
    jobs: int | None,
    progress: ProgressFactory | None,
    dry_run: bool,
    prune: bool,
    store: bool | None,
) -> PairReport:
    dirty = snap.cases(snap.dirty_keys)
    before = {k.path for c in dirty for k in c.kept}
    dirty = settle(pipeline, dirty, prune)
    pruned = sorted(before - {k.path for c in dirty for k in c.kept}) if prune else []
    snap.replace(dirty)
    kept = sorted((k for c in dirty for k in c.kept), key=lambda k: k.path)
    storing = not dry_run and (store if store is not None else store_enabled(ds))
    if not storing and not any(_changed(c) for c in dirty) and ds.index_path.exists():
        return PairReport(snap, False, False, [], [], kept, pruned)
    entries = snap.entries
    index = _IndexText(ds, entries)
    stored = None
    if storing:
        index.prepare()
        absent = {k.path for k in kept}  # kept records: nothing on disk to store
        stored = store_entries(
            ds,
            [e2 for e in entries if (e2 := drop_records(e, absent)) is not None]
            if absent
            else entries,
            jobs=jobs,
            progress=progress,
            index_key=index.digest,
        )
        # the index written (after the content it names is stored) while the memo
        # files are (record_index)
        record_index(pipeline, snap, dirty, None, index.write, parallel=jobs != 1)
    elif dry_run:
        index.prepare()
    else:  # the index made and written while the memo files are
        record_index(pipeline, snap, dirty, None, index.prepare_and_write, parallel=jobs != 1)
    changed, old_text = index.changed, index.old_text
    added, removed = _line_changes(entries, old_text or "")
    return PairReport(snap, changed, changed and not dry_run, added, removed, kept, pruned, stored)


class _IndexText:
    """The index's new text, its digest and the old text; written only when it changed."""

    def __init__(self, ds: Dataset, entries: list[Entry]) -> None:
        self.ds, self.entries = ds, entries
        self.text = self.digest = self.old_text = ""
        self.changed = False

    def prepare(self) -> None:
        ds = self.ds
        self.text = format_index(self.entries, ds.config.store.hash, ordered=True)
        self.digest = index_digest(self.text.encode())
        try:
            old = read_small(ds.index_path, INDEX_LIMIT, "index").decode("utf-8")
        except (OSError, UnicodeDecodeError, VolsegsyncError):  # rewritten
            old = None
        self.old_text = old or ""
        self.changed = self.text != old

    def write(self) -> str:
        """Write the text if it changed; its digest (the index's bytes are the text's)."""
        if self.changed:
            write_index_text(self.ds.index_path, self.text)
        return self.digest

    def prepare_and_write(self) -> str:
        self.prepare()
        return self.write()


def _changed(case: Case) -> bool:
    return (format_entry(case.entry) if case.entry else "") != (
        format_entry(case.indexed) if case.indexed else ""
    )


def _paths(entry: Entry | None) -> set[str]:
    return {r.path for r in entry_files(entry)}


def _line_changes(entries: list[Entry], old_text: str) -> tuple[list[Entry], list[tuple[str, str]]]:
    """What a reviewer sees in the index's diff: pairs added, pairs removed."""
    try:
        old_entries = parse_index(old_text)
    except IndexFormatError:
        old_entries = []
    if not old_entries:  # every pair is new, none removed
        return list(entries), []
    old = {_pair_of(e) for e in old_entries}
    added = [e for e in entries if _pair_of(e) not in old]
    removed = sorted({_names(e) for e in old_entries} - {_names(e) for e in entries})
    return added, removed


def _pair_of(e: Entry) -> tuple[FileRecord | None, FileRecord | None, int | None]:
    return (e.volume, e.segmentation, e.version)


def _names(e: Entry) -> tuple[str, str]:
    return (e.volume.path if e.volume else "-", e.segmentation.path if e.segmentation else "-")


# -- the pairing mode lives in the tracked config -----------------------------------------

_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*(#.*)?$")
_BY = re.compile(r"^(\s*by\s*=\s*)(\"[^\"]*\"|'[^']*')(.*)$")


def record_pairing_mode(ds: Dataset, by: str) -> None:
    """Write ``[pairing] by = BY`` into the dataset's config, keeping everything else."""
    try:
        text = read_small(ds.config_path, CONFIG_LIMIT, "config").decode("utf-8")
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as e:
        raise VolsegsyncError(f"{ds.config_path}: cannot read: {e}") from None
    lines = text.splitlines()
    section = None
    start = None
    for i, line in enumerate(lines):
        m = _SECTION.match(line)
        if m:
            section = m.group(1).strip()
            if section == "pairing":
                start = i
            continue
        if section == "pairing" and (b := _BY.match(line)):
            lines[i] = f'{b.group(1)}"{by}"{b.group(3)}'
            break
    else:
        if start is None:
            lines += ["", "[pairing]", f'by = "{by}"']
        else:
            lines.insert(start + 1, f'by = "{by}"')
    new_text = "\n".join(lines) + "\n"
    ds.config_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(ds.config_path, new_text)
    load_config(ds.config_path)  # what was written must read back


# -- rm -----------------------------------------------------------------------------------


class RmReport(NamedTuple):
    removed: list[str]


def run_rm(ds: Dataset, paths: list[str]) -> RmReport:
    """Drop the index records of ``paths`` (files or folders) that are not on disk in
    the scan: volsegsync never deletes image data, so a file still there is an error."""
    with ds.lock():
        entries = ds.read_index()
        scanned = ds.scan().files
        wanted = _selector(paths)
        indexed = {p for e in entries for p in _paths(e)}
        for path in paths:
            if not any(
                wanted(p) for p in indexed if p == path or p.startswith(path.rstrip("/") + "/")
            ):
                raise VolsegsyncError(f"{path}: the index records no such file or folder")
        drop = {p for p in indexed if wanted(p)}
        still = sorted(p for p in drop if p in scanned)
        if still:
            more = f" (and {len(still) - 1} more)" if len(still) > 1 else ""
            raise VolsegsyncError(
                f"{still[0]}: still on disk{more}; "
                "delete or move it first, or exclude it with scan.exclude "
                "(volsegsync never deletes image data)"
            )
        out = [e2 for e in entries if (e2 := drop_records(e, drop)) is not None]
        ds.write_index(out)
        return RmReport(sorted(drop))


def _selector(paths: list[str]) -> Callable[[str], bool]:
    exact = {p.rstrip("/") for p in paths}
    folders = tuple(p.rstrip("/") + "/" for p in paths)
    return lambda f: f in exact or f.startswith(folders)


def drop_records(entry: Entry, drop: set[str]) -> Entry | None:
    """``entry`` without the records of ``drop``; the highest remaining version (or the
    pinned one, if it stays) becomes active."""
    if not (_paths(entry) & drop):
        return entry
    vol = entry.volume if entry.volume and entry.volume.path not in drop else None
    segs = [
        SegVersion(v.version, v.record)
        for v in (
            *entry.older,
            *(
                [SegVersion(entry.version, entry.segmentation)]
                if entry.segmentation is not None
                else []
            ),
        )
        if v.record.path not in drop
    ]
    segs.sort(key=lambda v: (v.version or 0, v.record.path))
    if vol is None and not segs:
        return None
    pinned = entry.pinned and entry.segmentation is not None and entry.segmentation.path not in drop
    if pinned:
        assert entry.segmentation is not None
        active = SegVersion(entry.version, entry.segmentation)
        rest = tuple(v for v in segs if v.record.path != entry.segmentation.path)
    elif segs:
        active, rest = segs[-1], tuple(segs[:-1])
    else:
        return entry._replace(volume=vol, segmentation=None, version=None, older=(), pinned=False)
    data = {v: r for v, r in data_files(entry).items() if r.path not in drop}
    return with_data(
        entry._replace(
            volume=vol,
            segmentation=active.record,
            version=active.version,
            older=rest,
            pinned=pinned,
        ),
        data,
    )
