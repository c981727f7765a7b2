"""Dataset-level checks: what is odd only next to the rest of the dataset.

- ``outlier_orientation``, ``outlier_spacing``, ``outlier_shape``: a volume whose
  axis orientation (e.g. LPS among RAS), voxel spacing or shape is shared by
  almost no other volume. A value is an outlier when, among at least
  :data:`MIN_VOLUMES` volumes, at most :data:`OUTLIER_SHARE` of them (and at least
  one) are *similar* to it while the most common value is similar to at least
  half. Orientations are similar when equal; spacings and shapes when no axis
  differs by more than a factor :data:`SIMILAR_FACTOR`. Header only.
- ``label_name_conflict``: a label value whose 3D Slicer segment name differs
  between files (or from the name ``[verify.labels]`` declares). Header only.
- ``undeclared_label``: a Slicer segment declares a label value outside
  ``[verify.labels]`` (values present in the voxels are checked by the content
  pass as ``unknown_label``). Header only.
- ``tiny_label``: a label under :data:`TINY_FRACTION` of the median size of that
  label (by name) in the files holding it, when at least :data:`MIN_FILES`
  do; otherwise one with fewer than :data:`TINY_VOXELS` voxels. Needs the
  voxels: full ``verify`` only; counts are cached by content hash.

Empty segmentations are the content pass's ``only_background``.
"""

from __future__ import annotations

import contextlib
import marshal
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import xxhash

from volsegsync.fsutil import atomic_write_bytes
from volsegsync.problems import Problem, make_problem, problems_from_plain, problems_to_plain
from volsegsync.workers import parallel_map

if TYPE_CHECKING:
    from volsegsync.dataset import Dataset
    from volsegsync.hashing import Hashed, Stat
    from volsegsync.header_cache import HeaderResult
    from volsegsync.headers import Geometry
    from volsegsync.pairing import Pair

MIN_VOLUMES = 20  # outliers: fewer volumes say little about what is usual
MIN_FILES = 5  # tiny labels: files holding a label before its median counts
OUTLIER_SHARE = 0.05
SIMILAR_FACTOR = 2.0
TINY_VOXELS = 10
TINY_FRACTION = 0.05
COUNTS_FORMAT = 1
MEMO_FORMAT = 1


class SegmentField(NamedTuple):
    """One 3D Slicer segment as its ``SegmentN_*`` header fields describe it."""

    number: int  # N
    name: str
    value: int  # LabelValue (1 when absent, -1 when unparsable)
    layer: int
    color: tuple[int, int, int] | None


_SEGMENT_KEY = re.compile(r"^Segment(\d+)_(ID|Name|LabelValue|Layer|Color)$")


def segment_fields(fields: Mapping[str, str]) -> list[SegmentField]:
    """The Slicer segments of a NRRD header's ``key:=value`` fields, in header order."""
    found: dict[int, dict[str, str]] = {}
    for key, value in fields.items():
        if m := _SEGMENT_KEY.match(key):
            found.setdefault(int(m.group(1)), {})[m.group(2)] = value.strip()
    out = []
    for n in sorted(found):
        f = found[n]
        if set(f) == {"Color"}:
            continue
        out.append(
            SegmentField(
                n,
                f.get("Name") or f.get("ID") or f"Segment{n}",
                _int(f.get("LabelValue"), 1),
                _int(f.get("Layer"), 0),
                _color(f.get("Color")),
            )
        )
    return out


def _int(text: str | None, default: int) -> int:
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        return -1


def _color(text: str | None) -> tuple[int, int, int] | None:
    try:
        rgb = [float(v) for v in (text or "").split()]
    except ValueError:
        return None
    if len(rgb) != 3 or not all(0.0 <= v <= 1.0 for v in rgb):
        return None
    return round(rgb[0] * 255), round(rgb[1] * 255), round(rgb[2] * 255)


# --------------------------------------------------------------------------- entry point


class Summary(NamedTuple):
    """What the checks need of one file's header (plain, for the marshal memo)."""

    orientation: str | None  # closest axis codes, e.g. "RAS"; None without a frame
    spacing: tuple[float, ...]
    shape: tuple[int, ...]
    segments: tuple[tuple[str, int, int], ...]  # Slicer segments: name, value, layer


