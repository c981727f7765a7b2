"""Walking a dataset: which volume and segmentation files exist, with their stat.

Only names and ``stat`` are read here (one ``scandir`` + ``stat`` per file), never
content. Unreadable entries are reported, not raised: the walk goes on. Symbolic
links are followed only when they resolve inside the dataset (docs/security.md);
anything but a regular file is reported, never opened.
"""

from __future__ import annotations

import errno
import fnmatch
import itertools
import os
import stat as statmod
from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import xxhash

from volsegsync.fsutil import NotRegularFile, inside
from volsegsync.hashing import Stat
from volsegsync.naming import Convention, bad_name_reason

SKIP_DIRS = frozenset({".git", ".volsegsync", ".dvc", "__pycache__"})


class ScanResult(NamedTuple):
    files: dict[str, Stat]  # dataset-relative POSIX path -> stat
    unreadable: dict[str, str]  # path -> reason


def walk(root: Path, convention: Convention, exclude: Iterable[str] = ()) -> ScanResult:
    """All candidate files below ``root`` (by extension), with their stat.

    This loop is the floor of every command's run time on a large dataset: one
    ``stat`` per file and as little Python around it as possible.
    """
    files: dict[str, Stat] = {}
    unreadable: dict[str, str] = {}
    patterns = tuple(exclude)
    extensions = convention.extensions
    make_stat = tuple.__new__  # Stat(...) without the Python-level __new__
    stack = [(os.fspath(root), "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = os.scandir(folder)  # iterated lazily: a list of 50k entries costs more
        except OSError as e:
            unreadable[prefix.rstrip("/") or "."] = f"cannot list folder: {e.strerror}"
            continue
        with entries:
            for entry in entries:
                name = entry.name
                if patterns and _excluded(prefix + name, patterns):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if name not in SKIP_DIRS:
                        stack.append((entry.path, prefix + name + "/"))
                    continue
                if not name.endswith(extensions):
                    continue
                rel = prefix + name
                if not (rel.isascii() and rel.isprintable()):
                    bad = bad_name_reason(rel)
                    if bad:
                        unreadable[rel] = bad
                        continue
                try:
                    st = _link_stat(root, entry) if entry.is_symlink() else entry.stat()
                except OSError as e:
                    unreadable[rel] = _stat_failure(entry, e)
                    continue
                if statmod.S_ISREG(st.st_mode):
                    files[rel] = make_stat(Stat, (st.st_size, st.st_mtime_ns, st.st_ino))
                else:
                    unreadable[rel] = "not a regular file"
    return ScanResult(files, unreadable)


def fingerprint(scan: ScanResult) -> str:
    """A digest of every path and stat of a scan, in scan order (C-speed throughout)."""
    names = "\0".join(scan.files).encode("utf-8", "surrogateescape")
    stats = array("q", itertools.chain.from_iterable(scan.files.values())).tobytes()
    lost = repr(sorted(scan.unreadable.items())).encode("utf-8", "surrogateescape")
    return "-".join(xxhash.xxh3_128_hexdigest(b) for b in (names, stats, lost))


def _link_stat(root: Path, entry: os.DirEntry[str]) -> os.stat_result:
    """The stat of a link's target, when the link policy lets it be followed: only
    links resolving inside the dataset are (git keeps links as links; a link out of
    the dataset would put facts about a foreign file into the index)."""
    if not os.path.exists(entry.path):
        raise FileNotFoundError(entry.path)
    target = inside(root, entry.path)
    if target is None:
        raise NotRegularFile(errno.ELOOP, "symbolic link leading out of the dataset (not followed)")
    return os.stat(target)


def _stat_failure(entry: os.DirEntry[str], e: OSError) -> str:
    if isinstance(e, NotRegularFile):
        return str(e.strerror)
    if isinstance(e, FileNotFoundError):
        return "broken symbolic link" if entry.is_symlink() else "vanished"
    return f"cannot stat: {e.strerror}"


def _excluded(rel: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(rel + "/", p) for p in patterns)
