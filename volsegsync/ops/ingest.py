"""``volsegsync ingest``: add an annotator's delivery as new segmentation versions.

Every segmentation below FOLDER is matched to a volume of the dataset (by the
naming key, with or without a version postfix; with ``--by metadata`` also by
header: a reference field, or the single volume on the same voxel grid, through
:func:`volsegsync.pairing.pair_by_metadata`), checked as ``verify`` checks a
segmentation (geometry against its volume, labels), copied in as
``KEY-v(N+1)`` and recorded by the normal ``pair`` pipeline (index and store),
with a provenance line in ``.volsegsync/provenance.tsv``.

FOLDER is hostile input and never modified: files are opened read-only through
:func:`volsegsync.fsutil.open_in_dataset` with FOLDER as the root (no link out
of FOLDER is followed, a FIFO never blocks, only regular files are read), images
are decoded with the size limit of the dataset's config.

FOLDER may be another volsegsync dataset: its index is read (as hostile input)
and each recorded segmentation version keeps its version number.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from volsegsync.dataset import INDEX_FILE, META_DIR, Dataset, default_jobs
from volsegsync.errors import FileProblem, VolsegsyncError
from volsegsync.fsutil import (
    INDEX_LIMIT,
    inside,
    make_temp,
    new_file_mode,
    open_in_dataset,
    read_small,
)
from volsegsync.hashing import CHUNK, hash_file, new_hasher
from volsegsync.index import Entry, SegVersion, parse_index
from volsegsync.naming import SEGMENTATION, VOLUME
from volsegsync.ops.pair import PairReport, run_pair
from volsegsync.ops.snapshot import ProgressFactory
from volsegsync.pairing import Pair, Pairing, pair_by_metadata
from volsegsync.problems import Problem, apply_severities, make_problem
from volsegsync.provenance import Provenance, clean, read_provenance, write_provenance

MANIFEST = "handout.json"
MANIFEST_SCHEMA = "volsegsync.handout-manifest/1"
MANIFEST_LIMIT = 16 * 1024 * 1024
_SKIP_DIRS = frozenset({".git", META_DIR})
NOT_INGESTED = ("unmatched", "ambiguous", "failed", "skipped", "conflict")


class Item(NamedTuple):
    """What ingest did (or, in a dry run, would do) with one delivered file."""

    source: str  # path inside FOLDER
    status: str  # new, unchanged, ignored, or one of NOT_INGESTED
    reason: str
    key: str | None = None
    volume: str | None = None  # the dataset volume it belongs to
    target: str | None = None  # dataset path written (new) or equal to (unchanged)
    version: int | None = None
    how: str = ""  # name, metadata, index
    candidates: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()
    digest: str | None = None


class IngestReport(NamedTuple):
    folder: Path
    items: list[Item]
    warnings: list[str]
    dry_run: bool
    from_dataset: bool
    pair: PairReport | None  # the pair run that recorded the new versions


class _Found(NamedTuple):
    source: str
    key: str | None  # naming key (or the key recorded in a dataset's index)
    version: int | None  # version recorded in a dataset's index
    role: str | None


class _Here:
    """The dataset as it is now: volumes and segmentation versions per key."""

    def __init__(self, ds: Dataset, jobs: int) -> None:
        scan = ds.scan()
        self.volumes: dict[str, list[str]] = defaultdict(list)
        self.segs: dict[str, dict[int | None, list[str]]] = defaultdict(lambda: defaultdict(list))
        seg_files = {}
        self.taken = set(scan.files)
        self.ext_use: dict[str, int] = defaultdict(int)  # segmentation extension -> files
        for path, st in scan.files.items():
            info = ds.convention.parse(path)
            if info is None:
                continue
            if info.role == VOLUME:
                self.volumes[info.key].append(path)
            else:
                self.segs[info.key][info.version].append(path)
                self.ext_use[info.extension] += 1
                seg_files[path] = st
        self.key_of_volume = {v: k for k, vols in self.volumes.items() for v in vols}
        hashed, _ = ds.hashes(seg_files, jobs=jobs)
        self.digests: dict[str, dict[str, str]] = defaultdict(dict)  # key -> digest -> path
        self.recorded: dict[str, set[int]] = defaultdict(set)
        for key, versions in self.segs.items():
            for paths in versions.values():
                for p in paths:
                    if p in hashed:
                        self.digests[key][hashed[p].digest] = p
        try:
            index = ds.read_index()
        except VolsegsyncError:
            index = []
        self.index: dict[str, Entry] = {}
        for e in index:
            key = e.key or (self.key_of_volume.get(e.volume.path, "") if e.volume else "")
            if not key:
                continue
            self.index[key] = e
            for v in _seg_versions(e):
                self.digests[key].setdefault(v.record.digest, v.record.path)
                if v.version is not None:
                    self.recorded[key].add(v.version)

    def highest(self, key: str) -> int:
        on_disk = [v for v in self.segs.get(key, {}) if v is not None]
        return int(max([0, *on_disk, *self.recorded.get(key, ())]))

    def version_exists(self, key: str, version: int) -> bool:
        return version in self.recorded.get(key, ()) or bool(self.segs.get(key, {}).get(version))


def _seg_versions(e: Entry) -> list[SegVersion]:
    """Every recorded segmentation version of a case, the active one included."""
    active = [SegVersion(e.version, e.segmentation, e.seg_data)] if e.segmentation else []
    return [*e.older, *active]


def run_ingest(
    ds: Dataset,
    folder: Path,
    by: str | None = None,
    dry_run: bool = False,
    accept_problems: bool = False,
    message: str = "",
    annotator: str = "",
    jobs: int | None = None,
    progress: ProgressFactory | None = None,
) -> IngestReport:
    folder = _check_folder(ds, folder)
    by = by or ("metadata" if ds.config.pairing.by == "metadata" else "name")
    workers = jobs or default_jobs()
    warnings: list[str] = []
    from_dataset = (folder / META_DIR).is_dir() and (folder / INDEX_FILE).is_file()
    found, items = _from_dataset(folder, warnings) if from_dataset else _walk(ds, folder)
    here = _Here(ds, workers)
    digests, unreadable = _hash_all(ds, folder, [f.source for f in found], workers, progress)
    items.extend(unreadable)
    found = [f for f in found if f.source in digests]
    matched, rejected = _match(ds, folder, here, found, by)
    items.extend(rejected)
    plan = _plan(
        ds, folder, here, matched, digests, from_dataset, accept_problems, workers, progress
    )
    items.extend(plan)
    _outdated(folder, here, items, warnings)
    items.sort(key=lambda i: i.source)
    new = [i for i in items if i.status == "new"]
    pair_report = None
    if new and not dry_run:
        copied = _copy_in(ds, folder, new)
        items = [copied.get(i.source, i) for i in items]
        done = [i for i in items if i.status == "new"]
        _record_provenance(ds, folder, done, message, annotator)
        pair_report = run_pair(ds, jobs=jobs, progress=progress)
    return IngestReport(folder, items, warnings, dry_run, from_dataset, pair_report)


# -- the delivery ------------------------------------------------------------------------


def _check_folder(ds: Dataset, folder: Path) -> Path:
    if not folder.is_dir():
        raise VolsegsyncError(f"{folder}: not a folder")
    return outside_dataset(ds, folder, "deliver into a folder outside it")


def outside_dataset(ds: Dataset, folder: Path, advice: str) -> Path:
    """``folder`` resolved; refused (exit 2) when it is in the dataset or holds it."""
    real = Path(os.path.realpath(folder))
    root = Path(os.path.realpath(ds.root))
    if real == root or root in real.parents:
        raise VolsegsyncError(f"{folder}: inside the dataset; {advice}")
    if real in root.parents:
        raise VolsegsyncError(f"{folder}: holds the dataset; {advice}")
    return real


def _walk(ds: Dataset, folder: Path) -> tuple[list[_Found], list[Item]]:
    """Segmentation candidates below FOLDER; links are not descended into."""
    found: list[_Found] = []
    items: list[Item] = []
    seg_ext = tuple(ds.config.roles.segmentation_extensions)
    stack = [""]
    while stack:
        prefix = stack.pop()
        try:
            entries = list(os.scandir(folder / prefix if prefix else folder))
        except OSError as e:
            items.append(Item(prefix or ".", "skipped", f"cannot list: {e.strerror or e}"))
            continue
        for entry in entries:
            rel = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                if not (prefix == "" and entry.name in _SKIP_DIRS):
                    stack.append(rel + "/")
                continue
            if not ds.convention.is_candidate(rel):
                continue
            role, _ = ds.convention.role_of(rel)
            if role is None and rel.endswith(seg_ext):
                role = SEGMENTATION
            if entry.is_symlink() and inside(folder, folder / rel) is None:
                items.append(Item(rel, "skipped", "symbolic link leading out of the folder"))
                continue
            info = ds.convention.parse(rel)
            found.append(_Found(rel, info.key if info else None, None, role))
    return found, items


def _from_dataset(folder: Path, warnings: list[str]) -> tuple[list[_Found], list[Item]]:
    """Every segmentation version another dataset's index records."""
    try:
        raw = read_small(folder / INDEX_FILE, INDEX_LIMIT, "index")
        entries = parse_index(raw.decode("utf-8"), str(folder / INDEX_FILE))
    except UnicodeDecodeError:
        raise VolsegsyncError(f"{folder / INDEX_FILE}: not UTF-8") from None
    except OSError as e:
        raise VolsegsyncError(f"{folder / INDEX_FILE}: cannot read: {e.strerror or e}") from None
    found = []
    for entry in entries:
        key = entry.key or None
        for v in _seg_versions(entry):
            found.append(_Found(v.record.path, key, v.version, SEGMENTATION))
            if v.data is not None:
                warnings.append(f"{v.record.path}: detached NRRD data is not ingested")
    return found, []


