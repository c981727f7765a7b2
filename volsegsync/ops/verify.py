"""``volsegsync verify``: every problem of a dataset, per file, with a category.

Verify consumes the one pipeline (:mod:`volsegsync.ops.snapshot`) that ``pair`` and
``status`` use: the same files, hashes, pairing and per-file problems, each
reported once. On top it checks, per case (the files of one pairing key): naming,
headers (a few hundred bytes, cached by stat), unless ``fast`` the content
(decoded once per content hash: integrity and labels), geometry of the pair from
headers, and drift from the index. Verdicts are memoised per case and redone only
for the cases the pipeline changed since the last run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from volsegsync.dataset import Dataset, default_jobs
from volsegsync.errors import FileProblem, VolsegsyncError
from volsegsync.hashing import Stat
from volsegsync.header_cache import HeaderCache, HeaderResult
from volsegsync.index import Entry
from volsegsync.memo import load_memo, save_memo
from volsegsync.naming import SEGMENTATION
from volsegsync.ops.snapshot import (
    Case,
    Member,
    ProgressFactory,
    Snapshot,
    entry_files,
    take_snapshot,
)
from volsegsync.pairing import Pair
from volsegsync.problems import (
    Problem,
    apply_severities,
    make_problem,
    problems_from_plain,
    problems_to_plain,
)
from volsegsync.workers import parallel_map

if TYPE_CHECKING:  # numpy and nibabel load only when there is header or content work
    from volsegsync.content import ContentReport

MEMO_FORMAT = 3
HEADER_INLINE_LIMIT = 512  # header reads cost ~0.2 ms: a pool pays off only for many


class VerifyReport(NamedTuple):
    problems: list[Problem]
    pairs: list[Pair]  # the pairs and unpaired files that problems touch (for grouping)
    files_checked: int
    fast: bool
    pair_count: int = 0  # complete pairs in the dataset


class _Run(NamedTuple):
    """What one verification run works with."""

    ds: Dataset
    files: dict[str, Stat]
    members: dict[str, Member]
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
) -> VerifyReport:
    """Verify the whole dataset; with ``paths``, report only problems touching them."""
    if paths is not None:
        _check_paths(ds, paths, ds.read_index())
    snap = take_snapshot(ds, jobs=jobs, progress=progress)
    mode = "fast" if fast else "full"
    key = ds.state_key("verify", str(MEMO_FORMAT), mode, ds.config.pairing.by)
    memo_path = ds.state_dir / f"verify-{mode}.marshal"
    memo = load_memo(memo_path, key)
    todo = None if memo is None else snap.changed_since(memo["gen"])
    by_key: dict[str, Any] = {} if memo is None or todo is None else memo["cases"]
    if todo is None or todo:
        cases = snap.cases(None if todo is None else sorted(todo))
        if todo is not None:
            for k in todo:
                by_key.pop(k, None)
        by_key.update(_verify_cases(ds, snap, cases, fast, jobs, progress))
        save_memo(memo_path, {"key": key, "gen": snap.generation, "cases": by_key})
    problems = [p for _, plain, _ in by_key.values() for p in problems_from_plain(plain)]
    problems.extend(problems_from_plain(snap.top["meta_problems"]))
    pairs = list(dict.fromkeys(Pair(*p) for _, _, pairs in by_key.values() for p in pairs))
    problems.sort(key=lambda p: (p.files, p.category, p.message))
    if paths is not None:
        wanted = _selector(paths)
        problems = [p for p in problems if any(wanted(f) for f in p.files)]
    return VerifyReport(problems, pairs, snap.files, fast, snap.pairs)


def _verify_cases(
    ds: Dataset,
    snap: Snapshot,
    cases: list[Case],
    fast: bool,
    jobs: int | None,
    progress: ProgressFactory | None,
) -> dict[str, Any]:
    """``key -> (key, problems, pairs)`` (plain data) for the cases that have problems."""
    if not cases:
        return {}
    members = {m.path: m for c in cases for m in c.members}
    # a metadata pair joins files of two cases: its partner's member is needed too
    for c in cases:
        for pair in c.pairs:
            for path in (pair.volume, pair.segmentation):
                if path and path not in members:
                    for other in snap.cases([snap.pipeline.rules.key_of(path)[0]]):
                        members.update((m.path, m) for m in other.members)
    files = {p: st for p in members if (st := snap.scan.stat(p)) is not None}
    headers = HeaderCache(ds.state_dir / "headers.db")
    run = _Run(ds, files, members, headers, jobs or default_jobs(), progress, {})
    try:
        per_file = _file_problems(run, [m for c in cases for m in c.members], fast)
        out: dict[str, Any] = {}
        severity = ds.config.verify.severity
        for case in cases:
            found = list(case.problems)
            for m in case.members:
                found.extend(per_file.get(m.path, ()))
            # a pair is checked by the case that records it (a metadata pair is
            # listed by its segmentation's case as well)
            checked = case.pairs if case.entry is not None else ()
            found.extend(apply_severities(_pair_problems(run, checked), severity))
            found.extend(apply_severities(list(_drift(case)), severity))
            if found:
                pairs = tuple(tuple(p) for p in case.pairs)
                out[case.key] = (case.key, problems_to_plain(found), pairs)
        return out
    finally:
        headers.close()


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


def _file_problems(run: _Run, members: list[Member], fast: bool) -> dict[str, list[Problem]]:
    """Naming, header and (unless ``fast``) content problems of each file that the
    pipeline could read as what its name claims (others have their one problem)."""
    readable = [m for m in members if m.role and m.problem is None and m.path in run.files]
    headers = _headers(run, [m.path for m in readable])
    content: dict[str, list[Problem]] = {}
    if not fast:
        ok = [m for m in readable if m.digest and headers[m.path].geometry is not None]
        content = _content_problems(run, ok)
    out: dict[str, list[Problem]] = {}
    for m in members:
        found: list[Problem] = []
        if m.role and (m.problem is None or m.problem[0] != "unreadable"):
            found.extend(run.ds.convention.check(m.path))
        header = headers.get(m.path)
        if header is not None and header.geometry is None:
            category = header.category or "corrupt"
            found.append(
                make_problem(
                    category, [m.path], f"{m.path}: {header.reason}", {"reason": header.reason}
                )
            )
        found.extend(content.get(m.path, []))
        if found:
            out[m.path] = apply_severities(found, run.ds.config.verify.severity)
    return out


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
        return path, HeaderResult(read_geometry(Path(root) / path))
    except HeaderProblem as e:
        return path, HeaderResult(None, e.category, e.reason)
    except FileProblem as e:
        return path, HeaderResult(None, "corrupt", e.reason)


def _content_problems(run: _Run, members: list[Member]) -> dict[str, list[Problem]]:
    """Label and integrity problems per path; each content is decoded once, ever."""
    from volsegsync.content import ContentCache, label_problems

    with ContentCache(run.ds.state_dir / "content.db") as cache:
        reports: dict[tuple[str, str], ContentReport] = {}
        todo: dict[tuple[str, str], str] = {}  # (digest, role) -> one path holding it
        for m in members:
            path = m.path
            key = (m.digest, m.role)
            if key in reports or key in todo:
                continue
            cached = cache.get(*key)
            if cached is not None:
                reports[key] = cached
            else:
                todo[key] = path
        if todo:
            tick = run.progress("decoding", len(todo)) if run.progress else None
            root = str(run.ds.root)
            tasks = [(root, path, role) for (_, role), path in todo.items()]
            keys = list(todo)
            for key, report in zip(
                keys, parallel_map(_analyse_task, tasks, run.workers, tick), strict=True
            ):
                reports[key] = report
                cache.put(*key, report)
    labels = run.ds.config.verify.labels
    out: dict[str, list[Problem]] = {}
    for m in members:
        path = m.path
        report = reports[(m.digest, m.role)]
        if m.role == SEGMENTATION:
            out[path] = label_problems(path, report, labels)
        elif report.error:
            out[path] = label_problems(path, report, {})
    return out


def _analyse_task(args: tuple[str, str, str]) -> ContentReport:
    from volsegsync.content import analyse

    root, path, role = args
    return analyse(Path(root) / path, role)


# -- per pair: geometry -------------------------------------------------------------------


def _pair_problems(run: _Run, pairs: Iterable[Pair]) -> list[Problem]:
    complete = [
        (p.volume, p.segmentation)
        for p in pairs
        if p.volume
        and p.segmentation
        and all(
            (m := run.members.get(f)) is not None and m.problem is None and f in run.files
            for f in (p.volume, p.segmentation)
        )
    ]
    if not complete:
        return []
    from volsegsync.geometry import compare

    headers = _headers(run, sorted({f for pair in complete for f in pair}))
    tol = run.ds.config.verify
    problems: list[Problem] = []
    for vol, seg in complete:
        vol_geo, seg_geo = headers[vol].geometry, headers[seg].geometry
        if vol_geo is None or seg_geo is None:
            continue
        problems.extend(
            make_problem(
                d.category, (seg, vol), f"{seg}: {d.message}", {"property": d.property, **d.details}
            )
            for d in compare(vol_geo, seg_geo, tol.position_tolerance, tol.direction_tolerance)
        )
    return problems


# -- drift --------------------------------------------------------------------------------


def _drift(case: Case) -> Iterable[Problem]:
    """Files whose content or presence differs from what the index records."""
    if case.indexed is None:
        return
    present = {m.path: m for m in case.members}
    kept = {k.path: k.why for k in case.kept}
    for rec in entry_files(case.indexed):
        m = present.get(rec.path)
        why = kept.get(rec.path)
        if why == "missing":
            yield make_problem(
                "drift_missing", [rec.path], f"{rec.path}: recorded in the index, missing from disk"
            )
        elif why == "untracked":
            yield make_problem(
                "drift_untracked",
                [rec.path],
                f"{rec.path}: recorded in the index, no longer tracked (on disk, outside the scan)",
            )
        elif m is not None and m.digest and m.digest != rec.digest:
            yield make_problem(
                "drift_modified",
                [rec.path],
                f"{rec.path}: content differs from the index ({rec.size} -> {m.size} bytes)",
                {
                    "index_hash": rec.digest,
                    "hash": m.digest,
                    "index_size": rec.size,
                    "size": m.size,
                },
            )
