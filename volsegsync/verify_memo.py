"""The verdicts of the last ``verify`` run, per file and per pair, keyed by stat.

A file whose ``(size, mtime_ns, inode)`` is unchanged keeps its verdict (naming,
header and content problems); a pair whose two files are unchanged keeps its
geometry verdict. So a run after changing 1% of the files redoes about 1% of
the work. Stored with :mod:`marshal` in the state folder (plain data: loading
it runs no code). Files modified in the last seconds are not memoised (racy
clean guard, as in the stat cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from volsegsync.fsutil import read_memo, write_memo
from volsegsync.hashing import Stat, racy_limit
from volsegsync.problems import Problem, problems_from_plain, problems_to_plain


class VerifyMemo:
    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key
        self._files: dict[str, Any] = {}
        self._pairs: dict[tuple[str, str], Any] = {}
        try:
            data = read_memo(path)
            if data is not None and data["key"] == key:
                self._files = data["files"]
                self._pairs = data["pairs"]
        except (TypeError, KeyError):
            pass
        self._new_files: dict[str, Any] = {}
        self._new_pairs: dict[tuple[str, str], Any] = {}
        self._limit = racy_limit()

    def file(self, path: str, st: Stat) -> tuple[bool, list[Problem]] | None:
        """``(header broken, problems)`` of an unchanged file, or None."""
        hit = self._files.get(path)
        if hit is None or hit[0] != st:
            return None
        self._new_files[path] = hit
        return hit[1], problems_from_plain(hit[2])

    def remember_file(self, path: str, st: Stat, broken: bool, problems: list[Problem]) -> None:
        if st.mtime_ns < self._limit:
            self._new_files[path] = (tuple(st), broken, problems_to_plain(problems))

    def pair(self, vol: str, seg: str, vst: Stat, sst: Stat) -> list[Problem] | None:
        hit = self._pairs.get((vol, seg))
        if hit is None or hit[0] != vst or hit[1] != sst:
            return None
        self._new_pairs[(vol, seg)] = hit
        return problems_from_plain(hit[2])

    def remember_pair(
        self, vol: str, seg: str, vst: Stat, sst: Stat, problems: list[Problem]
    ) -> None:
        if vst.mtime_ns < self._limit and sst.mtime_ns < self._limit:
            self._new_pairs[(vol, seg)] = (tuple(vst), tuple(sst), problems_to_plain(problems))

    def save(self) -> None:
        """Keep what this run used or learnt; forget what it did not see."""
        data = {"key": self.key, "files": self._new_files, "pairs": self._new_pairs}
        write_memo(self.path, data)  # a memo is an optimisation, never a failure
