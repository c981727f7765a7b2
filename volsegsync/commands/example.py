"""``volsegsync example``."""

from __future__ import annotations

from pathlib import Path

import click

from volsegsync.commands.common import common_options
from volsegsync.output import Rendered, emit


@click.command("example")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Write into a folder that is not empty.")
@click.option("--no-git", is_flag=True, help="Do not create a git repository.")
@common_options
def example_command(directory: Path, force: bool, no_git: bool, fmt: str, quiet: bool) -> None:
    """Write a small example dataset to DIRECTORY and make it a dataset.

    Real NIfTI volumes and NRRD segmentations (3D Slicer style, LPS) following the
    default naming convention, in a new git repository, with planted problems for
    'verify' and 'check-names' to find.

    \b
    Example:
      volsegsync example demo && cd demo && volsegsync pair
    """
    from volsegsync.example import declare_labels, make_example  # nibabel: only when needed
    from volsegsync.ops.init import init_dataset

    report = make_example(directory, force=force)
    init = init_dataset(directory, git=not no_git, no_git=no_git, own_repo=True)
    declare_labels(directory / ".volsegsync" / "config.toml")
    lines = [f"Wrote an example dataset of {len(report.files)} files to {report.root}"]
    lines.extend(f"  {path}" for path in report.files)
    lines.append("Planted problems:")
    lines.extend(f"  {p}" for p in report.planted)
    lines.append(f"Next: cd {directory} && volsegsync pair && volsegsync verify")
    document = {
        "schema": "volsegsync.example/1",
        "root": str(report.root),
        "files": report.files,
        "planted": report.planted,
        "git_root": str(init.git_root) if init.git_root else None,
    }
    emit(Rendered(lines, document, [{"path": p} for p in report.files], ["path"]), fmt, quiet)
