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
import functools
import marshal
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from volsegsync.fsutil import atomic_write_bytes
from volsegsync.memo import SHARDS, forget_memo, load_memo, save_memo, shard_of
from volsegsync.problems import Problem, make_problem, problems_from_plain, problems_to_plain
from volsegsync.workers import parallel_map

if TYPE_CHECKING:
    from volsegsync.dataset import Dataset
    from volsegsync.header_cache import HeaderResult
    from volsegsync.headers import Geometry

MIN_VOLUMES = 20  # outliers: fewer volumes say little about what is usual
MIN_FILES = 5  # tiny labels: files holding a label before its median counts
OUTLIER_SHARE = 0.05
SIMILAR_FACTOR = 2.0
TINY_VOXELS = 10
TINY_FRACTION = 0.05
COUNTS_FORMAT = 1
MEMO_FORMAT = 2


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


class Candidate(NamedTuple):
    """A file of a complete pair that the checks look at (readable as its role)."""

    path: str
    stat: tuple[int, int, int]
    digest: str


# Per case key: (volumes, segmentations) of its complete pairs, each row
# (path, stat, summary or None when the header is broken, digest).
Row = tuple[str, tuple[int, int, int], "tuple[Any, ...] | None", str]
Facts = tuple[tuple[Row, ...], tuple[Row, ...]]


class StaleFacts(Exception):
    """A facts file that the memo lists is missing or damaged: rebuild them all."""


class DatasetChecks:
    """The dataset-level checks, incremental.

    The facts they read (a header summary per file of a complete pair) are kept per
    case key in :data:`SHARDS` memo files, so that a run after a few changes loads
    and updates only the shards of the changed keys. The problems are a function of
    all facts (and the config, in the memo's key): when the changed keys' facts are
    what they were, the stored problems are the answer; otherwise they are computed
    again from the stored facts, reading only the headers of changed files. Either
    way the result is that of a run from nothing (tests/test_pipeline.py)."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self.dir = ds.state_dir / "dataset-checks"
        self.key = ds.state_key("dataset-checks", str(MEMO_FORMAT))
        self.top = load_memo(self.dir / "top.marshal", self.key)
        self._shards: dict[int, dict[str, Facts]] = {}

    @property
    def generation(self) -> str | None:
        """The pipeline generation (its stamp) the facts reflect; None: no usable memo."""
        return None if self.top is None else str(self.top["gen"])

    def _shard_path(self, shard: int) -> Path:
        return self.dir / f"k-{shard:02x}"

    def _shard(self, shard: int) -> dict[str, Facts]:
        facts = self._shards.get(shard)
        if facts is None:
            facts = {}
            if self.top is not None and shard in self.top["shards"]:
                memo = load_memo(self._shard_path(shard), self.key)
                if memo is None:
                    raise StaleFacts
                facts = memo["facts"]
            self._shards[shard] = facts
        return facts

    def _all(self) -> dict[str, Facts]:
        return {k: f for s in range(SHARDS) for k, f in self._shard(s).items()}

    def update(
        self,
        gen: str,
        candidates: Mapping[str, tuple[Sequence[Candidate], Sequence[Candidate]]],
        complete: bool,
        headers: HeaderLookup,
        fast: bool,
        jobs: int = 1,
    ) -> list[Problem]:
        """Every dataset-level problem. ``candidates``: the files of the complete pairs
        of each changed case key (no entry: the key has none now); ``complete``: they
        are every key's. ``fast``: header checks only (no ``tiny_label``)."""
        complete = complete or self.top is None
        if complete:  # the summaries of files whose stat is unchanged are reused
            try:
                old = self._all()
            except StaleFacts:
                old = {}
            self.top, self._shards = None, {s: {} for s in range(SHARDS)}
        else:
            old = {k: f for k in candidates if (f := self._shard(shard_of(k)).get(k))}
        known = {r[0]: r for f in old.values() for rows in f for r in rows}
        fresh = _facts(candidates, known, headers)
        # what decides the header checks (paths, summaries), and tiny labels (digests)
        changed = complete or any(_headed(old.get(k)) != _headed(fresh.get(k)) for k in candidates)
        counted = complete or any(
            _counted(old.get(k)) != _counted(fresh.get(k)) for k in candidates
        )
        top = self.top or {"key": self.key, "gen": gen, "result": None, "tiny": None}
        top["gen"] = gen
        touched = set(range(SHARDS)) if complete else set()
        for key in candidates:
            shard = shard_of(key)
            facts = self._shard(shard)
            if fresh.get(key) != facts.get(key):
                touched.add(shard)
                if key in fresh:
                    facts[key] = fresh[key]
                else:
                    facts.pop(key, None)
        if changed or top["result"] is None:
            everything = self._all()
            vols, segs = _summaries(everything)
            problems = outlier_problems(vols) + label_name_problems(
                segs, dict(self.ds.config.verify.labels)
            )
            top["result"] = problems_to_plain(problems)
        if counted:
            top["tiny"] = None
        problems = problems_from_plain(top["result"])
        if not fast:
            if top["tiny"] is None:
                digests = {
                    r[0]: r[3]
                    for f in self._all().values()
                    for r in f[1]
                    if r[2] is not None and r[3]
                }
                declared = dict(self.ds.config.verify.labels)
                tiny = tiny_label_problems(_label_counts(self.ds, digests, declared, jobs))
                top["tiny"] = problems_to_plain(tiny)
            problems += problems_from_plain(top["tiny"])
        self._save(top, touched)
        return problems

    def _save(self, top: dict[str, Any], touched: set[int]) -> None:
        before = set(self.top["shards"]) if self.top is not None else set()
        top["shards"] = [
            s
            for s in range(SHARDS)
            if (bool(self._shards[s]) if s in self._shards else s in before)
        ]
        ok = True
        for shard in sorted(touched):
            facts = self._shards[shard]
            if facts:
                ok &= save_memo(self._shard_path(shard), {"key": self.key, "facts": facts})
            else:
                forget_memo(self._shard_path(shard))
        if ok:
            save_memo(self.dir / "top.marshal", top)
        else:
            forget_memo(self.dir / "top.marshal")
        self.top = top


