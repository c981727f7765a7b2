"""Where the files of ``PAIR``, ``PAIR@vN`` or ``PAIR@vN@REV`` come from: the version sources.

``PAIR`` is a case key (a volume's name without extension) or the path of the
volume or of any of its segmentation versions. ``@vN`` picks segmentation
version N (without it: the active version); ``@REV`` (anything else after the
last ``@``) asks for the pair as the index records it at a git revision, and
``PAIR@vN@REV`` for version N as recorded there.

Each source is a function ``(workspace, spec, with_volume) -> PairFiles | None``
tried in the order of :data:`SOURCES`; the first to answer wins, ``None`` means
"not mine":

1. :func:`working_tree`: the files on disk now (naming convention pairing);
2. :func:`store`: a version the index records but the working tree no longer
   holds, by the hash the index records for it;
3. :func:`revision`: the index at a git revision gives the hashes.

Sources 2 and 3 materialise the content into a private temporary folder of the
:class:`Workspace` (never into the working tree), each file checked against its
hash on the way: from the content store, or from a working file that holds
exactly that content. The loaders then read it as any dataset file (inside the
folder, regular files only, bounded by the declared size). Content found in
neither place is one line naming the path, the hash and what to do.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, NamedTuple

from volsegsync.dataset import Dataset
from volsegsync.errors import VolsegsyncError
from volsegsync.index import DIGEST_HEX, Entry, FileRecord, IndexFile, check_relative_path
from volsegsync.naming import SEGMENTATION, NameInfo
from volsegsync.pairing import pair_by_naming

if TYPE_CHECKING:
    from volsegsync.store import ObjectDB

_VERSION = re.compile(r"^v(\d+)$")
#: link types for materialising: the store's object shared where the filesystem allows
LINKS = ("reflink", "hardlink", "copy")


class MissingContent(VolsegsyncError):
    """A recorded version whose content is neither in the store nor in the working tree."""


class Spec(NamedTuple):
    pair: str  # case key or path
    version: int | None  # @vN
    rev: str | None  # @REV

    @property
    def text(self) -> str:
        suffix = f"@v{self.version}" if self.version is not None else ""
        return self.pair + suffix + (f"@{self.rev}" if self.rev else "")


class PairFiles(NamedTuple):
    key: str
    volume: str | None  # relative to root
    segmentation: str
    version: int | None
    root: Path  # the folder the paths are relative to
    source: str  # "working tree", "store", "revision REV"

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "volume": self.volume,
            "segmentation": self.segmentation,
            "version": self.version,
            "source": self.source,
        }


def parse_spec(text: str) -> Spec:
    """``PAIR``, ``PAIR@vN``, ``PAIR@REV`` or ``PAIR@vN@REV``."""
    if "@" not in text:
        return Spec(text, None, None)
    pair, _, last = text.rpartition("@")
    if not pair or not last:
        raise VolsegsyncError(f"{text}: expected PAIR, PAIR@vN, PAIR@REV or PAIR@vN@REV")
    m = _VERSION.match(last)
    if m:
        return Spec(pair, int(m.group(1)), None)
    head, at, middle = pair.rpartition("@")
    m = _VERSION.match(middle) if at else None
    if m and head:
        return Spec(head, int(m.group(1)), last)
    return Spec(pair, None, last)


class Workspace:
    """A private temporary folder that recorded content is materialised into (one
    subfolder per pair version, files at their dataset paths); removed on close."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self._folder: Path | None = None
        self._count = 0
        self._db: ObjectDB | None = None

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def find(self, text: str, with_volume: bool = True) -> PairFiles:
        """The files of ``text`` from the first source that answers."""
        spec = parse_spec(text)
        for source in SOURCES:
            found = source(self, spec, with_volume)
            if found is not None:
                return found
        raise VolsegsyncError(
            f"{text}: no such pair in the dataset (give a case key or a file path)"
        )

    def entry_files(
        self,
        entry: Entry,
        version: int | None,
        record: FileRecord,
        algorithm: str | None,
        source: str,
        with_volume: bool = True,
    ) -> PairFiles:
        """Materialise one recorded segmentation version (its detached data file, and
        the case's volume when ``with_volume``) and name the files."""
        data = next((d for v, r, d in versions(entry) if r == record), None)
        records = [record] + ([data] if data is not None else [])
        volume = entry.volume if with_volume else None
        if volume is not None:
            records.append(volume)
        root = self.materialise(records, algorithm)
        return PairFiles(
            entry.key,
            volume.path if volume else None,
            record.path,
            version,
            root,
            source,
        )

    def materialise(self, records: Sequence[FileRecord], algorithm: str | None) -> Path:
        """A new subfolder holding each record's content at its path."""
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="volsegsync-view-"))
        self._count += 1
        root = self._folder / str(self._count)
        root.mkdir(mode=0o700)
        for rec in records:
            check_relative_path(rec.path, "index")  # parsing checked it: stay sure
            dest = root / rec.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            self._fetch(rec, dest, algorithm)
        return root

    def _store(self) -> ObjectDB:
        if self._db is None:
            from volsegsync.ops.storing import open_store

            self._db = open_store(self.ds, create=False)
        return self._db

    def _fetch(self, rec: FileRecord, dest: Path, algorithm: str | None) -> None:
        from volsegsync.store import ObjectProblem, copy_hashing

        db = self._store()
        candidates = _algorithms(rec.digest, algorithm or self.ds.config.store.hash)
        for name in candidates:
            try:
                if db.has(name, rec.digest):
                    db.place(name, rec.digest, dest, LINKS, 0o600)
                    return
            except ObjectProblem as e:
                raise VolsegsyncError(f"{rec.path}: content {name}:{rec.digest} is {e}") from None
            except OSError as e:
                raise VolsegsyncError(
                    f"{rec.path}: cannot copy content {name}:{rec.digest} from the store: "
                    f"{e.strerror or e}"
                ) from None
        # not stored (e.g. not yet recorded by 'pair'): a working file with that content
        from volsegsync.fsutil import open_in_dataset

        for name in candidates:
            try:
                with open_in_dataset(self.ds.root, rec.path) as src:
                    if os.fstat(src.fileno()).st_size != rec.size:
                        break
                    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
                    with os.fdopen(fd, "wb", buffering=0) as out:
                        found = copy_hashing(src, out, name)
            except OSError:
                break
            if found == rec.digest:
                return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dest)
        name = candidates[0] if candidates else algorithm or "?"
        raise MissingContent(
            f"{rec.path}: content {name}:{rec.digest} is in neither the content store nor "
            "the working tree; run 'volsegsync fetch' (or 'volsegsync pull') to get it "
            "from a remote"
        )


