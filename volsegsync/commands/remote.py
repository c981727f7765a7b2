"""``volsegsync remote add|list|remove``."""

from __future__ import annotations

import click

from volsegsync.commands.common import EXIT_PROBLEMS, Outcome, common_options, open_dataset
from volsegsync.dataset import Dataset
from volsegsync.output import Rendered, emit


@click.group("remote")
def remote_command() -> None:
    """Manage remotes: folders or S3 buckets holding a copy of the content store.

    Remotes live in the tracked .volsegsync/config.toml, so that every clone knows
    where the data is; --local keeps one in the untracked config.local.toml.
    Credentials never go into either file: they come from the environment or the
    backend's own configuration (AWS profiles). See docs/remotes.md.

    \b
    Example:
      volsegsync remote add nas /mnt/nas/spine-data --default
      volsegsync remote add s3 s3://lab-bucket/spine
      volsegsync remote list
    """


@remote_command.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--default", "default", is_flag=True, help="Make it the default remote.")
@click.option(
    "--endpoint-url",
    default="",
    metavar="URL",
    help="S3-compatible server (MinIO, Ceph), e.g. http://127.0.0.1:9000.",
)
@click.option(
    "--local", is_flag=True, help="Write it to the untracked .volsegsync/config.local.toml."
)
@click.option("--force", is_flag=True, help="Replace a remote of the same name.")
@common_options
def remote_add_command(
    name: str,
    url: str,
    default: bool,
    endpoint_url: str,
    local: bool,
    force: bool,
    fmt: str,
    quiet: bool,
) -> None:
    """Add a remote NAME at URL: a folder path, file:///PATH, s3://BUCKET/PREFIX
    or ssh://HOST[:PORT]/PATH.

    A URL holding credentials (s3://KEY:SECRET@..., a query string) is refused.

    \b
    Example:
      volsegsync remote add nas /mnt/nas/spine-data --default
      volsegsync remote add minio s3://spine/data --endpoint-url http://minio:9000
      volsegsync remote add lab ssh://lab.example.org/srv/spine-data
    """
    from volsegsync.ops.remote import add_remote

    path = add_remote(open_dataset(), name, url, endpoint_url, default, local, force)
    document = {
        "schema": "volsegsync.remote/1",
        "action": "add",
        "name": name,
        "file": str(path),
    }
    where = path.name
    lines = [f"added remote {name} ({url}) to {where}" + (" as the default" if default else "")]
    emit(Rendered(lines, document, [document], list(document)), fmt, quiet)


@remote_command.command("remove")
@click.argument("name")
@click.option("--local", is_flag=True, help="Remove it from .volsegsync/config.local.toml.")
@common_options
def remote_remove_command(name: str, local: bool, fmt: str, quiet: bool) -> None:
    """Remove remote NAME from the config (the data on it is left alone).

    \b
    Example:
      volsegsync remote remove nas
    """
    from volsegsync.ops.remote import remove_remote

    path = remove_remote(open_dataset(), name, local)
    document = {
        "schema": "volsegsync.remote/1",
        "action": "remove",
        "name": name,
        "file": str(path),
    }
    emit(Rendered([f"removed remote {name} from {path.name}"], document, [document]), fmt, quiet)


@remote_command.command("list")
@common_options
def remote_list_command(fmt: str, quiet: bool) -> None:
    """List the remotes: name, URL, default mark, and which config file holds it.

    \b
    Example:
      volsegsync remote list --format json
    """
    from volsegsync.ops.remote import list_remotes

    rows = [r._asdict() for r in list_remotes(open_dataset())]
    lines = [
        f"{r['name']}\t{r['url']}"
        + (f"\tendpoint {r['endpoint_url']}" if r["endpoint_url"] else "")
        + ("\t(default)" if r["default"] else "")
        + ("\t(local)" if r["where"] == "local" else "")
        for r in rows
    ] or ["no remotes; add one with 'volsegsync remote add NAME URL'"]
    document = {"schema": "volsegsync.remotes/1", "remotes": rows}
    emit(
        Rendered(lines, document, rows, ["name", "url", "endpoint_url", "default", "where"]),
        fmt,
        quiet,
    )


def remote_status(name: str, fmt: str, quiet: bool) -> None:
    """``status --remote NAME``: exit 0 when both sides hold every indexed object."""
    from volsegsync.ops.remote import run_remote_status

    report = run_remote_status(open_dataset(), name)
    kinds = [
        ("missing_on_remote", report.missing_on_remote, "not on the remote (push it)"),
        ("missing_locally", report.missing_locally, "not in the local store (fetch it)"),
        ("missing_everywhere", report.missing_everywhere, "in neither: cannot be restored"),
    ]
    rows = [
        {"object": f"{r.algorithm}/{r.digest}", "path": r.path, "size": r.size, "kind": kind}
        for kind, refs, _text in kinds
        for r in refs
    ]
    lines = [
        f"{row['object']} ({row['path']}): {text}"
        for (kind, _refs, text) in kinds
        for row in rows
        if row["kind"] == kind
    ]
    lines.append(
        f"remote {report.remote}: {report.indexed} indexed objects; "
        f"{len(report.missing_on_remote)} missing on the remote, "
        f"{len(report.missing_locally)} missing locally"
        + (f", {len(report.missing_everywhere)} in neither" if report.missing_everywhere else "")
    )
    document = {
        "schema": "volsegsync.remote-status/1",
        "remote": report.remote,
        "url": report.url,
        "in_sync": report.in_sync,
        "objects": rows,
        "summary": {
            "indexed": report.indexed,
            "missing_on_remote": len(report.missing_on_remote),
            "missing_locally": len(report.missing_locally),
            "missing_everywhere": len(report.missing_everywhere),
        },
    }
    emit(Rendered(lines, document, rows, ["object", "path", "size", "kind"]), fmt, quiet)
    if not report.in_sync:
        raise Outcome(EXIT_PROBLEMS)


def remote_gc(ds: Dataset, name: str, dry_run: bool, fmt: str, quiet: bool) -> None:
    """``gc --remote NAME``."""
    from volsegsync.ops.remote import run_remote_gc

    report = run_remote_gc(ds, name, dry_run)
    verb = "would remove" if dry_run else "removed"
    lines = [f"{verb}: {a}/{d[:2]}/{d[2:]} ({size} bytes)" for a, d, size in report.removed]
    total = sum(size for _a, _d, size in report.removed)
    lines.append(
        f"{verb} {len(report.removed)} objects ({total} bytes) from remote {report.remote}, "
        f"kept {report.kept} referenced and {report.recent} written in the last 24 hours; "
        f"{report.indexes} indexes read"
    )
    rows = [{"algorithm": a, "digest": d, "size": size} for a, d, size in report.removed]
    document = {
        "schema": "volsegsync.remote-gc/1",
        "remote": report.remote,
        "dry_run": dry_run,
        "removed": rows,
        "summary": {
            "removed": len(report.removed),
            "bytes": total,
            "kept": report.kept,
            "recent": report.recent,
            "indexes": report.indexes,
            "temporaries": report.temporaries,
        },
    }
    emit(Rendered(lines, document, rows, ["algorithm", "digest", "size"]), fmt, quiet)
