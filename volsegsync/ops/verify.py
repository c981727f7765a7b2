"""``volsegsync verify``: every problem of a dataset, per file, with a category.

Verify consumes the one pipeline (:mod:`volsegsync.ops.snapshot`) that ``pair`` and
``status`` use: the same files, hashes, pairing and per-file problems, each
reported once. On top it checks, per case (the files of one pairing key): naming,
headers (a few hundred bytes, cached by stat), unless ``fast`` the content
(decoded once per content hash: integrity and labels), geometry of the pair from
headers, channels of multi-channel cases, and drift from the index (or from the
entries of another revision: ``verify --rev``). Verdicts are memoised per case and
redone only for the cases the pipeline changed since the last run; the
dataset-level checks (:mod:`volsegsync.dataset_checks`) gather the facts of those
cases only, and recompute their problems only when those facts differ.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from volsegsync.channels import grid_problems
from volsegsync.dataset import Dataset, default_jobs
from volsegsync.dataset_checks import Candidate, DatasetChecks, StaleFacts
from volsegsync.errors import FileProblem, VolsegsyncError
from volsegsync.hashing import Stat
from volsegsync.header_cache import HeaderCache, HeaderResult
from volsegsync.index import Entry
from volsegsync.memo import load_memo, save_memo
from volsegsync.naming import SEGMENTATION
from volsegsync.ops.monitoring import monitor_for
from volsegsync.ops.snapshot import (
    DATA,
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
    from volsegsync.headers import Geometry
    from volsegsync.ops.fsmonitor import Monitor

MEMO_FORMAT = 4
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
    cases: list[Case]  # the cases verified in this run


def run_verify(
    ds: Dataset,
    paths: list[str] | None = None,
    fast: bool = False,
    jobs: int | None = None,
    progress: ProgressFactory | None = None,
    index: list[Entry] | None = None,
    fsmonitor: bool | None = None,
    monitor: Monitor | None = None,
    snapshot: Snapshot | None = None,
) -> VerifyReport:
    """Verify the whole dataset; with ``paths``, report only problems touching them.
    ``index``: check drift against these entries (e.g. ``ds.index_at(rev)``), not the file.
    ``fsmonitor``: use the file-system monitor (None: as the local config says).
    ``snapshot``: the pipeline's view the caller just took (not taken again)."""
    if paths is not None:
        _check_paths(ds, paths, ds.read_index() if index is None else index)
    snap = snapshot
    if snap is None:
        monitor = monitor if monitor is not None else monitor_for(ds, fsmonitor)
        snap = take_snapshot(ds, jobs=jobs, progress=progress, monitor=monitor)
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
        run = _run(ds, snap, cases, jobs, progress)
        try:
            by_key.update(_verify_cases(run, cases, fast))
            dataset = problems_to_plain(_dataset_problems(run, snap, fast))
        finally:
            run.headers.close()
        save_memo(memo_path, {"key": key, "gen": snap.stamp, "cases": by_key, "dataset": dataset})
    else:
        assert memo is not None
        dataset = memo["dataset"]
    problems = [p for _, plain, _ in by_key.values() for p in problems_from_plain(plain)]
    problems.extend(problems_from_plain(snap.top["meta_problems"]))
    problems.extend(problems_from_plain(dataset))
    if index is not None:  # drift from another revision's index, not the file's
        problems = [p for p in problems if not p.category.startswith("drift_")]
        problems.extend(apply_severities(_drift_from(ds, snap, index), ds.config.verify.severity))
    pairs = list(dict.fromkeys(Pair(*p) for _, _, pairs in by_key.values() for p in pairs))
    problems.sort(key=lambda p: (p.files, p.category, p.message))
    if paths is not None:
        wanted = _selector(paths)
        problems = [p for p in problems if any(wanted(f) for f in p.files)]
    return VerifyReport(problems, pairs, snap.files, fast, snap.pairs)


def _run(
    ds: Dataset,
    snap: Snapshot,
    cases: list[Case],
    jobs: int | None,
    progress: ProgressFactory | None,
) -> _Run:
    """A run over ``cases`` (their members, and the partners of their metadata pairs)."""
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
    return _Run(ds, files, members, headers, jobs or default_jobs(), progress, {}, cases)


