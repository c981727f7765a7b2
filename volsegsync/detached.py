"""Detached NRRD data files: the pipeline's data stage.

A NRRD header (``X.nhdr``, or a ``.nrrd`` holding a ``data file`` field) may keep its
voxels in another file (``X.raw``, ``X.raw.gz``). That file is part of the pair: it is
hashed and recorded in the index as a ``data`` line of its header's version
(docs/index-format.md), so zeroing ``X.raw`` is a change like editing the header.

- Which file a header names is read from the header alone, and only when the
  header's stat ``(size, mtime_ns, inode)`` changed (or it is new); the result is
  memoised with that stat in ``.volsegsync/state/pipeline/data.marshal``.
- The data file's stat is looked at every run, one ``stat`` per detached header (a
  dataset without any pays nothing: no memo, no header read, no stat); a data file
  whose stat changed is checked and hashed again, streamed like any other file
  (:func:`volsegsync.hashing.hash_many`).
- Only a regular file in the header's own folder is accepted
  (:func:`volsegsync.headers.check_data_file`, docs/security.md). Anything else is one
  problem naming the header; nothing is read.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import NamedTuple

from volsegsync.hashing import Hashed, Stat, hash_many, racy_limit
from volsegsync.index import check_relative_path
from volsegsync.memo import forget_memo, load_memo, save_memo

# volsegsync.headers (numpy, pynrrd) is imported only when a header is read: a run
# without detached headers, or with nothing changed, never loads it

RACY = (-1, -1, -1)  # a stat never seen on disk: look again next run
ABSENT = (-2, -2, -2)  # no such file (a fresh clone): looked at again when one appears
StatTuple = tuple[int, int, int]


class Data(NamedTuple):
    """What a detached header's data file is, as last seen."""

    header: StatTuple  # the header's stat when it was read (RACY: read it again)
    path: str  # the data file (dataset-relative); "" when the header names none allowed
    stat: StatTuple  # the data file's stat when it was hashed (RACY: look again)
    digest: str  # "" when it could not be hashed
    problem: tuple[str, str] | None  # (category, one line naming the header)

    @property
    def size(self) -> int:
        return max(self.stat[0], 0)


Changed = dict[str, "tuple[Data | None, Data | None]"]  # header -> (before, now)


def _stat(root: Path, rel: str) -> StatTuple:
    """The data file's stat (through a link: its target's); ABSENT when there is no
    file, RACY when it cannot be taken."""
    try:
        st = os.stat(root / rel)
    except FileNotFoundError:
        return ABSENT
    except (OSError, ValueError):
        return RACY
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _trusted(st: StatTuple | Stat) -> StatTuple:
    """``st``, or RACY when it is too recent to be trusted (git's racily clean files)."""
    return RACY if st[1] >= racy_limit() else (st[0], st[1], st[2])


