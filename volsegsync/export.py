"""Exported files: images as NIfTI on their volume's exact grid, linked or written safely.

The building blocks of ``volsegsync export`` (orchestrated by
:mod:`volsegsync.ops.export`):

- :func:`load_image` decodes a NIfTI or NRRD file with volsegsync's own checked
  decoder and places it in the RAS world with :func:`volsegsync.headers.read_geometry`;
- :func:`flatten_layers` turns a 4D layered 3D Slicer segmentation into one label
  map (overlap rule: a later layer wins over an earlier one; label values are kept);
- :func:`onto_grid` moves a segmentation onto its volume's voxel grid when the two
  grids share their voxels (axes permuted or flipped, e.g. LPS vs RAS, and whole-voxel
  crop or pad): no resampling, no value changes;
- :func:`nifti_bytes` writes a label map with the volume's own NIfTI header, so every
  reader sees bit-identical geometry.

Where the files go (safely) is :mod:`volsegsync.export_target`.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import nibabel as nib
import numpy as np

from volsegsync.errors import FileProblem

NDArray = np.ndarray[Any, Any]


class ExportProblem(FileProblem):
    """A pair cannot be exported as it is (the reason is one line)."""


class LoadedImage(NamedTuple):
    """Voxel data (spatial axes first, in file order) and its RAS voxel-to-world affine."""

    data: NDArray
    affine: NDArray  # 4x4, RAS millimetres
    segments: tuple[tuple[str, int, int], ...]  # Slicer (name, label value, layer)
    layer_axis: int | None  # the axis holding Slicer layers (4D layered files)
    header: Any  # the nibabel header of a NIfTI file, else None


# --------------------------------------------------------------------------- reading


def load_image(path: Path, root: Path | None = None, max_bytes: int = 0) -> LoadedImage:
    """Decode ``path`` completely and place it in RAS.

    The data comes from :func:`volsegsync.decode.read_array` (every bound and check
    of verify's content pass: declared-size limit ``max_bytes``, gzip CRC, exact
    sizes); with ``root`` (the dataset) a link is followed only inside it.
    """
    from volsegsync.decode import DEFAULT_MAX_BYTES, Bad, read_array
    from volsegsync.headers import HeaderProblem, read_geometry

    where = str(path)
    try:
        geometry = read_geometry(path, root)
    except HeaderProblem as e:
        raise ExportProblem(where, e.reason) from None
    if not geometry.anatomical or len(geometry.shape) != 3:
        raise ExportProblem(
            where, f"no anatomical 3D frame (frame {geometry.frame!r}): cannot place it"
        )
    rel = path.relative_to(root) if root is not None and path.is_absolute() else path
    try:
        data, image = read_array(rel, root, max_bytes or DEFAULT_MAX_BYTES)
    except Bad as e:
        raise ExportProblem(where, e.reason) from None
    except OSError as e:
        raise ExportProblem(where, f"cannot read: {e.strerror or e}") from None
    segments = tuple(image.segments)
    plain = not segments and image.layer_axis is None
    header = nifti_header(path, root) if plain and _is_nifti(path) else None
    if image.layer_axis is None:
        data = _squeeze_extra(path, data)
    return LoadedImage(
        data, np.array(geometry.affine, dtype=np.float64), segments, image.layer_axis, header
    )


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def _squeeze_extra(path: Path, data: NDArray) -> NDArray:
    """A 3D image stored with trailing axes of size 1 (x, y, z, 1) as 3D."""
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ExportProblem(str(path), f"expected a 3D image, found shape {data.shape}")
    return data


# --------------------------------------------------------------------------- labels


def flatten_layers(
    image: LoadedImage, path: str, declared: Mapping[int, str] | None = None
) -> NDArray:
    """One 3D label map from a segmentation, 4D layered Slicer files included.

    Each segment's voxels (its label value in its layer) keep that label value;
    where segments of different layers overlap, the later layer wins. When
    segments of different layers share a label value (Slicer often gives each
    layer's segments 1, 2, ...), the value of each segment's name in
    ``declared`` (the config's ``verify.labels``) is used instead; without one,
    that is an :class:`ExportProblem`: labels are never renumbered silently.
    """
    if image.layer_axis is None:
        return _squeeze_extra(Path(path), image.data)
    layers = np.moveaxis(image.data, image.layer_axis, 0)
    if image.segments:
        segments = list(image.segments)
    else:  # no segment fields: layer n holds label 1 of segment n
        segments = [(f"Segment{n}", 1, n) for n in range(layers.shape[0])]
    output = {(value, layer): value for _, value, layer in segments}
    if len({v for _, v, _ in segments}) != len({(v, la) for _, v, la in segments}):
        by_name = {name: value for value, name in (declared or {}).items()}
        missing = [name for name, _, _ in segments if name not in by_name]
        if missing:
            shared = sorted({v for _, v, _ in segments})
            raise ExportProblem(
                path,
                f"segments of different layers share label values ({_vals(shared)}): one "
                f"label map cannot keep them apart; declare [verify.labels] values for "
                f"the segment names {', '.join(repr(n) for n in missing)}",
            )
        output = {(value, layer): by_name[name] for name, value, layer in segments}
    out = np.zeros(layers.shape[1:], dtype=_label_dtype(output.values()))
    for value, layer in sorted(output, key=lambda vl: (vl[1], vl[0])):
        if value != 0 and 0 <= layer < layers.shape[0]:
            out[layers[layer] == value] = output[(value, layer)]
    return out


def _vals(values: Sequence[int]) -> str:
    return ", ".join(str(v) for v in values)


def _label_dtype(values: Iterable[int]) -> np.dtype[Any]:
    top = max(values, default=1)
    low = min(values, default=0)
    for dtype in (np.uint8, np.uint16, np.int32, np.int64):
        info = np.iinfo(dtype)
        if info.min <= low and top <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def as_labels(data: NDArray, path: str) -> NDArray:
    """Integer label values, exactly: float files holding whole numbers are converted."""
    if data.dtype.kind in "iu":
        return data if data.dtype.isnative else data.astype(data.dtype.newbyteorder("="))
    if data.dtype.kind == "b":
        return data.astype(np.uint8)
    if data.dtype.kind == "f" and data.size and bool(np.all(np.rint(data) == data)):
        lo, hi = float(data.min()), float(data.max())
        dtype = _label_dtype([int(lo), int(hi)])
        return data.astype(dtype)
    if data.dtype.kind == "f" and not data.size:
        return data.astype(np.uint8)
    raise ExportProblem(path, f"segmentation holds non-integer values ({data.dtype.name})")


def label_values(data: NDArray) -> list[int]:
    """The sorted distinct values of an integer label map."""
    if data.size == 0:
        return []
    lo, hi = int(data.min()), int(data.max())
    if hi - lo < 1 << 16:
        counts = np.bincount((data.ravel() - lo).astype(np.intp), minlength=hi - lo + 1)
        return [int(v) + lo for v in np.flatnonzero(counts)]
    return [int(v) for v in np.unique(data)]


# --------------------------------------------------------------------------- grids


def onto_grid(
    data: NDArray,
    affine: NDArray,
    shape: Sequence[int],
    target: NDArray,
    tolerance: float,
    path: str,
) -> NDArray:
    """``data`` (voxel-to-world ``affine``) on the grid of ``shape``/``target``.

    Works when both grids share their voxel centres: each axis of one is an axis
    of the other, possibly reversed (LPS vs RAS storage, flipped slices), and the
    origins differ by whole voxels (crop or pad: outside the segmentation is 0).
    ``tolerance`` is in voxels. Labelled voxels outside the target grid, or grids
    that would need resampling, are an :class:`ExportProblem`.
    """
    mapping = np.linalg.solve(target, affine)  # source voxel -> target voxel
    if tuple(data.shape) == tuple(shape) and np.allclose(
        mapping, np.eye(4), rtol=0, atol=tolerance / max(*shape, 1)
    ):
        return data  # the common case: the same grid, stored the same way
    linear, shift = mapping[:3, :3], mapping[:3, 3]
    perm = np.rint(linear)
    ok_perm = (
        np.all(np.abs(linear - perm) <= tolerance / max(max(data.shape), 1))
        and np.all(np.abs(perm).sum(axis=0) == 1)
        and np.all(np.abs(perm).sum(axis=1) == 1)
    )
    whole = np.rint(shift)
    if not ok_perm or np.any(np.abs(shift - whole) > tolerance):
        raise ExportProblem(
            path, "does not lie on its volume's voxel grid (it would need resampling)"
        )
    order = [int(np.flatnonzero(perm[a])[0]) for a in range(3)]
    signs = [int(perm[a, order[a]]) for a in range(3)]
    moved = np.transpose(data, order)
    start = []
    for a in range(3):
        offset = int(whole[a])
        if signs[a] < 0:
            moved = np.flip(moved, axis=a)
            offset -= moved.shape[a] - 1
        start.append(offset)
    out = np.zeros(tuple(int(n) for n in shape), dtype=data.dtype)
    src = tuple(
        slice(max(0, -s), min(m, n - s)) for s, m, n in zip(start, moved.shape, shape, strict=True)
    )
    dst = tuple(
        slice(max(0, s), min(n, s + m)) for s, m, n in zip(start, moved.shape, shape, strict=True)
    )
    if any(sl.start >= sl.stop for sl in src):
        kept = np.zeros((0,), dtype=data.dtype)
    else:
        kept = moved[src]
        out[dst] = kept
    if int(np.count_nonzero(moved)) != int(np.count_nonzero(kept)):
        raise ExportProblem(path, "labelled voxels lie outside its volume's grid")
    return out


# --------------------------------------------------------------------------- writing


def nifti_bytes(data: NDArray, affine: NDArray, like: Any = None) -> bytes:
    """A gzip-compressed NIfTI-1 file of ``data``.

    With ``like`` (a volume's NIfTI-1 header) every geometry field (sform, qform,
    quaternion, pixdim, codes, units, byte order) is copied bit for bit: the
    result lies on exactly that grid. Otherwise sform and qform are set from
    ``like``'s codes (a NIfTI-2 volume) or from ``affine`` (code 1, scanner).
    """
    header: Any
    if like is not None and type(like) is nib.Nifti1Header:
        header = like.copy()  # type: ignore[no-untyped-call]
    else:
        header = nib.Nifti1Header()  # type: ignore[no-untyped-call]
        header.set_data_shape(data.shape)
        forms = (
            [(like.get_sform(coded=True), "s"), (like.get_qform(coded=True), "q")]
            if (like is not None)
            else [((affine, 1), "s"), ((affine, 1), "q")]
        )
        for (matrix, code), which in forms:
            if code:
                setter = header.set_sform if which == "s" else header.set_qform
                setter(matrix, code=int(code))
        if like is not None:
            header["xyzt_units"] = like["xyzt_units"]
    header.set_data_shape(data.shape)
    header.set_data_dtype(data.dtype)
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"], header["cal_max"] = 0, 0
    header["descrip"] = b"volsegsync export"
    header["vox_offset"] = 352
    header["magic"] = b"n+1"
    body = np.asarray(data, dtype=header.get_data_dtype()).tobytes(order="F")
    return gzip.compress(header.binaryblock + b"\0\0\0\0" + body, 1, mtime=0)


def nifti_header(path: Path, root: Path | None = None) -> Any:
    """The NIfTI-1 or NIfTI-2 header of a ``.nii`` / ``.nii.gz`` (header bytes only);
    with ``root``, ``path`` may be a link resolving inside the dataset."""
    from volsegsync.fsutil import open_in_dataset, open_regular

    rel = path.relative_to(root).as_posix() if root is not None and path.is_absolute() else ""
    with open_in_dataset(root, rel) if root is not None else open_regular(path) as raw:
        stream: Any = gzip.GzipFile(fileobj=raw) if path.name.endswith(".gz") else raw
        block = stream.read(540)
    for order in ("little", "big"):
        size = int.from_bytes(block[:4], order)
        if size in (348, 540) and len(block) >= size:
            klass: Any = nib.Nifti1Header if size == 348 else nib.Nifti2Header
            return klass(block[:size], check=False)
    raise ExportProblem(str(path), "not a NIfTI header")
