"""``volsegsync handout``."""

from __future__ import annotations

from pathlib import Path

import click

from volsegsync.commands.common import common_options, open_dataset
from volsegsync.ops.handout import run_handout
from volsegsync.ops.ingest import MANIFEST
from volsegsync.output import Rendered, emit


@click.command("handout")
@click.argument("out", type=click.Path(file_okay=False))
@click.argument("pairs", nargs=-1)
@click.option(
    "--filter",
    "pattern",
    default=None,
    metavar="GLOB",
    help="Only pairs whose key or a file path matches this glob (e.g. 'C0*', '*Knee*').",
)
@click.option(
    "--with-segmentations",
    is_flag=True,
    help="Also hand out each pair's active segmentation (copied, for editing).",
)
@common_options
def handout_command(
    out: str, pairs: tuple[str, ...], pattern: str | None, with_segmentations: bool,
    fmt: str, quiet: bool,
) -> None:  # fmt: skip
    """Write a work package for an annotator into the new folder OUT.

    The selected pairs (PAIRS: keys, file paths or folders of the index; default
    all) are written at their dataset paths below OUT: volumes as hard links where
    the filesystem allows, else reflinks or copies, and with --with-segmentations the
    active segmentation as a copy. handout.json records the index revision (git
    HEAD) and the hashes handed out; ingest reads it to warn when a delivery was
    based on an outdated version. OUT must be outside the dataset and new or empty.

    \b
    Example:
      volsegsync handout ../for-anna --filter 'C0*' --with-segmentations
    """
    ds = open_dataset()
    report = run_handout(ds, Path(out), list(pairs), pattern, with_segmentations)
    lines = [f"{f.role}: {f.path} ({f.how})" for f in report.files]
    lines.append(
        f"handed out {len(report.manifest['items'])} pairs, {len(report.files)} files "
        f"into {report.out}; {MANIFEST} at revision {(report.revision or 'none')[:12]}"
    )
    document = {
        "schema": "volsegsync.handout/1",
        "out": str(report.out),
        "revision": report.revision,
        "manifest": MANIFEST,
        "files": [
            {"path": f.path, "role": f.role, "how": f.how, "hash": f.digest} for f in report.files
        ],
    }
    rows = [{"path": f.path, "role": f.role, "how": f.how} for f in report.files]
    emit(Rendered(lines, document, rows, ["path", "role", "how"]), fmt, quiet)
