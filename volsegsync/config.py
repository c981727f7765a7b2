"""The dataset configuration: ``.volsegsync/config.toml``, tracked in git.

The file may come from someone else's branch, so every value is validated and
every problem is reported as one :class:`ConfigError` naming the file and key.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from volsegsync.channels import ChannelConfig, parse_channels
from volsegsync.errors import ConfigError, VolsegsyncError
from volsegsync.fsutil import CONFIG_LIMIT, read_small
from volsegsync.problems import CATEGORIES

SEVERITIES = ("error", "warning", "info", "off")
MAX_PATTERN = 1000  # characters in a regular expression of the config
# strftime/strptime directives that read back what they write (see _date_format)
_DATE_DIRECTIVES = frozenset("aAbBdHIjmMpSUwWyYzGuV%fz")
# Directives whose strftime text of the sample date (2000-01-31 00:00) is matched in
# full by the first alternative of strptime's pattern for it: a format made of these,
# each once, and literal text always reads back, so strptime (7 ms to load) is not asked.
_NUMERIC_DIRECTIVES = frozenset("dmYyHMSjf")


class SafePattern:
    """A config pattern matched by RE2: time linear in the input, whatever the
    pattern (``(a+)+`` included). Only what naming needs: whole-string matches and
    the text of one named group."""

    def __init__(self, pattern: str, compiled: Any) -> None:
        import re2

        self.pattern = pattern
        self._groups: dict[str, int] = dict(compiled.groupindex)
        regexp = getattr(compiled, "_regexp", None)
        self._anchor = re2._Anchor.ANCHOR_BOTH
        # the wrapper's ``fullmatch`` maps byte offsets back to characters: 4x slower
        # than asking RE2 directly, which every file name of a dataset pays
        self._raw = regexp.Match if regexp is not None and hasattr(regexp, "Match") else None
        self._compiled = compiled

    def fullmatch(self, text: str) -> bool:
        return self.group(text, None) is not None

    def group(self, text: str, name: str | None) -> str | None:
        """The text of group ``name`` ("" for the whole match) when all of ``text``
        matches; None when it does not match (or the group took no part)."""
        if self._raw is None:
            m = self._compiled.fullmatch(text)
            return None if m is None else (m.group(name) if name else m.group(0))
        data = text.encode("utf-8", "surrogateescape")
        spans = self._raw(self._anchor, data, 0, len(data))
        start, end = spans[self._groups[name] if name else 0]
        return None if start < 0 else data[start:end].decode("utf-8", "surrogateescape")


def compile_pattern(pattern: str) -> SafePattern:
    """A user pattern compiled by RE2, whose matching time is linear in the input
    (a pattern from someone's branch cannot hang a run); ValueError in one line
    for syntax RE2 does not offer (backreferences, lookarounds) or invalid syntax."""
    import re2

    try:
        re.compile(pattern)  # Python's message is the clearer one for plain mistakes
    except re.error as e:
        raise ValueError(f"invalid regular expression {pattern!r}: {e}") from None
    options = re2.Options()
    options.max_mem = 8 << 20
    options.log_errors = False
    try:
        return SafePattern(pattern, re2.compile(pattern, options))
    except re2.error as e:
        why = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else e
        raise ValueError(
            f"regular expression {pattern!r} is refused by the linear-time engine (RE2), "
            f"which offers no backreferences or lookarounds and bounds repetitions: {why}"
        ) from None


class NamingConfig(NamedTuple):
    """The naming convention ``PREFIX-BASENAME-POSTFIX.EXT`` (or a dataset's own)."""

    separator: str = "-"
    fields: tuple[str, ...] = ("prefix", "basename", "postfix")
    patterns: Mapping[str, str] = {  # shared, never changed (a Mapping)
        "prefix": r"[A-Za-z0-9]+",
        "basename": r"[A-Za-z0-9_]+",
        "postfix": r"D[0-9]{8}",
    }
    dates: Mapping[str, str] = {"postfix": "D%d%m%Y"}
    version: str = r"v(?P<n>[0-9]+)"


class RolesConfig(NamedTuple):
    """Rules deciding which files are volumes and which are segmentations."""

    volume_extensions: tuple[str, ...] = (".nii.gz", ".nii")
    segmentation_extensions: tuple[str, ...] = (".seg.nrrd", ".nrrd", ".seg.nhdr", ".nhdr")
    volume_dirs: tuple[str, ...] = ()
    segmentation_dirs: tuple[str, ...] = ()
    volume_suffix: str = ""
    segmentation_suffix: str = ""


class PairingConfig(NamedTuple):
    by: str = "naming"  # "naming" or "metadata" (naming first, then headers for the rest)
    scope: str = "auto"  # where names pair: "auto", "dataset" or "folder" (see pairing.py)
    reference_keys: tuple[str, ...] = ("volume", "reference_volume", "ReferenceVolume")


class VerifyConfig(NamedTuple):
    position_tolerance: float = 1e-3  # fraction of the smallest voxel spacing
    direction_tolerance: float = 1e-4  # absolute, on direction cosines
    labels: Mapping[int, str] = {}  # shared, never changed (a Mapping)
    severity: Mapping[str, str] = {}


LINK_TYPES = ("reflink", "hardlink", "symlink", "copy")


class StoreConfig(NamedTuple):
    """The content store (docs/store.md); ``dir`` only in the local config."""

    enabled: bool = True  # pair stores what it records
    link: tuple[str, ...] = ("reflink", "copy")  # how checkout places files, in order
    hash: str = "xxh3-128"  # the index's hash algorithm (xxh3-128, sha256, blake3)


DEFAULT_MAX_IMAGE_BYTES = 4 * 1024**3


class LimitsConfig(NamedTuple):
    """Bounds on what a (possibly hostile) file may make volsegsync do."""

    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES  # declared data larger is not decoded


class RemoteConfig(NamedTuple):
    """A ``[remotes.NAME]`` table: where a copy of the content store lives (docs/remotes.md)."""

    url: str  # a folder, file://PATH, s3://BUCKET/PREFIX or ssh://HOST/PATH; never credentials
    endpoint_url: str = ""  # S3-compatible servers (MinIO, Ceph): http(s)://HOST[:PORT]


class HooksConfig(NamedTuple):
    pre_push: bool = False  # the pre-push hook runs `volsegsync push` first


class Config(NamedTuple):
    naming: NamingConfig = NamingConfig()
    roles: RolesConfig = RolesConfig()
    pairing: PairingConfig = PairingConfig()
    verify: VerifyConfig = VerifyConfig()
    exclude: tuple[str, ...] = ()
    store: StoreConfig = StoreConfig()
    limits: LimitsConfig = LimitsConfig()
    remotes: Mapping[str, RemoteConfig] = {}
    default_remote: str | None = None  # [core] remote
    hooks: HooksConfig = HooksConfig()
    channels: ChannelConfig = ChannelConfig()  # volsegsync.channels
    fsmonitor: bool = False  # [fsmonitor] enabled, local config only (docs/fsmonitor.md)


DEFAULT_CONFIG_TEXT = """\
# volsegsync dataset configuration (tracked in git).
# Docs: docs/configuration.md

[naming]
# PREFIX-BASENAME-POSTFIX.EXT, e.g. C01-LowerBack_FSE_T2w_V001-D22061998.nii.gz
separator = "-"
fields = ["prefix", "basename", "postfix"]
# A segmentation version is one more field: C01-...-D22061998-v4.nrrd
version = "v(?P<n>[0-9]+)"

[naming.patterns]
prefix = "[A-Za-z0-9]+"
basename = "[A-Za-z0-9_]+"
postfix = "D[0-9]{8}"

[naming.dates]
# the field must then be a real date, written in this strptime format
postfix = "D%d%m%Y"

[roles]
volume_extensions = [".nii.gz", ".nii"]
segmentation_extensions = [".seg.nrrd", ".nrrd", ".seg.nhdr", ".nhdr"]
# by folder, e.g. nnU-Net: volume_dirs = ["imagesTr"], segmentation_dirs = ["labelsTr"]
volume_dirs = []
segmentation_dirs = []
# by a suffix of the name, e.g. volume_suffix = "_0000"
volume_suffix = ""
segmentation_suffix = ""

[pairing]
# "naming", or "metadata": files whose names do not pair are paired by header
by = "naming"
# where names pair: "auto" (within the folder above volume_dirs/segmentation_dirs when
# those are set, e.g. one nnU-Net dataset; else across the dataset), "dataset", "folder"
scope = "auto"
reference_keys = ["volume", "reference_volume", "ReferenceVolume"]

[verify]
# positions within this fraction of the smallest voxel spacing agree
position_tolerance = 1e-3
direction_tolerance = 1e-4

# [verify.labels]
# 0 = "background"
# 1 = "vertebra"

# [verify.severity]
# version_gap = "warning"

[scan]
exclude = []

[limits]
# images whose header declares more data than this (bytes) are not decoded
max_image_bytes = 4294967296
"""


class _Reader:
    """Pulls typed values out of a parsed TOML table, naming the key on error."""

    def __init__(
        self, path: Path, table: Mapping[str, Any], section: str, checked: bool = False
    ) -> None:
        self.path = path
        self.table = table
        self.section = section
        # the same tables were parsed and found valid before (Dataset.open's memo): the
        # costly checks (RE2 compiling each pattern, strptime) need not run again
        self.checked = checked

    def fail(self, key: str, problem: str) -> ConfigError:
        where = f"{self.section}.{key}" if self.section else key
        return ConfigError(f"{self.path}: [{where}] {problem}")

    def sub(self, key: str) -> _Reader:
        value = self.table.get(key, {})
        if not isinstance(value, Mapping):
            raise self.fail(key, "must be a table")
        section = f"{self.section}.{key}" if self.section else key
        return _Reader(self.path, value, section, self.checked)

    def check_keys(self, allowed: set[str]) -> None:
        for key in self.table:
            if key not in allowed:
                raise self.fail(key, f"unknown key (known: {', '.join(sorted(allowed))})")

    def string(self, key: str, default: str) -> str:
        value = self.table.get(key, default)
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, found {value!r}")
        return value

    def number(self, key: str, default: float) -> float:
        value = self.table.get(key, default)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value < 0:
            raise self.fail(key, f"must be a non-negative finite number, found {value!r}")
        return float(value)

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.table.get(key, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, f"must be a list of strings, found {value!r}")
        return tuple(value)

    def regex(self, key: str, value: str) -> str:
        """A pattern for the linear-time engine (RE2): no backreferences or lookarounds,
        at most MAX_PATTERN characters."""
        if len(value) > MAX_PATTERN:
            raise self.fail(
                key, f"regular expression of {len(value)} characters (at most {MAX_PATTERN})"
            )
        if self.checked:
            return value
        try:
            compile_pattern(value)
        except ValueError as e:
            raise self.fail(key, str(e)) from None
        return value


def load_config(path: Path) -> Config:
    """Read and validate a config file; a missing file gives the defaults."""
    return parse_config(path, load_toml(path))


def load_toml(path: Path) -> dict[str, Any]:
    """A TOML file's tables; a missing file is an empty one."""
    return parse_toml(path, read_config_bytes(path))


def read_config_bytes(path: Path) -> bytes | None:
    """A config file's bytes (None when there is none), read as a hostile file is."""
    try:
        return read_small(path, CONFIG_LIMIT, "config")
    except FileNotFoundError:
        return None
    except VolsegsyncError as e:
        raise ConfigError(str(e)) from None


def parse_toml(path: Path, raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        return {}
    # 5 ms to load: a run whose config is memoised (Dataset.open) does not pay it
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib

    try:
        data: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
        return data
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


def load_local_config(path: Path, base: Config) -> Config:
    """The untracked local config (``.volsegsync/config.local.toml``) over the tracked one:
    a user's own remotes and endpoints (``[remotes.NAME]``, ``[core] remote``)."""
    return parse_local_config(path, load_toml(path), base)


def parse_local_config(
    path: Path, data: Mapping[str, Any], base: Config, checked: bool = False
) -> Config:
    top = _Reader(path, data, "", checked)
    top.check_keys({"remotes", "core", "store", "fsmonitor"})  # [store]: ops.storing
    remotes, default_remote = parse_remotes(top, base.remotes, base.default_remote)
    monitor = top.sub("fsmonitor")
    monitor.check_keys({"enabled"})
    enabled = monitor.table.get("enabled", False)
    if not isinstance(enabled, bool):
        raise monitor.fail("enabled", f"must be true or false, found {enabled!r}")
    return base._replace(remotes=remotes, default_remote=default_remote, fsmonitor=enabled)


def parse_config(path: Path, data: Mapping[str, Any], checked: bool = False) -> Config:
    """The config of TOML tables ``data``; ``checked``: these very tables passed every
    check before (the patterns are then not compiled here to check them)."""
    top = _Reader(path, data, "", checked)
    top.check_keys(
        {
            "naming",
            "roles",
            "pairing",
            "verify",
            "scan",
            "store",
            "limits",
            "hooks",
            "remotes",
            "core",
            "channels",
        }
    )
    scan = top.sub("scan")
    scan.check_keys({"exclude"})
    remotes, default_remote = parse_remotes(top, {}, None)
    return Config(
        naming=_naming(top.sub("naming")),
        roles=_roles(top.sub("roles")),
        pairing=_pairing(top.sub("pairing")),
        verify=_verify(top.sub("verify")),
        exclude=scan.strings("exclude", ()),
        store=parse_store(top.sub("store")),
        limits=_limits(top.sub("limits")),
        remotes=remotes,
        default_remote=default_remote,
        hooks=_hooks(top.sub("hooks")),
        channels=parse_channels(top.sub("channels")),
    )


def parse_store(r: _Reader, base: StoreConfig | None = None) -> StoreConfig:
    """The ``[store]`` table (also read from the local config, over the tracked one)."""
    d = base or StoreConfig()
    r.check_keys({"enabled", "link", "hash"} | ({"dir"} if base else set()))
    enabled = r.table.get("enabled", d.enabled)
    if not isinstance(enabled, bool):
        raise r.fail("enabled", f"must be true or false, found {enabled!r}")
    link = r.strings("link", d.link)
    if not link or any(v not in LINK_TYPES for v in link):
        raise r.fail("link", f"must be a non-empty list of {', '.join(LINK_TYPES)}")
    algorithm = r.string("hash", d.hash)
    if algorithm not in ("xxh3-128", "sha256", "blake3"):
        raise r.fail("hash", f"must be xxh3-128, sha256 or blake3, found {algorithm!r}")
    return StoreConfig(enabled, link, algorithm)


def _limits(r: _Reader) -> LimitsConfig:
    r.check_keys({"max_image_bytes"})
    value = r.table.get("max_image_bytes", DEFAULT_MAX_IMAGE_BYTES)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 2**50:
        raise r.fail("max_image_bytes", f"must be a positive number of bytes, found {value!r}")
    return LimitsConfig(value)


def _hooks(r: _Reader) -> HooksConfig:
    r.check_keys({"pre_push"})
    pre_push = r.table.get("pre_push", False)
    if not isinstance(pre_push, bool):
        raise r.fail("pre_push", f"must be true or false, found {pre_push!r}")
    return HooksConfig(pre_push=pre_push)


def _naming(r: _Reader) -> NamingConfig:
    d = NamingConfig()
    r.check_keys({"separator", "fields", "patterns", "dates", "version"})
    separator = r.string("separator", d.separator)
    if not separator or "/" in separator:
        raise r.fail("separator", f"must be a non-empty string without '/', found {separator!r}")
    fields = r.strings("fields", d.fields)
    if not fields or len(set(fields)) != len(fields):
        raise r.fail("fields", "must be a non-empty list of distinct names")
    pr = r.sub("patterns")
    patterns = {
        name: r.regex(f"patterns.{name}", pr.string(name, d.patterns.get(name, ".+")))
        for name in fields
    }
    pr.check_keys(set(fields))
    dr = r.sub("dates")
    dr.check_keys(set(fields))
    if "dates" in r.table:
        dates = {name: dr.string(name, "") for name in dr.table}
    else:  # like the patterns: the defaults apply to the fields that keep their names
        dates = {name: fmt for name, fmt in d.dates.items() if name in fields}
    for name, fmt in dates.items():
        problem = None if r.checked else _date_format_problem(fmt)
        if problem:
            raise dr.fail(name, f"invalid date format {fmt!r}: {problem}")
    version = r.regex("version", r.string("version", d.version))
    problem = _version_group_problem(version)
    if problem:
        raise r.fail("version", problem)
    return NamingConfig(separator, fields, patterns, dates, version)


def _date_format_problem(fmt: str) -> str | None:
    """Why ``fmt`` is no usable strptime date format (None when it is one)."""
    if not fmt:
        return "empty"
    used: list[str] = []
    i = 0
    while i < len(fmt):
        if fmt[i] == "%":
            if i + 1 == len(fmt):
                return "a lone '%' at the end (write '%%' for a percent sign)"
            if fmt[i + 1] not in _DATE_DIRECTIVES:
                return f"unknown directive '%{fmt[i + 1]}'"
            if fmt[i + 1] != "%":
                used.append(fmt[i + 1])
            i += 2
        else:
            i += 1
    if len(set(used)) == len(used) and _NUMERIC_DIRECTIVES.issuperset(used):
        return None  # reads back for sure (see _NUMERIC_DIRECTIVES): no need to load strptime
    from datetime import datetime

    try:
        sample = datetime(2000, 1, 31).strftime(fmt)
        datetime.strptime(sample, fmt)
    except (ValueError, re.error) as e:  # re.error: a directive given twice ('%d%d')
        return str(e)
    return None


def _version_group_problem(pattern: str) -> str | None:
    """The version pattern must hold a group ``(?P<n>...)`` that every match fills."""
    try:
        import re._parser as sre_parse  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # pragma: no cover - Python 3.10
        import sre_parse  # type: ignore[no-redef,unused-ignore]
    parsed = sre_parse.parse(pattern)
    number = parsed.state.groupdict.get("n")
    if number is None:
        return "must contain a group (?P<n>...) holding the version number"
    if _optional_group(list(parsed), number, optional=False):
        return "the group (?P<n>...) must not be optional: every version needs its number"
    return None


def _optional_group(items: list[Any], number: int, optional: bool) -> bool:
    """Whether group ``number`` sits under a repeat that may be empty or a branch."""
    for op, arg in items:
        name = str(op)
        if name == "SUBPATTERN":
            group, sub = arg[0], arg[-1]
            if group == number:
                return optional
            if _optional_group(list(sub), number, optional):
                return True
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, _, sub = arg
            if _optional_group(list(sub), number, optional or low == 0):
                return True
        elif name == "BRANCH":
            for sub in arg[1]:
                if _optional_group(list(sub), number, True):
                    return True
        elif name in ("ASSERT", "ASSERT_NOT") and _optional_group(list(arg[1]), number, True):
            return True
    return False


def _extensions(r: _Reader, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    values = r.strings(key, default)
    for v in values:
        if not v.startswith(".") or "/" in v:
            raise r.fail(key, f"extensions start with '.' and hold no '/', found {v!r}")
    return values


def _roles(r: _Reader) -> RolesConfig:
    d = RolesConfig()
    r.check_keys(set(RolesConfig._fields))
    roles = RolesConfig(
        volume_extensions=_extensions(r, "volume_extensions", d.volume_extensions),
        segmentation_extensions=_extensions(
            r, "segmentation_extensions", d.segmentation_extensions
        ),
        volume_dirs=r.strings("volume_dirs", d.volume_dirs),
        segmentation_dirs=r.strings("segmentation_dirs", d.segmentation_dirs),
        volume_suffix=r.string("volume_suffix", d.volume_suffix),
        segmentation_suffix=r.string("segmentation_suffix", d.segmentation_suffix),
    )
    if set(roles.volume_dirs) & set(roles.segmentation_dirs):
        raise r.fail("volume_dirs", "a folder cannot hold both volumes and segmentations")
    return roles


def _pairing(r: _Reader) -> PairingConfig:
    d = PairingConfig()
    r.check_keys({"by", "scope", "reference_keys"})
    by = r.string("by", d.by)
    if by not in ("naming", "metadata"):
        raise r.fail("by", f"must be 'naming' or 'metadata', found {by!r}")
    scope = r.string("scope", d.scope)
    if scope not in ("auto", "dataset", "folder"):
        raise r.fail("scope", f"must be 'auto', 'dataset' or 'folder', found {scope!r}")
    return PairingConfig(
        by=by, scope=scope, reference_keys=r.strings("reference_keys", d.reference_keys)
    )


def _verify(r: _Reader) -> VerifyConfig:
    d = VerifyConfig()
    r.check_keys({"position_tolerance", "direction_tolerance", "labels", "severity"})
    lr = r.sub("labels")
    labels: dict[int, str] = {}
    for key, name in lr.table.items():
        try:
            value = int(key)
        except ValueError:
            raise lr.fail(key, "label values must be integers") from None
        if not isinstance(name, str):
            raise lr.fail(key, f"label name must be a string, found {name!r}")
        labels[value] = name
    sr = r.sub("severity")
    severity: dict[str, str] = {}
    for key in sr.table:
        if key not in CATEGORIES:
            raise sr.fail(key, f"unknown problem category (known: {', '.join(CATEGORIES)})")
        level = sr.string(key, "error")
        if level not in SEVERITIES:
            raise sr.fail(key, f"must be one of {', '.join(SEVERITIES)}, found {level!r}")
        severity[key] = level
    return VerifyConfig(
        position_tolerance=r.number("position_tolerance", d.position_tolerance),
        direction_tolerance=r.number("direction_tolerance", d.direction_tolerance),
        labels=labels,
        severity=severity,
    )


# -- remotes (docs/remotes.md) ----------------------------------------------------------

REMOTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
REMOTE_SCHEMES = ("file", "s3", "ssh", "sftp")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_URL_MAX = 1024
_CREDENTIALS = (
    "holds credentials (user or key before '@'): never put them in the config; "
    "use the environment or the backend's configuration (e.g. an AWS profile)"
)


def remote_name_problem(name: str) -> str | None:
    if REMOTE_NAME.fullmatch(name):
        return None
    return f"invalid remote name {name!r}: 1 to 64 letters, digits, '_' or '-', not first"


def remote_url_problem(url: str, endpoint: bool = False) -> str | None:
    """Why ``url`` cannot be a remote's URL (or, with ``endpoint``, an S3 endpoint), or None.

    Credentials are refused wherever a URL could carry them (user info, query, fragment):
    they belong in the environment or the backend's own configuration.
    """
    if not url or len(url) > _URL_MAX:
        return f"must be a non-empty string of at most {_URL_MAX} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in url) or url != url.strip():
        return "holds control characters or surrounding spaces"
    m = _SCHEME.match(url)
    if not m:  # a folder path; scp-like USER@HOST:PATH is refused like a URL's user info
        if re.match(r"[^/]*@", url):
            return _CREDENTIALS
        return None if "://" not in url and not endpoint else "not a valid URL"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        return f"not a valid URL ({e})"
    if "@" in parts.netloc or parts.username or parts.password:
        if m.group(1).lower() in ("ssh", "sftp"):
            return (
                "holds a user name before '@': every clone shares this config, so the "
                "user belongs in ~/.ssh/config (Host ... User ...), as for ssh itself"
            )
        return _CREDENTIALS
    if parts.query or parts.fragment or "?" in url or "#" in url:
        return "holds a query or fragment ('?', '#'), which may carry credentials: not allowed"
    scheme = m.group(1).lower()
    if endpoint and scheme not in ("http", "https"):
        return f"{url!r}: an endpoint is an http:// or https:// URL"
    if not endpoint and scheme not in REMOTE_SCHEMES:
        return (
            f"{url!r}: unsupported scheme {scheme!r} (offered: a folder path, "
            "file://PATH, s3://BUCKET/PREFIX, ssh://HOST[:PORT]/PATH)"
        )
    if endpoint:
        return None if parts.hostname else f"{url!r}: no host"
    if scheme == "file" and (parts.netloc not in ("", "localhost") or not parts.path):
        return f"{url!r}: a file:// URL names an absolute folder path (file:///PATH)"
    if scheme == "s3" and not _BUCKET.fullmatch(parts.netloc):
        return f"{url!r}: {parts.netloc!r} is not a valid S3 bucket name"
    if scheme == "s3" and any(p in (".", "..") for p in parts.path.split("/")):
        return f"{url!r}: '.' and '..' are not allowed in a key prefix"
    if scheme in ("ssh", "sftp"):
        if not parts.hostname:
            return f"{url!r}: no host"
        if len(parts.path) < 2 or any(p in (".", "..") for p in parts.path.split("/")):
            return (
                f"{url!r}: an ssh:// URL names an absolute folder (ssh://HOST/PATH), no '.' or '..'"
            )
    return None


def remotes_of(path: Path, data: Mapping[str, Any]) -> tuple[dict[str, RemoteConfig], str | None]:
    """The remotes and default remote that the tables ``data`` of file ``path`` define."""
    return parse_remotes(_Reader(path, data, ""), {}, None)


def parse_remotes(
    top: _Reader, base: Mapping[str, RemoteConfig], base_default: str | None
) -> tuple[dict[str, RemoteConfig], str | None]:
    """The ``[remotes.NAME]`` tables and ``[core] remote`` of a config file, over ``base``
    (the local config's remotes override the tracked ones of the same name)."""
    remotes = dict(base)
    table = top.sub("remotes")
    for name in table.table:
        problem = remote_name_problem(name)
        if problem:
            raise table.fail(name, problem)
        r = table.sub(name)
        r.check_keys({"url", "endpoint_url"})
        url = r.string("url", "")
        problem = remote_url_problem(url)
        if problem:
            raise r.fail("url", problem)
        endpoint = r.string("endpoint_url", "")
        problem = endpoint and remote_url_problem(endpoint, endpoint=True)
        if problem:
            raise r.fail("endpoint_url", problem)
        remotes[name] = RemoteConfig(url, endpoint)
    core = top.sub("core")
    core.check_keys({"remote"})
    default = core.string("remote", base_default or "") or None
    if default is not None and remote_name_problem(default):
        raise core.fail("remote", remote_name_problem(default) or "")
    return remotes, default
