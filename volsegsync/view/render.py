"""Three orthogonal slices of a volume with an overlay, drawn to a PNG with Pillow.

Slices are cut along the volume's own voxel axes, in the order closest to RAS,
and shown in the radiological convention: axial and coronal with the patient's
right on the left of the picture, anterior (axial) or superior (coronal,
sagittal) at the top, sagittal with anterior on the left. Every output pixel
samples the voxel under its centre (nearest neighbour), so a label's outline is
one crisp pixel at any zoom and the physical aspect ratio is kept.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from volsegsync.errors import VolsegsyncError
from volsegsync.view import require_pillow
from volsegsync.view.align import Alignment, sample
from volsegsync.view.load import Image, Label

NDArray = np.ndarray[Any, Any]

# plane -> (world axis cut, world axis down the rows, world axis along the columns)
PLANES: dict[str, tuple[int, int, int]] = {
    "axial": (2, 1, 0),
    "coronal": (1, 2, 0),
    "sagittal": (0, 2, 1),
}
FILL_ALPHA = 0.45  # a label's interior: this much of its colour over the grey
PANEL_MIN, PANEL_MAX = 256, 512  # pixels on a panel's longer side (before thumbnails)
MARGIN, LINE = 8, 18
BACKGROUND = (16, 16, 16)
TEXT = (235, 235, 235)
WINDOW_PRESETS: dict[str, tuple[float, float]] = {  # name -> (low, high)
    "ct-soft": (-160.0, 240.0),
    "ct-bone": (-500.0, 1300.0),
    "ct-lung": (-1350.0, 150.0),
    "ct-brain": (0.0, 80.0),
}
PERCENTILES = (1.0, 99.0)
PNG_LEVEL = 1  # zlib level for pictures: 3x faster than 6, files about a third larger


# Paints a panel: given volume voxel indices (3, H, W) -> (RGB (H, W, 3) uint8, alpha (H, W))
Painter = Callable[[NDArray], tuple[NDArray, NDArray]]


class Panel(NamedTuple):
    plane: str
    cut: int  # the volume voxel index along the axis cut
    box: tuple[int, int, int, int]  # x, y, width, height in the picture
    voxels: tuple[int, int]  # rows, columns of volume voxels shown


class Figure(NamedTuple):
    canvas: NDArray  # the picture's pixels, (height, width, 3) uint8
    panels: list[Panel]
    window: tuple[float, float]
    centre: tuple[int, int, int]
    drawn: Any = None  # with captions: the PIL.Image.Image holding them

    @property
    def picture(self) -> Any:
        """The picture as a ``PIL.Image.Image``."""
        if self.drawn is not None:
            return self.drawn
        return require_pillow().fromarray(self.canvas, "RGB")

    def save(self, path: str) -> None:
        with open(path, "wb") as f:
            f.write(self.png())

    def png(self) -> bytes:
        """The picture as PNG bytes (a picture without captions without Pillow)."""
        if self.drawn is None:
            return png_bytes(self.canvas)
        import io

        buf = io.BytesIO()
        self.drawn.save(buf, format="PNG", optimize=False, compress_level=PNG_LEVEL)
        return buf.getvalue()


def png_bytes(rgb: NDArray, level: int = PNG_LEVEL) -> bytes:
    """An RGB picture (height, width, 3) uint8 as a PNG: each row filtered by its
    difference to the row above (PNG filter 2, "Up"), then deflated at ``level``."""
    height, width, _ = rgb.shape
    flat = rgb.reshape(height, width * 3)
    rows = np.empty((height, width * 3 + 1), dtype=np.uint8)
    rows[:, 0] = 2
    rows[0, 1:] = flat[0]
    np.subtract(flat[1:], flat[:-1], out=rows[1:, 1:])  # modulo 256, as PNG's Up filter
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    chunks = ((b"IHDR", header), (b"IDAT", zlib.compress(rows.tobytes(), level)), (b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        for kind, data in chunks
    )


# --------------------------------------------------------------------------- orientation


def display_axes(affine: NDArray) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """For world axes x, y, z: (voxel axis closest to it, +1 or -1 along it)."""
    linear = affine[:3, :3] / np.maximum(np.sqrt((affine[:3, :3] ** 2).sum(axis=0)), 1e-12)
    free_voxel = [0, 1, 2]
    out: dict[int, tuple[int, int]] = {}
    # assign the strongest world/voxel pairs first, as nibabel's io_orientation does
    for _ in range(3):
        best = max(
            ((w, v) for w in range(3) if w not in out for v in free_voxel),
            key=lambda wv: abs(linear[wv[0], wv[1]]),
        )
        w, v = best
        out[w] = (v, 1 if linear[w, v] >= 0 else -1)
        free_voxel.remove(v)
    return out[0], out[1], out[2]


def plane_grid(
    shape: Sequence[int], affine: NDArray, plane: str, index: int, size: tuple[int, int]
) -> NDArray:
    """Volume voxel indices (3, rows, cols) under the pixel centres of a panel of ``size``."""
    axes = display_axes(affine)
    cut_w, row_w, col_w = PLANES[plane]
    height, width = size
    grid = np.zeros((3, height, width), dtype=np.intp)
    for world, count, along in ((row_w, height, 0), (col_w, width, 1)):
        voxel_axis, sign = axes[world]
        n = shape[voxel_axis]
        steps = np.minimum(((np.arange(count) + 0.5) * n / count).astype(np.intp), n - 1)
        positions = n - 1 - steps if sign > 0 else steps  # decreasing world coordinate
        grid[voxel_axis] = positions[:, None] if along == 0 else positions[None, :]
    grid[axes[cut_w][0]] = index
    return grid


def panel_sizes(
    image: Image, pixels: tuple[int, int] = (PANEL_MIN, PANEL_MAX)
) -> dict[str, tuple[tuple[int, int], tuple[int, int]]]:
    """Per plane: (voxel rows, voxel columns) and (pixel height, pixel width), one scale."""
    axes = display_axes(image.affine)
    spacing = image.spacing
    shape = image.shape
    extents: dict[str, tuple[int, int, float, float]] = {}
    for plane, (_, row_w, col_w) in PLANES.items():
        rv, cv = axes[row_w][0], axes[col_w][0]
        extents[plane] = (shape[rv], shape[cv], shape[rv] * spacing[rv], shape[cv] * spacing[cv])
    longest = max(max(e[2], e[3]) for e in extents.values())
    finest = min(spacing)
    per_mm = min(max(1.0 / finest, pixels[0] / longest), pixels[1] / longest)
    return {
        plane: ((r, c), (max(1, round(h * per_mm)), max(1, round(w * per_mm))))
        for plane, (r, c, h, w) in extents.items()
    }


# --------------------------------------------------------------------------- intensities


def parse_window(text: str | None) -> tuple[float, float] | None:
    """``LOW,HIGH`` in the volume's units, or a preset name; None for percentiles."""
    if text is None or text.strip() in ("", "auto"):
        return None
    key = text.strip().lower()
    if key in WINDOW_PRESETS:
        return WINDOW_PRESETS[key]
    parts = key.split(",")
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        names = ", ".join(WINDOW_PRESETS)
        raise VolsegsyncError(
            f"--window {text!r}: expected LOW,HIGH (e.g. -160,240), 'auto' or one of {names}"
        ) from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise VolsegsyncError(f"--window {text!r}: LOW must be below HIGH")
    return low, high


