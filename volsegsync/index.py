"""The index file: ``volsegsync.index``, tracked in git, reviewed in pull requests.

Format 2 (see ``docs/index-format.md``), UTF-8 text, one line per *file*,
TAB-separated::

    volsegsync-index 2
    hash xxh3-128
    # case	role	version	size	hash	path
    C01-Back-D22061998	volume	-	1048576	3f1c…	volumes/C01-Back-D22061998.nii.gz
    C01-Back-D22061998	seg	1	2048	91ab…	segmentations/C01-Back-D22061998-v1.nrrd
    C01-Back-D22061998	seg	2*	2050	77cd…	segmentations/C01-Back-D22061998-v2.nrrd

Lines are sorted by case key, then role rank (volumes, segmentation versions
ascending, data files), then path, so one dataset gives one byte-identical
file. The version column of a segmentation carries ``*`` on the pair's active
version, ``!`` when that version is pinned by a rollback. Format 1 (one line
per pair) is still read. The file may come from someone else's branch: it is
parsed as untrusted input.
"""

from __future__ import annotations

import contextlib
import gc
import re
from collections.abc import Iterable, Iterator
from itertools import compress, pairwise, repeat
from operator import attrgetter, ne
from pathlib import Path
from typing import Any, NamedTuple

from volsegsync.errors import IndexFormatError, VolsegsyncError
from volsegsync.fsutil import INDEX_LIMIT, atomic_write_text, read_small
from volsegsync.naming import bad_name_reason

MAGIC = "volsegsync-index"
VERSION = 2
DEFAULT_ALGORITHM = "xxh3-128"
DIGEST_HEX = {"xxh3-128": 32, "sha256": 64, "blake3": 64}  # hex digits per algorithm
ALGORITHMS = tuple(DIGEST_HEX)
COLUMNS = "case\trole\tversion\tsize\thash\tpath"
COLUMNS_V1 = "volume -> segmentation\tversion\tvolume-size\tvolume-xxh3-128\tseg-size\tseg-xxh3-128"
RESERVED_DIRS = frozenset({".git", ".volsegsync"})
_HEX = {n: re.compile(f"[0-9a-f]{{{n}}}") for n in set(DIGEST_HEX.values())}
_CHANNEL = re.compile(r"[0-9]{1,9}")
_VERSION = re.compile(r"(-|[0-9]{1,9})([*!]?)")
_new = tuple.__new__  # a NamedTuple from a tuple without a Python-level __new__ call


class FileRecord(NamedTuple):
    path: str
    size: int
    digest: str


class SegVersion(NamedTuple):
    """A recorded segmentation version that is not the active one."""

    version: int | None
    record: FileRecord
    data: FileRecord | None = None  # its detached NRRD data file


