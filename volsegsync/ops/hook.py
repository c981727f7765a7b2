"""What the git hooks run (``volsegsync hook NAME``): the checks of a commit, and
the restore and push steps after checkout, merge and before push.

The pre-commit check works on what is being committed: git's index (the staging
area, ``GIT_INDEX_FILE`` honoured), read with dulwich through
:mod:`volsegsync.history`. Every dataset whose index or config the commit adds,
modifies or deletes is checked:

- its staged index must parse (it may come from anywhere: a path escaping the
  dataset is refused), and be the one on disk (else: ``git add`` it);
- a staged deletion of the index while the dataset's config stays is refused;
- the index must record the files on disk (``status``; else: ``volsegsync
  pair``, then ``git add``);
- ``verify --fast`` must find no error.

With file names (the pre-commit framework passes the files it matched; it has
stashed what is not staged) the same checks run on the working tree.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from volsegsync import history
from volsegsync.dataset import Dataset
from volsegsync.errors import VolsegsyncError
from volsegsync.fsutil import CONFIG_LIMIT, INDEX_LIMIT, read_small
from volsegsync.hooks import CONFIG_PATH, INDEX_NAME, dataset_root_of
from volsegsync.index import parse_index
from volsegsync.problems import Problem

MAX_CHANGES = 10  # listed per stale dataset; the rest is counted


class DatasetCheck(NamedTuple):
    root: str  # as given to the user: relative to the repository top (or cwd), "." for it
    errors: list[str]  # what blocks the commit, each with what to run
    problems: list[Problem]  # from verify / check-names (errors block, the rest informs)
    note: str = ""  # e.g. "removed from git in this commit"

    @property
    def failed(self) -> bool:
        return bool(self.errors) or any(p.severity == "error" for p in self.problems)


def c_option(root: str) -> str:
    """``-C ROOT`` for a command line, quoted for a shell (nothing for the top)."""
    return "" if root == "." else f" -C {shlex.quote(root)}"


def _in(root: str, name: str) -> str:
    return name if root == "." else f"{root}/{name}"


def roots_of(paths: Iterable[str]) -> list[str]:
    """The dataset folders that the given repository paths describe (sorted, unique)."""
    return sorted({r for p in paths if (r := dataset_root_of(p)) is not None})


# -- pre-commit -------------------------------------------------------------------------


def check_staged(git_root: Path) -> list[DatasetCheck]:
    """Check every dataset the staged commit touches."""
    return [
        _check_staged_dataset(git_root, root) for root in roots_of(history.staged_changes(git_root))
    ]


def _check_staged_dataset(git_root: Path, root: str) -> DatasetCheck:
    index_path, config_path = _in(root, INDEX_NAME), _in(root, CONFIG_PATH)
    staged_index = history.staged_blob(git_root, index_path)
    staged_config = history.staged_blob(git_root, config_path)
    if staged_index is None and staged_config is None:
        return DatasetCheck(root, [], [], "the dataset leaves git in this commit")
    q = shlex.quote
    if staged_index is None:
        return DatasetCheck(
            root,
            [
                f"{index_path}: deleted (or not added) in this commit while the dataset's "
                f"config stays: every pair would lose its record. Keep it: 'git restore "
                f"--staged {q(index_path)}' (or 'volsegsync{c_option(root)} pair' and 'git add "
                f"{q(index_path)}'); to remove the dataset from git, 'git rm -r --cached "
                f"{q(_in(root, '.volsegsync'))}' too"
            ],
            [],
        )
    errors: list[str] = []
    if staged_config is None:
        errors.append(
            f"{config_path}: not in the commit, but the dataset's index is: "
            f"'git add {q(config_path)}'"
        )
    try:
        if len(staged_index) > INDEX_LIMIT:
            raise VolsegsyncError(f"{index_path} (staged): larger than the index limit")
        parse_index(staged_index.decode("utf-8"), f"{index_path} (staged)")
    except UnicodeDecodeError as e:
        errors.append(f"{index_path} (staged): not valid UTF-8 (byte {e.start})")
    except VolsegsyncError as e:
        errors.append(str(e))
    folder = git_root / root
    for path, staged, limit, what in (
        (index_path, staged_index, INDEX_LIMIT, "index"),
        (config_path, staged_config, CONFIG_LIMIT, "config"),
    ):
        try:  # a regular file, capped: never a FIFO's wait
            on_disk: bytes | None = read_small(git_root / path, limit, what)
        except FileNotFoundError:
            on_disk = None
        except VolsegsyncError as e:
            errors.append(str(e))
            continue
        if staged is not None and on_disk != staged:
            errors.append(
                f"{path}: the staged copy is not the file on disk: stage it, "
                f"'git add {q(path)}' (after 'volsegsync{c_option(root)} pair' if files changed)"
            )
    if errors:  # what is committed is not what is on disk: checking the disk says nothing
        return DatasetCheck(root, errors, [])
    return check_on_disk(folder, root)


def check_on_disk(folder: Path, root: str) -> DatasetCheck:
    """The index records the files on disk (``status``) and ``verify --fast`` is clean."""
    from volsegsync.ops.status import run_status
    from volsegsync.ops.verify import run_verify

    if not (folder / ".volsegsync").is_dir():
        return DatasetCheck(
            root, [f"{_in(root, INDEX_NAME)}: no dataset there (no .volsegsync/ beside it)"], []
        )
    try:
        ds = Dataset.open(folder)
        status = run_status(ds)
        errors: list[str] = []
        if not status.in_sync:
            listed = [f"  {c.message}" for c in status.changes[:MAX_CHANGES]]
            more = len(status.changes) - MAX_CHANGES
            if more > 0:
                listed.append(f"  ... and {more} more ('volsegsync{c_option(root)} status')")
            listed += [f"  {p.message}" for p in status.problems]
            index = _in(root, INDEX_NAME)
            errors.append(
                f"{index}: the index does not record the files on disk; run "
                f"'volsegsync{c_option(root)} pair', then 'git add {shlex.quote(index)}'"
                + "".join(f"\n{line}" for line in listed)
            )
        report = run_verify(ds, fast=True)
    except VolsegsyncError as e:
        return DatasetCheck(root, [str(e)], [])
    return DatasetCheck(root, errors, report.problems)


def check_files(files: Iterable[str], names_only: bool = False) -> list[DatasetCheck]:
    """The datasets of the given index / config files (relative to the cwd), checked on
    disk; ``names_only``: ``check-names`` instead of status and ``verify --fast``."""
    from volsegsync.ops.check_names import check_names

    checks: list[DatasetCheck] = []
    for root in roots_of(Path(f).as_posix() for f in files):
        folder = Path(root)
        if not names_only:
            checks.append(check_on_disk(folder, root))
            continue
        try:
            _, problems = check_names(Dataset.open(folder))
        except VolsegsyncError as e:
            checks.append(DatasetCheck(root, [str(e)], []))
            continue
        checks.append(DatasetCheck(root, [], problems))
    return checks


# -- post-checkout, post-merge, pre-push ------------------------------------------------


NULL_COMMIT = "0" * 40


def datasets_changed(git_root: Path, old: str | None, new: str | None) -> list[str]:
    """Dataset folders (relative to ``git_root``) whose index differs from commit ``old``
    to commit ``new``, and that are datasets on disk."""
    if new is None:
        return []
    old = None if old in (None, NULL_COMMIT) else old
    changed = history.changed_files(git_root, old, new)
    return [
        r for r in roots_of(p for p in changed if p.endswith(INDEX_NAME))
        if (git_root / r / ".volsegsync").is_dir()
    ]  # fmt: skip


def datasets_after_checkout(git_root: Path, old: str, new: str, branch: str) -> list[str]:
    """The datasets to bring in step after ``git checkout``: on a branch checkout
    (``branch`` = 1), those whose index changed; a checkout of files changes none."""
    return datasets_changed(git_root, old, new) if branch == "1" else []


def datasets_after_merge(git_root: Path) -> list[str]:
    """The datasets whose index a merge (or pull) changed: ``ORIG_HEAD`` to ``HEAD``."""
    head = history.resolve_ref(git_root, "HEAD")
    return datasets_changed(git_root, history.resolve_ref(git_root, "ORIG_HEAD"), head)


class PushPlan(NamedTuple):
    enabled: dict[str, list[str]]  # dataset with [hooks] pre_push = true -> pushed commits
    unreadable: list[str]  # one line each: a dataset whose config cannot be read


def datasets_to_push(git_root: Path, refs: Iterable[str]) -> PushPlan:
    """The datasets in the commits being pushed (git's pre-push stdin lines
    ``local-ref local-sha remote-ref remote-sha``) that opted in to pushing content,
    each with the pushed commits that hold it."""
    commits: dict[str, list[str]] = {}
    for line in refs:
        parts = line.split()
        if len(parts) == 4 and parts[1] != NULL_COMMIT:  # a deletion pushes nothing
            for root in datasets_changed(git_root, None, parts[1]):
                commits.setdefault(root, []).append(parts[1])
    enabled: dict[str, list[str]] = {}
    unreadable: list[str] = []
    for root in sorted(commits):
        try:
            if Dataset.open(git_root / root).config.hooks.pre_push:
                enabled[root] = commits[root]
        except VolsegsyncError as e:
            unreadable.append(str(e))
    return PushPlan(enabled, unreadable)
