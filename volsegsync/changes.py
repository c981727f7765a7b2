"""What changed between two indexes: the one comparison behind ``status``, ``log`` and ``diff``.

:func:`diff` turns two lists of index entries into :class:`Change` records. Files
are matched by content hash first (renames and moves: the same content vanished
from one path and appeared at another), then pairs are compared with the
renames applied. Each change carries the index entries (and, for file-level
changes, the file records) before and after, so callers can render, filter by
pair or map segmentation versions to commits without parsing messages.

A copy is not a rename: content that appears at a new path while the old path
is still recorded (an older segmentation version kept in the index) or still on
disk (``present``) is a new file or version (``cp X-v2 X-v3`` is a version bump;
``mv X-v2 X-v3`` a rename).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from typing import Any, NamedTuple

from volsegsync.errors import IndexFormatError
from volsegsync.index import Entry, FileRecord, check_relative_path
from volsegsync.naming import CONTROL_CHARS

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
    "data_named",
    "data_dropped",
)

#: kinds a reviewer must look at twice: content changed in place, without a version bump
WARNING_KINDS = frozenset({"modified"})

_ORDER = {k: i for i, k in enumerate(KINDS)}


class Change(NamedTuple):
    kind: str
    paths: tuple[str, ...]
    message: str
    details: dict[str, Any]
    old: Entry | None = None  # the index entry (pair or lone file) before the change
    new: Entry | None = None  # ... and after it
    old_file: FileRecord | None = None  # file-level changes: the file before
    new_file: FileRecord | None = None  # ... and after

    @property
    def warning(self) -> bool:
        """Content changed without a version bump: a silent edit of training data."""
        return self.kind in WARNING_KINDS

    def names(self) -> set[str]:
        """The paths this change touches, before and after (to select changes by pair):
        its own paths and the volume and active segmentation of its entries."""
        out = set(self.paths)
        for e in (self.old, self.new):
            if e is not None:
                out.update(r.path for r in (e.volume, e.segmentation) if r is not None)
        return out

    def to_json(self, entries: bool = False) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "kind": self.kind,
            "paths": list(self.paths),
            "message": self.message,
            "details": self.details,
        }
        if entries:
            doc["warning"] = self.warning
            doc["old"] = entry_json(self.old)
            doc["new"] = entry_json(self.new)
        return doc


def record_json(rec: FileRecord | None) -> dict[str, Any] | None:
    return None if rec is None else {"path": rec.path, "size": rec.size, "hash": rec.digest}


def entry_json(e: Entry | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {
        "key": e.key or None,
        "volume": record_json(e.volume),
        "segmentation": record_json(e.segmentation),
        "version": e.version,
    }


def counts(changes: Iterable[Change]) -> dict[str, int]:
    """kind -> number of changes, in the order of :data:`KINDS`."""
    found: dict[str, int] = defaultdict(int)
    for c in changes:
        found[c.kind] += 1
    return {k: found[k] for k in KINDS if k in found}


def diff(old: list[Entry], new: list[Entry], present: Collection[str] = ()) -> list[Change]:
    """Changes that turn the ``old`` index entries into the ``new`` ones.

    ``present``: paths still on disk, which are never the source of a rename (a
    file copied to a new name is a new file). Works on any subset of entries that
    holds every entry touching a changed file: ``log`` passes only the lines that
    changed between two commits.
    """
    if old == new:
        return []  # the common case, decided at C speed
    old_at = _by_file(old)
    new_at = _by_file(new)
    renames = _renames(old_at, new_at, present)
    changes = _file_changes(old_at, new_at, renames)
    changes.extend(_pair_changes(old, new, renames, old_at, new_at))
    changes.extend(_data_changes(old, new, renames, old_at, new_at))
    changes.sort(key=lambda c: (_ORDER[c.kind], c.paths))
    return changes


def _by_file(entries: list[Entry]) -> dict[str, tuple[FileRecord, Entry]]:
    out: dict[str, tuple[FileRecord, Entry]] = {}
    for e in entries:
        for rec in e.records():  # older versions and data files too: a copy is no rename
            out[rec.path] = (rec, e)
    return out


def _renames(
    old: dict[str, tuple[FileRecord, Entry]],
    new: dict[str, tuple[FileRecord, Entry]],
    present: Collection[str],
) -> dict[str, str]:
    """old path -> new path for content that vanished from one path and appeared at another."""
    appeared: dict[str, list[str]] = defaultdict(list)
    for path in sorted(new.keys() - old.keys()):
        appeared[new[path][0].digest].append(path)
    renames: dict[str, str] = {}
    for path in sorted(old.keys() - new.keys()):
        if path in present:
            continue  # still on disk: whatever has its content is a copy
        candidates = appeared.get(old[path][0].digest)
        if candidates:
            renames[path] = candidates.pop(0)
    return renames


def _file_changes(
    old: dict[str, tuple[FileRecord, Entry]],
    new: dict[str, tuple[FileRecord, Entry]],
    renames: dict[str, str],
) -> list[Change]:
    changes = []
    for path, target in renames.items():
        (a, ea), (b, eb) = old[path], new[target]
        changes.append(
            Change(
                "renamed",
                (path, target),
                f"renamed: {path} -> {target}",
                {"from": path, "to": target},
                ea,
                eb,
                a,
                b,
            )
        )
    for path in sorted(old.keys() & new.keys()):
        (a, ea), (b, eb) = old[path], new[path]
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
                    ea,
                    eb,
                    a,
                    b,
                )
            )
    return changes


def _data_files(entries: list[Entry]) -> dict[str, str]:
    """Detached NRRD data file -> the segmentation (header) that names it."""
    out: dict[str, str] = {}
    for e in entries:
        if e.seg_data is not None and e.segmentation is not None:
            out[e.seg_data.path] = e.segmentation.path
        for v in e.older:
            if v.data is not None:
                out[v.data.path] = v.record.path
    return out


def _data_changes(
    old: list[Entry],
    new: list[Entry],
    renames: dict[str, str],
    old_at: dict[str, tuple[FileRecord, Entry]],
    new_at: dict[str, tuple[FileRecord, Entry]],
) -> list[Change]:
    """A data file that a header, recorded before and after, stopped or started naming
    (the header's own change is ``modified``; a pair added or removed takes its
    data files along without a change of their own)."""
    was, now = _data_files(old), _data_files(new)
    moved_to = set(renames.values())
    changes = []
    for path in sorted(was.keys() - now.keys() - renames.keys()):
        seg = was[path]
        if seg in new_at:
            changes.append(
                Change(
                    "data_dropped",
                    (path,),
                    f"data file no longer recorded: {path} (its header {seg} no longer names it)",
                    {"path": path, "segmentation": seg},
                    old_at[path][1],
                    new_at[seg][1],
                    old_at[path][0],
                    None,
                )
            )
    for path in sorted(now.keys() - was.keys() - moved_to):
        seg = now[path]
        if seg in old_at:
            changes.append(
                Change(
                    "data_named",
                    (path,),
                    f"data file now recorded: {path} (named by its header {seg})",
                    {"path": path, "segmentation": seg},
                    old_at[seg][1],
                    new_at[path][1],
                    None,
                    new_at[path][0],
                )
            )
    return changes


class _Pairs(NamedTuple):
    by_vol: dict[str, str | None]  # volume -> segmentation
    by_seg: dict[str, str | None]  # segmentation -> volume
    versions: dict[str, int | None]  # segmentation -> version


def _pairs(entries: list[Entry], renames: dict[str, str] | None = None) -> _Pairs:
    rn = renames or {}
    out = _Pairs({}, {}, {})
    for e in entries:
        vol = rn.get(e.volume.path, e.volume.path) if e.volume else None
        seg = rn.get(e.segmentation.path, e.segmentation.path) if e.segmentation else None
        if vol is not None:
            out.by_vol[vol] = seg
        if seg is not None:
            out.by_seg[seg] = vol
            out.versions[seg] = e.version
    return out


def _pair_changes(
    old: list[Entry],
    new: list[Entry],
    renames: dict[str, str],
    old_at: dict[str, tuple[FileRecord, Entry]],
    new_at: dict[str, tuple[FileRecord, Entry]],
) -> list[Change]:
    was_pairs = _pairs(old, renames)
    now = _pairs(new)
    was = {new: old for old, new in renames.items()}  # to name a partner as it was indexed

    def before(path: str | None) -> Entry | None:
        """The old entry of a path as it is named now (renames undone)."""
        hit = old_at.get(was.get(path, path)) if path else None
        return hit[1] if hit else None

    def after(path: str | None) -> Entry | None:
        hit = new_at.get(path) if path else None
        return hit[1] if hit else None

    changes: list[Change] = []
    for vol, seg in sorted(now.by_vol.items()):
        prior = was_pairs.by_vol.get(vol, "<absent>")
        if seg == prior:
            continue
        if seg is None:
            if prior != "<absent>":  # a new unpaired volume is listed below
                changes.append(_lost(vol, prior, was, before(vol), after(vol)))
        elif prior is None or prior == "<absent>":
            fresh = prior == "<absent>" and seg not in was_pairs.by_seg
            changes.append(
                Change(
                    "new_pair",
                    (vol, seg),
                    f"{'new pair' if fresh else 'now paired'}: {vol} -> {seg}",
                    {"volume": vol, "segmentation": seg},
                    before(vol) or before(seg),
                    after(vol),
                )
            )
        elif prior not in now.by_seg and (now.versions.get(seg) or 0) > (
            was_pairs.versions.get(prior) or 0
        ):
            changes.append(
                Change(
                    "new_version",
                    (vol, prior, seg),
                    f"new segmentation version: {vol} -> {seg} (v{now.versions[seg]}, was {prior})",
                    {
                        "volume": vol,
                        "old": prior,
                        "new": seg,
                        "old_version": was_pairs.versions.get(prior),
                        "new_version": now.versions.get(seg),
                    },
                    before(vol),
                    after(vol),
                    _record(old_at, was.get(prior, prior)),
                    _record(new_at, seg),
                )
            )
        else:
            changes.append(
                Change(
                    "pairing_changed",
                    (vol, prior, seg),
                    f"pairing changed: {vol} -> {seg} (was -> {prior})",
                    {"volume": vol, "old": prior, "new": seg},
                    before(vol),
                    after(vol),
                )
            )
    for vol, seg in sorted(was_pairs.by_vol.items()):
        if vol in now.by_vol:
            continue
        if seg is not None and seg in now.by_seg:
            if now.by_seg[seg] is None:
                changes.append(_lost(seg, vol, was, before(seg), after(seg)))
            continue
        if seg is not None:
            changes.append(
                Change(
                    "removed_pair",
                    (vol, seg),
                    f"removed pair: {vol} -> {seg}",
                    {"volume": vol, "segmentation": seg},
                    before(vol),
                    None,
                )
            )
        else:
            changes.append(
                Change("removed_file", (vol,), f"removed: {vol}", {"path": vol}, before(vol), None)
            )
    for lone, partner in sorted(now.by_seg.items()):
        if partner is None and lone not in was_pairs.by_seg:
            changes.append(
                Change(
                    "new_file",
                    (lone,),
                    f"new unpaired segmentation: {lone}",
                    {"path": lone},
                    None,
                    after(lone),
                )
            )
    for lone, partner in sorted(was_pairs.by_seg.items()):
        if partner is None and lone not in now.by_seg:
            changes.append(
                Change(
                    "removed_file", (lone,), f"removed: {lone}", {"path": lone}, before(lone), None
                )
            )
    for lone, partner in sorted(now.by_vol.items()):
        if partner is None and lone not in was_pairs.by_vol:
            changes.append(
                Change(
                    "new_file",
                    (lone,),
                    f"new unpaired volume: {lone}",
                    {"path": lone},
                    None,
                    after(lone),
                )
            )
    return changes


def _record(at: dict[str, tuple[FileRecord, Entry]], path: str) -> FileRecord | None:
    hit = at.get(path)
    return hit[0] if hit else None


def _lost(
    path: str, partner: str | None, was: dict[str, str], old: Entry | None, new: Entry | None
) -> Change:
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
        old,
        new,
    )


# -- plain data (caches) ------------------------------------------------------------------

_PATH_DETAILS = frozenset({"volume", "segmentation", "old", "new", "from", "to", "path", "partner"})
_HEX = frozenset("0123456789abcdef")


def to_plain(c: Change) -> list[Any]:
    """A change as plain lists, strings and numbers (JSON or marshal)."""
    return [
        c.kind,
        list(c.paths),
        c.message,
        c.details,
        _entry_plain(c.old),
        _entry_plain(c.new),
        _record_plain(c.old_file),
        _record_plain(c.new_file),
    ]


def from_plain(data: Any, checked: set[str]) -> Change:
    """A change from :func:`to_plain` output that may have been tampered with: every
    field's type, every path (:func:`check_relative_path`) and every hash are checked.
    ``checked`` remembers paths already found good. Raises ``ValueError``."""
    if not isinstance(data, list) or len(data) != 8:
        raise ValueError("not a change")
    kind, paths, message, details, old, new, old_file, new_file = data
    if kind not in _ORDER or not isinstance(paths, list) or not isinstance(details, dict):
        raise ValueError("bad change")
    if not isinstance(message, str) or CONTROL_CHARS.search(message):
        raise ValueError("bad message")
    for p in paths:
        _path(p, checked)
    for k, v in details.items():
        if not isinstance(k, str) or not (v is None or isinstance(v, (str, int))):
            raise ValueError("bad details")
        if isinstance(v, str):
            if k in _PATH_DETAILS:
                _path(v, checked)
            elif CONTROL_CHARS.search(v):
                raise ValueError("bad details")
    return Change(
        kind,
        tuple(paths),
        message,
        details,
        _entry_from(old, checked),
        _entry_from(new, checked),
        _record_from(old_file, checked),
        _record_from(new_file, checked),
    )


def _record_plain(r: FileRecord | None) -> list[Any] | None:
    return None if r is None else [r.path, r.size, r.digest]


def _entry_plain(e: Entry | None) -> list[Any] | None:
    if e is None:
        return None
    return [_record_plain(e.volume), _record_plain(e.segmentation), e.version, e.key]


def _path(p: Any, checked: set[str]) -> str:
    if not isinstance(p, str):
        raise ValueError("bad path")
    if p not in checked:
        try:
            check_relative_path(p, "cache")
        except IndexFormatError as e:
            raise ValueError(str(e)) from None
        checked.add(p)
    return p


def _record_from(data: Any, checked: set[str]) -> FileRecord | None:
    if data is None:
        return None
    if not isinstance(data, list) or len(data) != 3:
        raise ValueError("bad record")
    path, size, digest = data
    if not isinstance(size, int) or size < 0 or not isinstance(digest, str):
        raise ValueError("bad record")
    if not digest or len(digest) > 128 or not _HEX.issuperset(digest):
        raise ValueError("bad hash")
    return FileRecord(_path(path, checked), size, digest)


def _entry_from(data: Any, checked: set[str]) -> Entry | None:
    if data is None:
        return None
    if not isinstance(data, list) or len(data) != 4:
        raise ValueError("bad entry")
    vol, seg, version, key = data
    if version is not None and (not isinstance(version, int) or version < 0):
        raise ValueError("bad version")
    if not isinstance(key, str) or CONTROL_CHARS.search(key):
        raise ValueError("bad key")
    entry = Entry(_record_from(vol, checked), _record_from(seg, checked), version, key=key)
    return entry