class Entry(NamedTuple):
    """One case of the index: a pair, or an unpaired volume or segmentation.

    Code that only needs the active pair uses ``volume``, ``segmentation`` and
    ``version``; ``older`` holds every other version on disk.
    """

    volume: FileRecord | None
    segmentation: FileRecord | None  # the active version
    version: int | None  # the active version's number
    older: tuple[SegVersion, ...] = ()  # every other recorded version, ascending
    pinned: bool = False  # the active version was chosen by a rollback
    seg_data: FileRecord | None = None  # detached data file of the active segmentation
    channels: tuple[tuple[str, FileRecord], ...] = ()  # multi-channel: all channels
    key: str = ""  # the case key

    @property
    def sort_key(self) -> tuple[str, str]:
        vol = self.volume.path if self.volume else ""
        seg = self.segmentation.path if self.segmentation else ""
        return (self.key or case_key_of(self), vol or seg)

    def records(self) -> Iterator[FileRecord]:
        """Every file this case records: volumes, active and older versions, data files."""
        for _role, _version, rec in self.lines():
            yield rec

    def lines(self) -> list[tuple[str, str, FileRecord]]:
        """``(role, version column, record)`` of each of its index lines, in index order."""
        if not (self.older or self.channels or self.seg_data):  # most cases: no sorting
            out = [("volume", "-", self.volume)] if self.volume else []
            if self.segmentation:
                v = "-" if self.version is None else str(self.version)
                out.append(("seg", v + ("!" if self.pinned else "*"), self.segmentation))
            return out
        out = []
        if self.channels:
            out.extend((f"volume:{c}", "-", rec) for c, rec in self.channels)
        elif self.volume:
            out.append(("volume", "-", self.volume))
        versions: list[tuple[int | None, FileRecord, FileRecord | None, str]] = [
            (v.version, v.record, v.data, "") for v in self.older
        ]
        if self.segmentation:
            mark = "!" if self.pinned else "*"
            versions.append((self.version, self.segmentation, self.seg_data, mark))
        versions.sort(key=lambda v: (-1 if v[0] is None else v[0], v[1].path))
        for number, rec, _data, mark in versions:
            out.append(("seg", ("-" if number is None else str(number)) + mark, rec))
        for number, _rec, data, _mark in versions:
            if data is not None:
                out.append(("data", "-" if number is None else str(number), data))
        return out


FREEZE_SURVIVORS = False  # set by the console script (a process that ends with its command)


