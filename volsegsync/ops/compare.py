"""``volsegsync compare``: two segmentation versions of a pair, in numbers and a picture."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from volsegsync.dataset import Dataset
from volsegsync.errors import VolsegsyncError
from volsegsync.view import require_pillow
from volsegsync.view.align import Alignment, align, resample, sample
from volsegsync.view.load import Image, load_segmentation
from volsegsync.view.metrics import LabelComparison, compare_labels, label_counts
from volsegsync.view.render import Figure, auto_window, outline, parse_window, render
from volsegsync.view.sources import PairFiles, Workspace
from volsegsync.view.stream import VolumeStream

NDArray = np.ndarray[Any, Any]
ADDED = (40, 220, 60)  # voxels B labels and A does not (or labels otherwise)
REMOVED = (235, 40, 40)  # voxels A labels and B does not
KEPT = (240, 240, 240)  # outline of what both label alike


class CompareResult(NamedTuple):
    a: PairFiles
    b: PairFiles
    labels: list[LabelComparison]
    added: list[int]  # label values only B holds
    removed: list[int]  # label values only A holds
    changed_voxels: int  # voxels (on A's grid) whose label differs
    alignment: Alignment  # how B lies on A's grid
    figure: Figure | None


def run_compare(
    ds: Dataset, spec_a: str, spec_b: str, picture: bool = False, window: str | None = None
) -> CompareResult:
    """``spec_a`` against ``spec_b`` (``PAIR``, ``PAIR@vN``, ``PAIR@REV``, ``PAIR@vN@REV``):
    versions from the working tree, the content store or a git revision."""
    if picture:
        require_pillow()
    with Workspace(ds) as ws:
        a = ws.find(spec_a, with_volume=picture)
        b = ws.find(spec_b, with_volume=False)
        return compare_files(ds, a, b, picture, window)


def compare_files(
    ds: Dataset, a: PairFiles, b: PairFiles, picture: bool = False, window: str | None = None
) -> CompareResult:
    """The numbers (and, with ``picture``, the slices) of two located versions."""
    labels = ds.config.verify.labels
    seg_a = load_segmentation(a.root, a.segmentation, labels)
    seg_b = load_segmentation(b.root, b.segmentation, labels)
    if seg_a.layered != seg_b.layered:
        raise VolsegsyncError(
            f"{b.segmentation}: one version is a layered Slicer file and the other not: "
            "their label values do not correspond"
        )
    b_on_a_grid = align(seg_a, seg_b)
    b_on_a = resample(seg_b, seg_a.data.shape, b_on_a_grid)
    counts_a, counts_b = label_counts(seg_a.data), label_counts(seg_b.data)
    names = {v: seg_a.label(v).name for v in counts_a}
    names.update({v: seg_b.label(v).name for v in counts_b if v not in names})
    table = compare_labels(
        seg_a.data,
        b_on_a,
        counts_a,
        counts_b,
        seg_a.voxel_ml,
        seg_b.voxel_ml,
        seg_a.affine,
        names,
    )
    changed = seg_a.data != b_on_a
    figure = _figure(a, seg_a, seg_b, changed, window) if picture else None
    return CompareResult(
        a,
        b,
        table,
        sorted(counts_b.keys() - counts_a.keys()),
        sorted(counts_a.keys() - counts_b.keys()),
        int(np.count_nonzero(changed)),
        b_on_a_grid,
        figure,
    )


def result_json(result: CompareResult) -> dict[str, Any]:
    """Every figure of a comparison (the ``compare`` JSON document without its schema)."""
    return {
        "a": result.a.to_json(),
        "b": result.b.to_json(),
        "alignment": result.alignment.to_json(),
        "labels": [row.to_json() for row in result.labels],
        "added": result.added,
        "removed": result.removed,
        "changed_voxels": result.changed_voxels,
    }


def _figure(
    pair: PairFiles, seg_a: Image, seg_b: Image, changed: NDArray, window: str | None
) -> Figure:
    if pair.volume is None:
        raise VolsegsyncError(f"{pair.segmentation}: has no volume to draw on")
    with VolumeStream(pair.root, pair.volume) as stream:  # only the planes drawn are kept
        on_a, on_b = align(stream.image, seg_a), align(stream.image, seg_b)
        region = changed if changed.any() else (seg_a.data != 0)
        centre = _centre(stream.image, seg_a, region, on_a)
        volume = stream.planes((centre[0], centre[1], centre[2]))

    def paint(ijk: NDArray) -> tuple[NDArray, NDArray]:
        la, lb = sample(seg_a.data, on_a.matrix, ijk), sample(seg_b.data, on_b.matrix, ijk)
        rgb = np.zeros((*la.shape, 3), dtype=np.uint8)
        alpha = np.zeros(la.shape)
        kept = outline(np.where(la == lb, la, 0))
        rgb[kept], alpha[kept] = KEPT, 0.8
        added = (lb != la) & (lb != 0)
        removed = (lb != la) & (lb == 0)
        rgb[added], alpha[added] = ADDED, 0.7
        rgb[removed], alpha[removed] = REMOVED, 0.7
        return rgb, alpha

    title = f"{pair.key}: {seg_a.path}\n-> {seg_b.path}"
    legend = [(ADDED, "added"), (REMOVED, "removed"), (KEPT, "unchanged (outline)")]
    return render(volume, paint, centre, parse_window(window) or auto_window(volume), title, legend)


def _centre(volume: Image, seg: Image, region: NDArray, alignment: Alignment) -> list[int]:
    from volsegsync.view.render import segmented_centre

    marked = Image(seg.path, region.astype(np.uint8), seg.affine, seg.anatomical, seg.frame)
    return list(segmented_centre(volume, marked, alignment))