def _hash_all(
    ds: Dataset,
    folder: Path,
    paths: list[str],
    workers: int,
    progress: ProgressFactory | None,
) -> tuple[dict[str, str], list[Item]]:
    tick = progress("hashing delivery", len(paths)) if progress and paths else None
    algorithm = ds.config.store.hash

    def one(rel: str) -> str | Item:
        try:
            return hash_file(rel, folder, algorithm)[0]
        except OSError as e:
            return Item(rel, "skipped", str(e.strerror or e))
        finally:
            if tick:
                tick(1)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, paths))
    digests = {p: r for p, r in zip(paths, results, strict=True) if isinstance(r, str)}
    return digests, [r for r in results if isinstance(r, Item)]


# -- matching ------------------------------------------------------------------------------


class _Match(NamedTuple):
    found: _Found
    key: str
    volume: str
    how: str


def _match(
    ds: Dataset, folder: Path, here: _Here, found: list[_Found], by: str
) -> tuple[list[_Match], list[Item]]:
    matched: list[_Match] = []
    rejected: list[Item] = []
    rest: list[_Found] = []
    for f in found:
        if f.role == VOLUME:
            rejected.append(Item(f.source, "ignored", "a volume, not a segmentation"))
            continue
        vols = here.volumes.get(f.key, []) if f.key else []
        if len(vols) == 1:
            assert f.key is not None
            matched.append(_Match(f, f.key, vols[0], "index" if f.version else "name"))
        elif len(vols) > 1:
            reason = f"{len(vols)} volumes share the key {f.key}"
            rejected.append(Item(f.source, "ambiguous", reason, f.key, candidates=tuple(vols)))
        else:
            rest.append(f)
    if by != "metadata" or not rest:
        for f in rest:
            reason = f"no volume has the key {f.key}" if f.key else "the name holds no key"
            if by != "metadata":
                reason += " (--by metadata also matches by header)"
            rejected.append(Item(f.source, "unmatched", reason, f.key))
        return matched, rejected
    by_meta, meta_rejected = _match_metadata(ds, folder, here, rest)
    return matched + by_meta, rejected + meta_rejected