@contextlib.contextmanager
def no_collector() -> Iterator[None]:
    """The cyclic garbage collector off: for work that makes many objects and no cycle
    (entries, records, cases), where it would only rescan them again and again.

    In the console script (:data:`FREEZE_SURVIVORS`), what this work leaves alive is
    then frozen (``gc.freeze``): the collector, enabled again, would otherwise scan
    every object made meanwhile at its next run (90 ms after a first ``pair`` of
    40,000 files) only to find them alive. A program using the API keeps its
    collector as it was: freezing would keep its own cyclic garbage of that moment.
    The console script unfreezes before the interpreter's teardown."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if FREEZE_SURVIVORS:
                gc.freeze()
            gc.enable()


_KEPT: list[object] = []


def keep_until_exit(obj: object) -> None:
    """In the console script (:data:`FREEZE_SURVIVORS`), keep ``obj`` alive until the
    process ends: a command's result (a pair's snapshot holds every case) is otherwise
    freed object by object when the command returns (~100 ms at 100,000 files), just
    before an exit that frees nothing (``cli.run``). Elsewhere, nothing is kept."""
    if FREEZE_SURVIVORS:
        _KEPT.append(obj)


class IndexTooNewError(IndexFormatError):
    """The index has a newer format than this volsegsync knows: never overwrite it."""


Pin = tuple["int | None", int]  # (pinned active version, highest version recorded then)


def pins(entries: Iterable[Entry]) -> dict[str, Pin]:
    """``case key -> pin`` of every case whose active version is pinned by a rollback."""
    out: dict[str, Pin] = {}
    for e in entries:
        if e.pinned and e.segmentation is not None:
            top = max((v.version or 0 for v in e.older), default=0)
            out[e.key or case_key_of(e)] = (e.version, max(top, e.version or 0))
    return out


def build_entry(
    key: str,
    volume: FileRecord | None,
    versions: list[tuple[int | None, FileRecord]],
    active: int | None,
    pin: Pin | None = None,
) -> Entry:
    """The entry of a case from every segmentation version on disk.

    ``active`` is the version pairing picked (the highest). A pin keeps its
    version active while that version is on disk and no version newer than
    every recorded one has appeared (a new version ends a rollback).
    """
    by_version: dict[int | None, FileRecord] = {}
    for v, rec in sorted(versions, key=lambda t: t[1].path):
        by_version.setdefault(v, rec)  # two files of one version: a problem, one line
    pinned = False
    if pin is not None and pin[0] in by_version:
        newest = max((v or 0 for v in by_version), default=0)
        if newest <= pin[1]:
            active, pinned = pin[0], True
    seg = by_version.get(active) if versions else None
    older = tuple(
        SegVersion(v, rec)
        for v, rec in sorted(by_version.items(), key=lambda t: -1 if t[0] is None else t[0])
        if seg is None or v != active
    )
    return Entry(volume, seg, active if seg else None, older, pinned and seg is not None, key=key)


def data_files(entry: Entry) -> dict[int | None, FileRecord]:
    """``version -> detached data file`` of every recorded version that has one."""
    out = {v.version: v.data for v in entry.older if v.data is not None}
    if entry.segmentation is not None and entry.seg_data is not None:
        out[entry.version] = entry.seg_data
    return out


def with_data(entry: Entry, data: dict[int | None, FileRecord]) -> Entry:
    """``entry`` with the detached data file of each recorded version from ``data``
    (a version without one in ``data`` has none)."""
    return entry._replace(
        seg_data=data.get(entry.version) if entry.segmentation is not None else None,
        older=tuple(v._replace(data=data.get(v.version)) for v in entry.older),
    )


class IndexFile(NamedTuple):
    algorithm: str
    entries: list[Entry]
    format: int


# -- plain data (marshal memos) -------------------------------------------------------


def _plain_rec(r: FileRecord | None) -> tuple[str, int, str] | None:
    return tuple(r) if r is not None else None  # type: ignore[return-value]


def to_plain(entries: Iterable[Entry]) -> list[tuple[Any, ...]]:
    """Entries as plain tuples (for :mod:`marshal` memos in the state folder)."""
    return [
        (
            _plain_rec(e.volume),
            _plain_rec(e.segmentation),
            e.version,
            tuple((v.version, _plain_rec(v.record), _plain_rec(v.data)) for v in e.older)
            if e.older
            else (),
            e.pinned,
            _plain_rec(e.seg_data),
            tuple((c, _plain_rec(r)) for c, r in e.channels) if e.channels else (),
            e.key,
        )
        for e in entries
    ]


def _rec(t: Any) -> FileRecord | None:
    return _new(FileRecord, t) if t else None


def from_plain(rows: Iterable[tuple[Any, ...]]) -> list[Entry]:
    out = []
    for row in rows:
        vol, seg, number, *rest = row
        older, pinned, data, channels, key = rest if rest else ((), False, None, (), "")
        out.append(
            _new(
                Entry,
                (
                    _rec(vol),
                    _rec(seg),
                    number,
                    tuple(SegVersion(v, FileRecord(*r), _rec(d)) for v, r, d in older)
                    if older
                    else (),
                    pinned,
                    _rec(data),
                    tuple((c, FileRecord(*r)) for c, r in channels) if channels else (),
                    key,
                ),
            )
        )
    return out


# -- writing --------------------------------------------------------------------------


def check_algorithm(name: str, where: str = "hash algorithm") -> str:
    if name not in DIGEST_HEX:
        raise VolsegsyncError(
            f"{where}: unknown hash algorithm {name!r} (known: {', '.join(ALGORITHMS)})"
        )
    return name


def format_index(
    entries: Iterable[Entry], algorithm: str = DEFAULT_ALGORITHM, ordered: bool = False
) -> str:
    """The index text of ``entries`` (``ordered``: they are in the index's order,
    :attr:`Entry.sort_key`, already)."""
    lines = [f"{MAGIC} {VERSION}", f"hash {check_algorithm(algorithm)}", f"# {COLUMNS}"]
    lines.extend(
        format_entry(e)
        for e in (entries if ordered else sorted(entries, key=lambda e: e.sort_key))
        if e.volume or e.segmentation
    )
    return "\n".join(lines) + "\n"


def format_entry(e: Entry) -> str:
    """The index lines of one case (joined by ``\\n``, without the last line end)."""
    key = e.key or case_key_of(e)
    vol, seg = e.volume, e.segmentation
    if vol is not None and seg is not None and not (e.older or e.channels or e.seg_data):
        # the usual case, as :meth:`Entry.lines` gives it, without the general loop
        v = ("-" if e.version is None else str(e.version)) + ("!" if e.pinned else "*")
        return (
            f"{key}\tvolume\t-\t{vol.size}\t{vol.digest}\t{vol.path}\n"
            f"{key}\tseg\t{v}\t{seg.size}\t{seg.digest}\t{seg.path}"
        )
    return "\n".join(
        [
            f"{key}\t{role}\t{version}\t{rec.size}\t{rec.digest}\t{rec.path}"
            for role, version, rec in e.lines()
        ]
    )


def case_key_of(e: Entry) -> str:
    """A case key for an entry that has none (read from format 1): its file name's stem."""
    rec = e.volume or e.segmentation
    name = rec.path.rpartition("/")[2] if rec else ""
    return name.split(".", 1)[0] or name


