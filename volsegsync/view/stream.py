"""A volume read for a picture: only the voxels the picture shows, kept as the data
streams by.

A picture of a pair needs three planes of the volume (through the centre of the
segmented region) and a sparse subsample for the intensity window, not the
volume itself. :class:`VolumeStream` inflates the volume in a thread (ISA-L's
inflate when the ``isal`` package is installed, zlib's otherwise; both release
the GIL) from the first byte on (:func:`volsegsync.decode.ahead`: while the
header is parsed, a bounded read-ahead) and while the caller reads and measures
the segmentation; once the centre
is known, :meth:`VolumeStream.planes` keeps, plane by plane of the file, the
three voxel planes through it and every ``step``-th voxel along each axis. The
decoded volume is never held whole: inflated pieces wait in a queue only until
the centre is known (at most the declared size, the bound of
:mod:`volsegsync.decode`). Reading stops at the last value of the first 3D
volume, as the old whole-volume read did: the rest of a 4D file is never
inflated, and a gzip bomb costs the declared size and no more (a picture is not
a check: ``verify --full`` checks the whole stream).

The picture is the one the whole volume gives, pixel for pixel: the planes hold
the very voxels :func:`~volsegsync.view.render.render` samples, and the
subsample the very voxels :func:`~volsegsync.view.render.auto_window` takes.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NamedTuple

import numpy as np

from volsegsync.view.align import Alignment
from volsegsync.view.load import Image, ViewError, checked_geometry, geometry_image, safe_path

NDArray = np.ndarray[Any, Any]
_END = object()
INLINE_BYTES = 2 << 20  # a volume file this small is read without a thread


def window_step(shape: tuple[int, ...]) -> int:
    """The stride of the intensity window's subsample (about a million voxels)."""
    step: int = max(1, round((math.prod(shape) / 1_000_000) ** (1 / 3)))
    return step


