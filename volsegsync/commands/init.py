"""``volsegsync init``."""

from __future__ import annotations

from pathlib import Path

import click

from volsegsync.commands.common import common_options
from volsegsync.layouts import DESCRIPTIONS, LAYOUTS
from volsegsync.output import Rendered, emit


@click.command("init")
@click.option(
    "--git",
    "git",
    is_flag=True,
    help="Create a git repository (with dulwich) if the folder is in none.",
)
@click.option("--no-git", is_flag=True, help="Make a dataset outside any git repository.")
@click.option(
    "--layout",
    type=click.Choice(LAYOUTS),
    default=None,
    help="Write the config of a framework's layout: nnunet (imagesTr/CASE_0000, "
    "labelsTr/CASE, dataset.json read), msd, slicer (volumes and .seg.nrrd side by side) "
    "or default. Without it, init says which layout the folder looks like.",
)
@click.option("--force", is_flag=True, help="With --layout: replace a config that was edited.")
@common_options
def init_command(
    git: bool, no_git: bool, layout: str | None, force: bool, fmt: str, quiet: bool
) -> None:
    """Make the current folder a dataset. Re-running is harmless.

    Writes .volsegsync/config.toml and volsegsync.index (track both in git), the
    ignored local state folder .volsegsync/state/, and .gitignore rules that keep
    the image files out of git.

    \b
    Example:
      volsegsync init           # inside a git repository
      volsegsync init --git     # create the repository too
      volsegsync init --layout nnunet   # in an nnU-Net raw dataset folder
    """
    from volsegsync.ops.init import init_dataset  # dulwich: imported only when needed

    report = init_dataset(Path.cwd(), git=git, no_git=no_git, layout=layout, force=force)
    lines = []
    if report.git_created:
        lines.append(f"Created a git repository in {report.git_root}")
    if report.created:
        lines.append(f"Initialised volsegsync dataset in {report.root}")
        lines.extend(f"  wrote {path}" for path in report.created)
        lines.append("Track the dataset's description in git:")
        lines.append(
            "  git add .volsegsync/config.toml .volsegsync/.gitignore volsegsync.index .gitignore "
            ".gitattributes"
        )
    else:
        lines.append(f"Dataset in {report.root} is already initialised; nothing to do")
    if report.layout:
        lines.append(f"Layout {report.layout}: {DESCRIPTIONS[report.layout]}")
    if report.detected:
        lines.append(
            f"note: this folder looks like layout {report.detected.layout} "
            f"({report.detected.reason}); 'volsegsync init --layout "
            f"{report.detected.layout}' writes its config"
        )
    lines.extend(f"warning: {w}" for w in report.warnings)
    document = {
        "schema": "volsegsync.init/1",
        "root": str(report.root),
        "git_root": str(report.git_root) if report.git_root else None,
        "git_created": report.git_created,
        "created": report.created,
        "warnings": report.warnings,
        "layout": report.layout,
        "detected": report.detected.layout if report.detected else None,
    }
    emit(Rendered(lines, document, [{"path": p} for p in report.created], ["path"]), fmt, quiet)
