"""Read image geometry from NIfTI and NRRD headers, never touching voxel data.

Only the header bytes are read: for a ``.nii.gz`` the first few hundred bytes of
the gzip stream, for a NRRD the text up to the blank line that ends the header.
Every failure is a :class:`HeaderProblem` (a :class:`FileProblem`) whose
``category`` is one of ``unreadable``, ``not_an_image`` or ``corrupt``.
"""

from __future__ import annotations

import math
import posixpath
import re
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, NamedTuple

from volsegsync.errors import FileProblem
from volsegsync.fsutil import NotRegularFile, open_in_dataset, open_regular
from volsegsync.magic import NIFTI1_SIZE, NIFTI2_SIZE, nifti_header_size, nifti_magic_problem

_CHUNK = 8192
NRRD_HEADER_LIMIT = 1024 * 1024  # a NRRD header (text before the data) is at most this

# NRRD "space" -> sign of each world axis relative to RAS, and whether a 4th (time) axis follows.
_ANATOMICAL_SPACES: dict[str, tuple[tuple[float, float, float], bool]] = {
    "right-anterior-superior": ((1.0, 1.0, 1.0), False),
    "ras": ((1.0, 1.0, 1.0), False),
    "left-anterior-superior": ((-1.0, 1.0, 1.0), False),
    "las": ((-1.0, 1.0, 1.0), False),
    "left-posterior-superior": ((-1.0, -1.0, 1.0), False),
    "lps": ((-1.0, -1.0, 1.0), False),
    "right-anterior-superior-time": ((1.0, 1.0, 1.0), True),
    "rast": ((1.0, 1.0, 1.0), True),
    "left-anterior-superior-time": ((-1.0, 1.0, 1.0), True),
    "last": ((-1.0, 1.0, 1.0), True),
    "left-posterior-superior-time": ((-1.0, -1.0, 1.0), True),
    "lpst": ((-1.0, -1.0, 1.0), True),
}
_TIME_SPACES = {"scanner-xyz-time", "3d-right-handed-time", "3d-left-handed-time"}
_NON_SPATIAL_KINDS = {
    "time", "list", "point", "vector", "covariant-vector", "normal", "stub", "scalar",
    "complex", "2-vector", "3-color", "rgb-color", "hsv-color", "xyz-color", "4-color",
    "rgba-color", "3-vector", "3-gradient", "3-normal", "4-vector", "quaternion",
    "2d-symmetric-matrix", "2d-masked-symmetric-matrix", "2d-matrix", "2d-masked-matrix",
    "3d-symmetric-matrix", "3d-masked-symmetric-matrix", "3d-matrix", "3d-masked-matrix",
}  # fmt: skip

NRRD_MAX_DIMENSION = 16  # NRRD itself sets none; no image here has more axes
NIFTI_MAX_DIMENSION = 7  # the NIfTI standard's own limit

# The one NRRD type table (header and content pass): type name -> numpy type code.
NRRD_TYPES: dict[str, str] = {}
for _names, _code in (
    ("signed char|int8|int8_t", "i1"),
    ("uchar|unsigned char|uint8|uint8_t", "u1"),
    ("short|short int|signed short|signed short int|int16|int16_t", "i2"),
    ("ushort|unsigned short|unsigned short int|uint16|uint16_t", "u2"),
    ("int|signed int|int32|int32_t", "i4"),
    ("uint|unsigned int|uint32|uint32_t", "u4"),
    ("longlong|long long|long long int|signed long long|signed long long int|int64|int64_t",
     "i8"),
    ("ulonglong|unsigned long long|unsigned long long int|uint64|uint64_t", "u8"),
    ("float", "f4"),
    ("double", "f8"),
    ("block", "block"),
):  # fmt: skip
    NRRD_TYPES.update(dict.fromkeys(_names.split("|"), _code))


# numpy's names of the codes (without importing numpy: a header read needs none of it)
_DTYPE_NAMES = {
    "i1": "int8", "u1": "uint8", "i2": "int16", "u2": "uint16", "i4": "int32",
    "u4": "uint32", "i8": "int64", "u8": "uint64", "f4": "float32", "f8": "float64",
}  # fmt: skip


