"""Compare a volume's and a segmentation's geometry in the RAS world frame.

Tolerances follow :class:`volsegsync.config.VerifyConfig`: positions and spacings
agree within ``position_tolerance`` times the smallest voxel spacing (mm),
direction cosines within ``direction_tolerance``. A small relative slack on top
absorbs the float32 rounding of NIfTI sform/qform values, so a float32 header
never disagrees with the float64 numbers of a NRRD describing the same grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from volsegsync.headers import Geometry

if TYPE_CHECKING:  # numpy loads only when a pair differs (compare's common case needs none)
    import numpy as np

    Array = np.ndarray[Any, np.dtype[np.float64]]

_F32_SLACK = 2.0**-22  # relative; float32 rounding is at most 2**-24
_DIRECTION_SLACK = 2.0**-20  # absolute, on unit direction cosines
_ORDER = {"shape": 0, "extent": 0, "spacing": 1, "origin": 2, "direction": 3, "frame": 4}


class Difference(NamedTuple):
    """One way in which a segmentation's geometry differs from its volume's."""

    category: str  # "geometry", "extent" or "frame_unknown" (see volsegsync.problems)
    property: str  # "shape", "spacing", "origin", "direction", "frame" or "extent"
    message: str
    details: dict[str, Any]


def same_grid(
    a: Geometry,
    b: Geometry,
    position_tolerance: float = 1e-3,
    direction_tolerance: float = 1e-4,
) -> bool:
    """True when :func:`compare` finds no difference at all."""
    return not compare(a, b, position_tolerance, direction_tolerance)


def compare(
    volume: Geometry,
    segmentation: Geometry,
    position_tolerance: float = 1e-3,
    direction_tolerance: float = 1e-4,
) -> list[Difference]:
    """Every property in which ``segmentation`` does not lie on ``volume``'s grid."""
    v, s = volume, segmentation
    if _plainly_equal(v, s, position_tolerance, direction_tolerance):
        return []  # the common case, decided without numpy (10,000 pairs per run)
    if len(v.shape) != len(s.shape) or len(v.affine) != len(s.affine):
        return [_dimension_difference(v, s)]
    both_anatomical = v.anatomical and s.anatomical
    shared_frame = not both_anatomical and v.frame == s.frame and v.frame != "unknown"
    placed = both_anatomical or shared_frame
    tol = position_tolerance * min((*v.spacing, *s.spacing), default=0.0)
    found = _spacing(v, s, tol)
    if placed:
        found += _direction(v, s, direction_tolerance)
        found += _placement(v, s, tol, same_axes=not found)
    elif v.shape != s.shape:
        found.append(_shape_difference(v, s))
    if not both_anatomical:
        found.append(_frame_note(v, s, shared_frame))
    return sorted(found, key=lambda d: _ORDER[d.property])


def _plainly_equal(
    v: Geometry, s: Geometry, position_tolerance: float, direction_tolerance: float
) -> bool:
    """A cheap, conservative test: True only when the full comparison finds nothing.

    Affine entries within ``eps`` of each other put spacings within sqrt(3)*eps,
    origins within sqrt(3)*eps and direction cosines within (1 + sqrt(3))*eps / spacing
    of each other: with ``eps`` below, all inside the tolerances.
    """
    if not (v.anatomical and s.anatomical) or v.shape != s.shape:
        return False
    if len(v.affine) != len(s.affine):
        return False
    smallest = min((*v.spacing, *s.spacing), default=0.0)
    if smallest <= 0.0:
        return False
    eps = min(position_tolerance, direction_tolerance / 4) * smallest / 2
    return all(
        abs(a - b) <= eps
        for row_v, row_s in zip(v.affine[:-1], s.affine[:-1], strict=True)
        for a, b in zip(row_v, row_s, strict=True)
    )


# --------------------------------------------------------------------------- properties


def _slack(a: Array, b: Array) -> Array:
    """Per-component float32 rounding allowance for values ``a`` and ``b``."""
    import numpy as np

    result: Array = _F32_SLACK * np.maximum(np.abs(a), np.abs(b))
    return result


