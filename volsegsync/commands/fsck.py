"""``volsegsync fsck``."""

from __future__ import annotations

import click

from volsegsync.commands.common import (
    EXIT_PROBLEMS,
    Outcome,
    common_options,
    jobs_option,
    open_dataset,
    progress_factory,
)
from volsegsync.ops.fsck import run_fsck
from volsegsync.output import Rendered, emit


@click.command("fsck")
@click.option("--working", is_flag=True, help="Also rehash the working files against the index.")
@jobs_option("Parallel readers (default: all cores).")
@common_options
def fsck_command(working: bool, jobs: int | None, fmt: str, quiet: bool) -> None:
    """Check the content store: rehash every object.

    A corrupt object (content that does not match its hash) is reported and
    moved aside to corrupt/ in the store, so that checkout never uses it. Content
    the index records but the store lacks is reported as missing. With
    --working, the working files are rehashed against the index too. Exit 1 when
    a problem is found.

    \b
    Example:
      volsegsync fsck
      volsegsync fsck --working --format json
    """
    ds = open_dataset()
    with progress_factory(quiet) as progress:
        report = run_fsck(ds, working=working, jobs=jobs, progress=progress)
    lines = [f"{p.kind}: {p.message}" for p in report.problems]
    checked = f"{report.objects} objects" + (
        f" and {report.files} working files" if working else ""
    )
    lines.append(f"checked {checked}: {len(report.problems)} problems")
    rows = [p._asdict() for p in report.problems]
    document = {
        "schema": "volsegsync.fsck/1",
        "problems": rows,
        "summary": {
            "objects": report.objects,
            "files": report.files,
            "problems": len(report.problems),
        },
    }
    emit(Rendered(lines, document, rows, ["kind", "path", "digest", "message"]), fmt, quiet)
    if report.problems:
        raise Outcome(EXIT_PROBLEMS)
