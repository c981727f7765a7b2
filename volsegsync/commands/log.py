"""``volsegsync log``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from volsegsync.commands.changes_view import change_line, summary
from volsegsync.commands.common import common_options, open_dataset
from volsegsync.output import Rendered, emit

if TYPE_CHECKING:
    from volsegsync.history import CommitInfo
    from volsegsync.ops.log import LogEntry, LogReport, VersionRecord


@click.command("log")
@click.argument("args", nargs=-1, metavar="[REVISION|A..B|PAIR|PATH]...")
@click.option(
    "-n", "--max-count", "limit", type=click.IntRange(min=1), metavar="N", help="Show N commits."
)
@click.option(
    "--since", metavar="DATE", help="Commits after DATE (2026-01-31, 2026-01-31T12:00, 2.weeks)."
)
@click.option("-c", "--changes", "show", is_flag=True, help="List every change under its commit.")
@common_options
def log_command(
    args: tuple[str, ...], limit: int | None, since: str | None, show: bool, fmt: str, quiet: bool
) -> None:
    """Show the commits that changed the index, with the pairing changes each made.

    Newest first, one line per commit as 'git log --oneline' with a summary of
    its changes (pairs added and removed, version bumps, re-pairings, content
    changed without a version bump, renames). Arguments are revisions or ranges
    (default HEAD; main..feature) and pairs: a volume or segmentation path, a
    folder (every pair below it) or a name key. For a pair: the version map,
    each segmentation version with the commit that introduced it, and the later
    commits that edited, renamed or re-paired it. Read from git (no git binary
    needed); parsed changes are cached by commit id in .volsegsync/state/.

    \b
    Example:
      volsegsync log -n 10
      volsegsync log volumes/C01-Back_V001-D22061998.nii.gz
      volsegsync log main..feature --changes
      volsegsync log --since 2.weeks --format json
    """
    from volsegsync.ops.log import run_log, split_args  # dulwich loads only here

    ds = open_dataset()
    revs, pairs = split_args(ds, args)
    report = run_log(ds, revs, pairs, limit=limit, since=since)
    versions = report.versions
    document = (
        {
            "schema": "volsegsync.log/1",
            "pairs": pairs,
            "commits": [_commit_json(e) for e in report.entries],
            "versions": None if versions is None else [_version_json(v) for v in versions],
            "notes": report.notes,
        }
        if fmt == "json"
        else {}  # text needs only the counts: the changes stay undecoded (cache)
    )
    rows = [
        {
            "commit": e.commit.id,
            "date": _date(e.commit),
            "author": e.commit.author,
            "subject": e.commit.subject,
            "kind": c.kind,
            "paths": list(c.paths),
            "message": c.message,
        }
        for e in report.entries
        for c in (e.changes if fmt == "csv" else ())
    ]
    columns = ["commit", "date", "author", "subject", "kind", "paths", "message"]
    emit(Rendered(_text(report, show), document, rows, columns), fmt, quiet)


def _date(c: CommitInfo) -> str:
    from volsegsync.ops.log import iso_date

    return iso_date(c)


def _name(author: str) -> str:
    return author.split(" <", 1)[0]


def _oneline(e: LogEntry) -> str:
    c = e.commit
    note = f" [{e.note}]" if e.note else ""
    return f"{c.short} {_date(c)[:10]} {_name(c.author)}: {c.subject} — {summary(e.counts)}{note}"


def _text(report: LogReport, show: bool) -> list[str]:
    lines: list[str] = []
    if report.versions is not None:
        for v in report.versions:
            lines.extend(_version_lines(v))
        if report.versions:
            lines.append("")
    for e in report.entries:
        lines.append(_oneline(e))
        if show or report.versions is not None:
            lines.extend(f"    {change_line(c)}" for c in e.changes)
    lines.extend(f"note: {n}" for n in report.notes)
    return lines


def _version_lines(v: VersionRecord) -> list[str]:
    c = v.commit
    version = "unversioned" if v.version is None else f"v{v.version}"
    lines = [
        f"{version}: {v.segmentation.path} ({v.volume or 'no volume'})",
        f"    {c.short} {_date(c)[:10]} {_name(c.author)}: {c.subject} [{v.kind}]",
    ]
    if v.provenance is not None:
        p = v.provenance
        lines.append(f"    from {p.source} by {p.annotator or '?'} on {p.date}: {p.message}")
    for event in v.later:
        ec = event.commit
        lines.append(
            f"    later {ec.short} {_date(ec)[:10]} {_name(ec.author)}: {change_line(event.change)}"
        )
    return lines


def _commit_fields(c: CommitInfo) -> dict[str, Any]:
    return {
        "commit": c.id,
        "short": c.short,
        "author": c.author,
        "date": _date(c),
        "subject": c.subject,
    }


def _commit_json(e: LogEntry) -> dict[str, Any]:
    return {
        **_commit_fields(e.commit),
        "parents": list(e.commit.parents),
        "path": e.path,
        "note": e.note,
        "summary": e.counts,
        "changes": [c.to_json(entries=True) for c in e.changes],
    }


def _version_json(v: VersionRecord) -> dict[str, Any]:
    return {
        "version": v.version,
        "segmentation": {
            "path": v.segmentation.path,
            "size": v.segmentation.size,
            "hash": v.segmentation.digest,
        },
        "volume": v.volume,
        "provenance": None if v.provenance is None else v.provenance._asdict(),
        "introduced": _commit_fields(v.commit),
        "kind": v.kind,
        "later": [
            {
                **_commit_fields(ev.commit),
                "kind": ev.change.kind,
                "message": ev.change.message,
                "warning": ev.change.warning,
            }
            for ev in v.later
        ],
    }
