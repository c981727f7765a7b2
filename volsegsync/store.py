"""The content store: every file ``pair`` records, kept by content hash.

One object database (:class:`ObjectDB`) over a small filesystem interface
(:class:`FileSystem`): :class:`LocalFS` here; the remotes wrap an fsspec
filesystem (a folder, an S3 bucket) in the same interface. Objects live under
``ALGORITHM/ab/cdef…`` (git's sharding). An object is written under a
temporary name and gets its final name only when complete and its hash
checked, so a crash (``kill -9``) leaves no object under a final name with
wrong content. Objects are read-only. Semantics: ``docs/store.md``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

from volsegsync.errors import VolsegsyncError
from volsegsync.fsutil import open_regular
from volsegsync.hashing import CHUNK, hash_bytes, new_hasher, read_small_file
from volsegsync.index import DIGEST_HEX
from volsegsync.magic import HEAD_BYTES

# told the first bytes (``HEAD_BYTES`` at most) of a file as it is hashed, read anyway
Head = Callable[[bytes], None]

TMP_DIR = "tmp"  # incomplete objects, named at random; gc removes old ones
CORRUPT_DIR = "corrupt"  # objects fsck found damaged, moved aside
_HEX_DIGITS = re.compile("[0-9a-f]*")
FICLONE = 0x40049409  # linux ioctl: share the extents of another file (reflink)


class StoreError(VolsegsyncError):
    """The store cannot be used (not writable, not found)."""


class ObjectProblem(Exception):
    """One object is missing or damaged: batches report it and go on."""


class WrongContent(ObjectProblem):
    """Content that does not hash to the name it was to get (``found``: its hash)."""

    def __init__(self, message: str, found: str) -> None:
        super().__init__(message)
        self.found = found


class FileSystem(Protocol):
    """What :class:`ObjectDB` needs of a storage backend (paths use ``/``)."""

    def exists(self, path: str) -> bool: ...
    def open_read(self, path: str) -> BinaryIO: ...
    def open_new(self, path: str) -> BinaryIO: ...  # create (parents too), fail if present
    def rename(self, src: str, dst: str) -> None: ...  # atomic where the backend allows
    def remove(self, path: str) -> None: ...
    def walk(self, path: str) -> Iterator[tuple[str, int, float]]: ...  # (path, size, mtime)
    def seal(self, path: str) -> None: ...  # make read-only
    def link_from_local(self, src: Path, dst: str, kind: str) -> bool: ...  # False: unsupported
    def local_path(self, path: str) -> Path | None: ...  # a path on this machine, if any
    def local_file(self, path: str) -> Path | None: ...  # to copy bytes from/into, never to link


class LocalFS:
    """A folder on this machine."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root = str(root)
        self._folders: set[Path] = set()  # folders this run made or found: no mkdir again

    def _p(self, path: str) -> Path:
        return self.root / path

    def _s(self, path: str) -> str:
        """:meth:`_p` as a string: no ``pathlib`` object for each call of each object."""
        return f"{self._root}/{path}"

    def exists(self, path: str) -> bool:
        return os.path.lexists(self._s(path))

    def open_read(self, path: str) -> BinaryIO:
        return open_regular(self._p(path))

    def open_new(self, path: str) -> BinaryIO:
        full = self._p(path)
        full.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        return os.fdopen(fd, "wb", buffering=0)

    def rename(self, src: str, dst: str) -> None:
        target = self._p(dst)
        make_folder_once(target.parent, self._folders)
        try:
            os.replace(self._s(src), target)
        except FileNotFoundError:  # the folder was removed meanwhile (gc of another run)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._s(src), target)

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._s(path))

    def walk(self, path: str) -> Iterator[tuple[str, int, float]]:
        base = self._p(path)
        for folder, dirs, files in os.walk(base):
            dirs.sort()
            rel = Path(folder).relative_to(self.root).as_posix()
            for name in sorted(files):
                with contextlib.suppress(FileNotFoundError):
                    st = os.lstat(os.path.join(folder, name))
                    yield (f"{rel}/{name}" if rel != "." else name), st.st_size, st.st_mtime

    def seal(self, path: str) -> None:
        os.chmod(self._s(path), 0o444)

    def link_from_local(self, src: Path, dst: str, kind: str) -> bool:
        full = self._p(dst)
        make_folder_once(full.parent, self._folders)
        return place_link(src, full, kind)

    def local_path(self, path: str) -> Path | None:
        return self._p(path)

    def local_file(self, path: str) -> Path | None:
        return self._p(path)


