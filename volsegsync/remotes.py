"""Remotes: a copy of the content store in a folder or an S3-compatible bucket.

One code path for every backend: an fsspec filesystem (``file`` for folders,
``s3`` through s3fs for AWS S3, MinIO, Ceph) under a root, holding objects at the
same keys as the local store, ``ALGO/ab/cdef...``. What each side lacks is found
with one recursive listing of the remote (S3: one ListObjectsV2 page per 1,000
keys), never one request per object. Transfers run in parallel threads.

Crash safety: on a folder an object is written under a temporary name in its
shard folder and renamed when complete (a rename is atomic). On S3 an upload goes
straight to its final key: a PUT (and a multipart upload's completion) is atomic,
a reader sees the whole object or none, and S3 has no atomic rename anyway (copy
and delete would add a second, non-atomic step). Every downloaded object is hashed
before it enters the local store.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from volsegsync.config import Config, RemoteConfig
from volsegsync.dataset import Dataset
from volsegsync.errors import VolsegsyncError

S3_EXTRA = "pip install 'volsegsync[s3]'"
TMP_MARK = ".tmp-"  # temporary names of uploads in progress on a folder remote
_HEX = re.compile(r"[0-9a-f]{8,128}")

# (files done, bytes done): called from worker threads, under a lock
Progress = Callable[[int, int], None]


class RemoteError(VolsegsyncError):
    """A remote cannot be reached or listed (exit 1: nothing is wrong with the usage)."""

    exit_code = 1


class HashMismatch(Exception):
    """A downloaded object whose content is not what its name says."""


class ObjectRef(NamedTuple):
    """An object to move: its store key parts, size, and one path that records it."""

    algorithm: str
    digest: str
    size: int
    path: str


class Failure(NamedTuple):
    ref: ObjectRef
    reason: str


def choose_remote(config: Config, name: str | None) -> tuple[str, RemoteConfig]:
    """The remote ``name``, or the default one (``[core] remote``)."""
    if name is None:
        name = config.default_remote
        if name is None:
            if len(config.remotes) == 1:
                name = next(iter(config.remotes))
            else:
                raise VolsegsyncError(
                    "no default remote: pass --remote NAME, or set one with "
                    "'volsegsync remote add NAME URL --default'"
                )
    spec = config.remotes.get(name)
    if spec is None:
        known = ", ".join(sorted(config.remotes)) or "none"
        raise VolsegsyncError(f"no remote named {name!r} (known: {known})")
    return name, spec


class Remote:
    """An object store on a remote filesystem: list, upload, download, delete."""

    def __init__(self, name: str, url: str, fs: Any, root: str, atomic_put: bool) -> None:
        self.name = name
        self.url = url
        self.fs = fs
        self.root = root.rstrip("/")
        self.atomic_put = atomic_put  # S3: a PUT is atomic, no temporary name needed
        self._made: set[str] = set()
        self._made_lock = threading.Lock()

    # -- keys ----------------------------------------------------------------------------

    def key(self, algorithm: str, digest: str) -> str:
        return f"{self.root}/{algorithm}/{digest[:2]}/{digest[2:]}"

    def where(self, ref: ObjectRef) -> str:
        """How a message names an object: its key and a path that records it."""
        return f"{ref.algorithm}/{ref.digest[:2]}/{ref.digest[2:]} ({ref.path})"

    # -- listing -------------------------------------------------------------------------

    def list_objects(self, algorithm: str) -> dict[str, int]:
        """``digest -> size`` of every complete object of ``algorithm``: one recursive
        listing. Temporary names of interrupted uploads are left out."""
        base = f"{self.root}/{algorithm}"
        try:
            # S3: one flat listing; a folder: a walk that must not skip unreadable shards
            strict = {} if self.atomic_put else {"on_error": "raise"}
            found = self.fs.find(base, detail=True, **strict)
        except FileNotFoundError:
            return {}
        except Exception as e:  # the backend's own errors: credentials, network, ...
            raise RemoteError(f"remote {self.name} ({self.url}): cannot list: {_reason(e)}") from e
        out: dict[str, int] = {}
        prefix = self.fs._strip_protocol(base).rstrip("/") + "/"
        for name, info in found.items():
            rel = name[len(prefix) :] if name.startswith(prefix) else ""
            shard, _, rest = rel.partition("/")
            digest = shard + rest
            if len(shard) == 2 and "/" not in rest and _HEX.fullmatch(digest):
                out[digest] = int(info.get("size") or 0)
        return out

    def temporaries(self, algorithm: str) -> list[str]:
        """Leftovers of interrupted uploads on a folder remote."""
        base = f"{self.root}/{algorithm}"
        try:
            names: list[str] = self.fs.find(base)
        except (FileNotFoundError, OSError):
            return []
        return [n for n in names if TMP_MARK in n.rsplit("/", 1)[-1]]

    # -- transfers -----------------------------------------------------------------------

    def upload(self, local: Path, ref: ObjectRef) -> None:
        final = self.key(ref.algorithm, ref.digest)
        if self.atomic_put:
            self.fs.put_file(str(local), final)
            return
        parent = final.rsplit("/", 1)[0]
        with self._made_lock:
            made = parent in self._made
        if not made:
            self.fs.makedirs(parent, exist_ok=True)
            with self._made_lock:
                self._made.add(parent)
        tmp = f"{final}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            self.fs.put_file(str(local), tmp)
            self.fs.mv(tmp, final)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm_file(tmp)
            raise

    def download(self, ref: ObjectRef, dest: Path) -> None:
        self.fs.get_file(self.key(ref.algorithm, ref.digest), str(dest))

    def delete(self, keys: list[str]) -> None:
        if keys:
            self.fs.rm(keys)


class LocalStore:
    """The local content store as transfers see it (until store.ObjectDB is merged)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, algorithm: str, digest: str) -> Path:
        return self.root / algorithm / digest[:2] / digest[2:]

    def has(self, algorithm: str, digest: str) -> bool:
        return self.path(algorithm, digest).is_file()

    def temp_path(self) -> Path:
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / f"fetch-{os.getpid()}-{secrets.token_hex(8)}"

    def add_verified(self, tmp: Path, algorithm: str, digest: str) -> None:
        final = self.path(algorithm, digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o444)
        os.replace(tmp, final)


