"""``volsegsync fetch``: fill the local content store from a remote (no working file
changes). Every downloaded object is hashed before it enters the store; one whose
content does not match its name is rejected and reported, the rest goes on."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable
from pathlib import Path

from volsegsync.dataset import Dataset
from volsegsync.magic import sniff
from volsegsync.ops.push import ProgressFactory, TransferReport, collect_refs, remote_sizes
from volsegsync.ops.storing import open_store, store_settings
from volsegsync.remotes import (
    DEFAULT_JOBS,
    HashMismatch,
    ObjectRef,
    Remote,
    choose_remote,
    open_remote,
    parallel,
)
from volsegsync.store import TMP_DIR, Head, ObjectDB, WrongContent


def run_fetch(
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
    store = open_store(ds)
    tmp_dir = store_settings(ds).root / TMP_DIR
    wanted = [r for r in refs if not store.has(r.algorithm, r.digest)]
    sizes = remote_sizes(remote, wanted)
    absent = [r for r in wanted if sizes[r] is None]
    todo = [r for r in wanted if sizes[r] is not None]  # a wrong size is caught by the check
    tick = progress(len(todo), sum(r.size for r in todo)) if progress and todo else None

    hashed: set[str] = set()  # stored by this run, so hashed by it (set.add is atomic)
    sniffed: dict[tuple[str, str], str | None] = {}  # (path, digest) -> its format problem
    if todo and not remote.fs.local:  # downloads land in the store's tmp/
        tmp_dir.mkdir(parents=True, exist_ok=True)

    def move(ref: ObjectRef) -> None:
        heads: list[bytes] = []
        if download_verified(remote, ref, store, tmp_dir, heads.append):
            hashed.add(ref.digest)
            if heads:  # what the checkout of a pull would read from the disk again
                sniffed[(ref.path, ref.digest)] = sniff(ref.path, heads[0])

    failed = parallel(jobs or DEFAULT_JOBS, todo, move, tick)
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
        absent,
        frozenset(hashed),
        sniffed,
    )


def download_verified(
    remote: Remote, ref: ObjectRef, store: ObjectDB, tmp_dir: Path, head: Head | None = None
) -> bool:
    """Bring one object into the store, hashing what was written before it gets its
    name: content that does not match its name is rejected (:class:`HashMismatch`).

    A folder remote's object is copied by the kernel straight into a temporary name
    of the store (one write, one read back from the page cache to hash it); other
    backends download into the store's ``tmp/``, which the store hard-links and hashes
    in place (:meth:`~volsegsync.store.ObjectDB.add_download`).
    False when the object reached the store meanwhile (another run stored it).
    ``head``: told the first bytes of a folder remote's object, read anyway."""
    source = remote.fs.local_file(remote.db.object_path(ref.algorithm, ref.digest))
    try:
        if source is not None:
            return store.add_copy(source, ref.algorithm, ref.digest, head=head)
        tmp = tmp_dir / f"fetch-{uuid.uuid4().hex}"
        try:
            remote.fs.get_file(remote.db.object_path(ref.algorithm, ref.digest), tmp)
            return store.add_download(tmp, ref.algorithm, ref.digest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    except WrongContent as e:
        raise HashMismatch(
            f"content on the remote does not match its name (it hashes to {e.found}): rejected"
        ) from None