def place_link(src: Path, dst: Path, kind: str) -> bool:
    """Make ``dst`` (which must not exist) share ``src``'s content by ``kind``; False when
    this filesystem cannot (the caller tries the next kind)."""
    try:
        if kind == "hardlink":
            os.link(src, dst, follow_symlinks=False)
        elif kind == "symlink":
            os.symlink(os.path.abspath(src), dst)
        elif kind == "reflink":
            return _reflink(src, dst)
        else:
            return False
    except OSError as e:
        if e.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
    return True


def _reflink(src: Path, dst: Path) -> bool:
    s = os.open(src, os.O_RDONLY | os.O_CLOEXEC)  # no file object: one per checked-out file
    try:
        fd = os.open(
            dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
        )
        try:
            fcntl.ioctl(fd, FICLONE, s)
        except OSError:
            os.close(fd)
            os.unlink(dst)
            return False
        os.close(fd)
    finally:
        os.close(s)
    return True


def make_folder_once(folder: Path, known: set[Path]) -> None:
    """Make ``folder`` (and its parents) unless this run made or found it already:
    one ``mkdir`` a folder per run, not one per object."""
    if folder not in known:
        folder.mkdir(parents=True, exist_ok=True)
        known.add(folder)


class ObjectDB:
    """A content-addressed object database: ``ALGORITHM/ab/cdef…`` below ``path`` of ``fs``."""

    def __init__(self, fs: FileSystem, path: str = "") -> None:
        self.fs = fs
        self.path = path.strip("/")
        self._unsupported: set[str] = set()  # link types that failed here once
        self._folders: set[Path] = set()  # local folders known to exist

    def _join(self, rel: str) -> str:
        return f"{self.path}/{rel}" if self.path else rel

    @staticmethod
    def key(algorithm: str, digest: str) -> str:
        n = DIGEST_HEX.get(algorithm)
        if n is None or len(digest) != n or not _HEX_DIGITS.fullmatch(digest):
            raise ObjectProblem(f"not a {algorithm} digest: {digest!r}")
        return f"{algorithm}/{digest[:2]}/{digest[2:]}"

    def object_path(self, algorithm: str, digest: str) -> str:
        return self._join(self.key(algorithm, digest))

    def has(self, algorithm: str, digest: str) -> bool:
        return self.fs.exists(self.object_path(algorithm, digest))

    def _tmp(self) -> str:
        return self._join(f"{TMP_DIR}/{uuid.uuid4().hex}")

    # -- adding ------------------------------------------------------------------------

    def add(
        self,
        src: Path,
        algorithm: str,
        digest: str,
        links: Sequence[str] = ("reflink", "copy"),
        hashed_stat: tuple[int, int, int] | None = None,
    ) -> bool:
        """Store the content of ``src``, which must hash to ``digest``; False when the
        object was already there. A file that changed since it was hashed is refused.

        ``hashed_stat``: the (size, mtime_ns, inode) ``src`` had when it was hashed; a
        hard link to that very inode, unchanged, is then not read again."""

        if links and links[0] in ("reflink", "copy"):  # a tiny file: a copy is as good
            small = self._add_small(src, algorithm, digest)
            if small is not None:
                return small

        def write(tmp: str) -> str:
            for kind in links:
                if kind == "copy":
                    break
                if kind in ("reflink", "hardlink") and self._try(
                    kind, lambda k: self.fs.link_from_local(src, tmp, k)
                ):
                    return self._linked_digest(tmp, kind, algorithm, digest, hashed_stat)
            return self._copy_in(src, tmp, algorithm)  # copying always works

        return self._store(
            algorithm,
            digest,
            write,
            lambda found: _changed_message(src, found, digest),
        )

    def _add_small(self, src: Path, algorithm: str, digest: str) -> bool | None:
        """A regular file smaller than one chunk, on this machine: one read, the hash of
        those very bytes checked, one write to a temporary file created read-only, one
        rename (no second read, no Python loop). None when ``src`` is not such a file
        or the store is not local: :meth:`add`'s general path does it."""
        tmp_dir = self.fs.local_path(self._join(TMP_DIR))
        final = self.fs.local_path(self.object_path(algorithm, digest))
        if tmp_dir is None or final is None:
            return None
        small = read_small_file(src)
        if small is None:
            return None
        if os.path.lexists(final):
            return False
        for folder in (tmp_dir, final.parent):
            make_folder_once(folder, self._folders)
        data = small[0]
        found = hash_bytes(data, algorithm)
        if found != digest:
            raise ObjectProblem(_changed_message(src, found, digest))
        tmp = tmp_dir / uuid.uuid4().hex
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
        try:
            try:
                os.fchmod(out, 0o444)  # sealed whatever the umask: the object is read-only
                view = memoryview(data)
                while view:
                    written = os.write(out, view)
                    if not written:
                        raise OSError(errno.EIO, "write failed")
                    view = view[written:]
            finally:
                os.close(out)
            os.replace(tmp, final)  # the commit point: complete and checked, or absent
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return True

    def copy_from(self, other: ObjectDB, algorithm: str, digest: str) -> bool:
        """Copy an object from another database (a remote, another store), checking its
        hash on the way: content that does not match is rejected and gets no final
        name. False when the object was already here."""
        source = other.object_path(algorithm, digest)

        def write(tmp: str) -> str:
            with other.fs.open_read(source) as f, self.fs.open_new(tmp) as out:
                return copy_hashing(f, out, algorithm)

        return self._store(
            algorithm,
            digest,
            write,
            lambda _f: f"{source}: content does not match its hash; rejected",
        )

    def add_copy(
        self,
        src: Path,
        algorithm: str,
        digest: str,
        write_back: bool = False,
        store_object: bool = False,
        head: Head | None = None,
    ) -> bool:
        """Store a copy of the local file ``src`` (a folder remote's object, or a local
        object sent to a folder remote). The bytes move in the kernel (no trip through
        Python), then what was *written* is hashed (in place, in the page cache): content
        that does not match its name is rejected and gets no final name. A backend with
        no local file gets it streamed through Python. False when the object was here.
        ``write_back``: see :func:`copy_verified` (an object not read again soon).
        ``store_object``: ``src`` is an object of this machine's store, which no one
        writes: read once, hashed as it is written (:func:`copy_object`). ``head``: told
        the first bytes of what was written, where they are read anyway (a kernel copy
        or reflink of a file of this machine)."""

        def write(tmp: str) -> str:
            target = self.fs.local_file(tmp)
            if target is None:
                return self._copy_in(src, tmp, algorithm)
            make_folder_once(target.parent, self._folders)
            if store_object:
                return copy_object(src, target, algorithm, OBJECT_MODE, write_back)
            return copy_verified(src, target, algorithm, OBJECT_MODE, write_back, head)

        return self._store(
            algorithm,
            digest,
            write,
            lambda found: _mismatch_message(src, found),
        )

    def add_download(self, src: Path, algorithm: str, digest: str) -> bool:
        """Store ``src``, a file this process just downloaded into this store's folder
        (no one else writes or truncates it): hard-linked to a temporary name and hashed
        in place (:func:`hash_written`, no read into Python), or copied and hashed where
        a hard link fails. Content that does not match its name gets no final name.
        False when the object was here."""

        def write(tmp: str) -> str:
            local = self.fs.local_path(tmp)
            if local is not None and self._try(
                "hardlink", lambda k: self.fs.link_from_local(src, tmp, k)
            ):
                return _hash_path(local, algorithm, hash_written)
            return self._copy_in(src, tmp, algorithm)

        return self._store(algorithm, digest, write, lambda found: _mismatch_message(src, found))

    def _store(
        self,
        algorithm: str,
        digest: str,
        write: Callable[[str], str],
        mismatch: Callable[[str], str],
    ) -> bool:
        """Write an object under a temporary name (``write`` returns the hash of what it
        wrote), check it, seal it and give it its final name; False when present."""
        final = self.object_path(algorithm, digest)
        if self.fs.exists(final):
            return False
        tmp = self._tmp()
        named = False
        try:
            found = write(tmp)
            if found != digest:
                raise WrongContent(mismatch(found), found)
            self.fs.seal(tmp)
            self.fs.rename(tmp, final)
            named = True
        finally:
            if not named and self.fs.exists(tmp):
                self.fs.remove(tmp)
        return True

    def _linked_digest(
        self,
        tmp: str,
        kind: str,
        algorithm: str,
        digest: str,
        hashed_stat: tuple[int, int, int] | None,
    ) -> str:
        local = self.fs.local_path(tmp)
        if kind == "hardlink" and hashed_stat is not None and local is not None:
            st = os.lstat(local)
            if (st.st_size, st.st_mtime_ns, st.st_ino) == hashed_stat:
                return digest  # the inode that was hashed, unchanged since
        return self.hash_at(tmp, algorithm)

    def _try(self, kind: str, link: Callable[[str], bool]) -> bool:
        """Try a link type, remembering one this filesystem does not support."""
        if kind in self._unsupported:
            return False
        if link(kind):
            return True
        self._unsupported.add(kind)
        return False

    def _copy_in(self, src: Path, tmp: str, algorithm: str) -> str:
        with open_regular(src) as f, self.fs.open_new(tmp) as out:
            return copy_hashing(f, out, algorithm)

    # -- reading -----------------------------------------------------------------------

    def hash_at(self, path: str, algorithm: str) -> str:
        h = new_hasher(algorithm)
        with self.fs.open_read(path) as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return str(h.hexdigest())

    def verify(self, algorithm: str, digest: str) -> bool:
        """Whether the object exists and its content hashes to its name."""
        try:
            return self.hash_at(self.object_path(algorithm, digest), algorithm) == digest
        except FileNotFoundError:
            return False

    def place(
        self,
        algorithm: str,
        digest: str,
        dest: Path,
        links: Sequence[str],
        mode: int,
        verified: bool = False,
    ) -> str:
        """Write the object to ``dest`` atomically (temporary file in its folder, then
        rename), by the first link type that works; returns the type used. The content
        is checked on the way: a damaged object never reaches ``dest``.

        ``verified``: this run checked the object's hash when it entered the store (a
        fetch); a copy or reflink is then not hashed a second time."""
        obj = self.object_path(algorithm, digest)
        if not self.fs.exists(obj):
            raise ObjectProblem("not in the store")
        tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.volsegsync-tmp"
        local = self.fs.local_path(obj)
        placed = False
        try:
            used = "copy"
            for kind in links:
                if kind == "copy" or local is None:
                    break
                if kind in ("hardlink", "symlink") and self.hash_at(obj, algorithm) != digest:
                    raise ObjectProblem("damaged in the store (run 'volsegsync fsck')")
                if self._try(kind, lambda k: place_link(local, tmp, k)):
                    used = kind
                    break
            if used == "copy":
                found = self._copy_out(obj, tmp, algorithm, mode, digest if verified else None)
            elif used == "reflink":
                os.chmod(tmp, mode)
                found = digest if verified else _hash_path(tmp, algorithm, hash_cold)
            else:
                found = digest  # checked above
            if found != digest:
                raise ObjectProblem("damaged in the store (run 'volsegsync fsck')")
            os.replace(tmp, dest)
            placed = True
            return used
        finally:
            if not placed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    def _copy_out(
        self, obj: str, tmp: Path, algorithm: str, mode: int, verified: str | None
    ) -> str:
        """Copy the object to ``tmp``; the hash of what was written, or ``verified`` (the
        object's digest, checked by this run) when the copy is not to be hashed again."""
        local = self.fs.local_file(obj)
        if local is not None and verified is not None:
            copy_trusted(local, tmp, mode)
            return verified
        if local is not None:
            return copy_object(local, tmp, algorithm, mode)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        os.fchmod(fd, mode)
        with self.fs.open_read(obj) as f, os.fdopen(fd, "wb", buffering=0) as out:
            return copy_hashing(f, out, algorithm)

    # -- maintenance -------------------------------------------------------------------

    def objects(self) -> Iterator[tuple[str, str, int]]:
        """``(algorithm, digest, size)`` of every object; stray files are skipped."""
        for algorithm in DIGEST_HEX:
            for path, size, _mtime in self.fs.walk(self._join(algorithm)):
                parts = path.rsplit("/", 2)
                if len(parts) == 3 and len(parts[1]) == 2:
                    digest = parts[1] + parts[2]
                    with contextlib.suppress(ObjectProblem):
                        self.key(algorithm, digest)
                        yield algorithm, digest, size

    def remove(self, algorithm: str, digest: str) -> None:
        self.fs.remove(self.object_path(algorithm, digest))

    def quarantine(self, algorithm: str, digest: str) -> str:
        """Move a damaged object aside (``corrupt/``); returns where it went."""
        dst = self._join(f"{CORRUPT_DIR}/{algorithm}-{digest}-{uuid.uuid4().hex[:8]}")
        self.fs.rename(self.object_path(algorithm, digest), dst)
        return dst

    def stale_temporaries(self, older_than_s: float, now: float) -> list[str]:
        """Incomplete objects a killed run left behind."""
        return [
            p for p, _s, mtime in self.fs.walk(self._join(TMP_DIR)) if now - mtime > older_than_s
        ]


