"""``volsegsync compare``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import quote

import click

from volsegsync.commands.common import common_options, open_dataset
from volsegsync.commands.show import WINDOW_HELP, png_option, save_png
from volsegsync.output import Rendered, emit, markdown_table, md_code

if TYPE_CHECKING:
    from volsegsync.ops.revcompare import VersionComparison

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
    @vN the active version), PAIR@REV or PAIR@vN@REV (as the index records it
    at a git revision). A version comes from the working tree, else from the
    content store by the hash the index records (never written into the
    working tree). Per label: voxels and volume (mL) in each version, Dice and
    the symmetric Hausdorff distance between surfaces (mm, world space, B
    resampled onto A's grid when the grids differ), labels added or removed.

    \b
    Example:
      volsegsync compare C01-LowerBack_FSE_T2w_V001-D22061998@v1 \\
          C01-LowerBack_FSE_T2w_V001-D22061998@v2 -o change.png
      volsegsync compare C01-LowerBack_FSE_T2w_V001-D22061998@main \
          C01-LowerBack_FSE_T2w_V001-D22061998@v3@feature
    """
    from volsegsync.ops.compare import result_json, run_compare

    ds = open_dataset()
    result = run_compare(ds, a, b, picture=output is not None, window=window)
    written = save_png(result.figure, output) if output and result.figure else None
    numbers = result_json(result)
    rows = numbers["labels"]
    document = {
        "schema": "volsegsync.compare/1",
        "a": numbers["a"],
        "b": numbers["b"],
        "alignment": numbers["alignment"],
        "labels": rows,
        "added": numbers["added"],
        "removed": numbers["removed"],
        "changed_voxels": numbers["changed_voxels"],
        "output": written,
    }
    lines = [
        f"A {result.a.segmentation} ({result.a.source})",
        f"B {result.b.segmentation} ({result.b.source}; {result.alignment.note})",
    ]
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


# -- the version comparisons of a change set (diff --images, report --rev) ---------------


def _v(version: object) -> str:
    return "-" if version is None else f"v{version}"


def comparison_lines(comparisons: Sequence[VersionComparison]) -> list[str]:
    """Text lines: one per re-annotated pair, then one per label."""
    lines = []
    for c in comparisons:
        doc = c.to_json()
        head = f"{doc['key']}: {_v(doc['old']['version'])} -> {_v(doc['new']['version'])}"
        if c.error:
            lines.append(f"error: {head}: {c.error}")
            continue
        lines.append(head + (f" (picture: {c.picture})" if c.picture else ""))
        for r in doc["labels"] or []:
            dice = "-" if r["dice"] is None else f"{r['dice']:.4f}"
            hd = "-" if r["hausdorff_mm"] is None else f"{r['hausdorff_mm']:.2f} mm"
            lines.append(
                f"  {r['value']} {r['name']}: {r['ml_a']:.3f} -> {r['ml_b']:.3f} mL, "
                f"Dice {dice}, Hausdorff {hd}"
            )
    return lines


def comparison_markdown(comparisons: Sequence[VersionComparison]) -> list[str]:
    """A section for the pull-request comment: per re-annotated pair its picture (a link
    to the file written, relative to where the command ran) and a table of numbers."""
    if not comparisons:
        return []
    lines = ["", f"#### Re-annotated cases ({len(comparisons)})"]
    for c in comparisons:
        doc = c.to_json()
        head = f"{_v(doc['old']['version'])} → {_v(doc['new']['version'])}"
        lines += ["", f"**{md_code(str(doc['key']))}** {head}", ""]
        if c.error:
            lines.append(f"> Not compared: {md_code(c.error)}")
            continue
        if c.picture:
            alt = "".join(ch for ch in str(doc["key"]) if ch not in "[]()<>")
            lines += [f"![{alt}]({quote(c.picture)})", ""]
        rows = [
            (
                str(r["value"]),
                md_code(str(r["name"])),
                f"{r['ml_a']:.3f} → {r['ml_b']:.3f}",
                "-" if r["dice"] is None else f"{r['dice']:.4f}",
                "-" if r["hausdorff_mm"] is None else f"{r['hausdorff_mm']:.2f}",
            )
            for r in doc["labels"] or []
        ]
        lines.extend(markdown_table(("Value", "Label", "mL", "Dice", "Hausdorff (mm)"), rows))
    return lines
