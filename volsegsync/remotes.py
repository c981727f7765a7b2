"""Remotes: a copy of the content store in a folder or an S3-compatible bucket.

A remote is the same :class:`~volsegsync.store.ObjectDB` as the local store, over
:class:`FsspecFS`, an adapter of an fsspec filesystem (``file`` for folders, ``s3``
through s3fs for AWS S3, MinIO, Ceph): one code path for every backend, objects at
the same keys, ``ALGO/ab/cdef...``. What each side lacks is found with one
recursive listing of the remote (S3: one ListObjectsV2 page per 1,000 keys), never
one request per object. Transfers run in parallel threads.

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
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, cast
from urllib.parse import urlsplit

from volsegsync.config import Config, RemoteConfig
from volsegsync.errors import VolsegsyncError
from volsegsync.fsutil import open_regular
from volsegsync.store import TMP_DIR, ObjectDB, ObjectProblem

S3_EXTRA = "pip install 'volsegsync[s3]'"
SSH_EXTRA = "pip install 'volsegsync[ssh]'"
SSH_CONNECT_TIMEOUT = 30  # seconds: an unreachable host is an error, not a hang
# No CRC32 of every upload and download by the client library (nor by the server, which is
# then not asked for one): every object is hashed by volsegsync itself (xxh3/sha256/blake3)
# before it enters a store or leaves one, and SigV4 signs the payload over plain HTTP.
S3_CLIENT_CONFIG = {
    "request_checksum_calculation": "when_required",
    "response_checksum_validation": "when_required",
}

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


class FsspecFS:
    """The store's :class:`~volsegsync.store.FileSystem` over an fsspec filesystem, so
    that a remote is the same :class:`ObjectDB` as the local store.

    Uploading: ``ObjectDB.add`` first "links" the local object to a temporary name
    (:meth:`link_from_local` only notes which local file it stands for), hashes it
    through :meth:`open_read` (a damaged local object is never sent), then renames it
    to its final name: :meth:`rename` is where the bytes move. On a folder they are
    copied to the temporary name in the remote's ``tmp/``, then renamed (atomic on
    one filesystem). On S3 they go straight to the final key: S3 has no rename (copy
    then delete would be a second step, not atomic either, and twice the requests),
    but a PUT, like the completion of a multipart upload, is atomic: the object
    appears whole or not at all.

    ``exists`` answers from the listing once a prefix was listed (:meth:`walk`), so a
    push costs one listing plus the requests of the objects sent, not one per object.
    """

    def __init__(self, fs: Any, root: str, atomic_put: bool) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.atomic_put = atomic_put
        self._lock = threading.Lock()
        self._staged: dict[str, Path] = {}  # S3: temporary name -> the local file it stands for
        self._written: set[str] = set()  # temporaries written by open_new, not yet renamed
        self._listed: list[str] = []  # prefixes whose listing is known
        self._present: set[str] = set()
        self._made: set[str] = set()
        self._dirty = False  # a folder remote got objects not yet synced to disk
        # fsspec's local filesystem (not SFTP, not S3): bytes move with the kernel's
        # copy, names with os.replace, and a push ends with one sync of the disk
        self.local = bool(getattr(fs, "local_file", False)) and not atomic_put

    def _full(self, path: str) -> str:
        return f"{self.root}/{path}" if path else self.root

    def exists(self, path: str) -> bool:
        with self._lock:
            if path in self._staged or path in self._written:
                return True
            if path.startswith(f"{TMP_DIR}/"):
                return False  # a temporary of this run is staged or written, nothing else
            if any(path.startswith(prefix) for prefix in self._listed):
                return path in self._present
        if self.local:
            return os.path.exists(self._full(path))
        return bool(self.fs.exists(self._full(path)))

    def open_read(self, path: str) -> BinaryIO:
        with self._lock:
            local = self._staged.get(path)
        if local is not None:
            return open_regular(local)
        return cast(BinaryIO, self.fs.open(self._full(path), "rb"))

    def open_new(self, path: str) -> BinaryIO:
        self._makedirs(self._full(path).rsplit("/", 1)[0])
        with self._lock:
            self._written.add(path)
        return cast(BinaryIO, self.fs.open(self._full(path), "wb"))

    def rename(self, src: str, dst: str) -> None:
        with self._lock:
            local = self._staged.pop(src, None)
        final = self._full(dst)
        if local is not None and self.atomic_put:
            self.fs.put_file(str(local), final)  # S3: one atomic PUT to the final key
        else:
            if local is not None:  # a folder: the bytes go to the temporary name first
                self._makedirs(self._full(src).rsplit("/", 1)[0])
                self.fs.put_file(str(local), self._full(src))
            self._makedirs(final.rsplit("/", 1)[0])
            if self.local:
                os.replace(self._full(src), final)  # atomic; no fsspec bookkeeping
            else:
                self.fs.mv(self._full(src), final)  # SFTP: posix-rename
            self._dirty = self.local
        with self._lock:
            self._written.discard(src)
            self._present.add(dst)

    def remove(self, path: str) -> None:
        with self._lock:
            if self._staged.pop(path, None) is not None:
                return
            self._written.discard(path)
            self._present.discard(path)
        with contextlib.suppress(FileNotFoundError):
            if self.local:
                os.unlink(self._full(path))
            else:
                self.fs.rm_file(self._full(path))

    def walk(self, path: str) -> Iterator[tuple[str, int, float]]:
        """Every file below ``path`` with size and mtime: one recursive listing (S3: one
        request per 1,000 keys). On a folder an unreadable shard is an error, not skipped."""
        out = _scan_folder(self._full(path), path) if self.local else self._find(path)
        with self._lock:
            self._listed.append(path.rstrip("/") + "/")
            self._present.update(rel for rel, _s, _m in out)
        return iter(out)

    def _find(self, path: str) -> list[tuple[str, int, float]]:
        strict = {} if self.atomic_put else {"on_error": "raise"}
        try:
            found = self.fs.find(self._full(path), detail=True, **strict)
        except FileNotFoundError:
            found = {}
        prefix = self.fs._strip_protocol(self._full(path)).rstrip("/") + "/"
        out = []
        for name, info in found.items():
            if name.startswith(prefix):
                rest = name[len(prefix) :]
                out.append(
                    (f"{path}/{rest}" if path else rest, int(info.get("size") or 0), _mtime(info))
                )
        return out

    def get_file(self, path: str, dest: Path) -> None:
        """Download ``path`` to the local file ``dest`` (streamed by the backend)."""
        self.fs.get_file(self._full(path), str(dest))

    def seal(self, path: str) -> None:
        """Remote objects are protected by the remote's permissions, not by mode bits."""

    def link_from_local(self, src: Path, dst: str, kind: str) -> bool:
        with self._lock:
            self._staged[dst] = src
        return True

    def flush(self) -> None:
        """Make a folder remote's new objects durable: one ``sync`` after a push instead
        of an ``fsync`` per object (the objects' names were atomic already; a torn
        object after a power failure would fail the hash check of every reader)."""
        if self._dirty:
            os.sync()
            self._dirty = False

    def local_path(self, path: str) -> Path | None:
        return None  # never link a remote's file into the local store

    def local_file(self, path: str) -> Path | None:
        """A folder remote's file, to copy bytes from or into (never to link): a
        temporary handed out here is one of this run's (removed if it fails)."""
        if not self.local:
            return None
        if path.startswith(f"{TMP_DIR}/"):
            with self._lock:
                self._written.add(path)
        return Path(self._full(path))

    def _makedirs(self, folder: str) -> None:
        if self.atomic_put:
            return  # object stores have no folders
        with self._lock:
            if folder in self._made:
                return
        if self.local:
            os.makedirs(folder, exist_ok=True)
        else:
            self.fs.makedirs(folder, exist_ok=True)
        with self._lock:
            self._made.add(folder)