def _mismatch_message(src: Path, found: str) -> str:
    return f"{src}: content does not match its hash (it hashes to {found})"


def _changed_message(src: Path, found: str, digest: str) -> str:
    return (
        f"{src}: changed while being stored (hash {found}, expected {digest}); "
        "run 'volsegsync pair' again"
    )


def copy_hashing(src: BinaryIO, dst: BinaryIO, algorithm: str) -> str:
    """Copy ``src`` to ``dst`` and return the hash of what was copied (one read)."""
    h = new_hasher(algorithm)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while n := src.readinto(buf):  # type: ignore[attr-defined]
        h.update(view[:n])
        rest = view[:n]
        while rest:  # an unbuffered write may be partial
            written = dst.write(rest)
            if not written:
                raise OSError(errno.EIO, "write failed")
            rest = rest[written:]
    return str(h.hexdigest())


def hash_local(path: Path, algorithm: str) -> str:
    h = new_hasher(algorithm)
    with open_regular(path) as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return str(h.hexdigest())


MAP_WINDOW = 64 << 20  # bytes of a file mapped at once to hash it (bounds address space)


def hash_written(fd: int, algorithm: str, head: Head | None = None) -> str:
    """The hash of the whole file ``fd``, one this process just wrote (never a file
    someone else may truncate meanwhile: reading a mapped page past the end is a
    SIGBUS). Read through memory maps of at most ``MAP_WINDOW`` bytes: the hash reads
    the page cache in place, where ``read`` would first copy every byte into Python
    (about half the CPU time of a verified copy, ``benchmarks/bench_remotes.py``).
    ``head``: told the first bytes."""
    h = new_hasher(algorithm)
    for window in _windows(fd, os.fstat(fd).st_size):
        h.update(window)
        if head is not None:
            head(window[:HEAD_BYTES])
            head = None
    return str(h.hexdigest())


