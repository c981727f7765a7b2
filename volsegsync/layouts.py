"""Dataset layouts of the common frameworks: the config each needs, and detection.

- ``default``: volsegsync's own convention (``PREFIX-BASENAME-POSTFIX``, NIfTI
  volumes, NRRD segmentations), :data:`volsegsync.config.DEFAULT_CONFIG_TEXT`;
- ``nnunet``: a raw nnU-Net v2 dataset: ``imagesTr/CASE_0000.nii.gz`` with
  ``labelsTr/CASE.nii.gz``; ``imagesTs/`` (no labels) left out of the scan;
  ``dataset.json`` read for ``file_ending`` and ``labels``;
- ``msd``: a Medical Segmentation Decathlon task: ``imagesTr/CASE.nii.gz`` with
  ``labelsTr/CASE.nii.gz`` (the same names), ``dataset.json`` read for ``labels``;
- ``slicer``: 3D Slicer scenes: volumes (``.nrrd``, ``.nii.gz``) and ``.seg.nrrd``
  segmentations side by side, paired by name or else by grid (metadata).

``dataset.json`` is untrusted input: read only if it is a regular file of at
most :data:`DATASET_JSON_LIMIT` bytes; anything malformed is a ConfigError.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from volsegsync.config import DEFAULT_CONFIG_TEXT
from volsegsync.errors import ConfigError
from volsegsync.fsutil import is_plain_folder

LAYOUTS = ("default", "nnunet", "msd", "slicer")
DESCRIPTIONS = {
    "default": "volsegsync's naming convention, NIfTI volumes and NRRD segmentations",
    "nnunet": "an nnU-Net v2 raw dataset (imagesTr/CASE_0000, labelsTr/CASE, dataset.json)",
    "msd": "a Medical Segmentation Decathlon task (imagesTr/CASE, labelsTr/CASE)",
    "slicer": "3D Slicer volumes and .seg.nrrd segmentations side by side",
}
DATASET_JSON = "dataset.json"
DATASET_JSON_LIMIT = 16 * 1024 * 1024
SUPPORTED_ENDINGS = (".nii.gz", ".nii", ".nrrd")
CHANNEL = re.compile(r"_(?P<channel>[0-9]{4})$")  # nnU-Net's channel suffix of a volume name


class DatasetJson(NamedTuple):
    """What volsegsync uses from a framework's ``dataset.json``."""

    file_ending: str | None
    labels: dict[int, str]  # value -> name (region-based labels are left out)
    channel_names: dict[str, str]  # channel number ("0") -> name


# --------------------------------------------------------------------------- config


def config_text(layout: str, root: Path) -> str:
    """The config file for ``layout``, with what ``root``'s dataset.json says."""
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")
    if layout == "default":
        return DEFAULT_CONFIG_TEXT
    if layout == "slicer":
        return _SLICER
    meta = read_dataset_json(root)
    ending = meta.file_ending or ".nii.gz"
    if ending not in SUPPORTED_ENDINGS:
        raise ConfigError(
            f"{root / DATASET_JSON}: file_ending {ending!r}: volsegsync reads "
            f"{', '.join(SUPPORTED_ENDINGS)} files only"
        )
    channels = sorted(meta.channel_names, key=int)
    multi = layout == "nnunet" and len(channels) > 1
    suffix = "_0000" if layout == "nnunet" and not multi else ""
    text = _FOLDERS.format(layout=layout, ending=ending, suffix=suffix)
    if multi:
        ids = ", ".join(f'"{int(c):04d}"' for c in channels)
        names = ", ".join(f"{int(c):04d} {meta.channel_names[c]}" for c in channels)
        text += f"\n[channels]\n# from {DATASET_JSON}: {names}\nrequired = [{ids}]\n"
    if meta.labels:
        rows = "".join(f"{v} = {json.dumps(n)}\n" for v, n in sorted(meta.labels.items()))
        text += f"\n# from {DATASET_JSON}\n[verify.labels]\n{rows}"
    return text


_HEAD = """\
# volsegsync dataset configuration (tracked in git), layout: {layout}.
# Written by 'volsegsync init --layout {layout}'. Docs: docs/configuration.md, docs/export.md

[naming]
# {names}
separator = "-"
fields = ["case"]
version = "v(?P<n>[0-9]+)"

[naming.patterns]
case = "{pattern}"
"""

_FOLDERS = (
    _HEAD.replace(
        "{names}", "imagesTr/CASE{suffix}{ending} pairs with labelsTr/CASE{ending}"
    ).replace("{pattern}", "[A-Za-z0-9_.]+")
    + """
[roles]
volume_extensions = ["{ending}"]
segmentation_extensions = ["{ending}"]
volume_dirs = ["imagesTr"]
segmentation_dirs = ["labelsTr"]
volume_suffix = "{suffix}"
segmentation_suffix = ""

[pairing]
by = "naming"

[scan]
# imagesTs/ holds test images without labels; ._* are macOS resource forks
exclude = ["imagesTs", "imagesVal", "*/._*", "._*"]
"""
)

