"""The dataset's content store: where it is, and putting recorded files into it.

``.volsegsync/cache/`` by default (ignored by git, not in ``state/``, which is
safe to delete); ``store.dir`` in the untracked ``.volsegsync/config.local.toml``
points it elsewhere, e.g. a folder several clones share.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from volsegsync.config import StoreConfig, _Reader, parse_store
from volsegsync.dataset import Dataset, default_jobs
from volsegsync.errors import ConfigError
from volsegsync.fsutil import read_memo, source_in_dataset, write_memo
from volsegsync.index import Entry, FileRecord
from volsegsync.store import LocalFS, ObjectDB, ObjectProblem, StoreError

LOCAL_CONFIG = "config.local.toml"
CACHE_DIR = "cache"
BATCH = 64  # files per task: a task per tiny file costs more than storing it


class StoreSettings(NamedTuple):
    root: Path
    config: StoreConfig


def store_settings(ds: Dataset) -> StoreSettings:
    """The tracked ``[store]`` settings, overridden by the local config's."""
    path = ds.meta_dir / LOCAL_CONFIG
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return StoreSettings(ds.meta_dir / CACHE_DIR, ds.config.store)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    if sys.version_info >= (3, 11):  # a parser loaded only for a local config
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    top = _Reader(path, data, "")
    top.check_keys({"store", "remotes", "core"})  # remotes: config.load_local_config
    reader = top.sub("store")
    config = parse_store(reader, ds.config.store)
    folder = reader.string("dir", "")
    if not folder:
        return StoreSettings(ds.meta_dir / CACHE_DIR, config)
    root = Path(os.path.expanduser(folder))
    return StoreSettings(root if root.is_absolute() else ds.root / root, config)


def open_store(ds: Dataset, create: bool = True) -> ObjectDB:
    """The dataset's object database (created on first use)."""
    settings = store_settings(ds)
    root = settings.root
    if create:
        try:
            root.mkdir(parents=True, exist_ok=True)
            if root == ds.meta_dir / CACHE_DIR and not (root / ".gitignore").exists():
                (root / ".gitignore").write_text("*\n")  # datasets made before the store
        except OSError as e:
            raise StoreError(f"{root}: cannot create the content store: {e.strerror}") from None
    return ObjectDB(LocalFS(root))


class StoreReport(NamedTuple):
    added: int  # objects written
    added_bytes: int
    problems: list[str]  # one line per file that could not be stored


def store_records(
    ds: Dataset,
    db: ObjectDB,
    records: Iterable[FileRecord],
    algorithm: str,
    links: tuple[str, ...],
    jobs: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> StoreReport:
    """Put the content of each record's working file into the store (what is there
    already is skipped at the cost of one stat, taken by the workers)."""
    records = list(records)
    todo = {r.digest: r for r in records}  # one file per content
    if progress and len(records) > len(todo):
        progress(len(records) - len(todo))

    cached = ds.cached_hashes() if "hardlink" in links else {}

    def one(rec: FileRecord) -> str | bool:
        """A problem, or whether the object was written (False: it was there)."""
        row = cached.get(rec.path)
        known = row[:3] if row is not None and row[3] == rec.digest else None
        try:
            if db.has(algorithm, rec.digest):
                return False  # one stat; the source is not even opened
            return db.add(source_in_dataset(ds.root, rec.path), algorithm, rec.digest, links, known)
        except ObjectProblem as e:
            return str(e)
        except OSError as e:
            return f"{rec.path}: cannot store: {e.strerror or e}"
        finally:
            if progress:
                progress(1)

    todo_list = list(todo.values())
    batches = [todo_list[i : i + BATCH] for i in range(0, len(todo_list), BATCH)]
    from concurrent.futures import ThreadPoolExecutor  # (with logging) only when storing

    with ThreadPoolExecutor(max_workers=jobs or default_jobs()) as pool:  # parallel I/O
        results = [r for batch in pool.map(lambda b: [one(r) for r in b], batches) for r in batch]
    problems = [r for r in results if isinstance(r, str)]
    stored = [rec for rec, r in zip(todo_list, results, strict=True) if r is True]
    return StoreReport(len(stored), sum(r.size for r in stored), problems)


def store_entries(
    ds: Dataset,
    entries: Iterable[Entry],
    jobs: int | None = None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
    index_key: str | None = None,
) -> StoreReport:
    """Store every file the entries record (``pair`` calls this before writing the index).

    ``index_key`` (the digest of the index text these entries make): when the last
    complete run stored exactly that index into this very store folder, nothing is
    looked at again (``fsck`` and ``gc`` forget it when they remove objects)."""
    settings = store_settings(ds)
    db = open_store(ds)
    memo_key = _memo_key(settings.root, index_key)
    if memo_key is not None and read_memo(ds.state_dir / STORED_MEMO) == memo_key:
        return StoreReport(0, 0, [])
    records = [r for e in entries for r in e.records()]
    tick = progress("storing", len(records)) if progress and records else None
    report = store_records(
        ds, db, records, ds.config.store.hash, _add_links(settings.config.link), jobs, tick
    )
    if memo_key is not None and not report.problems:
        write_memo(ds.state_dir / STORED_MEMO, memo_key)
    return report


STORED_MEMO = "stored.marshal"


def _memo_key(root: Path, index_key: str | None) -> str | None:
    """The index digest and the store folder's identity (a store deleted and made
    again is another folder)."""
    if index_key is None:
        return None
    try:
        st = os.stat(root)
    except OSError:
        return None
    return f"{index_key}/{root}/{st.st_dev}/{st.st_ino}"


def forget_stored(ds: Dataset) -> None:
    """After objects were removed: the next ``pair`` checks every file again."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(ds.state_dir / STORED_MEMO)


def _add_links(links: tuple[str, ...]) -> tuple[str, ...]:
    """Link types for adding: a symlink into the working tree cannot hold content."""
    return tuple(k for k in links if k != "symlink") or ("copy",)


def store_enabled(ds: Dataset) -> bool:
    return store_settings(ds).config.enabled
