"""``volsegsync report``: verify, draw (or reuse) a thumbnail per pair, write the page.

Thumbnails are cached in ``.volsegsync/state/thumbs/`` under
:func:`~volsegsync.view.report.thumbnail_key`, so after a change only pairs
whose files changed are drawn again; the output folder gets a copy of each
thumbnail it lacks. The page and thumbnails are written atomically.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from volsegsync.dataset import Dataset, default_jobs
from volsegsync.errors import VolsegsyncError
from volsegsync.fsutil import atomic_write_text
from volsegsync.memo import load_memo, save_memo
from volsegsync.ops.monitoring import monitor_for
from volsegsync.ops.snapshot import ProgressFactory, Snapshot, take_snapshot
from volsegsync.ops.verify import run_verify
from volsegsync.pairing import Pair
from volsegsync.view import check_pillow
from volsegsync.view.report import Row, comparison_row, draw_thumbnail, page, thumbnail_key
from volsegsync.workers import parallel_map

if TYPE_CHECKING:
    from volsegsync.ops.revcompare import VersionComparison

THUMBS = "thumbs"
COMPARE_DIR = "compare"  # the version comparisons' pictures (--rev)


class ReportResult(NamedTuple):
    html: str  # path of index.html
    pairs: int
    problems: int
    drawn: int
    cached: int
    failed: int
    comparisons: list[VersionComparison]  # with --rev: every re-annotated pair


def run_report(
    ds: Dataset,
    output: str | Path,
    rev: str | None = None,
    full: bool = False,
    jobs: int | None = None,
    progress: ProgressFactory | None = None,
) -> ReportResult:
    """The report's cost follows what changed: one walk (verify's snapshot), pairs
    and digests from the pipeline's memo (no re-scan, no re-hash), thumbnails drawn
    only for new content, and numpy and the decoders imported only to draw one
    (nibabel, pynrrd and Pillow not even then, for plain files: thumbnails have no
    text, and plain NIfTI-1 and NRRD headers are read by our own parsers)."""
    check_pillow()
    revs = _parse_rev(rev) if rev is not None else None
    out = Path(output)
    for folder in (out, out / THUMBS):
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise VolsegsyncError(f"{folder}: not a folder (a symbolic link is not followed)")
    comparisons = _comparisons(ds, revs, out, progress) if revs is not None else []
    # one walk, for verify and here (through the file-system monitor when enabled)
    snap = take_snapshot(ds, jobs=jobs, progress=progress, monitor=monitor_for(ds))
    report = run_verify(ds, fast=not full, jobs=jobs, progress=progress, snapshot=snap)
    all_pairs, digests = _pairs(ds, snap)
    labels = dict(ds.config.verify.labels)
    cache = ds.state_dir / THUMBS
    cache.mkdir(parents=True, exist_ok=True)
    (out / THUMBS).mkdir(parents=True, exist_ok=True)
    cached_names = _names(cache)
    by_file: dict[str, list[dict[str, object]]] = {}
    for p in report.problems:
        for f in dict.fromkeys(p.files):
            by_file.setdefault(f, []).append(p.to_json())
    rows: list[Row] = []
    todo: list[tuple[int, str]] = []  # (row index, key)
    for pair in all_pairs:
        files = [f for f in (pair.volume, pair.segmentation) if f]
        problems = [q for f in files for q in by_file.get(f, [])]
        problems = list({(q["category"], q["message"]): q for q in problems}.values())
        title = f"{pair.volume or '(no volume)'} -> {pair.segmentation or '(no segmentation)'}"
        key = ""
        if pair.volume in digests and pair.segmentation in digests:
            key = thumbnail_key(digests[pair.volume], digests[pair.segmentation], labels)
            if f"{key}.png" not in cached_names:
                todo.append((len(rows), key))
        rows.append(Row(title, pair.volume or pair.segmentation or "", key or None, "", problems))
    tasks = [
        (
            str(ds.root),
            str(all_pairs[i].volume),
            str(all_pairs[i].segmentation),
            sorted(labels.items()),
            str(cache / f"{key}.png"),
        )
        for i, key in todo
    ]
    tick = progress("drawing thumbnails", len(tasks)) if progress and tasks else None
    failed = 0
    workers = jobs or default_jobs()
    if len(tasks) >= INLINE_THUMBNAILS and workers > 1:
        _preload()  # forked workers share the parent's modules instead of importing them
    results = parallel_map(draw_thumbnail, tasks, workers, tick, inline_limit=INLINE_THUMBNAILS)
    for (i, _), error in zip(todo, results, strict=True):
        if error is not None:
            failed += 1
            rows[i] = rows[i]._replace(thumbnail=None, note=error)
    published = _names(out / THUMBS)
    for i, row in enumerate(rows):
        if row.thumbnail:
            name = f"{row.thumbnail}.png"
            if name not in published:  # named by content: one there is the same picture
                _publish(cache / name, out / THUMBS / name)
                published.add(name)
            rows[i] = row._replace(thumbnail=name)
    distributions = _distributions(ds, [p.volume for p in all_pairs if p.volume])
    pairs = sum(1 for p in all_pairs if p.volume and p.segmentation)
    summary: dict[str, object] = {
        "pairs": pairs,
        "files": report.files_checked,
        "errors": sum(1 for p in report.problems if p.severity == "error"),
        "warnings": sum(1 for p in report.problems if p.severity == "warning"),
        "checks": "all (content decoded)" if full else "header only (--full for all)",
    }
    text = page(
        f"volsegsync report: {ds.root.name}",
        summary,
        [p.to_json() for p in report.problems],
        distributions,
        rows,
        [comparison_row(c.to_json(), out) for c in comparisons],
        f"{revs[0]}..{revs[1]}" if revs else "",
    )
    index = out / "index.html"
    atomic_write_text(index, text)
    drawn = len(todo) - failed
    cached = sum(1 for r in rows if r.thumbnail) - drawn
    return ReportResult(str(index), pairs, len(report.problems), drawn, cached, failed, comparisons)


INLINE_THUMBNAILS = 16  # fewer thumbnails than this are drawn in-process
MEMO_FORMAT = 3


def _pairs(ds: Dataset, snap: Snapshot) -> tuple[list[Pair], dict[str, str]]:
    """Every pair and unpaired file (a verify report holds only those that problems
    touch) and the digests of their files, from the pipeline's memo. The report's
    memo keeps them per case, so a re-run loads only the cases that changed since."""
    key = ds.state_key("report", str(MEMO_FORMAT), ds.config.pairing.by)
    path = ds.state_dir / "report.marshal"
    memo = load_memo(path, key)
    fp = snap.top["fp"]  # names and stats of every folder ("" when not known)
    moved = memo is None or not fp or memo["fp"] != fp
    # a pipeline memo started afresh has another epoch in its stamp: then todo is None
    todo = None if memo is None else snap.changed_since(memo["gen"])
    by_key: dict[str, Any] = {} if memo is None or todo is None else memo["cases"]
    if todo is None or todo or moved:
        for k in todo or ():
            by_key.pop(k, None)
        for case in snap.cases(None if todo is None else sorted(todo)):
            known = {m.path: m.digest for m in case.members if m.digest}
            by_key[case.key] = [
                (tuple(p), known.get(p.volume or ""), known.get(p.segmentation or ""))
                for p in case.pairs
            ]
        save_memo(path, {"key": key, "fp": fp, "gen": snap.stamp, "cases": by_key})
    pairs: dict[Pair, None] = {}
    digests: dict[str, str] = {}
    for k in sorted(by_key):
        for plain, vol_digest, seg_digest in by_key[k]:
            pair = Pair(*plain)
            pairs[pair] = None
            if vol_digest and pair.volume:
                digests[pair.volume] = vol_digest
            if seg_digest and pair.segmentation:
                digests[pair.segmentation] = seg_digest
    return list(pairs), digests


def _preload() -> None:
    import volsegsync.decode
    import volsegsync.view.render
    import volsegsync.view.stream  # noqa: F401  (numpy, the decoders, the renderer)


def _names(folder: Path) -> set[str]:
    """The regular files' names in ``folder`` (one directory read instead of a stat each)."""
    with os.scandir(folder) as entries:
        return {e.name for e in entries if e.is_file(follow_symlinks=False)}


