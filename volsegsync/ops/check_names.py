"""``volsegsync check-names``: every file that breaks the naming convention, and why."""

from __future__ import annotations

from volsegsync.dataset import Dataset
from volsegsync.problems import Problem, apply_severities, unreadable_problems


def check_names(ds: Dataset, paths: list[str] | None = None) -> tuple[int, list[Problem]]:
    """Check the given dataset-relative paths (default: every candidate file).

    Returns the number of files checked and the problems found.
    """
    problems: list[Problem] = []
    if paths is None:
        scan = ds.scan()
        checked = sorted(scan.files)
        problems.extend(unreadable_problems(scan.unreadable))
    else:
        checked = list(paths)
    unreadable = len(problems)
    for path in checked:
        problems.extend(ds.convention.check(path))
    return len(checked) + unreadable, apply_severities(problems, ds.config.verify.severity)
