"""``volsegsync install-hooks``, ``uninstall-hooks``, ``merge-driver`` and ``hook NAME``
(what the installed git hooks and the pre-commit framework run)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import click

from volsegsync.commands.common import (
    EXIT_PROBLEMS,
    Outcome,
    common_options,
    problem_lines,
    read_file_args,
)
from volsegsync.errors import NotADatasetError
from volsegsync.output import Rendered, emit

if TYPE_CHECKING:
    from volsegsync.hooks import HookChange
    from volsegsync.ops.hook import DatasetCheck

# -- install-hooks / uninstall-hooks ----------------------------------------------------


def _here_git_root() -> Path:
    from volsegsync.hooks import require_git_root

    return require_git_root(Path.cwd())


def _render(changes: list[HookChange], document: Mapping[str, object], fmt: str, q: bool) -> None:
    rows = _rows(changes)
    lines = [f"{c.name}: {c.action} ({c.path})" for c in changes] or ["nothing to do"]
    emit(Rendered(lines, document, rows, ["hook", "path", "action"]), fmt, q)


def _rows(changes: list[HookChange]) -> list[dict[str, str]]:
    return [{"hook": c.name, "path": str(c.path), "action": c.action} for c in changes]


def _installer_path() -> str | None:
    """The volsegsync executable that runs now, for hooks run where PATH lacks it."""
    beside = Path(sys.executable).parent / "volsegsync"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("volsegsync")


@click.command("install-hooks")
@common_options
def install_hooks_command(fmt: str, quiet: bool) -> None:
    """Install volsegsync's git hooks and the index merge driver in this repository.

    Hooks (in core.hooksPath if set, else .git/hooks): pre-commit checks every
    dataset the commit touches; post-checkout and post-merge run 'volsegsync
    checkout' so that the image files follow the index; pre-push runs 'volsegsync
    push' when the dataset's config sets [hooks] pre_push = true. A hook already
    there is kept, renamed NAME.volsegsync-chained, and run first. The merge
    driver merges volsegsync.index per pair (git config merge.volsegsync and a
    .gitattributes line). Re-running updates the hooks; nothing is clobbered.

    \b
    Example:
      volsegsync install-hooks
      volsegsync uninstall-hooks
    """
    from volsegsync.dataset import Dataset
    from volsegsync.hooks import ensure_attributes, install_hooks, install_merge_driver

    git_root = _here_git_root()
    try:
        attributes_dir = Dataset.open(Path.cwd()).root
    except NotADatasetError:
        attributes_dir = git_root
    changes = [
        *install_hooks(git_root, _installer_path()),
        install_merge_driver(git_root),
        ensure_attributes(attributes_dir),
    ]
    document = {
        "schema": "volsegsync.install-hooks/1",
        "git_root": str(git_root),
        "changes": _rows(changes),
    }
    _render(changes, document, fmt, quiet)


@click.command("uninstall-hooks")
@common_options
def uninstall_hooks_command(fmt: str, quiet: bool) -> None:
    """Remove the git hooks and the merge driver that volsegsync installed.

    Only hooks volsegsync wrote are removed; a hook it had chained is put back.
    The .gitattributes line stays (it is tracked, and git ignores it without the
    driver); remove it by hand if you like.

    \b
    Example:
      volsegsync uninstall-hooks
    """
    from volsegsync.hooks import uninstall_hooks, uninstall_merge_driver

    git_root = _here_git_root()
    changes = uninstall_hooks(git_root)
    driver = uninstall_merge_driver(git_root)
    changes += [driver] if driver else []
    document = {
        "schema": "volsegsync.uninstall-hooks/1",
        "git_root": str(git_root),
        "changes": _rows(changes),
    }
    _render(changes, document, fmt, quiet)


# -- merge-driver -----------------------------------------------------------------------


@click.command("merge-driver")
@click.argument("base", type=click.Path(dir_okay=False))
@click.argument("ours", type=click.Path(dir_okay=False))
@click.argument("theirs", type=click.Path(dir_okay=False))
@click.argument("path", required=False, default="volsegsync.index")
def merge_driver_command(base: str, ours: str, theirs: str, path: str) -> None:
    """Merge three versions of volsegsync.index per pair (git's merge driver).

    Git runs it as 'volsegsync merge-driver %O %A %B %P' (install-hooks and init
    declare it). The result replaces OURS. A pair (format 2: a case) that only one
    side changed takes that side's lines; only a pair both sides changed
    differently is a conflict: its lines are left between conflict markers and
    the exit status is 1.

    \b
    Example:
      git config merge.volsegsync.driver 'volsegsync merge-driver %O %A %B %P'
      echo 'volsegsync.index merge=volsegsync' >> .gitattributes
    """
    from volsegsync.errors import VolsegsyncError
    from volsegsync.fsutil import atomic_write_bytes
    from volsegsync.merge import merge_index

    texts = []
    for name in (base, ours, theirs):
        try:
            texts.append(Path(name).read_bytes().decode("utf-8", "surrogateescape"))
        except OSError as e:
            raise VolsegsyncError(f"{name}: cannot read: {e.strerror}") from None
    result = merge_index(*texts)
    try:
        atomic_write_bytes(Path(ours), result.text.encode("utf-8", "surrogateescape"))
    except OSError as e:
        raise VolsegsyncError(f"{ours}: cannot write the merge: {e.strerror}") from None
    if result.unmergeable:
        click.echo(
            f"volsegsync: {path}: cannot merge per pair ({result.unmergeable}): the whole file "
            f"is left between conflict markers; keep one side ('git checkout --ours {path}') "
            f"and run 'volsegsync pair', then 'git add {path}'",
            err=True,
        )
        raise Outcome(EXIT_PROBLEMS)
    if not result.clean:
        shown = ", ".join(result.conflicts[:5]) + (" ..." if len(result.conflicts) > 5 else "")
        click.echo(
            f"volsegsync: {path}: both sides changed {len(result.conflicts)} pair(s) "
            f"differently ({shown}): keep the right lines between <<<<<<< and >>>>>>>, or "
            f"take one side ('git checkout --ours {path}') and run 'volsegsync pair'; then "
            f"'git add {path}'",
            err=True,
        )
        raise Outcome(EXIT_PROBLEMS)


# -- hook NAME ---------------------------------------------------------------------------


@click.group("hook")
def hook_group() -> None:
    """What the git hooks run (install them with 'volsegsync install-hooks').

    \b
    Example:
      volsegsync hook pre-commit                 # check what is staged
      volsegsync hook pre-commit ds/volsegsync.index
    """


def _enter() -> None:
    """Honour ``volsegsync -C DIR hook ...``."""
    folder = (click.get_current_context().find_root().obj or {}).get("chdir")
    if folder:
        os.chdir(folder)


def _command(name: str) -> click.Command | None:
    """The volsegsync command ``name``, when this version has it."""
    root = click.get_current_context().find_root()
    group = root.command
    return group.get_command(root, name) if isinstance(group, click.Group) else None


def _run_volsegsync(folder: Path, *args: str) -> int:
    """Another volsegsync command in ``folder``, its output going where ours goes."""
    cmd = [sys.executable, "-m", "volsegsync", "-C", str(folder), *args]
    return subprocess.run(cmd, check=False).returncode


def _report(checks: list[DatasetCheck], what: str) -> None:
    failed = []
    for check in checks:
        click.echo(f"volsegsync: {what} the dataset in {check.root}", err=True)
        if check.note:
            click.echo(f"  {check.note}", err=True)
        for error in check.errors:
            click.echo(f"  error: {error}", err=True)
        shown = [p for p in check.problems if p.severity in ("error", "warning")]
        for line in problem_lines(shown):
            click.echo(f"  {line}", err=True)
        if check.failed:
            failed.append(check.root)
    if failed:
        click.echo(
            f"volsegsync: commit stopped ({', '.join(failed)}): fix the above, or skip the "
            "check with 'git commit --no-verify'",
            err=True,
        )
        raise Outcome(EXIT_PROBLEMS)


@hook_group.command("pre-commit")
@click.argument("files", nargs=-1, type=click.Path())
def hook_pre_commit(files: tuple[str, ...]) -> None:
    """Check the datasets a commit touches; exit 1 to stop the commit.

    Without FILES: every dataset whose index or config is staged, from git's
    index (deletions too); the staged index must parse, equal the file on disk,
    record the files on disk, and pass 'verify --fast'. With FILES (index or
    config files, as the pre-commit framework passes them): their datasets, on
    disk.

    \b
    Example:
      volsegsync hook pre-commit
      volsegsync hook pre-commit 'my data/volsegsync.index'
    """
    from volsegsync.hooks import require_git_root
    from volsegsync.ops.hook import check_files, check_staged

    _enter()
    given = read_file_args(files)
    checks = check_staged(require_git_root(Path.cwd())) if given is None else check_files(given)
    _report(checks, "checking")


@hook_group.command("check-names")
@click.argument("files", nargs=-1, type=click.Path())
def hook_check_names(files: tuple[str, ...]) -> None:
    """Check the names of every file in the datasets of FILES (index or config files).

    \b
    Example:
      volsegsync hook check-names ds/volsegsync.index
    """
    from volsegsync.ops.hook import check_files

    _enter()
    _report(check_files(read_file_args(files) or [], names_only=True), "checking names in")


def _restore(git_root: Path, roots: list[str], hook: str) -> None:
    """``volsegsync checkout --quiet`` in each dataset; a failure is told, never fatal."""
    from volsegsync.ops.hook import c_option

    for root in roots:
        folder = git_root / root
        if _command("checkout") is None:
            click.echo(
                f"volsegsync: {hook}: this volsegsync has no 'checkout' command yet; the image "
                f"files of {root} were not brought in step with its index",
                err=True,
            )
            return
        if _run_volsegsync(folder, "checkout", "--quiet") != 0:
            click.echo(
                f"volsegsync: {hook}: not every file of the dataset in {root} was restored "
                f"(see above); when fixed, run 'volsegsync{c_option(root)} checkout'",
                err=True,
            )


@hook_group.command("post-checkout")
@click.argument("old")
@click.argument("new")
@click.argument("branch")
def hook_post_checkout(old: str, new: str, branch: str) -> None:
    """After 'git checkout': restore the image files of each dataset whose index changed.

    Never fails the git command: a file that cannot be restored is told.

    \b
    Example:
      volsegsync hook post-checkout OLD-COMMIT NEW-COMMIT 1
    """
    from volsegsync.hooks import require_git_root
    from volsegsync.ops.hook import datasets_after_checkout

    _enter()
    git_root = require_git_root(Path.cwd())
    _restore(git_root, datasets_after_checkout(git_root, old, new, branch), "post-checkout")


@hook_group.command("post-merge")
@click.argument("squash", required=False)
def hook_post_merge(squash: str | None) -> None:
    """After 'git merge' or 'git pull': restore the image files of each dataset whose
    index the merge changed. Never fails the git command.

    \b
    Example:
      volsegsync hook post-merge 0
    """
    from volsegsync.hooks import require_git_root
    from volsegsync.ops.hook import datasets_after_merge

    _enter()
    git_root = require_git_root(Path.cwd())
    _restore(git_root, datasets_after_merge(git_root), "post-merge")


@hook_group.command("pre-push")
@click.argument("remote", required=False)
@click.argument("url", required=False)
def hook_pre_push(remote: str | None, url: str | None) -> None:
    """Before 'git push': 'volsegsync push' in each pushed dataset that opted in.

    A dataset opts in with [hooks] pre_push = true in its config; the content of
    the pushed commits goes to its default remote (push --revs COMMIT). Exit 1
    stops git's push when that fails.

    Reads git's lines 'LOCAL-REF LOCAL-SHA REMOTE-REF REMOTE-SHA' from stdin.

    \b
    Example:
      volsegsync hook pre-push origin /srv/git/ds.git < refs.txt
    """
    from volsegsync.hooks import require_git_root
    from volsegsync.ops.hook import datasets_to_push

    _enter()
    git_root = require_git_root(Path.cwd())
    refs = sys.stdin.read().splitlines() if not sys.stdin.isatty() else []
    plan = datasets_to_push(git_root, refs)
    for line in plan.unreadable:
        click.echo(f"volsegsync: pre-push: {line}", err=True)
    failed = []
    push = _command("push")
    takes_revs = push is not None and any(p.name == "revs" for p in push.params)
    for root, commits in plan.enabled.items():
        if push is None:
            click.echo(
                f"volsegsync: pre-push: [hooks] pre_push is set in {root}, but this volsegsync "
                "has no 'push' command yet: the dataset's content was not pushed",
                err=True,
            )
            return
        revs = [arg for sha in commits for arg in ("--revs", sha)] if takes_revs else []
        if _run_volsegsync(git_root / root, "push", "--quiet", *revs) != 0:
            failed.append(root)
    if failed:
        click.echo(
            f"volsegsync: pre-push: pushing the content of {', '.join(failed)} failed (see "
            "above), so git's push is stopped: the commits would name content no remote "
            "holds. Fix it and push again ('git push --no-verify' pushes anyway)",
            err=True,
        )
        raise Outcome(EXIT_PROBLEMS)
