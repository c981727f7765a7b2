"""``volsegsync status``: what changed since the index was written.

Files are compared by content hash (renames and moves are found by equal
content at a new path); pairs are compared after renames are applied.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, NamedTuple

from volsegsync.dataset import Dataset
from volsegsync.errors import VolsegsyncError
from volsegsync.fsutil import INDEX_LIMIT, read_small
from volsegsync.index import Entry, FileRecord
from volsegsync.ops.snapshot import ProgressFactory, index_digest, snapshot_memo, take_snapshot
from volsegsync.problems import Problem

KINDS = (
    "new_pair",
    "removed_pair",
    "new_version",
    "pairing_changed",
    "lost_partner",
    "modified",
    "renamed",
    "new_file",
    "removed_file",
)


UNREADABLE = ("unreadable", "not_an_image")


class Change(NamedTuple):
    kind: str
    paths: tuple[str, ...]
    message: str
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "paths": list(self.paths),
            "message": self.message,
            "details": self.details,
        }


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
        diff(old, snap.entries),
        snap.problems,
        sum(1 for e in old if e.volume and e.segmentation),
        sum(1 for e in snap.entries if e.volume and e.segmentation),
    )


def _index_digest(ds: Dataset) -> str | None:
    try:
        return index_digest(read_small(ds.index_path, INDEX_LIMIT, "index"))
    except (OSError, VolsegsyncError):
        return None


def diff(old: list[Entry], new: list[Entry]) -> list[Change]:
    """Changes that turn the ``old`` index entries into the ``new`` ones."""
    if old == new:
        return []  # the common case, decided at C speed
    old_files = _files(old)
    new_files = _files(new)
    renames = _renames(old_files, new_files)
    changes = _file_changes(old_files, new_files, renames)
    changes.extend(_pair_changes(old, new, renames))
    order = {k: i for i, k in enumerate(KINDS)}
    changes.sort(key=lambda c: (order[c.kind], c.paths))
    return changes


def _files(entries: list[Entry]) -> dict[str, FileRecord]:
    out: dict[str, FileRecord] = {}
    for e in entries:
        for rec in e.records():  # older versions too: an overwritten v1 shows
            out[rec.path] = rec
    return out


def _renames(old: dict[str, FileRecord], new: dict[str, FileRecord]) -> dict[str, str]:
    """old path -> new path for content that vanished from one path and appeared at another."""
    appeared: dict[str, list[str]] = defaultdict(list)
    for path in sorted(new.keys() - old.keys()):
        appeared[new[path].digest].append(path)
    renames: dict[str, str] = {}
    for path in sorted(old.keys() - new.keys()):
        candidates = appeared.get(old[path].digest)
        if candidates:
            renames[path] = candidates.pop(0)
    return renames


def _file_changes(
    old: dict[str, FileRecord], new: dict[str, FileRecord], renames: dict[str, str]
) -> list[Change]:
    changes = []
    for path, target in renames.items():
        changes.append(
            Change(
                "renamed",
                (path, target),
                f"renamed: {path} -> {target}",
                {"from": path, "to": target},
            )
        )
    for path in sorted(old.keys() & new.keys()):
        a, b = old[path], new[path]
        if a.digest != b.digest:
            changes.append(
                Change(
                    "modified",
                    (path,),
                    f"modified: {path} ({a.size} -> {b.size} bytes)",
                    {
                        "old_size": a.size,
                        "new_size": b.size,
                        "old_hash": a.digest,
                        "new_hash": b.digest,
                    },
                )
            )
    return changes


def _pairs(
    entries: list[Entry], renames: dict[str, str] | None = None
) -> tuple[dict[str, str | None], dict[str, str | None], dict[str, int | None]]:
    """volume -> segmentation, segmentation -> volume, segmentation -> version."""
    rn = renames or {}
    by_vol: dict[str, str | None] = {}
    by_seg: dict[str, str | None] = {}
    versions: dict[str, int | None] = {}
    for e in entries:
        vol = rn.get(e.volume.path, e.volume.path) if e.volume else None
        seg = rn.get(e.segmentation.path, e.segmentation.path) if e.segmentation else None
        if vol is not None:
            by_vol[vol] = seg
        if seg is not None:
            by_seg[seg] = vol
            versions[seg] = e.version
    return by_vol, by_seg, versions


def _pair_changes(old: list[Entry], new: list[Entry], renames: dict[str, str]) -> list[Change]:
    old_vol, old_seg, old_ver = _pairs(old, renames)
    new_vol, new_seg, new_ver = _pairs(new)
    was = {new: old for old, new in renames.items()}  # to name a partner as it was indexed
    changes: list[Change] = []
    for vol, seg in sorted(new_vol.items()):
        before = old_vol.get(vol, "<absent>")
        if seg == before:
            continue
        if seg is None:
            if before != "<absent>":  # a new unpaired volume is listed below
                changes.append(_lost(vol, before, was))
        elif before is None or before == "<absent>":
            if before == "<absent>" and seg not in old_seg:
                changes.append(
                    Change(
                        "new_pair",
                        (vol, seg),
                        f"new pair: {vol} -> {seg}",
                        {"volume": vol, "segmentation": seg},
                    )
                )
            else:
                changes.append(
                    Change(
                        "new_pair",
                        (vol, seg),
                        f"now paired: {vol} -> {seg}",
                        {"volume": vol, "segmentation": seg},
                    )
                )
        elif before not in new_seg and (new_ver.get(seg) or 0) > (old_ver.get(before) or 0):
            changes.append(
                Change(
                    "new_version",
                    (vol, before, seg),
                    f"new segmentation version: {vol} -> {seg} (v{new_ver[seg]}, was {before})",
                    {
                        "volume": vol,
                        "old": before,
                        "new": seg,
                        "old_version": old_ver.get(before),
                        "new_version": new_ver.get(seg),
                    },
                )
            )
        else:
            changes.append(
                Change(
                    "pairing_changed",
                    (vol, before, seg),
                    f"pairing changed: {vol} -> {seg} (was -> {before})",
                    {"volume": vol, "old": before, "new": seg},
                )
            )
    for vol, seg in sorted(old_vol.items()):
        if vol in new_vol:
            continue
        if seg is not None and seg in new_seg:
            if new_seg[seg] is None:
                changes.append(_lost(seg, vol, was))
            continue
        if seg is not None:
            changes.append(
                Change(
                    "removed_pair",
                    (vol, seg),
                    f"removed pair: {vol} -> {seg}",
                    {"volume": vol, "segmentation": seg},
                )
            )
        else:
            changes.append(Change("removed_file", (vol,), f"removed: {vol}", {"path": vol}))
    for lone, partner in sorted(new_seg.items()):
        if partner is None and lone not in old_seg:
            changes.append(
                Change("new_file", (lone,), f"new unpaired segmentation: {lone}", {"path": lone})
            )
    for lone, partner in sorted(old_seg.items()):
        if partner is None and lone not in new_seg:
            changes.append(Change("removed_file", (lone,), f"removed: {lone}", {"path": lone}))
    for lone, partner in sorted(new_vol.items()):
        if partner is None and lone not in old_vol:
            changes.append(
                Change("new_file", (lone,), f"new unpaired volume: {lone}", {"path": lone})
            )
    return changes


def _lost(path: str, partner: str | None, was: dict[str, str]) -> Change:
    """``partner`` as it is now; ``was`` maps renamed paths back to the indexed ones."""
    if partner in was:
        note = f"was paired with {was[partner]}, since moved to {partner}"
    else:
        note = f"was paired with {partner}"
    return Change(
        "lost_partner",
        (path,),
        f"lost its partner: {path} ({note})",
        {"path": path, "partner": partner},
    )
