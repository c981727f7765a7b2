"""What a decoded image holds, and the problems that shows: the label and summary
checks of the content pass.

:func:`summarise` consumes an :class:`~volsegsync.decode.Image`'s chunks into a
:class:`ContentReport` (plain data, cached by content); :func:`label_problems`
turns a report into :class:`Problem` records against the declared label set.
Only 4D layered Slicer files are held in memory whole (per-layer values need the
layer of each voxel); everything else is summarised a chunk at a time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from volsegsync.decode import Image
from volsegsync.problems import Problem, make_problem

MAX_VALUES = 1000  # distinct values kept in a report
_BINCOUNT_RANGE = 1 << 16  # value ranges up to this are counted, larger ones sorted
_SCAN_STEP = 1 << 20  # voxels per step when counting values

NDArray = np.ndarray[Any, Any]


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class ContentReport:
    """What the content pass learnt about one file; JSON round trip via to/from_json.

    ``segments`` are the Slicer ``.seg.nrrd`` segments as ``(name or ID, label
    value)``; ``segment_layers`` gives each one's layer (same order).
    ``layer_values`` holds the sorted values present in each layer, for 4D
    layered files only (``values`` is then their union).
    For volumes ``values`` is empty and ``integer_valued`` reflects the dtype only.
    """

    error: str | None
    dtype: str | None
    integer_valued: bool
    values: tuple[int, ...]
    non_integer_example: float | None
    segments: tuple[tuple[str, int], ...]
    role: str = "segmentation"
    error_kind: str | None = None  # problem category for error: corrupt / not_an_image / ...
    shape: tuple[int, ...] = ()
    values_capped: bool = False  # more than MAX_VALUES distinct values: only the first kept
    segment_layers: tuple[int, ...] = ()
    layer_values: tuple[tuple[int, ...], ...] = ()
    detached: bool = False  # decoded from a detached data file (not cached by content)

    def to_json(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "dtype": self.dtype,
            "integer_valued": self.integer_valued,
            "values": list(self.values),
            "non_integer_example": _float_out(self.non_integer_example),
            "segments": [[name, value] for name, value in self.segments],
            "role": self.role,
            "error_kind": self.error_kind,
            "shape": list(self.shape),
            "values_capped": self.values_capped,
            "segment_layers": list(self.segment_layers),
            "layer_values": [list(v) for v in self.layer_values],
            "detached": self.detached,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ContentReport:
        """Rebuild a report; raises ValueError/TypeError/KeyError when malformed."""
        return cls(
            error=_opt_str(data["error"]),
            dtype=_opt_str(data["dtype"]),
            integer_valued=_bool(data["integer_valued"]),
            values=_ints(data["values"]),
            non_integer_example=_float_in(data["non_integer_example"]),
            segments=tuple((_str(n), _int(v)) for n, v in data["segments"]),
            role=_str(data["role"]),
            error_kind=_opt_str(data["error_kind"]),
            shape=_ints(data["shape"]),
            values_capped=_bool(data["values_capped"]),
            segment_layers=_ints(data["segment_layers"]),
            layer_values=tuple(_ints(v) for v in data["layer_values"]),
            detached=_bool(data.get("detached", False)),
        )


def _float_out(x: float | None) -> float | str | None:
    return x if x is None or math.isfinite(x) else repr(x)  # 'nan', 'inf', '-inf'


def _float_in(x: Any) -> float | None:
    if x is None:
        return None
    if isinstance(x, str) and x in ("nan", "inf", "-inf"):
        return float(x)
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"expected a number, found {x!r}")
    return float(x)


def _opt_str(x: Any) -> str | None:
    return None if x is None else _str(x)


def _str(x: Any) -> str:
    if not isinstance(x, str):
        raise TypeError(f"expected a string, found {x!r}")
    return x


def _int(x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"expected an integer, found {x!r}")
    return x


def _ints(xs: Any) -> tuple[int, ...]:
    if not isinstance(xs, list):
        raise TypeError(f"expected a list, found {xs!r}")
    return tuple(_int(x) for x in xs)


def _bool(x: Any) -> bool:
    if not isinstance(x, bool):
        raise TypeError(f"expected true/false, found {x!r}")
    return x


def failed(role: str, kind: str, reason: str) -> ContentReport:
    """The report of a file whose content could not be decoded."""
    return ContentReport(
        error=reason,
        dtype=None,
        integer_valued=False,
        values=(),
        non_integer_example=None,
        segments=(),
        role=role,
        error_kind=kind,
    )


# --------------------------------------------------------------------------- values


class ValueScan:
    """Whether every value seen is an integer, and the smallest distinct values, fed a
    chunk at a time. A non-integer example is a finite one when there is one."""

    def __init__(self) -> None:
        self.integer = True
        self.example: float | None = None  # a finite non-integer value: the verdict is in
        self.nan: float | None = None  # a NaN seen (no finite non-integer yet)
        self.infinite: set[float] = set()
        self.values: NDArray = np.empty(0, dtype=np.int64)

    def add(self, chunk: NDArray) -> None:
        if self.example is not None:
            return  # decided: the rest of the stream is only checked for integrity
        if chunk.dtype.kind == "b":
            chunk = chunk.view(np.uint8)
        if chunk.dtype.kind not in "iuf":
            self.integer = False
            return
        if not chunk.dtype.isnative:
            chunk = chunk.astype(chunk.dtype.newbyteorder("="))
        for i in range(0, chunk.size, _SCAN_STEP):
            self._add(chunk[i : i + _SCAN_STEP])

    def _add(self, flat: NDArray) -> None:
        if flat.dtype.kind == "f":
            bad = flat[np.rint(flat) != flat]  # NaN compares unequal: caught too
            if bad.size:
                self.integer = False
                finite = bad[np.isfinite(bad)]
                if finite.size:
                    self.example = float(finite[0])
                    return
                if self.nan is None:
                    self.nan = float(bad[0])
            inf = np.isinf(flat)
            if inf.any():
                self.integer = False
                self.infinite.update(float(v) for v in np.unique(flat[inf]))
            if not self.integer:
                return
        if flat.size == 0:
            return
        lo, hi = int(flat.min()), int(flat.max())
        if lo == hi:  # one value (a chunk of background): nothing to count
            found: NDArray = np.array([lo], dtype=np.int64)
        elif hi - lo < _BINCOUNT_RANGE:
            found = _bincount_values(flat, lo, hi)
        else:
            found = np.unique(flat)
        merged = np.union1d(self.values, found.astype(np.int64, copy=False))
        self.values = merged[: MAX_VALUES + 1]

    def result(self) -> tuple[bool, tuple[int, ...], bool, float | None]:
        """``(integer_valued, values, capped, non-integer example)``."""
        if not self.integer:
            example = self.example if self.example is not None else self.nan
            if example is None and self.infinite:
                example = -math.inf if -math.inf in self.infinite else math.inf
            return False, (), False, example
        capped = self.values.size > MAX_VALUES
        return True, tuple(int(v) for v in self.values[:MAX_VALUES]), capped, None


def _bincount_values(flat: NDArray, lo: int, hi: int) -> NDArray:
    """Distinct values by counting: faster than np.unique on a small value range."""
    if lo >= 0 and flat.dtype.kind == "u":  # no shift needed: count the values as they are
        direct: NDArray = np.flatnonzero(np.bincount(flat, minlength=hi + 1))
        return direct
    counts = np.zeros(hi - lo + 1, dtype=np.int64)
    shifted = np.empty(flat.size, dtype=np.intp)
    np.subtract(flat, lo, out=shifted, casting="unsafe")
    counts += np.bincount(shifted, minlength=counts.size)
    found: NDArray = np.flatnonzero(counts) + lo
    return found


def summarise(image: Image, role: str) -> ContentReport:
    """Read ``image`` to its end (which checks its integrity) and summarise it."""
    layers: tuple[tuple[int, ...], ...] = ()
    values: tuple[int, ...]
    if role == "volume":
        for _ in image.chunks:
            pass
        integer, values, capped, example = image.dtype.kind in "biu", (), False, None
    elif image.layer_axis is None:
        scan = ValueScan()
        for chunk in image.chunks:
            scan.add(chunk)
        integer, values, capped, example = scan.result()
    else:
        integer, values, capped, example, layers = _layered(image)
    return ContentReport(
        error=None,
        dtype=image.dtype.name,
        integer_valued=integer,
        values=values,
        non_integer_example=example,
        segments=tuple((name, label) for name, label, _ in image.segments),
        role=role,
        shape=image.shape,
        values_capped=capped,
        segment_layers=tuple(layer for _, _, layer in image.segments),
        layer_values=layers,
        detached=image.detached,
    )


def _layered(
    image: Image,
) -> tuple[bool, tuple[int, ...], bool, float | None, tuple[tuple[int, ...], ...]]:
    """A 4D layered file: values per layer (the whole array is held, bounded by the
    declared size, itself bounded by [limits] max_image_bytes)."""
    parts = list(image.chunks)
    flat = np.concatenate(parts) if parts else np.empty(0, image.dtype)
    del parts
    data = flat.reshape(image.shape[::-1]).T  # file order: first axis fastest
    scans = []
    for layer in np.moveaxis(data, image.layer_axis or 0, 0):
        scan = ValueScan()
        scan.add(np.ravel(layer, order="K"))
        scans.append(scan.result())
    bad = next((s for s in scans if not s[0]), None)
    if bad is not None:
        return *bad, ()
    union = sorted(set().union(*(s[1] for s in scans)))
    capped = len(union) > MAX_VALUES or any(s[2] for s in scans)
    return True, tuple(union[:MAX_VALUES]), capped, None, tuple(s[1] for s in scans)


# --------------------------------------------------------------------------- problems


def label_problems(path: str, report: ContentReport, labels: Mapping[int, str]) -> list[Problem]:
    """The problems a content report shows for the file at ``path``; each message
    starts with the path, as every problem's message does."""
    return [
        p._replace(message=f"{path}: {p.message}") for p in _label_problems(path, report, labels)
    ]