class Planes:
    """Three voxel planes through ``centre`` and a strided subsample of a volume."""

    def __init__(self, shape: tuple[int, int, int], centre: tuple[int, int, int], dtype: Any):
        nx, ny, nz = shape
        self.shape = shape
        self.centre = centre
        self.step = s = window_step(shape)
        self.cut_k = np.empty((nx, ny), dtype)  # i, j at k = centre k
        self.cut_j = np.empty((nx, nz), dtype)  # i, k at j = centre j
        self.cut_i = np.empty((ny, nz), dtype)  # j, k at i = centre i
        # filled a plane of constant k at a time: in Fortran order each plane is one
        # contiguous block (in C order a scatter with a stride of nz values)
        self.sample = np.empty((-(-nx // s), -(-ny // s), -(-nz // s)), dtype, order="F")
        self.filled = 0  # planes (k) taken so far

    def take(self, plane: NDArray) -> None:
        """The next plane of constant k, shaped (nx, ny)."""
        k = self.filled
        ci, cj, ck = self.centre
        if k == ck:
            self.cut_k[...] = plane
        self.cut_j[:, k] = plane[:, cj]
        self.cut_i[:, k] = plane[ci, :]
        if k % self.step == 0:
            self.sample[:, :, k // self.step] = plane[:: self.step, :: self.step]
        self.filled += 1

    def voxels(self, ijk: NDArray) -> NDArray:
        """Values at volume voxel indices ``ijk`` (3, ...), all in one of the planes."""
        i, j, k = ijk
        ci, cj, ck = self.centre
        if np.all(k == ck):
            found: NDArray = self.cut_k[i, j]
        elif np.all(j == cj):
            found = self.cut_j[i, k]
        elif np.all(i == ci):
            found = self.cut_i[j, k]
        else:
            raise ValueError("voxels outside the planes that were kept")
        return found


class _Collector:
    """Cuts the flat file-order values into planes of constant k for :class:`Planes`.

    ``factor``: values per voxel in the file before the spatial axes (a leading
    component axis; the first component is drawn), 1 otherwise.
    """

    def __init__(self, planes: Planes, factor: int) -> None:
        nx, ny, _ = planes.shape
        self.planes = planes
        self.factor = factor
        self.size = nx * ny * factor
        self.buffer: NDArray | None = None
        self.fill = 0

    @property
    def done(self) -> bool:
        return self.planes.filled >= self.planes.shape[2]

    def feed(self, chunk: NDArray) -> None:
        pos, n = 0, chunk.size
        if self.fill:
            assert self.buffer is not None
            take = min(self.size - self.fill, n)
            self.buffer[self.fill : self.fill + take] = chunk[:take]
            self.fill += take
            pos = take
            if self.fill == self.size:
                self._plane(self.buffer)
                self.fill = 0
        while n - pos >= self.size and not self.done:
            self._plane(chunk[pos : pos + self.size])
            pos += self.size
        if pos < n and not self.done:
            if self.buffer is None:
                self.buffer = np.empty(self.size, chunk.dtype)
            self.buffer[: n - pos] = chunk[pos:]
            self.fill = n - pos

    def _plane(self, flat: NDArray) -> None:
        nx, ny, _ = self.planes.shape
        values = flat[:: self.factor] if self.factor > 1 else flat
        self.planes.take(values.reshape((nx, ny), order="F"))


def _first(chunks: Iterator[NDArray], needed: int) -> Iterator[NDArray]:
    """The chunks up to ``needed`` values (the rest is never decoded)."""
    for chunk in chunks:
        if chunk.size >= needed:
            yield chunk[:needed]
            return
        yield chunk
        needed -= chunk.size


def _factor(rel: str, full: tuple[int, ...], shape: tuple[int, ...]) -> int:
    """Values per spatial voxel ahead of the first volume's (see ``load._spatial``)."""
    n = math.prod(shape)
    if tuple(full) == shape or (len(full) > 3 and tuple(full[:3]) == shape):
        return 1
    if len(full) < 3 and math.prod(full) == n:
        return 1
    if len(full) > 3 and tuple(full[-3:]) == shape:
        return math.prod(full[:-3])
    raise ViewError(f"{rel}: cannot tell the spatial axes of data shaped {list(full)}")


class VolumeStream:
    """A volume being decoded in a thread (see the module's description).

    Use as a context manager: leaving it stops the thread and closes the file.
    ``image`` holds the header's placement and an empty ``data``; after
    :meth:`planes`, ``image.planes`` answers for the voxels a picture needs.
    """

    def __init__(self, root: Path, rel: str) -> None:
        from volsegsync.decode import Bad, open_image

        # a gzip stream starts inflating at once (a bounded read-ahead), while the
        # header is parsed and checked; a small file is read in this thread, where
        # two threads would cost more than they overlap (a thumbnail's volume)
        self._fh: IO[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        try:
            path = safe_path(root, rel)
            threaded = os.stat(path).st_size > INLINE_BYTES
            self._fh, decoded = open_image(path, fast=True, scaled=False, threaded=threaded)
            self._chunks = decoded.chunks
            _, geometry = checked_geometry(root, rel)
        except Bad as e:
            self.close()
            raise ViewError(f"{rel}: {e.reason}") from None
        except OSError as e:
            self.close()
            raise ViewError(f"{rel}: cannot read: {e.strerror or e}") from None
        except BaseException:
            self.close()
            raise
        self.image: Image = geometry_image(rel, geometry)
        self.image.scale = decoded.scale
        try:
            self._factor = _factor(rel, decoded.shape, self.image.shape)
        except ViewError:
            self.close()
            raise
        self._dtype = decoded.dtype
        self._needed = math.prod(self.image.shape) * self._factor  # up to the first volume's end
        if threaded:
            self._thread = threading.Thread(target=self._produce, daemon=True)
            self._thread.start()

    def _produce(self) -> None:
        try:
            for chunk in _first(self._chunks, self._needed):
                if self._stop.is_set():
                    break
                self._queue.put(chunk)
        except BaseException as e:  # handed to the consumer, raised there
            self._queue.put(e)
        finally:
            self._chunks.close()  # type: ignore[attr-defined]
            self._queue.put(_END)

    def _values(self) -> Iterator[NDArray]:
        """The first volume's values in file order, from the thread or read here."""
        if self._thread is None:
            yield from _first(self._chunks, self._needed)
            return
        while (item := self._queue.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def planes(self, centre: tuple[int, int, int]) -> Image:
        """Keep the planes through ``centre`` (volume voxel indices); the image."""
        from volsegsync.decode import Bad

        nx, ny, nz = self.image.shape
        planes = Planes((nx, ny, nz), centre, self._dtype)
        collector = _Collector(planes, self._factor)
        try:
            for chunk in self._values():
                collector.feed(chunk)
                if collector.done:
                    break
        except Bad as e:
            raise ViewError(f"{self.image.path}: {e.reason}") from None
        except OSError as e:
            raise ViewError(f"{self.image.path}: cannot read: {e.strerror or e}") from None
        if not collector.done:
            raise ViewError(f"{self.image.path}: the data ends before its header's size")
        self.image.planes = planes
        return self.image

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        else:  # never handed to a thread: closing it stops the read-ahead's
            stop = getattr(getattr(self, "_chunks", None), "close", None)
            if stop is not None:
                stop()
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> VolumeStream:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PairPicture(NamedTuple):
    figure: Any  # volsegsync.view.render.Figure
    alignment: Alignment
    seg: Image
    counts: dict[int, int]  # voxels per non-zero label value


def draw_pair(
    root: Path,
    volume: str,
    segmentation: str,
    labels: Mapping[int, str] | None = None,
    slices: str | None = None,
    window: tuple[float, float] | None = None,
    pixels: tuple[int, int] | None = None,
    captions: bool = True,
) -> PairPicture:
    """The three slices of a pair through the centre of its segmented region (or the
    voxel indices ``slices``), the volume streamed in a thread while the segmentation
    is read and measured; with ``captions`` a title and a legend."""
    from volsegsync.view.align import align
    from volsegsync.view.load import load_segmentation
    from volsegsync.view.metrics import label_profiles
    from volsegsync.view.render import (
        PANEL_MAX,
        PANEL_MIN,
        auto_window,
        label_legend,
        parse_slice,
        profile_centre,
        render,
        segmentation_painter,
        volume_voxel,
    )

    with VolumeStream(root, volume) as stream:
        seg = load_segmentation(root, segmentation, labels)
        counts, profiles = label_profiles(seg.data)
        alignment = align(stream.image, seg)
        centre = list(volume_voxel(profile_centre(profiles), stream.image, alignment))
        for axis, given in enumerate(parse_slice(slices, stream.image.shape)):
            if given is not None:
                centre[axis] = given
        image = stream.planes((centre[0], centre[1], centre[2]))
    title = f"{segmentation}\non {volume}: {alignment.note}" if captions else ""
    figure = render(
        image,
        segmentation_painter(seg, alignment),
        centre,
        window or auto_window(image),
        title,
        label_legend(seg, sorted(counts)) if captions else (),
        pixels=pixels or (PANEL_MIN, PANEL_MAX),
        captions=captions,
    )
    return PairPicture(figure, alignment, seg, counts)
