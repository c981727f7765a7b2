"""``volsegsync show``: a pair's volume in three slices with its segmentation overlaid."""

from __future__ import annotations

from typing import NamedTuple

from volsegsync.dataset import Dataset
from volsegsync.errors import VolsegsyncError
from volsegsync.view import require_pillow
from volsegsync.view.align import Alignment
from volsegsync.view.render import Figure, parse_window
from volsegsync.view.sources import PairFiles, Workspace
from volsegsync.view.stream import draw_pair


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
    drawn = draw_pair(
        pair.root, pair.volume, pair.segmentation, ds.config.verify.labels, slices, chosen_window
    )
    names = {v: drawn.seg.label(v).name for v in drawn.counts}
    return ShowResult(pair, drawn.alignment, drawn.figure, drawn.counts, names, drawn.seg.voxel_ml)