def _scan_folder(base: str, rel: str) -> list[tuple[str, int, float]]:
    """Every entry below the folder ``base`` that is not a folder, with its own size and
    mtime (a symbolic link or a FIFO is listed as itself, never followed: fetching it is
    then refused by name): ``os.scandir``, about four times cheaper than fsspec's
    ``find`` (0.17 s against 0.73 s for 10,000 objects, under cProfile). An unreadable
    folder is an error."""
    out: list[tuple[str, int, float]] = []
    stack = [(base, rel)]
    while stack:
        folder, name = stack.pop()
        try:
            entries = os.scandir(folder)
        except FileNotFoundError:
            if folder == base:
                return []
            raise
        with entries:
            for e in entries:
                child = f"{name}/{e.name}" if name else e.name
                if e.is_dir(follow_symlinks=False):
                    stack.append((e.path, child))
                else:
                    st = e.stat(follow_symlinks=False)
                    out.append((child, st.st_size, st.st_mtime))
    return out


def _mtime(info: dict[str, Any]) -> float:
    value = info.get("mtime", info.get("LastModified", 0))
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


class Remote(NamedTuple):
    name: str
    url: str
    db: ObjectDB
    fs: FsspecFS

    def list_objects(self, algorithm: str) -> dict[str, int]:
        """``digest -> size`` of every complete object of ``algorithm`` on the remote (one
        listing); temporary names of interrupted uploads are left out."""
        try:
            listing = list(self.fs.walk(algorithm))
        except Exception as e:  # the backend's own errors: credentials, network, ...
            raise RemoteError(f"remote {self.name} ({self.url}): cannot list: {_reason(e)}") from e
        out: dict[str, int] = {}
        for path, size, _mtime in listing:
            parts = path.split("/")
            if len(parts) == 3 and len(parts[1]) == 2:
                with contextlib.suppress(ObjectProblem):
                    ObjectDB.key(algorithm, parts[1] + parts[2])
                    out[parts[1] + parts[2]] = size
        return out