HeaderLookup = Callable[[list[str]], Mapping[str, "HeaderResult"]]


def check_dataset(
    ds: Dataset,
    pairs: Sequence[Pair],
    files: Mapping[str, Stat],
    headers: HeaderLookup,
    hashed: Mapping[str, Hashed],
    jobs: int = 1,
) -> list[Problem]:
    """Every dataset-level problem. ``hashed`` empty (``--fast``): header checks only.

    ``headers`` gives the header results of the paths it is asked for; it is asked
    only for files whose summary is not in the memo under their current stat. The
    header-level verdicts are memoised too, keyed by every summary they read.
    """
    volumes = [p.volume for p in pairs if p.volume and p.segmentation and p.volume in files]
    segs = [
        p.segmentation for p in pairs if p.volume and p.segmentation and p.segmentation in files
    ]
    memo = _load_memo(ds)
    summaries = _summaries(memo, sorted({*volumes, *segs}), files, headers)
    declared = dict(ds.config.verify.labels)
    vol_summaries = {v: summaries[v] for v in volumes if v in summaries}
    seg_summaries = {s: summaries[s] for s in segs if s in summaries}
    key = xxhash.xxh3_128_hexdigest(
        marshal.dumps(
            [
                sorted((p, tuple(s)) for p, s in part.items())
                for part in (vol_summaries, seg_summaries)
            ]
        )
    )
    result = memo.get("result")
    if isinstance(result, tuple) and len(result) == 2 and result[0] == key:
        problems = problems_from_plain(result[1])
    else:
        problems = outlier_problems(vol_summaries)
        problems += label_name_problems(seg_summaries, declared)
    rows = {p: (tuple(files[p]), tuple(s)) for p, s in summaries.items()}
    if rows != memo.get("files") or not isinstance(result, tuple) or result[0] != key:
        _save_memo(ds, {"files": rows, "result": (key, problems_to_plain(problems))})
    if hashed:
        digests = {p: hashed[p].digest for p in segs if p in hashed and p in summaries}
        problems += tiny_label_problems(_label_counts(ds, digests, declared, jobs))
    return problems


def summarise(geometry: Geometry) -> Summary:
    from volsegsync.geometry import _codes

    three_d = len(geometry.shape) == 3 and len(geometry.affine) == 4
    segments = segment_fields(geometry.fields)
    return Summary(
        _codes(geometry) if three_d and geometry.anatomical else None,
        tuple(round(v, 6) for v in geometry.spacing) if three_d else (),
        tuple(geometry.shape) if three_d else (),
        tuple((s.name, s.value, s.layer) for s in segments),
    )


def summaries_memo(ds: Dataset) -> dict[str, Summary]:
    """The summaries the last check left in the state folder (for the report's plots)."""
    return {path: Summary(*row[1]) for path, row in _load_memo(ds).get("files", {}).items()}


def _memo_path(ds: Dataset) -> Path:
    return ds.state_dir / "dataset-checks.marshal"


def _memo_key(ds: Dataset) -> str:
    return ds.state_key("dataset-checks", str(MEMO_FORMAT))


def _load_memo(ds: Dataset) -> dict[str, Any]:
    with contextlib.suppress(OSError, EOFError, ValueError, TypeError, KeyError):
        data = marshal.loads(_memo_path(ds).read_bytes())
        if isinstance(data, dict) and data["key"] == _memo_key(ds):
            return data
    return {}


def _save_memo(ds: Dataset, data: dict[str, Any]) -> None:
    with contextlib.suppress(OSError, ValueError):
        atomic_write_bytes(_memo_path(ds), marshal.dumps({"key": _memo_key(ds), **data}))


def _summaries(
    memo: Mapping[str, Any], paths: list[str], files: Mapping[str, Stat], headers: HeaderLookup
) -> dict[str, Summary]:
    """Per-file summaries, from the memo where the file's stat is unchanged."""
    known = memo.get("files")
    known = known if isinstance(known, dict) else {}
    out: dict[str, Summary] = {}
    todo = []
    for path in paths:
        row = known.get(path)
        try:
            if row is not None and tuple(row[0]) == tuple(files[path]):
                out[path] = Summary(*row[1])
                continue
        except (TypeError, IndexError):
            pass
        todo.append(path)
    if todo:
        for path, result in headers(todo).items():
            if result.geometry is not None:
                out[path] = summarise(result.geometry)
    return out


