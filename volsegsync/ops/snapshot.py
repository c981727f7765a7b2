"""The state of a dataset now: every file scanned, hashed and paired.

Shared by ``pair`` (which writes it as the index) and ``status`` (which compares
it with the index). Bad files are reported as problems; the scan goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from volsegsync.dataset import Dataset
from volsegsync.hashing import Hashed
from volsegsync.headers import Geometry, read_geometry
from volsegsync.index import Entry, FileRecord
from volsegsync.naming import NameInfo
from volsegsync.pairing import Pairing, pair_by_metadata, pair_by_naming
from volsegsync.problems import Problem, make_problem

Progress = Callable[[int], None]
ProgressFactory = Callable[[str, int], Progress]


class Snapshot(NamedTuple):
    entries: list[Entry]  # what the index would hold now
    pairing: Pairing
    problems: list[Problem]  # unreadable, not_an_image, naming roles, pairing problems
    hashed: dict[str, Hashed]  # every readable image file
    infos: dict[str, NameInfo]

    @property
    def total_bytes(self) -> int:
        return sum(h.stat.size for h in self.hashed.values())


def take_snapshot(
    ds: Dataset,
    by: str | None = None,
    jobs: int | None = None,
    progress: ProgressFactory | None = None,
) -> Snapshot:
    scan = ds.scan()
    problems = [
        make_problem("unreadable", [p], f"{p}: {why}") for p, why in sorted(scan.unreadable.items())
    ]
    tick = progress("hashing", len(scan.files)) if progress else None
    hashed, unreadable = ds.hashes(scan.files, jobs=jobs, progress=tick, prune=True)
    for path, why in sorted(unreadable.items()):
        problems.append(make_problem("unreadable", [path], f"{path}: {why}"))
    infos: dict[str, NameInfo] = {}
    for path in sorted(hashed):
        h = hashed[path]
        if h.problem:
            problems.append(make_problem("not_an_image", [path], f"{path}: {h.problem}"))
            continue
        info = ds.convention.parse(path)
        if info is None:
            problems.extend(ds.convention.check(path))  # says why the role is unknown
            continue
        infos[path] = info
    pairing = pair_by_naming(infos.values())
    if (by or ds.config.pairing.by) == "metadata":
        pairing = pair_by_metadata(
            pairing,
            _geometry_reader(ds),
            ds.config.pairing.reference_keys,
            ds.config.verify.position_tolerance,
            ds.config.verify.direction_tolerance,
        )
    problems.extend(pairing.problems)
    problems.extend(_unpaired_problems(pairing))
    entries = [_entry(p.volume, p.segmentation, p.version, hashed) for p in pairing.pairs]
    return Snapshot(entries, pairing, problems, hashed, infos)


def _geometry_reader(ds: Dataset) -> Callable[[str], Geometry]:
    def read(path: str) -> Geometry:
        return read_geometry(ds.root / path)

    return read


def _unpaired_problems(pairing: Pairing) -> list[Problem]:
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


def _entry(vol: str | None, seg: str | None, version: int | None, hashed: dict[str, Hashed]
           ) -> Entry:
    return Entry(_record(vol, hashed), _record(seg, hashed), version)