_SLICER = (
    _HEAD.format(
        layout="slicer",
        names="CASE.nrrd (or .nii.gz) next to CASE.seg.nrrd; CASE-v2.seg.nrrd is version 2",
        pattern="[A-Za-z0-9_. ]+",
    )
    + """
[roles]
# the longest matching extension counts: x.seg.nrrd is a segmentation, x.nrrd a volume
volume_extensions = [".nrrd", ".nii.gz", ".nii"]
segmentation_extensions = [".seg.nrrd"]
volume_dirs = []
segmentation_dirs = []
volume_suffix = ""
segmentation_suffix = ""

[pairing]
# names first; a segmentation whose name matches no volume pairs with the one
# volume on its voxel grid (Slicer names them "Segmentation.seg.nrrd")
by = "metadata"

[scan]
exclude = []
"""
)


# --------------------------------------------------------------------------- dataset.json


def read_dataset_json(root: Path) -> DatasetJson:
    """``root/dataset.json`` as far as volsegsync uses it; empty when there is none."""
    path = root / DATASET_JSON
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return DatasetJson(None, {}, {})
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: not a regular file")
        if st.st_size > DATASET_JSON_LIMIT:
            raise ConfigError(f"{path}: larger than {DATASET_JSON_LIMIT // 2**20} MiB")
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read(DATASET_JSON_LIMIT + 1)
    finally:
        os.close(fd)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return DatasetJson(_ending(path, data), _labels(path, data), _channels(path, data))


def _ending(path: Path, data: Mapping[str, Any]) -> str | None:
    ending = data.get("file_ending")
    if ending is None:
        return None
    if not isinstance(ending, str) or not ending.startswith(".") or "/" in ending:
        raise ConfigError(f"{path}: file_ending must be an extension like '.nii.gz'")
    return ending


def _labels(path: Path, data: Mapping[str, Any]) -> dict[int, str]:
    """nnU-Net's ``{name: value}`` or MSD's ``{"value": name}``; region labels skipped."""
    raw = data.get("labels", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: labels must be an object")
    out: dict[int, str] = {}
    for key, value in raw.items():
        if isinstance(value, int) and not isinstance(value, bool):
            out[value] = str(key)  # nnU-Net v2: name -> value
        elif isinstance(value, str) and re.fullmatch(r"-?[0-9]+", str(key)):
            out[int(key)] = value  # MSD: "value" -> name
        elif isinstance(value, list):
            continue  # nnU-Net region-based training: a region of several labels
        else:
            raise ConfigError(f"{path}: label {key!r}: {value!r} is neither a value nor a name")
    return out


def _channels(path: Path, data: Mapping[str, Any]) -> dict[str, str]:
    raw = data.get("channel_names", data.get("modality", {}))
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ConfigError(f"{path}: channel_names must map channel numbers to names")
    return {str(k): v for k, v in raw.items() if str(k).isdigit()}


# --------------------------------------------------------------------------- detection


class Detected(NamedTuple):
    layout: str
    reason: str


def detect(root: Path) -> Detected | None:
    """The layout ``root`` looks like (nnunet, msd, slicer), or None."""
    images, labels = root / "imagesTr", root / "labelsTr"
    if is_plain_folder(images) and is_plain_folder(labels):
        names = _names(images)
        channelled = any(CHANNEL.search(_stem(n)) for n in names)
        has_json = os.path.isfile(root / DATASET_JSON)
        found = "imagesTr/, labelsTr/" + (f", {DATASET_JSON}" if has_json else "")
        if channelled:
            return Detected("nnunet", f"{found}, images named CASE_0000")
        return Detected("msd", f"{found}, images and labels named alike")
    segs = [n for n in _names(root) if n.endswith(".seg.nrrd")]
    if segs:
        return Detected("slicer", f"3D Slicer segmentations such as {segs[0]}")
    return None


def _names(folder: Path, limit: int = 200) -> list[str]:
    out = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if not entry.name.startswith("."):
                    out.append(entry.name)
                if len(out) >= limit:
                    break
    except OSError:
        return []
    return sorted(out)


def _stem(name: str) -> str:
    for ext in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".nii.gz"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


# --------------------------------------------------------------------------- init


def write_config(path: Path, layout: str | None, root: Path, force: bool = False) -> bool:
    """Write the config of ``layout`` (None: the default, only where none exists).

    An existing config is replaced only when it is the untouched default (what a
    plain ``init`` wrote), or with ``force``: edits are never lost silently.
    Returns whether the file was written.
    """
    from volsegsync.fsutil import atomic_write_text

    text = config_text(layout or "default", root)
    try:
        old: str | None = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        old = None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    if old == text or (old is not None and layout is None):
        return False
    if old is not None and old != DEFAULT_CONFIG_TEXT and not force:
        raise ConfigError(
            f"{path}: already holds a config of its own; 'init --layout {layout}' replaces "
            "only the untouched default (use --force to replace it; git keeps the old one)"
        )
    atomic_write_text(path, text)
    return True
