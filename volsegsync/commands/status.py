"""``volsegsync status``."""

from __future__ import annotations

import click

from volsegsync.commands.common import (
    EXIT_PROBLEMS,
    Outcome,
    common_options,
    jobs_option,
    open_dataset,
    problem_lines,
    problem_rows,
    progress_factory,
    summary_counts,
)
from volsegsync.dataset import INDEX_FILE
from volsegsync.ops.status import run_status
from volsegsync.output import Rendered, emit


@click.command("status")
@jobs_option("Parallel readers for changed files (default: all cores).")
@click.option(
    "--remote",
    "remote",
    default=None,
    metavar="NAME",
    help="Instead: which indexed objects remote NAME lacks, and which the local store lacks.",
)
@common_options
def status_command(jobs: int | None, remote: str | None, fmt: str, quiet: bool) -> None:
    """Show what changed since the index was written.

    New and removed pairs, modified files, new segmentation versions, files that
    lost their partner, renamed or moved files (same content, new path). Unchanged
    files are never read again (stat cache). Exit 0 when in sync, 1 when not.

    \b
    Example:
      volsegsync status
      volsegsync status --format json | jq '.changes[].kind'
      volsegsync status --remote origin
    """
    if remote is not None:
        from volsegsync.commands.remote import remote_status

        return remote_status(remote, fmt, quiet)
    ds = open_dataset()
    with progress_factory(quiet) as progress:
        report = run_status(ds, jobs=jobs, progress=progress)
    lines = [c.message for c in report.changes]
    lines.extend(problem_lines(report.problems))
    if report.in_sync:
        lines.append(f"in sync with {INDEX_FILE} ({report.current_pairs} pairs)")
    elif not report.changes:
        lines.append(f"no change to {INDEX_FILE} found, but some files could not be read")
    else:
        lines.append(
            f"{len(report.changes)} changes since {INDEX_FILE} was written "
            f"({report.indexed_pairs} pairs indexed, {report.current_pairs} now); "
            "run 'volsegsync pair' to record them"
        )
    counts: dict[str, int] = {}
    for c in report.changes:
        counts[c.kind] = counts.get(c.kind, 0) + 1
    document = {
        "schema": "volsegsync.status/1",
        "in_sync": report.in_sync,
        "changes": [c.to_json() for c in report.changes],
        "problems": problem_rows(report.problems),
        "summary": {
            "indexed_pairs": report.indexed_pairs,
            "current_pairs": report.current_pairs,
            "changes": counts,
            **summary_counts(report.problems),
        },
    }
    rows = [c.to_json() for c in report.changes]
    emit(Rendered(lines, document, rows, ["kind", "paths", "message", "details"]), fmt, quiet)
    if not report.in_sync:
        raise Outcome(EXIT_PROBLEMS)
