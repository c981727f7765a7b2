"""``volsegsync show``: a pair's volume in three slices with its segmentation overlaid."""

from __future__ import annotations

from typing import NamedTuple

from volsegsync.dataset import Dataset
from volsegsync.errors import VolsegsyncError
from volsegsync.view.align import Alignment, align
from volsegsync.view.load import Image, load_segmentation, load_volume
from volsegsync.view.metrics import label_counts
from volsegsync.view.render import (
    Figure,
    auto_window,
    label_legend,
    parse_slice,
    parse_window,
    render,
    segmentation_painter,
    segmented_centre,
)
from volsegsync.view.sources import PairFiles, find_pair


class ShowResult(NamedTuple):
    pair: PairFiles
    alignment: Alignment
    figure: Figure
    counts: dict[int, int]  # voxels per label value
    names: dict[int, str]
    voxel_ml: float


def load_pair(ds: Dataset, pair: PairFiles) -> tuple[Image, Image, Alignment]:
    """The volume and segmentation of ``pair``, and how the one lies on the other."""
    if pair.volume is None:
        raise VolsegsyncError(f"{pair.segmentation}: has no volume to draw it on")
    volume = load_volume(pair.root, pair.volume)
    seg = load_segmentation(pair.root, pair.segmentation, ds.config.verify.labels)
    return volume, seg, align(volume, seg)


def run_show(
    ds: Dataset, spec: str, slices: str | None = None, window: str | None = None
) -> ShowResult:
    pair = find_pair(ds, spec)
    chosen_window = parse_window(window)
    volume, seg, alignment = load_pair(ds, pair)
    centre = list(segmented_centre(volume, seg, alignment))
    for axis, given in enumerate(parse_slice(slices, volume.data.shape)):
        if given is not None:
            centre[axis] = given
    counts = label_counts(seg.data)
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
