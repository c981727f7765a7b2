"""Walking a dataset: which volume and segmentation files exist, with their stat.

Only names and ``stat`` are read here (one ``scandir`` + ``stat`` per file), never
content. Unreadable entries are reported, not raised: the walk goes on. Symbolic
links are followed only when they resolve inside the dataset (docs/security.md);
anything but a regular file is reported, never opened.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat as statmod
from array import array
from collections.abc import Callable, Iterable
from operator import attrgetter
from pathlib import Path
from stat import S_ISDIR, S_ISLNK, S_ISREG
from typing import NamedTuple

import xxhash

from volsegsync.fsutil import NotRegularFile, inside
from volsegsync.hashing import Stat
from volsegsync.naming import Convention, bad_name_reason

SKIP_DIRS = frozenset({".git", ".volsegsync", ".dvc", "__pycache__"})
stat_triple = attrgetter("st_size", "st_mtime_ns", "st_ino")  # what a Folder keeps of a stat


class Folder(NamedTuple):
    """The candidate files of one folder, compactly: names in scan order and their stat
    as ``size, mtime_ns, ino`` triples in one array (a few bytes a file, not an object)."""

    names: list[str]
    stats: array[int]

    def stat(self, i: int) -> Stat:
        return Stat(*self.stats[3 * i : 3 * i + 3])


class ScanResult:
    """Every candidate file, per folder (``""`` is the root, others end in ``/``)."""

    __slots__ = ("_files", "_positions", "folders", "unchanged", "unreadable")

    def __init__(self, folders: dict[str, Folder], unreadable: dict[str, str]) -> None:
        self.folders = folders
        self.unreadable = unreadable  # path -> reason
        # folders not looked at, which a file-system monitor vouches are as the pipeline
        # recorded them: prefix -> fingerprint (volsegsync/ops/fsmonitor.py)
        self.unchanged: dict[str, str] = {}
        self._files: dict[str, Stat] | None = None
        self._positions: dict[str, dict[str, int]] = {}

    def stat(self, path: str) -> Stat | None:
        """The stat of one scanned file (None when the scan did not find it)."""
        if self._files is not None:
            return self._files.get(path)
        prefix, _, name = path.rpartition("/")
        prefix = prefix + "/" if prefix else ""
        folder = self.folders.get(prefix)
        if folder is None:
            return None
        pos = self._positions.get(prefix)
        if pos is None:
            pos = dict(zip(folder.names, range(len(folder.names)), strict=True))
            self._positions[prefix] = pos
        i = pos.get(name)
        return folder.stat(i) if i is not None else None

    @property
    def files(self) -> dict[str, Stat]:
        """Dataset-relative POSIX path -> stat (built on first use: it costs memory)."""
        if self._files is None:
            self._files = {
                prefix + name: folder.stat(i)
                for prefix, folder in self.folders.items()
                for i, name in enumerate(folder.names)
            }
        return self._files

    def __len__(self) -> int:
        return sum(len(f.names) for f in self.folders.values())


def walk(
    root: Path,
    convention: Convention,
    exclude: Iterable[str] = (),
    only: Iterable[str] | None = None,
    shared: bool = True,
) -> ScanResult:
    """All candidate files below ``root`` (by extension), with their stat.

    With ``only`` (folder prefixes, as a file-system monitor reports them), just those
    folders, each without its subfolders; one the walk would not enter (gone, excluded,
    behind a link) is left out.

    This loop is the floor of every command's run time on a large dataset: one
    ``stat`` per file and as little Python around it as possible. A large tree is
    walked by two processes: the first time there are two folders or more to enter,
    and their directories are large (:func:`_child_share`), a forked child walks about
    half of them (with everything below) meanwhile, unless not ``shared``. The result
    is the same either way (folders in prefix order); a child that dies leaves its
    share to this process.
    """
    folders: dict[str, Folder] = {}
    unreadable: dict[str, str] = {}
    patterns = tuple(exclude)
    top = os.fspath(root)
    descend = only is None
    if only is None:
        stack = [(top, "")]
    else:
        stack = [(f"{top}/{p}", p) for p in only if _entered(top, p, patterns)]

    def walk_stack(stack: list[tuple[str, str]], limit: int = -1) -> None:
        extensions = convention.extensions
        _walk_folders(root, extensions, patterns, descend, stack, folders, unreadable, limit)

    while descend and len(stack) == 1:  # the root (and a lone folder in it): what is below
        walk_stack(stack, 1)
    theirs = _child_share(stack) if shared and descend and len(stack) >= 2 else []
    child = None
    if theirs:
        from volsegsync.workers import Forked, can_fork

        if can_fork():
            child = Forked(lambda: _walked(theirs, walk_stack, folders, unreadable))
        else:
            stack.extend(theirs)
    try:
        walk_stack(stack)
        answer = child.result() if child is not None else None
    finally:
        if child is not None:
            child.close()
    if child is not None:
        if isinstance(answer, tuple) and len(answer) == 2:
            for prefix, (names, stats) in answer[0].items():
                folders[prefix] = Folder(names, array("q", stats))
            unreadable.update(answer[1])
        else:  # the child died: its share is walked here
            walk_stack(theirs)
    return ScanResult(dict(sorted(folders.items())), unreadable)


FORK_DIR_BYTES = 512 * 1024  # directory sizes from which a child walks a share (~10k names)
SIZED_FOLDERS = 64  # folders whose directory sizes are looked at to decide


def _child_share(stack: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The folders of ``stack`` a forked child walks (taken off the stack), or none
    when they look too small for a second process to pay off. A directory's size
    grows with the names it holds, so their sizes (one ``lstat`` each, of the first
    :data:`SIZED_FOLDERS`) tell a large tree cheaply; more folders than that are
    shared by count. The child gets the smaller half, by size."""
    sized: list[tuple[int, int]] = []
    total = 0
    for i, (path, _prefix) in enumerate(stack[:SIZED_FOLDERS]):
        try:
            size = os.lstat(path).st_size
        except OSError:
            size = 0
        sized.append((size, i))
        total += size
    if total < FORK_DIR_BYTES and len(stack) <= SIZED_FOLDERS:
        return []
    mine = theirs = 0
    take: set[int] = set()
    for size, i in sorted(sized, reverse=True):  # the larger first, each to the lighter side
        if theirs < mine:
            take.add(i)
            theirs += size
        else:
            mine += size
    take.update(range(SIZED_FOLDERS + 1, len(stack), 2))  # beyond those: every other one
    if not take:
        return []
    out = [f for i, f in enumerate(stack) if i in take]
    stack[:] = [f for i, f in enumerate(stack) if i not in take]
    return out