def write_index(path: Path, entries: Iterable[Entry], algorithm: str = DEFAULT_ALGORITHM) -> None:
    write_index_text(path, format_index(entries, algorithm))


def write_index_text(path: Path, text: str) -> None:
    """Write an index text made by :func:`format_index` (atomically)."""
    try:
        atomic_write_text(path, text)
    except OSError as e:
        raise VolsegsyncError(f"{path}: cannot write the index: {e.strerror or e}") from None


# -- reading --------------------------------------------------------------------------


def read_index(path: Path) -> list[Entry]:
    """Parse an index file; a missing file is an empty index."""
    return read_index_file(path).entries


def read_index_file(path: Path) -> IndexFile:
    """Parse an index file with its hash algorithm; a missing file is an empty index."""
    try:
        raw = read_small(path, INDEX_LIMIT, "index")
    except FileNotFoundError:
        return IndexFile(DEFAULT_ALGORITHM, [], VERSION)
    except VolsegsyncError as e:
        raise IndexFormatError(str(e)) from None
    if not raw:  # a truncated write or a mistake, never a valid index
        raise IndexFormatError(f"{path}: empty file (expected '{MAGIC} {VERSION}' on line 1)")
    return parse_index_bytes(raw, str(path))


def parse_index_bytes(raw: bytes, name: str) -> IndexFile:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise IndexFormatError(f"{name}: not valid UTF-8 (byte {e.start})") from None
    return parse_index_file(text, name)


def parse_index(text: str, name: str = "index") -> list[Entry]:
    return parse_index_file(text, name).entries


def parse_index_file(text: str, name: str = "index") -> IndexFile:
    fast = _parse_v2_fast(text, name)
    return fast if fast is not None else parse_index_lines(text, name)


def parse_index_lines(text: str, name: str = "index") -> IndexFile:
    """The line-by-line parser: every format, and the first bad line named."""
    lines = [ln.removesuffix("\r") for ln in text.split("\n")]  # CRLF checkouts read the same
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        return IndexFile(DEFAULT_ALGORITHM, [], VERSION)
    _check_conflict(lines, name)
    fmt = _check_magic(lines[0], name)
    if fmt == 1:
        return IndexFile(DEFAULT_ALGORITHM, _parse_v1(lines, name), 1)
    return _parse_v2(lines, name)


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


def _check_magic(first: str, name: str) -> int:
    parts = first.split(" ")
    if len(parts) != 2 or parts[0] != MAGIC:
        raise IndexFormatError(f"{name}:1: not a volsegsync index (expected '{MAGIC} {VERSION}')")
    if parts[1] not in ("1", "2"):
        raise IndexTooNewError(
            f"{name}:1: index format version {parts[1]!r} is not supported "
            f"(this volsegsync reads versions 1 and {VERSION}; upgrade volsegsync)"
        )
    return int(parts[1])