def _hash_path(path: Path, algorithm: str, how: Callable[[int, str], str]) -> str:
    """``how`` (:func:`hash_written`, :func:`hash_cold`) of the file at ``path``, a file
    this process just made (opened without following a link)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return how(fd, algorithm)
    finally:
        os.close(fd)


_DIRECT = threading.local()  # each thread's aligned read buffer (O_DIRECT needs one)
# a direct read refused (an alignment the device wants, a filesystem that accepted the
# flag but cannot do it): read through the page cache instead
_NO_DIRECT_READ = {errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP}


def hash_cold(fd: int, algorithm: str, head: Head | None = None) -> str:
    """The hash of the whole file ``fd``, one whose pages are not in the page cache: a
    reflink just made (it shares the extents of its source, never its cached pages).
    Read from the disk with ``O_DIRECT`` into an aligned buffer each thread reuses: no
    page cache page is allocated, charged and mapped for bytes read once, about a third
    of the CPU time of reading them through the cache (``mmap`` or ``read``: 0.10 to
    0.16 s against 0.35 s for 1 GiB of new reflinks on XFS). The disk's own bytes are
    hashed: the check vouches for what the reflink holds. Where the filesystem refuses
    ``O_DIRECT`` (the flag, or a direct read: an alignment it wants), the rest is read
    through the page cache. ``head``: told the first bytes (a reflink's are on the disk only:
    reading them again later would be one more trip there per file)."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    direct = hasattr(os, "O_DIRECT")
    if direct:
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
        except OSError:
            direct = False
    buf = getattr(_DIRECT, "buf", None)
    if buf is None:
        buf = _DIRECT.buf = mmap.mmap(-1, CHUNK)  # page-aligned
    h = new_hasher(algorithm)
    offset, size = 0, os.fstat(fd).st_size
    try:
        with memoryview(buf) as view:
            while offset < size:  # not one more read at the end (unaligned there: EINVAL)
                try:
                    n = os.preadv(fd, [view], offset)
                except OSError as e:
                    if not direct or e.errno not in _NO_DIRECT_READ:
                        raise
                    fcntl.fcntl(fd, fcntl.F_SETFL, flags)  # refused: the cache reads on
                    direct = False
                    continue
                if not n:
                    break
                h.update(view[:n])
                if head is not None:
                    head(bytes(view[: min(n, HEAD_BYTES)]))
                    head = None
                offset += n
    finally:
        if direct:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    return str(h.hexdigest())


