"""``volsegsync gc``."""

from __future__ import annotations

import sys

import click

from volsegsync.commands.common import EXIT_USAGE, Outcome, common_options, open_dataset
from volsegsync.errors import VolsegsyncError
from volsegsync.output import Rendered, emit


@click.command("gc")
@click.option("-n", "--dry-run", is_flag=True, help="List what would be removed.")
@click.option("-y", "--yes", is_flag=True, help="Remove without asking (needed off a terminal).")
@click.option(
    "--shared",
    is_flag=True,
    help="Also when store.dir points at a store other clones may share.",
)
@click.option(
    "--remote",
    "remote",
    default=None,
    metavar="NAME",
    help="Collect garbage on remote NAME instead of the local store (docs/remotes.md).",
)
@common_options
def gc_command(
    dry_run: bool, yes: bool, shared: bool, remote: str | None, fmt: str, quiet: bool
) -> None:
    """Remove store objects that no index references.

    Kept: every object referenced by the working tree's index, or by the index
    of any commit reachable from a branch, a tag or HEAD (read with dulwich).
    Incomplete objects left by a killed run (older than an hour) are removed
    too. Asks before removing on a terminal; elsewhere it needs --yes.

    \b
    Example:
      volsegsync gc --dry-run
      volsegsync gc --yes
      volsegsync gc --remote origin --dry-run
    """
    ds = open_dataset()
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            raise VolsegsyncError("gc removes content: pass --yes (or --dry-run to look first)")
        if not click.confirm("Remove the store objects no index references?", err=True):
            raise Outcome(EXIT_USAGE)
    if remote is not None:
        from volsegsync.commands.remote import remote_gc

        return remote_gc(ds, remote, dry_run, fmt, quiet)
    from volsegsync.ops.gc import run_gc  # dulwich: imported only when gc runs

    report = run_gc(ds, dry_run=dry_run, shared_ok=shared)
    verb = "would remove" if dry_run else "removed"
    lines = [f"{verb}: {a}/{d[:2]}/{d[2:]} ({size} bytes)" for a, d, size in report.removed]
    total = sum(size for _a, _d, size in report.removed)
    lines.append(
        f"{verb} {len(report.removed)} objects ({total} bytes), kept {report.kept}; "
        f"{report.indexes} indexes read"
    )
    rows = [{"algorithm": a, "digest": d, "size": size} for a, d, size in report.removed]
    document = {
        "schema": "volsegsync.gc/1",
        "dry_run": dry_run,
        "removed": rows,
        "summary": {
            "removed": len(report.removed),
            "bytes": total,
            "kept": report.kept,
            "indexes": report.indexes,
            "temporaries": report.temporaries,
        },
    }
    emit(Rendered(lines, document, rows, ["algorithm", "digest", "size"]), fmt, quiet)
