"""The content pass of ``verify``: checks that need the voxel data.

:func:`analyse` decodes one file completely (a truncated ``.nii.gz`` keeps a
readable header, so only reading the stream to its end reveals the damage) and
summarises it in a :class:`ContentReport`. Reports are cached by content hash in
a :class:`ContentCache`, so each content is decoded once, ever.
:func:`label_problems` turns a report into :class:`Problem` records.

Decoding is done here rather than by ``nibabel.load``/``nrrd.read`` for the
common layouts, in one streaming pass: the gzip stream is inflated to its end
(end-of-stream marker, CRC and length checked, trailing bytes rejected) and the
decompressed size must equal what the header declares, exactly.
"""

from __future__ import annotations

import io
import json
import math
import re
import sqlite3
import threading
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import nibabel as nib
import nrrd
import numpy as np
from nibabel.volumeutils import apply_read_scaling

from volsegsync.problems import Problem, make_problem

ANALYSIS_VERSION = 1  # bump when the analysis changes: old cache entries are then ignored
MAX_VALUES = 1000  # distinct values kept in a report
ROLES = ("volume", "segmentation")

_READ_CHUNK = 1 << 20  # bytes read from disk at a time
_INFLATE_MAX = 1 << 24  # bytes inflated per call (bounds memory on a gzip bomb)
_SCAN_STEP = 1 << 20  # voxels per step when counting values
_BINCOUNT_RANGE = 1 << 16  # value ranges up to this are counted, larger ones sorted
_GZIP_MAGIC = b"\x1f\x8b"

NDArray = np.ndarray[Any, Any]


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class ContentReport:
    """What the content pass learnt about one file; JSON round trip via to/from_json.

    ``segments`` are the Slicer ``.seg.nrrd`` segments as ``(name or ID, label
    value)``; ``segment_layers`` gives each one's layer (same order).
    ``layer_values`` holds the sorted values present in each layer, for 4D
    layered files only (``values`` is then their union).
    For volumes ``values`` is empty and ``integer_valued`` reflects the dtype only.
    """

    error: str | None
    dtype: str | None
    integer_valued: bool
    values: tuple[int, ...]
    non_integer_example: float | None
    segments: tuple[tuple[str, int], ...]
    role: str = "segmentation"
    error_kind: str | None = None  # problem category for error: corrupt / not_an_image / ...
    shape: tuple[int, ...] = ()
    values_capped: bool = False  # more than MAX_VALUES distinct values: only the first kept
    segment_layers: tuple[int, ...] = ()
    layer_values: tuple[tuple[int, ...], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "dtype": self.dtype,
            "integer_valued": self.integer_valued,
            "values": list(self.values),
            "non_integer_example": _float_out(self.non_integer_example),
            "segments": [[name, value] for name, value in self.segments],
            "role": self.role,
            "error_kind": self.error_kind,
            "shape": list(self.shape),
            "values_capped": self.values_capped,
            "segment_layers": list(self.segment_layers),
            "layer_values": [list(v) for v in self.layer_values],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ContentReport:
        """Rebuild a report; raises ValueError/TypeError/KeyError when malformed."""
        return cls(
            error=_opt_str(data["error"]),
            dtype=_opt_str(data["dtype"]),
            integer_valued=_bool(data["integer_valued"]),
            values=_ints(data["values"]),
            non_integer_example=_float_in(data["non_integer_example"]),
            segments=tuple((_str(n), _int(v)) for n, v in data["segments"]),
            role=_str(data["role"]),
            error_kind=_opt_str(data["error_kind"]),
            shape=_ints(data["shape"]),
            values_capped=_bool(data["values_capped"]),
            segment_layers=_ints(data["segment_layers"]),
            layer_values=tuple(_ints(v) for v in data["layer_values"]),
        )


def _float_out(x: float | None) -> float | str | None:
    return x if x is None or math.isfinite(x) else repr(x)  # 'nan', 'inf', '-inf'


def _float_in(x: Any) -> float | None:
    if x is None:
        return None
    if isinstance(x, str) and x in ("nan", "inf", "-inf"):
        return float(x)
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"expected a number, found {x!r}")
    return float(x)


def _opt_str(x: Any) -> str | None:
    return None if x is None else _str(x)


def _str(x: Any) -> str:
    if not isinstance(x, str):
        raise TypeError(f"expected a string, found {x!r}")
    return x