# --------------------------------------------------------------------------- outliers


def outlier_problems(volumes: Mapping[str, Summary]) -> list[Problem]:
    problems: list[Problem] = []
    codes = {p: s.orientation for p, s in volumes.items() if s.orientation is not None}
    for path, (support, common) in _rare(codes, _equal).items():
        problems.append(
            make_problem(
                "outlier_orientation",
                [path],
                f"{path}: orientation {codes[path]} differs from {common}, the orientation "
                f"of {support} of {len(codes)} volumes",
                {"orientation": codes[path], "common": common, "volumes": len(codes)},
            )
        )
    for kind, values in (
        ("spacing", {p: s.spacing for p, s in volumes.items() if s.spacing}),
        ("shape", {p: tuple(float(n) for n in s.shape) for p, s in volumes.items() if s.shape}),
    ):
        # two significant digits are plenty against a factor of 2, and keep the number
        # of distinct values (compared pairwise) small
        coarse = {p: tuple(float(f"{v:.2g}") for v in value) for p, value in values.items()}
        for path, (support, common) in _rare(coarse, _within_factor).items():
            unit = " mm" if kind == "spacing" else ""
            problems.append(
                make_problem(
                    f"outlier_{kind}",
                    [path],
                    f"{path}: {kind} {_vec(values[path])}{unit} differs more than "
                    f"{SIMILAR_FACTOR:g}x from the {kind} of {support} of {len(values)} volumes "
                    f"(e.g. {_vec(common)}{unit})",
                    {kind: list(values[path]), "common": list(common), "volumes": len(values)},
                )
            )
    return problems


Support = Callable[[list[Any], list[int]], list[int]]


def _equal(distinct: list[Any], counts: list[int]) -> list[int]:
    """Per distinct value: how many values equal it."""
    return counts


def _within_factor(distinct: list[Any], counts: list[int]) -> list[int]:
    """Per distinct tuple: how many tuples are within SIMILAR_FACTOR of it on every axis
    (numpy, a block of rows at a time)."""
    import numpy as np

    logs = np.log(np.maximum(np.array(distinct, dtype=np.float64), 1e-300))
    weights = np.array(counts, dtype=np.int64)
    limit = math.log(SIMILAR_FACTOR) + 1e-9
    out: list[int] = []
    for start in range(0, len(distinct), 64):
        block = logs[start : start + 64]
        near = np.all(np.abs(block[:, None, :] - logs[None, :, :]) <= limit, axis=2)
        out.extend(int(v) for v in near @ weights)
    return out


def _rare(values: Mapping[str, Any], support_of: Support) -> dict[str, tuple[int, Any]]:
    """path -> (how many volumes are unlike it, the most common value) for the outliers."""
    n = len(values)
    if n < MIN_VOLUMES:
        return {}
    groups = Counter(values.values())
    distinct = list(groups)
    support = dict(zip(distinct, support_of(distinct, [groups[v] for v in distinct]), strict=True))
    common = max(distinct, key=lambda v: (support[v], groups[v]))
    if support[common] * 2 < n:
        return {}
    limit = max(1, math.floor(OUTLIER_SHARE * n))
    rare = {v for v in distinct if support[v] <= limit}
    return {p: (n - support[v], common) for p, v in sorted(values.items()) if v in rare}


