"""The index file: ``volsegsync.index``, tracked in git, reviewed in pull requests.

Format (version 1), UTF-8 text, one record per line, fields separated by TAB::

    volsegsync-index 1
    # volume -> segmentation  version  volume-size  volume-xxh3-128  seg-size  seg-xxh3-128
    C01-Back-D22061998.nii.gz  ->  C01-Back-D22061998-v2.nrrd  2  1048576  3f1c…  2048  91ab…

A missing side (an unpaired file) is ``-`` in every one of its columns; an
unversioned segmentation has version ``-``. Lines are sorted by volume path
(then segmentation path), so one dataset gives one byte-identical file.
Lines starting with ``#`` are comments. The file may come from someone else's
branch: it is parsed as untrusted input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from volsegsync.errors import IndexFormatError, VolsegsyncError
from volsegsync.fsutil import atomic_write_text
from volsegsync.naming import bad_name_reason

MAGIC = "volsegsync-index"
VERSION = 1
COLUMNS = "volume -> segmentation\tversion\tvolume-size\tvolume-xxh3-128\tseg-size\tseg-xxh3-128"
_HASH = re.compile(r"[0-9a-f]{32}")
RESERVED_DIRS = frozenset({".git", ".volsegsync"})


class FileRecord(NamedTuple):
    path: str
    size: int
    digest: str


class Entry(NamedTuple):
    """One line of the index: a pair, or an unpaired volume or segmentation."""

    volume: FileRecord | None
    segmentation: FileRecord | None
    version: int | None

    @property
    def sort_key(self) -> tuple[str, str]:
        vol = self.volume.path if self.volume else ""
        seg = self.segmentation.path if self.segmentation else ""
        return (vol or seg, seg)


PlainEntry = tuple["tuple[str, int, str] | None", "tuple[str, int, str] | None", "int | None"]


def to_plain(entries: Iterable[Entry]) -> list[PlainEntry]:
    """Entries as plain tuples (for :mod:`marshal` memos in the state folder)."""
    return [
        (
            (e.volume.path, e.volume.size, e.volume.digest) if e.volume else None,
            (s.path, s.size, s.digest) if (s := e.segmentation) else None,
            e.version,
        )
        for e in entries
    ]


def from_plain(rows: Iterable[PlainEntry]) -> list[Entry]:
    return [
        Entry(FileRecord(*v) if v else None, FileRecord(*s) if s else None, n) for v, s, n in rows
    ]


def format_index(entries: Iterable[Entry]) -> str:
    lines = [f"{MAGIC} {VERSION}", f"# {COLUMNS}"]
    for e in sorted(entries, key=lambda e: e.sort_key):
        lines.append(format_entry(e))
    return "\n".join(lines) + "\n"


def format_entry(e: Entry) -> str:
    """One line of the index (without its line end)."""
    vol = e.volume
    seg = e.segmentation
    version = "-" if e.version is None else str(e.version)
    return "\t".join(
        [
            vol.path if vol else "-",
            "->",
            seg.path if seg else "-",
            version,
            str(vol.size) if vol else "-",
            vol.digest if vol else "-",
            str(seg.size) if seg else "-",
            seg.digest if seg else "-",
        ]
    )


def write_index(path: Path, entries: Iterable[Entry]) -> None:
    try:
        atomic_write_text(path, format_index(entries))
    except OSError as e:
        raise VolsegsyncError(f"{path}: cannot write the index: {e.strerror or e}") from None


def read_index(path: Path) -> list[Entry]:
    """Parse an index file; a missing file is an empty index."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise IndexFormatError(f"{path}: cannot read: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise IndexFormatError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    return parse_index(text, str(path))


