"""Git, through dulwich: the only module that imports it.

Today: find the repository that holds a dataset, create one, tell whether git
ignores a path. The history of segmentation versions (``log``, ``checkout``)
plugs in here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

from dulwich import porcelain
from dulwich.errors import NotGitRepository
from dulwich.ignore import IgnoreFilterManager
from dulwich.object_store import tree_lookup_path
from dulwich.objects import Blob, Commit
from dulwich.objectspec import parse_commit
from dulwich.repo import Repo

from volsegsync.errors import VolsegsyncError

if TYPE_CHECKING:
    from dulwich.objects import ObjectID


def find_git_root(path: Path) -> Path | None:
    """The work tree root of the git repository containing ``path``, if any."""
    try:
        repo = Repo.discover(os.fspath(path))
    except NotGitRepository:
        return None
    try:
        return Path(repo.path).resolve()
    finally:
        repo.close()


def init_git(path: Path) -> Path:
    """Create a git repository at ``path`` (no git binary needed)."""
    repo = porcelain.init(os.fspath(path))
    repo.close()
    return path.resolve()


def ignored(git_root: Path, paths: list[str]) -> dict[str, bool]:
    """Whether git would ignore each path (relative to ``git_root``, POSIX)."""
    repo = Repo(os.fspath(git_root))
    try:
        manager = IgnoreFilterManager.from_repo(repo)
        return {p: bool(manager.is_ignored(p)) for p in paths}
    finally:
        repo.close()


_ANCESTRY = re.compile(r"(.*?)((?:[~^][0-9]*)*)")


def _resolve(repo: Repo, rev: str) -> Commit:
    """A commit named as git names it: branch, tag, commit id, with ``~N``/``^N`` suffixes."""
    m = _ANCESTRY.fullmatch(rev)
    base, suffix = (m.group(1), m.group(2)) if m else (rev, "")
    try:
        commit = parse_commit(repo, base)
        for op, count in re.findall(r"([~^])([0-9]*)", suffix):
            n = int(count) if count else 1
            # HEAD~3: three first parents back; HEAD^2: the second parent
            for index in [0] * n if op == "~" else [n - 1]:
                if index >= len(commit.parents):
                    raise KeyError(rev)
                parent = repo[commit.parents[index]]
                if not isinstance(parent, Commit):
                    raise KeyError(rev)
                commit = parent
    except (KeyError, ValueError):
        raise VolsegsyncError(f"{rev}: unknown revision (no such branch, tag or commit)") from None
    return commit


def read_at(git_root: Path, rev: str, path: str) -> bytes | None:
    """The content of ``path`` (relative to ``git_root``) at revision ``rev``, or None
    when that commit has no such file."""
    with Repo(os.fspath(git_root)) as repo:
        commit = _resolve(repo, rev)
        return _blob(repo, commit, path)


def _blob(repo: Repo, commit: Commit, path: str) -> bytes | None:
    try:
        _mode, sha = tree_lookup_path(repo.__getitem__, commit.tree, path.encode())
    except KeyError:
        return None
    obj = repo[sha]
    return obj.as_raw_string() if isinstance(obj, Blob) else None


def contents_in_history(git_root: Path, path: str) -> Iterator[bytes]:
    """Every distinct content of ``path`` in the commits reachable from a branch, a tag
    or HEAD (each blob once)."""
    with Repo(os.fspath(git_root)) as repo:
        heads = []
        for ref in sorted(repo.refs.allkeys()):
            if ref == b"HEAD" or ref.startswith((b"refs/heads/", b"refs/tags/")):
                try:
                    heads.append(parse_commit(repo, repo.refs[ref]).id)
                except (KeyError, ValueError):
                    continue  # a tag of a tree or blob, a dangling ref
        if not heads:
            return
        seen: set[bytes] = set()
        for walk in repo.get_walker(include=heads):
            try:
                _mode, sha = tree_lookup_path(repo.__getitem__, walk.commit.tree, path.encode())
            except KeyError:
                continue
            if sha not in seen:
                seen.add(sha)
                obj = repo[sha]
                if isinstance(obj, Blob):
                    yield obj.as_raw_string()


# -- hooks and merges (the hooks helper): git's own state, read the way git reads it ---------


def git_dirs(git_root: Path) -> tuple[Path, Path]:
    """``(git dir, common dir)``: they differ in a linked worktree (hooks and config
    live in the common one)."""
    repo = Repo(os.fspath(git_root))
    try:
        return Path(repo.controldir()), Path(repo.commondir())
    finally:
        repo.close()


def config_value(git_root: Path, section: str, name: str, repo_only: bool = False) -> str | None:
    """A git config value (``section`` may be ``merge.volsegsync``): from the repository's
    config, then the user's and the system's, as git looks it up; ``None`` when unset."""
    repo = Repo(os.fspath(git_root))
    try:
        config = repo.get_config() if repo_only else repo.get_config_stack()
        head, _, sub = section.partition(".")
        key: tuple[bytes, ...] = (head.encode(), sub.encode()) if sub else (head.encode(),)
        try:
            return os.fsdecode(config.get(key, name.encode()))
        except KeyError:
            return None
    finally:
        repo.close()


def _index_file(repo: Repo) -> str:
    """The index git works on: a hook during ``git commit -a`` or ``git commit PATH`` gets
    a temporary one in ``GIT_INDEX_FILE`` (relative to the work tree top, the hook's cwd)."""
    name = os.environ.get("GIT_INDEX_FILE")
    return os.path.abspath(name) if name else repo.index_path()


def _tree_of(repo: Repo, rev: bytes | None) -> ObjectID | None:
    """The root tree of commit ``rev`` (``None`` for no commit, or one that is not here)."""
    if rev is None:
        return None
    try:
        commit = repo[rev]
    except (KeyError, ValueError):
        return None
    return commit.tree if isinstance(commit, Commit) else None


def _head_tree(repo: Repo) -> ObjectID | None:
    try:
        return _tree_of(repo, repo.head())
    except KeyError:  # no commit yet
        return None


def _staged(repo: Repo) -> dict[bytes, bytes | None]:
    """git's index: path -> blob id (``None`` for a path in conflict)."""
    from dulwich.index import Index, IndexEntry

    try:
        index = Index(_index_file(repo))
        return {p: (e.sha if isinstance(e, IndexEntry) else None) for p, e in index.items()}
    except Exception:  # a format dulwich does not read (e.g. a split index): ask git
        return _staged_by_git(repo)


def _staged_by_git(repo: Repo) -> dict[bytes, bytes | None]:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "ls-files", "--stage", "-z"],
            cwd=repo.path, capture_output=True, check=True, timeout=300,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError) as e:
        raise VolsegsyncError(f"{repo.path}: cannot read git's index: {e}") from None
    staged: dict[bytes, bytes | None] = {}
    for record in out.split(b"\0"):
        if record:
            info, _, path = record.partition(b"\t")
            _mode, sha, stage = info.split(b" ")
            staged[path] = sha if stage == b"0" and path not in staged else None
    return staged


