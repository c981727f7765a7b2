"""Read a volume or a segmentation for display and measurement, safely.

The path must stay inside the dataset (a symbolic link leading out is refused),
name a regular file (no FIFO can hang a run), and its header must declare no
more than :data:`MAX_BYTES` of voxel data: memory is bounded by the declared
size, checked before a byte of data is read. Every failure is one
:class:`~volsegsync.errors.VolsegsyncError` line naming the file.

Geometry comes from :func:`volsegsync.headers.read_geometry` (RAS world frame,
whatever NRRD space was written). NRRD data is decoded by the content pass's
bounded decoder; NIfTI data by nibabel, which reads exactly the declared bytes.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from volsegsync.errors import FileProblem, VolsegsyncError
from volsegsync.fsutil import open_regular

if TYPE_CHECKING:
    from volsegsync.view.stream import Planes

MAX_BYTES = 4 << 30  # decoded voxel data one file may declare (4 GiB)

NDArray = np.ndarray[Any, Any]

# distinct colours for labels without a colour of their own (value 1 gets the first)
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
)


class ViewError(VolsegsyncError):
    """A file cannot be shown or measured (one line, naming the file)."""


@dataclass(frozen=True)
class Label:
    value: int  # the value in :attr:`Image.data`
    name: str
    color: tuple[int, int, int]


@dataclass
class Image:
    """A 3D array on a grid placed in the world by ``affine`` (voxel index -> mm)."""

    path: str  # dataset-relative
    data: NDArray  # volume intensities (unscaled), or segmentation label values
    affine: NDArray  # 4x4
    anatomical: bool  # affine maps to RAS; otherwise to the file's own ``frame``
    frame: str
    scale: tuple[float, float] = (1.0, 0.0)  # NIfTI slope, intercept for intensities
    labels: dict[int, Label] = field(default_factory=dict)  # segmentations only
    layered: bool = False  # a 4D layered Slicer file: label values are segment numbers
    # a streamed volume (:mod:`volsegsync.view.stream`): only these voxels were kept,
    # ``data`` is empty and ``grid`` is the shape
    planes: Planes | None = None
    grid: tuple[int, ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        """The voxel grid's shape (of ``data``, or of the streamed volume)."""
        return self.grid or self.data.shape

    def voxels(self, ijk: NDArray) -> NDArray:
        """Values (unscaled) at voxel indices ``ijk`` of shape (3, ...)."""
        if self.planes is not None:
            return self.planes.voxels(ijk)
        found: NDArray = self.data[ijk[0], ijk[1], ijk[2]]
        return found

    def window_sample(self, step: int) -> NDArray:
        """Every ``step``-th voxel along each axis (for the intensity window)."""
        if self.planes is not None:
            assert self.planes.step == step
            return self.planes.sample
        sample: NDArray = self.data[::step, ::step, ::step]
        return sample

    @property
    def spacing(self) -> tuple[float, float, float]:
        s = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return float(s[0]), float(s[1]), float(s[2])

    @property
    def voxel_ml(self) -> float:
        return abs(float(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    def label(self, value: int) -> Label:
        return self.labels.get(value) or Label(value, f"label {value}", default_color(value))


def default_color(value: int) -> tuple[int, int, int]:
    return PALETTE[(value - 1) % len(PALETTE)]


# --------------------------------------------------------------------------- paths


def safe_path(root: Path, rel: str) -> Path:
    """``root / rel`` when it resolves inside the dataset and is a regular file."""
    full = root / rel
    real = Path(os.path.realpath(full))
    base = os.path.realpath(root)
    if os.path.commonpath([base, str(real)]) != base:
        raise ViewError(f"{rel}: leads outside the dataset (symbolic link?), not read")
    try:
        st = os.stat(real)
    except OSError as e:
        raise ViewError(f"{rel}: cannot read: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ViewError(f"{rel}: not a regular file, not read")
    return real


# --------------------------------------------------------------------------- loading


def load_volume(root: Path, rel: str, max_bytes: int = MAX_BYTES) -> Image:
    """A volume's intensities (first 3D volume of a 4D file) and placement.

    A picture alone reads less: :class:`volsegsync.view.stream.VolumeStream`.
    """
    path, geometry = checked_geometry(root, rel, max_bytes)
    if _is_nrrd(rel):
        data = _nrrd_data(path, rel).data
        return _image(rel, _spatial(rel, data, geometry.shape), geometry)
    data, scale = _nifti_data(path, rel)
    image = _image(rel, _spatial(rel, data, geometry.shape), geometry)
    image.scale = scale
    return image


def load_segmentation(
    root: Path, rel: str, declared: Mapping[int, str] | None = None, max_bytes: int = MAX_BYTES
) -> Image:
    """A segmentation's label values with names and colours.

    Names come from the 3D Slicer segment fields of the header, then from the
    ``declared`` label set (the config's ``[verify.labels]``). A 4D layered
    Slicer file is flattened: each segment becomes its own value (its position
    in the header, from 1), a later segment drawn over an earlier one.
    """
    path, geometry = checked_geometry(root, rel, max_bytes)
    declared = dict(declared or {})
    if not _is_nrrd(rel):
        data, _ = _nifti_data(path, rel)
        image = _image(rel, _integers(rel, _spatial(rel, data, geometry.shape)), geometry)
        image.labels = _declared_labels(declared)
        return image
    decoded = _nrrd_data(path, rel)
    colors = _segment_colors(geometry.fields)
    segments = [
        (name, value, layer, colors.get(i))
        for i, (name, value, layer) in enumerate(decoded.segments)
    ]
    if decoded.layer_axis is not None:
        layers = np.moveaxis(decoded.data, decoded.layer_axis, 0)
        flat = _flatten_layers(rel, layers, segments, geometry.shape)
        image = _image(rel, flat, geometry)
        image.layered = True
        image.labels = {
            i + 1: Label(i + 1, name, color or default_color(i + 1))
            for i, (name, _, _, color) in enumerate(segments)
        }
        return image
    image = _image(rel, _integers(rel, _spatial(rel, decoded.data, geometry.shape)), geometry)
    labels = _declared_labels(declared)
    for name, value, _, color in segments:
        labels[value] = Label(value, name, color or default_color(value))
    image.labels = labels
    return image


def checked_geometry(root: Path, rel: str, max_bytes: int = MAX_BYTES) -> tuple[Path, Any]:
    """The file's real path and its header's geometry, once every check before reading
    data passed (inside the dataset, a regular file, a declared size within bounds)."""
    from volsegsync.headers import read_geometry

    path = safe_path(root, rel)
    try:
        geometry = read_geometry(path)
    except FileProblem as e:
        raise ViewError(f"{rel}: {e.reason}") from None
    if len(geometry.shape) != 3:
        raise ViewError(f"{rel}: has {len(geometry.shape)} spatial axes, pictures need 3")
    itemsize = np.dtype(geometry.dtype).itemsize if geometry.dtype else 8
    declared = math.prod(geometry.shape) * math.prod(geometry.extra_axes) * itemsize
    if declared > max_bytes:
        raise ViewError(
            f"{rel}: header declares {declared} bytes of voxel data, more than the "
            f"{max_bytes} this command reads"
        )
    if _is_nrrd(rel):
        _check_detached(root, rel, path)
    return path, geometry


def _is_nrrd(rel: str) -> bool:
    return rel.lower().endswith((".nrrd", ".nhdr"))


def _check_detached(root: Path, rel: str, path: Path) -> None:
    """A detached NRRD data file must itself be a regular file inside the dataset."""
    from volsegsync.headers import HeaderProblem, detached_data_name, read_nrrd_header

    try:
        with open_regular(path) as fh:
            header = read_nrrd_header(rel, fh.read(8192), fh).fields
    except (HeaderProblem, OSError) as e:
        reason = e.reason if isinstance(e, HeaderProblem) else e.strerror or str(e)
        raise ViewError(f"{rel}: cannot parse the NRRD header: {reason}") from None
    name = detached_data_name(header)
    if not name:
        return
    if name.startswith("LIST") or "%" in name:
        raise ViewError(f"{rel}: multi-file NRRD data ({name!r}) is not supported")
    target = Path(name) if os.path.isabs(name) else path.parent / name
    base = Path(os.path.realpath(root))
    try:
        data_rel = Path(os.path.realpath(target)).relative_to(base).as_posix()
    except ValueError:
        raise ViewError(
            f"{rel}: its data file {name!r} lies outside the dataset, not read"
        ) from None
    safe_path(root, data_rel)


def _nifti_data(path: Path, rel: str) -> tuple[NDArray, tuple[float, float]]:
    """Voxels (unscaled, in the file's dtype) and (slope, intercept) of a NIfTI file.

    The gzip stream is inflated in one call, by ISA-L when the ``isal`` package is
    installed (the ``view`` extra brings it; about twice zlib's speed), and never
    past the bytes the header declares (a gzip bomb costs nothing).
    """
    from nibabel import Nifti1Header, Nifti2Header

    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ViewError(f"{rel}: cannot read: {e.strerror or e}") from None
    from volsegsync.decode import inflater as make_inflater

    inflater = make_inflater(fast=True) if raw[:2] == b"\x1f\x8b" else None
    try:
        head = inflater.decompress(raw, 348) if inflater is not None else raw[:540]
        if inflater is not None and int.from_bytes(head[:4], "little") not in (348, 348 << 24):
            head += inflater.decompress(inflater.unconsumed_tail, 540 - len(head))  # NIfTI-2
        size = next(
            (n for n in (348, 540) for order in ("little", "big") if
             int.from_bytes(head[:4], order) == n), None
        )  # fmt: skip
        if size is None or len(head) < size:
            raise ViewError(f"{rel}: not a NIfTI file")
        kind: Any = Nifti1Header if size == 348 else Nifti2Header
        header: Any = kind(head[:size], check=False)
        shape = tuple(int(n) for n in header.get_data_shape())
        dtype = header.get_data_dtype()
        offset = int(header.get_data_offset())
        need = offset + math.prod(shape) * dtype.itemsize
        if inflater is None:
            body, start = raw, offset
        elif offset >= len(head):  # the data in one piece of its own: no copy
            gap = inflater.decompress(inflater.unconsumed_tail, offset - len(head))
            body = inflater.decompress(inflater.unconsumed_tail, need - offset)
            start, need = 0, need - offset if len(gap) == offset - len(head) else need + 1
        else:
            rest = inflater.decompress(inflater.unconsumed_tail, need - len(head))
            body, start = head + rest, offset
        slope, inter = header.get_slope_inter()
    except ViewError:
        raise
    except Exception as e:
        raise ViewError(f"{rel}: cannot decode: {_one_line(e)}") from None
    if len(body) < need:
        raise ViewError(f"{rel}: the data ends before the {need} bytes its header declares")
    data = np.frombuffer(body, dtype=dtype, count=math.prod(shape), offset=start)
    scale = (
        1.0 if slope is None or not np.isfinite(slope) else float(slope),
        0.0 if inter is None or not np.isfinite(inter) else float(inter),
    )
    return data.reshape(shape, order="F"), scale


class _Decoded(NamedTuple):
    data: NDArray
    segments: list[tuple[str, int, int]]
    layer_axis: int | None


def _nrrd_data(path: Path, rel: str) -> _Decoded:
    # the content pass's decoder: memory bounded by the declared size (bombs), detached
    # data only from a regular file next to the header; ISA-L's inflate when installed
    from volsegsync.decode import Bad, read_array

    try:
        data, image = read_array(path, fast=True)
    except Bad as e:
        raise ViewError(f"{rel}: {e.reason}") from None
    except OSError as e:
        raise ViewError(f"{rel}: cannot read: {e.strerror or e}") from None
    return _Decoded(data, image.segments, image.layer_axis)


def _spatial(rel: str, data: NDArray, shape: tuple[int, ...]) -> NDArray:
    """The first 3D volume of ``data`` (extra axes after or before the spatial ones)."""
    if data.shape == shape:
        return data
    n = math.prod(shape)
    if data.ndim < 3 and data.size == n:
        return data.reshape(shape, order="F")
    first: NDArray
    if data.ndim > 3 and tuple(data.shape[:3]) == shape:
        first = data[(slice(None),) * 3 + (0,) * (data.ndim - 3)]
        return first
    if data.ndim > 3 and tuple(data.shape[-3:]) == shape:
        first = data[(0,) * (data.ndim - 3)]
        return first
    raise ViewError(f"{rel}: cannot tell the spatial axes of data shaped {list(data.shape)}")


def _integers(rel: str, data: NDArray) -> NDArray:
    if data.dtype.kind in "iu":
        return data
    if data.dtype.kind == "b":
        return data.view(np.uint8)
    if data.dtype.kind == "f":
        rounded = np.rint(data)
        if np.array_equal(rounded, data):
            return rounded.astype(np.int32)
    raise ViewError(f"{rel}: holds non-integer values, not a label map")


def _flatten_layers(
    rel: str,
    layers: NDArray,
    segments: list[tuple[str, int, int, tuple[int, int, int] | None]],
    shape: tuple[int, ...],
) -> NDArray:
    if tuple(layers.shape[1:]) != shape:
        raise ViewError(f"{rel}: layered data shaped {list(layers.shape)} does not fit {shape}")
    dtype = np.uint8 if len(segments) < 256 else np.uint16
    out = np.zeros(shape, dtype=dtype)
    for i, (_, value, layer, _) in enumerate(segments):
        if 0 <= layer < layers.shape[0]:
            out[layers[layer] == value] = i + 1
    return out


def _image(rel: str, data: NDArray, geometry: Any) -> Image:
    affine = np.array(geometry.affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ViewError(f"{rel}: no 3D placement in its header")
    return Image(rel, data, affine, bool(geometry.anatomical), str(geometry.frame))


def geometry_image(rel: str, geometry: Any) -> Image:
    """An :class:`Image` of the header's grid and placement, without data (yet)."""
    image = _image(rel, np.empty((0, 0, 0)), geometry)
    image.grid = tuple(int(n) for n in geometry.shape)
    return image


def _declared_labels(declared: Mapping[int, str]) -> dict[int, Label]:
    return {v: Label(v, name, default_color(v)) for v, name in declared.items() if v != 0}


def _segment_colors(fields: Mapping[str, str]) -> dict[int, tuple[int, int, int]]:
    """Slicer ``SegmentN_Color`` by segment position in the header."""
    from volsegsync.dataset_checks import segment_fields

    return {i: s.color for i, s in enumerate(segment_fields(fields)) if s.color is not None}


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."