def _publish(cached: Path, target: Path) -> None:
    """Copy a cached thumbnail into the output folder unless the same file is there."""
    try:
        if (
            target.is_file()
            and not target.is_symlink()
            and target.stat().st_size == cached.stat().st_size
        ):
            return
        if target.is_symlink():
            target.unlink()
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(cached, tmp)
        os.replace(tmp, target)
    except OSError as e:
        raise VolsegsyncError(f"{target}: cannot write: {e.strerror or e}") from None


def _distributions(ds: Dataset, volumes: list[str]) -> dict[str, Counter[str]]:
    """Orientation, spacing and shape of the volumes, from the summaries ``verify``'s
    dataset-level checks just left in the state folder."""
    from volsegsync.dataset_checks import summaries_memo

    summaries = summaries_memo(ds)
    orientation: Counter[str] = Counter()
    spacing: Counter[str] = Counter()
    shape: Counter[str] = Counter()
    for path in volumes:
        summary = summaries.get(path)
        if summary is None or not summary.shape:
            continue
        orientation[summary.orientation or "unknown"] += 1
        spacing[" x ".join(f"{s:.3g}" for s in summary.spacing)] += 1
        shape[" x ".join(str(n) for n in summary.shape)] += 1
    return {"orientation": orientation, "spacing (mm)": spacing, "shape": shape}


def _parse_rev(rev: str) -> tuple[str, str]:
    a, dots, b = rev.partition("..")
    if not dots or not a or not b or b.startswith("."):
        raise VolsegsyncError(f"--rev {rev}: expected A..B (two revisions)")
    return a, b


def _comparisons(
    ds: Dataset, revs: tuple[str, str], out: Path, progress: ProgressFactory | None
) -> list[VersionComparison]:
    """The version comparisons of every pair re-annotated between the two revisions."""
    from volsegsync.changes import diff
    from volsegsync.ops.revcompare import compare_changes, reannotations
    from volsegsync.view.sources import index_at

    old, new = index_at(ds, revs[0]), index_at(ds, revs[1])
    changes = diff(old.entries, new.entries)
    count = len(reannotations(changes))
    tick = progress("comparing versions", count) if progress and count else None
    return compare_changes(ds, changes, out / COMPARE_DIR, (old.algorithm, new.algorithm), tick)