def _int(x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"expected an integer, found {x!r}")
    return x


def _ints(xs: Any) -> tuple[int, ...]:
    if not isinstance(xs, list):
        raise TypeError(f"expected a list, found {xs!r}")
    return tuple(_int(x) for x in xs)


def _bool(x: Any) -> bool:
    if not isinstance(x, bool):
        raise TypeError(f"expected true/false, found {x!r}")
    return x


# --------------------------------------------------------------------------- analyse


class _Bad(Exception):
    """The content is bad: ``kind`` is the problem category, ``reason`` one line."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass
class _Decoded:
    data: NDArray
    segments: list[tuple[str, int, int]]  # name, label value, layer
    layer_axis: int | None  # axis of ``data`` holding Slicer layers (4D files)


def analyse(path: Path, role: str) -> ContentReport:
    """Decode ``path`` completely and summarise it; never raises for bad content."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    try:
        decoded = _decode(path)
        return _summarise(decoded, role)
    except _Bad as e:
        return _failed(role, e.kind, e.reason)
    except OSError as e:
        return _failed(role, "unreadable", f"cannot read: {e.strerror or e}")
    except MemoryError:
        return _failed(role, "corrupt", "too large to decode in memory")
    except Exception as e:  # a decoder bug or an input it chokes on: still one line
        return _failed(role, "corrupt", f"cannot decode: {_one_line(e)}")


def _failed(role: str, kind: str, reason: str) -> ContentReport:
    return ContentReport(
        error=reason,
        dtype=None,
        integer_valued=False,
        values=(),
        non_integer_example=None,
        segments=(),
        role=role,
        error_kind=kind,
    )


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _decode(path: Path) -> _Decoded:
    with open(path, "rb") as fh:
        head = fh.read(8)
        fh.seek(0)
        if not head:
            raise _Bad("corrupt", "empty file (0 bytes)")
        if _is_nrrd_name(path.name) or (not _is_nifti_name(path.name) and head[:4] == b"NRRD"):
            return _decode_nrrd(path, fh, head)
        data = _decode_nifti(path.name, fh, head)
        return _Decoded(data, [], None)


def _is_nrrd_name(name: str) -> bool:
    return name.lower().endswith((".nrrd", ".nhdr"))


def _is_nifti_name(name: str) -> bool:
    return name.lower().endswith((".nii", ".nii.gz"))


# --------------------------------------------------------------------------- streams


def _raw_chunks(fh: IO[bytes]) -> Iterator[bytes]:
    while chunk := fh.read(_READ_CHUNK):
        yield chunk


def _gunzip(fh: IO[bytes]) -> Iterator[bytes]:
    """Inflate a gzip stream (one or more members) to its end, checking CRC and length.

    Trailing zero padding is tolerated (as gzip does); anything else after the
    last member is trailing garbage.
    """
    start = fh.tell()
    d: Any = zlib.decompressobj(31)
    members, member_start, good_end, pos = 1, start, start, start
    for chunk in _raw_chunks(fh):
        pos += len(chunk)
        data = chunk
        while data:
            if d is None:  # between members
                data = data.lstrip(b"\0")
                if not data:
                    break
                d, members, member_start = zlib.decompressobj(31), members + 1, pos - len(data)
            try:
                out = d.decompress(data, _INFLATE_MAX)
            except zlib.error as e:
                raise _gzip_error(e, members, pos, good_end, fh) from None
            if out:
                yield out
            if d.eof:
                data, d = d.unused_data, None
                good_end = pos - len(data)
            else:
                data = d.unconsumed_tail
    if d is not None:
        yield from _finish_member(d, members, member_start, good_end, pos, fh)


def _finish_member(
    d: Any, members: int, member_start: int, good_end: int, pos: int, fh: IO[bytes]
) -> Iterator[bytes]:
    """All input was fed: drain what zlib still holds, then the member must be complete."""
    try:
        while out := d.decompress(d.unconsumed_tail, _INFLATE_MAX):
            yield out
        if tail := d.flush():
            yield tail
    except zlib.error as e:
        raise _gzip_error(e, members, pos, good_end, fh) from None
    if d.eof:
        if d.unused_data.strip(b"\0"):
            raise _garbage(pos - good_end)
        return
    if members > 1 and not _starts_with_gzip_magic(fh, member_start):
        raise _garbage(pos - good_end)
    raise _Bad("corrupt", f"truncated gzip stream (compressed data ends after {pos} bytes)")


