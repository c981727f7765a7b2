"""The state of a dataset now: every file scanned, hashed and paired.

Shared by ``pair`` (which writes it as the index) and ``status`` (which compares
it with the index). Bad files are reported as problems; the scan goes on.
"""

from __future__ import annotations

import marshal
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import xxhash

from volsegsync.channels import group_channels, with_channels
from volsegsync.dataset import Dataset
from volsegsync.errors import IndexFormatError, VolsegsyncError
from volsegsync.fsutil import INDEX_LIMIT, read_memo, read_small, write_memo
from volsegsync.hashing import Hashed, racy_limit
from volsegsync.index import (
    Entry,
    FileRecord,
    IndexTooNewError,
    Pin,
    build_entry,
    format_index,
    from_plain,
    pins,
    to_plain,
)
from volsegsync.naming import NameInfo
from volsegsync.pairing import Pair, Pairing, pair_by_metadata, pair_by_naming
from volsegsync.problems import (
    Problem,
    apply_severities,
    make_problem,
    problems_from_plain,
    problems_to_plain,
    unreadable_problems,
)
from volsegsync.scan import ScanResult, fingerprint

if TYPE_CHECKING:
    from volsegsync.headers import Geometry

Progress = Callable[[int], None]
ProgressFactory = Callable[[str, int], Progress]
MEMO_FORMAT = 1


class Snapshot(NamedTuple):
    entries: list[Entry]  # what the index would hold now, in the index's order
    pairing: Pairing
    problems: list[Problem]  # unreadable, not_an_image, naming roles, pairing problems
    files: int  # readable image files
    total_bytes: int


def take_snapshot(
    ds: Dataset,
    by: str | None = None,
    jobs: int | None = None,
    progress: ProgressFactory | None = None,
    scan: ScanResult | None = None,
) -> Snapshot:
    """Scan, hash and pair the dataset, reusing the last result when no file changed."""
    scan = scan if scan is not None else ds.scan()
    mode = by or ds.config.pairing.by
    memo = snapshot_memo(ds, mode)
    cached = memo.load(scan)
    if cached is not None:
        return cached
    problems = unreadable_problems(scan.unreadable)
    tick = progress("hashing", len(scan.files)) if progress else None
    hashed, unreadable = ds.hashes(scan.files, jobs=jobs, progress=tick, prune=True)
    problems.extend(unreadable_problems(unreadable))
    infos: list[NameInfo] = []
    for path in sorted(hashed):
        h = hashed[path]
        if h.problem:  # reported, and still paired: its partner is not left unpaired
            problems.append(make_problem("not_an_image", [path], f"{path}: {h.problem}"))
        info = ds.convention.parse(path)
        if info is None:
            problems.extend(ds.convention.check(path))  # says why the role is unknown
            continue
        infos.append(info)
    groups = group_channels(infos, ds.config.channels)  # multi-channel cases: one volume each
    pairing = pair_by_naming(groups.infos)
    if mode == "metadata":
        pairing = pair_by_metadata(
            pairing,
            _geometry_reader(ds, {p for p, h in hashed.items() if h.problem}),
            ds.config.pairing.reference_keys,
            ds.config.verify.position_tolerance,
            ds.config.verify.direction_tolerance,
        )
    problems.extend(pairing.problems)
    problems.extend(groups.problems)
    problems.extend(unpaired_problems(pairing))
    by_path = {i.path: i for i in groups.infos}
    index_pins = read_pins(ds)
    entries = [_entry(p, hashed, by_path, index_pins) for p in pairing.pairs]
    entries = with_channels(entries, groups.channels, hashed)
    entries.sort(key=lambda e: e.sort_key)  # the index's order: comparing them is then cheap
    total = sum(h.stat.size for h in hashed.values())
    problems = apply_severities(problems, ds.config.verify.severity)
    snap = Snapshot(entries, pairing, problems, len(hashed), total)
    if not unreadable and not _racy(hashed.values()):
        memo.save(scan, snap)
    return snap


def snapshot_memo(ds: Dataset, mode: str | None = None) -> SnapshotMemo:
    pinned = ",".join(f"{k}@{v}/{t}" for k, (v, t) in sorted(read_pins(ds).items()))
    key = ds.state_key("snapshot", str(MEMO_FORMAT), mode or ds.config.pairing.by, pinned)
    return SnapshotMemo(ds.state_dir / "snapshot.marshal", key, ds.config.store.hash)


def _racy(hashed: Iterable[Hashed]) -> bool:
    """True when a file changed so recently that its stat may not tell a later change."""
    limit = racy_limit()
    return any(h.stat.mtime_ns >= limit for h in hashed)


