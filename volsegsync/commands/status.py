"""``volsegsync status``."""

from __future__ import annotations

import click

from volsegsync.commands.common import (
    common_options,
    conclude,
    jobs_option,
    open_dataset,
    problem_lines,
    problem_rows,
    progress_factory,
    summary_counts,
)
from volsegsync.dataset import INDEX_FILE
from volsegsync.ops.snapshot import Kept
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
    """Show whether the index records the working tree as it is.

    New and removed pairs, modified files, new segmentation versions, files that
    lost their partner, renamed or moved files (same content, new path), and
    indexed files that are missing from disk or no longer tracked (outside the
    scan). Content problems of files indexed as they are do not make the index
    out of date: status only counts them ('volsegsync verify' reports them).
    Unchanged files are never read again. Exit 0 when in sync, 1 when not.

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
    lines.extend(_kept_lines(report.kept))
    lines.extend(problem_lines(report.problems))
    if report.in_sync:
        lines.append(f"in sync with {INDEX_FILE} ({report.current_pairs} pairs)")
    elif report.changes:
        lines.append(
            f"{len(report.changes)} changes since {INDEX_FILE} was written "
            f"({report.indexed_pairs} pairs indexed, {report.current_pairs} now); "
            "run 'volsegsync pair' to record them"
        )
    elif not report.kept:
        lines.append(f"no change to {INDEX_FILE} found, but some files could not be read")
    if report.known_problems:
        lines.append(
            f"{report.known_problems} known problems in the dataset: run 'volsegsync verify'"
        )
    counts: dict[str, int] = {}
    for c in report.changes:
        counts[c.kind] = counts.get(c.kind, 0) + 1
    document = {
        "schema": "volsegsync.status/1",
        "in_sync": report.in_sync,
        "changes": [c.to_json() for c in report.changes],
        "kept": [{"path": k.path, "state": k.why} for k in report.kept],
        "problems": problem_rows(report.problems),
        "summary": {
            "indexed_pairs": report.indexed_pairs,
            "current_pairs": report.current_pairs,
            "changes": counts,
            "missing": sum(1 for k in report.kept if k.why == "missing"),
            "untracked": sum(1 for k in report.kept if k.why == "untracked"),
            "known_problems": report.known_problems,
            **summary_counts(report.problems),
        },
    }
    rows = [c.to_json() for c in report.changes]
    emit(Rendered(lines, document, rows, ["kind", "paths", "message", "details"]), fmt, quiet)
    conclude(not report.in_sync)


SHOWN = 20  # kept files listed one by one; more are summed up


def _kept_lines(kept: list[Kept]) -> list[str]:
    """Indexed files not (readably) on disk, with what to do about them."""
    lines: list[str] = []
    missing = [k.path for k in kept if k.why == "missing"]
    untracked = [k.path for k in kept if k.why == "untracked"]
    for path in missing[:SHOWN]:
        lines.append(f"missing from disk: {path}")
    if len(missing) > SHOWN:
        lines.append(f"... and {len(missing) - SHOWN} more files missing from disk")
    for path in untracked[:SHOWN]:
        lines.append(f"no longer tracked (on disk, outside the scan): {path}")
    if len(untracked) > SHOWN:
        lines.append(f"... and {len(untracked) - SHOWN} more files no longer tracked")
    if missing:
        lines.append(
            f"{len(missing)} indexed files are missing from disk; image data is not "
            "kept in git (after a fresh clone, none are there): restore them with "
            "'volsegsync pull' from a remote or 'volsegsync checkout' from the content "
            "store (docs/remotes.md, docs/status.md), or drop their records with "
            "'volsegsync rm PATH...' or 'volsegsync pair --prune'"
        )
    if untracked:
        lines.append(
            f"{len(untracked)} indexed files are outside the scan (scan.exclude or the "
            "extensions in the config): drop their records with 'volsegsync rm PATH...' "
            "or 'volsegsync pair --prune', or change the config back"
        )
    return lines
