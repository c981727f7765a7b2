"""``volsegsync ingest``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from volsegsync.commands.common import (
    EXIT_PROBLEMS,
    Outcome,
    common_options,
    jobs_option,
    open_dataset,
    progress_factory,
)
from volsegsync.dataset import INDEX_FILE
from volsegsync.ops.ingest import Item, not_ingested, run_ingest, status_counts
from volsegsync.output import Rendered, emit


@click.command("ingest")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option(
    "--by",
    type=click.Choice(["name", "metadata"]),
    default=None,
    help="Match by naming key only, or also by header (a reference field, or the single "
    "volume on the same voxel grid) for files whose names do not match "
    "(default: metadata when the config's pairing.by is metadata, else name).",
)
@click.option("-n", "--dry-run", is_flag=True, help="Print the plan; write nothing.")
@click.option(
    "--accept-problems",
    is_flag=True,
    help="Add segmentations that fail the checks verify makes (geometry, labels) too.",
)
@click.option("-m", "--message", default="", help="Provenance message recorded with each version.")
@click.option("--annotator", default="", help="Who made the delivery (recorded as provenance).")
@jobs_option("Parallel readers (default: all cores).")
@common_options
def ingest_command(
    folder: str,
    by: str | None,
    dry_run: bool,
    accept_problems: bool,
    message: str,
    annotator: str,
    jobs: int | None,
    fmt: str,
    quiet: bool,
) -> None:
    """Add a delivery's segmentations as new versions of their pairs.

    Every segmentation below FOLDER (recursively) is matched to its volume by the
    naming key (with or without a version postfix), with --by metadata also by
    header (a reference field, or the single volume on the same voxel grid; two
    candidates are ambiguous, never a guess). It is checked as verify checks a
    segmentation, copied in as KEY-v(N+1) with the dataset's extension and folder
    rules, and recorded (index, content store, .volsegsync/provenance.tsv): ready
    to commit. Content equal to a recorded version is unchanged, not added again.
    FOLDER is only read; a handout.json in it warns about outdated deliveries; a
    volsegsync dataset as FOLDER keeps its recorded names and versions. Exit 1 when
    any file was not ingested (unmatched, ambiguous, failed checks, skipped).

    \b
    Example:
      volsegsync ingest ~/deliveries/anna-2026-11 --by metadata --annotator anna
      volsegsync ingest ../delivery --dry-run --format json
    """
    ds = open_dataset()
    with progress_factory(quiet or fmt != "text") as progress:
        report = run_ingest(
            ds,
            Path(folder),
            by=by,
            dry_run=dry_run,
            accept_problems=accept_problems,
            message=message,
            annotator=annotator,
            jobs=jobs,
            progress=progress,
        )
    lines = [_line(i, report.dry_run) for i in report.items]
    lines.extend(f"warning: {w}" for w in report.warnings)
    counts = status_counts(report.items)
    written = report.pair is not None and report.pair.written
    new = counts.get("new", 0)
    verb = "would add" if report.dry_run else "added"
    state = f"; wrote {INDEX_FILE}" if written else ""
    lines.append(
        f"{verb} {new}, unchanged {counts.get('unchanged', 0)}, "
        f"not ingested {len(not_ingested(report))}{state}"
    )
    document = {
        "schema": "volsegsync.ingest/1",
        "folder": str(report.folder),
        "dry_run": report.dry_run,
        "from_dataset": report.from_dataset,
        "files": [_item_json(i) for i in report.items],
        "warnings": report.warnings,
        "index_written": written,
        "summary": counts,
    }
    rows = [_item_json(i) for i in report.items]
    columns = ["source", "status", "target", "version", "volume", "how", "reason"]
    emit(Rendered(lines, document, rows, columns), fmt, quiet)
    if not_ingested(report):
        raise Outcome(EXIT_PROBLEMS)


def _line(i: Item, dry_run: bool) -> str:
    if i.status == "new":
        version = f"v{i.version}" if i.version is not None else "unversioned"
        head = "plan" if dry_run else "added"
        text = f"{head}: {i.source} -> {i.target} ({version}; {i.reason})"
        return text + "".join(f"\n    {p.severity}: {p.message}" for p in i.problems)
    if i.status == "unchanged":
        return f"unchanged: {i.source} ({i.reason})"
    text = f"{i.status}: {i.source}: {i.reason}"
    if i.candidates:
        text += f" (candidates: {', '.join(i.candidates)})"
    return text


def _item_json(i: Item) -> dict[str, Any]:
    return {
        "source": i.source,
        "status": i.status,
        "reason": i.reason,
        "key": i.key,
        "volume": i.volume,
        "target": i.target,
        "version": i.version,
        "how": i.how or None,
        "hash": i.digest,
        "candidates": list(i.candidates),
        "problems": [p.to_json() for p in i.problems],
    }