def _starts_with_gzip_magic(fh: IO[bytes], offset: int) -> bool:
    fh.seek(offset)
    return fh.read(2) == _GZIP_MAGIC


def _garbage(n: int) -> _Bad:
    unit = "byte" if n == 1 else "bytes"
    return _Bad("corrupt", f"{n} {unit} of trailing garbage after the gzip stream")


def _gzip_error(e: zlib.error, members: int, pos: int, good_end: int, fh: IO[bytes]) -> _Bad:
    msg = str(e).split(": ", 1)[-1]
    if members > 1:  # what follows a complete stream does not inflate: garbage
        size = _file_size(fh)
        return _garbage(size - good_end)
    if msg in ("incorrect header check", "unknown compression method"):
        return _Bad("not_an_image", "not a gzip stream (bad magic)")
    if msg == "incorrect data check":
        return _Bad("corrupt", "gzip CRC mismatch: the compressed data is damaged")
    if msg == "incorrect length check":
        return _Bad("corrupt", "gzip length check failed: the compressed data is damaged")
    return _Bad("corrupt", f"corrupt gzip stream ({msg}) within the first {pos} bytes")


def _file_size(fh: IO[bytes]) -> int:
    fh.seek(0, io.SEEK_END)
    return fh.tell()


class _Collector:
    """Gathers decompressed bytes up to ``limit``; counts (but drops) the rest."""

    def __init__(self, limit: int | None = None) -> None:
        self.buf = bytearray()
        self.limit = limit
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        if self.limit is None:
            self.buf += data
        elif (room := self.limit - len(self.buf)) > 0:
            self.buf += data[:room] if room < len(data) else data


def _open_stream(name: str, fh: IO[bytes], head: bytes, gz_name: bool) -> Iterator[bytes]:
    is_gz = head.startswith(_GZIP_MAGIC)
    if gz_name and not is_gz:
        raise _Bad("not_an_image", "not a gzip stream (bad magic)")
    if is_gz and not gz_name:
        raise _Bad("not_an_image", f"gzip-compressed data, but {name} does not end in .gz")
    return _gunzip(fh) if is_gz else _raw_chunks(fh)


def _size_mismatch(holds: int, declares: int, what: str) -> _Bad:
    return _Bad("corrupt", f"data holds {holds} bytes, header declares {declares} ({what})")


def _describe(shape: tuple[int, ...], dtype: np.dtype[Any]) -> str:
    return f"{'x'.join(str(n) for n in shape) or 'scalar'} {dtype.name}"


# --------------------------------------------------------------------------- NIfTI


@dataclass
class _NiftiLayout:
    header: Any
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _decode_nifti(name: str, fh: IO[bytes], head: bytes) -> NDArray:
    stream = _open_stream(name, fh, head, name.lower().endswith(".gz"))
    sink = _Collector()
    layout: _NiftiLayout | None = None
    for piece in stream:
        sink.add(piece)
        if layout is None and (layout := _nifti_layout(sink.buf, final=False)):
            sink.limit = layout.offset + layout.nbytes
    if layout is None:
        layout = _nifti_layout(sink.buf, final=True)
        assert layout is not None
    holds = max(sink.total - layout.offset, 0)
    if holds != layout.nbytes:
        raise _size_mismatch(holds, layout.nbytes, _describe(layout.shape, layout.dtype))
    return _nifti_array(sink.buf, layout)


def _nifti_layout(buf: bytearray, final: bool) -> _NiftiLayout | None:
    """The header's data layout once enough bytes are in; None while more are needed."""
    if len(buf) < 4:
        if final:
            raise _Bad("not_an_image", f"not a NIfTI file (only {len(buf)} bytes)")
        return None
    klass, size = _nifti_kind(bytes(buf[:4]))
    if len(buf) < size:
        if final:
            raise _Bad("corrupt", f"file ends inside the NIfTI header ({len(buf)} of {size} bytes)")
        return None
    _check_nifti_magic(bytes(buf[:size]), size)
    try:
        hdr = klass.from_fileobj(io.BytesIO(bytes(buf[:size])))
        shape = tuple(int(n) for n in hdr.get_data_shape())
        return _NiftiLayout(hdr, int(hdr.get_data_offset()), shape, hdr.get_data_dtype())
    except Exception as e:
        raise _Bad("corrupt", f"invalid NIfTI header: {_one_line(e)}") from None