def _algorithms(digest: str, first: str) -> list[str]:
    """Hash algorithms whose digests have this length, ``first`` first."""
    names = [first, *(a for a in DIGEST_HEX if a != first)]
    return [a for a in names if DIGEST_HEX.get(a) == len(digest)]


def versions(entry: Entry) -> list[tuple[int | None, FileRecord, FileRecord | None]]:
    """``(version, segmentation, detached data)`` of every recorded version, active last."""
    out = [(v.version, v.record, v.data) for v in entry.older]
    if entry.segmentation is not None:
        out.append((entry.version, entry.segmentation, entry.seg_data))
    return out


VersionSource = Callable[[Workspace, Spec, bool], "PairFiles | None"]


def _wanted(ds: Dataset, pair: str) -> set[str]:
    """The names ``pair`` may be: as given, and as a dataset path when it is one."""
    names = {pair.strip("/")}
    with contextlib.suppress(VolsegsyncError, OSError):
        names.add(ds.relpath(pair))
    return names


def working_tree(ws: Workspace, spec: Spec, with_volume: bool) -> PairFiles | None:
    """The pair as the files on disk are now (naming convention pairing)."""
    if spec.rev is not None:
        return None
    ds = ws.ds
    scan = ds.scan()
    infos = [i for p in sorted(scan.files) if (i := ds.convention.parse(p)) is not None]
    wanted = _wanted(ds, spec.pair)
    key = next((i.key for i in infos if i.path in wanted or i.key in wanted), None)
    if key is None:
        return None
    mine = [i for i in infos if i.key == key]
    pairing = pair_by_naming(mine)
    pair = next((p for p in pairing.pairs), None)
    segs = {i.version: i for i in mine if i.role == SEGMENTATION}
    chosen: NameInfo | None
    if spec.version is not None:
        chosen = segs.get(spec.version)
        if chosen is None:
            return None  # perhaps kept in the store
    else:
        active = pair.segmentation if pair is not None else None
        chosen = next((i for i in mine if i.path == active), None)
        if chosen is None:
            raise VolsegsyncError(f"{spec.text}: the pair has no (unambiguous) segmentation")
    volume = pair.volume if pair is not None else None
    if volume is None:
        volume = next((i.path for i in mine if i.role != SEGMENTATION), None)
    return PairFiles(key, volume, chosen.path, chosen.version, ds.root, "working tree")


