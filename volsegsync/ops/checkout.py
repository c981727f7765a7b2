"""``volsegsync checkout``: make the working files match an index, from the store.

- no target: the working files match the index (missing and modified files
  are restored);
- ``REV``: the working files and the index match the index at git revision REV;
- ``PAIR@vN``: one pair rolls back to segmentation version N, pinned in the
  index (``!``) so that ``pair`` keeps it.

Never loses work: a working file whose content is not in the store is not
overwritten (``force`` stores it first). Never writes outside the dataset or
through a symbolic link. Semantics: ``docs/store.md``.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from volsegsync.dataset import INDEX_FILE, Dataset, default_jobs
from volsegsync.errors import VolsegsyncError
from volsegsync.fsutil import atomic_write_bytes, new_file_mode, open_regular, source_in_dataset
from volsegsync.hashing import CacheRow, Hashed, StatCache, settle_mtime
from volsegsync.index import (
    Entry,
    FileRecord,
    IndexFile,
    build_entry,
    check_relative_path,
    data_files,
    format_index,
    parse_index_bytes,
    read_index_file,
    with_data,
)
from volsegsync.magic import HEAD_BYTES, sniff
from volsegsync.ops.storing import open_store, store_settings
from volsegsync.store import ObjectDB, ObjectProblem, hash_local

ProgressFactory = Callable[[str, int], Callable[[int], None]]
_ROLLBACK = re.compile(r"(.+)@v([0-9]+)")

# what happens to a file
RESTORE, UPDATE, REMOVE = "restore", "update", "remove"
# why a file is left as it is
REFUSED, MISSING, UNSAFE, DAMAGED, FAILED = "refused", "missing", "unsafe", "damaged", "failed"


class FileChange(NamedTuple):
    path: str
    action: str  # restore (absent), update (other content), remove; or a problem kind
    digest: str | None  # the content it gets (None for remove)
    message: str


class CheckoutReport(NamedTuple):
    target: str  # "index", "REV" or "PAIR@vN"
    changes: list[FileChange]  # done (or, with dry_run, to do)
    problems: list[FileChange]  # refused, missing, unsafe, damaged, failed
    index_written: bool
    dry_run: bool
    stored: int  # working files stored first (force)


class _Plan(NamedTuple):
    target: IndexFile
    index_bytes: bytes | None  # the index text to write, None to leave it
    keep: list[FileRecord]  # files that must hold this content
    drop: list[FileRecord]  # files the current index records and the target does not


def run_checkout(
    ds: Dataset,
    target: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    progress: ProgressFactory | None = None,
    previous: str | None = None,
    verified: Collection[str] = (),
    jobs: int | None = None,
    sniffed: Mapping[tuple[str, str], str | None] | None = None,
) -> CheckoutReport:
    """``previous``: the git revision whose index the working files followed before
    (a post-checkout hook knows it): files it records and the target does not are
    removed, as git removes the files of the branch it leaves.

    ``verified``: digests of objects whose hash this run checked as they entered the
    store (``pull``'s fetch); their copies are not hashed a second time. ``sniffed``:
    ``(path, digest) -> format problem`` of objects whose first bytes that fetch read
    (:func:`~volsegsync.magic.sniff`); a working file it names is not read again for
    its stat-cache row. ``jobs``: files written at once (default: one per core)."""
    with ds.lock():
        current = read_index_file(ds.index_path)
        plan = _plan(ds, current, target)
        if previous is not None:
            plan = plan._replace(drop=_dropped(ds, previous, plan))
        db = open_store(ds, create=not dry_run)
        algorithm = plan.target.algorithm
        known = ds.cached_hashes() if algorithm == ds.config.store.hash else {}
        changes, problems, to_store = _decide(ds, db, plan, algorithm, known, force)
        refused = [p for p in problems if p.action == REFUSED]
        if dry_run or refused:
            return CheckoutReport(target or "index", changes, problems, False, dry_run, 0)
        stored = _store_first(ds, db, to_store, algorithm, problems)
        done = _apply(ds, db, changes, algorithm, problems, progress, jobs, verified, sniffed or {})
        written = False
        if plan.index_bytes is not None:
            try:
                old = ds.index_path.read_bytes()
            except OSError:
                old = None
            if old != plan.index_bytes:
                atomic_write_bytes(ds.index_path, plan.index_bytes)
                written = True
        return CheckoutReport(target or "index", done, problems, written, False, stored)


# -- what to check out ------------------------------------------------------------------


def _plan(ds: Dataset, current: IndexFile, target: str | None) -> _Plan:
    if target is None:
        return _Plan(current, None, _records(current.entries), [])
    m = _ROLLBACK.fullmatch(target)
    if m is not None:
        entry = _find_pair(ds, current.entries, m.group(1))
        if entry is not None:
            return _rollback(current, entry, int(m.group(2)), m.group(1))
    rel = INDEX_FILE
    try:
        raw = _index_at(ds, target)
    except VolsegsyncError:
        if m is None:
            raise
        raise VolsegsyncError(
            f"{m.group(1)}: no such pair in the index (by volume, case key or segmentation "
            f"path), and {target} is no git revision"
        ) from None
    if raw is None:
        raise VolsegsyncError(f"{target}: that revision has no {rel}")
    index = parse_index_bytes(raw, f"{target}:{rel}")
    keep = _records(index.entries)
    wanted = {r.path for r in keep}
    drop = [r for r in _records(current.entries) if r.path not in wanted]
    return _Plan(index, raw, keep, drop)


def _dropped(ds: Dataset, previous: str, plan: _Plan) -> list[FileRecord]:
    """What the index at ``previous`` (and the plan) records and the target does not."""
    raw = _index_at(ds, previous)
    old = parse_index_bytes(raw, f"{previous}:{INDEX_FILE}").entries if raw else []
    wanted = {r.path for r in plan.keep}
    drop = {r.path: r for r in plan.drop}
    drop.update((r.path, r) for r in _records(old) if r.path not in wanted)
    return sorted(drop.values())


def _index_at(ds: Dataset, rev: str) -> bytes | None:
    from volsegsync import history  # dulwich: only when a revision is read

    git_root = history.find_git_root(ds.root)
    if git_root is None:
        raise VolsegsyncError(f"{rev}: {ds.root} is not in a git repository")
    return history.read_at(git_root, rev, (ds.root / INDEX_FILE).relative_to(git_root).as_posix())


def _records(entries: list[Entry]) -> list[FileRecord]:
    return [r for e in entries for r in e.records()]


def _find_pair(ds: Dataset, entries: list[Entry], name: str) -> Entry | None:
    """The case named by its key, its volume path or one of its segmentation paths."""
    for e in entries:
        if e.key == name:
            return e
    try:
        rel = ds.relpath(name)
    except VolsegsyncError:
        return None
    for e in entries:
        if any(r.path == rel for r in e.records()):
            return e
    return None


def _rollback(current: IndexFile, entry: Entry, version: int, name: str) -> _Plan:
    versions = [(v.version, v.record) for v in entry.older]
    if entry.segmentation is not None:
        versions.append((entry.version, entry.segmentation))
    numbers = sorted(v for v, _ in versions if v is not None)
    if version not in numbers:
        listed = ", ".join(f"v{n}" for n in numbers) or "none"
        raise VolsegsyncError(f"{name}: no recorded version {version} (recorded: {listed})")
    top = max(numbers)
    pin = (version, top) if version != top else None
    new = build_entry(entry.key, entry.volume, versions, top, pin)
    new = with_data(new._replace(channels=entry.channels), data_files(entry))
    entries = [new if e is entry else e for e in current.entries]
    text = format_index(entries, current.algorithm).encode()
    keep = [r for r in (new.volume, new.segmentation, new.seg_data) if r is not None]
    keep.extend(r for _c, r in new.channels if r != new.volume)
    return _Plan(IndexFile(current.algorithm, entries, 2), text, keep, [])


# -- deciding, per file ------------------------------------------------------------------


class Unsafe(Exception):
    pass


def safe_target(root: Path, rel: str) -> Path:
    """``root/rel`` if writing there goes through no symbolic link and stays in the
    dataset (folders that do not exist yet are fine: they are created, not followed)."""
    return _check_target(root, rel)[0]


def _check_target(root: Path, rel: str) -> tuple[Path, bool]:
    """:func:`safe_target`, and whether every folder on the way exists already."""
    try:
        check_relative_path(rel, "index")
    except VolsegsyncError as e:
        raise Unsafe(str(e)) from None
    here = root
    for part in rel.split("/")[:-1]:
        here = here / part
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            return root / rel, False
        if stat.S_ISLNK(st.st_mode):
            raise Unsafe(
                f"{rel}: {here.relative_to(root).as_posix()} is a symbolic link; not followed"
            )
        if not stat.S_ISDIR(st.st_mode):
            raise Unsafe(f"{rel}: {here.relative_to(root).as_posix()} is not a folder")
    return root / rel, True


def _current_digest(
    ds: Dataset, path: str, st: os.stat_result, algorithm: str, known: dict[str, CacheRow]
) -> str:
    hit = known.get(path)
    if hit is not None and hit[:3] == (st.st_size, st.st_mtime_ns, st.st_ino):
        return str(hit[3])
    return hash_local(ds.root / path, algorithm)


def _decide(
    ds: Dataset,
    db: ObjectDB,
    plan: _Plan,
    algorithm: str,
    known: dict[str, CacheRow],
    force: bool,
) -> tuple[list[FileChange], list[FileChange], list[FileRecord]]:
    changes: list[FileChange] = []
    problems: list[FileChange] = []
    to_store: list[FileRecord] = []  # working content to store before overwriting (force)
    store_root = str(store_settings(ds).root)

    def judge(rec: FileRecord, wanted: str | None) -> None:
        """Whether the file at rec.path may get ``wanted`` (None: be removed)."""
        try:
            dest = safe_target(ds.root, rec.path)
            st = os.lstat(dest)
        except Unsafe as e:
            problems.append(FileChange(rec.path, UNSAFE, wanted, str(e)))
            return
        except FileNotFoundError:
            if wanted is not None:
                _restorable(rec.path, wanted, RESTORE)
            return
        except OSError as e:
            problems.append(FileChange(rec.path, FAILED, wanted, f"{rec.path}: {e.strerror}"))
            return
        if stat.S_ISLNK(st.st_mode):
            link = os.readlink(dest)
            if not link.startswith(store_root + os.sep):
                problems.append(
                    FileChange(
                        rec.path, UNSAFE, wanted, f"{rec.path}: a symbolic link; not replaced"
                    )
                )
                return
            parts = Path(link).parts
            if wanted is not None and "".join(parts[-2:]) == wanted:
                return  # our symlink to the wanted object
            _restorable(rec.path, wanted, UPDATE if wanted else REMOVE)
            return
        if not stat.S_ISREG(st.st_mode):
            problems.append(FileChange(rec.path, UNSAFE, wanted, f"{rec.path}: not a regular file"))
            return
        try:
            digest = _current_digest(ds, rec.path, st, algorithm, known)
        except OSError as e:
            problems.append(
                FileChange(rec.path, FAILED, wanted, f"{rec.path}: cannot read: {e.strerror}")
            )
            return
        if digest == wanted:
            return
        if not db.has(algorithm, digest):
            if not force:
                problems.append(
                    FileChange(
                        rec.path,
                        REFUSED,
                        wanted,
                        f"{rec.path}: holds content that is not in the store (an unrecorded "
                        "edit); not overwritten: record it with 'volsegsync pair', or "
                        "use --force to store it and overwrite",
                    )
                )
                return
            to_store.append(FileRecord(rec.path, st.st_size, digest))
        _restorable(rec.path, wanted, UPDATE if wanted else REMOVE)

    def _restorable(path: str, wanted: str | None, action: str) -> None:
        if wanted is not None and not db.has(algorithm, wanted):
            problems.append(
                FileChange(
                    path,
                    MISSING,
                    wanted,
                    f"{path}: content {algorithm}:{wanted} is not in the store; fetch it "
                    "from a remote or restore the file from a copy, then run 'volsegsync pair'",
                )
            )
            return
        changes.append(FileChange(path, action, wanted, f"{action}: {path}"))

    for rec in plan.keep:
        judge(rec, rec.digest)
    for rec in plan.drop:
        judge(rec, None)
    return changes, problems, to_store


# -- doing -------------------------------------------------------------------------------


def _store_first(
    ds: Dataset,
    db: ObjectDB,
    records: list[FileRecord],
    algorithm: str,
    problems: list[FileChange],
) -> int:
    stored = 0
    for rec in records:
        try:
            db.add(source_in_dataset(ds.root, rec.path), algorithm, rec.digest, ("reflink", "copy"))
            stored += 1
        except (ObjectProblem, OSError) as e:
            raise VolsegsyncError(f"{rec.path}: cannot store it before overwriting: {e}") from None
    return stored


def _apply(
    ds: Dataset,
    db: ObjectDB,
    changes: list[FileChange],
    algorithm: str,
    problems: list[FileChange],
    progress: ProgressFactory | None,
    jobs: int | None = None,
    verified: Collection[str] = (),
    sniffed: Mapping[tuple[str, str], str | None] | None = None,
) -> list[FileChange]:
    links = store_settings(ds).config.link
    tick = progress("checkout", len(changes)) if progress and changes else None
    default_mode = new_file_mode()

    def one(change: FileChange) -> tuple[FileChange, Hashed | None]:
        """The change done (and the file's stat-cache row), or a problem."""
        try:
            return _place(ds, db, change, algorithm, links, default_mode, verified, sniffed or {})
        except Unsafe as e:
            return change._replace(action=UNSAFE, message=str(e)), None
        except ObjectProblem as e:
            kind = MISSING if "not in the store" in str(e) else DAMAGED
            message = f"{change.path}: content {algorithm}:{change.digest} is {e}"
            return change._replace(action=kind, message=message), None
        except OSError as e:
            message = f"{change.path}: cannot write: {e.strerror or e}"
            return change._replace(action=FAILED, message=message), None
        finally:
            if tick:
                tick(1)

    done: list[FileChange] = []
    written: list[Hashed] = []
    with ThreadPoolExecutor(max_workers=jobs or default_jobs()) as pool:  # parallel I/O
        for result, row in pool.map(one, changes):
            (done if result.action in (RESTORE, UPDATE, REMOVE) else problems).append(result)
            if row is not None:
                written.append(row)
    if written and algorithm == ds.config.store.hash:
        cache = StatCache(ds.stat_db)
        try:
            cache.store(written)  # the next status does not re-read what was just written
        finally:
            cache.close()
    return done


def _place(
    ds: Dataset,
    db: ObjectDB,
    change: FileChange,
    algorithm: str,
    links: tuple[str, ...],
    default_mode: int,
    verified: Collection[str] = (),
    sniffed: Mapping[tuple[str, str], str | None] | None = None,
) -> tuple[FileChange, Hashed | None]:
    dest, folders_exist = _check_target(ds.root, change.path)  # again: a folder may be a link now
    if change.digest is None:
        os.unlink(dest)
        return change, None
    if not folders_exist:
        _mkdirs(ds.root, change.path)
    try:
        mode = stat.S_IMODE(os.lstat(dest).st_mode) | 0o200
    except FileNotFoundError:
        mode = default_mode
    used = db.place(algorithm, change.digest, dest, links, mode, change.digest in verified)
    if used in ("symlink", "hardlink"):
        return change, None  # the object's own stat: not cached as a working file
    st = settle_mtime(dest)
    key = (change.path, change.digest)
    if sniffed and key in sniffed:  # the fetch read these bytes: the same content
        return change, Hashed(change.path, st, change.digest, sniffed[key])
    with open_regular(dest) as f:
        head = f.read(HEAD_BYTES)
    return change, Hashed(change.path, st, change.digest, sniff(change.path, head))


def _mkdirs(root: Path, rel: str) -> None:
    here = root
    for part in rel.split("/")[:-1]:
        here = here / part
        try:
            os.mkdir(here)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(here).st_mode):
                raise Unsafe(
                    f"{rel}: {here.relative_to(root).as_posix()} is not a folder"
                ) from None