def _match_metadata(
    ds: Dataset, folder: Path, here: _Here, rest: list[_Found]
) -> tuple[list[_Match], list[Item]]:
    """Header matching through pairing.pair_by_metadata, one delivered file at a time
    (named ``/PATH`` there: a dataset path never starts with ``/``) against the volumes
    that can share its grid (:func:`_may_share_grid`: a cheap, conservative filter, so
    500 files against 500 volumes are not 250,000 full comparisons); all volumes when
    a reference field may name one."""
    from volsegsync.headers import read_geometry

    geometries: dict[str, Any] = {}
    rejected: list[Item] = []
    for vol in sorted(here.key_of_volume):
        with contextlib.suppress(FileProblem):  # verify reports an unreadable volume
            geometries[vol] = read_geometry(ds.root / vol, ds.root)
    for f in rest:
        try:
            geometries["/" + f.source] = read_geometry(folder / f.source, folder)
        except FileProblem as e:
            rejected.append(Item(f.source, "skipped", e.reason))
    volumes = [v for v in sorted(here.key_of_volume) if v in geometries]
    keys = ds.config.pairing.reference_keys
    tol = ds.config.verify
    claims: dict[str, list[_Found]] = defaultdict(list)
    for f in rest:
        geo = geometries.get("/" + f.source)
        if geo is None:
            continue
        named = any(geo.fields.get(k) for k in keys)
        candidates = [v for v in volumes if named or _may_share_grid(geometries[v], geo)]
        pairs = [Pair(v, None, None, "") for v in candidates]
        result = pair_by_metadata(
            Pairing([*pairs, Pair(None, "/" + f.source, None, "")], []),
            geometries.__getitem__, keys, tol.position_tolerance, tol.direction_tolerance,
        )  # fmt: skip
        hit = [p.volume for p in result.pairs if p.how == "metadata" and p.volume]
        ambiguous = [p for p in result.problems if p.category == "ambiguous"]
        if hit:
            claims[hit[0]].append(f)
        elif ambiguous:
            vols = tuple(x for x in ambiguous[0].files if not x.startswith("/"))
            reason = f"matches {len(vols)} volumes by geometry"
            rejected.append(Item(f.source, "ambiguous", reason, candidates=vols))
        else:
            reason = "no volume has its key, a reference field naming it, or its voxel grid"
            rejected.append(Item(f.source, "unmatched", reason, f.key))
    matched = []
    for vol, found in sorted(claims.items()):
        if len(found) == 1:
            matched.append(_Match(found[0], here.key_of_volume[vol], vol, "metadata"))
            continue
        sources = tuple(sorted(f.source for f in found))
        for f in found:
            reason = f"{len(found)} delivered files match volume {vol} by header"
            rejected.append(Item(f.source, "ambiguous", reason, candidates=(vol, *sources)))
    return matched, rejected


