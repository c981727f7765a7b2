"""``volsegsync remote add|list|remove``: the ``[remotes.NAME]`` tables of the config.

The tracked ``.volsegsync/config.toml`` tells every clone where the data lives; the
untracked ``.volsegsync/config.local.toml`` (``--local``) holds a user's own remotes
and endpoints. Both are edited as text, so that comments and the order of the other
tables survive; the result is parsed again and must give exactly the intended remotes,
or nothing is written. Credentials are refused (see :func:`remote_url_problem`).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import NamedTuple

from volsegsync.config import (
    Config,
    RemoteConfig,
    load_config,
    load_toml,
    parse_config,
    parse_local_config,
    remote_name_problem,
    remote_url_problem,
    remotes_of,
)
from volsegsync.dataset import CONFIG_FILE, LOCAL_CONFIG_FILE, Dataset
from volsegsync.errors import ConfigError, VolsegsyncError
from volsegsync.fsutil import atomic_write_text
from volsegsync.index import DIGEST_HEX
from volsegsync.remotes import ObjectRef, RemoteError, choose_remote, open_remote

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib


class RemoteRow(NamedTuple):
    name: str
    url: str
    endpoint_url: str
    default: bool
    where: str  # "config" (tracked) or "local"


def list_remotes(ds: Dataset) -> list[RemoteRow]:
    tracked = load_config(ds.config_path).remotes
    return [
        RemoteRow(
            name,
            spec.url,
            spec.endpoint_url,
            name == ds.config.default_remote,
            "config" if tracked.get(name) == spec else "local",
        )
        for name, spec in sorted(ds.config.remotes.items())
    ]


def add_remote(
    ds: Dataset,
    name: str,
    url: str,
    endpoint_url: str = "",
    default: bool = False,
    local: bool = False,
    force: bool = False,
) -> Path:
    """Add (or with ``force`` replace) a remote; returns the file written."""
    problem = remote_name_problem(name)
    if problem:
        raise VolsegsyncError(problem)
    problem = remote_url_problem(url)
    if problem:
        raise VolsegsyncError(f"remote {name}: URL {problem}")
    if endpoint_url:
        problem = remote_url_problem(endpoint_url, endpoint=True)
        if problem:
            raise VolsegsyncError(f"remote {name}: endpoint {problem}")
    path = _target(ds, local)
    if name in ds.config.remotes and not force:
        raise VolsegsyncError(
            f"remote {name} exists ({ds.config.remotes[name].url}); "
            "use --force to replace it, or 'volsegsync remote remove' first"
        )
    body = [f"url = {_quote(url)}"]
    if endpoint_url:
        body.append(f"endpoint_url = {_quote(endpoint_url)}")
    text = _set_table(_read(path), ("remotes", name), body)
    if default:
        text = _set_key(text, "core", "remote", _quote(name))
    _write_checked(path, text, name, RemoteConfig(url, endpoint_url), default)
    return path


def remove_remote(ds: Dataset, name: str, local: bool = False) -> Path:
    path = _target(ds, local)
    remotes, default = parse_remotes_of(path)
    if name not in remotes:
        where = "the local config" if local else CONFIG_FILE
        raise VolsegsyncError(f"no remote {name!r} in {where} ({path})")
    text = _set_table(_read(path), ("remotes", name), None)
    if default == name:
        text = _set_key(text, "core", "remote", None)
    _write_checked(path, text, name, None, False)
    return path


def parse_remotes_of(path: Path) -> tuple[dict[str, RemoteConfig], str | None]:
    return remotes_of(path, load_toml(path))


# -- text editing ------------------------------------------------------------------------


def _target(ds: Dataset, local: bool) -> Path:
    return ds.meta_dir / (LOCAL_CONFIG_FILE if local else CONFIG_FILE)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a TOML basic string (no control chars)


_HEADER = re.compile(r"^\s*\[\[?[^\]]*\]\]?\s*(#.*)?$")


def _header_key(line: str) -> tuple[str, ...] | None:
    """The dotted key of a table header line, as TOML reads it, or None."""
    if not _HEADER.match(line):
        return None
    try:
        data = tomllib.loads(line.strip())
    except tomllib.TOMLDecodeError:
        return None
    key: list[str] = []
    while isinstance(data, dict) and len(data) == 1:
        ((k, data),) = data.items()
        key.append(k)
    return tuple(key)


def _set_table(text: str, key: tuple[str, ...], body: list[str] | None) -> str:
    """Drop the table ``[key]`` (header to the next header); append it with ``body``."""
    lines = text.splitlines()
    out: list[str] = []
    skipping = False
    for line in lines:
        header = _header_key(line)
        if header is not None:
            skipping = header == key
        if not skipping:
            out.append(line)
    while out and not out[-1].strip():
        out.pop()
    if body is not None:
        dotted = ".".join(_bare(k) for k in key)
        out.extend(["", f"[{dotted}]", *body] if out else [f"[{dotted}]", *body])
    return "\n".join(out) + "\n" if out else ""


def _set_key(text: str, table: str, key: str, value: str | None) -> str:
    """Set (or with None remove) ``key = value`` in ``[table]``, adding the table if needed."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _header_key(line) == (table,)), None)
    if start is None:
        if value is None:
            return text
        return _set_table(text, (table,), [f"{key} = {value}"])
    end = next(
        (i for i in range(start + 1, len(lines)) if _header_key(lines[i]) is not None),
        len(lines),
    )
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    body = [line for line in lines[start + 1 : end] if not pattern.match(line)]
    if value is not None:
        body.insert(0, f"{key} = {value}")
    return "\n".join([*lines[: start + 1], *body, *lines[end:]]) + "\n"