class MemoHit(NamedTuple):
    """A memoised snapshot whose files are unchanged; the bulk is decoded on demand."""

    index_digest: str  # xxh3-128 of the index text this snapshot would write
    pairs: int  # complete pairs
    problems: list[Problem]
    files: int
    total_bytes: int
    bulk: bytes

    def snapshot(self) -> Snapshot | None:
        """The memoised snapshot, or None when its stored bulk is damaged."""
        try:
            entries, pairs, pairing_problems = marshal.loads(self.bulk)
            return Snapshot(
                from_plain(entries),
                Pairing([Pair(*p) for p in pairs], problems_from_plain(pairing_problems)),
                self.problems,
                self.files,
                self.total_bytes,
            )
        except (EOFError, ValueError, TypeError):
            return None


class SnapshotMemo:
    """The last snapshot with the stat of every file it saw, in the state folder.

    When a new scan finds the same files with the same stat (and the config is
    unchanged), the snapshot is reused as it was: nothing is hashed or paired.
    Stored with :mod:`marshal` (plain data only; loading it runs no code).
    """

    def __init__(self, path: Path, key: str, algorithm: str = "xxh3-128") -> None:
        self.path = path
        self.key = key
        self.algorithm = algorithm

    def match(self, scan: ScanResult) -> MemoHit | None:
        try:
            data = read_memo(self.path)
            if data is None or data["key"] != self.key or data["scan"] != fingerprint(scan):
                return None
            return MemoHit(
                data["index_digest"],
                data["pairs"],
                [Problem(*p) for p in data["problems"]],
                data["count"],
                data["bytes"],
                data["bulk"],
            )
        except (OSError, EOFError, ValueError, TypeError, KeyError):
            return None

    def load(self, scan: ScanResult) -> Snapshot | None:
        hit = self.match(scan)
        return hit.snapshot() if hit is not None else None

    def save(self, scan: ScanResult, snap: Snapshot) -> None:
        try:
            bulk = marshal.dumps(
                (
                    to_plain(snap.entries),
                    [tuple(p) for p in snap.pairing.pairs],
                    problems_to_plain(snap.pairing.problems),
                )
            )
            blob = dict(
                {
                    "key": self.key,
                    "scan": fingerprint(scan),
                    "index_digest": index_digest(
                        format_index(snap.entries, self.algorithm).encode()
                    ),
                    "problems": problems_to_plain(snap.problems),
                    "pairs": sum(1 for e in snap.entries if e.volume and e.segmentation),
                    "count": snap.files,
                    "bytes": snap.total_bytes,
                    "bulk": bulk,
                }
            )
        except ValueError:
            return  # something not plain data: simply not memoised
        write_memo(self.path, blob)  # a memo is an optimisation, never a failure


def index_digest(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def _geometry_reader(ds: Dataset, not_images: set[str]) -> Callable[[str], Geometry | None]:
    from volsegsync.headers import read_geometry  # numpy: only for metadata pairing

    def read(path: str) -> Geometry | None:
        return None if path in not_images else read_geometry(ds.root / path, ds.root)

    return read


def unpaired_problems(pairing: Pairing) -> list[Problem]:
    out = []
    for path in pairing.unpaired_volumes:
        out.append(make_problem("unpaired_volume", [path], f"{path}: volume without segmentation"))
    for path in pairing.unpaired_segmentations:
        out.append(
            make_problem("unpaired_segmentation", [path], f"{path}: segmentation without volume")
        )
    return out


def _record(path: str | None, hashed: dict[str, Hashed]) -> FileRecord | None:
    if path is None:
        return None
    h = hashed[path]
    return FileRecord(path, h.stat.size, h.digest)


def read_pins(ds: Dataset) -> dict[str, Pin]:
    """The rollbacks the index records; a newer index format is refused, a damaged
    index pins nothing (``pair`` rewrites it)."""
    try:
        raw = read_small(ds.index_path, INDEX_LIMIT, "index")
    except FileNotFoundError:
        return {}
    except (OSError, VolsegsyncError):
        raw = b""  # not a regular file, too large: read_index below says so
    if b"!\t" not in raw and raw.startswith((b"volsegsync-index 2\n", b"volsegsync-index 1\n")):
        return {}  # no pin, and a format this version knows: nothing to parse (fast status)
    try:
        return pins(ds.read_index())
    except IndexTooNewError:
        raise
    except IndexFormatError:
        return {}


def _entry(
    p: Pair, hashed: dict[str, Hashed], infos: dict[str, NameInfo], pin: dict[str, Pin]
) -> Entry:
    """The index entry of a pair: every segmentation version on disk, the active one marked."""
    key = infos[p.volume or p.segmentation or ""].key
    versions = [
        (infos[path].version, rec)
        for path in (*p.older, p.segmentation)
        if path is not None and (rec := _record(path, hashed)) is not None
    ]
    return build_entry(key, _record(p.volume, hashed), versions, p.version, pin.get(key))