def _verify_cases(run: _Run, cases: list[Case], fast: bool) -> dict[str, Any]:
    """``key -> (key, problems, pairs)`` (plain data) for the cases that have problems."""
    if not cases:
        return {}
    per_file = _file_problems(run, [m for c in cases for m in c.members], fast)
    out: dict[str, Any] = {}
    severity = run.ds.config.verify.severity
    for case in cases:
        found = list(case.problems)
        for m in case.members:
            found.extend(per_file.get(m.path, ()))
        # a pair is checked by the case that records it (a metadata pair is
        # listed by its segmentation's case as well)
        checked = case.pairs if case.entry is not None else ()
        found.extend(apply_severities(_pair_problems(run, checked), severity))
        found.extend(apply_severities(_channel_problems(run, case), severity))
        found.extend(apply_severities(list(_drift(case)), severity))
        # a detached data name the header pass refuses is the pipeline's problem too
        found = list({(p.category, p.files, p.message): p for p in found}.values())
        if found:
            pairs = tuple(tuple(p) for p in case.pairs)
            out[case.key] = (case.key, problems_to_plain(found), pairs)
    return out


def _check_paths(ds: Dataset, paths: list[str], index: list[Entry]) -> None:
    """A path must exist, or be one the index records (to ask about its drift)."""
    indexed = {r.path for e in index for r in e.records()}
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
    if not fast:  # a header whose detached data cannot be read has that one problem
        no_data = {m.owner for m in members if m.role == DATA and m.problem}
        ok = [
            m
            for m in readable
            if m.digest and headers[m.path].geometry is not None and m.path not in no_data
        ]
        content = _content_problems(run, ok)
    out: dict[str, list[Problem]] = {}
    for m in members:
        found: list[Problem] = []
        if m.role not in ("", DATA) and (m.problem is None or m.problem[0] != "unreadable"):
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
        return path, HeaderResult(read_geometry(Path(root) / path, Path(root)))
    except HeaderProblem as e:
        return path, HeaderResult(None, e.category, e.reason)
    except FileProblem as e:
        return path, HeaderResult(None, "corrupt", e.reason)


def _content_problems(run: _Run, members: list[Member]) -> dict[str, list[Problem]]:
    """Label and integrity problems per path; each content is decoded once, ever (the
    cache is keyed by everything that decides a report: digest, format, role, limit)."""
    from volsegsync.content import ContentCache, content_key, label_problems

    limit = run.ds.config.limits.max_image_bytes

    def key_of(m: Member) -> tuple[str, str]:
        return m.digest, content_key(m.role, m.path, limit)

    with ContentCache(run.ds.state_dir / "content.db") as cache:
        reports: dict[tuple[str, str], ContentReport] = {}
        todo: dict[tuple[str, str], Member] = {}  # key -> one file holding it
        for m in members:
            key = key_of(m)
            if key in reports or key in todo:
                continue
            cached = cache.get(m.digest, m.role, m.path, limit)
            if cached is not None:
                reports[key] = cached
            else:
                todo[key] = m
        if todo:
            tick = run.progress("decoding", len(todo)) if run.progress else None
            root = str(run.ds.root)
            tasks = [(root, m.path, m.role, limit) for m in todo.values()]
            for (key, m), report in zip(
                todo.items(), parallel_map(_analyse_task, tasks, run.workers, tick), strict=True
            ):
                reports[key] = report
                cache.put(m.digest, m.role, report, m.path, limit)
    labels = run.ds.config.verify.labels
    out: dict[str, list[Problem]] = {}
    for m in members:
        report = reports[key_of(m)]
        if m.role == SEGMENTATION:
            out[m.path] = label_problems(m.path, report, labels)
        elif report.error:
            out[m.path] = label_problems(m.path, report, {})
    return out


def _analyse_task(args: tuple[str, str, str, int]) -> ContentReport:
    from volsegsync.content import analyse

    root, path, role, limit = args
    return analyse(Path(path), role, Path(root), limit)


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


def _channel_problems(run: _Run, case: Case) -> list[Problem]:
    """Channels of a multi-channel case that are not on its first channel's grid."""
    entry = case.entry
    if entry is None or entry.volume is None or len(entry.channels) < 2:
        return []
    group = {entry.volume.path: {c: rec.path for c, rec in entry.channels}}

    def read(paths: list[str]) -> dict[str, Geometry | None]:
        ok = [p for p in paths if p in run.files and (m := run.members.get(p)) and not m.problem]
        return {p: r.geometry for p, r in _headers(run, ok).items()}

    tol = run.ds.config.verify
    return grid_problems(group, read, tol.position_tolerance, tol.direction_tolerance)


