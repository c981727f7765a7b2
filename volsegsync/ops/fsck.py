"""``volsegsync fsck``: rehash the store's objects (and the working files)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from volsegsync.dataset import Dataset, default_jobs
from volsegsync.index import FileRecord, read_index_file
from volsegsync.ops.storing import forget_stored, open_store
from volsegsync.store import hash_local

ProgressFactory = Callable[[str, int], Callable[[int], None]]


class FsckProblem(NamedTuple):
    kind: str  # corrupt (object moved aside), missing (object), modified / absent (working)
    path: str  # the object's key, or the working file's path
    digest: str
    message: str


class FsckReport(NamedTuple):
    objects: int  # objects checked
    files: int  # working files checked (--working)
    problems: list[FsckProblem]


def run_fsck(
    ds: Dataset,
    working: bool = False,
    jobs: int | None = None,
    progress: ProgressFactory | None = None,
) -> FsckReport:
    with ds.lock():
        forget_stored(ds)  # objects may be gone: the next pair checks every file again
        db = open_store(ds)
        index = read_index_file(ds.index_path)
        objects = list(db.objects())
        tick = progress("objects", len(objects)) if progress and objects else None
        problems: list[FsckProblem] = []

        def check(obj: tuple[str, str, int]) -> tuple[str, str] | None:
            algorithm, digest, _size = obj
            ok = db.verify(algorithm, digest)
            if tick:
                tick(1)
            return None if ok else (algorithm, digest)

        with ThreadPoolExecutor(max_workers=jobs or default_jobs()) as pool:
            bad = [b for b in pool.map(check, objects) if b]
        for algorithm, digest in bad:
            key = db.key(algorithm, digest)
            aside = db.quarantine(algorithm, digest)
            problems.append(
                FsckProblem(
                    "corrupt",
                    key,
                    digest,
                    f"{key}: content does not match its hash; moved aside to {aside}",
                )
            )
        records = {r.path: r for e in index.entries for r in e.records()}
        for rec in sorted(records.values()):
            if not db.has(index.algorithm, rec.digest):
                problems.append(
                    FsckProblem(
                        "missing",
                        rec.path,
                        rec.digest,
                        f"{rec.path}: content {index.algorithm}:{rec.digest} is not in the "
                        "store; run 'volsegsync pair' while the file is intact, or fetch it",
                    )
                )
        files = 0
        if working:
            files = len(records)
            problems.extend(_check_working(ds, list(records.values()), index.algorithm, jobs))
        return FsckReport(len(objects), files, problems)


def _check_working(
    ds: Dataset, records: list[FileRecord], algorithm: str, jobs: int | None
) -> list[FsckProblem]:
    def one(rec: FileRecord) -> FsckProblem | None:
        path, digest = rec.path, rec.digest
        try:
            found = hash_local(ds.root / path, algorithm)
        except FileNotFoundError:
            return FsckProblem("absent", path, digest, f"{path}: recorded in the index, absent")
        except OSError as e:
            return FsckProblem("absent", path, digest, f"{path}: cannot read: {e.strerror}")
        if found != digest:
            return FsckProblem(
                "modified", path, digest, f"{path}: content differs from the index ({found})"
            )
        return None

    with ThreadPoolExecutor(max_workers=jobs or default_jobs()) as pool:
        return [p for p in pool.map(one, sorted(records)) if p]
