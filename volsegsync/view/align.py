"""Place a segmentation on a volume's grid in world space, or refuse with a reason.

The map from volume voxel indices to segmentation voxel indices is
``inv(seg.affine) @ volume.affine``. When it is the identity the segmentation
overlays voxel for voxel; a whole-voxel translation is an extent mismatch placed
by its offset; a signed axis permutation with whole-voxel translation (an LPS
file on an RAS grid, say) still maps voxel for voxel; anything else is
resampled by nearest neighbour. Never drawn misaligned: files without a shared
anatomical frame, or that do not overlap, are refused.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from volsegsync.view.load import Image, ViewError

NDArray = np.ndarray[Any, Any]
TOLERANCE = 1e-3  # voxels: a mapping this close to whole voxels is taken as exact
SLAB_VOXELS = 1 << 22  # voxels resampled at a time (bounds the index arrays' memory)


class Alignment(NamedTuple):
    kind: str  # "same grid", "offset", "reoriented" or "resampled"
    matrix: NDArray  # 4x4: volume voxel index -> segmentation voxel index
    note: str  # one line for a picture's caption

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "note": self.note}


def align(volume: Image, seg: Image) -> Alignment:
    """How ``seg`` lies on ``volume``'s grid; raises :class:`ViewError` when it cannot."""
    both_unknown = not volume.anatomical and not seg.anatomical and volume.frame == seg.frame
    if volume.anatomical != seg.anatomical or (not volume.anatomical and not both_unknown):
        raise ViewError(
            f"{seg.path}: no anatomical frame shared with {volume.path} "
            f"({volume.frame} vs {seg.frame}): cannot place it, not drawn"
        )
    if volume.frame == "unknown" and seg.frame == "unknown":
        if volume.shape != seg.shape:
            raise ViewError(
                f"{seg.path}: neither file is placed in an anatomical frame and the shapes "
                f"differ ({list(volume.shape)} vs {list(seg.shape)}): not drawn"
            )
        return Alignment("same grid", np.eye(4), "voxel for voxel (no anatomical frame in either)")
    try:
        matrix = np.linalg.inv(seg.affine) @ volume.affine
    except np.linalg.LinAlgError:
        raise ViewError(f"{seg.path}: its voxel-to-world matrix cannot be inverted") from None
    if not _overlaps(matrix, volume.shape, seg.shape):
        raise ViewError(f"{seg.path}: does not overlap {volume.path} in world space: not drawn")
    linear, shift = matrix[:3, :3], matrix[:3, 3]
    whole_shift = bool(np.all(np.abs(shift - np.rint(shift)) <= TOLERANCE))
    if np.allclose(linear, np.eye(3), atol=TOLERANCE) and whole_shift:
        offset = [int(v) for v in -np.rint(shift)]
        if not any(offset):
            return Alignment("same grid", _snap(matrix), "voxel for voxel")
        return Alignment(
            "offset", _snap(matrix), f"placed by its offset of {offset} voxels (extent differs)"
        )
    if _signed_permutation(linear) and whole_shift:
        return Alignment("reoriented", _snap(matrix), "voxel for voxel (axes in another order)")
    return Alignment("resampled", matrix, "resampled to the volume's grid (nearest neighbour)")


def _snap(matrix: NDArray) -> NDArray:
    out: NDArray = np.rint(matrix)
    return out


def _signed_permutation(linear: NDArray) -> bool:
    rounded = np.rint(linear)
    if not np.allclose(linear, rounded, atol=TOLERANCE):
        return False
    return bool(
        np.all(np.abs(rounded).sum(axis=0) == 1) and np.all(np.abs(rounded).sum(axis=1) == 1)
    )


def _overlaps(matrix: NDArray, vol_shape: tuple[int, ...], seg_shape: tuple[int, ...]) -> bool:
    """Whether the volume's box, mapped into segmentation voxels, meets the segmentation's."""
    corners = np.array(
        [
            [i, j, k, 1.0]
            for i in (-0.5, vol_shape[0] - 0.5)
            for j in (-0.5, vol_shape[1] - 0.5)
            for k in (-0.5, vol_shape[2] - 0.5)
        ]
    )
    mapped = (matrix @ corners.T)[:3]
    low, high = mapped.min(axis=1), mapped.max(axis=1)
    return bool(np.all(high > -0.5) and np.all(low < np.array(seg_shape) - 0.5))


def sample(seg: NDArray, matrix: NDArray, ijk: NDArray) -> NDArray:
    """Segmentation values at volume voxel indices ``ijk`` (shape (3, ...)); 0 outside."""
    moved = _whole_voxel_map(matrix, ijk, seg.shape)
    if moved is not None:  # the same values as below, without the float round trip
        found: NDArray = seg[moved[0], moved[1], moved[2]]
        return found
    flat = ijk.reshape(3, -1).astype(np.float64)
    mapped = matrix[:3, :3] @ flat + matrix[:3, 3:4]
    index = np.rint(mapped).astype(np.intp)
    shape = np.array(seg.shape).reshape(3, 1)
    inside = np.all((index >= 0) & (index < shape), axis=0)
    out = np.zeros(flat.shape[1], dtype=seg.dtype)
    idx = index[:, inside]
    out[inside] = seg[idx[0], idx[1], idx[2]]
    result: NDArray = out.reshape(ijk.shape[1:])
    return result


def _whole_voxel_map(
    matrix: NDArray, ijk: NDArray, shape: tuple[int, ...]
) -> tuple[NDArray, NDArray, NDArray] | None:
    """Segmentation indices of ``ijk`` under a signed permutation with whole-voxel shift
    (a snapped alignment: same grid, offset, reoriented), when all fall inside ``shape``;
    None otherwise (then :func:`sample` maps them in floating point)."""
    linear = matrix[:3, :3]
    if not np.array_equal(matrix, np.rint(matrix)):
        return None
    ones = np.abs(linear)  # whole numbers: a signed permutation has one 1 per row and column
    if not (np.all(ones.sum(axis=0) == 1) and np.all(ones.sum(axis=1) == 1)):
        return None
    out = []
    for row in range(3):
        col = int(np.flatnonzero(linear[row])[0])
        index = ijk[col] if linear[row, col] > 0 else -ijk[col]
        shift = int(matrix[row, 3])
        index = index + shift if shift else index
        if index.size and (int(index.min()) < 0 or int(index.max()) >= shape[row]):
            return None
        out.append(index)
    return out[0], out[1], out[2]


def resample(seg: Image, volume_shape: tuple[int, ...], alignment: Alignment) -> NDArray:
    """The whole segmentation on the volume's grid (nearest neighbour; 0 outside)."""
    data = seg.data
    if alignment.kind == "same grid" and data.shape == tuple(volume_shape):
        return data
    out = np.zeros(volume_shape, dtype=data.dtype)
    nx, ny, nz = volume_shape
    step = max(1, SLAB_VOXELS // max(1, nx * ny))
    i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    for k0 in range(0, nz, step):
        k1 = min(nz, k0 + step)
        ks = np.arange(k0, k1)
        grid = np.stack(
            [
                np.broadcast_to(i[..., None], (nx, ny, k1 - k0)),
                np.broadcast_to(j[..., None], (nx, ny, k1 - k0)),
                np.broadcast_to(ks, (nx, ny, k1 - k0)),
            ]
        )
        out[:, :, k0:k1] = sample(data, alignment.matrix, grid)
    return out
