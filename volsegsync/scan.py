"""Walking a dataset: which volume and segmentation files exist, with their stat.

Only names and ``stat`` are read here (one ``scandir`` + ``stat`` per file), never
content. Unreadable entries are reported, not raised: the walk goes on.
"""

from __future__ import annotations

import fnmatch
import os
import stat as statmod
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from volsegsync.hashing import Stat
from volsegsync.naming import Convention, bad_name_reason

SKIP_DIRS = frozenset({".git", ".volsegsync", ".dvc", "__pycache__"})


class ScanResult(NamedTuple):
    files: dict[str, Stat]  # dataset-relative POSIX path -> stat
    unreadable: dict[str, str]  # path -> reason


def walk(root: Path, convention: Convention, exclude: Iterable[str] = ()) -> ScanResult:
    """All candidate files below ``root`` (by extension), with their stat."""
    files: dict[str, Stat] = {}
    unreadable: dict[str, str] = {}
    patterns = tuple(exclude)
    stack = [(os.fspath(root), "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as e:
            unreadable[prefix.rstrip("/") or "."] = f"cannot list folder: {e.strerror}"
            continue
        for entry in entries:
            rel = prefix + entry.name
            if patterns and _excluded(rel, patterns):
                continue
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in SKIP_DIRS:
                    stack.append((entry.path, rel + "/"))
                continue
            if not convention.is_candidate(entry.name):
                continue
            _add(entry, rel, files, unreadable)
    return ScanResult(files, unreadable)


def _add(
    entry: os.DirEntry[str], rel: str, files: dict[str, Stat], unreadable: dict[str, str]
) -> None:
    bad = bad_name_reason(rel)
    if bad:
        unreadable[rel] = bad
        return
    try:
        st = entry.stat()
    except FileNotFoundError:
        unreadable[rel] = "broken symbolic link" if entry.is_symlink() else "vanished"
        return
    except OSError as e:
        unreadable[rel] = f"cannot stat: {e.strerror}"
        return
    if not statmod.S_ISREG(st.st_mode):
        unreadable[rel] = "not a regular file"
        return
    files[rel] = Stat(st.st_size, st.st_mtime_ns, st.st_ino)


def _excluded(rel: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(rel + "/", p) for p in patterns)


def stat_paths(root: Path, paths: Iterable[str]) -> ScanResult:
    """Stat an explicit list of dataset-relative paths (from arguments or stdin)."""
    files: dict[str, Stat] = {}
    unreadable: dict[str, str] = {}
    for rel in paths:
        bad = bad_name_reason(rel)
        if bad:
            unreadable[rel] = bad
            continue
        full = root / rel
        try:
            st = full.stat()
        except FileNotFoundError:
            unreadable[rel] = "broken symbolic link" if full.is_symlink() else "no such file"
            continue
        except OSError as e:
            unreadable[rel] = f"cannot stat: {e.strerror}"
            continue
        if not statmod.S_ISREG(st.st_mode):
            unreadable[rel] = "not a regular file"
            continue
        files[rel] = Stat(st.st_size, st.st_mtime_ns, st.st_ino)
    return ScanResult(files, unreadable)
