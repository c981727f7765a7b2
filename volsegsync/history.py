"""Git, through dulwich: the only module that imports it.

Finds the repository that holds a dataset, creates one, tells whether git
ignores a path, and reads the dataset's history: the index blob at a revision
(branch, tag, commit id, ``HEAD~3``, ``main^2``) and the commits that changed
it (:meth:`GitHistory.walk`). No git binary is needed. What the index *means*
is decided elsewhere (:mod:`volsegsync.index`, :mod:`volsegsync.changes`); this
module hands out commits, paths and blobs.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, NamedTuple, cast

from dulwich import porcelain
from dulwich.errors import NotGitRepository
from dulwich.ignore import IgnoreFilterManager
from dulwich.objects import Blob, Commit, Tree
from dulwich.objectspec import AmbiguousShortId, parse_commit
from dulwich.repo import Repo

from volsegsync.errors import VolsegsyncError

if TYPE_CHECKING:
    from dulwich.objects import ObjectID

#: an index blob larger than this is refused rather than loaded (memory stays bounded)
MAX_INDEX_BLOB = 1 << 30
_SUFFIX = re.compile(r"([~^])(\d*)")


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


class CommitInfo(NamedTuple):
    id: str  # full hex id
    parents: tuple[str, ...]
    author: str  # "Name <email>"
    time: int  # author time, seconds since the epoch
    tz: int  # author time zone, seconds east of UTC
    subject: str  # first line of the message

    @property
    def short(self) -> str:
        return self.id[:7]


class Step(NamedTuple):
    """One commit that changed the dataset's index, with what to compare it against."""

    commit: CommitInfo
    path: str  # the index's path in the repository at this commit
    blob: str | None  # its blob id there (None: the commit deleted the index)
    parents: tuple[tuple[str, str | None], ...]  # per parent: (index path, blob id or None)
    shallow: bool  # the parents lie beyond a shallow clone's boundary: unknown