def _may_share_grid(a: Any, b: Any) -> bool:
    """False only when :func:`volsegsync.geometry.same_grid` is surely false: another
    shape, or a spacing more than 1 % apart (far beyond its tolerances)."""
    if a.shape != b.shape:
        return False
    return all(abs(x - y) <= 0.01 * max(x, y) for x, y in zip(a.spacing, b.spacing, strict=True))


# -- planning: versions, names, checks ----------------------------------------------------


def _plan(
    ds: Dataset,
    folder: Path,
    here: _Here,
    matched: list[_Match],
    digests: dict[str, str],
    from_dataset: bool,
    accept_problems: bool,
    workers: int,
    progress: ProgressFactory | None,
) -> list[Item]:
    items: list[Item] = []
    by_key: dict[str, list[_Match]] = defaultdict(list)
    for m in matched:
        by_key[m.key].append(m)
    todo: list[tuple[_Match, str, int | None]] = []
    for key, group in sorted(by_key.items()):
        group.sort(key=lambda m: (m.found.version or 0, m.found.source))
        seen: dict[str, str] = {}
        fresh: list[_Match] = []
        for m in group:
            digest = digests[m.found.source]
            same = here.digests.get(key, {}).get(digest) or seen.get(digest)
            if same:
                items.append(_item(m, "unchanged", f"same content as {same}", same, digest))
            else:
                seen[digest] = m.found.source
                fresh.append(m)
        if not from_dataset and len(fresh) > 1:
            sources = tuple(m.found.source for m in fresh)
            for m in fresh:
                reason = f"{len(fresh)} delivered files for {key}: which is the new version?"
                items.append(
                    _item(m, "ambiguous", reason, None, digests[m.found.source])._replace(
                        candidates=sources
                    )
                )
            continue
        version = here.highest(key)
        for m in fresh:
            wanted = m.found.version if from_dataset else None
            if wanted is not None and here.version_exists(key, wanted):
                reason = f"v{wanted} exists here with other content"
                items.append(_item(m, "conflict", reason, None, digests[m.found.source]))
                continue
            if wanted is None:
                version += 1
            todo.append((m, digests[m.found.source], wanted if wanted is not None else version))
    tick = progress("checking", len(todo)) if progress and todo else None
    items.extend(_checked(ds, folder, here, todo, accept_problems, workers, tick))
    return items


