"""The version comparisons of a change set: every pair re-annotated between two indexes.

``report --rev A..B`` and ``diff --images DIR`` call :func:`compare_changes` with
the :class:`~volsegsync.changes.Change` list of :func:`volsegsync.changes.diff`.
A pair is re-annotated when its active segmentation got a new version
(``new_version``) or changed content without one (``modified``, the segmentation
or its detached data file). Each is compared as ``compare`` does, from content
materialised out of the store (:class:`~volsegsync.view.sources.Workspace`), and
the numbers and picture are cached in ``.volsegsync/state/compare/`` under a key
made of everything that decides them (the content hashes of the volume and of
both versions with their data files, the label set, this code's version): a
re-run redraws only what changed. A pair that cannot be compared (content not
fetched, a file that cannot be decoded) gets its one-line reason; the batch goes on.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import xxhash

from volsegsync.changes import Change
from volsegsync.dataset import Dataset
from volsegsync.errors import VolsegsyncError
from volsegsync.fsutil import atomic_write_bytes, read_small
from volsegsync.index import Entry, FileRecord
from volsegsync.ops.compare import compare_files, result_json
from volsegsync.view import require_pillow
from volsegsync.view.sources import Workspace, versions

COMPARE_VERSION = "1"  # bump when comparisons are computed or drawn differently
CACHE = "compare"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class Reannotation(NamedTuple):
    key: str  # the case key
    kind: str  # "new_version" or "modified"
    old: Entry
    new: Entry
    old_seg: FileRecord
    new_seg: FileRecord
    old_version: int | None
    new_version: int | None


class VersionComparison(NamedTuple):
    change: Reannotation
    numbers: dict[str, Any] | None  # labels, added, removed, changed_voxels, alignment
    picture: str | None  # path of the picture written (under the output folder)
    error: str | None  # why it could not be compared

    def to_json(self) -> dict[str, Any]:
        c = self.change
        doc: dict[str, Any] = {
            "key": c.key,
            "kind": c.kind,
            "old": {"segmentation": c.old_seg.path, "version": c.old_version,
                    "hash": c.old_seg.digest},
            "new": {"segmentation": c.new_seg.path, "version": c.new_version,
                    "hash": c.new_seg.digest},
            "picture": self.picture,
            "error": self.error,
        }  # fmt: skip
        for field in ("alignment", "labels", "added", "removed", "changed_voxels"):
            doc[field] = (self.numbers or {}).get(field)
        return doc


def reannotations(changes: Sequence[Change]) -> list[Reannotation]:
    """The pairs whose active segmentation changed (by a version bump or in place)."""
    out: dict[tuple[str, str], Reannotation] = {}
    for c in changes:
        old, new = c.old, c.new
        if old is None or new is None or old.segmentation is None or new.segmentation is None:
            continue
        if c.kind == "new_version":
            if c.old_file is None or c.new_file is None:
                continue
            old_seg, new_seg = c.old_file, c.new_file
        elif c.kind == "modified" and c.old_file is not None:
            touched = {r.path for r in (old.segmentation, old.seg_data) if r is not None}
            if c.old_file.path not in touched or new.segmentation.path != old.segmentation.path:
                continue  # a volume, or an older version, edited in place
            old_seg, new_seg = old.segmentation, new.segmentation
        else:
            continue
        item = Reannotation(
            new.key or old.key,
            c.kind,
            old,
            new,
            old_seg,
            new_seg,
            _version_of(old, old_seg),
            _version_of(new, new_seg),
        )
        out.setdefault((old_seg.path + old_seg.digest, new_seg.path + new_seg.digest), item)
    return list(out.values())


def _version_of(entry: Entry, record: FileRecord) -> int | None:
    return next((v for v, r, _ in versions(entry) if r == record), None)


def _data_of(entry: Entry, record: FileRecord) -> FileRecord | None:
    return next((d for _, r, d in versions(entry) if r == record), None)


def cache_key(ds: Dataset, item: Reannotation) -> str:
    """Everything that decides the numbers and the picture."""
    digests = [
        item.old.volume.digest if item.old.volume else None,
        item.old_seg.digest,
        (_data_of(item.old, item.old_seg) or item.old_seg).digest,
        item.new_seg.digest,
        (_data_of(item.new, item.new_seg) or item.new_seg).digest,
    ]
    labels = sorted(ds.config.verify.labels.items())
    text = json.dumps([COMPARE_VERSION, digests, labels])
    return xxhash.xxh3_128_hexdigest(text.encode())


def picture_name(item: Reannotation, key: str) -> str:
    """``CASE-vA-vB-HASH.png``: readable, and unique per content."""
    case = _UNSAFE.sub("_", item.key)[:80] or "case"
    a = "-" if item.old_version is None else f"v{item.old_version}"
    b = "-" if item.new_version is None else f"v{item.new_version}"
    return f"{case}-{a}-{b}-{key[:12]}.png".replace("--", "-")


def compare_changes(
    ds: Dataset,
    changes: Sequence[Change],
    output: Path | None,
    algorithms: tuple[str | None, str | None] = (None, None),
    progress: Callable[[int], None] | None = None,
) -> list[VersionComparison]:
    """Compare every re-annotated pair of ``changes``; pictures into ``output`` when given."""
    items = reannotations(changes)
    if not items:
        return []
    if output is not None:
        require_pillow()
        if output.is_symlink() or (output.exists() and not output.is_dir()):
            raise VolsegsyncError(f"{output}: not a folder (a symbolic link is not followed)")
        output.mkdir(parents=True, exist_ok=True)
    cache = ds.state_dir / CACHE
    cache.mkdir(parents=True, exist_ok=True)
    results = []
    with Workspace(ds) as ws:
        for item in items:
            results.append(_one(ds, ws, item, cache, output, algorithms))
            if progress:
                progress(1)
    return results


def _one(
    ds: Dataset,
    ws: Workspace,
    item: Reannotation,
    cache: Path,
    output: Path | None,
    algorithms: tuple[str | None, str | None],
) -> VersionComparison:
    key = cache_key(ds, item)
    numbers_file, picture_file = cache / f"{key}.json", cache / f"{key}.png"
    numbers = _cached(numbers_file)
    png: bytes | None = None
    if output is not None and numbers is not None:
        try:
            png = read_small(picture_file, 64 << 20, "picture")
        except (OSError, VolsegsyncError):
            numbers = None  # draw it again
    if numbers is None:
        try:
            a = ws.entry_files(
                item.old, item.old_version, item.old_seg, algorithms[0], "store",
                with_volume=output is not None,
            )  # fmt: skip
            b = ws.entry_files(
                item.new, item.new_version, item.new_seg, algorithms[1], "store", False
            )
            result = compare_files(ds, a, b, picture=output is not None)
        except VolsegsyncError as e:
            return VersionComparison(item, None, None, str(e))
        numbers = result_json(result)
        if result.figure is not None:
            buf = io.BytesIO()
            result.figure.picture.save(buf, format="PNG")
            png = buf.getvalue()
            atomic_write_bytes(picture_file, png)
        atomic_write_bytes(numbers_file, json.dumps(numbers).encode())
    written = None
    if output is not None and png is not None:
        target = output / picture_name(item, key)
        if not (target.is_file() and not target.is_symlink() and target.read_bytes() == png):
            atomic_write_bytes(target, png)
        written = str(target)
    return VersionComparison(item, numbers, written, None)


def _cached(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(read_small(path, 16 << 20, "cached comparison"))
    except (OSError, VolsegsyncError, ValueError):
        return None
    return data if isinstance(data, dict) and "labels" in data else None
