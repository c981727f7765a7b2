"""Seeing the data: overlay pictures, version comparisons and the HTML report.

Modules, one concept each:

- :mod:`~volsegsync.view.load` reads a volume or a segmentation (safely: inside the
  dataset, regular files only, memory bounded by the declared size) with its RAS
  affine and, for segmentations, the label names and colours;
- :mod:`~volsegsync.view.align` maps a segmentation onto a volume's grid in world
  space (voxel for voxel, by a whole-voxel offset, or by nearest neighbour);
- :mod:`~volsegsync.view.render` draws three orthogonal slices with the overlay;
- :mod:`~volsegsync.view.metrics` counts, Dice and Hausdorff distances;
- :mod:`~volsegsync.view.sources` finds the files of ``PAIR@vN``;
- :mod:`~volsegsync.view.report` writes the static HTML report.

Pillow is an extra (``volsegsync[view]``); :func:`require_pillow` names it when missing.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from volsegsync.errors import VolsegsyncError

EXTRA_HINT = "pip install 'volsegsync[view]'"


def check_pillow() -> None:
    """Fail at once (one line naming the extra) when Pillow is not installed, without
    importing it (a report whose thumbnails are all cached never needs it)."""
    import importlib.util

    try:
        found = importlib.util.find_spec("PIL") is not None
    except (ImportError, ValueError, AttributeError):  # e.g. sys.modules["PIL"] = None
        found = False
    if not found:
        raise VolsegsyncError(f"pictures need Pillow, which is not installed: {EXTRA_HINT}")


def require_pillow() -> Any:
    """The ``PIL.Image`` module, or a one-line error naming the extra to install."""
    try:
        from PIL import Image
    except ImportError:
        raise VolsegsyncError(
            f"pictures need Pillow, which is not installed: {EXTRA_HINT}"
        ) from None
    return Image


BLAS_THREADS = "OPENBLAS_NUM_THREADS"


def import_numpy() -> None:
    """Import numpy (once per process) with OpenBLAS on one thread unless the user set
    a number: OpenBLAS starts a thread per core as numpy is imported, a fifth of the
    import's CPU time on this project's 2-core machine, and a thumbnail uses BLAS for
    4x4 inverses only. The environment is left as it was."""
    if "numpy" in sys.modules:
        return
    unset = BLAS_THREADS not in os.environ
    if unset:
        os.environ[BLAS_THREADS] = "1"
    try:
        import numpy  # noqa: F401
    finally:
        if unset:
            os.environ.pop(BLAS_THREADS, None)