def _item(m: _Match, status: str, reason: str, target: str | None, digest: str) -> Item:
    return Item(m.found.source, status, reason, m.key, m.volume, target, None, m.how, digest=digest)


def _checked(
    ds: Dataset,
    folder: Path,
    here: _Here,
    todo: list[tuple[_Match, str, int | None]],
    accept_problems: bool,
    workers: int,
    tick: ProgressTick | None,
) -> list[Item]:
    def one(job: tuple[_Match, str, int | None]) -> Item:
        m, digest, version = job
        base = Item(m.found.source, "new", "", m.key, m.volume, None, version, m.how, digest=digest)
        try:
            target = _target(ds, here, m, version)
        except VolsegsyncError as e:
            return base._replace(status="failed", reason=str(e))
        problems = _problems(ds, folder, m.found.source, m.volume)
        errors = [p for p in problems if p.severity == "error"]
        if errors and not accept_problems:
            reason = "; ".join(p.message for p in errors[:3]) + " (--accept-problems adds it)"
            return base._replace(status="failed", reason=reason, problems=tuple(problems))
        reason = f"matched by {m.how} to {m.volume}"
        if errors:
            reason += f"; added with {len(errors)} problems (--accept-problems)"
        return base._replace(target=target, reason=reason, problems=tuple(problems))

    def ticking(job: tuple[_Match, str, int | None]) -> Item:
        try:
            return one(job)
        finally:
            if tick:
                tick(1)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        items = list(pool.map(ticking, todo))
    claimed: set[str] = set()
    out = []
    for item in items:  # two targets on one name would overwrite each other
        if item.target and item.target in claimed:
            item = item._replace(status="conflict", reason=f"{item.target} is claimed twice")
        elif item.target:
            claimed.add(item.target)
        out.append(item)
    return out