def _check_digest(digest: str, algorithm: str, where: str, what: str) -> None:
    n = DIGEST_HEX[algorithm]
    if not _HEX[n].fullmatch(digest):
        raise IndexFormatError(
            f"{where}: bad {what + ' ' if what else ''}hash {digest!r} "
            f"(expected {n} hex digits of {algorithm})"
        )


class _Case:
    """The lines of one case while parsing."""

    def __init__(self) -> None:
        self.volume: FileRecord | None = None
        self.channels: dict[str, FileRecord] = {}
        self.segs: dict[int | None, FileRecord] = {}
        self.data: dict[int | None, FileRecord] = {}
        self.active: int | None = None
        self.has_active = False
        self.pinned = False


def _parse_v2(lines: list[str], name: str) -> IndexFile:
    if len(lines) < 2 or not lines[1].startswith("hash "):
        raise IndexFormatError(f"{name}:2: expected 'hash ALGORITHM' (e.g. 'hash xxh3-128')")
    algorithm = lines[1][5:]
    if algorithm not in DIGEST_HEX:
        raise IndexFormatError(
            f"{name}:2: unknown hash algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})"
        )
    cases: dict[str, _Case] = {}
    seen: dict[str, int] = {}
    for number, line in enumerate(lines[2:], start=3):
        if not line or line.startswith("#"):
            continue
        where = f"{name}:{number}"
        cols = line.split("\t")
        if len(cols) != 6:
            raise IndexFormatError(
                f"{where}: malformed line: expected 6 tab-separated columns "
                f"'case role version size hash path', found {len(cols)}"
            )
        key, role, version, size, digest, path = cols
        bad = bad_name_reason(key) if key else "empty"
        if bad:
            raise IndexFormatError(f"{where}: bad case key {key!r}: {bad}")
        check_relative_path(path, where)
        if not _is_number(size, 18):
            raise IndexFormatError(f"{where}: bad size {size!r}")
        _check_digest(digest, algorithm, where, "")
        if path in seen:
            raise IndexFormatError(f"{where}: {path} is already listed on line {seen[path]}")
        seen[path] = number
        rec = FileRecord(path, int(size), digest)
        _add_line(cases.setdefault(key, _Case()), key, role, version, rec, where)
    entries = [_entry(key, case, name) for key, case in cases.items()]
    entries.sort(key=lambda e: e.sort_key)
    return IndexFile(algorithm, entries, 2)


# -- comparing two indexes -----------------------------------------------------------


class Cut(NamedTuple):
    """Two index texts cut to the cases where they differ, and their pair counts."""

    old: str
    new: str
    old_pairs: int
    new_pairs: int


def cut_to_changes(old: str, new: str) -> Cut | None:
    """``old`` and ``new`` (format 2, one header) cut to their header and the lines of
    every case that a differing line belongs to, so that comparing two revisions
    parses what changed, not the whole index (as ``log`` does); None for anything
    else (compare the whole texts). A case's lines are all kept, wherever they are."""
    old_lines, new_lines = old.split("\n"), new.split("\n")
    if old_lines[:2] != new_lines[:2] or old_lines[0] != f"{MAGIC} {VERSION}":
        return None
    changed = set(old_lines).symmetric_difference(new_lines)
    keys = {x.partition("\t")[0] for x in changed if "\t" in x and not x.startswith("#")}
    old_cut, old_pairs = _cut(old_lines, keys)
    new_cut, new_pairs = _cut(new_lines, keys)
    return Cut(old_cut, new_cut, old_pairs, new_pairs)


def _cut(lines: list[str], keys: set[str]) -> tuple[str, int]:
    """The header and the lines of ``keys``; the number of cases with a volume and an
    active segmentation (one pass, no parse)."""
    picked = lines[:2]
    volumes: set[str] = set()
    active: set[str] = set()
    for line in lines[2:]:
        key, _, rest = line.partition("\t")
        if key in keys:
            picked.append(line)
        if rest.startswith("volume"):
            volumes.add(key)
        elif rest.startswith("seg\t") and rest[4 : rest.find("\t", 4)].endswith(("*", "!")):
            active.add(key)
    return "\n".join(picked) + "\n", len(volumes & active)