def find_entry(ds: Dataset, entries: Sequence[Entry], pair: str) -> Entry | None:
    """The case named by its key or the path of any file it records."""
    wanted = _wanted(ds, pair)
    for e in entries:
        if e.key in wanted:
            return e
    for e in entries:
        if any(r.path in wanted for r in e.records()):
            return e
    return None


def _recorded(
    ws: Workspace, spec: Spec, index: IndexFile, source: str, with_volume: bool
) -> PairFiles | None:
    entry = find_entry(ws.ds, index.entries, spec.pair)
    if entry is None:
        return None
    known = versions(entry)
    if spec.version is None:
        if entry.segmentation is None:
            raise VolsegsyncError(f"{spec.text}: the index records no segmentation for it")
        version, record = entry.version, entry.segmentation
    else:
        hit = next(((v, r) for v, r, _ in known if v == spec.version), None)
        if hit is None:
            have = ", ".join(f"v{v}" for v, _, _ in known if v is not None) or "none"
            where = f"at {spec.rev}" if spec.rev else "in the working tree nor in the index"
            raise VolsegsyncError(
                f"{spec.text}: no segmentation version {spec.version} {where} "
                f"(recorded versions: {have})"
            )
        version, record = hit
    return ws.entry_files(entry, version, record, index.algorithm, source, with_volume)


def store(ws: Workspace, spec: Spec, with_volume: bool) -> PairFiles | None:
    """A version the index records, from the content store (or a working file holding
    that very content)."""
    if spec.rev is not None:
        return None
    from volsegsync.index import read_index_file

    found = _recorded(ws, spec, read_index_file(ws.ds.index_path), "store", with_volume)
    if found is None and spec.version is not None:
        raise VolsegsyncError(
            f"{spec.text}: no segmentation version {spec.version} in the working tree, "
            "and the index records no such pair"
        )
    return found


def index_at(ds: Dataset, rev: str) -> IndexFile:
    """The index (with its hash algorithm) as committed at git revision ``rev``."""
    from volsegsync.history import GitHistory
    from volsegsync.index import parse_index_file

    with GitHistory(ds.root) as git:
        text = git.index_text(rev)
        if text is None:
            raise VolsegsyncError(f"{rev}: no {git.path} in that commit")
        return parse_index_file(text, f"{rev}:{git.path}")


def revision(ws: Workspace, spec: Spec, with_volume: bool) -> PairFiles | None:
    """``PAIR@REV``, ``PAIR@vN@REV``: the hashes from the index at REV, the bytes from
    the content store."""
    if spec.rev is None:
        return None
    found = _recorded(ws, spec, index_at(ws.ds, spec.rev), f"revision {spec.rev}", with_volume)
    if found is None:
        raise VolsegsyncError(f"{spec.text}: the index at {spec.rev} records no such pair")
    return found


SOURCES: list[VersionSource] = [working_tree, store, revision]
