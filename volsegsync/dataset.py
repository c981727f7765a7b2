"""A dataset on disk: its folder layout, config, index, caches and lock.

Layout::

    ROOT/.volsegsync/config.toml   tracked: naming, roles, pairing, verify settings
    ROOT/.volsegsync/.gitignore    keeps state/, cache/ and config.local.toml out of git
    ROOT/.volsegsync/config.local.toml  untracked: this clone's settings (store.dir)
    ROOT/.volsegsync/state/        local only: pipeline memo, stat cache, content caches, lock
    ROOT/.volsegsync/cache/        local only: the content store (docs/store.md)
    ROOT/volsegsync.index          tracked: volume -> segmentation with hashes
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import xxhash

from volsegsync import __version__
from volsegsync.config import (
    Config,
    parse_config,
    parse_local_config,
    parse_toml,
    read_config_bytes,
)
from volsegsync.errors import NotADatasetError, VolsegsyncError
from volsegsync.fsutil import (
    CONFIG_LIMIT,
    INDEX_LIMIT,
    is_plain_folder,
    read_memo,
    read_small,
    write_lock,
    write_memo,
)
from volsegsync.hashing import CacheRow, Hashed, Stat, StatCache, hash_many
from volsegsync.index import Entry, from_plain, parse_index, read_index, to_plain, write_index
from volsegsync.naming import Convention
from volsegsync.scan import ScanResult, walk

META_DIR = ".volsegsync"
CONFIG_FILE = "config.toml"
LOCAL_CONFIG_FILE = "config.local.toml"
INDEX_FILE = "volsegsync.index"
STATE_DIR = "state"

Progress = Callable[[int], None]


def default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def load_dataset_config(meta: Path) -> tuple[Config, str]:
    """The tracked config with the untracked local one over it, and the digest of the
    tracked file's bytes (what memo keys name: :meth:`Dataset.state_key`).

    Their TOML tables are memoised by the files' bytes (``state/config.marshal``, a
    memo of this state folder only): a run with the same files loads no TOML parser and
    does not compile each pattern again to check it, which a second run would find as
    the first did. Every other check runs each time."""
    path, local_path = meta / CONFIG_FILE, meta / LOCAL_CONFIG_FILE
    raw, local_raw = read_config_bytes(path), read_config_bytes(local_path)
    digest = xxhash.xxh3_128_hexdigest(raw or b"")
    key = [
        __version__,
        *(xxhash.xxh3_128_hexdigest(b) if b is not None else "" for b in (raw, local_raw)),
    ]
    memo_path = meta / STATE_DIR / "config.marshal"
    state = is_plain_folder(meta / STATE_DIR)
    memo = read_memo(memo_path) if state else None
    if isinstance(memo, dict) and memo.get("key") == key:
        tables, local_tables = memo["tables"]
        config = parse_config(path, tables, checked=True)
        return parse_local_config(local_path, local_tables, config, checked=True), digest
    tables, local_tables = parse_toml(path, raw), parse_toml(local_path, local_raw)
    config = parse_local_config(local_path, local_tables, parse_config(path, tables))
    if state:  # a memo never creates the state folder
        write_memo(memo_path, {"key": key, "tables": [tables, local_tables]})
    return config, digest


class Dataset:
    """An opened dataset. Cheap to construct; nothing is scanned until asked."""

    def __init__(self, root: Path, config: Config, config_digest: str | None = None) -> None:
        self.root = root
        self.config = config
        # the digest of the config file's bytes that ``config`` was parsed from (None:
        # read it when a memo key needs it)
        self._config_digest = config_digest
        self.convention = Convention(config.naming, config.roles)

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, start: Path | str = ".") -> Dataset:
        """Open the dataset at ``start`` or its nearest parent that has one."""
        root = find_root(Path(start))
        if (root / META_DIR).is_symlink():  # its config would be read from elsewhere
            raise VolsegsyncError(f"{root / META_DIR}: is a symbolic link; it must be a folder")
        return cls(root, *load_dataset_config(root / META_DIR))

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

    def state_key(self, *parts: str) -> str:
        """A key for memoised results: volsegsync's version, ``parts`` and the config's
        digest, so that a new version or another config never reuses them: the digest of
        the bytes this dataset's config was parsed from, when it was opened so."""
        digest = self._config_digest
        if digest is None:
            try:
                config = read_small(self.config_path, CONFIG_LIMIT, "config")
            except (OSError, VolsegsyncError):
                config = b""
            digest = xxhash.xxh3_128_hexdigest(config)
        return "/".join([__version__, *parts, digest])

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
        """The index's entries; a parse of the same bytes is reused from the state folder."""
        try:
            raw = read_small(self.index_path, INDEX_LIMIT, "index")
        except OSError:
            return read_index(self.index_path)  # says what is wrong, or [] when missing
        digest = xxhash.xxh3_128_hexdigest(raw)
        memo = self.state_dir / "index.marshal"
        try:
            data = read_memo(memo)  # None unless written here for this state folder
            if data is not None and data["digest"] == digest:
                return from_plain(data["entries"])
        except (ValueError, TypeError, KeyError):
            pass
        entries = read_index(self.index_path)
        write_memo(memo, {"digest": digest, "entries": to_plain(entries)})
        return entries

    def index_at(self, rev: str) -> list[Entry]:
        """The index as committed at a git revision (branch, tag, commit, ``HEAD~2``)."""
        from volsegsync.history import GitHistory  # dulwich loads only for history

        with GitHistory(self.root) as git:
            text = git.index_text(rev)
            if text is None:
                raise VolsegsyncError(f"{rev}: no {git.path} in that commit")
        return parse_index(text, f"{rev}:{git.path}")

    def write_index(self, entries: list[Entry]) -> None:
        write_index(self.index_path, entries, self.config.store.hash)

    @property
    def stat_db(self) -> Path:
        """The stat cache of the configured hash algorithm."""
        algorithm = self.config.store.hash
        return self.state_dir / ("stat.db" if algorithm == "xxh3-128" else f"stat.{algorithm}.db")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The write lock: one writing run at a time."""
        with write_lock(self.state_dir / "lock"):
            yield

    # -- scanning and hashing ------------------------------------------------------------

    def scan(self, jobs: int | None = None) -> ScanResult:
        """Every candidate file of the dataset with its stat (nothing is read); with
        ``jobs=1``, by this process alone (see :func:`~volsegsync.scan.walk`)."""
        return walk(self.root, self.convention, self.config.exclude, shared=jobs != 1)

    def cached_hashes(self) -> dict[str, CacheRow]:
        """Everything the stat cache knows, ``path -> (size, mtime_ns, ino, digest,
        problem)``: trust an entry only where its stat equals the file's."""
        cache = StatCache(self.stat_db)
        try:
            return cache.load()
        finally:
            cache.close()

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
        cache = StatCache(self.stat_db)
        try:
            known = cache.load()
            hashed: dict[str, Hashed] = {}
            todo: list[tuple[str, Stat]] = []
            for path, st in files.items():
                hit = known.get(path)
                if hit is not None and hit[:3] == st:
                    hashed[path] = Hashed(path, st, hit[3], hit[4])
                else:
                    todo.append((path, st))
            if progress and hashed:
                progress(len(hashed))
            unreadable: dict[str, str] = {}
            tick = (lambda: progress(1)) if progress else None
            fresh: list[Hashed] = []
            for result in hash_many(
                self.root, todo, jobs or default_jobs(), tick, self.config.store.hash
            ):
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
    try:
        if not here.is_dir():
            raise NotADatasetError(f"{start}: no such folder")
        for folder in (here, *here.parents):
            if (folder / META_DIR).is_dir():
                return folder
    except OSError as e:  # e.g. a folder above that this user may not enter
        raise NotADatasetError(f"{here}: cannot look for a dataset: {e.strerror}") from None
    raise NotADatasetError(
        f"{here}: not a volsegsync dataset (nor any parent folder); run 'volsegsync init' first"
    )
