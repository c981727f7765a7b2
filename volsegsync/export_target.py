"""Where an export writes: the export folder, its manifest, and fold assignment.

:class:`Target` is the export root: every path written is checked to stay inside
it, every write goes to a temporary file in the target folder and is renamed into
place (:func:`os.replace` replaces a link itself, never writes through it), and
folders below the root are refused when they are symbolic links. Files are
linked where the filesystem allows (:meth:`Target.place`: reflink, then hard
link, then copy). :class:`Manifest` remembers what each exported file was made
from, so a re-run writes only what changed; :func:`assign_folds` splits cases
into folds by group. No numpy here: an unchanged re-run never loads it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import json
import os
import shutil
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import xxhash

from volsegsync.errors import VolsegsyncError
from volsegsync.fsutil import make_temp, new_file_mode, open_regular

MANIFEST = ".volsegsync-export.json"
MANIFEST_SCHEMA = "volsegsync.export-manifest/1"
CONVERTER_VERSION = 1  # bump when converted files change: every converted file is rewritten
_FICLONE = 0x40049409  # Linux ioctl: share the source's extents (copy on write)
_COPY_CHUNK = 1 << 20


class Target:
    """The export root: every path written is checked to stay inside it.

    The root is resolved once (it may be reached through a symbolic link); below
    it no symbolic link is followed: a linked folder is refused, a linked file is
    replaced (never written through).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))

    def path(self, rel: str) -> Path:
        parts = rel.split("/")
        if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise VolsegsyncError(f"{rel!r}: not a plain path inside the export folder")
        folder = self.root
        for name in parts[:-1]:
            folder = folder / name
            try:
                st = os.lstat(folder)
            except FileNotFoundError:
                with contextlib.suppress(FileExistsError):  # another worker made it
                    folder.mkdir()
                st = os.lstat(folder)
            if not stat.S_ISDIR(st.st_mode):
                what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a folder"
                raise VolsegsyncError(f"{folder}: {what}; the export writes into real folders only")
        return folder / parts[-1]

    def write_bytes(self, rel: str, data: bytes) -> None:
        path = self.path(rel)
        fd, tmp = make_temp(path)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            _publish(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def place(self, rel: str, source: Path) -> str:
        """Put ``source``'s content at ``rel``: reflink, hard link or copy; says which."""
        path = self.path(rel)
        tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        how = _reflink(source, tmp)
        if how is None:
            try:
                os.link(source, tmp, follow_symlinks=False)
                how = "hardlink"
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
                _copy(source, tmp)
                how = "copy"
        try:
            if how != "hardlink":
                _publish(str(tmp), path)
            else:
                os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return how

    def gzip(self, rel: str, source: Path) -> None:
        """Write ``source`` gzip-compressed at ``rel`` (a ``.nii`` becomes a ``.nii.gz``)."""
        path = self.path(rel)
        fd, tmp = make_temp(path)
        try:
            with (
                os.fdopen(fd, "wb") as raw,
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz,
                open_regular(source) as src,
            ):
                shutil.copyfileobj(src, gz, _COPY_CHUNK)
            _publish(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def remove(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(rel))


def _publish(tmp: str, path: Path) -> None:
    os.chmod(tmp, new_file_mode())
    os.replace(tmp, path)


def read_owned(path: Path, limit: int = 64 * 1024 * 1024) -> bytes | None:
    """The bytes of a small file in OUT; None when it is missing, not a regular file
    (a link, a FIFO: never followed, never blocks) or larger than ``limit``."""
    try:
        with open_regular(path) as f:
            if os.fstat(f.fileno()).st_size > limit:
                return None
            return f.read(limit + 1)
    except OSError:
        return None


def _reflink(source: Path, tmp: Path) -> str | None:
    try:
        with open_regular(source) as src:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                fcntl.ioctl(fd, _FICLONE, src.fileno())
                return "reflink"
            except OSError:
                pass
            finally:
                os.close(fd)
    except OSError:
        pass
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    return None


def _copy(source: Path, tmp: Path) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as dst, open_regular(source) as src:
        shutil.copyfileobj(src, dst, _COPY_CHUNK)


# --------------------------------------------------------------------------- manifest


class ManifestEntry(NamedTuple):
    source: str  # what the file was made from: digests, how, converter version
    size: int
    mtime_ns: int
    ino: int


class Manifest:
    """``OUT/.volsegsync-export.json``: every file the export wrote, with its source key.

    A file whose recorded source key and stat are unchanged is not written again.
    Files the manifest does not list were not written by volsegsync and are never
    overwritten without ``force``.
    """

    def __init__(self, target: Target, fmt: str) -> None:
        self.target = target
        self.fmt = fmt
        self.entries: dict[str, ManifestEntry] = {}
        self.foreign = False  # the manifest belongs to an export of another format
        self.memo: dict[str, Any] = {}  # small derived results, keyed by their inputs
        self.dirty = True
        path = target.root / MANIFEST
        try:
            data = json.loads(read_owned(path) or b"{}")
            if data.get("schema") == MANIFEST_SCHEMA:
                self.foreign = data.get("format") != fmt
                for rel, row in data.get("files", {}).items():
                    self.entries[str(rel)] = ManifestEntry(
                        str(row[0]), int(row[1]), int(row[2]), int(row[3])
                    )
                memo = data.get("memo", {})
                self.memo = dict(memo) if isinstance(memo, dict) else {}
                self.dirty = self.foreign
        except (OSError, ValueError, TypeError, IndexError, AttributeError):
            self.entries, self.memo = {}, {}

    def fresh(self, rel: str, source: str) -> bool:
        """Whether ``rel`` holds what ``source`` makes, untouched since it was written."""
        known = self.entries.get(rel)
        if known is None or known.source != source:
            return False
        try:
            st = os.lstat(f"{self.target.root}/{rel}")
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns, st.st_ino) == known[1:]

    def owns(self, rel: str) -> bool:
        return rel in self.entries

    def record(self, rel: str, source: str) -> None:
        st = os.lstat(self.target.root / rel)
        self.entries[rel] = ManifestEntry(source, st.st_size, st.st_mtime_ns, st.st_ino)
        self.dirty = True

    def forget(self, rel: str) -> None:
        if self.entries.pop(rel, None) is not None:
            self.dirty = True

    def recall(self, name: str, key: str) -> Any:
        """A result remembered under ``name`` for inputs ``key``, or None."""
        hit = self.memo.get(name)
        if isinstance(hit, dict) and hit.get("key") == key:
            return hit.get("value")
        return None

    def remember(self, name: str, key: str, value: Any) -> None:
        if self.recall(name, key) != value:
            self.memo[name] = {"key": key, "value": value}
            self.dirty = True

    def save(self) -> None:
        """Write the manifest (only when something changed)."""
        if not self.dirty:
            return
        files = {rel: list(e) for rel, e in sorted(self.entries.items())}
        doc = {"schema": MANIFEST_SCHEMA, "format": self.fmt, "files": files, "memo": self.memo}
        self.target.write_bytes(MANIFEST, (json.dumps(doc, indent=1) + "\n").encode())
        self.dirty = False


def source_key(*parts: object) -> str:
    """A short digest of everything that decides an exported file's content."""
    text = "\0".join(map(str, (CONVERTER_VERSION, *parts)))
    return xxhash.xxh3_128_hexdigest(text.encode("utf-8", "surrogateescape"))


# --------------------------------------------------------------------------- folds


def assign_folds(groups: Mapping[str, Sequence[str]], k: int) -> dict[str, int]:
    """Case -> fold (0..k-1): every case of a group in one fold, folds balanced.

    Deterministic: groups are taken largest first (ties by a hash of the group
    name, so neighbouring names spread out), each into the fold holding fewest
    cases so far (ties: the lowest fold number).
    """
    if k < 2:
        raise VolsegsyncError(f"--folds must be at least 2, not {k}")
    sizes = [0] * k
    out: dict[str, int] = {}
    order = sorted(groups, key=lambda g: (-len(groups[g]), xxhash.xxh3_64_hexdigest(g.encode()), g))
    for group in order:
        fold = min(range(k), key=lambda f: (sizes[f], f))
        sizes[fold] += len(groups[group])
        for case in groups[group]:
            out[case] = fold
    return out
