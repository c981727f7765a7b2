"""``volsegsync fetch``: fill the local content store from a remote (no working file
changes). Every downloaded object is hashed before it enters the store; one whose
content does not match its name is rejected and reported, the rest goes on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path

from volsegsync.dataset import Dataset
from volsegsync.hashing import new_hasher
from volsegsync.ops.push import ProgressFactory, TransferReport, collect_refs, remote_sizes
from volsegsync.remotes import (
    DEFAULT_JOBS,
    HashMismatch,
    ObjectRef,
    Remote,
    choose_remote,
    local_store,
    open_remote,
    parallel,
)

CHUNK = 1 << 20


def file_digest(path: Path, algorithm: str) -> tuple[str, int]:
    h = new_hasher(algorithm)
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return str(h.hexdigest()), size


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
    store = local_store(ds)
    wanted = [r for r in refs if not store.has(r.algorithm, r.digest)]
    sizes = remote_sizes(remote, wanted)
    absent = [r for r in wanted if sizes[r] is None]
    todo = [r for r in wanted if sizes[r] is not None]  # a wrong size is caught by the check
    tick = progress(len(todo), sum(r.size for r in todo)) if progress and todo else None

    def move(ref: ObjectRef) -> None:
        download_verified(remote, ref, store)

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
    )


def download_verified(remote: Remote, ref: ObjectRef, store: object) -> None:
    from volsegsync.remotes import LocalStore

    assert isinstance(store, LocalStore)
    tmp = store.temp_path()
    try:
        remote.download(ref, tmp)
        digest, size = file_digest(tmp, ref.algorithm)
        if digest != ref.digest or size != ref.size:
            raise HashMismatch(
                f"content on the remote does not match its name: {ref.algorithm} {digest}, "
                f"{size} bytes; rejected"
            )
        store.add_verified(tmp, ref.algorithm, ref.digest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