def _spacing(v: Geometry, s: Geometry, tol: float) -> list[Difference]:
    import numpy as np

    a, b = np.array(v.spacing), np.array(s.spacing)
    deviation = np.abs(a - b)
    if np.all(deviation <= tol + _slack(a, b)):
        return []
    va, sa = _pair(v.spacing, s.spacing)
    dev = float(deviation.max())
    message = (
        f"spacing differs: volume {va} vs segmentation {sa} mm "
        f"(max deviation {_num(dev)} mm, tolerance {_num(tol)} mm)"
    )
    details = _details(v.spacing, s.spacing, dev, tol)
    return [Difference("geometry", "spacing", message, details)]


def _direction(v: Geometry, s: Geometry, tolerance: float) -> list[Difference]:
    import numpy as np

    a, b = np.array(v.directions), np.array(s.directions)
    deviation = float(np.abs(a - b).max(initial=0.0))
    if deviation <= tolerance + _DIRECTION_SLACK:
        return []
    cosines = np.clip(np.sum(a * b, axis=1), -1.0, 1.0)
    angle = float(np.degrees(np.arccos(cosines)).max(initial=0.0))
    codes = _axis_codes(v, s)
    apart = f"volume axes {codes[0]} vs segmentation {codes[1]}, " if codes else ""
    message = (
        f"direction differs: {apart}up to {_num(angle)}° apart "
        f"(max cosine deviation {_num(deviation)}, tolerance {_num(tolerance)})"
    )
    va, sa = [list(d) for d in v.directions], [list(d) for d in s.directions]
    details = _details(va, sa, deviation, tolerance)
    details["max_angle_degrees"] = angle
    if codes:
        details["volume_axes"], details["segmentation_axes"] = codes
    return [Difference("geometry", "direction", message, details)]


def _axis_codes(v: Geometry, s: Geometry) -> tuple[str, str] | None:
    """Closest anatomical axis labels ("RAS", "LPS", ...) when both are RAS 3D."""
    if not (v.anatomical and s.anatomical and len(v.shape) == 3 and len(v.affine) == 4):
        return None
    return _codes(v), _codes(s)


def _codes(g: Geometry) -> str:
    """The world direction each axis points to most, e.g. "LPS"."""
    codes = []
    for d in g.directions:
        axis = max(range(len(d)), key=lambda i: abs(d[i]))  # the first largest, as argmax
        codes.append("LPI"[axis] if d[axis] < 0 else "RAS"[axis])
    return "".join(codes)


def _placement(v: Geometry, s: Geometry, tol: float, same_axes: bool) -> list[Difference]:
    """Origin and shape, or one "extent" difference when only whole voxels differ."""
    import numpy as np

    vo, so = np.array(v.origin), np.array(s.origin)
    limit = tol + _slack(vo, so)
    offset: Array | None = None
    if same_axes:
        linear = np.array(v.affine)[:-1, :-1]
        offset = np.linalg.lstsq(linear, so - vo, rcond=None)[0]
        whole = np.round(offset)
        if np.all(np.abs(so - vo - linear @ whole) <= limit):
            start = tuple(int(k) for k in whole)
            if any(start) or v.shape != s.shape:
                if _overlaps(start, s.shape, v.shape):
                    return [_extent_difference(v, s, start)]
            else:
                return []
    found: list[Difference] = []
    if np.any(np.abs(so - vo) > limit):
        found.append(_origin_difference(v, s, tol, offset))
    if v.shape != s.shape:
        found.append(_shape_difference(v, s))
    return found


def _overlaps(start: Sequence[int], inner: Sequence[int], outer: Sequence[int]) -> bool:
    return all(k < n and k + m > 0 for k, m, n in zip(start, inner, outer, strict=True))


