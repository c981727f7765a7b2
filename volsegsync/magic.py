"""File-format signatures: is this the kind of image its name claims?

Works on the first bytes of a file (read anyway while hashing), so that a
file of garbage with an image extension is caught at no extra I/O. The NIfTI
check here is the only one: the header and content passes use it too.
"""

from __future__ import annotations

import zlib

HEAD_BYTES = 65536
NIFTI1_SIZE = 348
NIFTI2_SIZE = 540
_SINGLE_FILE = {NIFTI1_SIZE: b"n+1\x00", NIFTI2_SIZE: b"n+2\x00\r\n\x1a\n"}
_PAIR_FILE = {NIFTI1_SIZE: b"ni1\x00", NIFTI2_SIZE: b"ni2\x00\r\n\x1a\n"}
NIFTI_PAIR_REASON = "NIfTI header of a .hdr/.img pair, not a single-file .nii"
NIFTI_BAD_REASON = "not a NIfTI file (bad header size or magic)"


def nifti_header_size(raw: bytes) -> int | None:
    """348 (NIfTI-1) or 540 (NIfTI-2) when ``raw`` starts like such a header, in either
    byte order; None otherwise."""
    for order in ("little", "big"):
        size = int.from_bytes(raw[:4], order)
        if len(raw) >= 4 and size in _SINGLE_FILE:
            return size
    return None


def nifti_magic_problem(raw: bytes, size: int) -> str | None:
    """None when the ``size``-byte header ``raw`` has a single-file NIfTI magic, else why
    not (``ni1``/``ni2``, a header for a separate image file, is refused too)."""
    magic = raw[344:348] if size == NIFTI1_SIZE else raw[4:12]
    if magic == _SINGLE_FILE[size]:
        return None
    if magic == _PAIR_FILE[size]:
        return NIFTI_PAIR_REASON
    return NIFTI_BAD_REASON


def nifti_kind(raw: bytes) -> int:
    """The header size of a single-file NIfTI starting with ``raw`` (enough bytes for a
    whole header); raises ValueError with the reason when it is none."""
    size = nifti_header_size(raw)
    if size is None:
        raise ValueError(NIFTI_BAD_REASON)
    if len(raw) < size:
        raise ValueError(f"not a NIfTI file (only {len(raw)} bytes, a header needs {size})")
    problem = nifti_magic_problem(raw, size)
    if problem:
        raise ValueError(problem)
    return size


def sniff(name: str, head: bytes) -> str | None:
    """None when ``head`` starts like the format ``name``'s extension claims, else why not."""
    if name.endswith(".nrrd") or name.endswith(".nhdr"):
        return None if head.startswith(b"NRRD000") else "not a NRRD file (no NRRD000 magic)"
    if name.endswith(".nii.gz"):
        if not head.startswith(b"\x1f\x8b"):
            return "not a gzip-compressed NIfTI file (no gzip magic)"
        d = zlib.decompressobj(wbits=31)
        try:
            raw = d.decompress(head, 1024)
        except zlib.error as e:
            return f"corrupt gzip stream: {e}"
        if (
            len(raw) < NIFTI1_SIZE
            and not d.eof
            and not d.unconsumed_tail
            and len(head) < HEAD_BYTES
        ):
            # the whole file was read and its stream ends early: cut short, not another format
            return f"corrupt gzip stream: truncated after {len(raw)} bytes of NIfTI header"
        return _nifti_reason(raw)
    if name.endswith(".nii"):
        return _nifti_reason(head)
    return None


def names_data_file(name: str, head: bytes) -> bool:
    """Whether a NRRD may keep its voxels in another file: a ``.nhdr``, or a ``.nrrd``
    whose first bytes (read anyway while hashing) hold a ``data file`` field. Only
    such headers are read for their data file: an attached NRRD costs nothing more."""
    if name.endswith(".nhdr"):
        return True
    return name.endswith(".nrrd") and (b"\ndata file:" in head or b"\ndatafile:" in head)


def _nifti_reason(raw: bytes) -> str | None:
    if len(raw) < NIFTI1_SIZE:
        return f"not a NIfTI file (only {len(raw)} bytes, a header needs {NIFTI1_SIZE})"
    try:
        nifti_kind(raw)
    except ValueError as e:
        return str(e)
    return None
