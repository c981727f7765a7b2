"""``volsegsync show``: a pair's volume in three slices with its segmentation overlaid."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from volsegsync.dataset import Dataset
from volsegsync.errors import VolsegsyncError
from volsegsync.view import require_pillow
from volsegsync.view.align import Alignment, align
from volsegsync.view.load import load_segmentation, load_volume
from volsegsync.view.metrics import label_counts
from volsegsync.view.render import (
    Figure,
    auto_window,
    label_centre,
    label_legend,
    parse_slice,
    parse_window,
    render,
    segmentation_painter,
    volume_voxel,
)
from volsegsync.view.sources import PairFiles, Workspace


class ShowResult(NamedTuple):
    pair: PairFiles
    alignment: Alignment
    figure: Figure
    counts: dict[int, int]  # voxels per label value
    names: dict[int, str]
    voxel_ml: float


def run_show(
    ds: Dataset, spec: str, slices: str | None = None, window: str | None = None
) -> ShowResult:
    require_pillow()  # before any decoding: a missing extra is said at once
    with Workspace(ds) as ws:  # a version from the store or a revision is read there
        return _show(ds, ws.find(spec), slices, window)


def _show(ds: Dataset, pair: PairFiles, slices: str | None, window: str | None) -> ShowResult:
    chosen_window = parse_window(window)
    if pair.volume is None:
        raise VolsegsyncError(f"{pair.segmentation}: has no volume to draw it on")
    # inflating the volume releases the GIL: read it while the segmentation is analysed
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load_volume, pair.root, pair.volume)
        seg = load_segmentation(pair.root, pair.segmentation, ds.config.verify.labels)
        counts = label_counts(seg.data)
        seg_centre = label_centre(seg.data)
        volume = pending.result()
    alignment = align(volume, seg)
    centre = list(volume_voxel(seg_centre, volume, alignment))
    for axis, given in enumerate(parse_slice(slices, volume.data.shape)):
        if given is not None:
            centre[axis] = given
    names = {v: seg.label(v).name for v in counts}
    title = f"{pair.segmentation}\non {pair.volume}: {alignment.note}"
    figure = render(
        volume,
        segmentation_painter(seg, alignment),
        centre,
        chosen_window or auto_window(volume),
        title,
        label_legend(seg, sorted(counts)),
    )
    return ShowResult(pair, alignment, figure, counts, names, seg.voxel_ml)