def _vec(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


# --------------------------------------------------------------------------- label names


def label_name_problems(segs: Mapping[str, Summary], declared: Mapping[int, str]) -> list[Problem]:
    """Segment names that disagree per label value, and segments outside the declared set."""
    named: dict[str, dict[int, str]] = {}
    problems: list[Problem] = []
    for path in sorted(segs):
        segments = segs[path].segments
        if not segments or any(layer != 0 for _, _, layer in segments):
            continue  # layered files reuse values per layer: no one name per value
        named[path] = {value: name for name, value, _ in segments}
        if declared:
            for name, value, _ in segments:
                if value not in declared and value > 0:
                    problems.append(
                        make_problem(
                            "undeclared_label",
                            [path],
                            f"{path}: segment '{name}' has label value {value}, "
                            "which [verify.labels] does not declare",
                            {"label": value, "name": name},
                        )
                    )
    by_value: dict[int, Counter[str]] = {}
    for names in named.values():
        for value, name in names.items():
            by_value.setdefault(value, Counter())[_norm(name)] += 1
    for path, names in named.items():
        for value, name in sorted(names.items()):
            if value in declared:
                expected, where = declared[value], "[verify.labels] declares"
            else:
                counts = by_value[value]
                top = max(counts.items(), key=lambda kv: (kv[1], kv[0] == _norm(name)))[0]
                if counts[top] == counts[_norm(name)]:
                    continue
                expected, where = top, f"{counts[top]} other files name it"
            if _norm(name) != _norm(expected):
                problems.append(
                    make_problem(
                        "label_name_conflict",
                        [path],
                        f"{path}: label {value} is named '{name}', but {where} '{expected}'",
                        {"label": value, "name": name, "expected": expected},
                    )
                )
    return problems


def _norm(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").split())


# --------------------------------------------------------------------------- tiny labels


def tiny_label_problems(counts: Mapping[str, Mapping[str, int]]) -> list[Problem]:
    """``counts``: path -> label name -> voxels."""
    sizes: dict[str, list[int]] = {}
    for per_file in counts.values():
        for name, n in per_file.items():
            sizes.setdefault(name, []).append(n)
    medians = {name: sorted(v)[len(v) // 2] for name, v in sizes.items() if len(v) >= MIN_FILES}
    problems = []
    for path in sorted(counts):
        for name, n in sorted(counts[path].items()):
            median = medians.get(name)
            small = n < TINY_FRACTION * median if median is not None else n < TINY_VOXELS
            if small:
                why = (
                    f"under {TINY_FRACTION:.0%} of its median size, {median} voxels"
                    if median is not None
                    else f"fewer than {TINY_VOXELS}"
                )
                problems.append(
                    make_problem(
                        "tiny_label",
                        [path],
                        f"{path}: label '{name}' has only {n} voxels ({why})",
                        {"label": name, "voxels": n, "median": median},
                    )
                )
    return problems


def _label_counts(
    ds: Dataset, digests: Mapping[str, str], declared: Mapping[int, str], jobs: int
) -> dict[str, dict[str, int]]:
    """Voxels per label name of each segmentation, cached by content hash."""
    memo_path: Path = ds.state_dir / "label-counts.marshal"
    key = ds.state_key("label-counts", str(COUNTS_FORMAT))
    cached: dict[str, dict[str, int]] = {}
    with contextlib.suppress(OSError, EOFError, ValueError, TypeError, KeyError):
        data = marshal.loads(memo_path.read_bytes())
        if data["key"] == key:
            cached = data["counts"]
    todo = {d: p for p, d in sorted(digests.items()) if d not in cached}
    tasks = [(str(ds.root), p, sorted(declared.items())) for p in todo.values()]
    for digest, per_file in zip(todo, parallel_map(_count, tasks, jobs), strict=True):
        if per_file is not None:  # None: unreadable, reported by the content pass
            cached[digest] = per_file
    out: dict[str, dict[str, int]] = {}
    kept: dict[str, dict[str, int]] = {}
    for path, digest in sorted(digests.items()):
        if digest in cached:
            out[path] = kept[digest] = cached[digest]
    if todo or len(kept) != len(cached):
        with contextlib.suppress(OSError):
            atomic_write_bytes(memo_path, marshal.dumps({"key": key, "counts": kept}))
    return out


def _count(task: tuple[str, str, list[tuple[int, str]]]) -> dict[str, int] | None:
    from volsegsync.errors import VolsegsyncError
    from volsegsync.view.load import load_segmentation
    from volsegsync.view.metrics import label_counts

    root, path, declared = task
    try:
        seg = load_segmentation(Path(root), path, dict(declared))
    except VolsegsyncError:
        return None
    return {seg.label(v).name: n for v, n in label_counts(seg.data).items()}