def nrrd_type_code(name: object) -> str | None:
    """The numpy type code of a NRRD ``type`` (case and spacing as NRRD allows), or None."""
    return NRRD_TYPES.get(" ".join(str(name).lower().split()))


class HeaderProblem(FileProblem):
    """A :class:`FileProblem` that also names its problem category."""

    def __init__(self, path: str, reason: str, category: str = "corrupt") -> None:
        super().__init__(path, reason)
        self.category = category


@dataclass(frozen=True)
class Geometry:
    """Where an image's voxels are: spatial shape, voxel-to-world affine, frame."""

    shape: tuple[int, ...]
    affine: tuple[tuple[float, ...], ...]
    frame: str
    anatomical: bool
    dtype: str
    extra_axes: tuple[int, ...] = ()
    fields: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        affine = tuple(tuple(float(v) + 0.0 for v in r) for r in self.affine)  # no -0.0
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "extra_axes", tuple(int(n) for n in self.extra_axes))
        object.__setattr__(self, "fields", dict(self.fields))

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size along each spatial axis (norm of the affine's columns)."""
        rows = self.affine[:-1]
        return tuple(math.hypot(*(r[c] for r in rows)) for c in range(len(self.shape)))

    @property
    def origin(self) -> tuple[float, ...]:
        """World position of voxel (0, 0, 0)."""
        return tuple(r[-1] for r in self.affine[:-1])

    @property
    def directions(self) -> tuple[tuple[float, ...], ...]:
        """Unit world vector of each spatial axis (zero vector for a zero spacing)."""
        rows = self.affine[:-1]
        return tuple(
            tuple(r[c] / s if s else 0.0 for r in rows) for c, s in enumerate(self.spacing)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "affine": [list(r) for r in self.affine],
            "frame": self.frame,
            "anatomical": self.anatomical,
            "dtype": self.dtype,
            "extra_axes": list(self.extra_axes),
            "fields": dict(self.fields),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Geometry:
        """Inverse of :meth:`to_json`; raises ValueError on malformed data."""
        try:
            affine = data["affine"]
            fields = data["fields"]
            if not isinstance(fields, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in fields.items()
            ):
                raise TypeError("fields must map strings to strings")
            if not isinstance(data["anatomical"], bool):
                raise TypeError("anatomical must be a boolean")
            if not isinstance(data["frame"], str) or not isinstance(data["dtype"], str):
                raise TypeError("frame and dtype must be strings")
            return cls(
                shape=_ints(data["shape"]),
                affine=tuple(_floats(r) for r in affine),
                frame=data["frame"],
                anatomical=data["anatomical"],
                dtype=data["dtype"],
                extra_axes=_ints(data["extra_axes"]),
                fields=fields,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed geometry record: {e}") from None


def _ints(values: Any) -> tuple[int, ...]:
    if not isinstance(values, list) or not all(type(v) is int for v in values):
        raise TypeError(f"expected a list of integers, found {values!r}")
    return tuple(values)


def _floats(values: Any) -> tuple[float, ...]:
    ok = isinstance(values, list) and all(
        type(v) in (int, float) and math.isfinite(v) for v in values
    )
    if not ok:
        raise TypeError(f"expected a list of finite numbers, found {values!r}")
    return tuple(float(v) for v in values)


# --------------------------------------------------------------------------- reading


def read_geometry(path: Path, root: Path | None = None) -> Geometry:
    """The geometry of a NIfTI or NRRD file, read from its header only.

    With ``root`` (the dataset), ``path`` may be a link that resolves inside it;
    without, only a regular file that is not a link is read.
    """
    try:
        opened = open_in_dataset(root, _rel(root, path)) if root else open_regular(path)
        with opened as fh:
            return _read_open(path, fh, root)
    except FileProblem:
        raise
    except OSError as e:
        raise HeaderProblem(str(path), _os_reason(path, e), "unreadable") from None
    except Exception as e:
        raise HeaderProblem(str(path), f"cannot parse header: {_one_line(e)}") from None


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_absolute() else path.as_posix()


def _os_reason(path: Path, e: OSError) -> str:
    if isinstance(e, NotRegularFile):
        return str(e.strerror)
    if isinstance(e, FileNotFoundError):
        return "broken symbolic link" if path.is_symlink() else "file not found"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, IsADirectoryError):
        return "is a directory, not a file"
    return f"cannot read: {e.strerror or e}"


def _expected_format(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".nrrd", ".nhdr")):
        return "nrrd"
    return None


def _read_open(path: Path, fh: BinaryIO, root: Path | None = None) -> Geometry:
    head = fh.read(_CHUNK)
    expected = _expected_format(path)
    if not head:
        raise HeaderProblem(str(path), "file is empty")
    if head.startswith(b"NRRD"):
        _require(path, expected, "nrrd", "NRRD")
        return _nrrd_geometry(path, head, fh, root)
    gzipped = head.startswith(b"\x1f\x8b")
    block = _gunzip_prefix(path, head, fh) if gzipped else head
    size = nifti_header_size(block)
    if size is None:
        what = "gzip data without a NIfTI header" if gzipped else "neither NIfTI nor NRRD"
        if expected is None:
            raise HeaderProblem(str(path), f"unknown file type: {what}", "not_an_image")
        label = "NIfTI" if expected == "nifti" else "NRRD"
        raise HeaderProblem(str(path), f"not a {label} file: {what}", "not_an_image")
    _require(path, expected, "nifti", "NIfTI")
    return _nifti_geometry(path, block, size)


def _require(path: Path, expected: str | None, found: str, label: str) -> None:
    if expected is not None and expected != found:
        claimed = "NIfTI" if expected == "nifti" else "NRRD"
        raise HeaderProblem(str(path), f"not a {claimed} file: content is {label}", "not_an_image")


# --------------------------------------------------------------------------- NIfTI


def _gunzip_prefix(path: Path, head: bytes, fh: BinaryIO) -> bytes:
    """The first bytes of a gzip stream, enough for a NIfTI-2 header."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = b""
    data = head
    try:
        while len(out) < NIFTI2_SIZE and data:
            out += inflater.decompress(data, NIFTI2_SIZE - len(out))
            data = inflater.unconsumed_tail or (b"" if inflater.eof else fh.read(_CHUNK))
    except zlib.error as e:
        raise HeaderProblem(str(path), f"corrupt gzip stream: {e}") from None
    return out


def _nifti_geometry(path: Path, block: bytes, size: int) -> Geometry:
    if len(block) < size:
        raise HeaderProblem(
            str(path), f"truncated NIfTI header: {len(block)} of {size} bytes present"
        )
    problem = nifti_magic_problem(block, size)
    if problem:
        raise HeaderProblem(str(path), problem, "not_an_image")
    plain = _plain_nifti1_geometry(block) if size == NIFTI1_SIZE else None
    if plain is not None:
        _check_finite(path, plain.affine)
        return plain
    from nibabel.nifti1 import Nifti1Header  # nibabel (and numpy): only when needed
    from nibabel.nifti2 import Nifti2Header

    header_class: Any = Nifti1Header if size == NIFTI1_SIZE else Nifti2Header
    header: Any = header_class(block[:size], check=False)
    dims = header["dim"]
    ndim = int(dims[0])
    if not 1 <= ndim <= NIFTI_MAX_DIMENSION or any(int(d) < 0 for d in dims[1 : ndim + 1]):
        raise HeaderProblem(str(path), f"invalid NIfTI dimensions {list(map(int, dims))}")
    shape = tuple(int(d) for d in header.get_data_shape())
    spatial = (*shape[:3], *(1,) * (3 - len(shape)))
    affine = header.get_best_affine().tolist()
    _check_finite(path, affine)
    known = int(header["sform_code"]) > 0 or int(header["qform_code"]) > 0
    return Geometry(
        shape=spatial,
        affine=_rows(affine),
        frame="RAS" if known else "unknown",
        anatomical=known,
        dtype=header.get_data_dtype().name,
        extra_axes=shape[3:],
        fields={},
    )


# NIfTI datatype codes of plain numeric types -> numpy's names (others: nibabel decides)
_NIFTI_DTYPES = {
    2: "uint8", 4: "int16", 8: "int32", 16: "float32", 64: "float64", 256: "int8",
    512: "uint16", 768: "uint32", 1024: "int64", 1280: "uint64",
}  # fmt: skip


class PlainNifti1(NamedTuple):
    """What a plain NIfTI-1 header says of its voxels, as nibabel reads it."""

    order: Literal["<", ">"]  # struct's (and numpy's) byte order
    shape: tuple[int, ...]
    dtype: str  # numpy's name


def plain_nifti1(block: bytes) -> PlainNifti1 | None:
    """Byte order, shape and dtype of a NIfTI-1 header (its first 348 bytes or more)
    with a plain numeric datatype and 1 to 7 non-negative dimensions, read with
    ``struct``; None for anything else (nibabel decides, and words any problem)."""
    order: Literal["<", ">"] = "<" if int.from_bytes(block[:4], "little") == NIFTI1_SIZE else ">"
    dims = struct.unpack_from(order + "8h", block, 40)
    (datatype,) = struct.unpack_from(order + "h", block, 70)
    ndim = dims[0]
    dtype = _NIFTI_DTYPES.get(datatype)
    if dtype is None or not 1 <= ndim <= NIFTI_MAX_DIMENSION:
        return None
    shape = dims[1 : ndim + 1]
    if any(d < 0 for d in shape) or shape[:3] == (27307, 1, 6):  # nibabel: FreeSurfer ico7
        return None
    return PlainNifti1(order, shape, dtype)


def _plain_nifti1_geometry(block: bytes) -> Geometry | None:
    """The geometry of a NIfTI-1 header that places its voxels by the sform (what
    nibabel's ``get_best_affine`` then returns: the sform rows, float32 widened),
    read without nibabel and numpy; None for anything else (nibabel decides)."""
    plain = plain_nifti1(block)
    if plain is None:
        return None
    order, shape, dtype = plain
    qform_code, sform_code = struct.unpack_from(order + "2h", block, 252)
    if sform_code == 0:
        return None
    rows = struct.unpack_from(order + "12f", block, 280)
    affine = (rows[0:4], rows[4:8], rows[8:12], (0.0, 0.0, 0.0, 1.0))
    known = sform_code > 0 or qform_code > 0
    return Geometry(
        shape=(*shape[:3], *(1,) * (3 - len(shape))),
        affine=affine,
        frame="RAS" if known else "unknown",
        anatomical=known,
        dtype=dtype,
        extra_axes=shape[3:],
        fields={},
    )


def _check_finite(path: Path, affine: Sequence[Sequence[float]]) -> None:
    if not all(math.isfinite(v) for row in affine for v in row):
        raise HeaderProblem(str(path), "header geometry holds non-finite numbers")


# --------------------------------------------------------------------------- NRRD


class NrrdHeader(NamedTuple):
    """A parsed NRRD header: pynrrd's fields, the ``key:=value`` pairs, where the
    attached data starts, and whether a blank line ended the header."""

    fields: dict[str, Any]
    key_values: dict[str, str]
    data_offset: int
    ended: bool


def _nrrd_header_text(path: Path | str, head: bytes, fh: IO[bytes]) -> tuple[bytes, int, bool]:
    """The header bytes up to the blank line, the offset after it, and whether it was
    found. Linear in the header's size, which is capped (NRRD_HEADER_LIMIT)."""
    buf = bytearray(head)
    start = 0
    while True:
        end = _blank_line(buf, max(0, start - 2))
        if end is not None:
            return bytes(buf[: end[0]]), end[1], True
        if len(buf) > NRRD_HEADER_LIMIT:
            raise HeaderProblem(
                str(path),
                f"no blank line ends the NRRD header within {NRRD_HEADER_LIMIT // 1024} KiB",
            )
        more = fh.read(max(_CHUNK, len(buf)))  # doubling reads: few calls on a long header
        if not more:
            return bytes(buf), len(buf), False
        start = len(buf)
        buf += more


def _blank_line(buf: bytearray, start: int) -> tuple[int, int] | None:
    """Start and end of the first ``\\n\\n`` or ``\\n\\r\\n`` at or after ``start``."""
    hits = [(i, i + len(sep)) for sep in (b"\n\n", b"\n\r\n") if (i := buf.find(sep, start)) >= 0]
    return min(hits) if hits else None


def read_nrrd_header(path: Path | str, head: bytes, fh: IO[bytes]) -> NrrdHeader:
    """Parse the NRRD header that starts with ``head`` (the file's first bytes, read
    from ``fh``, which is left anywhere). Raises HeaderProblem when it is malformed,
    holds more than NRRD_MAX_DIMENSION axes or lacks a required field."""
    text, offset, ended = _nrrd_header_text(path, head, fh)
    return _plain_nrrd_header(text, offset, ended) or _parse_nrrd_header(path, text, offset, ended)


def _parse_nrrd_header(path: Path | str, text: bytes, offset: int, ended: bool) -> NrrdHeader:
    if b"\x00" in text:
        raise HeaderProblem(str(path), "NRRD header holds binary bytes (truncated or garbage)")
    lines = text.decode("utf-8", "replace").replace("\r", "").split("\n")
    field_lines, key_values = _split_key_values(lines[1:])
    for line in field_lines:
        key, _, value = line.partition(":")
        if key.strip().lower() == "dimension":
            dim = value.strip()
            if not (dim.isascii() and dim.isdigit() and 1 <= int(dim[:4]) <= NRRD_MAX_DIMENSION):
                raise HeaderProblem(
                    str(path),
                    f"NRRD dimension {dim[:20]!r} is not between 1 and {NRRD_MAX_DIMENSION}",
                )
    import nrrd  # and numpy: see _plain_nrrd_header for the common case without them

    fields = dict(nrrd.read_header([lines[0], *field_lines]))
    if not ended and detached_data_name(fields) is None:
        raise HeaderProblem(str(path), "truncated NRRD header: no blank line before end of file")
    for name in _REQUIRED_NRRD_FIELDS:
        if name not in fields:
            raise HeaderProblem(str(path), f"NRRD header lacks required field '{name}'")
    return NrrdHeader(fields, key_values, offset, ended)


_REQUIRED_NRRD_FIELDS = ("dimension", "type", "encoding", "sizes")


def _plain_int(value: str) -> int:
    if not (value.isascii() and value.isdigit() and len(value) <= 15):
        raise ValueError(value)  # pynrrd's float-then-int would round beyond 2**53
    return int(value)


def _plain_vector(value: str) -> list[float]:
    if len(value) < 2 or value[0] != "(" or value[-1] != ")":
        raise ValueError(value)
    return [float(v) for v in value[1:-1].split(",")]


def _plain_directions(value: str) -> list[list[float] | None]:
    rows = [None if r == "none" else _plain_vector(r) for r in value.split()]
    if not rows or len({len(r) for r in rows if r is not None}) > 1:
        raise ValueError(value)
    return rows


# The fields of a NRRD header that geometry reads, each parsed as pynrrd parses it
# (tests/test_headers.py compares both on many headers).
_PLAIN_NRRD_FIELDS: dict[str, Callable[[str], Any]] = {
    "dimension": lambda v: _plain_int(v) if v[:1] != "0" else int("x"),  # as pynrrd: "03"
    "space dimension": _plain_int,
    "type": str,
    "encoding": str,
    "endian": str,
    "content": str,
    "space": str,
    "sizes": lambda v: [_plain_int(n) for n in v.split()],
    "spacings": lambda v: [float(n) for n in v.split()],
    "kinds": str.split,
    "space origin": _plain_vector,
    "space directions": _plain_directions,
}
_PLAIN_MAGIC = re.compile(r"NRRD000[1-5]")
_FIELD_SPLIT = re.compile(r":=?")


def _plain_nrrd_header(text: bytes, offset: int, ended: bool) -> NrrdHeader | None:
    """The header parsed without pynrrd (and numpy) when it is in the plain form that
    3D Slicer and most tools write: only the fields of :data:`_PLAIN_NRRD_FIELDS`,
    each once and well formed, a blank line at its end. None otherwise: then
    :func:`_parse_nrrd_header` decides, and words any problem."""
    if not ended or b"\x00" in text:
        return None
    lines = text.decode("utf-8", "replace").replace("\r", "").split("\n")
    if not _PLAIN_MAGIC.fullmatch(lines[0]):
        return None
    field_lines, key_values = _split_key_values(lines[1:])
    fields: dict[str, Any] = {}
    try:
        for line in field_lines:
            parts = _FIELD_SPLIT.split(line.rstrip(), maxsplit=1)
            if len(parts) != 2:
                return None  # pynrrd: a malformed line (or its end, when blank)
            name, value = parts[0].strip(), parts[1].strip()
            parse = _PLAIN_NRRD_FIELDS.get(name)
            if parse is None or name in fields:
                return None
            fields[name] = parse(value)
    except ValueError:
        return None
    if not all(n in fields for n in _REQUIRED_NRRD_FIELDS):
        return None
    if not 1 <= fields["dimension"] <= NRRD_MAX_DIMENSION:
        return None
    return NrrdHeader(fields, key_values, offset, ended)


def detached_data_name(fields: Mapping[str, Any]) -> str | None:
    """The raw ``data file`` value of a NRRD header, None when the data is attached."""
    value = fields.get("data file", fields.get("datafile"))
    return None if value is None else str(value)


def detached_data_paths(root: Path, rel: str) -> tuple[str, ...]:
    """Dataset-relative paths of the detached data file(s) of the NRRD header at
    ``rel`` (empty when its data is attached or it is no NRRD), each checked by
    :func:`check_data_file`. Raises HeaderProblem (one line) otherwise."""
    name = detached_data_name_at(root, rel)
    return () if name is None else (check_data_file(root, rel, name),)


def detached_data_name_at(root: Path, rel: str) -> str | None:
    """The raw ``data file`` value of the NRRD header at ``rel`` (header only), None
    when its data is attached or it is no NRRD. Raises HeaderProblem (one line)."""
    try:
        with open_in_dataset(root, rel) as fh:
            head = fh.read(_CHUNK)
            if not head.startswith(b"NRRD"):
                return None
            header = read_nrrd_header(rel, head, fh)
    except OSError as e:
        raise HeaderProblem(rel, _os_reason(Path(rel), e), "unreadable") from None
    except HeaderProblem:
        raise
    except Exception as e:
        raise HeaderProblem(rel, f"cannot parse header: {_one_line(e)}") from None
    return detached_data_name(header.fields)


def check_data_file(root: Path, rel: str, name: str) -> str:
    """The dataset-relative path of detached data ``name`` named by the header at ``rel``.

    Only a regular file in the header's own folder is allowed: no folder part, no
    absolute path, no list or pattern of files, no link out of the dataset, no FIFO
    or device (docs/security.md). Raises HeaderProblem (one line) otherwise.
    """
    target = data_file_target(rel, name)
    try:
        with open_in_dataset(root, target):
            pass
    except OSError as e:
        reason = _os_reason(root / target, e)
        raise HeaderProblem(rel, f"detached data file {target}: {reason}", "unreadable") from None
    return target


def data_file_target(rel: str, name: str) -> str:
    """The dataset-relative path that detached data ``name`` of the header at ``rel``
    names, when the name is allowed (a plain file name: see :func:`check_data_file`);
    no file is touched."""
    name = name.strip()
    bad = (
        not name
        or "/" in name
        or "\\" in name
        or name in (".", "..")
        or name.startswith("LIST")
        or " " in name
        or "%" in name
        or "\x00" in name
    )
    if bad:
        raise HeaderProblem(
            rel,
            f"detached data file {name[:100]!r} is not allowed: only a single file in the "
            "header's own folder may hold its data",
        )
    folder = posixpath.dirname(rel)
    return posixpath.join(folder, name) if folder else name


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:300]


def _nrrd_geometry(path: Path, head: bytes, fh: BinaryIO, root: Path | None) -> Geometry:
    parsed = read_nrrd_header(path, head, fh)
    header, fields = parsed.fields, parsed.key_values
    name = detached_data_name(header)
    if name is not None:  # its name is checked here too: the header-only pass (hooks)
        try:
            data_file_target(path.name if root is None else _rel(root, path), name)
        except HeaderProblem as e:
            raise HeaderProblem(str(path), e.reason, e.category) from None
    code = nrrd_type_code(header["type"])
    if code is None:
        raise HeaderProblem(str(path), f"unknown NRRD type {header['type']!r}")
    dtype = _DTYPE_NAMES.get(code, code)
    sizes = [int(n) for n in header["sizes"]]
    if len(sizes) != int(header["dimension"]):
        reason = f"NRRD sizes {sizes} do not match dimension {header['dimension']}"
        raise HeaderProblem(str(path), reason)
    if min(sizes, default=0) < 1:
        raise HeaderProblem(str(path), f"NRRD sizes {sizes} must all be positive")
    shape, extra, affine, frame, anatomical = _nrrd_placement(path, header, sizes)
    return Geometry(shape, affine, frame, anatomical, dtype, extra, fields)


def _split_key_values(lines: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Separate ``field: value`` lines from ``key:=value`` pairs (comments dropped)."""
    field_lines: list[str] = []
    fields: dict[str, str] = {}
    for line in lines:
        if not line or line[0] == "#":
            continue
        key, sep, value = line.partition(":=")
        if sep and ":" not in key:
            fields[key] = _unescape(value) if "\\" in value else value
        else:
            field_lines.append(line)
    return field_lines, fields


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


_Placement = tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[float, ...], ...], str, bool]


def _nrrd_placement(path: Path, header: Mapping[str, Any], sizes: list[int]) -> _Placement:
    """Spatial shape, extra axes, RAS affine, frame and anatomical flag of a NRRD."""
    kinds = [str(k).lower() for k in header.get("kinds", [])] or ["domain"] * len(sizes)
    if len(kinds) != len(sizes):
        raise HeaderProblem(str(path), f"NRRD kinds {kinds} do not match sizes {sizes}")
    if "space directions" in header:
        return _from_directions(path, header, sizes)
    spacings = [float(s) for s in header.get("spacings", [1.0] * len(sizes))]
    if len(spacings) != len(sizes):
        raise HeaderProblem(str(path), f"NRRD spacings {spacings} do not match sizes {sizes}")
    axes = [
        a for a, k in enumerate(kinds) if k not in _NON_SPATIAL_KINDS and math.isfinite(spacings[a])
    ]
    n = len(axes)
    affine = [
        [spacings[a] if r == c else 0.0 for c, a in enumerate(axes)] + [0.0] for r in range(n)
    ]
    affine.append([0.0] * n + [1.0])
    _check_finite(path, affine)
    return (*_split_axes(sizes, axes), _rows(affine), "unknown", False)


def _split_axes(sizes: list[int], axes: list[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    extra = tuple(n for a, n in enumerate(sizes) if a not in axes)
    return tuple(sizes[a] for a in axes), extra


def _rows(matrix: Sequence[Sequence[float]]) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in r) for r in matrix)


def _from_directions(path: Path, header: Mapping[str, Any], sizes: list[int]) -> _Placement:
    rows = _direction_rows(path, header["space directions"], len(sizes))
    space = str(header.get("space", "")).strip()
    key = space.lower()
    signs: tuple[float, ...]
    signs, timed = _ANATOMICAL_SPACES.get(key, ((1.0, 1.0, 1.0), key in _TIME_SPACES))
    given = {len(r) for r in rows if r is not None}
    world = int(header.get("space dimension", 0)) or (min(given) if given else 3)
    origin = [float(v) for v in header.get("space origin", [0.0] * world)]
    if given - {world} or len(origin) != world:
        raise HeaderProblem(
            str(path), f"NRRD space directions or origin do not have {world} values"
        )
    spatial = world - 1 if timed else world
    used = [(a, r) for a, r in enumerate(rows) if r is not None and (not timed or any(r[:spatial]))]
    axes = [a for a, _ in used]
    sign = signs if len(signs) == spatial else (1.0,) * spatial
    shift = [v if math.isfinite(v) else 0.0 for v in origin]
    affine = [[sign[i] * r[i] for _, r in used] + [sign[i] * shift[i]] for i in range(spatial)]
    affine.append([0.0] * len(axes) + [1.0])
    _check_finite(path, affine)
    anatomical = key in _ANATOMICAL_SPACES
    frame = "RAS" if anatomical else (space or "unknown")
    return (*_split_axes(sizes, axes), _rows(affine), frame, anatomical)


def _direction_rows(path: Path, raw: Any, count: int) -> list[list[float] | None]:
    """One world vector per axis, None for a 'none' (non-spatial) axis."""
    rows: list[list[float] | None] = []
    for r in raw:
        values = [] if r is None else [float(v) for v in r]
        if all(math.isnan(v) for v in values):
            rows.append(None)
        elif all(math.isfinite(v) for v in values):
            rows.append(values)
        else:
            raise HeaderProblem(str(path), f"NRRD space direction {values} is malformed")
    if len(rows) != count:
        raise HeaderProblem(str(path), "NRRD space directions do not match the dimension")
    return rows
