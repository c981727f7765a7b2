"""Problem records shared by ``check-names``, ``pair`` and ``verify``.

A problem has a stable ``category`` (part of the JSON schema), a severity that
the dataset config may override, the files involved, a sentence a person
understands and the numbers behind it in ``details``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

# category -> (default severity, one-line description for docs)
CATEGORIES: dict[str, tuple[str, str]] = {
    "naming": ("error", "the file name breaks the dataset's naming convention"),
    "unreadable": ("error", "the file cannot be read (permissions, broken link, bad name)"),
    "not_an_image": ("error", "the file's content is not the image format its name claims"),
    "corrupt": ("error", "the image cannot be decoded: truncated stream, size mismatch"),
    "too_large": ("error", "the header declares more data than [limits] max_image_bytes"),
    "unpaired_volume": ("error", "a volume has no segmentation"),
    "unpaired_segmentation": ("error", "a segmentation has no volume"),
    "ambiguous": ("error", "more than one file claims the same place in a pair"),
    "duplicate_version": ("error", "two segmentation files carry the same version"),
    "version_gap": ("warning", "segmentation versions skip a number (v1, v3)"),
    "geometry": ("error", "volume and segmentation disagree in shape, spacing, origin, direction"),
    "extent": ("error", "same voxel grid, different extent (cropped or padded by whole voxels)"),
    "frame_unknown": ("warning", "a NRRD space without anatomical frame: compared only partly"),
    "non_integer_labels": ("error", "a segmentation holds non-integer values"),
    "unknown_label": ("error", "a segmentation holds values outside the declared label set"),
    "only_background": ("warning", "a segmentation holds background only"),
    "segment_labels": ("error", "Slicer segment label values disagree with the voxel values"),
    "channels": ("error", "a multi-channel case lacks a channel, has an extra one, or is off-grid"),
    "drift_modified": ("error", "content differs from what the index records"),
    "drift_missing": ("error", "a file the index records is missing from disk"),
    "drift_untracked": (
        "error",
        "a file the index records is on disk but outside the scan (scan.exclude, extensions)",
    ),
    # dataset-level checks (volsegsync.dataset_checks)
    "outlier_orientation": ("warning", "a volume's orientation is unlike almost all others'"),
    "outlier_spacing": ("warning", "a volume's voxel spacing is unlike almost all others'"),
    "outlier_shape": ("warning", "a volume's shape is unlike almost all others'"),
    "label_name_conflict": ("warning", "a label value is named differently in another file"),
    "undeclared_label": ("warning", "a Slicer segment's label value is not in the label set"),
    "tiny_label": ("warning", "a label has a suspiciously tiny number of voxels"),
}

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


class Problem(NamedTuple):
    category: str
    severity: str
    files: tuple[str, ...]
    message: str
    details: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "severity": self.severity,
            "files": list(self.files),
            "message": self.message,
            "details": dict(self.details),
        }


def make_problem(
    category: str,
    files: tuple[str, ...] | list[str],
    message: str,
    details: Mapping[str, Any] | None = None,
    severity: str | None = None,
) -> Problem:
    """A problem with the category's default severity (unless one is given)."""
    level = severity or CATEGORIES[category][0]
    return Problem(category, level, tuple(files), message, dict(details or {}))


def apply_severities(problems: list[Problem], overrides: Mapping[str, str]) -> list[Problem]:
    """Apply the config's severity overrides; ``off`` drops the problem."""
    out = []
    for p in problems:
        level = overrides.get(p.category, p.severity)
        if level != "off":
            out.append(p._replace(severity=level))
    return out


PlainProblem = tuple[str, str, tuple[str, ...], str, dict[str, Any]]


def problems_to_plain(problems: list[Problem]) -> list[PlainProblem]:
    """Problems as plain tuples (for :mod:`marshal` memos in the state folder)."""
    return [(p.category, p.severity, p.files, p.message, dict(p.details)) for p in problems]


def problems_from_plain(rows: list[PlainProblem]) -> list[Problem]:
    return [Problem(*p) for p in rows]


def unreadable_problems(unreadable: Mapping[str, str]) -> list[Problem]:
    """One ``unreadable`` problem per ``path -> reason``, sorted by path."""
    return [
        make_problem("unreadable", [path], f"{path}: {why}")
        for path, why in sorted(unreadable.items())
    ]
