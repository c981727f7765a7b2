"""The command layer: one module per command, each parsing options and rendering.

Commands are imported when they are run, not at start-up: ``volsegsync status``
loads the status module and what it needs, not the other twenty-six.
"""

from __future__ import annotations

import importlib

import click

# command name -> (module under volsegsync.commands, attribute)
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("init", "init_command"),
    "check-names": ("check_names", "check_names_command"),
    "pair": ("pair", "pair_command"),
    "status": ("status", "status_command"),
    "rm": ("rm", "rm_command"),
    "verify": ("verify", "verify_command"),
    "checkout": ("checkout", "checkout_command"),
    "ingest": ("ingest", "ingest_command"),
    "handout": ("handout", "handout_command"),
    "fsck": ("fsck", "fsck_command"),
    "gc": ("gc", "gc_command"),
    "remote": ("remote", "remote_command"),
    "push": ("push", "push_command"),
    "fetch": ("fetch", "fetch_command"),
    "pull": ("pull", "pull_command"),
    "show": ("show", "show_command"),
    "compare": ("compare", "compare_command"),
    "report": ("report", "report_command"),
    "log": ("log", "log_command"),
    "diff": ("diff", "diff_command"),
    "example": ("example", "example_command"),
    "install-hooks": ("hooks", "install_hooks_command"),
    "uninstall-hooks": ("hooks", "uninstall_hooks_command"),
    "merge-driver": ("hooks", "merge_driver_command"),
    "hook": ("hooks", "hook_group"),
    "export": ("export", "export_command"),
    "fsmonitor": ("fsmonitor", "fsmonitor_group"),
}


def load_command(name: str) -> click.Command | None:
    """The command ``name``, its module imported now; None for an unknown name."""
    where = COMMANDS.get(name)
    if where is None:
        return None
    module = importlib.import_module(f"volsegsync.commands.{where[0]}")
    command = getattr(module, where[1])
    assert isinstance(command, click.Command) and command.name == name, name
    return command
