"""Git, through dulwich: the only module that imports it.

Today: find the repository that holds a dataset, create one, tell whether git
ignores a path. The history of segmentation versions (``log``, ``checkout``)
plugs in here.
"""

from __future__ import annotations

import os
from pathlib import Path

from dulwich import porcelain
from dulwich.errors import NotGitRepository
from dulwich.ignore import IgnoreFilterManager
from dulwich.object_store import tree_lookup_path
from dulwich.objects import ObjectID
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


def index_blobs(
    dataset_root: Path, index_name: str, revs: list[str], all_commits: bool
) -> list[tuple[str, bytes]]:
    """The index file's content at each revision in ``revs`` (branch, tag, commit id,
    ``HEAD~3``) and, with ``all_commits``, at every commit reachable from a branch or tag:
    ``(where, raw bytes)``, each distinct content once."""
    from dulwich.objectspec import parse_commit

    repo = Repo.discover(os.fspath(dataset_root))
    try:
        prefix = Path(os.path.abspath(dataset_root)).relative_to(Path(repo.path).resolve())
        path = (prefix / index_name).as_posix().removeprefix("./").encode()
        commits: list[tuple[str, bytes]] = []  # (where, tree id)
        for rev in revs:
            try:
                commits.append((rev, parse_commit(repo, rev.encode()).tree))
            except (KeyError, ValueError) as e:
                raise VolsegsyncError(f"--revs {rev}: not a git revision ({e})") from None
        if all_commits:
            heads = [
                sha
                for ref, sha in repo.get_refs().items()
                if ref.startswith((b"refs/heads/", b"refs/tags/")) or ref == b"HEAD"
            ]
            heads = [h for h in heads if h in repo]
            if heads:
                for walk in repo.get_walker(include=list(set(heads))):
                    commits.append((walk.commit.id.decode()[:12], walk.commit.tree))
        seen: set[bytes] = set()
        out: list[tuple[str, bytes]] = []
        for where, tree in commits:
            try:
                _mode, blob_id = tree_lookup_path(repo.__getitem__, ObjectID(tree), path)
            except KeyError:
                continue
            if blob_id not in seen:
                seen.add(blob_id)
                out.append((f"{index_name} at {where}", repo[blob_id].as_raw_string()))
        return out
    finally:
        repo.close()
