"""``volsegsync diff``: pairing changes between two revisions, or a revision and the work tree.

The work-tree side is what ``pair`` would write now (:func:`take_snapshot`), so a
review sees the effect of running ``pair``; a revision side is the index as
committed there. Both go through :func:`volsegsync.changes.diff`, as ``status``
and ``log`` do.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple

from volsegsync.changes import Change, diff
from volsegsync.dataset import Dataset
from volsegsync.errors import VolsegsyncError
from volsegsync.history import GitHistory
from volsegsync.index import Entry, cut_to_changes, parse_index
from volsegsync.ops.snapshot import ProgressFactory, pair_entries, take_snapshot
from volsegsync.problems import Problem

WORK_TREE = "working tree"


class DiffReport(NamedTuple):
    old: str  # what was compared: a revision as given
    new: str  # a revision, or "working tree"
    changes: list[Change]
    problems: list[Problem]  # work tree side: files that cannot be read or paired now
    notes: list[str]  # e.g. a revision that has no index yet
    old_pairs: int
    new_pairs: int


def run_diff(
    ds: Dataset,
    old: str | None = None,
    new: str | None = None,
    jobs: int | None = None,
    progress: ProgressFactory | None = None,
) -> DiffReport:
    """Changes from revision ``old`` (default HEAD) to revision ``new`` (default: the work
    tree as ``pair`` would index it). ``old`` may be a range ``A..B`` when ``new`` is None."""
    if old is not None and ".." in old:
        if new is not None:
            raise VolsegsyncError(f"{old} {new}: give a range or two revisions, not both")
        a, _, b = old.partition("..")
        old, new = a or "HEAD", b or "HEAD"
    old = old or "HEAD"
    notes: list[str] = []
    with GitHistory(ds.root) as git:
        old_text = _index_at(git, old, notes)
        new_text = _index_at(git, new, notes) if new is not None else None
    old_name, new_name = f"{old}:{git.path}", f"{new}:{git.path}"
    if old_text is not None and new_text is not None:
        cut = cut_to_changes(old_text, new_text)  # two revisions: parse what changed
        if cut is not None:
            return DiffReport(
                old,
                str(new),
                diff(parse_index(cut.old, old_name), parse_index(cut.new, new_name)),
                [],
                notes,
                cut.old_pairs,
                cut.new_pairs,
            )
    before = parse_index(old_text, old_name) if old_text is not None else []
    problems: list[Problem] = []
    present: Collection[str] = ()  # files still on disk: never the source of a rename
    if new is not None:
        after = parse_index(new_text, new_name) if new_text is not None else []
    else:
        scan = ds.scan()
        snap = take_snapshot(ds, jobs=jobs, progress=progress, scan=scan)
        after, problems, present = pair_entries(snap), snap.problems, scan.files.keys()
    return DiffReport(
        old,
        new or WORK_TREE,
        diff(before, after, present=present),
        problems,
        notes,
        _pairs(before),
        _pairs(after),
    )


def _index_at(git: GitHistory, rev: str, notes: list[str]) -> str | None:
    text = git.index_text(rev)
    if text is None:
        notes.append(f"{rev} has no {git.path}: every pair counts as added")
    return text


def _pairs(entries: list[Entry]) -> int:
    return sum(1 for e in entries if e.volume and e.segmentation)
