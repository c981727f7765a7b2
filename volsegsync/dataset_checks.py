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
  label (by name) in the files holding it, when at least :data:`MIN_VOLUMES`
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

from volsegsync.fsutil import atomic_write_bytes
from volsegsync.problems import Problem, make_problem

if TYPE_CHECKING:
    from volsegsync.dataset import Dataset
    from volsegsync.hashing import Hashed
    from volsegsync.header_cache import HeaderResult
    from volsegsync.headers import Geometry
    from volsegsync.pairing import Pair

MIN_VOLUMES = 5
OUTLIER_SHARE = 0.05
SIMILAR_FACTOR = 2.0
TINY_VOXELS = 10
TINY_FRACTION = 0.05
COUNTS_FORMAT = 1


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


def check_dataset(
    ds: Dataset,
    pairs: Sequence[Pair],
    headers: Mapping[str, HeaderResult],
    hashed: Mapping[str, Hashed],
) -> list[Problem]:
    """Every dataset-level problem. ``hashed`` empty (``--fast``): header checks only."""
    volumes = {
        p.volume: g
        for p in pairs
        if p.volume and (r := headers.get(p.volume)) is not None and (g := r.geometry) is not None
    }
    segs = {
        p.segmentation: g
        for p in pairs
        if p.segmentation
        and (r := headers.get(p.segmentation)) is not None
        and (g := r.geometry) is not None
    }
    declared = dict(ds.config.verify.labels)
    problems = outlier_problems(volumes)
    problems += label_name_problems(segs, declared)
    if hashed:
        digests = {p: hashed[p].digest for p in segs if p in hashed}
        problems += tiny_label_problems(_label_counts(ds, digests, declared))
    return problems


# --------------------------------------------------------------------------- outliers


def outlier_problems(volumes: Mapping[str, Geometry]) -> list[Problem]:
    from volsegsync.geometry import _codes

    three_d = {p: g for p, g in volumes.items() if len(g.shape) == 3 and len(g.affine) == 4}
    problems: list[Problem] = []
    codes = {p: _codes(g) for p, g in three_d.items() if g.anatomical}
    for path, (support, common) in _rare(codes, lambda a, b: a == b).items():
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
        ("spacing", {p: tuple(round(s, 6) for s in g.spacing) for p, g in three_d.items()}),
        ("shape", {p: tuple(float(n) for n in g.shape) for p, g in three_d.items()}),
    ):
        for path, (support, common) in _rare(values, _within_factor).items():
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


def _within_factor(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return len(a) == len(b) and all(
        x > 0 and y > 0 and max(x, y) <= SIMILAR_FACTOR * min(x, y)
        for x, y in zip(a, b, strict=True)
    )


def _rare(
    values: Mapping[str, Any], similar: Callable[[Any, Any], bool]
) -> dict[str, tuple[int, Any]]:
    """path -> (how many volumes are unlike it, the most common value) for the outliers."""
    n = len(values)
    if n < MIN_VOLUMES:
        return {}
    groups = Counter(values.values())
    distinct = list(groups)
    if len(distinct) > 2000:  # keep the pairwise comparison bounded: coarse values only
        return {}
    support = {v: sum(groups[w] for w in distinct if similar(v, w)) for v in distinct}
    common = max(distinct, key=lambda v: (support[v], groups[v]))
    if support[common] * 2 < n:
        return {}
    limit = max(1, math.floor(OUTLIER_SHARE * n))
    rare = {v for v in distinct if support[v] <= limit}
    return {p: (n - support[v], common) for p, v in sorted(values.items()) if v in rare}


def _vec(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


# --------------------------------------------------------------------------- label names


def label_name_problems(segs: Mapping[str, Geometry], declared: Mapping[int, str]) -> list[Problem]:
    """Segment names that disagree per label value, and segments outside the declared set."""
    named: dict[str, dict[int, str]] = {}
    problems: list[Problem] = []
    for path in sorted(segs):
        segments = segment_fields(segs[path].fields)
        if not segments or any(s.layer != 0 for s in segments):
            continue  # layered files reuse values per layer: no one name per value
        named[path] = {s.value: s.name for s in segments}
        if declared:
            for s in segments:
                if s.value not in declared and s.value > 0:
                    problems.append(
                        make_problem(
                            "undeclared_label",
                            [path],
                            f"{path}: segment '{s.name}' has label value {s.value}, "
                            "which [verify.labels] does not declare",
                            {"label": s.value, "name": s.name},
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
    medians = {name: sorted(v)[len(v) // 2] for name, v in sizes.items() if len(v) >= MIN_VOLUMES}
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
    ds: Dataset, digests: Mapping[str, str], declared: Mapping[int, str]
) -> dict[str, dict[str, int]]:
    """Voxels per label name of each segmentation, cached by content hash."""
    memo_path: Path = ds.state_dir / "label-counts.marshal"
    key = ds.state_key("label-counts", str(COUNTS_FORMAT))
    cached: dict[str, dict[str, int]] = {}
    with contextlib.suppress(OSError, EOFError, ValueError, TypeError, KeyError):
        data = marshal.loads(memo_path.read_bytes())
        if data["key"] == key:
            cached = data["counts"]
    out: dict[str, dict[str, int]] = {}
    kept: dict[str, dict[str, int]] = {}
    fresh = False
    for path, digest in sorted(digests.items()):
        per_file = cached.get(digest)
        if per_file is None:
            per_file = _count(ds.root, path, declared)
            if per_file is None:
                continue  # unreadable: reported by the content pass
            fresh = True
        out[path] = kept[digest] = per_file
    if fresh or len(kept) != len(cached):
        with contextlib.suppress(OSError):
            atomic_write_bytes(memo_path, marshal.dumps({"key": key, "counts": kept}))
    return out


def _count(root: Path, path: str, declared: Mapping[int, str]) -> dict[str, int] | None:
    from volsegsync.errors import VolsegsyncError
    from volsegsync.view.load import load_segmentation
    from volsegsync.view.metrics import label_counts

    try:
        seg = load_segmentation(root, path, declared)
    except VolsegsyncError:
        return None
    return {seg.label(v).name: n for v, n in label_counts(seg.data).items()}
