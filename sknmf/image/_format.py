"""The bytes of an sknmf image file: layout, writing, parsing and checking.

This module owns the file format and nothing else: the header and plane records,
the LZMA payload, the CRC, and the checks that turn damaged or foreign bytes
into a ``ValueError`` before anything is allocated. Arrays only enter as byte
layout (``tobytes``/``frombuffer``); the maths of a plane (atoms, codes,
colour) lives in :mod:`sknmf.image._quantise`, :mod:`sknmf.image._colour` and
:mod:`sknmf.image._codec`.

File layout (all integers little-endian, version 1)::

    magic   8 bytes   b"\\x89SKNMF\\r\\n"
    version u8        1
    flags   u8        bit 0: codes stored patch by patch (else atom by atom)
    hlen    u16       length of the header block
    header  hlen      image shape, colour transform, one record per plane
    plen    u32       length of the payload
    payload plen      one raw LZMA2 stream: every plane's dictionary and codes
    crc32   u32       CRC-32 of every byte before it

A plane record holds the plane's geometry (chroma subsampling, patch size), the
number of components (and the layer sizes of a deep factorisation, for the
record), the code width and the quantisation step. In the payload an NMF plane
is its uint8 dictionary (``n_components x patch pixels``, atom by atom), one
float32 scale per atom, then the codes (uint8, or uint16 above 8 bits); a
lossless plane (alpha) is its uint8 pixels. :func:`parse` checks the checksum
first and every header field against hard limits before it allocates anything.
"""

from __future__ import annotations

import lzma
import math
import numbers
import struct
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = [
    "COLORS",
    "DEFAULT_MAX_PIXELS",
    "FLAG_PATCH_MAJOR",
    "KIND_NMF",
    "KIND_RAW",
    "MAGIC",
    "MAX_COMPONENTS",
    "MAX_LAYERS",
    "MAX_PATCH",
    "MAX_PIXELS",
    "MAX_SIDE",
    "VERSION",
    "WORK_PER_PIXEL",
    "DecompressionBombError",
    "Plane",
    "check_budget",
    "decode_work",
    "inflate",
    "lzma_filters",
    "n_patches",
    "pack",
    "parse",
    "plane_raw_size",
    "plane_shape",
    "read_planes",
]

MAGIC = b"\x89SKNMF\r\n"
VERSION = 1
# Limits a header must respect; checked before any allocation.
MAX_SIDE = 1 << 16
MAX_PIXELS = 1 << 28
MAX_COMPONENTS = 4096
MAX_PATCH = 64
MAX_LAYERS = 16

# The decoder's budget (see check_budget). The format allows 2**28 pixels, and a
# file of a few KB may declare them. Decoding holds about 5 bytes per pixel of a
# gray image, 7 of an RGB one and 24 of a YCbCr one (its three float32 planes,
# two temporaries and the result): at the default of 2**25 pixels (an 8K UHD
# frame, 7680x4320, fits; 8192x8192 does not) a decode peaks at about 0.8 GB.
# Decoding multiplies every patch's codes by the atoms: patches x atoms x patch
# pixels multiply-adds, which a file may make thousands per pixel. The codec's
# heaviest quality setting needs 192 per pixel (three planes of 64 atoms of 8x8
# patches), so 256 per budgeted pixel is allowed.
DEFAULT_MAX_PIXELS = 1 << 25
WORK_PER_PIXEL = 256

# Colour transform ids as stored; "gray" is the only one of a 1-channel image.
COLORS = {"gray": 0, "rgb": 1, "ycbcr": 2}
_COLOR_NAMES = {v: k for k, v in COLORS.items()}
KIND_NMF, KIND_RAW = 0, 1
FLAG_PATCH_MAJOR = 1  # codes stored patch by patch instead of atom by atom

