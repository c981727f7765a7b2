"""``volsegsync verify``."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import click

from volsegsync.commands.common import (
    PROBLEM_COLUMNS,
    common_options,
    conclude,
    has_errors,
    jobs_option,
    open_dataset,
    problem_rows,
    progress_factory,
    read_file_args,
    summary_counts,
)
from volsegsync.output import Rendered, emit
from volsegsync.problems import SEVERITY_ORDER, Problem

if TYPE_CHECKING:
    from volsegsync.ops.verify import VerifyReport


@click.command("verify")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--fast",
    is_flag=True,
    help="Header-only checks: naming, pairing, geometry, drift by size. No content is decoded.",
)
@click.option(
    "--rev",
    metavar="REV",
    help="Check drift against the index committed at REV (a branch, tag or commit), for CI.",
)
@jobs_option("Worker processes (default: all cores).")
@common_options
def verify_command(
    paths: tuple[str, ...], fast: bool, rev: str | None, jobs: int | None, fmt: str, quiet: bool
) -> None:
    """Check the dataset and report every problem, grouped by pair.

    Naming, pairing (missing, orphaned, ambiguous, duplicate versions, version
    gaps), geometry from headers (shape, spacing, origin, direction in world
    coordinates), segmentation labels, corrupt files and drift from the index.
    With PATHS (files or folders, '-' reads them from stdin) only problems
    touching them are reported. Exit 0 with no errors (warnings allowed), 1 with
    errors.

    \b
    Example:
      volsegsync verify
      volsegsync verify --fast --format json segmentations/
      volsegsync verify --rev origin/main   # does the branch's index match the files?
    """
    from volsegsync.ops.verify import run_verify  # numpy, nibabel: only when verifying

    ds = open_dataset()
    given = read_file_args(paths)
    relative = [ds.relpath(p) for p in given] if given is not None else None
    index = ds.index_at(rev) if rev is not None else None
    with progress_factory(quiet) as progress:
        report = run_verify(ds, relative, fast=fast, jobs=jobs, progress=progress, index=index)
    counts = summary_counts(report.problems)
    by_category = Counter(p.category for p in report.problems)
    document = {
        "schema": "volsegsync.verify/1",
        "fast": report.fast,
        "problems": problem_rows(report.problems),
        "summary": {
            "files": report.files_checked,
            "pairs": report.pair_count,
            **counts,
            "by_category": dict(sorted(by_category.items())),
        },
    }
    rows = problem_rows(report.problems)
    emit(Rendered(_text(report), document, rows, PROBLEM_COLUMNS), fmt, quiet)
    conclude(has_errors(report.problems))


def _text(report: VerifyReport) -> list[str]:
    """Problems grouped under the pair (or lone file) they belong to."""
    owner: dict[str, str] = {}
    for pair in report.pairs:
        title = f"{pair.volume or '(no volume)'} -> {pair.segmentation or '(no segmentation)'}"
        for path in (pair.volume, pair.segmentation, *pair.older):
            if path:
                owner[path] = title
    groups: dict[str, list[Problem]] = {}
    for p in report.problems:
        title = next((owner[f] for f in p.files if f in owner), p.files[0] if p.files else "")
        groups.setdefault(title, []).append(p)
    lines: list[str] = []
    for title in sorted(groups):
        lines.append(title)
        for p in sorted(
            groups[title], key=lambda p: (SEVERITY_ORDER.get(p.severity, 9), p.category, p.message)
        ):
            lines.append(f"  {p.severity} [{p.category}] {p.message}")
    counts = summary_counts(report.problems)
    pairs = report.pair_count
    mode = "header-only checks" if report.fast else "all checks"
    lines.append(
        f"{report.files_checked} files, {pairs} pairs ({mode}): "
        f"{counts['errors']} errors, {counts['warnings']} warnings"
    )
    return lines
