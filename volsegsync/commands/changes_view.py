"""Rendering of :class:`~volsegsync.changes.Change` lists, shared by ``log`` and ``diff``:
one-line summaries, text lines, and markdown tables per kind for pull-request comments."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from volsegsync.changes import KINDS, Change
from volsegsync.index import Entry
from volsegsync.output import markdown_table, md_code

# kind -> (singular, plural) for summaries
NOUNS = {
    "new_pair": ("pair added", "pairs added"),
    "removed_pair": ("pair removed", "pairs removed"),
    "new_version": ("version bump", "version bumps"),
    "pairing_changed": ("re-paired", "re-paired"),
    "lost_partner": ("lost partner", "lost partners"),
    "modified": ("silent edit", "silent edits"),
    "renamed": ("renamed", "renamed"),
    "new_file": ("unpaired file added", "unpaired files added"),
    "removed_file": ("unpaired file removed", "unpaired files removed"),
    "data_named": ("data file named", "data files named"),
    "data_dropped": ("data file dropped", "data files dropped"),
}

TITLES = {
    "new_pair": "Pairs added",
    "removed_pair": "Pairs removed",
    "new_version": "Version bumps",
    "pairing_changed": "Re-paired",
    "lost_partner": "Lost their partner",
    "modified": "Content changed without a version bump (warning)",
    "renamed": "Renamed or moved",
    "new_file": "Unpaired files added",
    "removed_file": "Unpaired files removed",
    "data_named": "Data files a header now names",
    "data_dropped": "Data files a header no longer names",
}

WARNING_NOTE = (
    "changed without a version bump: training data edited in place "
    "(save a new version instead, or confirm the edit is intended)"
)


def summary(counts: Mapping[str, int]) -> str:
    """``2 pairs added, 1 version bump, 1 silent edit (!)`` in the order of the kinds."""
    parts = []
    for kind in KINDS:
        n = counts.get(kind, 0)
        if n:
            noun = NOUNS[kind][0 if n == 1 else 1]
            parts.append(f"{n} {noun}{' (!)' if kind == 'modified' else ''}")
    return ", ".join(parts) or "no pairing change"


def change_line(c: Change) -> str:
    return (
        f"warning: {c.message} [content changed without a version bump]"
        if c.warning
        else (c.message)
    )


def _v(version: int | None) -> str:
    return "-" if version is None else f"v{version}"


def _size(c: Change) -> str:
    return f"{c.details.get('old_size')} → {c.details.get('new_size')}"


def _hash(c: Change) -> str:
    old, new = str(c.details.get("old_hash", ""))[:12], str(c.details.get("new_hash", ""))[:12]
    return f"{md_code(old)} → {md_code(new)}"


def _p(value: object) -> str:
    return md_code(str(value)) if value else "-"


def _pair(c: Change, entry: Entry | None) -> Sequence[str]:
    version = entry.version if entry else None
    return _p(c.details["volume"]), _p(c.details["segmentation"]), _v(version)


COLUMNS: dict[str, tuple[Sequence[str], Callable[[Change], Sequence[str]]]] = {
    "new_pair": (("Volume", "Segmentation", "Version"), lambda c: _pair(c, c.new)),
    "removed_pair": (("Volume", "Segmentation", "Version"), lambda c: _pair(c, c.old)),
    "new_version": (
        ("Volume", "Was", "Now", "Version"),
        lambda c: (
            _p(c.details["volume"]),
            _p(c.details["old"]),
            _p(c.details["new"]),
            f"{_v(c.details.get('old_version'))} → {_v(c.details.get('new_version'))}",
        ),
    ),
    "pairing_changed": (
        ("Volume", "Was", "Now"),
        lambda c: (_p(c.details["volume"]), _p(c.details["old"]), _p(c.details["new"])),
    ),
    "lost_partner": (
        ("File", "Former partner"),
        lambda c: (_p(c.details["path"]), _p(c.details.get("partner"))),
    ),
    "modified": (("File", "Size (bytes)", "Hash"), lambda c: (_p(c.paths[0]), _size(c), _hash(c))),
    "renamed": (("From", "To"), lambda c: (_p(c.details["from"]), _p(c.details["to"]))),
    "new_file": (("File",), lambda c: (_p(c.details["path"]),)),
    "removed_file": (("File",), lambda c: (_p(c.details["path"]),)),
    "data_named": (
        ("Data file", "Header"),
        lambda c: (_p(c.details["path"]), _p(c.details["segmentation"])),
    ),
    "data_dropped": (
        ("Data file", "Header"),
        lambda c: (_p(c.details["path"]), _p(c.details["segmentation"])),
    ),
}


def markdown(title: str, changes: Sequence[Change], notes: Sequence[str] = ()) -> list[str]:
    """A pull-request comment: title, counts first, then one table per kind."""
    by_kind = {k: [c for c in changes if c.kind == k] for k in KINDS}
    by_kind = {k: v for k, v in by_kind.items() if v}
    lines = [f"### {title}", ""]
    if not changes:
        lines.append("No pairing change.")
    else:
        lines.append(
            f"**{len(changes)} changes**: {summary({k: len(v) for k, v in by_kind.items()})}"
        )
        lines.append("")
        lines.extend(
            markdown_table(
                ("Change", "Count"), [(TITLES[k], str(len(by_kind[k]))) for k in by_kind]
            )
        )
        if "modified" in by_kind:
            n = len(by_kind["modified"])
            lines += ["", f"> **Warning:** {n} file{'s' if n > 1 else ''} {WARNING_NOTE}."]
    for note in notes:
        lines += ["", f"> Note: {note}"]
    for kind, group in by_kind.items():
        columns, row = COLUMNS[kind]
        lines += ["", f"#### {TITLES[kind]} ({len(group)})", ""]
        lines.extend(markdown_table(columns, [row(c) for c in group]))
    return lines