_PREFIX = struct.Struct("<8sBBH")
_IMAGE = struct.Struct("<IIBBBB")  # h, w, channels, channel axis, colour, n_planes
_PLANE = struct.Struct("<BBBBHBBf")  # kind, sub, ph, pw, K, bits, n_layers, step
_LAYER = struct.Struct("<H")
_U32 = struct.Struct("<I")


class DecompressionBombError(ValueError):
    """A valid file whose decoding would exceed the caller's budget.

    Raised by :func:`sknmf.image.decompress` and :func:`sknmf.image.load` before
    anything is allocated, when the header declares more pixels than
    ``max_pixels``, or more decoding work (patches x atoms x patch pixels) than
    256 multiply-adds per pixel of ``max_pixels``. It is a ``ValueError``, like
    every refusal of the decoder; pass a larger ``max_pixels`` (or ``None``) to
    decode a file you trust.

    Examples
    --------
    >>> import numpy as np
    >>> from sknmf.image import DecompressionBombError, compress, decompress
    >>> data = compress(np.zeros((64, 64), dtype=np.uint8))
    >>> try:
    ...     decompress(data, max_pixels=1000)
    ... except DecompressionBombError as exc:
    ...     print(exc)
    the file declares a 64x64 image (4096 pixels), more than max_pixels=1000; ...
    >>> decompress(data, max_pixels=4096).shape
    (64, 64)
    """


@dataclass(frozen=True)
class Plane:
    """One plane record of the header.

    ``kind`` is :data:`KIND_NMF` or :data:`KIND_RAW` (lossless uint8 pixels);
    ``sub`` the subsampling factor per side; ``ph``, ``pw`` the patch size;
    ``layers`` the layer sizes of a deep factorisation (empty for one layer);
    ``step`` the quantisation step of the codes.
    """

    kind: int
    sub: int
    ph: int
    pw: int
    n_components: int
    bits: int
    layers: tuple
    step: float

    @property
    def code_bytes(self) -> int:
        """Bytes per stored code: 1 up to 8 bits, else 2."""
        return 1 if self.bits <= 8 else 2


def lzma_filters(raw_size: int) -> list:
    """The LZMA2 filter chain of a payload that inflates to ``raw_size`` bytes."""
    # The dictionary size follows from the payload size, which the decoder knows
    # from the header: no need to store it, and a small file never makes the
    # decoder reserve 64 MiB.
    dict_size = min(max(raw_size, 1 << 12), 1 << 26)
    return [{"id": lzma.FILTER_LZMA2, "preset": 9, "dict_size": dict_size}]