# -- the dataset as a whole -----------------------------------------------------------------


def _dataset_problems(run: _Run, snap: Snapshot, fast: bool) -> list[Problem]:
    """Dataset-level checks (outliers, label names, tiny labels) over every pair,
    incremental: only the facts of the case keys changed since their last run are
    gathered again (every key's when that is not known, or when pairs are made by
    metadata: a metadata pair's files belong to two keys)."""
    checks = DatasetChecks(run.ds)
    last = checks.generation
    changed = None if last is None else snap.changed_since(last)
    if changed and snap.pipeline.mode == "metadata":
        changed = None
    if changed is not None and not changed:
        headers = functools.partial(_headers, run)
        found = checks.update(snap.stamp, {}, False, headers, fast, run.workers)
    else:
        try:
            found = _check_dataset(checks, run, snap, changed, fast)
        except StaleFacts:  # a facts file is damaged or gone: from every key's
            found = _check_dataset(checks, run, snap, None, fast)
    return apply_severities(found, run.ds.config.verify.severity)


def _check_dataset(
    checks: DatasetChecks, run: _Run, snap: Snapshot, keys: set[str] | None, fast: bool
) -> list[Problem]:
    if keys is None:
        cases = snap.cases()
    else:
        done = {c.key for c in run.cases}
        cases = [c for c in run.cases if c.key in keys] + snap.cases(sorted(keys - done))
    members = run.members
    members.update((m.path, m) for c in cases for m in c.members if m.path not in members)
    files = run.files

    def candidate(path: str | None) -> Candidate | None:
        m = members.get(path or "")
        if m is None or not m.role or m.problem is not None:
            return None
        st = files.get(m.path) or snap.scan.stat(m.path)
        if st is None:
            return None
        files[m.path] = st  # for the header lookup
        return Candidate(m.path, (st.size, st.mtime_ns, st.ino), m.digest)

    out: dict[str, tuple[list[Candidate], list[Candidate]]] = {}
    for c in cases:
        vols: list[Candidate] = []
        segs: list[Candidate] = []
        for p in c.pairs if c.entry is not None else ():
            if p.volume and p.segmentation:
                vols.extend(x for x in [candidate(p.volume)] if x is not None)
                segs.extend(x for x in [candidate(p.segmentation)] if x is not None)
        out[c.key] = (vols, segs)
    if keys is not None:
        out.update({k: ([], []) for k in keys if k not in out})  # a key that is gone
    headers = functools.partial(_headers, run)
    return checks.update(snap.stamp, out, keys is None, headers, fast, run.workers)


# -- drift --------------------------------------------------------------------------------


def _drift_from(ds: Dataset, snap: Snapshot, index: list[Entry]) -> list[Problem]:
    """Drift of the files on disk from the given index entries (another revision's)."""
    members = {m.path: m for c in snap.cases() for m in c.members}
    out: list[Problem] = []
    for e in index:
        for rec in e.records():
            m = members.get(rec.path)
            if m is None:
                where = snap.pipeline.locate(rec.path)
                if where == "missing":
                    out.append(
                        make_problem(
                            "drift_missing",
                            [rec.path],
                            f"{rec.path}: recorded in the index, missing from disk",
                        )
                    )
                elif where == "untracked":
                    out.append(
                        make_problem(
                            "drift_untracked",
                            [rec.path],
                            f"{rec.path}: recorded in the index, no longer tracked "
                            "(on disk, outside the scan)",
                        )
                    )
            elif m.digest and m.digest != rec.digest:
                out.append(_modified(rec.path, rec.size, rec.digest, m))
    return out


def _modified(path: str, size: int, digest: str, m: Member) -> Problem:
    return make_problem(
        "drift_modified",
        [path],
        f"{path}: content differs from the index ({size} -> {m.size} bytes)",
        {"index_hash": digest, "hash": m.digest, "index_size": size, "size": m.size},
    )


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
            yield _modified(rec.path, rec.size, rec.digest, m)
