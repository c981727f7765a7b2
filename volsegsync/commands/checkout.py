"""``volsegsync checkout``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from volsegsync.commands.common import (
    EXIT_PROBLEMS,
    Outcome,
    common_options,
    open_dataset,
    progress_factory,
)
from volsegsync.output import Rendered, emit

if TYPE_CHECKING:  # dulwich (through ops.checkout) only when a checkout runs
    from volsegsync.ops.checkout import CheckoutReport, FileChange


@click.command("checkout")
@click.argument("target", required=False, metavar="[REV | PAIR@vN]")
@click.option(
    "-f",
    "--force",
    is_flag=True,
    help="Overwrite working files holding unrecorded edits, after storing their "
    "content (so it can still be restored).",
)
@click.option("-n", "--dry-run", is_flag=True, help="List what would change; change nothing.")
@click.option(
    "--previous",
    metavar="REV",
    default=None,
    help="The revision the working files followed before (git hooks pass it): files "
    "its index records and the target's does not are removed, when stored.",
)
@common_options
def checkout_command(
    target: str | None, force: bool, dry_run: bool, previous: str | None, fmt: str, quiet: bool
) -> None:
    """Restore working files from the content store.

    \b
    With no argument: make the working files match volsegsync.index (restore
    missing and modified files). With REV (branch, tag, commit, HEAD~3): make
    the working files and the index match the index at that git revision.
    With PAIR@vN (PAIR: the volume path, the case key, or a segmentation path):
    roll that pair back to segmentation version N and pin it in the index, so
    that the next 'pair' keeps it (see docs/store.md).

    A working file whose content is not in the store (an unrecorded edit) is
    never overwritten: checkout then changes nothing and exits 1, one line per
    file (--force stores it first). Content missing from the store is reported
    by path and hash and the rest goes on (exit 1). Nothing is written outside
    the dataset or through a symbolic link.

    \b
    Example:
      volsegsync checkout
      volsegsync checkout v1.0
      volsegsync checkout segmentations/C01-Back-D22061998-v2.nrrd@v1
    """
    from volsegsync.ops.checkout import run_checkout

    ds = open_dataset()
    with progress_factory(quiet) as progress:
        report = run_checkout(
            ds, target, force=force, dry_run=dry_run, progress=progress, previous=previous
        )
    rendered = checkout_rendered(report)
    if fmt == "text":
        for p in report.problems:  # to stderr even with -q: a hook shows them
            click.echo(f"volsegsync: {p.action}: {p.message}", err=True)
    emit(rendered, fmt, quiet)
    if report.problems:
        raise Outcome(EXIT_PROBLEMS)


def checkout_rendered(report: CheckoutReport) -> Rendered:
    """Text lines, JSON document and CSV rows of a checkout (``pull`` shows them too)."""
    verb = "would " if report.dry_run else ""
    lines = [c.message if not report.dry_run else f"would {c.message}" for c in report.changes]
    if report.stored:
        lines.append(f"stored {report.stored} working files before overwriting them")
    if report.index_written:
        lines.append("wrote volsegsync.index")
    refused = any(p.action == "refused" for p in report.problems)
    if refused:
        lines.append("nothing changed: working files hold unrecorded edits")
    else:
        lines.append(f"{len(report.changes)} files {verb}changed, {len(report.problems)} problems")
    document = {
        "schema": "volsegsync.checkout/1",
        "target": report.target,
        "dry_run": report.dry_run,
        "index_written": report.index_written,
        "changes": [_row(c) for c in report.changes],
        "problems": [_row(p) for p in report.problems],
        "summary": {
            "changed": len(report.changes),
            "problems": len(report.problems),
            "stored": report.stored,
        },
    }
    rows = [_row(c) for c in report.changes + report.problems]
    return Rendered(lines, document, rows, ["path", "action", "hash", "message"])


def _row(c: FileChange) -> dict[str, Any]:
    return {"path": c.path, "action": c.action, "hash": c.digest, "message": c.message}