class DataStage:
    """The detached data files of a dataset's NRRD headers, memoised by stat."""

    def __init__(self, root: Path, memo: Path, key: str, algorithm: str) -> None:
        self.root = root
        self.memo = memo
        self.key = key
        self.algorithm = algorithm
        self._heads: dict[str, Data] | None = None
        self._dirty = False

    @property
    def heads(self) -> dict[str, Data]:
        """header path -> its data; loaded from the memo on first use."""
        if self._heads is None:
            self._heads = self._load()
        return self._heads

    def _load(self) -> dict[str, Data]:
        memo = load_memo(self.memo, self.key)
        if memo is None:
            return {}
        try:  # the state folder may come from another branch: checked like the index
            heads = {h: Data(*d) for h, d in memo["heads"].items()}
            for h, d in heads.items():
                check_relative_path(h, "data memo")
                if d.path:
                    check_relative_path(d.path, "data memo")
        except Exception:  # a damaged memo is a miss, never an error
            return {}
        return heads

    def stale(self) -> bool:
        """Whether a data file's stat differs from the memo's (one stat per header)."""
        return any(d.path and _stat(self.root, d.path) != d.stat for d in self.heads.values())

    def update(
        self, changed: dict[str, Stat | None], detached: set[str], full: bool, jobs: int
    ) -> Changed:
        """Bring the memo up to date.

        ``changed``: headers whose file changed in this run (their stat; None when gone
        or unreadable; with ``full``, every header scanned); ``detached``: those whose
        content may name a data file (the others hold their data). Returns
        ``header -> (before, now)`` for each header whose data changed (each header,
        when ``full``)."""
        heads = self.heads
        before = dict(heads)
        if full:  # every scanned header is in ``changed``: the others are gone or excluded
            for path in heads.keys() - changed.keys():
                del heads[path]
        for path, st in changed.items():
            old = heads.get(path)
            if st is not None and old is not None and old.header == tuple(st):
                continue  # the header is as it was read (a full run over memoised files)
            if st is None or path not in detached:
                heads.pop(path, None)  # gone, or its data is attached
                continue
            heads[path] = self._read(path, _trusted(st))
        todo: dict[str, list[str]] = {}  # data path -> headers naming it
        for header, d in heads.items():
            if d.path and _stat(self.root, d.path) != d.stat:
                todo.setdefault(d.path, []).append(header)
        if todo:
            self._hash(todo, jobs)
        out: Changed = {}
        for header in heads.keys() | before.keys():
            now, was = heads.get(header), before.get(header)
            if full or now != was:
                out[header] = (was, now)
        self._dirty = self._dirty or heads != before
        return out

    def _read(self, header: str, st: StatTuple) -> Data:
        """Which data file the header names (header only), not yet hashed."""
        from volsegsync.headers import HeaderProblem, data_file_target, detached_data_name_at

        try:
            name = detached_data_name_at(self.root, header)
        except HeaderProblem:  # a broken header has its own problem (verify)
            return Data(st, "", RACY, "", None)
        if name is None:
            return Data(st, "", RACY, "", None)  # attached after all
        try:
            path = data_file_target(header, name)
        except HeaderProblem as e:
            return Data(st, "", RACY, "", (e.category, f"{header}: {e.reason}"))
        return Data(st, path, RACY, "", None)

    def _hash(self, todo: dict[str, list[str]], jobs: int) -> None:
        """Check and hash the data files of ``todo``; record the result per header."""
        from volsegsync.headers import HeaderProblem, check_data_file

        heads = self.heads
        ok: list[tuple[str, Stat]] = []
        for path, headers in todo.items():
            header = headers[0]
            try:
                check_data_file(self.root, header, posixpath.basename(path))
            except HeaderProblem as e:
                # a missing file stays so until one appears; anything else is looked at again
                stat = ABSENT if _stat(self.root, path) == ABSENT else RACY
                for h in headers:
                    problem = (e.category, f"{h}: {e.reason}")
                    heads[h] = heads[h]._replace(stat=stat, digest="", problem=problem)
                continue
            ok.append((path, Stat(*_stat(self.root, path))))
        for result in hash_many(self.root, ok, jobs, None, self.algorithm):
            if isinstance(result, Hashed):
                path = result.path
                for h in todo[path]:
                    stat = (result.stat.size, result.stat.mtime_ns, result.stat.ino)
                    heads[h] = heads[h]._replace(
                        stat=_trusted(stat), digest=result.digest, problem=None
                    )
                    if heads[h].stat == RACY:  # the size is kept for the record
                        heads[h] = heads[h]._replace(stat=(stat[0], -1, -1))
            else:
                path, reason = result
                for h in todo[path]:
                    problem = ("unreadable", f"{h}: detached data file {path}: {reason}")
                    heads[h] = heads[h]._replace(stat=RACY, digest="", problem=problem)

    def save(self) -> bool:
        """Write the memo when it changed; False when it could not be written."""
        if not self._dirty or self._heads is None:
            return True
        self._dirty = False
        if not self._heads:
            forget_memo(self.memo)
            return True
        heads = {h: tuple(d) for h, d in self._heads.items()}
        return save_memo(self.memo, {"key": self.key, "heads": heads})