def _bare(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _quote(key)


def _write_checked(
    path: Path, text: str, name: str, expected: RemoteConfig | None, default: bool
) -> None:
    """Write ``text`` only if it parses to the intended remotes (the rest unchanged)."""
    before, before_default = parse_remotes_of(path)
    try:
        data = tomllib.loads(text)
        after, after_default = remotes_of(path, data)
        if path.name == CONFIG_FILE:
            parse_config(path, data)  # the rest of the file still valid
        else:
            parse_local_config(path, data, Config())
    except (tomllib.TOMLDecodeError, ConfigError) as e:
        raise ConfigError(f"{path}: cannot edit its remotes safely ({e})") from None
    want = dict(before)
    want.pop(name, None)
    if expected is not None:
        want[name] = expected
    want_default = name if default else (None if before_default == name else before_default)
    if after != want or after_default != want_default:
        raise ConfigError(
            f"{path}: cannot edit its remotes safely (define them as [remotes.NAME] tables); "
            "edit it by hand"
        )
    atomic_write_text(path, text)  # an existing file keeps its mode, a new one the umask's


# -- status --remote, gc --remote -------------------------------------------------------


class RemoteStatus(NamedTuple):
    remote: str
    url: str
    indexed: int  # distinct objects the index records
    missing_on_remote: list[ObjectRef]  # here, not there: push them
    missing_locally: list[ObjectRef]  # there, not here: fetch them
    missing_everywhere: list[ObjectRef]  # in neither: nobody can restore them

    @property
    def in_sync(self) -> bool:
        return not (self.missing_on_remote or self.missing_locally or self.missing_everywhere)


def run_remote_status(ds: Dataset, remote_name: str | None = None) -> RemoteStatus:
    """Which indexed objects the remote lacks and which the local store lacks (one
    listing of the remote, one stat per object locally)."""
    from volsegsync.ops.push import collect_refs, remote_sizes
    from volsegsync.ops.storing import open_store

    name, spec = choose_remote(ds.config, remote_name)
    remote = open_remote(name, spec, ds.root)
    refs = collect_refs(ds)
    store = open_store(ds, create=False)
    sizes = remote_sizes(remote, refs)
    here = {r for r in refs if store.has(r.algorithm, r.digest)}
    there = {r for r in refs if sizes[r] == r.size}
    return RemoteStatus(
        name,
        spec.url,
        len(refs),
        [r for r in refs if r in here and r not in there],
        [r for r in refs if r in there and r not in here],
        [r for r in refs if r not in here and r not in there],
    )


GC_GRACE_S = 24 * 3600.0  # objects younger than this may belong to a push in progress


class RemoteGcReport(NamedTuple):
    remote: str
    removed: list[tuple[str, str, int]]  # (algorithm, digest, size), or to remove (dry run)
    kept: int
    recent: int  # unreferenced but younger than the grace period: kept
    indexes: int
    temporaries: int  # leftovers of interrupted uploads removed
    dry_run: bool


def run_remote_gc(
    ds: Dataset, remote_name: str | None = None, dry_run: bool = False, now: float | None = None
) -> RemoteGcReport:
    """Remove from a remote the objects that no index references: the working index, and
    the history of every branch, tag and remote-tracking branch of this clone. Objects
    written in the last 24 hours are kept (a colleague's push whose commit is not here
    yet); temporaries of interrupted uploads go once an hour old."""
    import time

    from volsegsync.ops.gc import STALE_TMP_S, referenced

    name, spec = choose_remote(ds.config, remote_name)
    remote = open_remote(name, spec, ds.root)
    keep, count = referenced(ds, remote_branches=True)
    now = time.time() if now is None else now
    removed: list[tuple[str, str, int]] = []
    kept = recent = 0
    stale = remote.db.stale_temporaries(STALE_TMP_S, now)
    for algorithm in DIGEST_HEX:
        try:
            listing = list(remote.fs.walk(algorithm))
        except Exception as e:
            raise RemoteError(f"remote {name} ({spec.url}): cannot list: {e}") from e
        for path, size, mtime in listing:
            parts = path.split("/")
            if len(parts) != 3 or len(parts[1]) != 2:
                continue
            digest = parts[1] + parts[2]
            if (algorithm, digest) in keep:
                kept += 1
            elif now - mtime < GC_GRACE_S:
                recent += 1
            else:
                removed.append((algorithm, digest, size))
    if not dry_run:
        for algorithm, digest, _size in removed:
            remote.db.remove(algorithm, digest)
        for path in stale:
            remote.fs.remove(path)
    return RemoteGcReport(name, removed, kept, recent, count, len(stale), dry_run)
