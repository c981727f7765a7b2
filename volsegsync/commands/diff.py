"""``volsegsync diff``."""

from __future__ import annotations

import functools

import click

from volsegsync.changes import counts
from volsegsync.commands.changes_view import change_line, markdown, summary
from volsegsync.commands.common import (
    EXIT_PROBLEMS,
    Outcome,
    common_options,
    jobs_option,
    open_dataset,
    problem_lines,
    problem_rows,
    progress_factory,
)
from volsegsync.errors import VolsegsyncError
from volsegsync.output import FORMATS, Rendered, emit

DIFF_FORMATS = (*FORMATS, "markdown")


@click.command("diff")
@click.argument("revs", nargs=-1, metavar="[REV_A [REV_B]]")
@click.option(
    "--exit-code", is_flag=True, help="Exit 1 when there is a change (as git diff --exit-code)."
)
@click.option(
    "--images",
    type=click.Path(file_okay=False),
    metavar="DIR",
    default=None,
    help="Draw a compare picture of each re-annotated pair into DIR (numbers in the output).",
)
@jobs_option("Parallel readers for changed files, work tree side (default: all cores).")
@functools.partial(common_options, formats=DIFF_FORMATS)
def diff_command(
    revs: tuple[str, ...],
    exit_code: bool,
    images: str | None,
    jobs: int | None,
    fmt: str,
    quiet: bool,
) -> None:
    """Show pairing changes between two revisions, or a revision and the work tree.

    With no revision: the index at HEAD against the work tree as 'pair' would
    index it now. With one: that revision against the work tree (or a range
    A..B). With two: REV_A against REV_B. Revisions are branches, tags, commit
    ids, HEAD~N. Lists pairs added and removed, re-pairings, version bumps,
    renames and moves, and content changed without a version bump (a warning:
    training data edited in place). --format markdown prints a pull-request
    comment: counts first, then a table per kind. --images DIR adds, for each
    re-annotated pair (version bump or content changed in place), a compare
    picture in DIR and its numbers (Dice, Hausdorff, mL per label), linked
    from the markdown.

    \b
    Example:
      volsegsync diff                      # HEAD against the work tree
      volsegsync diff origin/main HEAD --format markdown > comment.md
      volsegsync diff main..feature --exit-code --format json
    """
    from volsegsync.ops.diff import run_diff  # dulwich loads only here

    if len(revs) > 2:
        raise VolsegsyncError(f"diff takes at most two revisions, got {len(revs)}")
    ds = open_dataset()
    with progress_factory(quiet or fmt != "text") as progress:
        old, new = (*revs, None, None)[:2]
        report = run_diff(ds, old, new, jobs=jobs, progress=progress)
        if images is not None:
            from pathlib import Path

            from volsegsync.ops.revcompare import compare_changes

            pictures = compare_changes(ds, report.changes, Path(images))
    found = counts(report.changes)
    warnings = found.get("modified", 0)
    title = f"{report.old} → {report.new}"
    lines = [change_line(c) for c in report.changes]
    lines.extend(problem_lines(report.problems))
    lines.extend(f"note: {n}" for n in report.notes)
    if report.changes:
        lines.append(f"{len(report.changes)} changes from {title}: {summary(found)}")
    else:
        lines.append(f"no pairing change from {title}")
    document = {
        "schema": "volsegsync.diff/1",
        "old": report.old,
        "new": report.new,
        "changes": [c.to_json(entries=True) for c in report.changes],
        "problems": problem_rows(report.problems),
        "notes": report.notes,
        "summary": {
            "changes": found,
            "warnings": warnings,
            "old_pairs": report.old_pairs,
            "new_pairs": report.new_pairs,
        },
    }
    rows = [
        {"kind": c.kind, "paths": list(c.paths), "message": c.message, "warning": c.warning}
        for c in report.changes
    ]
    md = markdown(f"volsegsync diff `{report.old}` → `{report.new}`", report.changes, report.notes)
    if images is not None:
        from volsegsync.commands.compare import comparison_lines, comparison_markdown

        document["images"] = [c.to_json() for c in pictures]
        lines.extend(comparison_lines(pictures))
        md.extend(comparison_markdown(pictures))
    emit(Rendered(lines, document, rows, ["kind", "paths", "message", "warning"], md), fmt, quiet)
    if exit_code and report.changes:
        raise Outcome(EXIT_PROBLEMS)