def _label_problems(path: str, report: ContentReport, labels: Mapping[int, str]) -> list[Problem]:
    files = (path,)
    if report.error is not None:
        kind = report.error_kind or "corrupt"
        return [make_problem(kind, files, report.error, {"reason": report.error})]
    if report.role != "segmentation":
        return []
    if not report.integer_valued:
        return [_non_integer_problem(files, report)]
    problems = []
    if labels and (p := _unknown_label_problem(files, report, labels)):
        problems.append(p)
    if not any(report.values):
        problems.append(_only_background_problem(files, report))
    if report.segments and (p := _segment_problem(files, report)):
        problems.append(p)
    return problems


def _non_integer_problem(files: tuple[str, ...], report: ContentReport) -> Problem:
    example = report.non_integer_example
    eg = f", e.g. {example!r}" if example is not None else ""
    return make_problem(
        "non_integer_labels",
        files,
        f"segmentation holds non-integer values ({report.dtype}{eg})",
        {"dtype": report.dtype, "example": _float_out(example)},
    )


def _unknown_label_problem(
    files: tuple[str, ...], report: ContentReport, labels: Mapping[int, str]
) -> Problem | None:
    unexpected = [v for v in report.values if v not in labels]
    if not unexpected:
        return None
    label_set = ", ".join(f"{k}: {labels[k]}" for k in sorted(labels))
    word = "value" if len(unexpected) == 1 else "values"
    more = f" (only the first {MAX_VALUES} distinct values checked)" if report.values_capped else ""
    return make_problem(
        "unknown_label",
        files,
        f"{word} {_join(unexpected)} not in label set {{{label_set}}}{more}",
        {"unexpected": unexpected, "declared": sorted(labels), "capped": report.values_capped},
    )


