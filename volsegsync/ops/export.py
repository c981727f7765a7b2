"""``volsegsync export``: hand the verified pairs to a training framework.

Formats: ``nnunet`` (a raw nnU-Net v2 dataset folder), ``decathlon`` (an MSD /
MONAI datalist with the files in MSD's layout) and ``csv`` (one row per pair).
The pairs come from the dataset as it is now (:func:`collect_cases`: scan,
hash, pair, verify); a pair with an error-severity problem is exported only
with ``include_failing``. Writing is idempotent: OUT keeps a manifest of what
each file was made from, and a re-run writes only what changed.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from volsegsync.dataset import META_DIR, Dataset, default_jobs
from volsegsync.errors import FileProblem, VolsegsyncError
from volsegsync.index import RESERVED_DIRS
from volsegsync.ops.snapshot import ProgressFactory, take_snapshot
from volsegsync.scan import ScanResult
from volsegsync.workers import parallel_map

if TYPE_CHECKING:
    from volsegsync.content import ContentReport
    from volsegsync.export_target import Manifest, Target

FORMATS = ("nnunet", "decathlon", "csv")
NIFTI_GZ = ".nii.gz"
DATASET_JSON = "dataset.json"
SPLITS_JSON = "splits_final.json"
CSV_COLUMNS = [
    "case",
    "volume",
    "segmentation",
    "channels",
    "version",
    "volume_hash",
    "segmentation_hash",
    "shape",
    "spacing",
    "origin",
    "axes",
    "verified",
    "reasons",
    "fold",
]


class Case(NamedTuple):
    """One pair as the export sees it. Paths are relative to the dataset root."""

    case: str  # the pairing key, e.g. C01-Back_V001-D22061998 or BRATS_001
    channels: tuple[tuple[str, str], ...]  # (channel id "0000", volume path), ascending
    segmentation: str
    version: int | None
    digests: Mapping[str, str]  # path -> xxh3-128 of every file above
    reasons: tuple[str, ...]  # why it fails verify (error problems); empty when it passes
    blocked: tuple[str, ...] = ()  # why it may not be read at all (even --include-failing)

    @property
    def volume(self) -> str:
        return self.channels[0][1]

    @property
    def verified(self) -> bool:
        return not self.reasons


class Skipped(NamedTuple):
    case: str
    files: tuple[str, ...]
    reasons: tuple[str, ...]


class ExportReport(NamedTuple):
    fmt: str
    out: Path  # resolved
    exported: list[str]  # cases exported (in OUT now)
    skipped: list[Skipped]  # cases left out, with their reasons
    written: list[str]  # files written in this run, relative to OUT
    unchanged: int  # files already up to date
    removed: list[str]  # files of an earlier export no longer wanted
    placed: dict[str, int]  # how volumes got there: reflink / hardlink / copy / gzip / convert
    labels: dict[str, int]  # label name -> value, as written to dataset.json
    folds: dict[str, int]  # case -> fold, with ``folds``
    warnings: list[str]


# --------------------------------------------------------------------------- collect


def collect_cases(
    ds: Dataset,
    fast: bool = False,
    jobs: int | None = None,
    progress: ProgressFactory | None = None,
    scan: ScanResult | None = None,
) -> list[Case]:
    """Every complete pair of the dataset now, with the reasons it fails ``verify``."""
    from volsegsync.ops.verify import run_verify

    snap = take_snapshot(ds, jobs=jobs, progress=progress, scan=scan)
    digests = {r.path: r.digest for e in snap.entries for r in e.records()}
    key_of = {e.volume.path: e.key for e in snap.entries if e.volume is not None}
    channels_of = {
        e.volume.path: tuple((c, r.path) for c, r in e.channels)
        for e in snap.entries
        if e.volume is not None and e.channels
    }
    report = run_verify(ds, fast=fast, jobs=jobs, progress=progress)
    errors: dict[str, list[str]] = defaultdict(list)
    for p in report.problems:
        if p.severity == "error":
            for f in p.files:
                errors[f].append(f"[{p.category}] {p.message}")
    root = os.path.realpath(ds.root)
    folders: dict[str, bool] = {}
    cases = []
    for pair in snap.pairing.pairs:  # every pair (report.pairs: those problems touch)
        if not (pair.volume and pair.segmentation):
            continue
        info = ds.convention.parse(pair.volume)
        key = key_of.get(pair.volume) or (info.key if info else Path(pair.volume).name)
        channels = channels_of.get(pair.volume, (("0000", pair.volume),))
        files = (*(p for _, p in channels), pair.segmentation)
        reasons = list(dict.fromkeys(r for f in files for r in errors.get(f, ())))
        blocked = []
        for f in files:
            if not _stays_inside(f"{ds.root}/{f}", root, folders):
                blocked.append(f"{f}: a symbolic link pointing outside the dataset: not read")
            elif snap.scan.stat(f) is None:  # an indexed file kept while missing
                blocked.append(f"{f}: missing from disk")
            elif f not in digests:
                blocked.append(f"{f}: not hashed (changed while reading?)")
        cases.append(
            Case(
                key,
                channels,
                pair.segmentation,
                pair.version,
                {f: digests.get(f, "") for f in files},
                tuple([*blocked, *reasons]),
                tuple(blocked),
            )
        )
    cases.sort(key=lambda c: c.case)
    return cases


def _cases_memo(
    ds: Dataset,
    manifest: Manifest | None,
    fast: bool,
    jobs: int | None,
    progress: ProgressFactory | None,
) -> list[Case]:
    """:func:`collect_cases`, remembered in OUT's manifest for the dataset exactly as it
    is: every path and stat, the config (and volsegsync's version) and the index text
    decide ``verify``'s verdicts. Not remembered while a file is too recent for its
    stat to tell a later change (the racy window of the stat cache)."""
    import xxhash

    from volsegsync.hashing import racy_limit
    from volsegsync.scan import fingerprint

    scan = ds.scan()
    if manifest is None:
        return collect_cases(ds, fast, jobs, progress, scan)
    try:
        index = xxhash.xxh3_128_hexdigest(ds.index_path.read_bytes())
    except OSError:
        index = "-"
    key = "|".join((ds.state_key("export-cases", str(fast)), fingerprint(scan), index))
    hit = manifest.recall("cases", key)
    if isinstance(hit, list):
        try:
            return [_case_from_plain(row) for row in hit]
        except (TypeError, ValueError, KeyError):
            pass
    cases = collect_cases(ds, fast, jobs, progress, scan)
    limit = racy_limit()
    if all(st.mtime_ns < limit for st in scan.files.values()):
        manifest.remember("cases", key, [_case_to_plain(c) for c in cases])
    return cases


def _case_to_plain(c: Case) -> list[Any]:
    return [
        c.case,
        [list(ch) for ch in c.channels],
        c.segmentation,
        c.version,
        dict(c.digests),
        list(c.reasons),
        list(c.blocked),
    ]


def _case_from_plain(row: Any) -> Case:
    case, channels, seg, version, digests, reasons, blocked = row
    if version is not None and not isinstance(version, int):
        raise TypeError("version")
    return Case(
        str(case),
        tuple((str(c), str(p)) for c, p in channels),
        str(seg),
        version,
        {str(k): str(v) for k, v in digests.items()},
        tuple(str(r) for r in reasons),
        tuple(str(r) for r in blocked),
    )


def _stays_inside(path: str, root: str, folders: dict[str, bool]) -> bool:
    """Whether ``path`` resolves inside ``root`` (each folder resolved once)."""
    parent = path.rpartition("/")[0]
    ok = folders.get(parent)
    if ok is None:
        ok = folders[parent] = _inside(os.path.realpath(parent), root)
    if ok and os.path.islink(path):
        return _inside(os.path.realpath(path), root)
    return ok


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


# --------------------------------------------------------------------------- export


def run_export(
    ds: Dataset,
    fmt: str,
    out: Path | str,
    include_failing: bool = False,
    folds: int | None = None,
    group_by: str | None = None,
    channel_names: Mapping[str, str] | None = None,
    fast: bool = False,
    force: bool = False,
    jobs: int | None = None,
    progress: ProgressFactory | None = None,
) -> ExportReport:
    """Export the dataset's pairs to ``out`` in format ``fmt`` (see the module doc)."""
    from volsegsync.export_target import Manifest, assign_folds

    if fmt not in FORMATS:
        raise VolsegsyncError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    target = _target(ds, Path(out), fmt)
    manifest = Manifest(target, fmt) if fmt != "csv" else None
    cases = _cases_memo(ds, manifest, fast, jobs, progress)
    chosen = [c for c in cases if not c.blocked and (include_failing or c.verified)]
    skipped = [
        Skipped(c.case, (*(p for _, p in c.channels), c.segmentation), c.reasons)
        for c in cases
        if c.blocked or not (include_failing or c.verified)
    ]
    fold_of = assign_folds(_groups(ds, chosen, group_by), folds) if folds else {}
    if fmt == "csv":
        return _export_csv(ds, target, Path(out).name, chosen, skipped, fold_of, force)
    assert manifest is not None
    if manifest.foreign and not force:
        raise VolsegsyncError(
            f"{target.root}: holds an export in another format; use another folder or --force"
        )
    labels, warnings = _labels_memo(ds, manifest, chosen, jobs)
    if not channel_names:
        channel_names, found = _layout_channels(ds)
        warnings += found
    plans = [_plan(ds, c, fmt) for c in chosen]
    splits = fmt == "nnunet" and bool(fold_of)
    _refuse_foreign(target, manifest, plans, force, splits)
    written, placed, failed, unchanged = _materialise(ds, target, manifest, plans, jobs, progress)
    for case, reason in failed.items():
        c = next(c for c in chosen if c.case == case)
        skipped.append(Skipped(case, (*(p for _, p in c.channels), c.segmentation), (reason,)))
    exported = [c for c in chosen if c.case not in failed]
    wanted = {rel for p in plans if p.case not in failed for rel, *_ in p.files}
    wanted |= {DATASET_JSON, SPLITS_JSON}
    removed = [rel for rel in sorted(manifest.entries) if rel not in wanted]
    for rel in removed:
        target.remove(rel)
        manifest.forget(rel)
    fold_of = {c: f for c, f in fold_of.items() if c not in failed}
    doc = (
        _nnunet_json(exported, labels, channel_names)
        if fmt == "nnunet"
        else _decathlon_json(exported, labels, channel_names, fold_of, plans)
    )
    written += _write_if_changed(target, manifest, DATASET_JSON, _json_bytes(doc))
    if fmt == "nnunet" and fold_of:
        written += _write_if_changed(target, manifest, SPLITS_JSON, _json_bytes(_splits(fold_of)))
    elif SPLITS_JSON in manifest.entries:
        target.remove(SPLITS_JSON)
        manifest.forget(SPLITS_JSON)
        removed.append(SPLITS_JSON)
    manifest.save()
    warnings += _label_warnings(fmt, labels)
    skipped.sort(key=lambda s: s.case)
    return ExportReport(
        fmt,
        target.root,
        [c.case for c in exported],
        skipped,
        sorted(written),
        unchanged,
        removed,
        dict(sorted(placed.items())),
        labels,
        fold_of,
        warnings,
    )


def _target(ds: Dataset, out: Path, fmt: str) -> Target:
    """The export root, refused where writing could touch the dataset."""
    from volsegsync.export_target import Target
    from volsegsync.scan import _excluded

    folder = out.parent if fmt == "csv" else out
    if fmt != "csv" and out.is_symlink() and not out.is_dir():
        raise VolsegsyncError(f"{out}: a symbolic link to no folder")
    if fmt == "csv" and out.is_symlink():
        raise VolsegsyncError(f"{out}: a symbolic link; the CSV is written as a new file only")
    real = Path(os.path.realpath(folder))
    root = Path(os.path.realpath(ds.root))
    if _inside(str(root), str(real)) and fmt != "csv":
        raise VolsegsyncError(f"{out}: holds the dataset itself; export to a folder outside it")
    if _inside(str(real), str(root)) and real != root:
        rel = real.relative_to(root).as_posix()
        if rel.split("/")[0] in RESERVED_DIRS | {META_DIR}:
            raise VolsegsyncError(f"{out}: inside {rel.split('/')[0]}/; export elsewhere")
        if fmt != "csv" and not _excluded(rel, ds.config.exclude):
            raise VolsegsyncError(
                f"{out}: inside the dataset, where its images would be scanned as dataset "
                f"files; export outside the dataset or add {rel!r} to scan.exclude"
            )
    if fmt == "csv" and ds.convention.is_candidate(out.name):
        raise VolsegsyncError(f"{out}: has an image extension; name the CSV file *.csv")
    try:
        real.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VolsegsyncError(f"{out}: cannot create the folder: {e.strerror or e}") from None
    return Target(real)


def _groups(ds: Dataset, cases: list[Case], field: str | None) -> dict[str, list[str]]:
    """Cases grouped by a naming field (default: the first), e.g. the patient prefix."""
    fields = list(ds.config.naming.fields)
    name = field or fields[0]
    if name != "case" and name not in fields:
        raise VolsegsyncError(
            f"--group-by {name}: not a naming field (fields: {', '.join(fields)}, or 'case')"
        )
    sep = ds.config.naming.separator
    groups: dict[str, list[str]] = defaultdict(list)
    for c in cases:
        parts = c.case.split(sep)
        if name == "case" or len(parts) != len(fields):
            groups[c.case].append(c.case)
        else:
            groups[parts[fields.index(name)]].append(c.case)
    return groups


# --------------------------------------------------------------------------- labels


def content_reports(
    ds: Dataset, items: Iterable[tuple[str, str, str]], jobs: int | None = None
) -> dict[str, ContentReport]:
    """Content reports (values, Slicer segments) of ``(path, digest, role)`` items,
    from the content cache ``verify`` fills, decoding only what it lacks."""
    from volsegsync.content import ContentCache
    from volsegsync.ops.verify import _analyse_task

    out: dict[str, ContentReport] = {}
    limit = ds.config.limits.max_image_bytes
    with ContentCache(ds.state_dir / "content.db") as cache:
        todo = []
        for path, digest, role in items:
            hit = cache.get(digest, role, path, limit) if digest else None
            if hit is not None:
                out[path] = hit
            else:
                todo.append((path, digest, role))
        tasks = [(str(ds.root), path, role, limit) for path, _, role in todo]
        for (path, digest, role), report in zip(
            todo, parallel_map(_analyse_task, tasks, jobs or default_jobs()), strict=True
        ):
            out[path] = report
            if digest and report.error is None:
                cache.put(digest, role, report, path, limit)
    return out


def dataset_labels(
    ds: Dataset, cases: list[Case], jobs: int | None = None
) -> tuple[dict[str, int], list[str]]:
    """Label name -> value for dataset.json, and warnings.

    The config's ``verify.labels`` when set; else the Slicer segment names and
    label values found in the segmentations, and ``label_N`` for a value that no
    segment names. Background (0) is always ``background``.
    """
    warnings: list[str] = []
    declared = ds.config.verify.labels
    if declared:
        names = {value: name for value, name in declared.items()}
    else:
        reports = content_reports(
            ds, ((c.segmentation, c.digests[c.segmentation], "segmentation") for c in cases), jobs
        )
        seen: dict[int, Counter[str]] = defaultdict(Counter)
        values: set[int] = set()
        for report in reports.values():
            values.update(report.values)
            for name, value in report.segments:
                seen[value][name] += 1
        names = {}
        for value in sorted(values | set(seen)):
            counts = seen.get(value)
            if counts:
                name = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
                if len(counts) > 1:
                    others = ", ".join(sorted(n for n in counts if n != name))
                    warnings.append(f"label {value} is named {name!r} and also {others}")
                names[value] = name
            else:
                names[value] = f"label_{value}"
    names[0] = "background"
    labels: dict[str, int] = {}
    for value in sorted(names):
        name = names[value]
        if name in labels:
            warnings.append(f"label name {name!r} names values {labels[name]} and {value}")
            name = f"{name}_{value}"
        labels[name] = value
    return labels, warnings


def _layout_channels(ds: Dataset) -> tuple[dict[str, str], list[str]]:
    """Channel names from the dataset's own dataset.json (nnU-Net, MSD), if any."""
    from volsegsync.errors import ConfigError
    from volsegsync.layouts import read_dataset_json

    try:
        return read_dataset_json(ds.root).channel_names, []
    except ConfigError as e:
        return {}, [f"channel names not taken from it: {e}"]


def _labels_memo(
    ds: Dataset, manifest: Manifest, cases: list[Case], jobs: int | None
) -> tuple[dict[str, int], list[str]]:
    """:func:`dataset_labels`, remembered in the manifest by the segmentations' hashes."""
    from volsegsync.export_target import source_key

    declared = sorted(ds.config.verify.labels.items())
    key = source_key("labels", declared, *(c.digests[c.segmentation] for c in cases))
    hit = manifest.recall("labels", key)
    if isinstance(hit, list) and len(hit) == 2:
        return {str(k): int(v) for k, v in hit[0].items()}, [str(w) for w in hit[1]]
    labels, warnings = dataset_labels(ds, cases, jobs)
    manifest.remember("labels", key, [labels, warnings])
    return labels, warnings


def _label_warnings(fmt: str, labels: Mapping[str, int]) -> list[str]:
    values = sorted(labels.values())
    if fmt == "nnunet" and values != list(range(len(values))):
        return [
            f"label values {values} are not consecutive from 0: nnU-Net v2 refuses such a "
            "dataset (labels are exported unchanged, never renumbered)"
        ]
    return []


# --------------------------------------------------------------------------- planning


class Plan(NamedTuple):
    case: str
    image_files: tuple[str, ...]  # relative to OUT, channel order
    label_file: str
    files: tuple[tuple[str, str, str, str], ...]  # (rel, action, source path, source key)


def _plan(ds: Dataset, c: Case, fmt: str) -> Plan:
    from volsegsync.export_target import source_key

    multi = len(c.channels) > 1
    images = []
    files = []
    for channel, path in c.channels:
        if fmt == "nnunet":
            rel = f"imagesTr/{c.case}_{channel}{NIFTI_GZ}"
        else:
            rel = f"imagesTr/{c.case}_{channel}{NIFTI_GZ}" if multi else f"imagesTr/{c.case}"
            rel += "" if multi else NIFTI_GZ
        action = _volume_action(path)
        images.append(rel)
        files.append((rel, action, path, source_key(action, c.digests[path])))
    label = f"labelsTr/{c.case}{NIFTI_GZ}"
    declared = sorted(ds.config.verify.labels.items())
    key = source_key("label", c.digests[c.segmentation], c.digests[c.volume], declared)
    files.insert(0, (label, "label", c.segmentation, key))
    return Plan(c.case, tuple(images), label, tuple(files))


def _volume_action(path: str) -> str:
    name = path.lower()
    if name.endswith(".nii.gz"):
        return "link"
    if name.endswith(".nii"):
        return "gzip"
    return "convert"


def _refuse_foreign(
    target: Target, manifest: Manifest, plans: list[Plan], force: bool, splits: bool
) -> None:
    if force:
        return
    names = [
        DATASET_JSON,
        *([SPLITS_JSON] if splits else []),
        *(r for p in plans for r, *_ in p.files),
    ]
    foreign = [
        rel for rel in names if not manifest.owns(rel) and os.path.lexists(target.root / rel)
    ]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise VolsegsyncError(
            f"{target.root / foreign[0]}{more}: not written by volsegsync export, "
            "left alone; export to an empty folder, or use --force to replace them"
        )


# --------------------------------------------------------------------------- writing


def _materialise(
    ds: Dataset,
    target: Target,
    manifest: Manifest,
    plans: list[Plan],
    jobs: int | None,
    progress: ProgressFactory | None,
) -> tuple[list[str], Counter[str], dict[str, str], int]:
    """Write every file not already fresh; returns written, how, failed cases, unchanged."""
    for folder in sorted({rel.rpartition("/")[0] for p in plans for rel, *_ in p.files}):
        target.path(f"{folder}/-")  # made (and checked) once, before the workers start
    todo = []
    unchanged = 0
    for plan in plans:
        stale = tuple(f for f in plan.files if not manifest.fresh(f[0], f[3]))
        unchanged += len(plan.files) - len(stale)
        if stale:
            volume = next(src for _, action, src, _ in plan.files if action != "label")
            declared = tuple(sorted(ds.config.verify.labels.items()))
            limit = ds.config.limits.max_image_bytes
            todo.append((str(ds.root), str(target.root), plan.case, volume, stale, declared, limit))
    written: list[str] = []
    placed: Counter[str] = Counter()
    failed: dict[str, str] = {}
    tick = progress("exporting", len(todo)) if progress and todo else None
    for case, done, error in parallel_map(
        _write_case, todo, jobs or default_jobs(), tick, inline_limit=8
    ):
        for rel, how, key in done:
            manifest.record(rel, key)
            written.append(rel)
            placed[how] += 1
        if error is not None:
            failed[case] = error
    return written, placed, failed, unchanged


_Task = tuple[
    str, str, str, str, tuple[tuple[str, str, str, str], ...], tuple[tuple[int, str], ...], int
]
_Done = tuple[str, list[tuple[str, str, str]], "str | None"]


def _write_case(task: _Task) -> _Done:
    """Write one case's stale files (label first: it is the one that may fail)."""
    from volsegsync.export import ExportProblem
    from volsegsync.export_target import Target

    root, out, case, volume, files, declared, limit = task
    source = _Source(Path(root), volume, dict(declared), limit)
    target = Target(Path(out))
    done: list[tuple[str, str, str]] = []
    for rel, action, src, key in files:
        try:
            how = _write_one(target, source, rel, action, src)
        except (ExportProblem, FileProblem) as e:
            return case, done, f"{src}: {e.reason}"
        except OSError as e:
            return case, done, f"{src} -> {rel}: {e.strerror or e}"
        done.append((rel, how, key))
    return case, done, None


class _Source(NamedTuple):
    """What a worker reads a case from."""

    root: Path  # the dataset
    volume: str  # the case's (first) volume, whose grid labels go on
    declared: Mapping[int, str]  # the config's label set
    limit: int  # [limits] max_image_bytes


def _real(root: Path, src: str) -> Path:
    """A dataset file with its links resolved; never one outside the dataset."""
    from volsegsync.export import ExportProblem
    from volsegsync.fsutil import inside

    real = inside(root, root / src)
    if real is None:
        raise ExportProblem(src, "resolves outside the dataset (a symbolic link): not read")
    return real


def _write_one(target: Target, source: _Source, rel: str, action: str, src: str) -> str:
    from volsegsync.export import load_image, nifti_bytes

    root = source.root
    if action == "link":
        return target.place(rel, _real(root, src))
    if action == "gzip":
        target.gzip(rel, _real(root, src))
        return "gzip"
    if action == "convert":
        image = load_image(root / src, root, source.limit)
        target.write_bytes(rel, nifti_bytes(image.data, image.affine))
        return "convert"
    return _write_label(target, source, rel, src)


def _write_label(target: Target, source: _Source, rel: str, src: str) -> str:
    """The segmentation as a NIfTI label map on the volume's exact grid."""
    import numpy as np

    from volsegsync.export import (
        as_labels,
        flatten_layers,
        load_image,
        nifti_bytes,
        onto_grid,
    )
    from volsegsync.headers import read_geometry

    root = source.root
    vol_path = root / source.volume
    like = _nifti_header_of(vol_path, root)
    seg_path = root / src
    if like is not None and _same_nifti_grid(like, seg_path, root):
        return target.place(rel, _real(root, src))
    vol_geo = read_geometry(vol_path, root)
    image = load_image(seg_path, root, source.limit)
    data = as_labels(flatten_layers(image, src, source.declared), src)
    affine = np.array(vol_geo.affine, dtype=np.float64)
    data = onto_grid(data, image.affine, vol_geo.shape, affine, 1e-3, src)
    target.write_bytes(rel, nifti_bytes(data, affine, like))
    return "convert"


def _nifti_header_of(path: Path, root: Path) -> Any:
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return None
    from volsegsync.export import nifti_header

    return nifti_header(path, root)


_GEOMETRY_FIELDS = ("dim", "pixdim", "qform_code", "sform_code", "quatern_b", "quatern_c",
                    "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y",
                    "srow_z", "xyzt_units")  # fmt: skip


def _same_nifti_grid(like: Any, seg_path: Path, root: Path) -> bool:
    """A NIfTI label map with exactly the volume's geometry fields and integer voxels."""
    if not seg_path.name.lower().endswith(".nii.gz"):
        return False
    header = _nifti_header_of(seg_path, root)
    if type(header) is not type(like) or header.get_data_dtype().kind not in "iu":
        return False
    slope, inter = header.get_slope_inter()
    if slope not in (None, 1.0) or inter not in (None, 0.0):
        return False
    return (
        all(
            bytes(header[k].tobytes()) == bytes(like[k].tobytes())
            for k in _GEOMETRY_FIELDS
            if k != "dim"
        )
        and tuple(header.get_data_shape())[:3] == tuple(like.get_data_shape())[:3]
    )


def _write_if_changed(target: Target, manifest: Manifest, rel: str, data: bytes) -> list[str]:
    from volsegsync.export_target import read_owned

    if manifest.owns(rel) and read_owned(target.root / rel) == data:
        return []
    target.write_bytes(rel, data)
    manifest.record(rel, "generated")
    return [rel]


def _json_bytes(doc: Any) -> bytes:
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


# --------------------------------------------------------------------------- documents


def _channel_names(exported: list[Case], given: Mapping[str, str] | None) -> dict[str, str]:
    channels = sorted({ch for c in exported for ch, _ in c.channels}) or ["0000"]
    given = given or {}
    return {
        str(int(ch)): given.get(str(int(ch)), given.get(ch, f"channel_{ch}")) for ch in channels
    }


def _nnunet_json(
    exported: list[Case], labels: Mapping[str, int], names: Mapping[str, str] | None
) -> dict[str, Any]:
    return {
        "channel_names": _channel_names(exported, names),
        "labels": dict(labels),
        "numTraining": len(exported),
        "file_ending": NIFTI_GZ,
        "name": "volsegsync export",
        "description": "exported by volsegsync from verified volume/segmentation pairs",
    }


def _decathlon_json(
    exported: list[Case],
    labels: Mapping[str, int],
    names: Mapping[str, str] | None,
    fold_of: Mapping[str, int],
    plans: list[Plan],
) -> dict[str, Any]:
    by_case = {p.case: p for p in plans}
    training = []
    for c in exported:
        plan = by_case[c.case]
        images = [f"./{rel}" for rel in plan.image_files]
        item: dict[str, Any] = {
            "image": images[0] if len(images) == 1 else images,
            "label": f"./{plan.label_file}",
        }
        if c.case in fold_of:
            item["fold"] = fold_of[c.case]
        training.append(item)
    multi = any(len(c.channels) > 1 for c in exported)
    return {
        "name": "volsegsync export",
        "description": "exported by volsegsync from verified volume/segmentation pairs",
        "tensorImageSize": "4D" if multi else "3D",
        "modality": _channel_names(exported, names),
        "labels": {str(v): k for k, v in sorted(labels.items(), key=lambda kv: kv[1])},
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
    }


def _splits(fold_of: Mapping[str, int]) -> list[dict[str, list[str]]]:
    k = max(fold_of.values()) + 1
    return [
        {
            "train": sorted(c for c, f in fold_of.items() if f != fold),
            "val": sorted(c for c, f in fold_of.items() if f == fold),
        }
        for fold in range(k)
    ]


# --------------------------------------------------------------------------- csv


def _export_csv(
    ds: Dataset,
    target: Target,
    name: str,
    chosen: list[Case],
    skipped: list[Skipped],
    fold_of: Mapping[str, int],
    force: bool,
) -> ExportReport:
    from volsegsync.export_target import read_owned
    from volsegsync.geometry import _codes
    from volsegsync.headers import HeaderProblem, read_geometry

    folder = target.root
    rows = []
    for c in chosen:
        try:
            geo = read_geometry(ds.root / c.volume, ds.root)
            shape, spacing, origin = geo.shape, geo.spacing, geo.origin
            axes = _codes(geo) if geo.anatomical and len(geo.shape) == 3 else ""
        except HeaderProblem:
            shape, spacing, origin, axes = (), (), (), ""
        rows.append(
            {
                "case": c.case,
                "volume": _rel(ds.root / c.volume, folder),
                "segmentation": _rel(ds.root / c.segmentation, folder),
                "channels": ";".join(f"{ch}={_rel(ds.root / p, folder)}" for ch, p in c.channels),
                "version": "" if c.version is None else c.version,
                "volume_hash": c.digests[c.volume],
                "segmentation_hash": c.digests[c.segmentation],
                "shape": "x".join(str(n) for n in shape),
                "spacing": " ".join(f"{v:.6g}" for v in spacing),
                "origin": " ".join(f"{v:.6g}" for v in origin),
                "axes": axes,
                "verified": "true" if c.verified else "false",
                "reasons": " | ".join(c.reasons),
                "fold": fold_of.get(c.case, ""),
            }
        )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    data = buf.getvalue().encode("utf-8")
    path = folder / name
    written: list[str] = []
    old = read_owned(path) if os.path.lexists(path) else None
    if os.path.lexists(path) and not force and not (old or b"").startswith(data.split(b"\n")[0]):
        raise VolsegsyncError(
            f"{path}: exists and is not a volsegsync export CSV; left alone (use --force)"
        )
    if old != data:
        target.write_bytes(name, data)
        written.append(name)
    return ExportReport(
        "csv",
        path,
        [c.case for c in chosen],
        sorted(skipped, key=lambda s: s.case),
        written,
        0 if written else 1,
        [],
        {},
        {},
        dict(fold_of),
        [],
    )


def _rel(path: Path, folder: Path) -> str:
    return os.path.relpath(os.path.abspath(path), folder)
