"""``volsegsync verify``: every problem of a dataset, per file, with a category.

Two passes. The header pass (always) checks naming, pairing, geometry from
headers and drift by stat; it reads a few hundred bytes per file and caches them
by stat. The content pass (unless ``fast``) hashes every file (stat cache), then
decodes each content once, ever (content cache by hash): integrity and labels.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from volsegsync.content import ContentCache, ContentReport, analyse, label_problems
from volsegsync.dataset import Dataset, default_jobs
from volsegsync.errors import FileProblem
from volsegsync.geometry import compare
from volsegsync.hashing import Hashed, Stat
from volsegsync.header_cache import HeaderCache, HeaderResult
from volsegsync.headers import Geometry, HeaderProblem, read_geometry
from volsegsync.index import Entry
from volsegsync.naming import SEGMENTATION, NameInfo
from volsegsync.ops.snapshot import ProgressFactory, unpaired_problems
from volsegsync.pairing import Pair, Pairing, pair_by_metadata, pair_by_naming
from volsegsync.problems import Problem, apply_severities, make_problem

T = TypeVar("T")
R = TypeVar("R")
INLINE_LIMIT = 64  # fewer tasks than this run in-process: a worker pool costs more


class VerifyReport(NamedTuple):
    problems: list[Problem]
    pairs: list[Pair]  # every pair and unpaired file, for grouping the report
    files_checked: int
    fast: bool


def run_verify(
    ds: Dataset,
    paths: list[str] | None = None,
    fast: bool = False,
    jobs: int | None = None,
    progress: ProgressFactory | None = None,
) -> VerifyReport:
    """Verify the whole dataset; with ``paths``, report only problems touching them."""
    workers = jobs or default_jobs()
    scan = ds.scan()
    problems = [make_problem("unreadable", [p], f"{p}: {why}")
                for p, why in sorted(scan.unreadable.items())]
    infos: dict[str, NameInfo] = {}
    for path in sorted(scan.files):
        problems.extend(ds.convention.check(path))
        info = ds.convention.parse(path)
        if info is not None:
            infos[path] = info
    headers = _headers(ds, {p: scan.files[p] for p in infos}, workers, progress)
    broken = {p for p, r in headers.items() if r.geometry is None}
    problems.extend(_header_problems(headers))
    pairing = _pairing(ds, [i for p, i in infos.items() if p not in broken], headers)
    problems.extend(pairing.problems)
    problems.extend(unpaired_problems(pairing))
    problems.extend(_geometry_problems(ds, pairing, headers))
    hashed: dict[str, Hashed] = {}
    if not fast:
        tick = progress("hashing", len(scan.files)) if progress else None
        hashed, unreadable = ds.hashes(scan.files, jobs=workers, progress=tick, prune=True)
        problems.extend(make_problem("unreadable", [p], f"{p}: {why}")
                        for p, why in sorted(unreadable.items()))
        content_files = {p: i for p, i in infos.items() if p in hashed and p not in broken}
        problems.extend(_content_problems(ds, content_files, hashed, workers, progress))
    problems.extend(_drift_problems(ds.read_index(), scan.files, hashed, ds.cached_hashes()))
    problems = apply_severities(problems, ds.config.verify.severity)
    if paths is not None:
        wanted = _selector(paths)
        problems = [p for p in problems if any(wanted(f) for f in p.files)]
    return VerifyReport(problems, pairing.pairs, len(scan.files), fast)


def _selector(paths: list[str]) -> Callable[[str], bool]:
    exact = {p.rstrip("/") for p in paths}
    folders = tuple(p.rstrip("/") + "/" for p in paths if p not in ("", "."))
    if "." in exact or "" in exact:
        return lambda f: True
    return lambda f: f in exact or f.startswith(folders)


# -- header pass --------------------------------------------------------------------------


def _headers(
    ds: Dataset, files: dict[str, Stat], workers: int, progress: ProgressFactory | None
) -> dict[str, HeaderResult]:
    cache = HeaderCache(ds.state_dir / "headers.db")
    try:
        results = cache.lookup(files)
        todo = sorted(p for p in files if p not in results)
        tick = progress("reading headers", len(todo)) if progress and todo else None
        root = str(ds.root)
        fresh = []
        for path, result in _map(_read_header_task, [(root, p) for p in todo], workers, tick):
            results[path] = result
            fresh.append((path, files[path], result))
        cache.store(fresh)
        return results
    finally:
        cache.close()


def _read_header_task(args: tuple[str, str]) -> tuple[str, HeaderResult]:
    root, path = args
    try:
        return path, HeaderResult(read_geometry(Path(root) / path))
    except HeaderProblem as e:
        return path, HeaderResult(None, e.category, e.reason)
    except FileProblem as e:
        return path, HeaderResult(None, "corrupt", e.reason)


def _header_problems(headers: dict[str, HeaderResult]) -> Iterator[Problem]:
    for path in sorted(headers):
        r = headers[path]
        if r.geometry is None:
            category = r.category or "corrupt"
            yield make_problem(category, [path], f"{path}: {r.reason}", {"reason": r.reason})


def _pairing(ds: Dataset, infos: list[NameInfo], headers: dict[str, HeaderResult]) -> Pairing:
    pairing = pair_by_naming(infos)
    if ds.config.pairing.by != "metadata":
        return pairing

    def read(path: str) -> Geometry:
        geometry = headers[path].geometry
        if geometry is None:
            raise FileProblem(path, headers[path].reason or "no header")
        return geometry

    v = ds.config.verify
    return pair_by_metadata(pairing, read, ds.config.pairing.reference_keys,
                            v.position_tolerance, v.direction_tolerance)


def _geometry_problems(
    ds: Dataset, pairing: Pairing, headers: dict[str, HeaderResult]
) -> Iterator[Problem]:
    v = ds.config.verify
    for pair in pairing.pairs:
        if not (pair.volume and pair.segmentation):
            continue
        vol = headers[pair.volume].geometry
        seg = headers[pair.segmentation].geometry
        if vol is None or seg is None:
            continue
        for d in compare(vol, seg, v.position_tolerance, v.direction_tolerance):
            files = (pair.segmentation, pair.volume)
            message = f"{pair.segmentation}: {d.message}"
            yield make_problem(d.category, files, message, {"property": d.property, **d.details})


# -- content pass -------------------------------------------------------------------------


def _content_problems(
    ds: Dataset,
    infos: dict[str, NameInfo],
    hashed: dict[str, Hashed],
    workers: int,
    progress: ProgressFactory | None,
) -> list[Problem]:
    cache = ContentCache(ds.state_dir / "content.db")
    try:
        reports: dict[str, ContentReport] = {}
        todo: dict[tuple[str, str], str] = {}  # (digest, role) -> one path holding it
        for path, info in infos.items():
            cached = cache.get(hashed[path].digest, info.role)
            if cached is not None:
                reports[path] = cached
            else:
                todo.setdefault((hashed[path].digest, info.role), path)
        tick = progress("decoding", len(todo)) if progress and todo else None
        root = str(ds.root)
        tasks = [(root, path, role) for (_, role), path in todo.items()]
        decoded: dict[tuple[str, str], ContentReport] = {}
        for (path, role), report in _map(_analyse_task, tasks, workers, tick):
            decoded[(hashed[path].digest, role)] = report
            cache.put(hashed[path].digest, role, report)
        for path, info in infos.items():
            if path not in reports:
                reports[path] = decoded[(hashed[path].digest, info.role)]
        labels = ds.config.verify.labels
        problems: list[Problem] = []
        for path in sorted(infos):
            report = reports[path]
            if infos[path].role == SEGMENTATION:
                problems.extend(label_problems(path, report, labels))
            elif report.error:
                problems.extend(label_problems(path, report, {}))
        return problems
    finally:
        cache.close()


def _analyse_task(args: tuple[str, str, str]) -> tuple[tuple[str, str], ContentReport]:
    root, path, role = args
    return (path, role), analyse(Path(root) / path, role)


# -- drift --------------------------------------------------------------------------------


def _drift_problems(
    index: list[Entry],
    files: dict[str, Stat],
    hashed: dict[str, Hashed],
    known: dict[str, Hashed],
) -> Iterator[Problem]:
    for entry in index:
        for rec in (entry.volume, entry.segmentation):
            if rec is None:
                continue
            st = files.get(rec.path)
            if st is None:
                yield make_problem("drift_missing", [rec.path],
                                   f"{rec.path}: recorded in the index, missing from disk")
                continue
            h = hashed.get(rec.path)
            if h is None:
                cached = known.get(rec.path)
                h = cached if cached is not None and cached.stat == st else None
            if h is not None and h.digest != rec.digest:
                yield make_problem(
                    "drift_modified", [rec.path],
                    f"{rec.path}: content differs from the index ({rec.size} -> {h.stat.size} "
                    "bytes)", {"index_hash": rec.digest, "hash": h.digest,
                               "index_size": rec.size, "size": h.stat.size})
            elif h is None and st.size != rec.size:
                yield make_problem(
                    "drift_modified", [rec.path],
                    f"{rec.path}: size differs from the index ({rec.size} -> {st.size} bytes)",
                    {"index_size": rec.size, "size": st.size})


# -- parallel map -------------------------------------------------------------------------


def _map(
    func: Callable[[T], R], tasks: list[T], workers: int, tick: Callable[[int], None] | None
) -> Iterable[R]:
    """``map`` over worker processes (in-process for small batches), ticking progress."""
    if workers <= 1 or len(tasks) < INLINE_LIMIT:
        for task in tasks:
            yield func(task)
            if tick:
                tick(1)
        return
    context: Any = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    chunk = max(1, min(256, len(tasks) // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for result in pool.map(func, tasks, chunksize=chunk):
            yield result
            if tick:
                tick(1)
