"""``volsegsync fetch``."""

from __future__ import annotations

import click

from volsegsync.commands.common import common_options, open_dataset, read_file_args
from volsegsync.commands.push import render_transfer, transfer_options, transfer_progress


@click.command("fetch")
@transfer_options
@common_options
def fetch_command(
    remote: str | None,
    jobs: int | None,
    revs: tuple[str, ...],
    all_commits: bool,
    paths: tuple[str, ...],
    fmt: str,
    quiet: bool,
) -> None:
    """Fill the local content store from a remote; working files are left alone.

    Only objects the store lacks are downloaded; each is hashed before it enters
    the store, and one whose content does not match is rejected and named. Exit 1
    when an object failed or is not on the remote.

    \b
    Example:
      volsegsync fetch
      volsegsync fetch --remote s3 --revs v1.0
    """
    from volsegsync.ops.fetch import run_fetch

    ds = open_dataset()
    with transfer_progress(quiet, "fetch") as progress:
        report = run_fetch(ds, remote, read_file_args(paths), jobs, revs, all_commits, progress)
    render_transfer(report, "fetch", fmt, quiet)