def _nifti_kind(first4: bytes) -> tuple[Any, int]:
    for order in ("little", "big"):
        size = int.from_bytes(first4, order)
        if size == 348:
            return nib.Nifti1Header, 348
        if size == 540:
            return nib.Nifti2Header, 540
    raise _Bad("not_an_image", "not a NIfTI file (bad magic)")


def _check_nifti_magic(raw: bytes, size: int) -> None:
    magic = raw[344:348] if size == 348 else raw[4:12]
    if magic in (b"ni1\0", b"ni2\0\r\n\x1a\n"):
        raise _Bad("corrupt", "NIfTI header of a .hdr/.img pair, not a single-file .nii")
    if magic not in (b"n+1\0", b"n+2\0\r\n\x1a\n"):
        raise _Bad("not_an_image", "not a NIfTI file (bad magic)")


def _nifti_array(buf: bytearray, layout: _NiftiLayout) -> NDArray:
    count = math.prod(layout.shape)
    flat = np.frombuffer(buf, dtype=layout.dtype, count=count, offset=layout.offset)
    data = flat.reshape(layout.shape, order="F")
    slope, inter = layout.header.get_slope_inter()
    if (slope is None or slope == 1.0) and (inter is None or inter == 0.0):
        return data
    scaled: NDArray = apply_read_scaling(data, slope, inter)
    return scaled


# --------------------------------------------------------------------------- NRRD

_NRRD_TYPES = {  # numpy type code: NRRD type names, "|"-separated
    "i1": "signed char|int8|int8_t",
    "u1": "uchar|unsigned char|uint8|uint8_t",
    "i2": "short|short int|signed short|signed short int|int16|int16_t",
    "u2": "ushort|unsigned short|unsigned short int|uint16|uint16_t",
    "i4": "int|signed int|int32|int32_t",
    "u4": "uint|unsigned int|uint32|uint32_t",
    "i8": "longlong|long long|long long int|signed long long|signed long long int|int64|int64_t",
    "u8": "ulonglong|unsigned long long|unsigned long long int|uint64|uint64_t",
    "f4": "float",
    "f8": "double",
}
_NRRD_DTYPE = {name: code for code, names in _NRRD_TYPES.items() for name in names.split("|")}
_NRRD_REQUIRED = ("dimension", "type", "encoding", "sizes")
_SPATIAL_KINDS = {"domain", "space", "time"}


def _decode_nrrd(path: Path, fh: IO[bytes], head: bytes) -> _Decoded:
    if not head.startswith(b"NRRD"):
        raise _Bad("not_an_image", "not a NRRD file (bad magic)")
    header = _nrrd_header(fh)
    sizes = _nrrd_sizes(header)
    if _streamable(header):
        data = _nrrd_stream(path.name, fh, header, sizes)
    else:
        data = _nrrd_fallback(path)
    layer_axis = _layer_axis(header, data.ndim)
    return _Decoded(data, _slicer_segments(header, layer_axis is not None), layer_axis)


def _nrrd_header(fh: IO[bytes]) -> dict[str, Any]:
    try:
        header: dict[str, Any] = dict(nrrd.read_header(fh))
    except Exception as e:
        raise _Bad("corrupt", f"invalid NRRD header: {_one_line(e)}") from None
    for field in _NRRD_REQUIRED:
        if field not in header:
            raise _Bad("corrupt", f"NRRD header lacks the required field {field!r}")
    return header


def _nrrd_sizes(header: Mapping[str, Any]) -> tuple[int, ...]:
    sizes = tuple(int(n) for n in header["sizes"])
    if len(sizes) != header["dimension"] or any(n < 0 for n in sizes):
        raise _Bad("corrupt", f"NRRD sizes {sizes} do not match dimension {header['dimension']}")
    return sizes


def _streamable(header: Mapping[str, Any]) -> bool:
    """Attached raw or gzip data without skips: decoded here in one checked pass."""
    detached = "datafile" in header or "data file" in header
    skips = any(header.get(k, 0) for k in ("lineskip", "line skip", "byteskip", "byte skip"))
    return header["encoding"] in ("raw", "gzip", "gz") and not detached and not skips


