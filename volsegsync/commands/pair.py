"""``volsegsync pair``."""

from __future__ import annotations

from typing import Any

import click

from volsegsync.commands.common import (
    common_options,
    conclude,
    has_errors,
    jobs_option,
    open_dataset,
    problem_lines,
    problem_rows,
    progress_factory,
    summary_counts,
)
from volsegsync.dataset import INDEX_FILE
from volsegsync.index import keep_until_exit
from volsegsync.ops.pair import PairReport, run_pair
from volsegsync.ops.snapshot import Kept
from volsegsync.output import Rendered, emit
from volsegsync.pairing import Pair, Pairing


@click.command("pair")
@click.option(
    "--by",
    type=click.Choice(["naming", "metadata"]),
    default=None,
    help="How to pair: by naming convention only, or also by header metadata "
    "for files whose names do not pair (default: the config's pairing.by).",
)
@jobs_option("Parallel readers (default: all cores).")
@click.option("-n", "--dry-run", is_flag=True, help="Show the pairing, do not write the index.")
@click.option(
    "--prune",
    is_flag=True,
    help="Drop the records of indexed files that are missing from disk or outside the scan.",
)
@click.option(
    "--store/--no-store",
    default=None,
    help="Put the content of every recorded file into the content store "
    "(default: the config's store.enabled, true).",
)
@common_options
def pair_command(
    by: str | None,
    jobs: int | None,
    dry_run: bool,
    prune: bool,
    store: bool | None,
    fmt: str,
    quiet: bool,
) -> None:
    """Pair every volume with its segmentation and write the index.

    Scans the dataset, hashes every file (store.hash, xxh3-128 by default;
    unchanged files come from the pipeline memo), pairs by naming convention (and
    by metadata with --by metadata; --by is written to the config's [pairing] by,
    so that every command pairs the same way) and writes volsegsync.index
    atomically, after putting the content of every recorded file into the content
    store (docs/store.md). Every version of a segmentation is recorded; the highest
    is the active one, unless a rollback (checkout PAIR@vN) pinned another. Prints
    the pairs the index gains (+) and loses (-), as its diff will show them.
    Indexed files that are missing from disk, outside the scan or unreadable keep
    their records: they leave the index only with --prune or 'volsegsync rm'.
    Exit 1 if files are left unpaired or ambiguous, or indexed files are missing.

    \b
    Example:
      volsegsync pair
      volsegsync pair --by metadata --format json
    """
    ds = open_dataset()
    with progress_factory(quiet) as progress:
        report = run_pair(
            ds, by=by, jobs=jobs, progress=progress, dry_run=dry_run, prune=prune, store=store
        )
    keep_until_exit(report)  # its cases: not freed one by one before the exit
    snap = report.snapshot
    missing = [k for k in report.kept if k.why != "unreadable"]
    stored = report.stored
    # only what is printed is built: a JSON document of every pair costs as much as
    # pairing tiny files does
    if fmt == "text" and quiet:
        problems = snap.problems  # the exit code needs nothing else
        lines, document, rows = [], {}, []
    else:
        pairing = snap.pairing
        problems = pairing.problems
        lines = _lines(report, pairing, missing) if fmt == "text" else []
        document = _document(report, pairing) if fmt == "json" else {}
        rows = [_pair_json(p) for p in pairing.pairs] if fmt == "csv" else []
    columns = ["volume", "segmentation", "version", "how", "older"]
    emit(Rendered(lines, document, rows, columns), fmt, quiet)
    conclude(has_errors(problems) or bool(missing) or bool(stored and stored.problems))


def _lines(report: PairReport, pairing: Pairing, missing: list[Kept]) -> list[str]:
    snap = report.snapshot
    complete = [p for p in pairing.pairs if p.volume and p.segmentation]
    lines = _index_changes(report, pairing)
    lines.extend(problem_lines(pairing.problems))
    for k in missing:
        state = "missing from disk" if k.why == "missing" else "outside the scan"
        lines.append(f"kept: {k.path}: {state}; its record stays in the index")
    lines.extend(f"pruned: {path}" for path in report.pruned)
    if missing:
        lines.append(
            f"{len(missing)} indexed files are not on disk: restore them (see "
            "'volsegsync status'), or drop their records with --prune or 'volsegsync rm'"
        )
    stored = report.stored
    if stored is not None:
        lines.extend(f"error: [store] {p}" for p in stored.problems)
        if stored.added:
            lines.append(f"stored {stored.added} files ({_size(stored.added_bytes)})")
    if report.written:
        state = f"wrote {INDEX_FILE}"
    elif report.index_changed:
        state = f"{INDEX_FILE} would change (dry run)"
    else:
        state = f"{INDEX_FILE} unchanged"
    lines.append(
        f"{len(complete)} pairs, {len(pairing.unpaired_volumes)} volumes and "
        f"{len(pairing.unpaired_segmentations)} segmentations unpaired, "
        f"{snap.files} files ({_size(snap.total_bytes)}); {state}"
    )
    return lines


def _document(report: PairReport, pairing: Pairing) -> dict[str, Any]:
    snap = report.snapshot
    problems = pairing.problems
    complete = [p for p in pairing.pairs if p.volume and p.segmentation]
    stored = report.stored
    return {
        "schema": "volsegsync.pair/1",
        "index": INDEX_FILE,
        "changed": report.index_changed,
        "written": report.written,
        "pairs": [_pair_json(p) for p in complete],
        "unpaired_volumes": pairing.unpaired_volumes,
        "unpaired_segmentations": pairing.unpaired_segmentations,
        "kept": [{"path": k.path, "state": k.why} for k in report.kept],
        "pruned": report.pruned,
        "problems": problem_rows(problems),
        "store": None
        if stored is None
        else {"added": stored.added, "bytes": stored.added_bytes, "problems": stored.problems},
        "summary": {
            "files": snap.files,
            "bytes": snap.total_bytes,
            "pairs": len(complete),
            **summary_counts(problems),
        },
    }


def _index_changes(report: PairReport, pairing: Pairing) -> list[str]:
    """The pairs the index gains (+) and loses (-), as its diff will show them."""
    by_files = {(p.volume, p.segmentation): p for p in pairing.pairs}
    rows = [(vol, 0, f"- {vol} -> {seg}") for vol, seg in report.removed if "-" not in (vol, seg)]
    for entry in report.added:
        if entry.volume and entry.segmentation:
            pair = by_files.get((entry.volume.path, entry.segmentation.path))
            if pair is None:  # a record kept from the index: not a pair of files on disk
                pair = Pair(entry.volume.path, entry.segmentation.path, entry.version, "")
            rows.append((entry.volume.path, 1, "+ " + _pair_line(pair)))
    return [line for _, _, line in sorted(rows)]


def _pair_line(p: Pair) -> str:
    version = f"  (v{p.version})" if p.version else ""
    how = "  [by metadata]" if p.how == "metadata" else ""
    return f"{p.volume} -> {p.segmentation}{version}{how}"


def _pair_json(p: Pair) -> dict[str, Any]:
    return {
        "volume": p.volume,
        "segmentation": p.segmentation,
        "version": p.version,
        "how": p.how or None,
        "older": list(p.older),
    }


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