def _walked(
    stack: list[tuple[str, str]],
    walk_stack: Callable[[list[tuple[str, str]]], None],
    folders: dict[str, Folder],
    unreadable: dict[str, str],
) -> tuple[dict[str, tuple[list[str], bytes]], dict[str, str]]:
    """In the walking child: its share walked, as plain data for the parent."""
    folders.clear()
    unreadable.clear()
    walk_stack(stack)
    return {p: (f.names, f.stats.tobytes()) for p, f in folders.items()}, unreadable


def _walk_folders(
    root: Path,
    extensions: tuple[str, ...],
    patterns: tuple[str, ...],
    descend: bool,
    stack: list[tuple[str, str]],
    folders: dict[str, Folder],
    unreadable: dict[str, str],
    limit: int = -1,
) -> None:
    """Walk the folders of ``stack`` (and, with ``descend``, every folder below,
    pushed onto it), adding their candidate files to ``folders``; with ``limit``, only
    so many folders (those below stay on the stack)."""
    while stack and limit:
        limit -= 1
        folder, prefix = stack.pop()
        try:
            entries = os.scandir(folder)  # iterated lazily: a list of 50k entries costs more
        except OSError as e:
            if not descend and e.errno in (errno.ENOENT, errno.ENOTDIR):
                continue  # gone since the monitor saw it change
            unreadable[prefix.rstrip("/") or "."] = f"cannot list folder: {e.strerror}"
            continue
        names: list[str] = []
        stats: array[int] = array("q")
        add_name = names.append
        add_stat = stats.extend
        with entries:
            for entry in entries:
                name = entry.name
                if patterns and excluded(prefix + name, patterns):
                    continue
                if not name.endswith(extensions):  # most such entries: folders
                    if descend and entry.is_dir(follow_symlinks=False) and name not in SKIP_DIRS:
                        stack.append((entry.path, prefix + name + "/"))
                    continue
                try:  # one lstat tells a file, a link and a folder named like a file
                    st = entry.stat(follow_symlinks=False)
                    if S_ISREG(st.st_mode):  # the usual case first, with least work
                        add_name(name)
                        add_stat(stat_triple(st))
                        continue
                    if S_ISLNK(st.st_mode):
                        st = _link_stat(root, entry)
                    elif S_ISDIR(st.st_mode):
                        if descend and name not in SKIP_DIRS:
                            stack.append((entry.path, prefix + name + "/"))
                        continue
                except OSError as e:
                    _refuse(unreadable, prefix + name, _stat_failure(entry, e))
                    continue
                if S_ISREG(st.st_mode):  # a link's target
                    add_name(name)
                    add_stat(stat_triple(st))
                else:
                    _refuse(unreadable, prefix + name, "not a regular file")
        if names:
            # names are checked once per folder, in C; one that cannot go into the
            # index (not UTF-8, a control character) is then looked for name by name
            joined = prefix + "".join(names)
            if not (joined.isascii() and joined.isprintable()):
                names, stats = _drop_bad_names(prefix, names, stats, unreadable)
        if names:
            folders[prefix] = Folder(names, stats)


