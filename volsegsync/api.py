"""The pipeline API: iterate a dataset's (verified) pairs, load them as arrays.

A PyTorch or MONAI dataset is a few lines on top of this (see docs/export.md)::

    from volsegsync.api import iter_pairs, load_pair

    pairs = list(iter_pairs("path/to/dataset"))      # verified pairs only
    image, label, affine = load_pair(pairs[0])       # numpy arrays on one grid

Everything here is typed and returns plain named tuples; bad files are never
raised while iterating, they make a pair unverified (``problems`` says why).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from volsegsync.dataset import Dataset

if TYPE_CHECKING:
    import numpy as np

    from volsegsync.headers import Geometry

__all__ = ["PairRecord", "iter_pairs", "load_pair"]


class PairRecord(NamedTuple):
    """One volume/segmentation pair, with what a training pipeline needs to know."""

    case: str  # the pairing key, e.g. "C01-LowerBack_FSE_T2w_V001-D22061998"
    volume: Path  # absolute path of the volume (channel 0000 of a multi-channel case)
    segmentation: Path  # absolute path of the active segmentation version
    channels: dict[str, Path]  # channel id ("0000", "0001", ...) -> volume path
    version: int | None  # segmentation version, None when unversioned
    volume_hash: str  # xxh3-128 of the volume's bytes
    segmentation_hash: str  # xxh3-128 of the segmentation's bytes
    shape: tuple[int, ...]  # the volume's voxel grid
    spacing: tuple[float, ...]  # mm
    origin: tuple[float, ...]  # RAS mm of voxel (0, 0, 0)
    direction: tuple[tuple[float, ...], ...]  # unit RAS vector of each voxel axis
    affine: tuple[tuple[float, ...], ...]  # 4x4 voxel -> RAS mm
    labels: dict[int, str]  # label values the segmentation holds -> names
    verified: bool  # passes verify (no error-severity problem touches the pair)
    problems: tuple[str, ...]  # why not, one line each


def iter_pairs(
    path: Path | str = ".",
    verified: bool = True,
    fast: bool = False,
    jobs: int | None = None,
) -> Iterator[PairRecord]:
    """The complete pairs of the dataset at ``path`` (or its nearest parent), by case.

    With ``verified`` (the default) only pairs that pass ``verify`` are yielded;
    ``fast`` selects them by header-only checks. Results of unchanged files come
    from the dataset's caches, so a second call is quick.
    """
    from volsegsync.headers import HeaderProblem, read_geometry
    from volsegsync.ops.export import collect_cases, content_reports, dataset_labels

    ds = Dataset.open(path)
    cases = [c for c in collect_cases(ds, fast=fast, jobs=jobs) if not c.blocked]
    if verified:
        cases = [c for c in cases if c.verified]
    items = [(c.segmentation, c.digests[c.segmentation], "segmentation") for c in cases]
    reports = content_reports(ds, items, jobs)
    names = {value: name for name, value in dataset_labels(ds, cases, jobs)[0].items()}
    for c in cases:
        problems = c.reasons
        try:
            geo: Geometry | None = read_geometry(ds.root / c.volume, ds.root)
        except HeaderProblem as e:
            if verified:
                continue  # changed since it was verified
            geo, problems = None, (*c.reasons, e.reason)
        report = reports.get(c.segmentation)
        values = report.values if report is not None and report.error is None else ()
        yield PairRecord(
            case=c.case,
            volume=ds.root / c.volume,
            segmentation=ds.root / c.segmentation,
            channels={ch: ds.root / p for ch, p in c.channels},
            version=c.version,
            volume_hash=c.digests[c.volume],
            segmentation_hash=c.digests[c.segmentation],
            shape=geo.shape if geo else (),
            spacing=geo.spacing if geo else (),
            origin=geo.origin if geo else (),
            direction=geo.directions if geo else (),
            affine=geo.affine if geo else (),
            labels={v: names.get(v, f"label_{v}") for v in values},
            verified=not c.reasons,
            problems=problems,
        )


def load_pair(record: PairRecord) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], Any]:
    """``(image, label, affine)``: the volume's voxels (channels stacked on a first
    axis when there are several), the segmentation as a label map on the volume's
    grid (Slicer layers flattened, as ``export`` does) and the 4x4 RAS affine."""
    import numpy as np

    from volsegsync.export import as_labels, flatten_layers, load_image, onto_grid

    ds = Dataset.open(record.volume.parent)
    limit = ds.config.limits.max_image_bytes
    images = [load_image(p, ds.root, limit) for _, p in sorted(record.channels.items())]
    volume = images[0]
    seg = load_image(record.segmentation, ds.root, limit)
    data = as_labels(
        flatten_layers(seg, str(record.segmentation), ds.config.verify.labels),
        str(record.segmentation),
    )
    label = onto_grid(
        data, seg.affine, volume.data.shape, volume.affine, 1e-3, str(record.segmentation)
    )
    image = volume.data if len(images) == 1 else np.stack([i.data for i in images])
    return image, label, volume.affine