class GitHistory:
    """The git history of one dataset's index. Use as a context manager."""

    def __init__(self, dataset_root: Path, index_name: str = "volsegsync.index") -> None:
        try:
            self.repo = Repo.discover(os.fspath(dataset_root))
        except NotGitRepository:
            raise VolsegsyncError(
                f"{dataset_root}: not in a git repository; the index's history lives in git "
                "(run 'git init' or 'volsegsync init --git')"
            ) from None
        self.root = Path(self.repo.path).resolve()
        rel = Path(os.path.abspath(dataset_root)).resolve().relative_to(self.root)
        self.path = (rel / index_name).as_posix() if rel.parts else index_name
        self._shallow = {c.decode("ascii") for c in self.repo.get_shallow()}

    @property
    def shallow_key(self) -> str:
        """Where a shallow clone's history ends ("" for a full clone)."""
        return ",".join(sorted(self._shallow))

    def __enter__(self) -> GitHistory:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.repo.close()

    # -- revisions -----------------------------------------------------------------------

    def head(self) -> str:
        """HEAD's commit id; a clear error when there is no commit yet."""
        try:
            return self.repo.head().decode("ascii")
        except KeyError:
            raise VolsegsyncError(
                f"{self.root}: the repository has no commits yet; commit the index first "
                "(git add volsegsync.index && git commit)"
            ) from None

    def resolve(self, rev: str) -> str:
        """A commit id for a branch, tag, (short) commit id, ``HEAD``, ``REV~N``, ``REV^N``."""
        if rev in ("HEAD", "@"):
            return self.head()
        m = _SUFFIX.search(rev)
        base, suffix = (rev[: m.start()], rev[m.start() :]) if m else (rev, "")
        if not base or "\0" in rev or _SUFFIX.sub("", suffix):
            raise VolsegsyncError(f"{rev}: not a revision")
        commit = self._commit_of(base, rev)
        for op, number in _SUFFIX.findall(suffix):
            n = int(number) if number else 1
            if op == "~":
                for _ in range(n):
                    commit = self._parent(commit, 1, rev)
            elif n:
                commit = self._parent(commit, n, rev)
        return commit.id.decode("ascii")

    def _commit_of(self, base: str, rev: str) -> Commit:
        if base in ("HEAD", "@"):
            base = self.head()
        try:
            return parse_commit(self.repo, base.encode("utf-8"))
        except AmbiguousShortId:
            raise VolsegsyncError(f"{rev}: ambiguous short commit id") from None
        except (KeyError, ValueError):
            pass
        if self._no_commits():
            self.head()  # raises the "no commits yet" error
        raise VolsegsyncError(f"{rev}: unknown revision (no such branch, tag or commit)")

    def _no_commits(self) -> bool:
        try:
            self.repo.head()
        except KeyError:
            return True
        return False

    def _parent(self, commit: Commit, n: int, rev: str) -> Commit:
        if commit.id.decode("ascii") in self._shallow:
            raise VolsegsyncError(
                f"{rev}: beyond the history of this shallow clone (git fetch --unshallow)"
            )
        if n > len(commit.parents):
            raise VolsegsyncError(f"{rev}: {commit.id.decode()[:7]} has no parent {n}")
        parent = self.repo[commit.parents[n - 1]]
        assert isinstance(parent, Commit)
        return parent

    def parse_range(self, spec: str) -> tuple[list[str], list[str]]:
        """``A..B`` (B not given: HEAD) or a single revision: (include, exclude) commit ids."""
        if ".." in spec:
            a, _, b = spec.partition("..")
            if b.startswith("."):
                raise VolsegsyncError(f"{spec}: symmetric ranges (A...B) are not supported")
            return [self.resolve(b or "HEAD")], [self.resolve(a or "HEAD")]
        return [self.resolve(spec)], []

    def info(self, commit_id: str) -> CommitInfo:
        commit = self.repo[_oid(commit_id)]
        assert isinstance(commit, Commit)
        return _info(commit)

    # -- blobs ---------------------------------------------------------------------------

    def blob_id(self, commit_id: str, path: str) -> str | None:
        """The blob id of ``path`` at a commit, None when it is absent (or not a file)."""
        commit = self.repo[_oid(commit_id)]
        assert isinstance(commit, Commit)
        return self._lookup(commit.tree, path)

    def _lookup(self, tree_id: bytes, path: str) -> str | None:
        obj = self.repo.object_store[_id(tree_id)]
        parts = os.fsencode(path).split(b"/")
        for i, part in enumerate(parts):
            if not isinstance(obj, Tree) or part not in obj:
                return None
            mode, sha = obj[part]
            if i < len(parts) - 1:
                if not stat.S_ISDIR(mode):
                    return None
                obj = self.repo.object_store[sha]
            elif not stat.S_ISREG(mode):
                return None  # a symlink or submodule named like the index: not an index
            else:
                return sha.decode("ascii")
        return None

    def blob(self, blob_id: str) -> bytes:
        store = self.repo.object_store
        type_num, raw = store.get_raw(_oid(blob_id))
        if type_num != Blob.type_num:
            raise VolsegsyncError(f"{blob_id}: not a file in git")
        if len(raw) > MAX_INDEX_BLOB:
            raise VolsegsyncError(f"{self.path}: the index in git is too large ({len(raw)} bytes)")
        return raw

    def index_text(self, rev: str) -> str | None:
        """The index as committed at ``rev`` (None when that commit has no index here)."""
        blob = self.blob_id(self.resolve(rev), self.path)
        if blob is None:
            return None
        return decode_index(self.blob(blob), f"{rev}:{self.path}")

    # -- history -------------------------------------------------------------------------

    def walk(
        self,
        include: Sequence[str],
        exclude: Sequence[str] = (),
        since: int | None = None,
        limit: int | None = None,
    ) -> Iterator[Step]:
        """Commits that changed the index, newest first (reachable from ``include``, not from
        ``exclude``). A merge is listed only when its index differs from every parent's.
        Where a commit moved the dataset folder, the walk goes on under the old path."""
        seen: set[str] = set()
        todo: list[tuple[list[str], str]] = [(list(include), self.path)]
        count = 0
        while todo:
            heads, path = todo.pop(0)
            walker = self.repo.get_walker(
                include=[_oid(h) for h in heads],
                exclude=[_oid(e) for e in exclude],
                paths=[os.fsencode(path)],
                since=since,
            )  # shallow commits have no parents here (dulwich reads .git/shallow)
            for entry in walker:
                commit = entry.commit
                cid = commit.id.decode("ascii")
                if cid in seen:
                    continue
                seen.add(cid)
                step = self._step(commit, path)
                if step is None:
                    continue
                moved = [p for p, b in step.parents if p != path and b is not None]
                if moved:  # the dataset folder was renamed here: follow the old path
                    todo.append(([c for c in step.commit.parents], moved[0]))
                yield step
                count += 1
                if limit is not None and count >= limit:
                    return

    def _step(self, commit: Commit, path: str) -> Step | None:
        info = _info(commit)
        shallow = info.id in self._shallow
        blob = self._lookup(commit.tree, path)
        parents: list[tuple[str, str | None]] = []
        for pid in () if shallow else commit.parents:
            parent = self.repo[pid]
            assert isinstance(parent, Commit)
            old = self._lookup(parent.tree, path)
            if old is None and blob is not None and len(commit.parents) == 1:
                found = self._moved_from(parent.tree, commit.tree, blob)
                if found is not None:
                    parents.append(found)
                    continue
            parents.append((path, old))
        if not shallow and parents and all(b == blob and p == path for p, b in parents):
            return None  # no change to the index itself (e.g. a merge that took one side)
        return Step(info, path, blob, tuple(parents), shallow)

    def _moved_from(self, old_tree: bytes, new_tree: bytes, blob: str) -> tuple[str, str] | None:
        """Where the index was before a commit that added it: a path in ``old_tree`` named
        like the index that this commit removed, the same blob preferred."""
        name = os.fsencode(self.path.rsplit("/", 1)[-1])
        candidates: list[tuple[str, str]] = []
        for entry in self.repo.object_store.iter_tree_contents(_id(old_tree)):
            if entry.path is None or entry.sha is None or entry.mode is None:
                continue
            if entry.path.rsplit(b"/", 1)[-1] != name or not stat.S_ISREG(entry.mode):
                continue
            path = os.fsdecode(entry.path)
            if self._lookup(new_tree, path) is None:
                candidates.append((path, entry.sha.decode("ascii")))
        same = [c for c in candidates if c[1] == blob]
        if same:
            return same[0]
        return candidates[0] if len(candidates) == 1 else None


def _oid(hex_id: str) -> ObjectID:
    return _id(hex_id.encode("ascii"))


def _id(raw: bytes) -> ObjectID:
    """Bytes as dulwich's object id type (a typing-only distinction of newer dulwich)."""
    return cast("ObjectID", raw)


def decode_index(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise VolsegsyncError(f"{name}: not valid UTF-8 (byte {e.start})") from None


def _info(commit: Commit) -> CommitInfo:
    message = commit.message.decode("utf-8", "replace")
    return CommitInfo(
        commit.id.decode("ascii"),
        tuple(p.decode("ascii") for p in commit.parents),
        commit.author.decode("utf-8", "replace"),
        commit.author_time,
        commit.author_timezone,
        message.split("\n", 1)[0].strip(),
    )


__all__ = [
    "CommitInfo",
    "GitHistory",
    "Step",
    "decode_index",
    "find_git_root",
    "ignored",
    "init_git",
]
