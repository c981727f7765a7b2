"""The command layer: one module per command, each parsing options and rendering."""

from __future__ import annotations

from volsegsync.commands.check_names import check_names_command
from volsegsync.commands.checkout import checkout_command
from volsegsync.commands.compare import compare_command
from volsegsync.commands.diff import diff_command
from volsegsync.commands.example import example_command
from volsegsync.commands.export import export_command
from volsegsync.commands.fetch import fetch_command
from volsegsync.commands.fsck import fsck_command
from volsegsync.commands.fsmonitor import fsmonitor_group
from volsegsync.commands.gc import gc_command
from volsegsync.commands.handout import handout_command
from volsegsync.commands.hooks import (
    hook_group,
    install_hooks_command,
    merge_driver_command,
    uninstall_hooks_command,
)
from volsegsync.commands.ingest import ingest_command
from volsegsync.commands.init import init_command
from volsegsync.commands.log import log_command
from volsegsync.commands.pair import pair_command
from volsegsync.commands.pull import pull_command
from volsegsync.commands.push import push_command
from volsegsync.commands.remote import remote_command
from volsegsync.commands.report import report_command
from volsegsync.commands.rm import rm_command
from volsegsync.commands.show import show_command
from volsegsync.commands.status import status_command
from volsegsync.commands.verify import verify_command

COMMANDS = [
    init_command,
    check_names_command,
    pair_command,
    status_command,
    rm_command,
    verify_command,
    checkout_command,
    ingest_command,
    handout_command,
    fsck_command,
    gc_command,
    remote_command,
    push_command,
    fetch_command,
    pull_command,
    show_command,
    compare_command,
    report_command,
    log_command,
    diff_command,
    example_command,
    install_hooks_command,
    uninstall_hooks_command,
    merge_driver_command,
    hook_group,
    export_command,
    fsmonitor_group,
]
