"""The dataset configuration: ``.volsegsync/config.toml``, tracked in git.

The file may come from someone else's branch, so every value is validated and
every problem is reported as one :class:`ConfigError` naming the file and key.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from volsegsync.channels import ChannelConfig, parse_channels
from volsegsync.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

SEVERITIES = ("error", "warning", "info", "off")


@dataclass(frozen=True)
class NamingConfig:
    """The naming convention ``PREFIX-BASENAME-POSTFIX.EXT`` (or a dataset's own)."""

    separator: str = "-"
    fields: tuple[str, ...] = ("prefix", "basename", "postfix")
    patterns: Mapping[str, str] = field(
        default_factory=lambda: {
            "prefix": r"[A-Za-z0-9]+",
            "basename": r"[A-Za-z0-9_]+",
            "postfix": r"D[0-9]{8}",
        }
    )
    dates: Mapping[str, str] = field(default_factory=lambda: {"postfix": "D%d%m%Y"})
    version: str = r"v(?P<n>[0-9]+)"


@dataclass(frozen=True)
class RolesConfig:
    """Rules deciding which files are volumes and which are segmentations."""

    volume_extensions: tuple[str, ...] = (".nii.gz", ".nii")
    segmentation_extensions: tuple[str, ...] = (".seg.nrrd", ".nrrd")
    volume_dirs: tuple[str, ...] = ()
    segmentation_dirs: tuple[str, ...] = ()
    volume_suffix: str = ""
    segmentation_suffix: str = ""


@dataclass(frozen=True)
class PairingConfig:
    by: str = "naming"  # "naming" or "metadata" (naming first, then headers for the rest)
    reference_keys: tuple[str, ...] = ("volume", "reference_volume", "ReferenceVolume")


@dataclass(frozen=True)
class VerifyConfig:
    position_tolerance: float = 1e-3  # fraction of the smallest voxel spacing
    direction_tolerance: float = 1e-4  # absolute, on direction cosines
    labels: Mapping[int, str] = field(default_factory=dict)
    severity: Mapping[str, str] = field(default_factory=dict)


LINK_TYPES = ("reflink", "hardlink", "symlink", "copy")


@dataclass(frozen=True)
class StoreConfig:
    """The content store (docs/store.md); ``dir`` only in the local config."""

    enabled: bool = True  # pair stores what it records
    link: tuple[str, ...] = ("reflink", "copy")  # how checkout places files, in order
    hash: str = "xxh3-128"  # the index's hash algorithm (xxh3-128, sha256, blake3)


@dataclass(frozen=True)
class Config:
    naming: NamingConfig = field(default_factory=NamingConfig)
    roles: RolesConfig = field(default_factory=RolesConfig)
    pairing: PairingConfig = field(default_factory=PairingConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    exclude: tuple[str, ...] = ()
    store: StoreConfig = field(default_factory=StoreConfig)
    channels: ChannelConfig = field(default_factory=ChannelConfig)  # volsegsync.channels


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
segmentation_extensions = [".seg.nrrd", ".nrrd"]
# by folder, e.g. nnU-Net: volume_dirs = ["imagesTr"], segmentation_dirs = ["labelsTr"]
volume_dirs = []
segmentation_dirs = []
# by a suffix of the name, e.g. volume_suffix = "_0000"
volume_suffix = ""
segmentation_suffix = ""

[pairing]
# "naming", or "metadata": files whose names do not pair are paired by header
by = "naming"
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
"""


class _Reader:
    """Pulls typed values out of a parsed TOML table, naming the key on error."""

    def __init__(self, path: Path, table: Mapping[str, Any], section: str) -> None:
        self.path = path
        self.table = table
        self.section = section

    def fail(self, key: str, problem: str) -> ConfigError:
        where = f"{self.section}.{key}" if self.section else key
        return ConfigError(f"{self.path}: [{where}] {problem}")

    def sub(self, key: str) -> _Reader:
        value = self.table.get(key, {})
        if not isinstance(value, Mapping):
            raise self.fail(key, "must be a table")
        section = f"{self.section}.{key}" if self.section else key
        return _Reader(self.path, value, section)

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
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise self.fail(key, f"must be a non-negative number, found {value!r}")
        return float(value)

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.table.get(key, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, f"must be a list of strings, found {value!r}")
        return tuple(value)

    def regex(self, key: str, value: str) -> str:
        try:
            re.compile(value)
        except re.error as e:
            raise self.fail(key, f"invalid regular expression {value!r}: {e}") from None
        return value


def load_config(path: Path) -> Config:
    """Read and validate a config file; a missing file gives the defaults."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Config()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    return parse_config(path, data)


def parse_config(path: Path, data: Mapping[str, Any]) -> Config:
    top = _Reader(path, data, "")
    top.check_keys({"naming", "roles", "pairing", "verify", "scan", "store", "channels"})
    scan = top.sub("scan")
    scan.check_keys({"exclude"})
    return Config(
        naming=_naming(top.sub("naming")),
        roles=_roles(top.sub("roles")),
        pairing=_pairing(top.sub("pairing")),
        verify=_verify(top.sub("verify")),
        exclude=scan.strings("exclude", ()),
        store=parse_store(top.sub("store")),
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
        try:
            datetime(2000, 1, 31).strftime(fmt)
        except ValueError as e:
            raise dr.fail(name, f"invalid date format {fmt!r}: {e}") from None
    version = r.regex("version", r.string("version", d.version))
    if "(?P<n>" not in version:
        raise r.fail("version", "must contain a group (?P<n>...) holding the version number")
    return NamingConfig(separator, fields, patterns, dates, version)


def _extensions(r: _Reader, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    values = r.strings(key, default)
    for v in values:
        if not v.startswith(".") or "/" in v:
            raise r.fail(key, f"extensions start with '.' and hold no '/', found {v!r}")
    return values


def _roles(r: _Reader) -> RolesConfig:
    d = RolesConfig()
    r.check_keys({f.name for f in RolesConfig.__dataclass_fields__.values()})
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
    r.check_keys({"by", "reference_keys"})
    by = r.string("by", d.by)
    if by not in ("naming", "metadata"):
        raise r.fail("by", f"must be 'naming' or 'metadata', found {by!r}")
    return PairingConfig(by=by, reference_keys=r.strings("reference_keys", d.reference_keys))


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
