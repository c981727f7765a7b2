"""``volsegsync fsmonitor``: the optional file-system monitor (docs/fsmonitor.md)."""

from __future__ import annotations

import click

from volsegsync.commands.common import common_options, conclude, open_dataset
from volsegsync.output import Rendered, emit


@click.group("fsmonitor")
def fsmonitor_group() -> None:
    """Start, stop or ask the file-system monitor (Linux inotify).

    With it running and '[fsmonitor] enabled = true' in
    .volsegsync/config.local.toml, 'status' and 'verify' (so the pre-commit
    hook too) look only at the folders that changed since their last run
    instead of walking the whole dataset; whenever the monitor cannot vouch
    for that (not running, restarted, its event queue overflowed, the watch
    limit), the whole dataset is walked as without it. With the setting, they
    start the monitor themselves when it is not running.

    \b
    Example:
      volsegsync fsmonitor start
      volsegsync fsmonitor status
      volsegsync fsmonitor stop
    """


def _render(running: bool, pid: int | None, watches: int, why: str, fmt: str, quiet: bool) -> None:
    if running:
        line = f"running (pid {pid}, {watches} watches)"
        if why:
            line += f"; cannot vouch for the dataset: {why}"
    else:
        line = f"not running: {why}" if why else "not running"
    document = {
        "schema": "volsegsync.fsmonitor/1",
        "running": running,
        "pid": pid,
        "watches": watches,
        "why": why,
    }
    emit(Rendered([line], document, [document], ["running", "pid", "watches", "why"]), fmt, quiet)


@fsmonitor_group.command("start")
@click.option(
    "--max-watches",
    type=click.IntRange(min=2),
    default=None,
    help="Watch at most this many folders and files (default: the system's limit).",
)
@common_options
def start_command(max_watches: int | None, fmt: str, quiet: bool) -> None:
    """Start the monitor for this dataset in the background; wait until it watches
    every folder. Nothing happens when it is running already.

    \b
    Example:
      volsegsync fsmonitor start
      volsegsync fsmonitor start --max-watches 100000
    """
    from volsegsync.ops.fsmonitor import start

    s = start(open_dataset(), max_watches)
    _render(s.running, s.pid, s.watches, s.why, fmt, quiet)


@fsmonitor_group.command("stop")
@common_options
def stop_command(fmt: str, quiet: bool) -> None:
    """Stop the monitor of this dataset.

    \b
    Example:
      volsegsync fsmonitor stop
    """
    from volsegsync.ops.fsmonitor import stop

    was = stop(open_dataset())
    _render(False, None, 0, "" if was else "it was not running", fmt, quiet)


@fsmonitor_group.command("status")
@common_options
def status_command(fmt: str, quiet: bool) -> None:
    """Whether the monitor runs and can vouch for the dataset (exit 1 when not).

    \b
    Example:
      volsegsync fsmonitor status --format json
    """
    from volsegsync.ops.fsmonitor import status

    s = status(open_dataset())
    _render(s.running, s.pid, s.watches, s.why, fmt, quiet)
    conclude(not s.running or bool(s.why))


@fsmonitor_group.command("run", hidden=True)
@click.option("--max-watches", type=click.IntRange(min=2), default=None)
def run_command(max_watches: int | None) -> None:
    """Be the monitor (in the foreground; 'start' runs this in the background)."""
    from volsegsync.ops.fsmonitor import run

    run(open_dataset(), max_watches)