def _nrrd_dtype(header: Mapping[str, Any]) -> np.dtype[Any]:
    code = _NRRD_DTYPE.get(str(header["type"]))
    if code is None:
        raise _Bad("corrupt", f"unsupported NRRD type {header['type']!r}")
    if code.endswith("1"):
        return np.dtype(code)
    endian = header.get("endian")
    if endian not in ("little", "big"):
        raise _Bad("corrupt", f"NRRD header needs endian little or big, found {endian!r}")
    return np.dtype(("<" if endian == "little" else ">") + code)


def _nrrd_stream(
    name: str, fh: IO[bytes], header: Mapping[str, Any], sizes: tuple[int, ...]
) -> NDArray:
    dtype = _nrrd_dtype(header)
    count = math.prod(sizes)
    declared = count * dtype.itemsize
    gz = header["encoding"] != "raw"
    head = fh.read(2)
    fh.seek(-len(head), io.SEEK_CUR)
    if gz and not head.startswith(_GZIP_MAGIC):
        raise _Bad("corrupt", "NRRD declares gzip encoding but its data is not a gzip stream")
    sink = _Collector(limit=declared)
    for piece in _gunzip(fh) if gz else _raw_chunks(fh):
        sink.add(piece)
    if sink.total != declared:
        raise _size_mismatch(sink.total, declared, _describe(sizes, dtype))
    flat = np.frombuffer(sink.buf, dtype=dtype, count=count)
    data: NDArray = flat.reshape(sizes[::-1]).T  # pynrrd's index_order='F'
    return data


def _nrrd_fallback(path: Path) -> NDArray:
    """Other layouts (ascii, bzip2, detached data, skips): pynrrd checks the size."""
    try:
        data, _ = nrrd.read(str(path))
    except OSError:
        raise
    except Exception as e:
        raise _Bad("corrupt", f"cannot decode NRRD data: {_one_line(e)}") from None
    result: NDArray = np.asarray(data)
    return result


def _layer_axis(header: Mapping[str, Any], ndim: int) -> int | None:
    """The axis of a Slicer 4D layered segmentation that holds the layers."""
    if ndim != 4:
        return None
    kinds = [str(k).lower() for k in header.get("kinds", [])]
    for axis, kind in enumerate(kinds):
        if kind not in _SPATIAL_KINDS:
            return axis
    return 0


_SEGMENT_KEY = re.compile(r"^Segment(\d+)_(ID|Name|LabelValue|Layer)$")


def _slicer_segments(header: Mapping[str, Any], layered: bool) -> list[tuple[str, int, int]]:
    """Slicer segments as (name or ID, label value, layer), in segment order.

    Older Slicer files omit LabelValue/Layer: the label is then 1 and a layered
    file keeps segment N in layer N. An unparsable number becomes -1.
    """
    fields: dict[int, dict[str, str]] = {}
    for key, value in header.items():
        if m := _SEGMENT_KEY.match(str(key)):
            fields.setdefault(int(m.group(1)), {})[m.group(2)] = str(value).strip()
    segments = []
    for n in sorted(fields):
        f = fields[n]
        name = f.get("Name") or f.get("ID") or f"Segment{n}"
        label = _parse_int(f.get("LabelValue"), 1)
        layer = _parse_int(f.get("Layer"), n if layered else 0)
        segments.append((name, label, layer))
    return segments


def _parse_int(text: str | None, default: int) -> int:
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        return -1


# --------------------------------------------------------------------------- values


@dataclass
class _Scan:
    integer_valued: bool
    values: tuple[int, ...] = ()
    capped: bool = False
    example: float | None = None


def _summarise(decoded: _Decoded, role: str) -> ContentReport:
    data = decoded.data
    if role == "volume":
        scan = _Scan(data.dtype.kind in "biu")
        layers: tuple[tuple[int, ...], ...] = ()
    else:
        scan, layers = _scan_segmentation(decoded)
    return ContentReport(
        error=None,
        dtype=data.dtype.name,
        integer_valued=scan.integer_valued,
        values=scan.values,
        non_integer_example=scan.example,
        segments=tuple((name, label) for name, label, _ in decoded.segments),
        role=role,
        shape=tuple(int(n) for n in data.shape),
        values_capped=scan.capped,
        segment_layers=tuple(layer for _, _, layer in decoded.segments),
        layer_values=layers,
    )