def _problems(ds: Dataset, folder: Path, source: str, volume: str) -> list[Problem]:
    """What verify would report for this segmentation against its volume: geometry
    from the headers, then content (integrity, labels)."""
    from volsegsync.content import analyse, label_problems
    from volsegsync.geometry import compare
    from volsegsync.headers import data_file_target, detached_data_name, read_geometry

    try:
        seg_geo = read_geometry(folder / source, folder)
        vol_geo = read_geometry(ds.root / volume, ds.root)
    except FileProblem as e:
        category = getattr(e, "category", "unreadable")
        return [make_problem(category, [source], f"{source}: {e.reason}")]
    name = detached_data_name(seg_geo.fields)
    if name is not None:
        target = data_file_target(source, name)
        message = f"{source}: detached NRRD data ({target}): deliver an attached .nrrd"
        return [make_problem("unreadable", [source], message)]
    tol = ds.config.verify
    problems = [
        make_problem(d.category, (source, volume), f"{source}: {d.message}", d.details)
        for d in compare(vol_geo, seg_geo, tol.position_tolerance, tol.direction_tolerance)
    ]
    report = analyse(Path(source), SEGMENTATION, folder, ds.config.limits.max_image_bytes)
    problems.extend(label_problems(source, report, ds.config.verify.labels))
    return apply_severities(problems, ds.config.verify.severity)


def _family(name: str) -> str:
    lower = name.lower()
    return "nifti" if lower.endswith((".nii", ".nii.gz")) else "nrrd"


def _target(ds: Dataset, here: _Here, m: _Match, version: int | None) -> str:
    """``KEY-vN`` with the dataset's folder and extension rules for this pair."""
    conv = ds.convention
    family = _family(m.found.source)
    existing = sorted(
        ((v or 0, p) for v, paths in here.segs.get(m.key, {}).items() for p in paths),
        reverse=True,
    )
    entry = here.index.get(m.key)
    if not existing and entry is not None and entry.segmentation is not None:
        existing = [(entry.version or 0, entry.segmentation.path)]
    if existing:
        folder = existing[0][1].rpartition("/")[0]
        exts = [conv.extension_of(existing[0][1]) or ""]
    else:
        folder = _seg_folder(ds, m.volume)
        exts = []
    by_use = sorted(ds.config.roles.segmentation_extensions, key=lambda e: -here.ext_use[e])
    exts += [e for e in by_use if e not in exts]  # the extension most pairs use first
    exts = [e for e in exts if e and _family(e) == family]
    if not exts:
        raise VolsegsyncError(f"the dataset has no segmentation extension for {family} files")
    if m.found.version == version and m.how == "index" and m.found.source not in here.taken:
        info = conv.parse(m.found.source)
        if info and info.role == SEGMENTATION and info.key == m.key and info.version == version:
            return m.found.source  # a collaborator's dataset: its name, as recorded
    sep = ds.config.naming.separator
    suffix = ds.config.roles.segmentation_suffix
    for ext in exts:
        stem = m.key if version is None else f"{m.key}{sep}v{version}"
        name = f"{stem}{suffix}{ext}"
        path = f"{folder}/{name}" if folder else name
        info = conv.parse(path)
        if info and info.role == SEGMENTATION and info.key == m.key and info.version == version:
            if path in here.taken:
                raise VolsegsyncError(f"{path} exists already")
            return path
    raise VolsegsyncError(f"no name for version {version} of {m.key} follows the naming rules")


def _seg_folder(ds: Dataset, volume: str) -> str:
    folder = volume.rpartition("/")[0]
    roles = ds.config.roles
    if not roles.segmentation_dirs:
        return folder
    parts = folder.split("/") if folder else []
    for i, part in enumerate(parts):
        if part in roles.volume_dirs:
            parts[i] = roles.segmentation_dirs[0]
            return "/".join(parts)
    return "/".join([*parts, roles.segmentation_dirs[0]])


# -- the handout manifest ------------------------------------------------------------------


