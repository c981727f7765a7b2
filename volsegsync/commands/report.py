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
    small change redraws only what changed. Needs the 'view' extra (Pillow).

    \b
    Example:
      volsegsync report -o review && xdg-open review/index.html
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
        "comparisons": result.comparisons,
    }
    lines = [
        f"{result.html}: {result.pairs} pairs, {result.problems} problems; thumbnails "
        f"{result.drawn} drawn, {result.cached} cached, {result.failed} failed"
    ]
    emit(Rendered(lines, document, [], []), fmt, quiet)