def _scan_segmentation(decoded: _Decoded) -> tuple[_Scan, tuple[tuple[int, ...], ...]]:
    if decoded.layer_axis is None:
        return _scan_values(decoded.data), ()
    per_layer = [_scan_values(layer) for layer in np.moveaxis(decoded.data, decoded.layer_axis, 0)]
    bad = next((s for s in per_layer if not s.integer_valued), None)
    if bad is not None:
        return bad, ()
    union = sorted(set().union(*(s.values for s in per_layer)))
    capped = len(union) > MAX_VALUES or any(s.capped for s in per_layer)
    scan = _Scan(True, tuple(union[:MAX_VALUES]), capped)
    return scan, tuple(s.values for s in per_layer)


def _scan_values(data: NDArray) -> _Scan:
    """Whether every value is an integer, and the sorted distinct values if so."""
    if data.dtype.kind == "b":
        data = data.view(np.uint8)
    if data.dtype.kind not in "iuf":
        return _Scan(False)
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    flat = np.ravel(data, order="K")
    if flat.dtype.kind == "f":
        example = _non_integer_example(flat)
        if example is not None:
            return _Scan(False, example=example)
        if flat.size and not np.isfinite(edge := max(flat.min(), flat.max(), key=abs)):
            return _Scan(False, example=float(edge))  # ±inf: rint(inf) == inf
    values, capped = _distinct_values(flat)
    return _Scan(True, values, capped)


def _non_integer_example(flat: NDArray) -> float | None:
    """One value that is not an integer (a finite one when there is one), else None."""
    fallback: float | None = None
    for i in range(0, flat.size, _SCAN_STEP):
        chunk = flat[i : i + _SCAN_STEP]
        bad = chunk[np.rint(chunk) != chunk]  # NaN compares unequal: caught too
        if bad.size:
            finite = bad[np.isfinite(bad)]
            if finite.size:
                return float(finite[0])
            fallback = float(bad[0]) if fallback is None else fallback
    return fallback


def _distinct_values(flat: NDArray) -> tuple[tuple[int, ...], bool]:
    """Sorted distinct values of an integer-valued array, at most MAX_VALUES of them."""
    if flat.size == 0:
        return (), False
    lo, hi = int(flat.min()), int(flat.max())
    small = hi - lo < _BINCOUNT_RANGE
    found = _bincount_values(flat, lo, hi) if small else np.unique(flat)
    capped = found.size > MAX_VALUES
    return tuple(int(v) for v in found[:MAX_VALUES]), capped


def _bincount_values(flat: NDArray, lo: int, hi: int) -> NDArray:
    """Distinct values by counting: faster than np.unique on a small value range.

    Works a step at a time so the shifted intp copy stays in cache.
    """
    counts = np.zeros(hi - lo + 1, dtype=np.int64)
    shifted = np.empty(min(_SCAN_STEP, flat.size), dtype=np.intp)
    for i in range(0, flat.size, _SCAN_STEP):
        chunk = flat[i : i + _SCAN_STEP]
        out = shifted[: chunk.size]
        np.subtract(chunk, lo, out=out, casting="unsafe")
        counts += np.bincount(out, minlength=counts.size)
    found: NDArray = np.flatnonzero(counts) + lo
    return found


# --------------------------------------------------------------------------- problems


def label_problems(path: str, report: ContentReport, labels: Mapping[int, str]) -> list[Problem]:
    """The problems a content report shows for the file at ``path``; each message
    starts with the path, as every problem's message does."""
    return [
        p._replace(message=f"{path}: {p.message}") for p in _label_problems(path, report, labels)
    ]


def _label_problems(path: str, report: ContentReport, labels: Mapping[int, str]) -> list[Problem]:
    files = (path,)
    if report.error is not None:
        kind = report.error_kind or "corrupt"
        return [make_problem(kind, files, report.error, {"reason": report.error})]
    if report.role != "segmentation":
        return []
    if not report.integer_valued:
        return [_non_integer_problem(files, report)]
    problems = []
    if labels and (p := _unknown_label_problem(files, report, labels)):
        problems.append(p)
    if not any(report.values):
        problems.append(_only_background_problem(files, report))
    if report.segments and (p := _segment_problem(files, report)):
        problems.append(p)
    return problems


def _non_integer_problem(files: tuple[str, ...], report: ContentReport) -> Problem:
    example = report.non_integer_example
    eg = f", e.g. {example!r}" if example is not None else ""
    return make_problem(
        "non_integer_labels",
        files,
        f"segmentation holds non-integer values ({report.dtype}{eg})",
        {"dtype": report.dtype, "example": _float_out(example)},
    )