def auto_window(volume: Image) -> tuple[float, float]:
    """The 1st and 99th percentile of the intensities (a subsample of ~1M voxels)."""
    from volsegsync.view.stream import window_step

    sample = volume.window_sample(window_step(volume.shape))
    # the percentiles do not depend on the values' order: raveled in memory order
    if sample.dtype.kind in "iub":  # all finite, each exact as a float64
        values = sample.ravel(order="K")
    else:
        values = np.asarray(sample, dtype=np.float64).ravel(order="K")
        values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = percentiles(values, PERCENTILES)
    slope, inter = volume.scale
    low, high = sorted((float(low) * slope + inter, float(high) * slope + inter))
    return (low, high) if high > low else (low, low + 1.0)


def percentiles(values: NDArray, qs: Sequence[float]) -> list[float]:
    """``np.percentile(values, qs)`` (its default, linear method) to the last bit, for
    finite values of any real dtype, without the ``np.unique`` inside it (which
    imports ``numpy.ma``: 10 ms a process)."""
    n = values.size
    spots = []
    for q in qs:
        at = (n - 1) * (q / 100)  # numpy's virtual index
        low = min(math.floor(at), n - 1)
        spots.append((low, min(low + 1, n - 1), at - low))
    part = np.partition(values, sorted({i for lo, hi, _ in spots for i in (lo, hi)}))
    out = []
    for lo, hi, t in spots:  # numpy's _lerp, in float64 as there
        a, b = float(part[lo]), float(part[hi])
        d = b - a
        out.append(b - d * (1 - t) if t >= 0.5 else a + d * t)
    return out