# -- the fast path ----------------------------------------------------------------------
#
# An index of a million pairs has two million lines: checking them one by one in
# Python costs seconds. The fast path checks a block of lines per column, in C
# (string searches over all paths joined, set operations over all roles), and builds
# the common case shapes directly. It accepts a subset of what the line-by-line
# parser accepts and never more: anything it does not vouch for (a bad line, CRLF,
# comments, an unsorted or unusual file) goes to the line-by-line parser, which names
# the first bad line. tests/test_index_fast.py checks both agree on hostile samples.

_BLOCK_CHARS = 1 << 22  # lines checked together (about 20,000 lines of today's length)
_DRIVE = re.compile(r"\n.:")
_HEX_RUN = re.compile("[0-9a-f]*")
_BAD_IN_PATHS = ("\\", "//", "\n/", "/\n", "\n\n")  # in "\n" + paths joined by "\n" + "\n"
_DOT_PARTS = ("/./", "/.\n", "/../", "/..\n", "\n./", "\n.\n", "\n../", "\n..\n")
_RESERVED = tuple(f"\n{d}{end}" for d in sorted(RESERVED_DIRS) for end in ("/", "\n"))
_CONFLICT_STARTS = tuple(f"\n{m}" for m in CONFLICT_MARKERS)


class _Slow(Exception):
    """The fast path does not vouch for this text: parse it line by line."""


def _parse_v2_fast(text: str, name: str) -> IndexFile | None:
    head = f"{MAGIC} {VERSION}\nhash "
    if not text.startswith(head) or "\r" in text:
        return None
    end = text.find("\n", len(head))
    algorithm = text[len(head) : end]
    if end < 0 or algorithm not in DIGEST_HEX:
        return None
    start = end + 1
    if text.startswith(f"# {COLUMNS}\n", start):
        start += len(COLUMNS) + 3
    if not text.endswith("\n") or "\n\n" in text or text.find("\n#", start - 1) >= 0:
        return None  # comments, empty lines, no final LF: the line-by-line parser
    try:
        with no_collector():
            entries = _fast_entries(text, start, DIGEST_HEX[algorithm], name)
    except (_Slow, IndexFormatError):
        return None
    if len({e.key for e in entries}) != len(entries):
        return None  # a case's lines are not together: the line-by-line parser merges them
    entries.sort(key=attrgetter("key"))  # unique keys: the order of Entry.sort_key
    return IndexFile(algorithm, entries, 2)


_Columns = tuple[list[str], list[str], list[str], list[FileRecord]]


def _fast_entries(text: str, start: int, digits: int, name: str) -> list[Entry]:
    out: list[Entry] = []
    seen: set[str] = set()  # every path, to find one listed twice
    checked: set[tuple[str, str]] = set()  # (role, version) combinations found valid
    carry: _Columns = ([], [], [], [])  # the last case of a block may go on in the next
    while start < len(text):
        end = text.find("\n", start + _BLOCK_CHARS)
        last = end < 0 or end == len(text) - 1
        end = len(text) - 1 if last else end
        cols = _fast_block(text[start:end], digits, checked, seen)
        start = end + 1
        keys, roles, versions = carry[0] + cols[0], carry[1] + cols[1], carry[2] + cols[2]
        recs = carry[3] + cols[3]
        if len(carry[0]) > _BLOCK_CHARS // 64:
            raise _Slow  # one case of thousands of lines: not a shape to build fast
        bounds = [0, *compress(range(1, len(keys)), map(ne, keys[1:], keys[:-1]))]
        if last:
            bounds.append(len(keys))
        else:
            carry = (
                keys[bounds[-1] :],
                roles[bounds[-1] :],
                versions[bounds[-1] :],
                recs[bounds[-1] :],
            )
        for a, b in pairwise(bounds):
            if b - a == 2 and roles[a] == "volume" and roles[a + 1] == "seg":
                v = versions[a + 1]
                if v[-1] == "*":
                    n = None if v == "-*" else int(v[:-1])
                    out.append(_new(Entry, (recs[a], recs[a + 1], n, (), False, None, (), keys[a])))
                    continue
            elif b - a == 1 and roles[a] == "volume":
                out.append(_new(Entry, (recs[a], None, None, (), False, None, (), keys[a])))
                continue
            case = _Case()  # any other shape: the general rules (line numbers: the slow path)
            for i in range(a, b):
                _add_line(case, keys[a], roles[i], versions[i], recs[i], name)
            out.append(_entry(keys[a], case, name))
    return out


