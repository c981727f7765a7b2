"""``volsegsync handout``: a work package for an annotator.

The selected volumes (hard links where the filesystem allows: they are only
read) and, with ``--with-segmentations``, each pair's active segmentation
(reflinked or copied, never hard-linked: the annotator edits it), written at
their dataset-relative paths below OUT, so ``ingest`` recognises what comes
back by its naming key. ``handout.json`` records the index revision (git HEAD)
and what was handed out with its hashes; ``ingest`` reads it to warn when a
newer version was recorded meanwhile. Nothing is written outside OUT, and OUT
must not be inside the dataset.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from volsegsync.dataset import Dataset
from volsegsync.errors import VolsegsyncError
from volsegsync.fsutil import atomic_write_text, inside, open_in_dataset, source_in_dataset
from volsegsync.index import Entry, FileRecord
from volsegsync.ops.ingest import MANIFEST, MANIFEST_SCHEMA, outside_dataset

_FICLONE = 0x40049409  # Linux ioctl: share the blocks of another file (btrfs, xfs)


class HandedOut(NamedTuple):
    path: str  # relative to OUT (= the dataset path)
    role: str  # volume or segmentation
    how: str  # hardlink, reflink or copy
    digest: str


class HandoutReport(NamedTuple):
    out: Path
    files: list[HandedOut]
    revision: str | None
    manifest: dict[str, Any]


def run_handout(
    ds: Dataset,
    out: Path,
    selectors: list[str],
    pattern: str | None = None,
    with_segmentations: bool = False,
) -> HandoutReport:
    entries = select(ds.read_index(), selectors, pattern)
    if not entries:
        raise VolsegsyncError("nothing selected: no recorded volume matches")
    out = _check_out(ds, out)
    files: list[HandedOut] = []
    items = []
    for e in entries:
        vols = [rec for _, rec in e.channels] if e.channels else [e.volume] if e.volume else []
        for rec in vols:
            files.append(HandedOut(rec.path, "volume", _put(ds, out, rec, True), rec.digest))
        seg = e.segmentation if with_segmentations else None
        if seg is not None:
            files.append(HandedOut(seg.path, "segmentation", _put(ds, out, seg, False), seg.digest))
        items.append(
            {
                "key": e.key,
                "volumes": [{"path": r.path, "hash": r.digest} for r in vols],
                "segmentation": None if seg is None else {"path": seg.path, "hash": seg.digest},
                "version": e.version if e.segmentation else None,
            }
        )
    revision = _revision(ds)
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "dataset": ds.root.name,
        "revision": revision,
        "hash": ds.config.store.hash,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "with_segmentations": with_segmentations,
        "items": items,
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return HandoutReport(out, files, revision, manifest)


def select(entries: list[Entry], selectors: list[str], pattern: str | None) -> list[Entry]:
    """Cases with a volume named by a selector (key, file path, or folder/) and matching
    the glob ``pattern`` (on the key or a file path); every case when neither is given."""
    chosen = []
    for e in entries:
        if e.volume is None and not e.channels:
            continue
        paths = [r.path for r in e.records()]
        names = [e.key, *paths]
        if selectors and not any(_selects(s, names) for s in selectors):
            continue
        if pattern and not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            continue
        chosen.append(e)
    unknown = [
        s
        for s in selectors
        if not any(_selects(s, [e.key, *(r.path for r in e.records())]) for e in entries)
    ]
    if unknown:
        raise VolsegsyncError(f"{unknown[0]}: no recorded pair has this key or file")
    return chosen


def _selects(selector: str, names: list[str]) -> bool:
    s = selector.rstrip("/")
    return any(n == s or n.startswith(s + "/") for n in names)


def _check_out(ds: Dataset, out: Path) -> Path:
    real = outside_dataset(ds, out, "write the work package elsewhere")
    if os.path.lexists(out) and (not real.is_dir() or any(real.iterdir())):
        raise VolsegsyncError(f"{out}: exists and is not an empty folder; nothing is overwritten")
    real.mkdir(parents=True, exist_ok=True)
    return real


def _put(ds: Dataset, out: Path, rec: FileRecord, may_hardlink: bool) -> str:
    dest = out / rec.path
    dest.parent.mkdir(parents=True, exist_ok=True)
    if inside(out, dest.parent) is None and dest.parent != out:
        raise VolsegsyncError(f"{rec.path}: would be written outside {out}")
    try:
        source = source_in_dataset(ds.root, rec.path)
        if may_hardlink:
            with contextlib.suppress(OSError):
                os.link(source, dest, follow_symlinks=False)
                return "hardlink"
        with open_in_dataset(ds.root, rec.path) as src:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
            with os.fdopen(fd, "wb") as dst:
                try:
                    fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
                    return "reflink"
                except OSError as e:
                    if e.errno not in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY):
                        raise
                shutil.copyfileobj(src, dst, 1 << 20)
                return "copy"
    except OSError as e:
        raise VolsegsyncError(f"{rec.path}: cannot hand out: {e.strerror or e}") from None


def _revision(ds: Dataset) -> str | None:
    from volsegsync.history import GitHistory

    try:
        with GitHistory(ds.root) as git:
            return git.head()
    except VolsegsyncError:
        return None
