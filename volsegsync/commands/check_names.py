"""``volsegsync check-names``."""

from __future__ import annotations

from pathlib import Path

import click

from volsegsync.commands.common import (
    EXIT_PROBLEMS,
    PROBLEM_COLUMNS,
    Outcome,
    common_options,
    has_errors,
    problem_lines,
    problem_rows,
    read_file_args,
    summary_counts,
)
from volsegsync.config import Config
from volsegsync.dataset import Dataset
from volsegsync.errors import NotADatasetError, VolsegsyncError
from volsegsync.ops.check_names import check_names
from volsegsync.output import Rendered, emit
from volsegsync.problems import Problem, make_problem


@click.command("check-names")
@click.argument("files", nargs=-1, type=click.Path())
@common_options
def check_names_command(files: tuple[str, ...], fmt: str, quiet: bool) -> None:
    """Report every file whose name breaks the dataset's naming convention.

    With no FILES, checks every volume and segmentation in the dataset; '-' reads
    the file list from stdin. Outside a dataset the default convention applies.
    Exit 1 if any name is wrong.

    \b
    Example:
      volsegsync check-names
      find segmentations -name '*.nrrd' | volsegsync check-names -
    """
    try:
        ds = Dataset.open(Path.cwd())
    except NotADatasetError:
        ds = Dataset(Path.cwd().resolve(), Config())
    paths = read_file_args(files)
    outside: list[Problem] = []
    relative: list[str] | None = None
    if paths is not None:
        relative = []
        for p in paths:
            try:
                relative.append(ds.relpath(p))
            except VolsegsyncError as e:
                outside.append(make_problem("naming", [p], str(e)))
    count, problems = check_names(ds, relative)
    count += len(outside)  # a path outside the dataset was checked too, and failed
    problems = outside + problems
    lines = problem_lines(problems)
    lines.append(f"{count} files checked, {len(problems)} with naming problems")
    document = {
        "schema": "volsegsync.check-names/1",
        "checked": count,
        "problems": problem_rows(problems),
        "summary": summary_counts(problems),
    }
    emit(Rendered(lines, document, problem_rows(problems), PROBLEM_COLUMNS), fmt, quiet)
    if has_errors(problems):
        raise Outcome(EXIT_PROBLEMS)
