"""File-format signatures: is this the kind of image its name claims?

Works on the first bytes of a file (read anyway while hashing), so that a
file of garbage with an image extension is caught at no extra I/O.
"""

from __future__ import annotations

import struct
import zlib

HEAD_BYTES = 65536


def sniff(name: str, head: bytes) -> str | None:
    """None when ``head`` starts like the format ``name``'s extension claims, else why not."""
    if name.endswith(".nrrd") or name.endswith(".nhdr"):
        return None if head.startswith(b"NRRD000") else "not a NRRD file (no NRRD000 magic)"
    if name.endswith(".nii.gz"):
        if not head.startswith(b"\x1f\x8b"):
            return "not a gzip-compressed NIfTI file (no gzip magic)"
        try:
            raw = zlib.decompressobj(wbits=31).decompress(head, 1024)
        except zlib.error as e:
            return f"corrupt gzip stream: {e}"
        return _nifti_reason(raw)
    if name.endswith(".nii"):
        return _nifti_reason(head)
    return None


def _nifti_reason(raw: bytes) -> str | None:
    if len(raw) < 348:
        return f"not a NIfTI file (only {len(raw)} bytes, a header needs 348)"
    for order in "<>":
        (size,) = struct.unpack(order + "i", raw[:4])
        if size == 348 and raw[344:348] in (b"n+1\x00", b"ni1\x00"):
            return None
        if size == 540 and raw[4:8] == b"n+2\x00":
            return None
    return "not a NIfTI file (bad header size or magic)"
