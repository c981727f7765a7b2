"""``volsegsync export``."""

from __future__ import annotations

from pathlib import Path

import click

from volsegsync.commands.common import (
    EXIT_PROBLEMS,
    Outcome,
    common_options,
    jobs_option,
    open_dataset,
    progress_factory,
)
from volsegsync.errors import VolsegsyncError
from volsegsync.ops.export import FORMATS
from volsegsync.output import Rendered, emit


@click.command("export")
@click.argument("export_format", metavar="FORMAT", type=click.Choice(FORMATS))
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--include-failing",
    is_flag=True,
    help="Export pairs that fail verify too (by default they are listed with their reasons).",
)
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    default=None,
    metavar="K",
    help="Split the cases into K folds, deterministically, a group never in two folds "
    "(decathlon: a 'fold' per item; nnunet: splits_final.json; csv: a fold column).",
)
@click.option(
    "--group-by",
    default=None,
    metavar="FIELD",
    help="Naming field grouping cases for --folds, e.g. the patient prefix "
    "(default: the first field; 'case': every case its own group).",
)
@click.option(
    "--channel-name",
    "channel_names",
    multiple=True,
    metavar="ID=NAME",
    help="Name of an input channel in dataset.json, e.g. 0=CT or 1=FLAIR (repeatable; "
    "nnU-Net normalises a channel named CT as CT).",
)
@click.option("--fast", is_flag=True, help="Select pairs by header-only checks (verify --fast).")
@click.option(
    "--force",
    is_flag=True,
    help="Replace files in OUT that an earlier volsegsync export did not write.",
)
@jobs_option("Worker processes (default: all cores).")
@common_options
def export_command(
    export_format: str,
    out: Path,
    include_failing: bool,
    folds: int | None,
    group_by: str | None,
    channel_names: tuple[str, ...],
    fast: bool,
    force: bool,
    jobs: int | None,
    fmt: str,
    quiet: bool,
) -> None:
    """Export the verified pairs for training, to OUT.

    \b
    FORMAT is one of:
      nnunet     a raw nnU-Net v2 dataset folder: imagesTr/CASE_0000.nii.gz,
                 labelsTr/CASE.nii.gz and dataset.json
      decathlon  the same files in MSD's layout and an MSD/MONAI datalist
                 OUT/dataset.json (training: image, label; paths relative to it)
      csv        the file OUT, one row per pair: paths, version, hashes, geometry

    Only pairs that pass verify are exported (the others are listed with their
    reasons, exit 1) unless --include-failing. Segmentations become NIfTI label
    maps on their volume's exact grid (labels unchanged); volumes are linked
    (reflink, hard link) where the filesystem allows, else copied. A re-run
    writes only what changed (OUT/.volsegsync-export.json records what each file
    was made from). OUT must lie outside the dataset, or in a folder that
    scan.exclude leaves out. See docs/export.md.

    \b
    Example:
      volsegsync export nnunet ../nnUNet_raw/Dataset001_Spine
      volsegsync export decathlon ../msd --folds 5 --group-by prefix
      volsegsync export csv pairs.csv --format json
    """
    from volsegsync.ops.export import run_export

    names = {}
    for item in channel_names:
        key, sep, name = item.partition("=")
        if not sep or not key.strip().isdigit() or not name.strip():
            raise VolsegsyncError(f"--channel-name {item!r}: expected ID=NAME, e.g. 0=CT")
        names[str(int(key))] = name.strip()
    ds = open_dataset()
    with progress_factory(quiet) as progress:
        report = run_export(
            ds,
            export_format,
            out,
            include_failing=include_failing,
            folds=folds,
            group_by=group_by,
            channel_names=names,
            fast=fast,
            force=force,
            jobs=jobs,
            progress=progress,
        )
    skipped = [
        {"case": s.case, "files": list(s.files), "reasons": list(s.reasons)} for s in report.skipped
    ]
    document = {
        "schema": "volsegsync.export/1",
        "format": report.fmt,
        "out": str(report.out),
        "exported": report.exported,
        "skipped": skipped,
        "written": report.written,
        "removed": report.removed,
        "placed": report.placed,
        "labels": report.labels,
        "folds": report.folds,
        "warnings": report.warnings,
        "summary": {
            "exported": len(report.exported),
            "skipped": len(report.skipped),
            "written": len(report.written),
            "unchanged": report.unchanged,
            "removed": len(report.removed),
        },
    }
    lines = []
    for s in report.skipped:
        lines.append(f"skipped {s.case}:")
        lines.extend(f"  {reason}" for reason in s.reasons)
    lines.extend(f"warning: {w}" for w in report.warnings)
    how = ", ".join(f"{n} {k}" for k, n in report.placed.items())
    lines.append(
        f"exported {len(report.exported)} pairs to {report.out} ({report.fmt}): "
        f"{len(report.written)} files written{f' ({how})' if how else ''}, "
        f"{report.unchanged} unchanged, {len(report.removed)} removed; "
        f"{len(report.skipped)} pairs skipped"
    )
    rows = [{"case": c, "exported": True, "reasons": []} for c in report.exported]
    rows += [
        {"case": s.case, "exported": False, "reasons": list(s.reasons)} for s in report.skipped
    ]
    emit(Rendered(lines, document, rows, ["case", "exported", "reasons"]), fmt, quiet)
    if report.skipped:
        raise Outcome(EXIT_PROBLEMS)
