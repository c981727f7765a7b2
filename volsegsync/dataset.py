"""A dataset on disk: its folder layout, config, index, caches and lock.

Layout::

    ROOT/.volsegsync/config.toml   tracked: naming, roles, pairing, verify settings
    ROOT/.volsegsync/.gitignore    keeps state/ out of git
    ROOT/.volsegsync/state/        local only: stat cache, content caches, lock (store later)
    ROOT/volsegsync.index          tracked: volume -> segmentation with hashes
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from volsegsync.config import Config, load_config
from volsegsync.errors import NotADatasetError, VolsegsyncError
from volsegsync.fsutil import write_lock
from volsegsync.hashing import Hashed, Stat, StatCache, hash_many
from volsegsync.index import Entry, read_index, write_index
from volsegsync.naming import Convention
from volsegsync.scan import ScanResult, stat_paths, walk

META_DIR = ".volsegsync"
CONFIG_FILE = "config.toml"
INDEX_FILE = "volsegsync.index"
STATE_DIR = "state"

Progress = Callable[[int], None]


def default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


class Dataset:
    """An opened dataset. Cheap to construct; nothing is scanned until asked."""

    def __init__(self, root: Path, config: Config) -> None:
        self.root = root
        self.config = config
        self.convention = Convention(config.naming, config.roles)

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, start: Path | str = ".") -> Dataset:
        """Open the dataset at ``start`` or its nearest parent that has one."""
        root = find_root(Path(start))
        return cls(root, load_config(root / META_DIR / CONFIG_FILE))

    # -- paths ---------------------------------------------------------------------------

    @property
    def meta_dir(self) -> Path:
        return self.root / META_DIR

    @property
    def config_path(self) -> Path:
        return self.meta_dir / CONFIG_FILE

    @property
    def index_path(self) -> Path:
        return self.root / INDEX_FILE

    @property
    def state_dir(self) -> Path:
        return self.meta_dir / STATE_DIR

    def relpath(self, path: Path | str) -> str:
        """A user-given path (relative to the cwd or absolute) as a dataset-relative one."""
        full = Path(os.path.abspath(path))
        try:
            rel = full.relative_to(self.root)
        except ValueError:
            raise VolsegsyncError(f"{path}: outside the dataset at {self.root}") from None
        return rel.as_posix()

    # -- index ---------------------------------------------------------------------------

    def read_index(self) -> list[Entry]:
        return read_index(self.index_path)

    def write_index(self, entries: list[Entry]) -> None:
        write_index(self.index_path, entries)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The write lock: one writing run at a time."""
        with write_lock(self.state_dir / "lock"):
            yield

    # -- scanning and hashing ------------------------------------------------------------

    def scan(self, paths: list[str] | None = None) -> ScanResult:
        """Candidate files (all, or the given dataset-relative paths) with their stat."""
        if paths is None:
            return walk(self.root, self.convention, self.config.exclude)
        return stat_paths(self.root, paths)

    def hashes(
        self,
        files: dict[str, Stat],
        jobs: int | None = None,
        progress: Progress | None = None,
        prune: bool = False,
    ) -> tuple[dict[str, Hashed], dict[str, str]]:
        """Content hash of each file, from the stat cache where its stat is unchanged.

        Returns ``(hashed, unreadable)``. With ``prune``, cache entries of files
        that no longer exist are dropped (use after a full scan).
        """
        cache = StatCache(self.state_dir / "stat.db")
        try:
            known = cache.load()
            hashed: dict[str, Hashed] = {}
            todo: list[tuple[str, Stat]] = []
            for path, st in files.items():
                hit = known.get(path)
                if hit is not None and hit.stat == st:
                    hashed[path] = hit
                else:
                    todo.append((path, st))
            if progress and hashed:
                progress(len(hashed))
            unreadable: dict[str, str] = {}
            tick = (lambda: progress(1)) if progress else None
            fresh: list[Hashed] = []
            for result in hash_many(self.root, todo, jobs or default_jobs(), tick):
                if isinstance(result, Hashed):
                    hashed[result.path] = result
                    fresh.append(result)
                else:
                    unreadable[result[0]] = result[1]
            if fresh:
                cache.store(fresh)
            if prune:
                cache.forget(p for p in known if p not in files)
            return hashed, unreadable
        finally:
            cache.close()


def find_root(start: Path) -> Path:
    here = Path(os.path.abspath(start))
    if not here.is_dir():
        raise NotADatasetError(f"{start}: no such folder")
    for folder in (here, *here.parents):
        if (folder / META_DIR).is_dir():
            return folder
    raise NotADatasetError(
        f"{here}: not a volsegsync dataset (nor any parent folder); run 'volsegsync init' first"
    )