def _only_background_problem(files: tuple[str, ...], report: ContentReport) -> Problem:
    text = "every voxel is 0" if report.values else "the image holds no voxels"
    return make_problem(
        "only_background",
        files,
        f"segmentation holds background only ({text})",
        {"values": list(report.values), "shape": list(report.shape)},
    )


def _segment_problem(files: tuple[str, ...], report: ContentReport) -> Problem | None:
    missing, undeclared = _segment_mismatches(report)
    if not missing and not undeclared:
        return None
    layered = bool(report.layer_values)
    parts = [
        f"segment {name!r} declares label {label}{_in_layer(layer, layered)} but no voxel holds it"
        for name, label, layer in missing
    ]
    parts += [
        f"voxel value {value}{_in_layer(layer, layered)} is declared by no segment"
        for value, layer in undeclared
    ]
    details = {
        "missing": [{"segment": n, "label": v, "layer": la} for n, v, la in missing],
        "undeclared": [{"value": v, "layer": la} for v, la in undeclared],
    }
    return make_problem("segment_labels", files, "; ".join(parts), details)


def _segment_mismatches(
    report: ContentReport,
) -> tuple[list[tuple[str, int, int]], list[tuple[int, int]]]:
    """Declared labels absent from their layer, and layer values no segment declares."""
    layers = report.layer_values or (report.values,)
    seg_layers = report.segment_layers or (0,) * len(report.segments)
    declared: dict[int, set[int]] = {}
    missing = []
    for (name, label), layer in zip(report.segments, seg_layers, strict=True):
        declared.setdefault(layer, set()).add(label)
        present = layers[layer] if 0 <= layer < len(layers) else ()
        if label not in present:
            missing.append((name, label, layer))
    undeclared = [
        (value, layer)
        for layer, values in enumerate(layers)
        for value in values
        if value != 0 and value not in declared.get(layer, set())
    ]
    return missing, undeclared


def _in_layer(layer: int, layered: bool) -> str:
    return f" in layer {layer}" if layered else ""


def _join(values: list[int], limit: int = 20) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")
