"""``volsegsync report``."""

from __future__ import annotations

import click

from volsegsync.commands.common import common_options, jobs_option, open_dataset, progress_factory
from volsegsync.output import Rendered, emit


@click.command("report")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False),
    metavar="DIR",
    default="volsegsync-report",
    show_default=True,
    help="Folder to write index.html and its thumbnails into.",
)
@click.option(
    "--rev",
    metavar="A..B",
    default=None,
    help="Also compare the segmentation versions that changed between two revisions.",
)
@click.option("--full", is_flag=True, help="Run verify's content checks too (decodes every file).")
@jobs_option("Worker processes for thumbnails and checks (default: all cores).")
@common_options
def report_command(
    output: str, rev: str | None, full: bool, jobs: int | None, fmt: str, quiet: bool
) -> None:
    """Write a static HTML review report that opens from disk without a server.

    Dataset summary (pairs, files, problems by category and severity; spacing,
    orientation and shape distributions as small plots), then one row per pair
    with a thumbnail and its problems, filterable by category. Thumbnails are
    cached by content hash in .volsegsync/state/thumbs/, so a re-run after a
    small change redraws only what changed. With --rev A..B, every pair whose
    segmentation changed between A and B (version bump or edit in place) gets
    a comparison: Dice, Hausdorff and mL per label and a picture (DIR/compare/),
    from the content store, cached by content hash. Needs the 'view' extra
    (Pillow).

    \b
    Example:
      volsegsync report -o review && xdg-open review/index.html
      volsegsync report -o review --rev origin/main..HEAD
    """
    from volsegsync.ops.report import run_report

    ds = open_dataset()
    with progress_factory(quiet) as progress:
        result = run_report(ds, output, rev=rev, full=full, jobs=jobs, progress=progress)
    document = {
        "schema": "volsegsync.report/1",
        "output": result.html,
        "pairs": result.pairs,
        "thumbnails": {"drawn": result.drawn, "cached": result.cached, "failed": result.failed},
        "problems": result.problems,
        "comparisons": [c.to_json() for c in result.comparisons],
    }
    lines = [
        f"{result.html}: {result.pairs} pairs, {result.problems} problems; thumbnails "
        f"{result.drawn} drawn, {result.cached} cached, {result.failed} failed"
    ]
    if rev is not None:
        failed = [c.error for c in result.comparisons if c.error]
        lines.append(f"{rev}: {len(result.comparisons)} re-annotated pairs compared")
        lines.extend(f"error: {line}" for line in failed)
    emit(Rendered(lines, document, [], []), fmt, quiet)