def _windows(fd: int, size: int) -> Iterator[mmap.mmap]:
    """The first ``size`` bytes of ``fd`` as read-only maps of ``MAP_WINDOW`` bytes at
    most, each closed before the next is made."""
    offset = 0
    while offset < size:
        n = min(MAP_WINDOW, size - offset)
        with mmap.mmap(fd, n, access=mmap.ACCESS_READ, offset=offset) as window:
            yield window
        offset += n


OBJECT_MODE = 0o644  # a new object: written once, never changed (the store seals its own 0444)
_KERNEL_COPY_FALLBACK = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP}


def copy_verified(
    src: Path,
    dst: Path,
    algorithm: str,
    mode: int,
    write_back: bool = False,
    head: Head | None = None,
) -> str:
    """Copy the regular file ``src`` to the new file ``dst`` (created with ``mode``, never
    through a link) in the kernel, and return the hash of what ``dst`` holds.

    The bytes do not pass through Python: ``copy_file_range`` (a reflink on filesystems
    that share extents), else ``sendfile``, else read/write. What was written is hashed
    in place in the page cache (:func:`hash_written`), so the digest vouches for ``dst``
    itself, even if ``src`` changed meanwhile.

    ``write_back``: ``dst`` is not read again here (a push to a folder remote): its
    pages start going to the disk now, while the next objects are copied, so the
    ``sync`` that ends the push has little left to wait for. ``head``: told the first
    bytes of ``dst``."""
    return str(_copy_new(src, dst, mode, algorithm, write_back, head))


