"""The content pass of ``verify``: checks that need the voxel data.

:func:`analyse` decodes one file completely (a truncated ``.nii.gz`` keeps a
readable header, so only reading the stream to its end reveals the damage) and
summarises it in a :class:`ContentReport`. The work is split in three modules:
:mod:`volsegsync.decode` (streamed, bounded decoding), :mod:`volsegsync.labels`
(summaries and label checks) and :mod:`volsegsync.content_cache` (reports cached
by content). This module ties them together and is the content pass's API.
"""

from __future__ import annotations

from pathlib import Path

from volsegsync.content_cache import ANALYSIS_VERSION, ContentCache, content_key, image_format
from volsegsync.decode import DEFAULT_MAX_BYTES, Bad, one_line, open_image
from volsegsync.labels import MAX_VALUES, ContentReport, failed, label_problems, summarise

__all__ = [
    "ANALYSIS_VERSION",
    "DEFAULT_MAX_BYTES",
    "MAX_VALUES",
    "ROLES",
    "ContentCache",
    "ContentReport",
    "analyse",
    "content_key",
    "image_format",
    "label_problems",
]

ROLES = ("volume", "segmentation")


def analyse(
    path: Path, role: str, root: Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES
) -> ContentReport:
    """Decode ``path`` completely and summarise it; never raises for bad content.

    With ``root``, ``path`` is relative to the dataset and opened under its link
    policy; a header declaring more than ``max_bytes`` of data is not decoded.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    try:
        fh, image = open_image(path, root, max_bytes)
        with fh:
            return summarise(image, role)
    except Bad as e:
        return failed(role, e.kind, e.reason)
    except OSError as e:
        return failed(role, "unreadable", f"cannot read: {e.strerror or e}")
    except MemoryError:
        return failed(role, "corrupt", "too large to decode in memory")
    except Exception as e:  # a decoder bug or an input it chokes on: still one line
        return failed(role, "corrupt", f"cannot decode: {one_line(e)}")