def _fast_block(block: str, digits: int, checked: set[tuple[str, str]], seen: set[str]) -> _Columns:
    """The columns of a block of lines, every value checked (:class:`_Slow` if any
    is not plainly valid)."""
    lines = block.split("\n")
    if set(map(str.count, lines, repeat("\t"))) != {5}:
        raise _Slow  # a line without exactly 6 columns
    fields = block.replace("\n", "\t").split("\t")
    keys, roles, versions, sizes, digests = (fields[i::6] for i in range(5))
    paths = fields[5::6]
    joined_keys = "\n" + "\n".join(keys)
    sizes_text = "".join(sizes)
    joined = "\n" + "\n".join(paths) + "\n"
    if (
        "" in keys
        or not "".join(keys).isprintable()
        or any(m in joined_keys for m in _CONFLICT_STARTS)
        or not (sizes_text.isascii() and sizes_text.isdigit())
        or min(map(len, sizes)) < 1
        or max(map(len, sizes)) > 18
        or set(map(len, digests)) != {digits}
        or not _HEX_RUN.fullmatch("".join(digests))
        or not "".join(paths).isprintable()  # no control character, no lone surrogate
        or any(m in joined for m in _BAD_IN_PATHS)
        or (
            ("/." in joined or "\n." in joined) and any(m in joined for m in _DOT_PARTS + _RESERVED)
        )
        or (":" in joined and _DRIVE.search(joined))
    ):
        raise _Slow
    kinds = set(zip(roles, versions, strict=True)) - checked
    if not all(_role_version_ok(role, version) for role, version in kinds):
        raise _Slow
    checked |= kinds
    before = len(seen)
    seen.update(paths)
    if len(seen) - before != len(paths):
        raise _Slow  # a path listed twice
    recs = list(map(_new, repeat(FileRecord), zip(paths, map(int, sizes), digests, strict=True)))
    return keys, roles, versions, recs


def _role_version_ok(role: str, version: str) -> bool:
    """What the line-by-line parser checks of a line's role and version together."""
    m = _VERSION.fullmatch(version)
    if m is None or (m.group(2) and role != "seg"):
        return False
    if role == "volume" or (role.startswith("volume:") and _CHANNEL.fullmatch(role[7:])):
        return version == "-"
    return role in ("seg", "data")


