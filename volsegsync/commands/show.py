"""``volsegsync show``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from volsegsync.commands.common import common_options, open_dataset
from volsegsync.fsutil import atomic_write_bytes
from volsegsync.output import Rendered, emit

if TYPE_CHECKING:
    from volsegsync.view.render import Figure

F = TypeVar("F", bound=Callable[..., Any])
SLICE_HELP = "Voxel indices I,J,K of the volume to cut through ('-' keeps the centre for an axis)."
WINDOW_HELP = (
    "Intensity window LOW,HIGH, 'auto' (1st-99th percentile, the default) or a preset: "
    "ct-soft, ct-bone, ct-lung, ct-brain."
)


def save_png(figure: Figure, output: str) -> str:
    """Write the picture atomically (never through a symbolic link); the path written."""
    path = Path(output)
    atomic_write_bytes(path, figure.png())
    return str(path)


def png_option(help_text: str) -> Callable[[F], F]:
    """``-o/--output FILE.png``."""
    return click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False),
        metavar="FILE.png",
        default=None,
        help=help_text,
    )


@click.command("show")
@click.argument("pair")
@png_option("Where to write the picture (default: KEY.png in the current folder).")
@click.option("--slice", "slices", metavar="I,J,K", default=None, help=SLICE_HELP)
@click.option("--window", metavar="LOW,HIGH", default=None, help=WINDOW_HELP)
@common_options
def show_command(
    pair: str, output: str | None, slices: str | None, window: str | None, fmt: str, quiet: bool
) -> None:
    """Draw a pair: axial, coronal and sagittal slices with the segmentation overlaid.

    PAIR is a case key or the path of its volume or a segmentation; PAIR@vN
    picks segmentation version N. Slices go through the centre of the
    segmented region. The segmentation is placed in world space: voxel for
    voxel, by its offset, or resampled (nearest neighbour); a pair without a
    shared anatomical frame is refused, never drawn misaligned. Labels are
    named from 3D Slicer segment fields or [verify.labels]. Needs the 'view'
    extra (Pillow).

    \b
    Example:
      volsegsync show C01-LowerBack_FSE_T2w_V001-D22061998 -o c01.png
      volsegsync show volumes/C01-LowerBack_FSE_T2w_V001-D22061998.nii.gz@v1 --window ct-soft
    """
    from volsegsync.ops.show import run_show

    ds = open_dataset()
    result = run_show(ds, pair, slices, window)
    written = save_png(result.figure, output or f"{result.pair.key}.png")
    planes = {p.plane: p.cut for p in result.figure.panels}
    labels = [
        {
            "value": v,
            "name": result.names[v],
            "voxels": n,
            "ml": round(n * result.voxel_ml, 6),
        }
        for v, n in sorted(result.counts.items())
    ]
    document = {
        "schema": "volsegsync.show/1",
        "pair": result.pair.to_json(),
        "output": written,
        "alignment": result.alignment.to_json(),
        "slices": planes,
        "centre": list(result.figure.centre),
        "window": list(result.figure.window),
        "labels": labels,
    }
    lines = [
        f"{written}: {result.pair.segmentation} on {result.pair.volume} ({result.alignment.note})",
        "slices: "
        + ", ".join(f"{k} {v}" for k, v in planes.items())
        + f"; window {result.figure.window[0]:g}..{result.figure.window[1]:g}",
    ]
    lines += [
        f"  {row['value']} {row['name']}: {row['voxels']} voxels, {row['ml']:g} mL"
        for row in labels
    ]
    emit(Rendered(lines, document, labels, ["value", "name", "voxels", "ml"]), fmt, quiet)
