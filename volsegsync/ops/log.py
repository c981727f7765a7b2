"""``volsegsync log``: the pairing changes each commit made to the index.

For every commit that changed the index (:meth:`GitHistory.walk`), only the
lines that differ from its parent's index are parsed: the two blobs are split
into line sets, and the lines of every case touched by a changed line (format 2
groups a case's files; format 1 has one line per pair) are parsed as two small
indexes and compared with :func:`volsegsync.changes.diff`. A merge reports only
the cases that differ from *every* parent: a change made on a merged branch is
reported once, on that branch's commit.

What was parsed is cached by commit id (commits never change) in
``.volsegsync/state/history.json``: the changed lines themselves, which are
parsed again on use, so a damaged or hostile cache goes through the same checks
as an index from git (paths re-checked, one line naming the problem).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from volsegsync import __version__
from volsegsync.changes import KINDS, Change, diff, from_plain, to_plain
from volsegsync.changes import counts as count_kinds
from volsegsync.dataset import Dataset
from volsegsync.errors import VolsegsyncError
from volsegsync.fsutil import atomic_write_bytes
from volsegsync.history import CommitInfo, GitHistory, Step
from volsegsync.index import FileRecord, check_relative_path, parse_index
from volsegsync.provenance import Provenance, provenance_of, read_provenance

CACHE_FORMAT = 2  # 2: data_named and data_dropped changes
CACHE_LIMIT = 512 << 20  # a bigger cache file is ignored, never loaded
_BLOBS_KEPT = 4  # line sets of recent blobs kept: a commit's parent is usually the next one


class LogEntry:
    """One commit and the changes it made. ``counts`` comes without decoding the changes
    (the whole-dataset log needs only counts); ``changes`` decodes them all, ``select``
    only those whose paths match."""

    __slots__ = ("_changes", "_recompute", "_rows", "commit", "counts", "note", "path")

    def __init__(
        self,
        commit: CommitInfo,
        path: str,
        changes: list[Change] | None,
        note: str | None,
        counts: dict[str, int] | None = None,
        rows: list[tuple[list[str], Callable[[], Change | None]]] | None = None,
        recompute: Callable[[], list[Change]] | None = None,
    ) -> None:
        self.commit = commit
        self.path = path  # the index's path in the repository at this commit
        self.note = note  # why the changes are unknown or partial, if they are
        self._changes = changes
        self._rows = rows  # cached: (paths, decoder) per change
        self._recompute = recompute  # when a cached change turns out damaged
        self.counts: dict[str, int] = count_kinds(changes) if changes is not None else counts or {}

    @property
    def changes(self) -> list[Change]:
        if self._changes is None:
            self._changes = self.select(lambda names: True)
        return self._changes

    def select(self, wanted: Callable[[list[str]], bool]) -> list[Change]:
        """The changes whose paths (:meth:`Change.names`) are ``wanted``, in order."""
        if self._changes is not None:
            return [c for c in self._changes if wanted(sorted(c.names()))]
        out = []
        for names, decode in self._rows or ():
            if wanted(names):
                change = decode()
                if change is None:  # a damaged cache record: recompute the commit from git
                    assert self._recompute is not None
                    self._changes, self._rows = self._recompute(), None
                    return self.select(wanted)
                out.append(change)
        return out

    def selected(self, changes: list[Change]) -> LogEntry:
        return LogEntry(self.commit, self.path, changes, self.note)


class VersionEvent(NamedTuple):
    commit: CommitInfo
    change: Change


class VersionRecord(NamedTuple):
    """One segmentation version of a pair and the commit that introduced it."""

    version: int | None
    segmentation: FileRecord
    volume: str | None
    commit: CommitInfo
    kind: str  # the change that introduced it: new_pair, new_version, pairing_changed...
    later: list[VersionEvent]  # later edits in place, renames, re-pairings, removal
    provenance: Provenance | None = None  # where it came from (ingest: provenance.tsv)


class LogReport(NamedTuple):
    entries: list[LogEntry]  # newest first
    versions: list[VersionRecord] | None  # with pair selectors: oldest first
    notes: list[str]


def run_log(
    ds: Dataset,
    revs: Iterable[str] = (),
    pairs: Iterable[str] = (),
    limit: int | None = None,
    since: str | None = None,
) -> LogReport:
    """Commits that changed the index, newest first, with their changes.

    ``revs``: revisions or ranges (``A..B``), default HEAD. ``pairs``: volume or
    segmentation paths (dataset-relative) or name keys; only their changes are
    kept, following renames back in time, and the version map is built.
    """
    selectors = list(pairs)
    with GitHistory(ds.root) as git:
        include: list[str] = []
        exclude: list[str] = []
        for spec in revs:
            a, b = git.parse_range(spec)
            include.extend(a)
            exclude.extend(b)
        if not include:
            include.append(git.head())
        engine = _Engine(ds, git)
        start = parse_since(since) if since else None
        walk_key = "|".join(
            [git.path, ",".join(sorted(include)), ",".join(sorted(exclude)), str(start)]
        )
        walk_key += "|" + git.shallow_key  # a deepened clone walks further
        cached = engine.cache.walk(walk_key)
        steps = iter(cached) if cached is not None else git.walk(include, exclude, start)
        walked: list[Step] = []
        entries: list[LogEntry] = []
        notes: list[str] = []
        track = _Tracker(ds, selectors) if selectors else None
        try:
            for step in steps:
                walked.append(step)
                entry = engine.entry(step)
                if step.shallow:
                    notes.append(
                        f"shallow clone: history before {step.commit.short} is not available "
                        "(git fetch --unshallow)"
                    )
                if len(step.parents) > 1 and not entry.counts and entry.note is None:
                    continue  # a merge that only brought its branches' changes together
                if track is not None:
                    entry = entry.selected(track.select(entry))
                    if not entry.changes and not step.shallow:
                        continue
                entries.append(entry)
                if limit is not None and len(entries) >= limit:
                    break
            else:
                if cached is None:
                    engine.cache.put_walk(walk_key, walked)
        finally:
            engine.save()
    versions = _versions(entries) if selectors else None
    if versions:  # where ingested versions came from (.volsegsync/provenance.tsv)
        known, _ = read_provenance(ds.meta_dir)
        versions = [v._replace(provenance=provenance_of(known, v.segmentation)) for v in versions]
    if selectors and not entries:
        notes.append(f"no commit changed {', '.join(selectors)}")
    return LogReport(entries, versions, notes)


def split_args(ds: Dataset, args: Iterable[str]) -> tuple[list[str], list[str]]:
    """``log`` arguments as (revisions, pair selectors), as git does: an existing file is a
    path, ``A..B`` a range, anything git resolves a revision; the rest names pairs (a
    deleted file's path, or a name key)."""
    revs: list[str] = []
    pairs: list[str] = []
    with GitHistory(ds.root) as git:
        for arg in args:
            if os.path.isdir(arg):
                rel = ds.relpath(arg)
                if rel != ".":  # the dataset's root folder: every pair
                    pairs.append(f"{rel}/")  # a folder: every pair with a file below it
            elif os.path.lexists(arg):
                pairs.append(ds.relpath(arg))
            elif ".." in arg:
                revs.append(arg)
            elif ds.convention.parse(arg) is not None or "/" in arg:
                pairs.append(ds.relpath(arg))  # a file name, relative to here
            else:
                try:
                    git.resolve(arg)
                except VolsegsyncError:
                    pairs.append(arg)  # a name key
                else:
                    revs.append(arg)
    return revs, pairs


# -- parsing only what changed ------------------------------------------------------------


class _Blob:
    """An index blob as lines: its header, and its record lines as a set."""

    __slots__ = ("_groups", "_keys", "grouped", "header", "lines", "set")

    def __init__(self, raw: bytes = b"") -> None:
        lines = raw.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        first = 0
        while first < len(lines) and (b"\t" not in lines[first] or lines[first][:1] == b"#"):
            first += 1
        self.header = tuple(lines[:first])  # magic, hash algorithm, column comment
        self.lines = lines[first:]  # records (a comment or blank line is ignored by the parser)
        self.set = frozenset(self.lines)
        # format 1 has one line per pair; later formats one per file, grouped by case
        self.grouped = bool(self.header) and self.header[0].rstrip(b"\r") != b"volsegsync-index 1"
        self._keys: list[bytes] | None = None  # case key of each line, when they are sorted
        self._groups: dict[bytes, list[bytes]] | None = None  # otherwise: key -> lines

    def key(self, line: bytes) -> bytes:
        return line.partition(b"\t")[0] if self.grouped else line

    def group(self, key: bytes) -> frozenset[bytes]:
        if not self.grouped:
            return frozenset([key]) & self.set
        return frozenset(self._lines_of(key))

    def _lines_of(self, key: bytes) -> list[bytes]:
        """The lines of one case: by bisection in an index sorted by case key (as volsegsync
        writes it), by a table of every case in one that is not."""
        if self._keys is None and self._groups is None:
            keys = [x.partition(b"\t")[0] for x in self.lines]
            if keys == sorted(keys):
                self._keys = keys
            else:
                self._groups = {}
                for k, line in zip(keys, self.lines, strict=True):
                    self._groups.setdefault(k, []).append(line)
        if self._keys is not None:
            return self.lines[bisect_left(self._keys, key) : bisect_right(self._keys, key)]
        assert self._groups is not None
        return self._groups.get(key, [])

    def text(self, keys: set[bytes] | None) -> bytes:
        """The header and the lines of the ``keys`` cases (all lines when None)."""
        if not self.header and not self.lines:
            return b""
        if keys is None:
            lines = self.lines
        elif self.grouped:  # whole cases
            lines = [x for k in sorted(keys) for x in self._lines_of(k)]
        else:
            lines = sorted(keys & self.set)
        return b"\n".join([*self.header, *lines]) + b"\n"


_EMPTY = _Blob()


class _Engine:
    """Changes of one step, from the cache or from the two blobs' changed lines."""

    def __init__(self, ds: Dataset, git: GitHistory) -> None:
        self.git = git
        self.cache = _Cache(ds)
        self._blobs: dict[str, _Blob] = {}

    def save(self) -> None:
        self.cache.save()

    def entry(self, step: Step) -> LogEntry:
        key = f"{step.commit.id}:{step.path}:{int(step.shallow)}"
        hit = self.cache.get(key)
        if hit is not None:
            note, counts, rows = hit
            return LogEntry(
                step.commit, step.path, None, note, counts, rows, lambda: self._redo(key, step)
            )
        changes, note = self._compute(step)
        self.cache.put(key, changes, note)
        return LogEntry(step.commit, step.path, changes, note)

    def _redo(self, key: str, step: Step) -> list[Change]:
        changes, note = self._compute(step)
        self.cache.put(key, changes, note)
        return changes

    def _blob(self, blob_id: str | None) -> _Blob:
        if blob_id is None:
            return _EMPTY
        blob = self._blobs.get(blob_id)
        if blob is None:
            blob = _Blob(self.git.blob(blob_id))
            if len(self._blobs) >= _BLOBS_KEPT:
                del self._blobs[next(iter(self._blobs))]
            self._blobs[blob_id] = blob
        return blob

    def _compute(self, step: Step) -> tuple[list[Change], str | None]:
        if step.shallow:
            return [], "the parents of this commit are beyond a shallow clone's history"
        new = self._blob(step.blob)
        parents = [self._blob(blob) for _, blob in step.parents]
        old = parents[0] if parents else _EMPTY
        note = None
        if step.blob is None:
            note = "this commit deleted the index"
        elif step.parents and step.parents[0][0] != step.path:
            note = f"the dataset moved here from {_folder(step.parents[0][0])}"
        keys: set[bytes] | None = None
        if not (old.header and new.header and old.header != new.header):
            # same format: only the cases that a changed line belongs to
            key = (new if new.header else old).key
            keys = {key(x) for x in new.set.symmetric_difference(old.set)}
            for other in parents[1:]:
                # a case the merge took unchanged from another parent is that branch's change
                keys = {k for k in keys if new.group(k) != other.group(k)}
        where = f"{step.commit.short}:{step.path}"
        try:
            before = parse_index(old.text(keys).decode("utf-8"), f"{where} (parent)")
            after = parse_index(new.text(keys).decode("utf-8"), where)
        except UnicodeDecodeError as e:
            return [], f"cannot read the index: not valid UTF-8 ({e.reason})"
        except VolsegsyncError as e:  # a broken index in one commit: say so, go on
            return [], f"cannot read the index: {e}"
        return diff(before, after), note


def _folder(index_path: str) -> str:
    folder = index_path.rpartition("/")[0]
    return f"{folder}/" if folder else "the repository root"


# -- cache --------------------------------------------------------------------------------


class _Cache:
    """Changes by commit id (and the commit lists of walks by their tip ids), in
    ``.volsegsync/state/history.json``: commits never change, so neither do these.

    Plain JSON; every record is checked on load as hostile input (types, paths with
    :func:`check_relative_path`, hashes); a record that fails is recomputed."""

    def __init__(self, ds: Dataset) -> None:
        self.path = ds.state_dir / "history.json"
        self.key = f"{__version__}/{CACHE_FORMAT}"
        self.records: dict[str, Any] = {}
        self.walks: dict[str, Any] = {}
        self.dirty = False
        self._checked: set[str] = set()
        data = _read_json(self.path)
        if isinstance(data, dict) and data.get("key") == self.key:
            commits, walks = data.get("commits"), data.get("walks")
            if isinstance(commits, dict) and isinstance(walks, dict):
                self.records = commits
                self.walks = walks

    def get(self, key: str) -> tuple[str | None, dict[str, int], list[_Row]] | None:
        """A commit's note, change counts, and per change its paths and a decoder (which
        gives None for a damaged record)."""
        record = self.records.get(key)
        if not _CACHE_KEY.fullmatch(key) or not isinstance(record, list) or len(record) != 3:
            return None
        note, counts, rows = record
        if not (note is None or isinstance(note, str)) or not isinstance(rows, list):
            return None
        if not isinstance(counts, dict) or not all(
            k in KINDS and isinstance(v, int) for k, v in counts.items()
        ):
            return None
        if not all(isinstance(r, str) and "\0" in r for r in rows):
            return None
        if sum(counts.values()) != len(rows):
            return None
        return note, counts, [self._row(r) for r in rows]

    def _row(self, row: str) -> _Row:
        names, _, plain = row.partition("\0")

        def decode() -> Change | None:
            try:
                return from_plain(json.loads(plain), self._checked)
            except (ValueError, TypeError, RecursionError):
                return None

        return names.split("\t"), decode

    def put(self, key: str, changes: list[Change], note: str | None) -> None:
        encode = _ENCODER.encode
        rows = ["\t".join(sorted(c.names())) + "\0" + encode(to_plain(c)) for c in changes]
        self.records[key] = [note, count_kinds(changes), rows]
        self.dirty = True

    def walk(self, key: str) -> list[Step] | None:
        rows = self.walks.get(key)
        if not isinstance(rows, list):
            return None
        try:
            return [_step_from(row, self._checked) for row in rows]
        except (ValueError, TypeError, VolsegsyncError):
            return None

    def put_walk(self, key: str, steps: list[Step]) -> None:
        while len(self.walks) >= _WALKS_KEPT:
            del self.walks[next(iter(self.walks))]
        self.walks[key] = [_step_plain(s) for s in steps]
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        data = {"key": self.key, "commits": self.records, "walks": self.walks}
        with contextlib.suppress(OSError):  # a read-only state folder: no cache, same output
            atomic_write_bytes(self.path, json.dumps(data, separators=(",", ":")).encode())
        self.dirty = False


_Row = tuple[list[str], Callable[[], Change | None]]
_WALKS_KEPT = 16
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_ID = re.compile(r"[0-9a-f]{40}")


def _step_plain(s: Step) -> list[Any]:
    c = s.commit
    return [
        [c.id, list(c.parents), c.author, c.time, c.tz, c.subject],
        s.path,
        s.blob,
        [list(p) for p in s.parents],
        s.shallow,
    ]


def _step_from(row: Any, checked: set[str]) -> Step:
    (cid, parents, author, when, tz, subject), path, blob, before, shallow = row
    ids = [cid, *parents, *([blob] if blob is not None else [])]
    ids.extend(b for _, b in before if b is not None)
    if not all(isinstance(i, str) and _ID.fullmatch(i) for i in ids):
        raise ValueError("bad id")
    if not (isinstance(author, str) and isinstance(subject, str)):
        raise ValueError("bad commit")
    if not (isinstance(when, int) and isinstance(tz, int) and isinstance(shallow, bool)):
        raise ValueError("bad commit")
    for p in (path, *(p for p, _ in before)):
        if not isinstance(p, str):
            raise ValueError("bad path")
        if p not in checked:
            check_relative_path(p, "cache")  # an IndexFormatError is a VolsegsyncError
            checked.add(p)
    info = CommitInfo(cid, tuple(parents), author, when, tz, subject)
    return Step(info, path, blob, tuple((p, b) for p, b in before), shallow)


_CACHE_KEY = re.compile(r"[0-9a-f]{40}:[^\0]+:[01]")


def _read_json(path: os.PathLike[str]) -> Any:
    """A JSON document from a regular file of bounded size (never a FIFO or a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > CACHE_LIMIT:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(CACHE_LIMIT + 1)
        return json.loads(raw) if len(raw) <= CACHE_LIMIT else None
    except (OSError, ValueError, RecursionError):
        return None
    finally:
        os.close(fd)


# -- one pair -----------------------------------------------------------------------------


class _Tracker:
    """Selects the changes of the pairs named by the user, following renames back in time."""

    def __init__(self, ds: Dataset, selectors: list[str]) -> None:
        self.ds = ds
        self.folders = tuple(s for s in selectors if s.endswith("/"))
        self.tracked = set(selectors)
        self.keys = set(selectors) - set(self.folders)  # a selector may be a name key
        for s in selectors:  # a file stands for its pair: every file with its name key
            info = ds.convention.parse(s)
            if info is not None:
                self.keys.add(info.key)
        self._key_of: dict[str, str | None] = {}

    def _key(self, path: str) -> str | None:
        if path not in self._key_of:
            info = self.ds.convention.parse(path)
            self._key_of[path] = info.key if info else None
        return self._key_of[path]

    def _matches(self, names: Iterable[str]) -> bool:
        for p in names:
            if p in self.tracked or (self.folders and p.startswith(self.folders)):
                return True
            if any(k in p for k in self.keys) and self._key(p) in self.keys:
                return True
        return False

    def select(self, entry: LogEntry) -> list[Change]:
        out = []
        for c in entry.select(self._matches):  # only matching changes are decoded
            out.append(c)
            for e in (c.old, c.new):  # older commits name the pair by its volume as it was
                if e is not None and e.volume is not None:
                    self.tracked.add(e.volume.path)
            if c.kind == "renamed" and c.old_file is not None:
                self.tracked.add(c.old_file.path)
        return out


_INTRODUCES = ("new_pair", "new_version", "pairing_changed", "new_file")


def _versions(entries: list[LogEntry]) -> list[VersionRecord]:
    """The version map: each segmentation version with the commit that introduced it, and
    what later commits did to it without a version bump."""
    records: list[VersionRecord] = []
    at: dict[str, VersionRecord] = {}  # current segmentation path -> its record
    for entry in reversed(entries):  # oldest first
        for c in entry.changes:
            event = VersionEvent(entry.commit, c)
            seg = c.new.segmentation if c.new is not None else None
            if c.kind in _INTRODUCES and seg is not None and c.new is not None:
                prior = c.old.segmentation if c.old is not None else None
                if prior is not None and prior.path in at and prior.path != seg.path:
                    at[prior.path].later.append(event)  # re-paired away from this version
                if seg.path in at:
                    at[seg.path].later.append(event)
                    continue
                vol = c.new.volume.path if c.new.volume else None
                record = VersionRecord(c.new.version, seg, vol, entry.commit, c.kind, [])
                records.append(record)
                at[seg.path] = record
            elif c.kind == "renamed" and c.old_file is not None and c.new_file is not None:
                moved = at.pop(c.old_file.path, None)
                if moved is not None:
                    moved.later.append(event)
                    at[c.new_file.path] = moved
            else:
                touched = {p for p in c.paths if p in at}
                for e in (c.old, c.new):
                    if e is not None and e.segmentation is not None and e.segmentation.path in at:
                        touched.add(e.segmentation.path)
                for path in sorted(touched):
                    at[path].later.append(event)
    return records


# -- dates --------------------------------------------------------------------------------

_UNITS = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 7 * 86400,
    "month": 30 * 86400,
    "year": 365 * 86400,
}
_RELATIVE = re.compile(r"(\d+)[ .]?(second|minute|hour|day|week|month|year)s?( ago)?")


def parse_since(text: str, now: float | None = None) -> int:
    """``--since``: an ISO date or date-time (UTC unless it names a zone), or a relative
    age such as ``2.weeks``, ``3 days ago``."""
    m = _RELATIVE.fullmatch(text.strip().lower())
    if m:
        return int((time.time() if now is None else now) - int(m[1]) * _UNITS[m[2]])
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise VolsegsyncError(
            f"--since {text}: not a date (use e.g. 2026-01-31, 2026-01-31T12:00, 2.weeks)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp())


def iso_date(commit: CommitInfo) -> str:
    """The author date in ISO 8601, in the author's time zone (as ``git log --date=iso-strict``)."""
    zone = timezone(timedelta(seconds=commit.tz))
    return datetime.fromtimestamp(commit.time, zone).isoformat()
