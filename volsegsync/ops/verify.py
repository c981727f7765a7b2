"""``volsegsync verify``: every problem of a dataset, per file, with a category.

Per file: naming, then the header (a few hundred bytes, cached by stat), then,
unless ``fast``, the content (decoded once per content hash, ever: integrity and
labels). Per pair: pairing problems and geometry from headers. Per index entry:
drift. Verdicts of unchanged files and pairs come from the last run
(:class:`~volsegsync.verify_memo.VerifyMemo`), so only what changed is redone.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from volsegsync.dataset import Dataset, default_jobs
from volsegsync.errors import FileProblem, VolsegsyncError
from volsegsync.hashing import CacheRow, Hashed, Stat
from volsegsync.header_cache import HeaderCache, HeaderResult
from volsegsync.index import Entry
from volsegsync.naming import SEGMENTATION, NameInfo
from volsegsync.ops.snapshot import ProgressFactory, unpaired_problems
from volsegsync.pairing import Pair, Pairing, pair_by_metadata, pair_by_naming
from volsegsync.problems import Problem, apply_severities, make_problem, unreadable_problems
from volsegsync.verify_memo import VerifyMemo
from volsegsync.workers import parallel_map

if TYPE_CHECKING:  # numpy and nibabel load only when there is header or content work
    from volsegsync.content import ContentReport
    from volsegsync.headers import Geometry

MEMO_FORMAT = 2
HEADER_INLINE_LIMIT = 512  # header reads cost ~0.2 ms: a pool pays off only for many


class VerifyReport(NamedTuple):
    problems: list[Problem]
    pairs: list[Pair]  # every pair and unpaired file, for grouping the report
    files_checked: int
    fast: bool


class _Run(NamedTuple):
    """What one verification run works with."""

    ds: Dataset
    files: dict[str, Stat]
    infos: dict[str, NameInfo]
    memo: VerifyMemo
    headers: HeaderCache
    workers: int
    progress: ProgressFactory | None
    seen: dict[str, HeaderResult]  # headers read in this run (recent files are not cached)


def run_verify(
    ds: Dataset,
    paths: list[str] | None = None,
    fast: bool = False,
    jobs: int | None = None,
    progress: ProgressFactory | None = None,
    index: list[Entry] | None = None,
) -> VerifyReport:
    """Verify the whole dataset; with ``paths``, report only problems touching them.
    ``index``: check drift against these entries (e.g. ``ds.index_at(rev)``), not the file."""
    index = ds.read_index() if index is None else index
    if paths is not None:
        _check_paths(ds, paths, index)
    scan = ds.scan()
    infos = {p: i for p in sorted(scan.files) if (i := ds.convention.parse(p)) is not None}
    mode = "fast" if fast else "full"
    memo = VerifyMemo(
        ds.state_dir / f"verify-{mode}.marshal", ds.state_key("verify", str(MEMO_FORMAT), mode)
    )
    headers = HeaderCache(ds.state_dir / "headers.db")
    run = _Run(ds, scan.files, infos, memo, headers, jobs or default_jobs(), progress, {})
    try:
        problems = unreadable_problems(scan.unreadable)
        hashed: dict[str, Hashed] = {}
        if not fast:
            tick = progress("hashing", len(scan.files)) if progress else None
            hashed, unreadable = ds.hashes(scan.files, jobs=run.workers, progress=tick, prune=True)
            problems.extend(unreadable_problems(unreadable))
        broken, file_problems = _file_verdicts(run, hashed, fast)
        problems.extend(file_problems)
        pairing = _pairing(run, list(infos.values()), broken)
        problems.extend(pairing.problems)
        problems.extend(unpaired_problems(pairing))
        problems.extend(_pair_verdicts(run, pairing, broken))
        from volsegsync.dataset_checks import check_dataset  # dataset-level checks (view)

        ok = {p: st for p, st in scan.files.items() if p not in broken}
        lookup = functools.partial(_headers, run)
        problems.extend(check_dataset(ds, pairing.pairs, ok, lookup, hashed, run.workers))
        known = {} if hashed else ds.cached_hashes()
        problems.extend(_drift_problems(index, scan.files, hashed, known))
        memo.save()
    finally:
        headers.close()
    problems = apply_severities(problems, ds.config.verify.severity)
    if paths is not None:
        wanted = _selector(paths)
        problems = [p for p in problems if any(wanted(f) for f in p.files)]
    return VerifyReport(problems, pairing.pairs, len(scan.files), fast)


def _check_paths(ds: Dataset, paths: list[str], index: list[Entry]) -> None:
    """A path must exist, or be one the index records (to ask about its drift)."""
    indexed = {r.path for e in index for r in (e.volume, e.segmentation) if r is not None}
    for path in paths:
        if path in ("", ".") or os.path.lexists(ds.root / path):
            continue
        folder = path.rstrip("/") + "/"
        if path not in indexed and not any(p.startswith(folder) for p in indexed):
            raise VolsegsyncError(f"{path}: no such file or folder in the dataset")


def _selector(paths: list[str]) -> Callable[[str], bool]:
    exact = {p.rstrip("/") for p in paths}
    folders = tuple(p.rstrip("/") + "/" for p in paths if p not in ("", "."))
    if "." in exact or "" in exact:
        return lambda f: True
    return lambda f: f in exact or f.startswith(folders)


# -- per file: naming, header, content ----------------------------------------------------


def _file_verdicts(
    run: _Run, hashed: dict[str, Hashed], fast: bool
) -> tuple[set[str], list[Problem]]:
    """Files whose header cannot be read, and every per-file problem."""
    broken: set[str] = set()
    problems: list[Problem] = []
    fresh: list[str] = []
    for path in sorted(run.files):
        if fast or path in hashed:
            hit = run.memo.file(path, run.files[path])
            if hit is not None:
                if hit[0]:
                    broken.add(path)
                problems.extend(hit[1])
                continue
        fresh.append(path)
    if not fresh:
        return broken, problems
    headers = _headers(run, [p for p in fresh if p in run.infos])
    content: dict[str, list[Problem]] = {}
    if not fast:
        ok = [p for p in fresh if p in hashed and p in run.infos and headers[p].geometry]
        content = _content_problems(run, ok, hashed)
    for path in fresh:
        found = run.ds.convention.check(path)
        header = headers.get(path)
        is_broken = header is not None and header.geometry is None
        if header is not None and header.geometry is None:
            category = header.category or "corrupt"
            found.append(
                make_problem(
                    category, [path], f"{path}: {header.reason}", {"reason": header.reason}
                )
            )
        found.extend(content.get(path, []))
        if is_broken:
            broken.add(path)
        problems.extend(found)
        if fast or path in hashed:
            run.memo.remember_file(path, run.files[path], is_broken, found)
    return broken, problems


def _headers(run: _Run, paths: list[str]) -> dict[str, HeaderResult]:
    """Header results of ``paths``: from the header cache, or read (in parallel)."""
    results = {p: run.seen[p] for p in paths if p in run.seen}
    wanted = {p: run.files[p] for p in paths if p not in results}
    if wanted:
        results.update(run.headers.lookup(wanted))
    todo = sorted(p for p in wanted if p not in results)
    if todo:
        tick = run.progress("reading headers", len(todo)) if run.progress else None
        root = str(run.ds.root)
        fresh = []
        tasks = [(root, p) for p in todo]
        results_iter = parallel_map(
            _read_header_task, tasks, run.workers, tick, inline_limit=HEADER_INLINE_LIMIT
        )
        for path, result in results_iter:
            results[path] = result
            fresh.append((path, wanted[path], result))
        run.headers.store(fresh)
    run.seen.update(results)
    return results


def _read_header_task(args: tuple[str, str]) -> tuple[str, HeaderResult]:
    from volsegsync.headers import HeaderProblem, read_geometry

    root, path = args
    try:
        return path, HeaderResult(read_geometry(Path(root) / path, Path(root)))
    except HeaderProblem as e:
        return path, HeaderResult(None, e.category, e.reason)
    except FileProblem as e:
        return path, HeaderResult(None, "corrupt", e.reason)


def _content_problems(
    run: _Run, paths: list[str], hashed: dict[str, Hashed]
) -> dict[str, list[Problem]]:
    """Label and integrity problems per path; each content is decoded once, ever."""
    from volsegsync.content import ContentCache, content_key, label_problems

    limit = run.ds.config.limits.max_image_bytes

    def key_of(path: str) -> tuple[str, str]:  # everything that decides a report
        return hashed[path].digest, content_key(run.infos[path].role, path, limit)

    with ContentCache(run.ds.state_dir / "content.db") as cache:
        reports: dict[tuple[str, str], ContentReport] = {}
        todo: dict[tuple[str, str], str] = {}  # key -> one path holding it
        for path in paths:
            key = key_of(path)
            if key in reports or key in todo:
                continue
            cached = cache.get(key[0], run.infos[path].role, path, limit)
            if cached is not None:
                reports[key] = cached
            else:
                todo[key] = path
        if todo:
            tick = run.progress("decoding", len(todo)) if run.progress else None
            root = str(run.ds.root)
            tasks = [(root, path, run.infos[path].role, limit) for path in todo.values()]
            for (key, path), report in zip(
                todo.items(), parallel_map(_analyse_task, tasks, run.workers, tick), strict=True
            ):
                reports[key] = report
                cache.put(key[0], run.infos[path].role, report, path, limit)
    labels = run.ds.config.verify.labels
    out: dict[str, list[Problem]] = {}
    for path in paths:
        report = reports[key_of(path)]
        if run.infos[path].role == SEGMENTATION:
            out[path] = label_problems(path, report, labels)
        elif report.error:
            out[path] = label_problems(path, report, {})
    return out


def _analyse_task(args: tuple[str, str, str, int]) -> ContentReport:
    from volsegsync.content import analyse

    root, path, role, limit = args
    return analyse(Path(path), role, Path(root), limit)


# -- per pair: pairing and geometry -------------------------------------------------------


def _pairing(run: _Run, infos: list[NameInfo], broken: set[str]) -> Pairing:
    """Pairs by naming, every file included (a file with a broken header still has its
    place: its partner is not unpaired); by metadata for the rest if configured."""
    pairing = pair_by_naming(infos)
    if run.ds.config.pairing.by != "metadata":
        return pairing
    leftovers = pairing.unpaired_volumes + pairing.unpaired_segmentations
    headers = _headers(run, [p for p in leftovers if p not in broken])

    def read(path: str) -> Geometry | None:
        result = headers.get(path)
        return result.geometry if result is not None else None  # broken: reported per file

    v = run.ds.config.verify
    return pair_by_metadata(
        pairing,
        read,
        run.ds.config.pairing.reference_keys,
        v.position_tolerance,
        v.direction_tolerance,
    )


def _pair_verdicts(run: _Run, pairing: Pairing, broken: set[str]) -> list[Problem]:
    complete = [
        (p.volume, p.segmentation)
        for p in pairing.pairs
        if p.volume and p.segmentation and p.volume not in broken and p.segmentation not in broken
    ]
    problems: list[Problem] = []
    fresh: list[tuple[str, str]] = []
    for vol, seg in complete:
        hit = run.memo.pair(vol, seg, run.files[vol], run.files[seg])
        if hit is None:
            fresh.append((vol, seg))
        else:
            problems.extend(hit)
    if not fresh:
        return problems
    from volsegsync.geometry import compare

    headers = _headers(run, sorted({p for pair in fresh for p in pair}))
    tol = run.ds.config.verify
    for vol, seg in fresh:
        vol_geo, seg_geo = headers[vol].geometry, headers[seg].geometry
        if vol_geo is None or seg_geo is None:
            continue
        found = [
            make_problem(
                d.category, (seg, vol), f"{seg}: {d.message}", {"property": d.property, **d.details}
            )
            for d in compare(vol_geo, seg_geo, tol.position_tolerance, tol.direction_tolerance)
        ]
        problems.extend(found)
        run.memo.remember_pair(vol, seg, run.files[vol], run.files[seg], found)
    return problems


# -- drift --------------------------------------------------------------------------------


def _drift_problems(
    index: list[Entry],
    files: dict[str, Stat],
    hashed: dict[str, Hashed],
    known: dict[str, CacheRow],
) -> Iterator[Problem]:
    for entry in index:
        for rec in (entry.volume, entry.segmentation):
            if rec is None:
                continue
            st = files.get(rec.path)
            if st is None:
                yield make_problem(
                    "drift_missing",
                    [rec.path],
                    f"{rec.path}: recorded in the index, missing from disk",
                )
                continue
            digest = _digest(rec.path, st, hashed, known)
            if digest is not None and digest != rec.digest:
                yield make_problem(
                    "drift_modified",
                    [rec.path],
                    f"{rec.path}: content differs from the index ({rec.size} -> {st.size} bytes)",
                    {
                        "index_hash": rec.digest,
                        "hash": digest,
                        "index_size": rec.size,
                        "size": st.size,
                    },
                )
            elif digest is None and st.size != rec.size:
                yield make_problem(
                    "drift_modified",
                    [rec.path],
                    f"{rec.path}: size differs from the index ({rec.size} -> {st.size} bytes)",
                    {"index_size": rec.size, "size": st.size},
                )


def _digest(
    path: str, st: Stat, hashed: dict[str, Hashed], known: dict[str, CacheRow]
) -> str | None:
    """The content hash of a file if this run or the stat cache knows it."""
    h = hashed.get(path)
    if h is not None:
        return h.digest
    row = known.get(path)
    return row[3] if row is not None and row[:3] == st else None
