"""Where each ingested segmentation version came from: ``.volsegsync/provenance.tsv``.

Tracked and diff-readable: one line per ingested file, sorted by path, TAB-separated::

    volsegsync-provenance 1
    # path	hash	source	annotator	message	date
    segs/C01-…-v2.nrrd	91ab…	delivery/Segmentation.seg.nrrd	anna	fixed L4	2026-11-26

The file may come from another branch, so it is read as hostile input: capped in
size, UTF-8, every line checked (field count, a relative path, a digest of hex
digits); a bad line is skipped with a note, never trusted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from volsegsync.errors import VolsegsyncError
from volsegsync.fsutil import atomic_write_text, read_small
from volsegsync.index import FileRecord, check_relative_path

PROVENANCE_FILE = "provenance.tsv"
MAGIC = "volsegsync-provenance 1"
HEADER = "# path\thash\tsource\tannotator\tmessage\tdate"
LIMIT = 64 * 1024 * 1024
FIELD_LIMIT = 1000  # characters kept of a free-text field
_HEX = re.compile(r"[0-9a-f]{8,128}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class Provenance(NamedTuple):
    path: str  # dataset-relative path of the ingested version
    digest: str  # its content hash
    source: str  # delivery folder name / path of the delivered file inside it
    annotator: str
    message: str
    date: str  # ISO date (UTC) of the ingest


def clean(text: str) -> str:
    """A free-text field as one TSV cell: control characters (tabs, newlines) become
    one space, the length is capped."""
    return _CONTROL.sub(" ", text).strip()[:FIELD_LIMIT]


def read_provenance(meta_dir: Path) -> tuple[dict[str, Provenance], list[str]]:
    """Rows by path, and one note per line that was skipped (empty when absent)."""
    path = meta_dir / PROVENANCE_FILE
    try:
        raw = read_small(path, LIMIT, "provenance file")
    except FileNotFoundError:
        return {}, []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {}, [f"{path}: not UTF-8; provenance ignored"]
    lines = text.split("\n")
    if lines[0] != MAGIC:
        return {}, [f"{path}: line 1: expected {MAGIC!r}; provenance ignored"]
    rows: dict[str, Provenance] = {}
    notes: list[str] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line or line.startswith("#"):
            continue
        fields = line.split("\t")
        where = f"{path}: line {number}"
        if len(fields) != 6:
            notes.append(f"{where}: expected 6 fields, found {len(fields)}; skipped")
            continue
        try:
            check_relative_path(fields[0], where)
        except VolsegsyncError as e:
            notes.append(f"{e}; skipped")
            continue
        if not _HEX.fullmatch(fields[1]):
            notes.append(f"{where}: the hash is not hex digits; skipped")
            continue
        rows[fields[0]] = Provenance(*(fields[:2] + [clean(f) for f in fields[2:]]))
    return rows, notes


def provenance_of(rows: dict[str, Provenance], record: FileRecord) -> Provenance | None:
    """The provenance of a recorded file, if its path and content were ingested."""
    row = rows.get(record.path)
    return row if row is not None and row.digest == record.digest else None


def format_provenance(rows: dict[str, Provenance]) -> str:
    body = ["\t".join(r) for _, r in sorted(rows.items())]
    return "\n".join([MAGIC, HEADER, *body]) + "\n"


def write_provenance(meta_dir: Path, rows: dict[str, Provenance]) -> None:
    atomic_write_text(meta_dir / PROVENANCE_FILE, format_provenance(rows))
