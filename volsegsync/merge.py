"""Three-way merge of ``volsegsync.index``: the git merge driver's core.

Git merges text line by line, so two branches that each add a case next to the
other in the sorted index conflict although they touched different pairs. This
merge works on the index's own unit instead: the lines of one pair (format 1:
its line, keyed by the volume path, or the segmentation path of an unpaired
segmentation) or of one case (format 2: every line whose first column is the
case key). Per unit, three-way: a side that left it as the base had it takes the
other side's lines; both sides changing it the same way is no conflict; only
both changing it differently is a real conflict, written with git's conflict
markers (ours, base, theirs) at the unit's place in the sorted file.

A unit is taken whole from one side, so what holds within a case (one active
version, say) holds in the result; a path that ends up in two units (the same
file paired differently on each side) makes both a conflict. When the sides are
of different formats, the older ones are upgraded first by reading and writing
them with :mod:`volsegsync.index`, as ``pair`` would.
"""

from __future__ import annotations

from typing import NamedTuple

from volsegsync import index as index_format
from volsegsync.errors import VolsegsyncError

MARKERS = index_format.CONFLICT_MARKERS
SUPPORTED = ("1", "2")


class Parsed(NamedTuple):
    version: str | None  # None: an empty file (the side or the base has no index)
    header: tuple[str, ...]  # the magic line, format 2's hash line, comments
    groups: dict[str, tuple[str, ...]]  # unit key -> its lines, in file order


class MergeResult(NamedTuple):
    text: str
    conflicts: list[str]  # keys of the units both sides changed differently
    unmergeable: str = ""  # why the whole file is one conflict (not an index merged here)

    @property
    def clean(self) -> bool:
        return not self.conflicts


class _Unmergeable(Exception):
    """Not an index this merge understands: the whole file becomes one conflict."""


def parse_units(text: str) -> Parsed:
    """Split an index's text into its header and its units (pairs or cases)."""
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        return Parsed(None, (), {})
    magic = lines[0].split(" ")
    if len(magic) != 2 or magic[0] != index_format.MAGIC or magic[1] not in SUPPORTED:
        raise _Unmergeable("line 1 is not 'volsegsync-index 1' or 'volsegsync-index 2'")
    version = magic[1]
    header = [lines[0]]
    groups: dict[str, list[str]] = {}
    for number, line in enumerate(lines[1:], start=2):
        if line.startswith(MARKERS):
            raise _Unmergeable(f"line {number} is a conflict marker of an earlier merge")
        if not line or line.startswith("#") or "\t" not in line:
            header.append(line)
            continue
        cols = line.split("\t")
        if version == "1":
            if len(cols) < 3:
                raise _Unmergeable(f"line {number} is not an index line")
            key = cols[0] if cols[0] != "-" else cols[2]
        else:
            key = cols[0]
        groups.setdefault(key, []).append(line)
    return Parsed(version, tuple(header), {k: tuple(v) for k, v in groups.items()})


def _paths(version: str, lines: tuple[str, ...]) -> set[str]:
    """The file paths that a unit's lines name."""
    out: set[str] = set()
    for line in lines:
        cols = line.split("\t")
        named = (cols[0], cols[2]) if version == "1" else (cols[-1],)
        out.update(p for p in named if p != "-")
    return out


def _upgrade(text: str) -> str:
    """An older index as the current writer of :mod:`volsegsync.index` writes it."""
    try:
        return index_format.format_index(index_format.parse_index(text, "index"))
    except VolsegsyncError as e:
        raise _Unmergeable(f"cannot upgrade an older index: {e}") from None


def _pick(
    base: tuple[str, ...], ours: tuple[str, ...], theirs: tuple[str, ...]
) -> tuple[str, ...] | None:
    """Three-way choice for one unit; ``None`` for a conflict."""
    if ours == theirs or theirs == base:
        return ours
    if ours == base:
        return theirs
    return None


def merge_index(base: str, ours: str, theirs: str) -> MergeResult:
    """Merge three index texts; a conflict leaves markers in the text."""
    try:
        return _merge(base, ours, theirs)
    except _Unmergeable as e:
        whole = _conflict_block(ours.splitlines(), (), theirs.splitlines())
        return MergeResult(whole, ["(the whole file)"], str(e))


def _merge(base_text: str, ours_text: str, theirs_text: str) -> MergeResult:
    texts = [base_text, ours_text, theirs_text]
    parsed = [parse_units(t) for t in texts]
    versions = {p.version for p in parsed if p.version is not None}
    if len(versions) > 1:  # upgrade the older sides as `pair` would
        newest = max(versions)
        texts = [
            t if p.version in (None, newest) else _upgrade(t)
            for t, p in zip(texts, parsed, strict=True)
        ]
        parsed = [parse_units(t) for t in texts]
        if len({p.version for p in parsed if p.version is not None}) > 1:
            raise _Unmergeable("the sides are of different index formats")
    base, ours, theirs = parsed
    version = ours.version or theirs.version or base.version
    if version is None:
        return MergeResult("", [])
    header = _pick(base.header, ours.header, theirs.header)
    conflicts: list[str] = []
    if header is None:
        raise _Unmergeable("both sides changed the index header differently")
    merged: dict[str, tuple[str, ...]] = {}
    for key in sorted(set(base.groups) | set(ours.groups) | set(theirs.groups)):
        b, o, t = (p.groups.get(key, ()) for p in (base, ours, theirs))
        chosen = _pick(b, o, t)
        if chosen is None:
            conflicts.append(key)
        elif chosen:
            merged[key] = chosen
    owners: dict[str, list[str]] = {}
    for key, lines in merged.items():
        for path in _paths(version, lines):
            owners.setdefault(path, []).append(key)
    for keys in owners.values():
        if len(keys) > 1:
            conflicts.extend(k for k in keys if k not in conflicts)
    out = list(header)
    for key in sorted(set(merged) | set(conflicts)):
        if key in conflicts:
            b, o, t = (p.groups.get(key, ()) for p in (base, ours, theirs))
            out.append(_conflict_block(o, b, t).rstrip("\n"))
        else:
            out.extend(merged[key])
    text = "\n".join(out) + "\n"
    if not conflicts:  # unit by unit right, and the whole must be a valid index too
        try:
            index_format.parse_index(text, "the merged index")
        except VolsegsyncError as e:
            raise _Unmergeable(str(e)) from None
    return MergeResult(text, sorted(conflicts))


def _conflict_block(
    ours: tuple[str, ...] | list[str], base: tuple[str, ...], theirs: tuple[str, ...] | list[str]
) -> str:
    lines = ["<<<<<<< ours", *ours]
    if base:
        lines += ["||||||| base", *base]
    lines += ["=======", *theirs, ">>>>>>> theirs"]
    return "\n".join(lines) + "\n"