def copy_object(src: Path, dst: Path, algorithm: str, mode: int, write_back: bool = False) -> str:
    """Copy ``src``, an object of this machine's store (sealed, written by no one), to
    the new file ``dst`` (created with ``mode``, never through a link), reading it once,
    and return the hash of the bytes ``dst`` got: the check that a store object damaged
    since it was stored never leaves the store under its name.

    Where the filesystem shares extents (XFS, btrfs), ``dst`` is a reflink of ``src``
    and is hashed in place (:func:`hash_written`). Elsewhere ``src`` is mapped
    (``MAP_WINDOW`` bytes at a time) and each window is hashed, then written to ``dst``
    from the same mapping: the hash covers the bytes written, with one pass over the
    data instead of a kernel copy plus a second pass over the copy. A store object
    must not change meanwhile: its (size, mtime, ctime, inode) is compared after the
    copy, and a change raises :class:`ObjectProblem` (the caller gives ``dst`` no
    name). ``write_back``: see :func:`copy_verified`."""
    fd = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        with open_regular(src) as f:
            before = os.fstat(f.fileno())
            if _reflink_fd(f.fileno(), fd, before.st_dev):
                found = hash_cold(fd, algorithm)
            else:
                found = _hash_and_write(f.fileno(), fd, before.st_size, algorithm)
            after = os.fstat(f.fileno())
        if _stamp(before) != _stamp(after):
            raise ObjectProblem(f"{src}: changed while being copied; not copied")
        if write_back:
            _start_write_back(fd)
        return found
    finally:
        os.close(fd)


