"""``volsegsync remote add|list|remove``."""

from __future__ import annotations

import click

from volsegsync.commands.common import common_options, open_dataset
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
    """Add a remote NAME at URL: a folder path, file:///PATH or s3://BUCKET/PREFIX.

    A URL holding credentials (s3://KEY:SECRET@..., a query string) is refused.

    \b
    Example:
      volsegsync remote add nas /mnt/nas/spine-data --default
      volsegsync remote add minio s3://spine/data --endpoint-url http://minio:9000
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