def read_manifest(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The handout manifest in FOLDER (hostile input), or a note why it is ignored."""
    path = folder / MANIFEST
    try:
        data = json.loads(read_small(path, MANIFEST_LIMIT, "handout manifest"))
    except FileNotFoundError:
        return None, None
    except (VolsegsyncError, ValueError, RecursionError) as e:
        return None, f"{MANIFEST}: ignored: {str(e).splitlines()[0][:200]}"
    if not isinstance(data, dict) or data.get("schema") != MANIFEST_SCHEMA:
        return None, f"{MANIFEST}: ignored: not a {MANIFEST_SCHEMA} document"
    if not isinstance(data.get("items"), list):
        return None, f"{MANIFEST}: ignored: no list of items"
    return data, None


def _outdated(folder: Path, here: _Here, items: list[Item], warnings: list[str]) -> None:
    manifest, note = read_manifest(folder)
    if note:
        warnings.append(note)
    if manifest is None:
        return
    revision = manifest.get("revision")
    at = f" (handed out at revision {str(revision)[:12]})" if isinstance(revision, str) else ""
    handed: dict[str, int] = {}
    for row in manifest["items"]:
        if isinstance(row, dict) and isinstance(row.get("key"), str):
            version = row.get("version")
            handed[row["key"]] = version if isinstance(version, int) else 0
    keys = sorted({i.key for i in items if i.key and i.status == "new"})
    for key in keys:
        if key not in handed:
            continue
        now = here.highest(key)
        if now > handed[key]:
            was = f"v{handed[key]}" if handed[key] else "no segmentation"
            warnings.append(
                f"{key}: the delivery was based on {was}{at}, but v{now} was recorded since"
            )


# -- writing -------------------------------------------------------------------------------


def _copy_in(ds: Dataset, folder: Path, new: list[Item]) -> dict[str, Item]:
    """Copy each new file into the dataset (no file overwritten), under the lock."""
    out: dict[str, Item] = {}
    mode = new_file_mode()
    algorithm = ds.config.store.hash
    with ds.lock():
        for item in new:
            assert item.target is not None
            try:
                _copy_one(ds, folder, item.source, item.target, item.digest, algorithm, mode)
            except (OSError, VolsegsyncError) as e:
                why = (
                    str(e) if isinstance(e, VolsegsyncError) else f"cannot copy: {e.strerror or e}"
                )
                out[item.source] = item._replace(status="skipped", reason=why, target=None)
    return out


def _copy_one(
    ds: Dataset, folder: Path, source: str, target: str, digest: str | None, algorithm: str,
    mode: int,
) -> None:  # fmt: skip
    dest = ds.root / target
    parent = dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    if parent != ds.root and inside(ds.root, parent) is None:
        raise VolsegsyncError(f"{target}: its folder leads out of the dataset; not written")
    hasher = new_hasher(algorithm)
    fd, tmp = make_temp(dest)
    try:
        with open_in_dataset(folder, source) as src, os.fdopen(fd, "wb") as out:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while n := src.readinto(buf):
                hasher.update(view[:n])
                out.write(view[:n])
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        if hasher.hexdigest() != digest:
            raise VolsegsyncError(f"{source}: changed while being ingested; not added")
        os.link(tmp, dest)  # never replaces an existing file
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _record_provenance(
    ds: Dataset, folder: Path, done: list[Item], message: str, annotator: str
) -> None:
    if not done:
        return
    rows, _ = read_provenance(ds.meta_dir)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    for item in done:
        assert item.target is not None and item.digest is not None
        source = clean(f"{folder.name}/{item.source}")
        rows[item.target] = Provenance(
            item.target, item.digest, source, clean(annotator), clean(message), date
        )
    with ds.lock():
        write_provenance(ds.meta_dir, rows)


def not_ingested(report: IngestReport) -> list[Item]:
    return [i for i in report.items if i.status in NOT_INGESTED]


def status_counts(items: list[Item]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for i in items:
        counts[i.status] += 1
    return dict(counts)


ProgressTick = Callable[[int], None]