def _grey(volume: Image, ijk: NDArray, window: tuple[float, float]) -> NDArray:
    raw = volume.voxels(ijk).astype(np.float64)
    slope, inter = volume.scale
    low, high = window
    scaled = (raw * slope + inter - low) / (high - low)
    grey = (np.clip(np.nan_to_num(scaled), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    out: NDArray = np.repeat(grey[..., None], 3, axis=-1)
    return out


# --------------------------------------------------------------------------- overlays


def color_table(values: NDArray, labels: Callable[[int], Label]) -> tuple[NDArray, NDArray]:
    """Distinct non-zero values of ``values`` and their colours (k, 3)."""
    flat = np.sort(values, axis=None)  # np.unique would import numpy.ma (10 ms)
    distinct = np.ones(flat.size, dtype=bool)
    distinct[1:] = flat[1:] != flat[:-1]
    present = flat[distinct & (flat != 0)]
    colors = np.array([labels(int(v)).color for v in present], dtype=np.uint8).reshape(-1, 3)
    return present, colors


def outline(labels: NDArray) -> NDArray:
    """Pixels whose label differs from a 4-neighbour's (inside the labelled area)."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    result: NDArray = edge & (labels != 0)
    return result


def paint_labels(labels: NDArray, label_of: Callable[[int], Label]) -> tuple[NDArray, NDArray]:
    """Colour and alpha of a 2D label map: filled interiors, opaque outlines."""
    present, colors = color_table(labels, label_of)
    rgb = np.zeros((*labels.shape, 3), dtype=np.uint8)
    if present.size:
        position = np.searchsorted(present, labels)
        position = np.clip(position, 0, present.size - 1)
        known = labels != 0
        rgb[known] = colors[position[known]]
    alpha = np.where(labels != 0, FILL_ALPHA, 0.0)
    alpha[outline(labels)] = 1.0
    return rgb, alpha


def segmentation_painter(seg: Image, alignment: Alignment) -> Painter:
    def paint(ijk: NDArray) -> tuple[NDArray, NDArray]:
        return paint_labels(sample(seg.data, alignment.matrix, ijk), seg.label)

    return paint


# --------------------------------------------------------------------------- centre


def segmented_centre(volume: Image, seg: Image, alignment: Alignment) -> tuple[int, int, int]:
    """The volume voxel at the centre of the segmented region (through labelled slices)."""
    return volume_voxel(label_centre(seg.data), volume, alignment)


def label_centre(labels: NDArray) -> tuple[float, float, float] | None:
    """Per axis, the labelled slice nearest the centroid of the labelled voxels (in the
    label map's own voxels); None when nothing is labelled."""
    from volsegsync.view.metrics import label_profiles

    return profile_centre(label_profiles(labels)[1])


def profile_centre(counts: Sequence[NDArray]) -> tuple[float, float, float] | None:
    """:func:`label_centre` from the labelled voxels per slice along each axis."""
    total = int(counts[0].sum())
    if total == 0:
        return None
    centre = []
    for c in counts:
        mean = float((np.arange(c.size) * c).sum()) / total
        filled = np.flatnonzero(c)
        centre.append(float(filled[np.argmin(np.abs(filled - mean))]))
    return centre[0], centre[1], centre[2]


def volume_voxel(
    centre: tuple[float, float, float] | None, volume: Image, alignment: Alignment
) -> tuple[int, int, int]:
    """A segmentation voxel as the nearest volume voxel (the volume's centre for None)."""
    shape = volume.shape
    if centre is None:
        return shape[0] // 2, shape[1] // 2, shape[2] // 2
    back = np.linalg.inv(alignment.matrix)
    point = back[:3, :3] @ np.array(centre) + back[:3, 3]
    i, j, k = (int(np.clip(np.rint(p), 0, n - 1)) for p, n in zip(point, shape, strict=True))
    return i, j, k


def parse_slice(text: str | None, shape: Sequence[int]) -> list[int | None]:
    """``I,J,K`` volume voxel indices; ``-`` (or nothing) keeps the default for an axis."""
    if text is None:
        return [None, None, None]
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise VolsegsyncError(f"--slice {text!r}: expected I,J,K (voxel indices, '-' for default)")
    out: list[int | None] = []
    for part, n in zip(parts, shape, strict=True):
        if part in ("", "-"):
            out.append(None)
            continue
        try:
            value = int(part)
        except ValueError:
            raise VolsegsyncError(f"--slice {text!r}: {part!r} is not a voxel index") from None
        if not 0 <= value < n:
            raise VolsegsyncError(f"--slice {text!r}: index {value} outside 0..{n - 1}")
        out.append(value)
    return out


# --------------------------------------------------------------------------- figure


def render(
    volume: Image,
    painter: Painter | None,
    centre: Sequence[int],
    window: tuple[float, float],
    title: str = "",
    legend: Sequence[tuple[tuple[int, int, int], str]] = (),
    pixels: tuple[int, int] = (PANEL_MIN, PANEL_MAX),
    captions: bool = True,
) -> Figure:
    """Axial, coronal and sagittal panels side by side, a title and a legend (drawn
    with Pillow; without captions the picture is composed and written without it)."""
    font = None
    if captions:
        require_pillow()
        from PIL import ImageFont

        font = ImageFont.load_default(size=13)
    axes = display_axes(volume.affine)
    sizes = panel_sizes(volume, pixels)
    title_lines = title.split("\n") if captions and title else []
    top = 4 + LINE * len(title_lines) if title_lines else (MARGIN if captions else 0)
    caption_h = LINE if captions else 0
    margin = MARGIN if captions else 1
    tallest = max(px[0] for _, px in sizes.values())
    width = margin + sum(px[1] + margin for _, px in sizes.values())
    width = max([width, *(2 * margin + _text_width(t, font) for t in title_lines)])
    legend_rows = _legend_rows(legend, width, font) if captions else []
    height = top + tallest + caption_h + margin + LINE * len(legend_rows)
    panels: list[Panel] = []
    tiles: list[tuple[int, NDArray, str]] = []  # x, pixels, caption of each panel
    x = margin
    for plane, (cut_w, _, _) in PLANES.items():
        voxels, (h, w) = sizes[plane]
        index = int(centre[axes[cut_w][0]])
        ijk = plane_grid(volume.shape, volume.affine, plane, index, (h, w))
        rgb = _grey(volume, ijk, window)
        if painter is not None:
            color, alpha = painter(ijk)
            a = alpha[..., None]
            rgb = (rgb * (1.0 - a) + color * a + 0.5).astype(np.uint8)
        panels.append(Panel(plane, index, (x, top, w, h), voxels))
        tiles.append((x, rgb, _caption(volume, plane, index, axes)))
        x += w + margin
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[...] = BACKGROUND
    at = (int(centre[0]), int(centre[1]), int(centre[2]))
    if font is None:
        for x, rgb, _ in tiles:
            canvas[top : top + rgb.shape[0], x : x + rgb.shape[1]] = rgb
        return Figure(canvas, panels, window, at)
    pil = require_pillow()
    from PIL import ImageDraw

    picture = pil.fromarray(canvas, "RGB")
    draw = ImageDraw.Draw(picture)
    for x, rgb, caption in tiles:
        picture.paste(pil.fromarray(rgb, "RGB"), (x, top))
        draw.text((x, top + rgb.shape[0] + 2), caption, fill=TEXT, font=font)
    for n, line in enumerate(title_lines):
        draw.text((margin, 4 + LINE * n), line, fill=TEXT, font=font)
    y = top + tallest + caption_h + margin
    for row in legend_rows:
        lx = margin
        for swatch, text in row:
            draw.rectangle((lx, y + 3, lx + 11, y + 14), fill=swatch)
            draw.text((lx + 16, y + 1), text, fill=TEXT, font=font)
            lx += 16 + _text_width(text, font) + 14
        y += LINE
    return Figure(np.asarray(picture), panels, window, at, picture)


def _caption(volume: Image, plane: str, index: int, axes: Any) -> str:
    voxel_axis = axes[PLANES[plane][0]][0]
    names = "ijk"
    return f"{plane} {names[voxel_axis]}={index}"


def _text_width(text: str, font: Any) -> int:
    return int(font.getlength(text)) if font is not None else 0


def _legend_rows(
    legend: Sequence[tuple[tuple[int, int, int], str]], width: int, font: Any
) -> list[list[tuple[tuple[int, int, int], str]]]:
    rows: list[list[tuple[tuple[int, int, int], str]]] = []
    used = width
    for color, text in legend:
        need = 16 + _text_width(text, font) + 14
        if not rows or used + need > width - MARGIN:
            rows.append([])
            used = MARGIN
        rows[-1].append((color, text))
        used += need
    return rows


def label_legend(
    seg: Image, values: Sequence[int], names: Mapping[int, str] | None = None
) -> list[tuple[tuple[int, int, int], str]]:
    """Legend entries ``(colour, "VALUE name")`` for the given label values."""
    out = []
    for v in values:
        label = seg.label(int(v))
        name = (names or {}).get(int(v), label.name)
        out.append((label.color, f"{v} {name}"))
    return out