def _add_line(case: _Case, key: str, role: str, version: str, rec: FileRecord, where: str) -> None:
    m = _VERSION.fullmatch(version)
    if m is None:
        raise IndexFormatError(f"{where}: bad version {version!r}")
    number = None if m.group(1) == "-" else int(m.group(1))
    mark = m.group(2)
    if mark and role != "seg":
        raise IndexFormatError(f"{where}: only a seg line has an active mark, found {version!r}")
    if role == "volume" or role.startswith("volume:"):
        if version != "-":
            raise IndexFormatError(f"{where}: a volume line has version '-', found {version!r}")
        if role == "volume":
            if case.volume is not None or case.channels:
                raise IndexFormatError(f"{where}: case {key} has a second volume")
            case.volume = rec
            return
        channel = role[7:]
        if not _CHANNEL.fullmatch(channel):
            raise IndexFormatError(f"{where}: bad channel {channel!r} (digits expected)")
        if case.volume is not None or channel in case.channels:
            raise IndexFormatError(f"{where}: case {key} lists channel {channel} twice")
        case.channels[channel] = rec
    elif role == "seg":
        if number in case.segs:
            raise IndexFormatError(f"{where}: case {key} lists version {m.group(1)} twice")
        case.segs[number] = rec
        if mark:
            if case.has_active:
                raise IndexFormatError(f"{where}: case {key} has a second active version")
            case.has_active, case.active, case.pinned = True, number, mark == "!"
    elif role == "data":
        if number in case.data:
            raise IndexFormatError(f"{where}: case {key} lists data of {m.group(1)} twice")
        case.data[number] = rec
    else:
        raise IndexFormatError(
            f"{where}: bad role {role!r} (expected volume, volume:CHANNEL, seg or data)"
        )


def _entry(key: str, case: _Case, name: str) -> Entry:
    where = f"{name}: case {key}"
    if case.segs and not case.has_active:
        raise IndexFormatError(f"{where}: no active segmentation version (mark one with '*')")
    for number in case.data:
        if number not in case.segs:
            raise IndexFormatError(f"{where}: a data file of a version it does not list")
    if not case.segs and not case.volume and not case.channels:
        raise IndexFormatError(f"{where}: data files without a segmentation")
    channels = tuple(sorted(case.channels.items(), key=lambda c: (int(c[0]), c[0])))
    volume = case.volume or (channels[0][1] if channels else None)
    older = tuple(
        SegVersion(n, rec, case.data.get(n))
        for n, rec in sorted(case.segs.items(), key=lambda s: -1 if s[0] is None else s[0])
        if n != case.active
    )
    return Entry(
        volume,
        case.segs.get(case.active) if case.has_active else None,
        case.active,
        older,
        case.pinned,
        case.data.get(case.active) if case.has_active else None,
        channels,
        key,
    )


def _parse_v1(lines: list[str], name: str) -> list[Entry]:
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line or line.startswith("#"):
            continue
        entry = _parse_line_v1(line, f"{name}:{number}")
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


def _parse_line_v1(line: str, where: str) -> Entry:
    cols = line.split("\t")
    if len(cols) != 8 or cols[1] != "->":
        raise IndexFormatError(
            f"{where}: malformed line: expected 8 tab-separated columns "
            f"'volume -> segmentation version size hash size hash', found {len(cols)}"
        )
    vol = _record_v1(cols[0], cols[4], cols[5], where, "volume")
    seg = _record_v1(cols[2], cols[6], cols[7], where, "segmentation")
    if vol is None and seg is None:
        raise IndexFormatError(f"{where}: a line needs a volume or a segmentation")
    version: int | None = None
    if cols[3] != "-":
        if not _is_number(cols[3], 9) or seg is None:
            raise IndexFormatError(f"{where}: bad version {cols[3]!r}")
        version = int(cols[3])
    return Entry(vol, seg, version)


def _record_v1(path: str, size: str, digest: str, where: str, what: str) -> FileRecord | None:
    if path == "-":
        if size != "-" or digest != "-":
            raise IndexFormatError(f"{where}: no {what} path, but a {what} size or hash")
        return None
    check_relative_path(path, where)
    if not _is_number(size, 18):
        raise IndexFormatError(f"{where}: bad {what} size {size!r}")
    _check_digest(digest, DEFAULT_ALGORITHM, where, what)
    return FileRecord(path, int(size), digest)


def _is_number(text: str, digits: int) -> bool:
    """ASCII digits only ('²' is a digit to str.isdigit), and not absurdly many."""
    return text.isascii() and text.isdigit() and len(text) <= digits


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
