"""The naming convention: which files are volumes or segmentations, and their fields.

``PREFIX-BASENAME-POSTFIX.EXT`` by default, a segmentation version as one more
field (``-v4``). Everything is configurable through :class:`NamingConfig` and
:class:`RolesConfig`; this module only reads names, never files.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import NamedTuple

from volsegsync.config import NamingConfig, RolesConfig, SafePattern, compile_pattern
from volsegsync.problems import Problem, make_problem

VOLUME = "volume"
SEGMENTATION = "segmentation"


class NameInfo(NamedTuple):
    """What a dataset-relative path says about a file."""

    path: str  # POSIX, relative to the dataset root
    role: str  # VOLUME or SEGMENTATION
    extension: str
    key: str  # pairing key: the name without extension, role suffix and version
    version: int | None  # segmentation version, None when unversioned


class Convention:
    """A compiled naming convention and role rules."""

    def __init__(self, naming: NamingConfig, roles: RolesConfig) -> None:
        self.naming = naming
        self.roles = roles
        self._extensions = sorted(
            set(roles.volume_extensions) | set(roles.segmentation_extensions),
            key=len,
            reverse=True,
        )
        self._versions: dict[str, int | None] = {}  # see _version_of
        self._volume_dirs = frozenset(roles.volume_dirs)
        self._segmentation_dirs = frozenset(roles.segmentation_dirs)
        self._role_dirs = self._volume_dirs | self._segmentation_dirs
        self._ext_tuple = tuple(self._extensions)
        self.extensions = self._ext_tuple  # for fast ``str.endswith`` pre-filters
        vol_ext, seg_ext = set(roles.volume_extensions), set(roles.segmentation_extensions)
        self._role_by_ext = {e: VOLUME for e in vol_ext - seg_ext}
        self._role_by_ext.update({e: SEGMENTATION for e in seg_ext - vol_ext})

    # the patterns, compiled by RE2 when a name is first parsed (a run that finds nothing
    # new parses none, and loads no RE2)

    @functools.cached_property
    def _version(self) -> SafePattern:
        return compile_pattern(self.naming.version)

    @functools.cached_property
    def _fields(self) -> list[tuple[str, SafePattern]]:
        naming = self.naming
        return [(name, compile_pattern(naming.patterns[name])) for name in naming.fields]

    @functools.cached_property
    def _whole(self) -> SafePattern:
        naming, sep = self.naming, re.escape(self.naming.separator)
        return compile_pattern(sep.join(f"(?:{naming.patterns[n]})" for n in naming.fields))

    # -- roles ---------------------------------------------------------------------------

    def extension_of(self, name: str) -> str | None:
        if not name.endswith(self._ext_tuple):
            return None
        for ext in self._extensions:
            if name.endswith(ext) and len(name) > len(ext):
                return ext
        return None

    def is_candidate(self, path: str) -> bool:
        """Whether ``path`` has a volume or segmentation extension (cheap pre-filter)."""
        return path.endswith(self._ext_tuple) and self.extension_of(path) is not None

    def role_of(self, path: str) -> tuple[str | None, str]:
        """The role of ``path`` and the reason when it cannot be decided."""
        role, _, why = self._classify(path)
        return role, why

    def _classify(self, path: str) -> tuple[str | None, str, str]:
        """``(role, extension, why-no-role)`` of a path."""
        folder, _, name = path.rpartition("/")
        return self._classify_name(name, self._folder_role(folder))

    def _folder_role(self, folder: str) -> str | None:
        """The role that a file's folder decides (``volume_dirs``...), if any."""
        if folder and self._role_dirs:
            parts = set(folder.split("/"))
            if parts & self._volume_dirs:
                return VOLUME
            if parts & self._segmentation_dirs:
                return SEGMENTATION
        return None

    def _classify_name(self, name: str, folder_role: str | None) -> tuple[str | None, str, str]:
        ext = self.extension_of(name)
        if ext is None:
            return None, "", "not a volume or segmentation extension"
        if folder_role is not None:
            return folder_role, ext, ""
        stem = name[: -len(ext)]
        if self.roles.volume_suffix and stem.endswith(self.roles.volume_suffix):
            return VOLUME, ext, ""
        if self.roles.segmentation_suffix and stem.endswith(self.roles.segmentation_suffix):
            return SEGMENTATION, ext, ""
        role = self._role_by_ext.get(ext)
        if role is not None:
            return role, ext, ""
        return (
            None,
            ext,
            (
                f"extension {ext} is used by volumes and segmentations alike, and no folder "
                "or suffix rule of the config decides which this is"
            ),
        )

    # -- parsing -------------------------------------------------------------------------

    def parse(self, path: str) -> NameInfo | None:
        """Role, pairing key and version of ``path``; None if it is no dataset file."""
        folder, _, name = path.rpartition("/")
        return self._parse_name(path, name, self._folder_role(folder))

    def parse_folder(self, prefix: str, names: list[str]) -> list[NameInfo | None]:
        """:meth:`parse` of ``prefix + name`` for each of ``names`` (files of one folder,
        ``prefix`` ``""`` or ending in ``/``): what the folder decides, decided once."""
        role = self._folder_role(prefix[:-1])
        parse = self._parse_name
        return [parse(prefix + name, name, role) for name in names]

    def _parse_name(self, path: str, name: str, folder_role: str | None) -> NameInfo | None:
        role, ext, _ = self._classify_name(name, folder_role)
        if role is None:
            return None
        stem = self._strip_suffix(name[: -len(ext)], role)
        version = None
        if role == SEGMENTATION:
            head, sep, last = stem.rpartition(self.naming.separator)
            if sep and head:
                version = self._version_of(last)
                if version is not None:
                    stem = head
        return NameInfo(path, role, ext, stem, version)

    def _version_of(self, token: str) -> int | None:
        """The version a name's last field gives (``v4`` -> 4), None when it is none;
        remembered per token (datasets repeat them: ``v1``, a date)."""
        if token in self._versions:
            return self._versions[token]
        number = self._version.group(token, "n")
        version = None
        if number and number.isascii() and number.isdigit() and len(number) <= 9:
            version = int(number)
        if len(self._versions) >= 4096:
            self._versions.clear()
        self._versions[token] = version
        return version

    def _strip_suffix(self, stem: str, role: str) -> str:
        suffix = self.roles.volume_suffix if role == VOLUME else self.roles.segmentation_suffix
        if suffix and stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
        return stem

    # -- checking ------------------------------------------------------------------------

    def check(self, path: str) -> list[Problem]:
        """Every way in which ``path`` breaks the convention (empty when it follows it)."""
        bad = bad_name_reason(path)
        if bad:
            return [make_problem("unreadable", [path], f"{path}: {bad}", {"reason": bad})]
        role, why = self.role_of(path)
        if role is None:
            return [make_problem("naming", [path], f"{path}: {why}", {"field": "role"})]
        name = path.rpartition("/")[2]
        ext = self.extension_of(name)
        assert ext is not None
        stem = self._strip_suffix(name[: -len(ext)], role)
        tokens = stem.split(self.naming.separator)
        if role == SEGMENTATION and len(tokens) > 1 and self._version.fullmatch(tokens[-1]):
            tokens.pop()
        elif (
            role == VOLUME
            and len(tokens) == len(self._fields) + 1
            and self._version.fullmatch(tokens[-1])
        ):
            return [self._problem(path, "version", "no version on a volume", tokens[-1])]
        if len(tokens) != len(self._fields):
            return [self._count_problem(path, tokens)]
        return self._field_problems(path, tokens)

    def _count_problem(self, path: str, tokens: list[str]) -> Problem:
        sep = self.naming.separator
        expected = sep.join(name.upper() for name, _ in self._fields)
        found = ", ".join(repr(t) for t in tokens)
        message = (
            f"{path}: expected {len(self._fields)} fields {expected} separated by {sep!r}, "
            f"found {len(tokens)}: {found}"
        )
        details = {"field": "fields", "expected": len(self._fields), "found": len(tokens)}
        return make_problem("naming", [path], message, details)

    def _field_problems(self, path: str, tokens: list[str]) -> list[Problem]:
        if self._whole.fullmatch(self.naming.separator.join(tokens)) and not self.naming.dates:
            return []
        problems = []
        for (name, pattern), value in zip(self._fields, tokens, strict=True):
            if not pattern.fullmatch(value):
                problems.append(self._problem(path, name, f"pattern {pattern.pattern}", value))
            elif name in self.naming.dates and not _is_date(value, self.naming.dates[name]):
                fmt = self.naming.dates[name]
                problems.append(self._problem(path, name, f"a real date as {fmt}", value))
        return problems

    def _problem(self, path: str, field: str, expected: str, found: str) -> Problem:
        message = f"{path}: {field}: expected {expected}, found {found!r}"
        details = {"field": field, "expected": expected, "found": found}
        return make_problem("naming", [path], message, details)


@functools.lru_cache(maxsize=4096)  # datasets repeat dates; strptime is slow
def _is_date(value: str, fmt: str) -> bool:
    try:
        parsed = datetime.strptime(value, fmt)
    except ValueError:
        return False
    # strptime accepts unpadded numbers; a real date must also read back identically
    return parsed.strftime(fmt) == value


CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def bad_name_reason(path: str) -> str | None:
    """Why a path cannot be stored in the index at all (None when it can)."""
    if not path.isascii():
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            return "the name is not valid UTF-8"
    if CONTROL_CHARS.search(path):
        return "the name holds a control character (tab, newline...)"
    return None
