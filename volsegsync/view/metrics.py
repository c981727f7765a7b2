"""Numbers about segmentations: voxel counts, volumes in mL, Dice, Hausdorff in mm.

Counts and volumes are taken on each segmentation's own grid. Dice and the
Hausdorff distance compare two label maps on one grid (the caller resamples
the second onto the first's, nearest neighbour). The Hausdorff distance is the
symmetric one between the two labels' surface voxels (a voxel of the label
with a 6-neighbour outside it), measured between voxel centres in world mm.
Only surface voxels of one label that are not on the other's surface are looked
up, in a k-d tree when scipy is installed (the ``view`` extra brings it), by a
chunked brute force otherwise.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

NDArray = np.ndarray[Any, Any]
CHUNK = 1 << 22  # distance pairs computed at a time by the brute force
STEP = 1 << 21  # voxels counted at a time


class LabelComparison(NamedTuple):
    value: int
    name: str
    voxels_a: int
    voxels_b: int
    ml_a: float
    ml_b: float
    dice: float | None  # None when the label is in neither
    hausdorff_mm: float | None  # None unless the label is in both
    status: str  # "both", "added" (only in B), "removed" (only in A)

    def to_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "name": self.name,
            "voxels_a": self.voxels_a,
            "voxels_b": self.voxels_b,
            "ml_a": round(self.ml_a, 6),
            "ml_b": round(self.ml_b, 6),
            "dice": None if self.dice is None else round(self.dice, 6),
            "hausdorff_mm": None if self.hausdorff_mm is None else round(self.hausdorff_mm, 6),
            "status": self.status,
        }


def label_counts(labels: NDArray) -> dict[int, int]:
    """Voxels of each non-zero value."""
    flat = labels.ravel(order="K")  # no copy of an F-ordered (NRRD) array
    if flat.size == 0:
        return {}
    if flat.dtype.kind == "u" and flat.dtype.itemsize <= 2:
        counts = np.zeros(1 << (8 * flat.dtype.itemsize), dtype=np.int64)
        for i in range(0, flat.size, STEP):  # bincount copies to intp: a step at a time
            counts += np.bincount(flat[i : i + STEP], minlength=counts.size)
        return {int(v): int(counts[v]) for v in np.flatnonzero(counts) if v != 0}
    values, counts = np.unique(flat, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True) if v != 0}


def label_profiles(labels: NDArray) -> tuple[dict[int, int], list[NDArray]]:
    """Voxels of each non-zero value, and per axis the labelled voxels in each slice.

    One pass, a slab of planes at a time; a plane without a label costs one count.
    """
    shape = labels.shape
    plane_counts = np.zeros(shape[2], dtype=np.int64)
    columns = np.zeros(shape[:2], dtype=np.int64)  # labelled voxels along the third axis
    small = labels.dtype.kind in "ub" and labels.dtype.itemsize <= 2
    histogram = np.zeros(1 << (8 * labels.dtype.itemsize) if small else 0, dtype=np.int64)
    found: dict[int, int] = {}
    step = max(1, STEP // max(1, shape[0] * shape[1]))
    for k0 in range(0, shape[2], step):
        slab = labels[:, :, k0 : k0 + step]
        per_plane = [np.count_nonzero(slab[:, :, k]) for k in range(slab.shape[2])]
        if not any(per_plane):
            continue
        plane_counts[k0 : k0 + slab.shape[2]] = per_plane
        mask = slab != 0
        columns += np.add.reduce(mask.view(np.uint8), axis=2, dtype=np.int32)
        if small:  # bincount copies to intp: a slab at a time
            flat = slab.view(np.uint8) if slab.dtype.kind == "b" else slab
            histogram += np.bincount(flat.ravel(order="K"), minlength=histogram.size)
        else:
            for v, n in zip(*np.unique(slab[mask], return_counts=True), strict=True):
                found[int(v)] = found.get(int(v), 0) + int(n)
    if small:
        found = {int(v): int(histogram[v]) for v in np.flatnonzero(histogram) if v != 0}
    profiles = [columns.sum(axis=1), columns.sum(axis=0), plane_counts]
    return dict(sorted(found.items())), profiles


def dice(a: NDArray, b: NDArray) -> float | None:
    """2|A∩B| / (|A|+|B|) of two boolean masks; None when both are empty."""
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return None
    return 2.0 * int(np.count_nonzero(a & b)) / total


def surface(mask: NDArray) -> NDArray:
    """Voxels of ``mask`` with a 6-neighbour outside it (the grid's border counts as outside)."""
    inner = mask.copy()
    for axis in range(mask.ndim):
        n = mask.shape[axis]
        if n < 3:
            inner[...] = False
            break
        lead = [slice(None)] * mask.ndim
        lead[axis] = slice(1, n - 1)
        before, after = list(lead), list(lead)
        before[axis], after[axis] = slice(0, n - 2), slice(2, n)
        core = np.zeros_like(mask)
        core[tuple(lead)] = mask[tuple(before)] & mask[tuple(after)]
        inner &= core
    result: NDArray = mask & ~inner
    return result


def hausdorff(a: NDArray, b: NDArray, affine: NDArray, brute: bool = False) -> float | None:
    """Symmetric Hausdorff distance (mm) between the surfaces of masks ``a`` and ``b``.

    Only surface voxels of one mask that are not surface voxels of the other can be
    away from it, so only those are looked up: a k-d tree (scipy) over the other's
    surface, or a chunked brute force without scipy (or with ``brute``).
    """
    if not a.any() or not b.any():
        return None
    box = _bounding_box(a | b)
    sa, sb = surface(a[box]), surface(b[box])
    linear = affine[:3, :3]

    def points(mask: NDArray) -> NDArray:
        world: NDArray = np.argwhere(mask).astype(np.float64) @ linear.T
        return world

    directed = _directed
    if not brute:
        try:
            from scipy.spatial import cKDTree

            def directed(p: NDArray, q: NDArray) -> float:
                return float(cKDTree(q).query(p, k=1)[0].max()) if len(p) else 0.0
        except ImportError:
            pass
    return max(directed(points(sa & ~sb), points(sb)), directed(points(sb & ~sa), points(sa)))


def _bounding_box(mask: NDArray) -> tuple[slice, ...]:
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def _directed(p: NDArray, q: NDArray) -> float:
    """max over p of the distance to the nearest point of q (brute force, in chunks)."""
    step = max(1, CHUNK // max(1, len(q)))
    worst = 0.0
    qq = (q**2).sum(axis=1)
    for i in range(0, len(p), step):
        chunk = p[i : i + step]
        d2 = (chunk**2).sum(axis=1)[:, None] + qq[None, :] - 2.0 * chunk @ q.T
        worst = max(worst, float(np.sqrt(max(0.0, float(d2.min(axis=1).max())))))
    return worst


def compare_labels(
    a: NDArray,
    b_on_a: NDArray,
    counts_a: dict[int, int],
    counts_b: dict[int, int],
    ml_a: float,
    ml_b: float,
    affine: NDArray,
    names: dict[int, str],
) -> list[LabelComparison]:
    """Per label of either version: counts (own grids), Dice and Hausdorff (on ``a``'s grid)."""
    out = []
    for value in sorted(counts_a.keys() | counts_b.keys()):
        va, vb = counts_a.get(value, 0), counts_b.get(value, 0)
        status = "both" if va and vb else ("removed" if va else "added")
        ma, mb = a == value, b_on_a == value
        out.append(
            LabelComparison(
                value=value,
                name=names.get(value, f"label {value}"),
                voxels_a=va,
                voxels_b=vb,
                ml_a=va * ml_a,
                ml_b=vb * ml_b,
                dice=dice(ma, mb),
                hausdorff_mm=hausdorff(ma, mb, affine) if status == "both" else None,
                status=status,
            )
        )
    return out
