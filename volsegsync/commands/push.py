"""``volsegsync push`` (and the pieces ``fetch`` and ``pull`` share)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import click

from volsegsync.commands.common import (
    EXIT_PROBLEMS,
    Outcome,
    common_options,
    open_dataset,
    read_file_args,
)
from volsegsync.output import Rendered, emit
from volsegsync.remotes import Progress

if TYPE_CHECKING:
    from volsegsync.ops.push import TransferReport


def transfer_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--remote``, ``--jobs``, ``--revs``, ``--all-commits`` and PATHS."""
    for option in reversed(
        [
            click.option(
                "-r",
                "--remote",
                "remote",
                default=None,
                metavar="NAME",
                help="The remote (default: [core] remote, or the only one).",
            ),
            click.option(
                "-j",
                "--jobs",
                type=click.IntRange(min=1),
                default=None,
                metavar="N",
                help="Parallel transfers (default: 8).",
            ),
            click.option(
                "--revs",
                "revs",
                multiple=True,
                metavar="REV",
                help="Also the objects the index records at git revision REV (repeatable).",
            ),
            click.option(
                "--all-commits",
                is_flag=True,
                help="Also the objects of every commit reachable from a branch or tag.",
            ),
            click.argument("paths", nargs=-1, type=click.Path()),
        ]
    ):
        func = option(func)
    return func


@contextlib.contextmanager
def transfer_progress(quiet: bool, verb: str) -> Iterator[Callable[[int, int], Progress | None]]:
    """A progress bar of files and bytes on stderr, only when stderr is a terminal."""
    bars: list[Any] = []

    def factory(files: int, total_bytes: int) -> Progress | None:
        if quiet or not sys.stderr.isatty():
            return None
        state = {"files": 0, "bytes": 0}
        bar: Any = click.progressbar(
            length=max(1, total_bytes),
            label=f"{verb} {files} files",
            file=sys.stderr,
            item_show_func=lambda _: f"{state['files']}/{files} files",
        )
        bar.__enter__()
        bars.append(bar)

        def tick(done_files: int, done_bytes: int) -> None:
            step = done_bytes - state["bytes"]
            state.update(files=done_files, bytes=done_bytes)
            bar.update(step)

        return tick

    try:
        yield factory
    finally:
        for bar in bars:
            bar.__exit__(None, None, None)


def render_transfer(report: TransferReport, verb: str, fmt: str, quiet: bool) -> None:
    """Print a transfer report; exit 1 when objects failed or are missing."""
    emit(transfer_rendered(report, verb), fmt, quiet)
    if not report.ok:
        raise Outcome(EXIT_PROBLEMS)


def transfer_rendered(report: TransferReport, verb: str) -> Rendered:
    """Text lines (one per object that failed or is missing, then a summary), the JSON
    document and the CSV rows of a transfer."""
    past = {"push": "pushed", "fetch": "fetched", "pull": "fetched"}[verb]
    lines: list[str] = []
    for f in report.failed:
        lines.append(
            f"error: {f.ref.algorithm}/{f.ref.digest} ({f.ref.path}): not {past}: {f.reason}"
        )
    for ref in report.missing:
        if verb == "push":
            lines.append(
                f"error: {ref.algorithm}/{ref.digest} ({ref.path}): not in the local store; "
                "run 'volsegsync pair' (or fetch it from the remote that has it)"
            )
        else:
            lines.append(
                f"error: {ref.algorithm}/{ref.digest} ({ref.path}): not on remote {report.remote}; "
                "push it from a clone that has it"
            )
    mib = report.bytes_moved / (1 << 20)
    where = "to" if verb == "push" else "from"
    lines.append(
        f"{past} {len(report.moved)} objects ({mib:.1f} MiB) {where} {report.remote}; "
        f"{report.present} already there"
        + (f"; {len(report.failed)} failed" if report.failed else "")
        + (f"; {len(report.missing)} missing" if report.missing else "")
    )
    rows = [
        {
            "object": f"{r.algorithm}/{r.digest}",
            "path": r.path,
            "size": r.size,
            "result": result,
            "reason": reason,
        }
        for r, result, reason in [
            *((r, "moved", "") for r in report.moved),
            *((f.ref, "failed", f.reason) for f in report.failed),
            *((r, "missing", "") for r in report.missing),
        ]
    ]
    document = {
        "schema": "volsegsync.transfer/1",
        "command": verb,
        "remote": report.remote,
        "url": report.url,
        "ok": report.ok,
        "objects": rows,
        "summary": {
            "wanted": report.wanted,
            "present": report.present,
            "moved": len(report.moved),
            "bytes": report.bytes_moved,
            "failed": len(report.failed),
            "missing": len(report.missing),
        },
    }
    return Rendered(lines, document, rows, ["object", "path", "size", "result", "reason"])


@click.command("push")
@transfer_options
@common_options
def push_command(
    remote: str | None,
    jobs: int | None,
    revs: tuple[str, ...],
    all_commits: bool,
    paths: tuple[str, ...],
    fmt: str,
    quiet: bool,
) -> None:
    """Send the content of indexed files to a remote (only what it lacks).

    Every object the index records (volumes, every segmentation version, detached
    data files), or those of PATHS; with --revs/--all-commits those of other
    revisions too, so that old versions stay restorable elsewhere. Exit 1 when
    an object could not be sent (each is named), or is not in the local store.

    \b
    Example:
      volsegsync push                       # to the default remote
      volsegsync push --remote s3 --jobs 16
      volsegsync push --all-commits
    """
    from volsegsync.ops.push import run_push

    ds = open_dataset()
    with transfer_progress(quiet, "push") as progress:
        report = run_push(ds, remote, read_file_args(paths), jobs, revs, all_commits, progress)
    render_transfer(report, "push", fmt, quiet)
