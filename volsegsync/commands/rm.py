"""``volsegsync rm``."""

from __future__ import annotations

import click

from volsegsync.commands.common import common_options, open_dataset, read_file_args
from volsegsync.dataset import INDEX_FILE
from volsegsync.ops.pair import run_rm
from volsegsync.output import Rendered, emit


@click.command("rm")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@common_options
def rm_command(paths: tuple[str, ...], fmt: str, quiet: bool) -> None:
    """Drop the index records of files that are no longer on disk.

    PATHS are files or folders ('-' reads them from stdin); every record at or
    below them leaves the index. The only ways a record leaves the index are this
    command and 'pair --prune': 'pair' keeps the records of missing files. A file
    still on disk (and scanned) is an error, exit 2: volsegsync never deletes
    image data; delete or move it first, or exclude it with scan.exclude.

    \b
    Example:
      volsegsync rm segmentations/C01-Back_V001-D22061998-v3.nrrd
      volsegsync rm old_cases/
    """
    ds = open_dataset()
    given = read_file_args(paths) or []
    report = run_rm(ds, [ds.relpath(p) for p in given])
    lines = [f"removed from {INDEX_FILE}: {path}" for path in report.removed]
    document = {"schema": "volsegsync.rm/1", "index": INDEX_FILE, "removed": report.removed}
    rows = [{"path": p} for p in report.removed]
    emit(Rendered(lines, document, rows, ["path"]), fmt, quiet)