def plane_shape(rec: Plane, h: int, w: int) -> tuple[int, int]:
    """Shape of the (subsampled) plane that ``rec`` describes in an ``h x w`` image."""
    return -(-h // rec.sub), -(-w // rec.sub)


def n_patches(rec: Plane, h: int, w: int) -> int:
    """Number of patches (rows of codes) of an NMF plane; edges padded up."""
    ph, pw = plane_shape(rec, h, w)
    return -(-ph // rec.ph) * -(-pw // rec.pw)


def plane_raw_size(rec: Plane, h: int, w: int) -> int:
    """Bytes of one plane in the inflated payload."""
    if rec.kind == KIND_RAW:
        return h * w
    d = rec.ph * rec.pw
    # uint8 dictionary + one float32 scale per atom + the codes.
    return rec.n_components * (d + 4) + n_patches(rec, h, w) * rec.n_components * (
        rec.code_bytes
    )


# --------------------------------------------------------------------------- #
# Writing
# --------------------------------------------------------------------------- #


def _plane_bytes(rec: Plane, arrays, flags: int) -> bytes:
    if rec.kind == KIND_RAW:
        return np.ascontiguousarray(arrays, dtype=np.uint8).tobytes()
    q, scale, codes = arrays
    codes = np.asarray(codes, dtype="<u1" if rec.code_bytes == 1 else "<u2")
    # Codes patch by patch (flag set) or atom by atom.
    layout = codes if flags & FLAG_PATCH_MAJOR else codes.T
    return (
        np.ascontiguousarray(q, dtype=np.uint8).tobytes()
        + np.asarray(scale, dtype="<f4").tobytes()
        + np.ascontiguousarray(layout).tobytes()
    )


def pack(shape: tuple, color: str, planes: list) -> bytes:
    """The bytes of a file: header, LZMA payload and checksum.

    Parameters
    ----------
    shape : tuple of int
        Image shape, ``(h, w)`` or ``(h, w, channels)``.
    color : {"gray", "rgb", "ycbcr"}
        Colour transform of the planes.
    planes : list of (Plane, arrays)
        One entry per plane, in file order. ``arrays`` is the ``(h, w)`` uint8
        image of a lossless plane, or ``(q, scale, codes)`` for an NMF plane:
        the uint8 dictionary ``(n_components, ph * pw)``, its float32 scales
        ``(n_components,)`` and the integer codes ``(n_patches, n_components)``.

    Returns
    -------
    data : bytes
        The file.
    """
    h, w = shape[:2]
    has_axis = len(shape) == 3
    n_channels = shape[2] if has_axis else 1
    header = _IMAGE.pack(h, w, n_channels, int(has_axis), COLORS[color], len(planes))
    for rec, _ in planes:
        header += _PLANE.pack(
            rec.kind,
            rec.sub,
            rec.ph,
            rec.pw,
            rec.n_components,
            rec.bits,
            len(rec.layers),
            rec.step,
        )
        header += b"".join(_LAYER.pack(s) for s in rec.layers)
    # Codes atom by atom or patch by patch: which one LZMA packs better depends
    # on the image (a few percent either way), so both are tried.
    candidates = []
    for flags in (0, FLAG_PATCH_MAJOR):
        raw = b"".join(_plane_bytes(rec, arrays, flags) for rec, arrays in planes)
        filters = lzma_filters(len(raw))
        payload = lzma.compress(raw, format=lzma.FORMAT_RAW, filters=filters)
        candidates.append((len(payload), flags, payload))
    _, flags, payload = min(candidates)
    body = _PREFIX.pack(MAGIC, VERSION, flags, len(header)) + header
    body += _U32.pack(len(payload)) + payload
    return body + _U32.pack(zlib.crc32(body))


# --------------------------------------------------------------------------- #
# Parsing
# --------------------------------------------------------------------------- #


def parse(data) -> dict:
    """Check a file and read its header.

    Parameters
    ----------
    data : bytes-like
        A compressed image: any object of the buffer protocol (bytes,
        bytearray, memoryview, a numpy uint8 array...).

    Returns
    -------
    info : dict
        The public header (the keys :func:`sknmf.image.read_header` returns)
        and, under keys starting with ``_``, what decoding needs: ``_planes``
        (the :class:`Plane` records), ``_payload``, ``_raw_size``, ``_flags``.

    Raises
    ------
    TypeError
        If ``data`` is not bytes-like (a buffer of 1-byte items).
    ValueError
        If ``data`` is truncated, damaged (checksum), foreign (magic), from a
        newer format version, or describes impossible dimensions.
    """
    try:
        # Any buffer of bytes: bytes, bytearray, memoryview, mmap, a uint8 array.
        view = memoryview(data)
    except TypeError:
        view = None
    if view is None or view.itemsize != 1:
        what = type(data).__name__
        if view is not None:
            what += f" of {view.itemsize}-byte items (format {view.format!r})"
        raise TypeError(
            "data must be bytes-like (bytes, bytearray, memoryview, a uint8 "
            f"ndarray); got {what}."
        )
    data = view.tobytes()
    if len(data) < _PREFIX.size + 8:
        raise ValueError(
            f"not an sknmf image: {len(data)} bytes is shorter than the smallest file."
        )
    magic, version, flags, hlen = _PREFIX.unpack_from(data, 0)
    if magic != MAGIC:
        raise ValueError("not an sknmf image: the file does not start with the magic.")
    if version != VERSION:
        raise ValueError(
            f"unsupported sknmf image version {version}; this sknmf reads version "
            f"{VERSION}."
        )
    (crc,) = _U32.unpack_from(data, len(data) - 4)
    if zlib.crc32(data[:-4]) != crc:
        raise ValueError(
            "corrupt sknmf image: checksum mismatch (truncated or damaged)."
        )
    if flags & ~FLAG_PATCH_MAJOR:
        raise ValueError(f"corrupt sknmf image: unknown flags {flags:#x}.")
    pos = _PREFIX.size
    end_header = pos + hlen
    if end_header + 4 > len(data) - 4:
        raise ValueError("corrupt sknmf image: header length exceeds the file.")
    header = data[pos:end_header]
    if len(header) < _IMAGE.size:
        raise ValueError("corrupt sknmf image: header too short.")
    h, w, n_channels, has_axis, color, n_planes = _IMAGE.unpack_from(header, 0)
    if not (1 <= h < MAX_SIDE and 1 <= w < MAX_SIDE and h * w <= MAX_PIXELS):
        raise ValueError(
            f"corrupt sknmf image: the header claims {h}x{w} pixels (sides must be "
            f"1-{MAX_SIDE - 1}, at most {MAX_PIXELS} pixels)."
        )
    if n_channels not in (1, 3, 4) or has_axis not in (0, 1):
        raise ValueError(f"corrupt sknmf image: {n_channels} channels is invalid.")
    if n_channels > 1 and not has_axis:
        raise ValueError("corrupt sknmf image: colour image without a channel axis.")
    if color not in _COLOR_NAMES or (color == 0) != (n_channels == 1):
        raise ValueError(f"corrupt sknmf image: colour transform {color} is invalid.")
    expected_planes = {1: 1, 3: 3, 4: 4}[n_channels]
    if n_planes != expected_planes:
        raise ValueError(
            f"corrupt sknmf image: {n_planes} planes for {n_channels} channel(s)."
        )
    planes, off = [], _IMAGE.size
    for index in range(n_planes):
        if off + _PLANE.size > len(header):
            raise ValueError("corrupt sknmf image: plane records are truncated.")
        kind, sub, ph, pw, k, bits, n_layers, step = _PLANE.unpack_from(header, off)
        off += _PLANE.size
        if off + n_layers * _LAYER.size > len(header) or n_layers > MAX_LAYERS:
            raise ValueError("corrupt sknmf image: layer sizes are truncated.")
        layers = tuple(
            _LAYER.unpack_from(header, off + i * _LAYER.size)[0]
            for i in range(n_layers)
        )
        off += n_layers * _LAYER.size
        rec = Plane(kind, sub, ph, pw, k, bits, layers, step)
        _check_plane(rec, index, n_channels)
        planes.append(rec)
    if off != len(header):
        raise ValueError("corrupt sknmf image: header has trailing bytes.")
    (plen,) = _U32.unpack_from(data, end_header)
    start = end_header + 4
    if start + plen != len(data) - 4:
        raise ValueError(
            "corrupt sknmf image: payload length does not match the file size."
        )
    raw_size = sum(plane_raw_size(r, h, w) for r in planes)
    if raw_size > 4 * MAX_PIXELS:
        raise ValueError("corrupt sknmf image: the header describes too much data.")
    shape = (h, w, n_channels) if has_axis else (h, w)
    return {
        "version": version,
        "shape": shape,
        "n_channels": n_channels,
        "color": _COLOR_NAMES[color],
        "n_bytes": len(data),
        "bits_per_pixel": 8.0 * len(data) / (h * w),
        "planes": [
            {
                "kind": "nmf" if r.kind == KIND_NMF else "lossless",
                "subsampling": r.sub,
                "patch_size": (r.ph, r.pw),
                "n_components": r.n_components,
                "layers": r.layers or (r.n_components,),
                "code_bits": r.bits,
                "step": r.step,
            }
            for r in planes
        ],
        "_planes": planes,
        "_payload": data[start : start + plen],
        "_raw_size": raw_size,
        "_flags": flags,
    }


def read_header(data) -> dict:
    """Read and check the header of a compressed image, without decoding it.

    Parameters
    ----------
    data : bytes-like
        A compressed image.

    Returns
    -------
    header : dict
        ``version``, ``shape``, ``n_channels``, ``color``, ``n_bytes``,
        ``bits_per_pixel`` and ``planes`` (one dict per plane: ``kind``,
        ``subsampling``, ``patch_size``, ``n_components``, ``layers``,
        ``code_bits``, ``step``).

    Raises
    ------
    ValueError
        As :func:`decompress`, for anything that is not a valid file.

    See Also
    --------
    sknmf.image.decompress : Decode the image.

    Examples
    --------
    >>> import numpy as np
    >>> from sknmf.image import compress, read_header
    >>> header = read_header(compress(np.zeros((8, 24), dtype=np.uint8)))
    >>> header["shape"], header["color"]
    ((8, 24), 'gray')
    """
    info = parse(data)
    return {k: v for k, v in info.items() if not k.startswith("_")}


def _check_plane(rec: Plane, index: int, n_channels: int) -> None:
    where = f"corrupt sknmf image: plane {index}"
    alpha = n_channels == 4 and index == 3
    if alpha:
        if rec.kind != KIND_RAW or (rec.sub, rec.n_components, rec.bits) != (1, 0, 8):
            raise ValueError(f"{where} (alpha) must be stored losslessly.")
        return
    if rec.kind != KIND_NMF:
        raise ValueError(f"{where} has unknown kind {rec.kind}.")
    if rec.sub not in (1, 2) or (index == 0 and rec.sub != 1):
        raise ValueError(f"{where} has invalid subsampling {rec.sub}.")
    if not (1 <= rec.ph <= MAX_PATCH and 1 <= rec.pw <= MAX_PATCH):
        raise ValueError(f"{where} has invalid patch size {rec.ph}x{rec.pw}.")
    if not 1 <= rec.n_components <= min(MAX_COMPONENTS, rec.ph * rec.pw):
        raise ValueError(f"{where} has invalid n_components {rec.n_components}.")
    if not 2 <= rec.bits <= 16:
        raise ValueError(f"{where} has invalid code width of {rec.bits} bits.")
    if not (math.isfinite(rec.step) and rec.step > 0):
        raise ValueError(f"{where} has invalid quantisation step {rec.step}.")
    if rec.layers and (
        rec.layers[-1] != rec.n_components
        or any(b > a for a, b in zip(rec.layers, rec.layers[1:]))
    ):
        raise ValueError(f"{where} has inconsistent layer sizes {rec.layers}.")


def decode_work(info: dict) -> int:
    """Multiply-adds of decoding a parsed file: patches x atoms x patch pixels.

    Summed over the NMF planes; it also bounds the memory of the dictionaries
    (atoms x patch pixels) and of the codes (patches x atoms), which the header
    alone fixes.
    """
    h, w = info["shape"][:2]
    return sum(
        n_patches(rec, h, w) * rec.n_components * rec.ph * rec.pw
        for rec in info["_planes"]
        if rec.kind == KIND_NMF
    )


def check_budget(info: dict, max_pixels) -> None:
    """Refuse a parsed file that costs more than ``max_pixels`` allows.

    Parameters
    ----------
    info : dict
        What :func:`parse` returned: only the header is read, nothing is
        allocated.
    max_pixels : int or None
        The most pixels the image may have; its decoding work may be at most
        :data:`WORK_PER_PIXEL` multiply-adds per pixel of this budget. ``None``
        disables both checks.

    Raises
    ------
    DecompressionBombError
        If the file declares more pixels or work than the budget.
    TypeError, ValueError
        If ``max_pixels`` is neither ``None`` nor a positive int.
    """
    if max_pixels is None:
        return
    if not isinstance(max_pixels, numbers.Integral) or isinstance(max_pixels, bool):
        raise TypeError(
            f"max_pixels must be a positive int or None; got {max_pixels!r}."
        )
    if max_pixels < 1:
        raise ValueError(
            f"max_pixels must be a positive int or None; got {max_pixels}."
        )
    h, w = info["shape"][:2]
    if h * w > max_pixels:
        raise DecompressionBombError(
            f"the file declares a {h}x{w} image ({h * w} pixels), more than "
            f"max_pixels={max_pixels}; pass a larger max_pixels, or None, to decode "
            "a file you trust."
        )
    work = decode_work(info)
    if work > WORK_PER_PIXEL * max_pixels:
        raise DecompressionBombError(
            f"decoding the file takes {work} multiply-adds (patches x atoms x patch "
            f"pixels), more than {WORK_PER_PIXEL} per pixel of max_pixels="
            f"{max_pixels}; pass a larger max_pixels, or None, to decode a file you "
            "trust."
        )


def inflate(payload: bytes, raw_size: int) -> bytes:
    """Decode the LZMA payload; it must hold exactly ``raw_size`` bytes."""
    decoder = lzma.LZMADecompressor(
        format=lzma.FORMAT_RAW, filters=lzma_filters(raw_size)
    )
    try:
        raw = decoder.decompress(payload, max_length=raw_size + 1)
    except lzma.LZMAError as exc:
        raise ValueError(
            f"corrupt sknmf image: payload does not decode ({exc})."
        ) from exc
    if len(raw) == raw_size and not (decoder.eof and not decoder.unused_data):
        raise ValueError("corrupt sknmf image: the payload does not end cleanly.")
    if len(raw) != raw_size:
        raise ValueError(
            f"corrupt sknmf image: payload holds {len(raw)} bytes, the header "
            f"describes {raw_size}."
        )
    return raw


def read_planes(info: dict) -> list:
    """The stored arrays of every plane of a parsed file, checked.

    Parameters
    ----------
    info : dict
        What :func:`parse` returned.

    Returns
    -------
    planes : list
        Per plane, in file order, the ``(h, w)`` uint8 pixels of a lossless
        plane, or ``(q, scale, codes)`` of an NMF plane: the uint8 dictionary
        ``(n_components, ph * pw)``, the float32 scales ``(n_components,)`` and
        the integer codes ``(n_patches, n_components)`` (read-only views).

    Raises
    ------
    ValueError
        If the payload does not decode, a scale is not a finite nonnegative
        float or a code exceeds the record's code width.
    """
    h, w = info["shape"][:2]
    raw = inflate(info["_payload"], info["_raw_size"])
    patch_major = info["_flags"] & FLAG_PATCH_MAJOR
    out, offset = [], 0
    for rec in info["_planes"]:
        chunk = raw[offset : offset + plane_raw_size(rec, h, w)]
        offset += len(chunk)
        if rec.kind == KIND_RAW:
            out.append(np.frombuffer(chunk, dtype=np.uint8).reshape(h, w))
            continue
        k, d, n = rec.n_components, rec.ph * rec.pw, n_patches(rec, h, w)
        q = np.frombuffer(chunk, dtype=np.uint8, count=k * d).reshape(k, d)
        scale = np.frombuffer(chunk, dtype="<f4", count=k, offset=k * d)
        dtype = "<u1" if rec.code_bytes == 1 else "<u2"
        codes = np.frombuffer(chunk, dtype=dtype, count=k * n, offset=k * (d + 4))
        if not np.all(np.isfinite(scale)) or np.any(scale < 0):
            raise ValueError("corrupt sknmf image: a dictionary scale is invalid.")
        if codes.size and int(codes.max()) >= 1 << rec.bits:
            raise ValueError(
                f"corrupt sknmf image: a code exceeds its {rec.bits}-bit range."
            )
        codes = codes.reshape(n, k) if patch_major else codes.reshape(k, n).T
        out.append((q, scale.astype(np.float32), codes))
    return out
