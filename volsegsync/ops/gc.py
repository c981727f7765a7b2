"""``volsegsync gc``: remove store objects that no index references."""

from __future__ import annotations

import time
from typing import NamedTuple

from volsegsync import history
from volsegsync.dataset import INDEX_FILE, Dataset
from volsegsync.errors import IndexFormatError, VolsegsyncError
from volsegsync.index import parse_index_bytes, read_index_file
from volsegsync.ops.storing import forget_stored, open_store, store_settings
from volsegsync.store import ObjectDB

STALE_TMP_S = 3600.0  # an incomplete object older than this was left by a killed run


class GcReport(NamedTuple):
    removed: list[tuple[str, str, int]]  # (algorithm, digest, size), or to remove (dry run)
    kept: int
    indexes: int  # distinct index texts read (working tree and history)
    temporaries: int  # incomplete objects removed
    dry_run: bool


def referenced(ds: Dataset, remote_branches: bool = False) -> tuple[set[tuple[str, str]], int]:
    """Every ``(algorithm, digest)`` the working index or any index in the history of a
    branch or tag (with ``remote_branches``, of remote-tracking branches too) references,
    and how many distinct indexes were read."""
    keep: set[tuple[str, str]] = set()
    index = read_index_file(ds.index_path)
    keep.update((index.algorithm, r.digest) for e in index.entries for r in e.records())
    count = 1
    git_root = history.find_git_root(ds.root)
    if git_root is not None:
        rel = (ds.root / INDEX_FILE).relative_to(git_root).as_posix()
        for raw in history.contents_in_history(git_root, rel, remote_branches):
            try:
                old = parse_index_bytes(raw, f"{rel} in the git history")
            except IndexFormatError as e:
                raise VolsegsyncError(
                    f"{e}; gc removes nothing while an index it must honour is unreadable"
                ) from None
            keep.update((old.algorithm, r.digest) for e in old.entries for r in e.records())
            count += 1
    return keep, count


def run_gc(ds: Dataset, dry_run: bool = False, shared_ok: bool = False) -> GcReport:
    with ds.lock():
        settings = store_settings(ds)
        if settings.root != ds.meta_dir / "cache" and not shared_ok:
            raise VolsegsyncError(
                f"{settings.root}: the store is set by store.dir and may be shared with other "
                "clones, whose indexes gc cannot see; run gc with --shared to remove what "
                "this clone does not reference anyway"
            )
        db = open_store(ds)
        keep, count = referenced(ds)
        removed = []
        kept = 0
        for algorithm, digest, size in db.objects():
            if (algorithm, digest) in keep:
                kept += 1
                continue
            removed.append((algorithm, digest, size))
            if not dry_run:
                forget_stored(ds)
                db.remove(algorithm, digest)
        stale = _stale(db)
        if not dry_run:
            for path in stale:
                db.fs.remove(path)
        return GcReport(removed, kept, count, len(stale), dry_run)


def _stale(db: ObjectDB) -> list[str]:
    return db.stale_temporaries(STALE_TMP_S, time.time())