def _facts(
    candidates: Mapping[str, tuple[Sequence[Candidate], Sequence[Candidate]]],
    known: Mapping[str, Row],
    headers: HeaderLookup,
) -> dict[str, Facts]:
    """The facts of the candidates' keys; a file's summary is reused while its stat
    and content hash are unchanged (a file rewritten within its mtime's tick keeps
    its stat), else its header is asked for."""

    def stale(c: Candidate) -> bool:
        old = known.get(c.path)
        return old is None or tuple(old[1]) != tuple(c.stat) or old[3] != c.digest

    files = [c for vols, segs in candidates.values() for c in (*vols, *segs)]
    todo = sorted({c.path for c in files if stale(c)})
    summaries: dict[str, Any] = {}
    if todo:
        for path, result in headers(todo).items():
            if result.geometry is not None:
                summaries[path] = tuple(summarise(result.geometry))

    def row(c: Candidate) -> Row:
        summary = summaries.get(c.path) if stale(c) else known[c.path][2]
        return (c.path, c.stat, summary, c.digest)

    out: dict[str, Facts] = {}
    for key, (vols, segs) in candidates.items():
        if vols or segs:
            out[key] = (tuple(row(c) for c in vols), tuple(row(c) for c in segs))
    return out


def _headed(facts: Facts | None) -> Any:
    """What of a key's facts the header checks read: paths and summaries."""
    return facts and tuple(tuple((r[0], r[2]) for r in rows) for rows in facts)


def _counted(facts: Facts | None) -> Any:
    """What of a key's facts the tiny-label check reads: its segmentations' contents."""
    return facts and tuple((r[0], r[3]) for r in facts[1] if r[2] is not None)


def _first(row: tuple[str, Any]) -> str:
    return row[0]


def _summaries(facts: Mapping[str, Facts]) -> tuple[dict[str, Summary], dict[str, Summary]]:
    """The summaries of volumes and of segmentations, by path (in path order)."""
    make = Summary._make
    vols = [(r[0], r[2]) for f in facts.values() for r in f[0] if r[2] is not None]
    segs = [(r[0], r[2]) for f in facts.values() for r in f[1] if r[2] is not None]
    vols.sort(key=_first)
    segs.sort(key=_first)
    return {p: make(s) for p, s in vols}, {p: make(s) for p, s in segs}


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


def summaries_by_key(
    ds: Dataset, keys: Iterable[str] | None = None
) -> tuple[str | None, dict[str, dict[str, Summary]]] | None:
    """The generation of the facts the last check left in the state folder and the
    summaries of the files of the case ``keys`` (all keys for None), by case key then
    path, for the report's plots; None when a facts file is damaged or gone."""
    checks = DatasetChecks(ds)
    try:
        facts = (
            checks._all()
            if keys is None
            else {k: f for k in keys if (f := checks._shard(shard_of(k)).get(k))}
        )
    except StaleFacts:
        return None
    make = Summary._make
    return checks.generation, {
        k: {r[0]: make(r[2]) for rows in f for r in rows if r[2] is not None}
        for k, f in facts.items()
    }


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
        ("shape", {p: _floats(s.shape) for p, s in volumes.items() if s.shape}),
    ):
        # two significant digits are plenty against a factor of 2, and keep the number
        # of distinct values (compared pairwise) small
        rounded = {v: tuple(float(f"{x:.2g}") for x in v) for v in set(values.values())}
        coarse = {p: rounded[value] for p, value in values.items()}
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


@functools.lru_cache(maxsize=4096)
def _floats(shape: tuple[int, ...]) -> tuple[float, ...]:
    return tuple(float(n) for n in shape)


Support = Callable[[list[Any], list[int]], list[int]]


def _equal(distinct: list[Any], counts: list[int]) -> list[int]:
    """Per distinct value: how many values equal it."""
    return counts


def _within_factor(distinct: list[Any], counts: list[int]) -> list[int]:
    """Per distinct tuple: how many tuples are within SIMILAR_FACTOR of it on every axis
    (few distinct values: plain Python; many: numpy, a block of rows at a time). The
    values have two significant digits, so their log ratios are 0 or far from the
    limit: the last bit of a logarithm never decides."""
    limit = math.log(SIMILAR_FACTOR) + 1e-9
    if len(distinct) <= 64:
        rows = [[math.log(max(x, 1e-300)) for x in d] for d in distinct]
        return [
            sum(
                n
                for other, n in zip(rows, counts, strict=True)
                if all(abs(a - b) <= limit for a, b in zip(row, other, strict=True))
            )
            for row in rows
        ]
    import numpy as np

    logs = np.log(np.maximum(np.array(distinct, dtype=np.float64), 1e-300))
    weights = np.array(counts, dtype=np.int64)
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
    if not rare:
        return {}
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
