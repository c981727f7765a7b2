"""``volsegsync compare``."""

from __future__ import annotations

import click

from volsegsync.commands.common import common_options, open_dataset
from volsegsync.commands.show import WINDOW_HELP, png_option, save_png
from volsegsync.output import Rendered, emit

COLUMNS = [
    "value",
    "name",
    "voxels_a",
    "voxels_b",
    "ml_a",
    "ml_b",
    "dice",
    "hausdorff_mm",
    "status",
]


@click.command("compare")
@click.argument("a")
@click.argument("b")
@png_option("Also draw the slices with voxels added (green) and removed (red).")
@click.option("--window", metavar="LOW,HIGH", default=None, help=WINDOW_HELP)
@common_options
def compare_command(
    a: str, b: str, output: str | None, window: str | None, fmt: str, quiet: bool
) -> None:
    """Compare two segmentation versions: per label counts, mL, Dice, Hausdorff.

    A and B are PAIR@vN (a case key or a file path, then the version; without
    @vN the active version). Per label: voxels and volume (mL) in each version,
    Dice and the symmetric Hausdorff distance between surfaces (mm, world
    space, B resampled onto A's grid when the grids differ), labels added or
    removed. Versions come from the working tree today.

    \b
    Example:
      volsegsync compare C01-LowerBack_FSE_T2w_V001-D22061998@v1 \\
          C01-LowerBack_FSE_T2w_V001-D22061998@v2 -o change.png
    """
    from volsegsync.ops.compare import run_compare

    ds = open_dataset()
    result = run_compare(ds, a, b, picture=output is not None, window=window)
    written = save_png(result.figure, output) if output and result.figure else None
    rows = [row.to_json() for row in result.labels]
    document = {
        "schema": "volsegsync.compare/1",
        "a": result.a.to_json(),
        "b": result.b.to_json(),
        "alignment": result.alignment.to_json(),
        "labels": rows,
        "added": result.added,
        "removed": result.removed,
        "changed_voxels": result.changed_voxels,
        "output": written,
    }
    lines = [f"A {result.a.segmentation}", f"B {result.b.segmentation} ({result.alignment.note})"]
    for r in result.labels:
        dice = "-" if r.dice is None else f"{r.dice:.4f}"
        hd = "-" if r.hausdorff_mm is None else f"{r.hausdorff_mm:.2f} mm"
        lines.append(
            f"  {r.value} {r.name}: {r.voxels_a} -> {r.voxels_b} voxels "
            f"({r.ml_a:.3f} -> {r.ml_b:.3f} mL), Dice {dice}, Hausdorff {hd}"
            + ("" if r.status == "both" else f" [{r.status}]")
        )
    lines.append(f"{result.changed_voxels} voxels changed label")
    if written:
        lines.append(f"picture: {written}")
    emit(Rendered(lines, document, rows, COLUMNS), fmt, quiet)