def _refuse(unreadable: dict[str, str], rel: str, reason: str) -> None:
    """Record why a file is left out; a name the index cannot hold says so first."""
    unreadable[rel] = bad_name_reason(rel) or reason


def _drop_bad_names(
    prefix: str, names: list[str], stats: array[int], unreadable: dict[str, str]
) -> tuple[list[str], array[int]]:
    """The names (and their stats) that the index can hold; the others are reported."""
    kept: list[str] = []
    kept_stats: array[int] = array("q")
    for i, name in enumerate(names):
        bad = bad_name_reason(prefix + name)
        if bad:
            unreadable[prefix + name] = bad
        else:
            kept.append(name)
            kept_stats.extend(stats[3 * i : 3 * i + 3])
    return kept, kept_stats


def folder_fingerprint(folder: Folder) -> str:
    """A digest of a folder's names and stats, in scan order (C speed throughout)."""
    h = xxhash.xxh3_128("\0".join(folder.names).encode("utf-8", "surrogateescape"))
    h.update(b"\0\0")
    h.update(folder.stats)  # the array's own buffer: no copy
    return h.hexdigest()


def folder_fingerprints(scan: ScanResult) -> dict[str, str]:
    return {prefix: folder_fingerprint(f) for prefix, f in scan.folders.items()}


def fingerprint(scan: ScanResult, folder_fps: dict[str, str] | None = None) -> str:
    """A digest of every path and stat of a scan (per folder, then over the folders)."""
    fps = folder_fps if folder_fps is not None else folder_fingerprints(scan)
    parts = [f"{p}\0{fp}" for p, fp in sorted(fps.items())]
    parts.append(repr(sorted(scan.unreadable.items())))
    return xxhash.xxh3_128_hexdigest("\n".join(parts).encode("utf-8", "surrogateescape"))


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


def excluded(rel: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(rel + "/", p) for p in patterns)


_excluded = excluded  # the name other modules import


def _entered(top: str, prefix: str, patterns: tuple[str, ...]) -> bool:
    """Whether the walk enters folder ``prefix``: every folder on the way a real folder
    (no link), none skipped or excluded."""
    if prefix and not prefix.endswith("/"):
        return False
    rel = ""
    for part in prefix.split("/")[:-1]:
        rel += part
        if part in SKIP_DIRS or part in ("", ".", "..") or (patterns and excluded(rel, patterns)):
            return False
        try:
            if not statmod.S_ISDIR(os.lstat(f"{top}/{rel}").st_mode):
                return False
        except OSError:
            return False
        rel += "/"
    return True
