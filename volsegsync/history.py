"""Git, through dulwich: the only module that imports it.

Finds the repository that holds a dataset, creates one, tells whether git
ignores a path, reads git's own state for the hooks, and reads the dataset's
history: a file at a revision (branch, tag, commit id, ``HEAD~3``, ``main^2``)
and the commits that changed the index (:meth:`GitHistory.walk`). No git
binary is needed. What the index *means* is decided elsewhere
(:mod:`volsegsync.index`, :mod:`volsegsync.changes`); this module hands out
commits, paths and blobs.
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
from dulwich.object_store import tree_lookup_path
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


def _resolve(repo: Repo, rev: str) -> Commit:
    """A commit named as git names it: ``HEAD``, a branch, tag or (short) commit id, with
    ``~N`` (N first parents back) and ``^N`` (the Nth parent) suffixes."""
    m = _SUFFIX.search(rev)
    base, suffix = (rev[: m.start()], rev[m.start() :]) if m else (rev, "")
    if not base or "\0" in rev or _SUFFIX.sub("", suffix):
        raise VolsegsyncError(f"{rev}: not a revision")
    try:
        commit = parse_commit(repo, ("HEAD" if base == "@" else base).encode("utf-8"))
    except AmbiguousShortId:
        raise VolsegsyncError(f"{rev}: ambiguous short commit id") from None
    except (KeyError, ValueError):
        why = "no such branch, tag or commit"
        try:
            repo.head()
        except KeyError:
            why = "the repository has no commits yet"
        raise VolsegsyncError(f"{rev}: unknown revision ({why})") from None
    shallow = repo.get_shallow()
    for op, number in _SUFFIX.findall(suffix):
        n = int(number) if number else 1
        for index in [1] * n if op == "~" else ([n] if n else []):
            if commit.id in shallow:
                raise VolsegsyncError(
                    f"{rev}: beyond the history of this shallow clone (git fetch --unshallow)"
                )
            if index > len(commit.parents):
                raise VolsegsyncError(f"{rev}: {commit.id.decode()[:7]} has no parent {index}")
            parent = repo[commit.parents[index - 1]]
            if not isinstance(parent, Commit):
                raise VolsegsyncError(f"{rev}: unknown revision (not a commit)")
            commit = parent
    return commit


def _head(repo: Repo) -> str:
    """HEAD's commit id; a clear error when there is no commit yet."""
    try:
        return repo.head().decode("ascii")
    except KeyError:
        raise VolsegsyncError(
            f"{repo.path}: the repository has no commits yet; commit the index first "
            "(git add volsegsync.index && git commit)"
        ) from None


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


def contents_in_history(
    git_root: Path, path: str, remote_branches: bool = False
) -> Iterator[bytes]:
    """Every distinct content of ``path`` in the commits reachable from a branch, a tag
    or HEAD (each blob once); with ``remote_branches``, from remote-tracking branches too."""
    kinds = (b"refs/heads/", b"refs/tags/") + ((b"refs/remotes/",) if remote_branches else ())
    with Repo(os.fspath(git_root)) as repo:
        heads = []
        for ref in sorted(repo.refs.allkeys()):
            if ref == b"HEAD" or ref.startswith(kinds):
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


# -- the index's history (log, diff, verify --rev) ------------------------------------


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
        return _head(self.repo)

    def resolve(self, rev: str) -> str:
        """A commit id for a branch, tag, (short) commit id, ``HEAD``, ``REV~N``, ``REV^N``."""
        return _resolve(self.repo, rev).id.decode("ascii")

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