def parse_index(text: str, name: str = "index") -> list[Entry]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        return []
    _check_conflict(lines, name)
    _check_magic(lines[0].removesuffix("\r"), name)
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        line = line.removesuffix("\r")  # a checkout with CRLF line ends reads the same
        if not line or line.startswith("#"):
            continue
        entry = _parse_line(line, f"{name}:{number}")
        for rec in (entry.volume, entry.segmentation):
            if rec is None:
                continue
            if rec.path in seen:
                raise IndexFormatError(
                    f"{name}:{number}: {rec.path} is already listed on line {seen[rec.path]}"
                )
            seen[rec.path] = number
        entries.append(entry)
    return entries


CONFLICT_MARKERS = ("<<<<<<<", "|||||||", "=======", ">>>>>>>")


def _check_conflict(lines: list[str], name: str) -> None:
    """An unfinished git merge gets one line saying so, and what to run."""
    for number, line in enumerate(lines, start=1):
        if line.startswith(CONFLICT_MARKERS):
            raise IndexFormatError(
                f"{name}:{number}: git merge conflict markers: the merge is unfinished. Keep the "
                "right lines between <<<<<<< and >>>>>>>, or take one side ('git checkout --ours "
                "volsegsync.index') and run 'volsegsync pair'; then 'git add volsegsync.index' "
                "('volsegsync install-hooks' installs a driver that merges the index per pair)"
            )


def _check_magic(first: str, name: str) -> None:
    parts = first.split(" ")
    if len(parts) != 2 or parts[0] != MAGIC:
        raise IndexFormatError(f"{name}:1: not a volsegsync index (expected '{MAGIC} {VERSION}')")
    if parts[1] != str(VERSION):
        raise IndexFormatError(
            f"{name}:1: index format version {parts[1]!r} is not supported "
            f"(this volsegsync reads version {VERSION}; upgrade volsegsync)"
        )


def _parse_line(line: str, where: str) -> Entry:
    cols = line.split("\t")
    if len(cols) != 8 or cols[1] != "->":
        raise IndexFormatError(
            f"{where}: malformed line: expected 8 tab-separated columns "
            f"'volume -> segmentation version size hash size hash', found {len(cols)}"
        )
    vol = _record(cols[0], cols[4], cols[5], where, "volume")
    seg = _record(cols[2], cols[6], cols[7], where, "segmentation")
    if vol is None and seg is None:
        raise IndexFormatError(f"{where}: a line needs a volume or a segmentation")
    version: int | None = None
    if cols[3] != "-":
        if not cols[3].isdigit() or seg is None:
            raise IndexFormatError(f"{where}: bad version {cols[3]!r}")
        version = int(cols[3])
    return Entry(vol, seg, version)


def _record(path: str, size: str, digest: str, where: str, what: str) -> FileRecord | None:
    if path == "-":
        if size != "-" or digest != "-":
            raise IndexFormatError(f"{where}: no {what} path, but a {what} size or hash")
        return None
    check_relative_path(path, where)
    if not size.isdigit():
        raise IndexFormatError(f"{where}: bad {what} size {size!r}")
    if not _HASH.fullmatch(digest):
        raise IndexFormatError(
            f"{where}: bad {what} hash {digest!r} (expected 32 hex digits of xxh3-128)"
        )
    return FileRecord(path, int(size), digest)


def check_relative_path(path: str, where: str) -> None:
    """Reject any path that could escape the dataset root or is not canonical."""
    bad = bad_name_reason(path)
    if bad:
        raise IndexFormatError(f"{where}: {path!r}: {bad}")
    if path.startswith("/") or "\\" in path or (len(path) > 1 and path[1] == ":"):
        raise IndexFormatError(
            f"{where}: {path!r} is absolute; paths must be relative to the dataset"
        )
    parts = path.split("/")
    if any(p in ("..", ".", "") for p in parts):
        raise IndexFormatError(f"{where}: {path!r} escapes or is not a plain path in the dataset")
    if parts[0] in RESERVED_DIRS:
        raise IndexFormatError(
            f"{where}: {path!r} points into {parts[0]}/, which no index may name"
        )