def staged_changes(git_root: Path) -> list[str]:
    """Paths (relative to ``git_root``, POSIX) that the next commit adds, modifies or
    deletes: git's index (``GIT_INDEX_FILE`` honoured) against ``HEAD``."""
    from dulwich.object_store import iter_tree_contents

    repo = Repo(os.fspath(git_root))
    try:
        staged = _staged(repo)
        head = {
            e.path: e.sha
            for e in iter_tree_contents(repo.object_store, _head_tree(repo))
            if e.path is not None
        }
        changed = {p for p, sha in staged.items() if sha is None or head.get(p) != sha}
        changed.update(p for p in head if p not in staged)
        return sorted(os.fsdecode(p) for p in changed)
    finally:
        repo.close()


def staged_blob(git_root: Path, path: str) -> bytes | None:
    """The content of ``path`` in git's index (what ``git show :path`` prints), ``None``
    when the index does not hold it (deleted, never added, or in conflict)."""
    repo = Repo(os.fspath(git_root))
    try:
        sha = _staged(repo).get(os.fsencode(path))
        return None if sha is None else repo.object_store[cast("ObjectID", sha)].as_raw_string()
    finally:
        repo.close()


def changed_files(git_root: Path, old: str | None, new: str) -> list[str]:
    """Files added or modified from commit ``old`` to commit ``new`` (every file of
    ``new`` when ``old`` is ``None`` or unknown)."""
    from dulwich.diff_tree import tree_changes

    repo = Repo(os.fspath(git_root))
    try:
        new_tree = _tree_of(repo, new.encode())
        if new_tree is None:
            return []
        old_tree = _tree_of(repo, old.encode() if old else None)
        return sorted(
            os.fsdecode(c.new.path)
            for c in tree_changes(repo.object_store, old_tree, new_tree)
            if c.new is not None and c.new.path is not None
        )
    finally:
        repo.close()


def resolve_ref(git_root: Path, name: str) -> str | None:
    """The commit id that ``HEAD`` or a pseudo-ref such as ``ORIG_HEAD`` names; ``None``
    when it is unset or names no commit here."""
    repo = Repo(os.fspath(git_root))
    try:
        if name == "HEAD":
            try:
                sha: bytes = repo.head()
            except KeyError:
                return None
        else:
            try:  # ORIG_HEAD is a file in the git dir, not a ref under refs/
                sha = (Path(repo.controldir()) / name).read_bytes().strip()
            except OSError:
                return None
        return sha.decode("ascii") if _tree_of(repo, sha) is not None else None
    finally:
        repo.close()
