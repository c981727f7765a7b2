"""``volsegsync push``: send the content store's objects that a remote lacks.

Which objects: those the index records (every volume, every segmentation version,
every detached data file), narrowed to PATHS, or with ``revs``/``all_commits`` those
of other git revisions too. The remote is listed once; only what it lacks moves,
in parallel. An interrupted push leaves no object under its final name with wrong
content, and a re-run sends only what is still missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import NamedTuple

from volsegsync.dataset import INDEX_FILE, Dataset
from volsegsync.errors import VolsegsyncError
from volsegsync.index import DEFAULT_ALGORITHM, Entry, parse_index_bytes
from volsegsync.ops.storing import open_store
from volsegsync.remotes import (
    DEFAULT_JOBS,
    Failure,
    ObjectRef,
    Progress,
    Remote,
    choose_remote,
    open_remote,
    parallel,
)

# called once the totals are known: (files, bytes) -> the per-object progress callback
ProgressFactory = Callable[[int, int], Progress | None]


class TransferReport(NamedTuple):
    remote: str
    url: str
    wanted: int  # distinct objects asked for
    present: int  # already where they should go
    moved: list[ObjectRef]
    bytes_moved: int
    failed: list[Failure]  # tried and failed (network, permission, hash mismatch)
    missing: list[ObjectRef]  # push: not in the local store; fetch: not on the remote
    hashed: frozenset[str] = frozenset()  # fetch: digests this run stored, hashing them
    # fetch: (path, digest) -> the format problem of the first bytes of an object it
    # hashed, for the path it fetched it for (None: the format the name claims)
    sniffed: Mapping[tuple[str, str], str | None] = MappingProxyType({})

    @property
    def ok(self) -> bool:
        return not self.failed and not self.missing


def collect_refs(
    ds: Dataset,
    paths: list[str] | None = None,
    revs: Iterable[str] = (),
    all_commits: bool = False,
) -> list[ObjectRef]:
    """The distinct objects the index (and the index at ``revs``) records, one
    :class:`ObjectRef` per object, named by the first path that records it."""
    sources: list[tuple[str, list[Entry]]] = [(index_algorithm(ds), ds.read_index())]
    if revs or all_commits:
        from volsegsync import history  # dulwich: imported only when needed

        git_root = history.find_git_root(ds.root)
        if git_root is None:
            raise VolsegsyncError(f"{ds.root}: not in a git repository: no other revisions")
        path = (ds.root / INDEX_FILE).relative_to(git_root).as_posix()
        blobs: list[tuple[str, bytes | None]] = [
            (rev, history.read_at(git_root, rev, path)) for rev in revs
        ]
        if all_commits:
            blobs.extend(("history", raw) for raw in history.contents_in_history(git_root, path))
        for where, raw in blobs:
            if raw is not None:
                other = parse_index_bytes(raw, f"{INDEX_FILE} at {where}")
                sources.append((other.algorithm, other.entries))
    wanted = [ds.relpath(p).rstrip("/") for p in paths] if paths else None
    seen: dict[tuple[str, str], ObjectRef] = {}
    for algorithm, entries in sources:
        for entry in entries:
            for rec in entry.records():
                if wanted is not None and not any(
                    w in (".", "") or rec.path == w or rec.path.startswith(w + "/") for w in wanted
                ):
                    continue
                key = (algorithm, rec.digest)
                if key not in seen:
                    seen[key] = ObjectRef(algorithm, rec.digest, rec.size, rec.path)
    return sorted(seen.values(), key=lambda r: r.path)


def index_algorithm(ds: Dataset) -> str:
    """The hash algorithm the index names (its header lines; the entries come from the
    dataset's parse memo)."""
    try:
        with open(ds.index_path, "rb") as f:
            head = b"".join(f.readline(200) for _ in range(2))
    except FileNotFoundError:
        return DEFAULT_ALGORITHM
    return parse_index_bytes(head, str(ds.index_path)).algorithm


def remote_sizes(remote: Remote, refs: list[ObjectRef]) -> dict[ObjectRef, int | None]:
    """The size of each object on the remote (None: absent), from one listing per hash
    algorithm."""
    listings: dict[str, dict[str, int]] = {}
    out: dict[ObjectRef, int | None] = {}
    for ref in refs:
        if ref.algorithm not in listings:
            listings[ref.algorithm] = remote.list_objects(ref.algorithm)
        out[ref] = listings[ref.algorithm].get(ref.digest)
    return out


def run_push(
    ds: Dataset,
    remote_name: str | None = None,
    paths: list[str] | None = None,
    jobs: int | None = None,
    revs: Iterable[str] = (),
    all_commits: bool = False,
    progress: ProgressFactory | None = None,
) -> TransferReport:
    name, spec = choose_remote(ds.config, remote_name)
    remote = open_remote(name, spec, ds.root)
    refs = collect_refs(ds, paths, revs, all_commits)
    store = open_store(ds, create=False)
    sizes = remote_sizes(remote, refs)
    wanted = [r for r in refs if sizes[r] != r.size]  # absent, or damaged: sent again
    held = [store.has(r.algorithm, r.digest) for r in wanted]  # one stat each
    todo = [r for r, h in zip(wanted, held, strict=True) if h]
    missing = [r for r, h in zip(wanted, held, strict=True) if not h]  # nowhere to send from

    def upload(ref: ObjectRef) -> None:
        final = remote.db.object_path(ref.algorithm, ref.digest)
        if sizes[ref] is not None:  # a damaged copy (wrong size) is replaced
            remote.fs.remove(final)
        src = store.fs.local_path(store.object_path(ref.algorithm, ref.digest))
        assert src is not None  # the local store is a folder
        if remote.fs.local:  # a folder: copied by the kernel, hashed as written, renamed
            remote.db.add_copy(src, ref.algorithm, ref.digest, write_back=True, store_object=True)
        else:  # S3: hashed, then one atomic PUT to the final key
            remote.db.add(src, ref.algorithm, ref.digest, links=("reflink",))

    tick = progress(len(todo), sum(r.size for r in todo)) if progress and todo else None
    failed = parallel(jobs or DEFAULT_JOBS, todo, upload, tick)
    remote.fs.flush()
    bad = {f.ref for f in failed}
    moved = [r for r in todo if r not in bad]
    return TransferReport(
        name,
        spec.url,
        len(refs),
        len(refs) - len(wanted),
        moved,
        sum(r.size for r in moved),
        failed,
        missing,
    )