def open_remote(name: str, spec: RemoteConfig, dataset_root: Path) -> Remote:
    """The object database of a remote; a missing optional backend is one line naming
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
        fs = FsspecFS(
            s3fs.S3FileSystem(
                endpoint_url=endpoint, skip_instance_cache=True, config_kwargs=S3_CLIENT_CONFIG
            ),
            url.split("://", 1)[1],
            atomic_put=True,
        )
    elif scheme in ("ssh", "sftp"):
        fs = FsspecFS(_ssh_filesystem(name, url), urlsplit(url).path, atomic_put=False)
    else:
        path = url.split("://", 1)[1] if "://" in url else url
        if path.startswith("localhost/"):
            path = path[len("localhost") :]
        root = Path(path) if os.path.isabs(path) else dataset_root / path
        fs = FsspecFS(_LocalFolder(), os.path.abspath(root), atomic_put=False)
    return Remote(name, url, ObjectDB(fs), fs)


class _LocalFolder:
    """fsspec's local filesystem, imported when first used: a push or a fetch with a
    folder remote lists it, moves bytes and gives names with ``os`` calls
    (:class:`FsspecFS` with ``local``) and never needs fsspec, whose import is about
    50 ms of every such command."""

    local_file = True

    def __init__(self) -> None:
        self._fs: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._fs is None:
            import fsspec

            self._fs = fsspec.filesystem("file")
        return getattr(self._fs, name)


def _ssh_filesystem(name: str, url: str) -> Any:
    """An SFTP connection through sshfs (asyncssh) configured as ``ssh`` would be: user,
    port, keys and agent from ``~/.ssh/config`` and the usual key files, and the host key
    checked against ``~/.ssh/known_hosts`` (sshfs turns that check off unless told)."""
    try:
        import sshfs
    except ImportError:
        raise VolsegsyncError(
            f"remote {name} ({url}): the SSH backend is not installed: {SSH_EXTRA}"
        ) from None
    parts = urlsplit(url)
    options: dict[str, Any] = {"known_hosts": (), "connect_timeout": SSH_CONNECT_TIMEOUT}
    if parts.port:
        options["port"] = parts.port
    try:
        return sshfs.SSHFileSystem(parts.hostname, skip_instance_cache=True, **options)
    except Exception as e:  # asyncssh's and the network's errors: one line, exit 1
        raise RemoteError(f"remote {name} ({url}): cannot connect: {_reason(e)}") from e


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
