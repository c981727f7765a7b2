"""The error hierarchy: every user-facing failure is one of these.

The CLI turns :class:`VolsegsyncError` into a one-line message and exit code 2;
nothing else is allowed to reach the user as a traceback.
"""

from __future__ import annotations


class VolsegsyncError(Exception):
    """Base error: a usage, configuration or environment problem (exit code 2)."""

    exit_code = 2


class ConfigError(VolsegsyncError):
    """The dataset configuration is malformed or invalid."""


class IndexFormatError(VolsegsyncError):
    """The index file is malformed, or names a path outside the dataset."""


class NotADatasetError(VolsegsyncError):
    """No volsegsync dataset was found at or above the given folder."""


class LockedError(VolsegsyncError):
    """Another run holds the dataset's write lock."""


class FileProblem(Exception):
    """A single file cannot be read or understood; batches report it and go on."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