_NO_REFLINK: set[tuple[int, int]] = set()  # (source, destination) devices that refused one


def _reflink_fd(src: int, dst: int, src_dev: int) -> bool:
    """Make the empty file ``dst`` share ``src``'s extents; False where the filesystem
    cannot (remembered per pair of devices: one failed ioctl, not one per file)."""
    pair = (src_dev, os.fstat(dst).st_dev)
    if pair in _NO_REFLINK:
        return False
    try:
        fcntl.ioctl(dst, FICLONE, src)
    except OSError:
        _NO_REFLINK.add(pair)
        return False
    return True


def _hash_and_write(src: int, dst: int, size: int, algorithm: str) -> str:
    h = new_hasher(algorithm)
    for window in _windows(src, size):
        h.update(window)
        _write_all(dst, window)
    return str(h.hexdigest())


def _write_all(fd: int, data: mmap.mmap) -> None:
    """Write all of ``data`` (an unbuffered write may be partial); every view of it is
    released on return, so that the mapping can be closed."""
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            written = os.write(fd, view[done:])
            if not written:
                raise OSError(errno.EIO, "write failed")
            done += written


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _start_write_back(fd: int) -> None:
    """Linux: start the write-back of ``fd``'s dirty pages (asynchronously) and drop its
    clean ones; only a hint, so where it fails nothing is lost."""
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def copy_trusted(src: Path, dst: Path, mode: int) -> None:
    """:func:`copy_verified` without the hash: for an object this run just verified."""
    _copy_new(src, dst, mode, None)


def _copy_new(
    src: Path,
    dst: Path,
    mode: int,
    algorithm: str | None,
    write_back: bool = False,
    head: Head | None = None,
) -> str | None:
    fd = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        with open_regular(src) as f:
            st = os.fstat(f.fileno())
            cloned = _reflink_fd(f.fileno(), fd, st.st_dev)
            if not cloned:
                kernel_copy(f.fileno(), fd, st.st_size)
        if algorithm is None:
            found = None
        else:  # a reflink's pages are on the disk only: read there, not through the cache
            found = (hash_cold if cloned else hash_written)(fd, algorithm, head)
        if write_back:
            _start_write_back(fd)
        return found
    finally:
        os.close(fd)


def kernel_copy(src: int, dst: int, size: int) -> None:
    """Copy ``src`` (from offset 0) to the end of ``dst``; a file that shrinks meanwhile
    stops the copy early (the caller's hash check catches it), one that grows is cut at
    ``size``."""
    offset = 0
    use_range = hasattr(os, "copy_file_range")
    while offset < size:
        try:
            if use_range:
                n = os.copy_file_range(src, dst, size - offset, offset)
            else:
                n = os.sendfile(dst, src, offset, size - offset)
        except OSError as e:
            if e.errno not in _KERNEL_COPY_FALLBACK or offset:
                raise
            if use_range:
                use_range = False  # e.g. another filesystem on an old kernel: sendfile
                continue
            _read_write(src, dst, size)
            return
        if n == 0:
            return
        offset += n


def _read_write(src: int, dst: int, size: int) -> None:
    offset = 0
    while offset < size and (chunk := os.pread(src, min(CHUNK, size - offset), offset)):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]
        offset += len(chunk)


def supported_links(folder: Path) -> dict[str, bool]:
    """Which link types work between two files in ``folder`` (for docs and benchmarks)."""
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / f".probe-{uuid.uuid4().hex}"
    src.write_bytes(b"probe")
    out = {}
    try:
        for kind in ("reflink", "hardlink", "symlink"):
            dst = folder / f".probe-{uuid.uuid4().hex}"
            try:
                out[kind] = place_link(src, dst, kind)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(dst)
        out["copy"] = True
    finally:
        src.unlink()
    return out
