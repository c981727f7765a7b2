"""``volsegsync pull``."""

from __future__ import annotations

import click

from volsegsync.commands.checkout import checkout_rendered
from volsegsync.commands.common import (
    EXIT_PROBLEMS,
    Outcome,
    common_options,
    open_dataset,
    progress_factory,
)
from volsegsync.commands.push import transfer_progress, transfer_rendered
from volsegsync.output import Rendered, emit


@click.command("pull")
@click.option(
    "-r",
    "--remote",
    default=None,
    metavar="NAME",
    help="The remote (default: [core] remote, or the only one).",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Parallel transfers (default: 8).",
)
@click.option(
    "-f",
    "--force",
    is_flag=True,
    help="Overwrite working files holding unrecorded edits, after storing their content.",
)
@common_options
def pull_command(remote: str | None, jobs: int | None, force: bool, fmt: str, quiet: bool) -> None:
    """Fetch what the index records from a remote, then check it out.

    After a fresh 'git clone', or a 'git pull' of a colleague's branch, this
    brings exactly the files that index records, byte for byte. Objects the
    remote lacks are named and everything else is restored (exit 1). Working
    files holding unrecorded edits are never overwritten (see 'checkout').

    \b
    Example:
      git clone URL ds && cd ds && volsegsync pull
      volsegsync pull --remote s3
    """
    from volsegsync.ops.pull import run_pull

    ds = open_dataset()
    with transfer_progress(quiet, "fetch") as progress, progress_factory(quiet) as bars:
        report = run_pull(ds, remote, jobs, force, progress, bars)
    fetched = transfer_rendered(report.fetch, "pull")
    checked = checkout_rendered(report.checkout)
    if fmt == "text":
        for p in report.checkout.problems:
            click.echo(f"volsegsync: {p.action}: {p.message}", err=True)
    document = {
        "schema": "volsegsync.pull/1",
        "ok": report.ok,
        "fetch": fetched.document,
        "checkout": checked.document,
    }
    lines = [*fetched.text, *checked.text]
    emit(Rendered(lines, document, checked.rows, checked.columns), fmt, quiet)
    if not report.ok:
        raise Outcome(EXIT_PROBLEMS)