def _extent_difference(v: Geometry, s: Geometry, start: tuple[int, ...]) -> Difference:
    end = tuple(k + m for k, m in zip(start, s.shape, strict=True))
    if all(k >= 0 for k in start) and all(e <= n for e, n in zip(end, v.shape, strict=True)):
        how = "cropped: lies inside the volume"
    elif all(k <= 0 for k in start) and all(e >= n for e, n in zip(end, v.shape, strict=True)):
        how = "padded: covers the whole volume"
    else:
        how = "shifted: overlaps the volume partly"
    message = (
        f"extent differs: segmentation starts at voxel {_vec(start)} of the volume, "
        f"shape {_vec(s.shape)} vs volume {_vec(v.shape)} ({how})"
    )
    details: dict[str, Any] = {
        "offset_voxels": list(start),
        "volume_shape": list(v.shape),
        "segmentation_shape": list(s.shape),
        "kind": how.split(":")[0],
    }
    return Difference("extent", "extent", message, details)


def _origin_difference(v: Geometry, s: Geometry, tol: float, offset: Array | None) -> Difference:
    dev = max(abs(a - b) for a, b in zip(v.origin, s.origin, strict=True))
    va, sa = _pair(v.origin, s.origin, digits=6)
    voxels = [round(float(k), 3) for k in offset] if offset is not None else []
    extra = f", offset {_vec(voxels)} voxels" if voxels else ""
    message = (
        f"origin differs: volume {va} vs segmentation {sa} mm "
        f"(max deviation {_num(dev)} mm, tolerance {_num(tol)} mm{extra})"
    )
    details = _details(v.origin, s.origin, dev, tol)
    if offset is not None:
        details["offset_voxels"] = [float(k) for k in offset]
    return Difference("geometry", "origin", message, details)


def _shape_difference(v: Geometry, s: Geometry) -> Difference:
    message = f"shape differs: volume {_vec(v.shape)} vs segmentation {_vec(s.shape)}"
    details = {"volume": list(v.shape), "segmentation": list(s.shape)}
    return Difference("geometry", "shape", message, details)


def _dimension_difference(v: Geometry, s: Geometry) -> Difference:
    message = (
        f"shape differs: volume has {len(v.shape)} spatial axes {_vec(v.shape)} "
        f"in a {len(v.affine) - 1}D world, segmentation {len(s.shape)} {_vec(s.shape)} "
        f"in a {len(s.affine) - 1}D world"
    )
    details = {
        "volume": list(v.shape),
        "segmentation": list(s.shape),
        "volume_world_dimensions": len(v.affine) - 1,
        "segmentation_world_dimensions": len(s.affine) - 1,
    }
    return Difference("geometry", "shape", message, details)


def _frame_note(v: Geometry, s: Geometry, shared: bool) -> Difference:
    if shared:
        compared = ["shape", "spacing", "origin", "direction"]
        message = (
            f"frame '{v.frame}' is not anatomical: origin and direction compared in that "
            "frame only, anatomical orientation not checked"
        )
    else:
        compared = ["shape", "spacing"]
        sides = [f"{role} frame '{g.frame}'" for role, g in (("volume", v), ("segmentation", s))]
        message = (
            f"{' vs '.join(sides)}: no common anatomical frame, compared shape and spacing "
            "only, not origin, direction or extent"
        )
    details: dict[str, Any] = {
        "volume_frame": v.frame,
        "segmentation_frame": s.frame,
        "compared": compared,
        "not_compared": [] if shared else ["origin", "direction", "extent"],
    }
    return Difference("frame_unknown", "frame", message, details)


# --------------------------------------------------------------------------- formatting


def _details(volume: Any, segmentation: Any, deviation: float, tolerance: float) -> dict[str, Any]:
    return {
        "volume": list(volume),
        "segmentation": list(segmentation),
        "max_deviation": float(deviation),
        "tolerance": float(tolerance),
    }


def _num(x: float, digits: int = 4) -> str:
    text = f"{x:.{digits}g}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _vec(values: Sequence[float], digits: int = 4) -> str:
    return "(" + ", ".join(_num(x, digits) for x in values) + ")"


def _pair(a: Sequence[float], b: Sequence[float], digits: int = 4) -> tuple[str, str]:
    """Both vectors at ``digits`` significant digits, or more if that hides a difference."""
    for more in range(digits, 16):
        left, right = _vec(a, more), _vec(b, more)
        if left != right:
            return left, right
    return _vec(a, digits), _vec(b, digits)