def _unknown_label_problem(
    files: tuple[str, ...], report: ContentReport, labels: Mapping[int, str]
) -> Problem | None:
    unexpected = [v for v in report.values if v not in labels]
    if not unexpected:
        return None
    label_set = ", ".join(f"{k}: {labels[k]}" for k in sorted(labels))
    word = "value" if len(unexpected) == 1 else "values"
    more = f" (only the first {MAX_VALUES} distinct values checked)" if report.values_capped else ""
    return make_problem(
        "unknown_label",
        files,
        f"{word} {_join(unexpected)} not in label set {{{label_set}}}{more}",
        {"unexpected": unexpected, "declared": sorted(labels), "capped": report.values_capped},
    )


def _only_background_problem(files: tuple[str, ...], report: ContentReport) -> Problem:
    text = "every voxel is 0" if report.values else "the image holds no voxels"
    return make_problem(
        "only_background",
        files,
        f"segmentation holds background only ({text})",
        {"values": list(report.values), "shape": list(report.shape)},
    )


def _segment_problem(files: tuple[str, ...], report: ContentReport) -> Problem | None:
    missing, undeclared = _segment_mismatches(report)
    if not missing and not undeclared:
        return None
    layered = bool(report.layer_values)
    parts = [
        f"segment {name!r} declares label {label}{_in_layer(layer, layered)} but no voxel holds it"
        for name, label, layer in missing
    ]
    parts += [
        f"voxel value {value}{_in_layer(layer, layered)} is declared by no segment"
        for value, layer in undeclared
    ]
    details = {
        "missing": [{"segment": n, "label": v, "layer": la} for n, v, la in missing],
        "undeclared": [{"value": v, "layer": la} for v, la in undeclared],
    }
    return make_problem("segment_labels", files, "; ".join(parts), details)


def _segment_mismatches(
    report: ContentReport,
) -> tuple[list[tuple[str, int, int]], list[tuple[int, int]]]:
    """Declared labels absent from their layer, and layer values no segment declares."""
    layers = report.layer_values or (report.values,)
    seg_layers = report.segment_layers or (0,) * len(report.segments)
    declared: dict[int, set[int]] = {}
    missing = []
    for (name, label), layer in zip(report.segments, seg_layers, strict=True):
        declared.setdefault(layer, set()).add(label)
        present = layers[layer] if 0 <= layer < len(layers) else ()
        if label not in present:
            missing.append((name, label, layer))
    undeclared = [
        (value, layer)
        for layer, values in enumerate(layers)
        for value in values
        if value != 0 and value not in declared.get(layer, set())
    ]
    return missing, undeclared


def _in_layer(layer: int, layered: bool) -> str:
    return f" in layer {layer}" if layered else ""


def _join(values: list[int], limit: int = 20) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


# --------------------------------------------------------------------------- cache


class ContentCache:
    """SQLite cache of ContentReport by (content hash, role, ANALYSIS_VERSION).

    Safe to share between threads. A row that no longer parses is a miss; a file
    that is not an SQLite database is replaced (the cache holds nothing else).
    """

    def __init__(self, db_path: Path) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = self._open(db_path)
        except sqlite3.DatabaseError:  # not a database (any more): the cache is rebuilt
            db_path.unlink()
            self._db = self._open(db_path)

    @staticmethod
    def _open(db_path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(db_path, timeout=30, check_same_thread=False)
        try:
            with db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS content (hash TEXT NOT NULL, role TEXT NOT NULL, "
                    "version INTEGER NOT NULL, report TEXT NOT NULL, "
                    "PRIMARY KEY (hash, role, version))"
                )
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def get(self, content_hash: str, role: str) -> ContentReport | None:
        with self._lock:
            row = self._db.execute(
                "SELECT report FROM content WHERE hash = ? AND role = ? AND version = ?",
                (content_hash, role, ANALYSIS_VERSION),
            ).fetchone()
        if row is None:
            return None
        try:
            report = ContentReport.from_json(json.loads(row[0]))
        except (ValueError, TypeError, KeyError):
            return None
        return report if report.role == role else None

    def put(self, content_hash: str, role: str, report: ContentReport) -> None:
        text = json.dumps(report.to_json(), separators=(",", ":"), allow_nan=False)
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO content VALUES (?, ?, ?, ?)",
                (content_hash, role, ANALYSIS_VERSION, text),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ContentCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
