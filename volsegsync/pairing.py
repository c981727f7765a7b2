"""Pairing volumes with segmentations: by naming convention, then by metadata.

Ambiguity is an error, never a silent choice: two volumes for one key, two
segmentation files of one version, or a header that matches two partners
leave the files unpaired and produce a problem naming every candidate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, NamedTuple

from volsegsync.errors import FileProblem
from volsegsync.naming import VOLUME, NameInfo
from volsegsync.problems import Problem, make_problem

if TYPE_CHECKING:  # headers and geometry import numpy: only metadata pairing needs them
    from volsegsync.headers import Geometry

# a file's geometry; None to leave it out silently (its problem is reported elsewhere)
GeometryReader = Callable[[str], "Geometry | None"]


class Pair(NamedTuple):
    """A volume and its segmentation; one side is None for an unpaired file."""

    volume: str | None
    segmentation: str | None
    version: int | None
    how: str  # "naming", "metadata" or "" (unpaired)
    older: tuple[str, ...] = ()  # older versions of the segmentation


class Pairing(NamedTuple):
    pairs: list[Pair]
    problems: list[Problem]

    @property
    def unpaired_volumes(self) -> list[str]:
        return [p.volume for p in self.pairs if p.volume and not p.segmentation]

    @property
    def unpaired_segmentations(self) -> list[str]:
        return [p.segmentation for p in self.pairs if p.segmentation and not p.volume]


def pairing_scope(path: str, scope: str, role_dirs: frozenset[str]) -> str:
    """The folder within which ``path`` pairs by name (``""``: the whole dataset).

    ``dataset``: names pair across all folders. ``folder``: only within the file's
    folder, role folders (``volume_dirs``, ``segmentation_dirs``) left out, so that
    ``A/imagesTr`` pairs with ``A/labelsTr``. ``auto`` (the default): as ``folder``
    when role folders are configured (a layout such as nnU-Net's, where each dataset
    folder pairs within itself), else as ``dataset``.
    """
    if scope == "dataset" or (scope == "auto" and not role_dirs):
        return ""
    folder = path.rpartition("/")[0]
    if not folder:
        return ""
    parts = folder.split("/")
    for i, part in enumerate(parts):
        if part in role_dirs:
            return "/".join(parts[:i])
    return folder


def pair_by_naming(infos: Iterable[NameInfo]) -> Pairing:
    volumes: dict[str, list[NameInfo]] = defaultdict(list)
    segmentations: dict[str, list[NameInfo]] = defaultdict(list)
    for info in infos:
        (volumes if info.role == VOLUME else segmentations)[info.key].append(info)
    pairs: list[Pair] = []
    problems: list[Problem] = []
    for key in sorted(volumes.keys() | segmentations.keys()):
        vols = volumes.get(key, [])
        if len(vols) > 1:
            problems.append(_ambiguous_volumes(vols))
            continue
        chosen, older, seg_problems = _latest(segmentations.get(key, []))
        problems.extend(seg_problems)
        vol = vols[0].path if vols else None
        if chosen is None and seg_problems and vol:
            continue  # the segmentation side is ambiguous: leave the volume out too
        seg = chosen.path if chosen else None
        version = chosen.version if chosen else None
        if vol or seg:
            how = "naming" if vol and seg else ""
            pairs.append(Pair(vol, seg, version, how, tuple(i.path for i in older)))
    return Pairing(pairs, problems)


def _ambiguous_volumes(vols: list[NameInfo]) -> Problem:
    paths = sorted(v.path for v in vols)
    message = f"{len(paths)} volumes share one name, so none is paired: {', '.join(paths)}"
    return make_problem("ambiguous", paths, message, {"key": vols[0].key})


def _latest(segs: list[NameInfo]) -> tuple[NameInfo | None, list[NameInfo], list[Problem]]:
    """The highest version, the older ones, and duplicate/gap problems."""
    if len(segs) < 2:
        return (segs[0] if segs else None), [], []
    by_version: dict[int, list[NameInfo]] = defaultdict(list)
    for s in segs:
        by_version[s.version or 0].append(s)
    problems = [_duplicate(v, group) for v, group in sorted(by_version.items()) if len(group) > 1]
    versions = sorted(v for v in by_version if v > 0)
    if versions and versions != list(range(versions[0], versions[-1] + 1)):
        problems.append(_gap(segs, versions))
    top = max(by_version)
    older = sorted((s for v, g in by_version.items() if v != top for s in g), key=_vkey)
    if len(by_version[top]) > 1:
        return None, older, problems
    return by_version[top][0], older, problems


def _vkey(info: NameInfo) -> tuple[int, str]:
    return (info.version or 0, info.path)


def _duplicate(version: int, group: list[NameInfo]) -> Problem:
    paths = sorted(i.path for i in group)
    label = f"version {version}" if version else "the unversioned segmentation"
    message = f"{len(paths)} files claim {label}: {', '.join(paths)}"
    return make_problem("duplicate_version", paths, message, {"version": version or None})


def _gap(segs: list[NameInfo], versions: list[int]) -> Problem:
    missing = sorted(set(range(versions[0], versions[-1] + 1)) - set(versions))
    paths = sorted(s.path for s in segs)
    listed = ", ".join(f"v{v}" for v in versions)
    message = f"segmentation versions {listed} skip {', '.join(f'v{v}' for v in missing)}"
    return make_problem("version_gap", paths, message, {"versions": versions, "missing": missing})


def pair_by_metadata(
    pairing: Pairing,
    read_geometry: GeometryReader,
    reference_keys: Sequence[str],
    position_tolerance: float,
    direction_tolerance: float,
) -> Pairing:
    """Pair what naming left unpaired, by header: an explicit reference, or the one
    volume whose grid matches. Unreadable headers become problems."""
    vols = pairing.unpaired_volumes
    segs = [p for p in pairing.pairs if p.segmentation and not p.volume]
    if not vols or not segs:
        return pairing
    problems = list(pairing.problems)
    geometries = _read_all(
        vols + [s.segmentation for s in segs if s.segmentation], read_geometry, problems
    )
    claims: dict[str, list[Pair]] = defaultdict(list)
    for seg in segs:
        assert seg.segmentation is not None
        target = _match(
            seg.segmentation,
            vols,
            geometries,
            reference_keys,
            position_tolerance,
            direction_tolerance,
            problems,
        )
        if target:
            claims[target].append(seg)
    matched: dict[str, Pair] = {}
    for vol, claimants in claims.items():
        if len(claimants) == 1:
            matched[vol] = claimants[0]
        else:
            paths = sorted(c.segmentation or "" for c in claimants)
            message = (
                f"{len(paths)} segmentations match volume {vol} by metadata, "
                f"so none is paired: {', '.join(paths)}"
            )
            problems.append(make_problem("ambiguous", [vol, *paths], message))
    used = {p.segmentation for p in matched.values()}
    pairs = [p for p in pairing.pairs if not (p.volume in matched or p.segmentation in used)]
    for vol, seg in matched.items():
        pairs.append(Pair(vol, seg.segmentation, seg.version, "metadata", seg.older))
    pairs.sort(key=lambda p: p.volume or p.segmentation or "")
    return Pairing(pairs, problems)


def _read_all(
    paths: list[str], read: GeometryReader, problems: list[Problem]
) -> dict[str, Geometry]:
    out: dict[str, Geometry] = {}
    for path in paths:
        try:
            geometry = read(path)
        except FileProblem as e:
            problems.append(make_problem("unreadable", [path], f"{path}: {e.reason}"))
            continue
        if geometry is not None:
            out[path] = geometry
    return out


def _match(
    seg: str,
    vols: list[str],
    geometries: dict[str, Geometry],
    reference_keys: Sequence[str],
    position_tolerance: float,
    direction_tolerance: float,
    problems: list[Problem],
) -> str | None:
    from volsegsync.geometry import same_grid

    geo = geometries.get(seg)
    if geo is None:
        return None
    named = _referenced(geo, vols, reference_keys)
    if named:
        return named
    candidates = [
        v
        for v in vols
        if v in geometries
        and same_grid(geometries[v], geo, position_tolerance, direction_tolerance)
    ]
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        message = (
            f"{seg} matches {len(candidates)} volumes by geometry, so it is not "
            f"paired: {', '.join(candidates)}"
        )
        problems.append(make_problem("ambiguous", [seg, *candidates], message))
    return None


def _referenced(geo: Geometry, vols: list[str], keys: Sequence[str]) -> str | None:
    for key in keys:
        value = geo.fields.get(key)
        if not value:
            continue
        name = value.strip().replace("\\", "/")
        hits = [v for v in vols if v == name or PurePosixPath(v).name == PurePosixPath(name).name]
        if len(hits) == 1:
            return hits[0]
    return None