def local_store(ds: Dataset) -> LocalStore:
    return LocalStore(ds.meta_dir / "cache")


def open_remote(name: str, spec: RemoteConfig, dataset_root: Path) -> Remote:
    """The fsspec filesystem of a remote; a missing optional backend is one line naming
    the extra that installs it."""
    url = spec.url
    scheme = url.split("://", 1)[0].lower() if "://" in url else "file"
    if scheme == "s3":
        try:
            import s3fs
        except ImportError:
            raise VolsegsyncError(
                f"remote {name} ({url}): the S3 backend is not installed: {S3_EXTRA}"
            ) from None
        endpoint = spec.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
        return Remote(name, url, fs, url.split("://", 1)[1], atomic_put=True)
    import fsspec

    path = url.split("://", 1)[1] if "://" in url else url
    if path.startswith("localhost/"):
        path = path[len("localhost") :]
    root = Path(path) if os.path.isabs(path) else dataset_root / path
    fs = fsspec.filesystem("file")
    return Remote(name, url, fs, os.path.abspath(root), atomic_put=False)


def parallel(
    jobs: int,
    refs: Iterable[ObjectRef],
    move: Callable[[ObjectRef], None],
    progress: Progress | None = None,
) -> list[Failure]:
    """Run ``move`` on each object in ``jobs`` threads; the failures, with their reasons
    (the rest goes on)."""
    failures: list[Failure] = []
    lock = threading.Lock()
    done = [0, 0]

    def one(ref: ObjectRef) -> None:
        try:
            move(ref)
        except Exception as e:
            with lock:
                failures.append(Failure(ref, _reason(e)))
            return
        if progress:
            with lock:
                done[0] += 1
                done[1] += ref.size
                progress(done[0], done[1])

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for _ in pool.map(one, refs):
            pass
    failures.sort(key=lambda f: f.ref.path)
    return failures


def _reason(e: BaseException) -> str:
    if isinstance(e, HashMismatch):
        return str(e)
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


DEFAULT_JOBS = 8  # transfers are I/O bound: more threads than cores
