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

from dulwich import porcelain
from dulwich.errors import NotGitRepository
from dulwich.ignore import IgnoreFilterManager
from dulwich.object_store import tree_lookup_path
from dulwich.objects import Blob, Commit
from dulwich.objectspec import parse_commit
from dulwich.repo import Repo

from volsegsync.errors import VolsegsyncError


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
