"""The sknmf image codec: NMF of image patches, quantised and entropy coded.

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
record), the code width and the quantisation step. ``decompress`` checks the
checksum first and every header field against hard limits before it allocates
anything, so damaged or foreign bytes end in a ``ValueError``.
"""

from __future__ import annotations

import lzma
import numbers
import os
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from sknmf._utils import seed_from_random_state
from sknmf.image._patches import ImagePatches

__all__ = ["compress", "decompress", "load", "read_header", "save"]

MAGIC = b"\x89SKNMF\r\n"
VERSION = 1
# Limits a header must respect; checked before any allocation.
MAX_SIDE = 1 << 16
MAX_PIXELS = 1 << 28
MAX_COMPONENTS = 4096
MAX_PATCH = 64
MAX_LAYERS = 16

# Encoder budget: dictionary iterations, patches it is fitted on (at least
# _ROWS_PER_ATOM per atom), code sweeps. With DeepNMF's HALS solver, 200
# iterations on 2048 patches of a photo come within about 0.1 dB (after the code
# re-fit) of 200 iterations on twice as many, in about 60% of the time.
_FIT_ITER = 200
_MIN_FIT_ROWS = 2048
_ROWS_PER_ATOM = 32
_CODE_ITER = 60
_CODE_RANGE_PCT = 99.9

_COLORS = {"gray": 0, "rgb": 1, "ycbcr": 2}
_COLOR_NAMES = {v: k for k, v in _COLORS.items()}
_KIND_NMF, _KIND_RAW = 0, 1
_FLAG_PATCH_MAJOR = 1  # codes stored patch by patch instead of atom by atom

_PREFIX = struct.Struct("<8sBBH")
_IMAGE = struct.Struct("<IIBBBB")  # h, w, channels, channel axis, colour, n_planes
_PLANE = struct.Struct("<BBBBHBBf")  # kind, sub, ph, pw, K, bits, n_layers, step
_LAYER = struct.Struct("<H")

# Settings picked by ``quality``: (quality, luma components, chroma components,
# code bits). The points lie on the upper convex hull of PSNR against bpp over a
# grid (components 4-64, chroma 1/4-1/2 of them, 3-8 bits) averaged over
# scikit-image's sample photos astronaut, coffee and chelsea, never the images
# the tests and the demo measure, with the default DeepNMF budget. A quality
# between two rows takes the nearer one.
_QUALITY_TABLE = (
    (1, 4, 1, 3),
    (10, 4, 1, 4),
    (20, 4, 1, 5),
    (30, 8, 4, 5),
    (40, 12, 4, 5),
    (50, 16, 5, 5),
    (60, 24, 6, 5),
    (70, 24, 6, 6),
    (75, 32, 10, 6),
    (80, 48, 16, 6),
    (90, 48, 24, 7),
    (95, 64, 32, 7),
    (100, 64, 32, 8),
)


@dataclass(frozen=True)
class _Plane:
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
        return 1 if self.bits <= 8 else 2


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #


def compress(
    image,
    *,
    quality=75,
    n_components=None,
    chroma_components=None,
    patch_size=None,
    bits=None,
    color="ycbcr",
    subsampling=2,
    estimator=None,
    random_state=0,
) -> bytes:
    """Compress a uint8 image with a per-image NMF dictionary.

    Each plane (Y, Cb, Cr after the colour transform; chroma at half resolution
    by default) is cut into patches, factorised as ``codes @ dictionary`` with
    :class:`sknmf.DeepNMF` (fitted on a sample of the patches), the dictionary
    is stored in 8 bits per entry, the codes of every patch are fitted to that
    stored dictionary and quantised on a uniform ``bits``-bit grid (one atom at a
    time, the others re-fitted to absorb the error), and everything is
    LZMA-coded. The file is self-contained: :func:`decompress` needs nothing
    else.

    Parameters
    ----------
    image : array-like of uint8, shape (h, w), (h, w, 1), (h, w, 3) or (h, w, 4)
        Grayscale, RGB or RGBA image. Alpha is stored losslessly.
    quality : int, default=75
        1-100, higher gives larger files and better images (like JPEG's). It
        picks ``n_components``, ``chroma_components`` and ``bits``; explicit
        values of those override it.
    n_components : int or tuple of int, default=None
        Components of the luma (or gray/RGB) planes. A non-increasing tuple
        ``(r1, ..., rL)`` fits a deep NMF; its last layer gives the codes. Capped
        at the pixels of a patch and the number of patches.
    chroma_components : int or tuple of int, default=None
        Components of the Cb and Cr planes; ``None`` picks a value from
        ``quality`` (or a quarter of the last layer of ``n_components`` when given).
    patch_size : int, default=None
        Square patch side; ``None`` means 8.
    bits : int, default=None
        Bits per quantised code, 2-16; ``None`` picks from ``quality``.
    color : {"ycbcr", "rgb"}, default="ycbcr"
        Colour transform of RGB(A) images. Ignored for grayscale.
    subsampling : {1, 2}, default=2
        Chroma subsampling factor per side with ``color="ycbcr"`` (2 is JPEG's
        4:2:0).
    estimator : estimator, default=None
        The factoriser: any unfitted estimator with ``n_components``,
        ``fit`` and ``components_``, e.g. a configured :class:`sknmf.DeepNMF` or
        :class:`sklearn.decomposition.NMF`. It is cloned per plane with
        ``n_components`` set. ``None`` uses a fast float32 :class:`sknmf.DeepNMF`.
    random_state : int, RandomState instance or None, default=0
        Seed of the default estimator (the codec is deterministic by default).

    Returns
    -------
    data : bytes
        The compressed image.

    See Also
    --------
    decompress : The way back.
    save : Compress to a file.
    sknmf.image.bits_per_pixel : Rate of the result.

    Examples
    --------
    >>> import numpy as np
    >>> from sknmf.image import compress, decompress
    >>> rng = np.random.default_rng(0)
    >>> image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    >>> data = compress(image, quality=50)
    >>> decompress(data).shape
    (32, 48, 3)
    """
    image = _check_image(image)
    settings = _settings(quality, n_components, chroma_components, bits, patch_size)
    luma_k, chroma_k, bits, patch = settings
    if color not in ("ycbcr", "rgb"):
        raise ValueError(f"color must be 'ycbcr' or 'rgb'; got {color!r}.")
    if subsampling not in (1, 2) or isinstance(subsampling, bool):
        raise ValueError(f"subsampling must be 1 or 2; got {subsampling!r}.")

    h, w = image.shape[:2]
    has_axis = image.ndim == 3
    n_channels = image.shape[2] if has_axis else 1
    if n_channels == 1:
        color_id = _COLORS["gray"]
        planes = [(image.reshape(h, w).astype(np.float32), luma_k, 1)]
    else:
        rgb = image[..., :3]
        color_id = _COLORS[color]
        if color == "ycbcr":
            ycc = _rgb_to_ycbcr(rgb)
            planes = [(ycc[..., 0], luma_k, 1)] + [
                (ycc[..., i], chroma_k, subsampling) for i in (1, 2)
            ]
        else:
            planes = [(rgb[..., i].astype(np.float32), luma_k, 1) for i in range(3)]

    records, parts = [], []
    for index, (plane, k, sub) in enumerate(planes):
        record, part = _encode_plane(
            plane, k, sub, patch, bits, estimator, random_state, index
        )
        records.append(record)
        parts.append(part)
    if n_channels == 4:
        records.append(_Plane(_KIND_RAW, 1, 1, 1, 0, 8, (), 0.0))
        parts.append((np.ascontiguousarray(image[..., 3]).tobytes(), None))

    header = _IMAGE.pack(h, w, n_channels, int(has_axis), color_id, len(records))
    for r in records:
        header += _PLANE.pack(
            r.kind,
            r.sub,
            r.ph,
            r.pw,
            r.n_components,
            r.bits,
            len(r.layers),
            r.step,
        )
        header += b"".join(_LAYER.pack(s) for s in r.layers)
    # Codes atom by atom or patch by patch: which one LZMA packs better depends
    # on the image (a few percent either way), so both are tried.
    candidates = []
    for flags in (0, _FLAG_PATCH_MAJOR):
        raw = b"".join(
            head + (b"" if codes is None else _code_bytes(codes, flags))
            for head, codes in parts
        )
        filters = _filters(len(raw))
        payload = lzma.compress(raw, format=lzma.FORMAT_RAW, filters=filters)
        candidates.append((len(payload), flags, payload))
    _, flags, payload = min(candidates)
    body = _PREFIX.pack(MAGIC, VERSION, flags, len(header)) + header
    body += struct.pack("<I", len(payload)) + payload
    return body + struct.pack("<I", zlib.crc32(body))


def decompress(data) -> np.ndarray:
    """Decode bytes made by :func:`compress` into a uint8 image.

    Parameters
    ----------
    data : bytes-like
        A compressed image. Nothing else is needed to decode it.

    Returns
    -------
    image : ndarray of uint8
        The image, in the shape it was compressed from.

    Raises
    ------
    ValueError
        If ``data`` is truncated, damaged (checksum), foreign (magic), from a
        newer format version, or describes impossible dimensions.

    See Also
    --------
    compress : Makes the bytes.
    load : Decode a file.

    Examples
    --------
    >>> import numpy as np
    >>> from sknmf.image import compress, decompress
    >>> image = np.full((16, 16), 200, dtype=np.uint8)
    >>> decompress(compress(image, quality=30)).dtype
    dtype('uint8')
    """
    info = _parse(data)
    h, w = info["shape"][:2]
    planes = info["_planes"]
    raw = _inflate(info["_payload"], info["_raw_size"])
    offset, decoded = 0, []
    for rec in planes:
        size = _plane_raw_size(rec, h, w)
        chunk = raw[offset : offset + size]
        offset += size
        decoded.append(_decode_plane(rec, chunk, h, w, info["_flags"]))
    n_channels, color = info["n_channels"], info["color"]
    if n_channels == 1:
        out = _to_uint8(decoded[0])
    else:
        color_planes = np.stack(decoded[:3], axis=-1)
        if color == "ycbcr":
            out = _ycbcr_to_rgb(color_planes)
        else:
            out = _to_uint8(color_planes)
        if n_channels == 4:
            out = np.concatenate([out, decoded[3][..., None]], axis=-1)
    return out.reshape(info["shape"])


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
    decompress : Decode the image.

    Examples
    --------
    >>> import numpy as np
    >>> from sknmf.image import compress, read_header
    >>> header = read_header(compress(np.zeros((8, 24), dtype=np.uint8)))
    >>> header["shape"], header["color"]
    ((8, 24), 'gray')
    """
    info = _parse(data)
    return {k: v for k, v in info.items() if not k.startswith("_")}


def save(path, image, **params) -> int:
    """Compress ``image`` into the file ``path``; return the number of bytes.

    Parameters
    ----------
    path : str or os.PathLike
        Where to write.
    image : array-like of uint8
        The image, as for :func:`compress`.
    **params
        Keyword arguments of :func:`compress` (``quality``, ``n_components``...).

    Returns
    -------
    n_bytes : int
        Size of the file written.

    See Also
    --------
    load : Read it back.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from sknmf.image import load, save
    >>> path = os.path.join(tempfile.mkdtemp(), "image.sknmf")
    >>> n_bytes = save(path, np.zeros((8, 8), dtype=np.uint8))
    >>> load(path).shape
    (8, 8)
    """
    data = compress(image, **params)
    with open(os.fspath(path), "wb") as f:
        f.write(data)
    return len(data)


def load(path) -> np.ndarray:
    """Read and decode a file written by :func:`save`.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    image : ndarray of uint8
        The decoded image.

    See Also
    --------
    save : Write it.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from sknmf.image import load, save
    >>> path = os.path.join(tempfile.mkdtemp(), "image.sknmf")
    >>> _ = save(path, np.full((8, 8, 3), 90, dtype=np.uint8))
    >>> load(path).shape
    (8, 8, 3)
    """
    with open(os.fspath(path), "rb") as f:
        # One byte more than the largest header-allowed file would be pointless;
        # the parser checks the length against the header anyway.
        data = f.read()
    return decompress(data)


def _stored_atoms(data) -> list:
    """The atoms stored in a compressed image, one ``(K, ph, pw)`` array per plane.

    Lossless planes (alpha) give ``None``. Used by the demo's figures.
    """
    info = _parse(data)
    h, w = info["shape"][:2]
    raw = _inflate(info["_payload"], info["_raw_size"])
    out, offset = [], 0
    for rec in info["_planes"]:
        if rec.kind == _KIND_RAW:
            out.append(None)
        else:
            k, d = rec.n_components, rec.ph * rec.pw
            q = np.frombuffer(raw, dtype=np.uint8, count=k * d, offset=offset)
            scale = np.frombuffer(raw, dtype="<f4", count=k, offset=offset + k * d)
            out.append(_atoms(q.reshape(k, d), scale.copy()).reshape(k, rec.ph, rec.pw))
        offset += _plane_raw_size(rec, h, w)
    return out


# --------------------------------------------------------------------------- #
# Settings and validation
# --------------------------------------------------------------------------- #


def _check_image(image) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        if arr.dtype.kind in "iu" and arr.size and arr.min() >= 0 and arr.max() <= 255:
            arr = arr.astype(np.uint8)
        else:
            raise TypeError(
                f"image must be uint8 (0-255); got dtype {arr.dtype}. Convert with "
                "np.clip(image, 0, 255).astype(np.uint8)."
            )
    ok = arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4))
    if not ok:
        raise ValueError(
            "image must be (h, w) grayscale, (h, w, 1), RGB (h, w, 3) or RGBA "
            f"(h, w, 4); got shape {arr.shape}."
        )
    h, w = arr.shape[:2]
    if h < 1 or w < 1:
        raise ValueError(f"image must not be empty; got shape {arr.shape}.")
    if h >= MAX_SIDE or w >= MAX_SIDE or h * w > MAX_PIXELS:
        raise ValueError(
            f"image of {h}x{w} pixels is too large for this format "
            f"(sides < {MAX_SIDE}, at most {MAX_PIXELS} pixels)."
        )
    return arr


def _check_int(value, name, low, high):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int in [{low}, {high}]; got {value!r}.")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}]; got {value}.")
    return int(value)


def _check_components(value, name):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return _check_int(value, name, 1, MAX_COMPONENTS)
    try:
        layers = tuple(value)
    except TypeError:
        raise TypeError(
            f"{name} must be an int or a tuple of ints; got {value!r}."
        ) from None
    if not 1 <= len(layers) <= MAX_LAYERS:
        raise ValueError(f"{name} must have 1 to {MAX_LAYERS} layers; got {value!r}.")
    layers = tuple(_check_int(v, name, 1, MAX_COMPONENTS) for v in layers)
    if any(b > a for a, b in zip(layers, layers[1:])):
        raise ValueError(f"{name} layers must not increase; got {value!r}.")
    return layers[0] if len(layers) == 1 else layers


def _settings(quality, n_components, chroma_components, bits, patch_size):
    quality = _check_int(quality, "quality", 1, 100)
    row = min(_QUALITY_TABLE, key=lambda r: (abs(r[0] - quality), -r[0]))
    luma, chroma, qbits = row[1:]
    if n_components is not None:
        luma = _check_components(n_components, "n_components")
        if chroma_components is None:
            last = luma[-1] if isinstance(luma, tuple) else luma
            chroma = max(1, round(last / 4))
    if chroma_components is not None:
        chroma = _check_components(chroma_components, "chroma_components")
    if bits is not None:
        qbits = _check_int(bits, "bits", 2, 16)
    patch = (
        8 if patch_size is None else _check_int(patch_size, "patch_size", 1, MAX_PATCH)
    )
    return luma, chroma, qbits, patch


def _filters(raw_size: int) -> list:
    # The dictionary size follows from the payload size, which the decoder knows
    # from the header: no need to store it, and a small file never makes the
    # decoder reserve 64 MiB.
    dict_size = min(max(raw_size, 1 << 12), 1 << 26)
    return [{"id": lzma.FILTER_LZMA2, "preset": 9, "dict_size": dict_size}]


# --------------------------------------------------------------------------- #
# Planes
# --------------------------------------------------------------------------- #


def _rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    # JFIF full-range YCbCr, the transform JPEG files use.
    m = np.array(
        [
            [0.299, 0.587, 0.114],
            [-0.168736, -0.331264, 0.5],
            [0.5, -0.418688, -0.081312],
        ],
        dtype=np.float32,
    )
    ycc = rgb.astype(np.float32) @ m.T
    ycc[..., 1:] += 128.0
    return ycc


def _ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    y = ycc[..., 0]
    cb = ycc[..., 1] - 128.0
    cr = ycc[..., 2] - 128.0
    rgb = np.stack(
        [y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1
    )
    return _to_uint8(rgb)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _downsample(plane: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return plane
    h, w = plane.shape
    ph, pw = -h % factor, -w % factor
    padded = np.pad(plane, ((0, ph), (0, pw)), mode="edge")
    hh, ww = padded.shape
    return padded.reshape(hh // factor, factor, ww // factor, factor).mean(axis=(1, 3))


def _upsample(plane: np.ndarray, factor: int, h: int, w: int) -> np.ndarray:
    if factor == 1:
        return plane
    big = Image.fromarray(plane.astype(np.float32), mode="F").resize(
        (plane.shape[1] * factor, plane.shape[0] * factor), Image.Resampling.BILINEAR
    )
    return np.asarray(big)[:h, :w]


def _plane_shape(rec: _Plane, h: int, w: int) -> tuple[int, int]:
    return -(-h // rec.sub), -(-w // rec.sub)


def _n_patches(rec: _Plane, h: int, w: int) -> int:
    ph, pw = _plane_shape(rec, h, w)
    return -(-ph // rec.ph) * -(-pw // rec.pw)


def _plane_raw_size(rec: _Plane, h: int, w: int) -> int:
    if rec.kind == _KIND_RAW:
        return h * w
    d = rec.ph * rec.pw
    # uint8 dictionary + one float32 scale per atom + the codes.
    return rec.n_components * (d + 4) + _n_patches(rec, h, w) * rec.n_components * (
        rec.code_bytes
    )


def _default_estimator(n_components, random_state):
    from sknmf import DeepNMF

    # tol=0: the scikit-learn stopping rule halts multiplicative updates on image
    # patches after a few dozen iterations, far from a useful dictionary. A deep
    # model splits the same budget between the pretraining of its layers and the
    # joint fine-tuning.
    if isinstance(n_components, tuple):
        share = _FIT_ITER // (len(n_components) + 1)
        max_iter, pretrain = share, share
    else:
        max_iter, pretrain = _FIT_ITER, None
    return DeepNMF(
        n_components,
        init="nndsvda",
        max_iter=max_iter,
        pretrain_max_iter=pretrain,
        tol=0.0,
        random_state=random_state,
    )


def _fit_dictionary(X, n_components, estimator, random_state):
    """Fit the factoriser on (a sample of) the patch rows; return its atoms."""
    if estimator is None:
        est = _default_estimator(n_components, random_state)
    else:
        if not hasattr(estimator, "get_params") or "n_components" not in (
            estimator.get_params()
        ):
            raise TypeError(
                "estimator must be a scikit-learn estimator with an n_components "
                f"parameter (e.g. sknmf.DeepNMF or sklearn NMF); got {estimator!r}."
            )
        est = clone(estimator).set_params(n_components=n_components)
    last = n_components[-1] if isinstance(n_components, tuple) else n_components
    n_rows = max(_MIN_FIT_ROWS, _ROWS_PER_ATOM * last)
    if len(X) > n_rows:
        # The dictionary is learned on a sample of patches; the codes of every
        # patch are fitted afterwards. Fit time no longer grows with image size.
        seed = seed_from_random_state(random_state)
        rows = np.random.default_rng(seed).choice(len(X), n_rows, replace=False)
        X = X[np.sort(rows)]
    with warnings.catch_warnings():
        # The iteration budget is the codec's speed/quality trade-off, not a
        # failure worth a warning per plane.
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
    H = np.asarray(est.components_, dtype=np.float32)
    if H.ndim != 2 or H.shape[1] != X.shape[1]:
        raise ValueError(
            f"estimator {type(est).__name__} gave components_ of shape {H.shape}; "
            f"expected (n_components, {X.shape[1]})."
        )
    return H


def _quantise_dictionary(H: np.ndarray):
    """8-bit atoms scaled to unit norm: ``atom = q * scale``."""
    H = np.maximum(H, 0)
    peak = H.max(axis=1, keepdims=True)
    q = np.zeros(H.shape, dtype=np.uint8)
    live = peak[:, 0] > 0
    q[live] = np.rint(H[live] / peak[live] * 255).astype(np.uint8)
    norms = np.linalg.norm(q.astype(np.float32), axis=1)
    scale = np.zeros(len(q), dtype=np.float32)
    scale[norms > 0] = 1.0 / norms[norms > 0]
    return q, scale


def _atoms(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * scale[:, None]


def _refit_codes(X, D, n_iter=_CODE_ITER):
    """Nonnegative least-squares codes of ``X`` on the fixed atoms ``D`` (HALS).

    The codes are fitted to the dictionary the file stores (8-bit atoms), for
    every patch, by coordinate descent started from the clipped unconstrained
    least-squares solution: from zero, sweeps crawl along strongly correlated
    atoms (e.g. on smooth images).
    """
    X = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    D = torch.from_numpy(D)
    gram = D @ D.T
    xdt = X @ D.T
    diag = gram.diagonal().clamp_min(1e-12)
    ridge = 1e-6 * float(diag.mean()) * torch.eye(len(gram))
    W = torch.linalg.solve(gram + ridge, xdt.T).T.clamp_min_(0)
    for _ in range(n_iter):
        for k in range(D.shape[0]):
            if gram[k, k] <= 0:
                W[:, k] = 0
                continue
            grad = xdt[:, k] - W @ gram[:, k]
            W[:, k] = (W[:, k] + grad / diag[k]).clamp_min_(0)
    return W.numpy()


def _quantise_codes(X, D, W, step, levels, sweeps=2):
    """Quantise the codes one atom at a time, re-fitting the others each time.

    Rounding every code independently adds up the errors; fixing one atom's
    quantised codes and letting the atoms still free absorb the error (a few
    HALS sweeps) keeps the reconstruction close to the unquantised one. Atoms go
    from the most to the least varying codes. On photos this saves about a
    sixth of the rate at equal PSNR over plain rounding.
    """
    X = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    D = torch.from_numpy(D)
    W = torch.from_numpy(np.ascontiguousarray(W, dtype=np.float32)).clone()
    Q = torch.zeros(W.shape, dtype=torch.int64)
    gram = D @ D.T
    xdt = X @ D.T
    order = np.argsort(-W.var(dim=0, correction=0).numpy(), kind="stable")
    free = list(order)
    for k in order:
        free.remove(k)
        Q[:, k] = torch.clamp(torch.round(W[:, k] / step), 0, levels).long()
        W[:, k] = Q[:, k].to(torch.float32) * step
        for _ in range(sweeps):
            for j in free:
                if gram[j, j] > 0:
                    grad = xdt[:, j] - W @ gram[:, j]
                    W[:, j] = (W[:, j] + grad / gram[j, j]).clamp_min_(0)
    return Q.numpy()


def _encode_plane(plane, k, sub, patch, bits, estimator, random_state, index):
    small = _downsample(plane, sub)
    patches = ImagePatches((patch, patch)).fit(small)
    X = patches.transform(small).astype(np.float32, copy=False)
    layers = k if isinstance(k, tuple) else (k,)
    # Never more atoms than pixels in a patch or patches in the plane.
    cap = min(X.shape)
    layers = tuple(min(r, cap) for r in layers)
    n_components = layers if len(layers) > 1 else layers[0]
    H = _fit_dictionary(X, n_components, estimator, random_state)
    q, scale = _quantise_dictionary(H)
    D = _atoms(q, scale)
    W = _refit_codes(X, D)
    # The grid spans all but the largest 0.1% of the codes: a few outliers would
    # otherwise coarsen the step for every patch. Clipped codes are compensated
    # by the other atoms in _quantise_codes.
    top = float(np.percentile(W, _CODE_RANGE_PCT)) if W.size else 0.0
    levels = (1 << bits) - 1
    # The step the decoder will read back (float32), so both sides agree.
    step = float(np.float32(top / levels if top > 0 else 1.0))
    codes = _quantise_codes(X, D, W, step, levels)
    codes = codes.astype("<u1" if bits <= 8 else "<u2")
    rec = _Plane(
        _KIND_NMF,
        sub,
        patch,
        patch,
        D.shape[0],
        bits,
        layers if len(layers) > 1 else (),
        step,
    )
    return rec, (q.tobytes() + scale.astype("<f4").tobytes(), codes)


def _code_bytes(codes: np.ndarray, flags: int) -> bytes:
    """Codes patch by patch (flag set) or atom by atom."""
    return (codes if flags & _FLAG_PATCH_MAJOR else codes.T).tobytes()


def _decode_plane(rec: _Plane, chunk: bytes, h: int, w: int, flags: int):
    if rec.kind == _KIND_RAW:
        return np.frombuffer(chunk, dtype=np.uint8).reshape(h, w)
    k, d = rec.n_components, rec.ph * rec.pw
    n = _n_patches(rec, h, w)
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
    D = _atoms(q, scale.astype(np.float32))
    codes = codes.reshape(n, k) if flags & _FLAG_PATCH_MAJOR else codes.reshape(k, n).T
    W = codes.astype(np.float32) * np.float32(rec.step)
    rows = W @ D
    sh, sw = _plane_shape(rec, h, w)
    patches = ImagePatches((rec.ph, rec.pw))
    patches.fit(np.zeros((min(sh, rec.ph), min(sw, rec.pw)), dtype=np.float32))
    small = patches.inverse_transform(rows, image_shape=(sh, sw))
    return _upsample(small, rec.sub, h, w)


# --------------------------------------------------------------------------- #
# Parsing
# --------------------------------------------------------------------------- #


def _parse(data) -> dict:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes; got {type(data).__name__}.")
    data = bytes(data)
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
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if zlib.crc32(data[:-4]) != crc:
        raise ValueError(
            "corrupt sknmf image: checksum mismatch (truncated or damaged)."
        )
    if flags & ~_FLAG_PATCH_MAJOR:
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
        rec = _Plane(kind, sub, ph, pw, k, bits, layers, step)
        _check_plane(rec, index, n_channels)
        planes.append(rec)
    if off != len(header):
        raise ValueError("corrupt sknmf image: header has trailing bytes.")
    (plen,) = struct.unpack_from("<I", data, end_header)
    start = end_header + 4
    if start + plen != len(data) - 4:
        raise ValueError(
            "corrupt sknmf image: payload length does not match the file size."
        )
    raw_size = sum(_plane_raw_size(r, h, w) for r in planes)
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
                "kind": "nmf" if r.kind == _KIND_NMF else "lossless",
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


def _check_plane(rec: _Plane, index: int, n_channels: int) -> None:
    where = f"corrupt sknmf image: plane {index}"
    alpha = n_channels == 4 and index == 3
    if alpha:
        if rec.kind != _KIND_RAW or (rec.sub, rec.n_components, rec.bits) != (1, 0, 8):
            raise ValueError(f"{where} (alpha) must be stored losslessly.")
        return
    if rec.kind != _KIND_NMF:
        raise ValueError(f"{where} has unknown kind {rec.kind}.")
    if rec.sub not in (1, 2) or (index == 0 and rec.sub != 1):
        raise ValueError(f"{where} has invalid subsampling {rec.sub}.")
    if not (1 <= rec.ph <= MAX_PATCH and 1 <= rec.pw <= MAX_PATCH):
        raise ValueError(f"{where} has invalid patch size {rec.ph}x{rec.pw}.")
    if not 1 <= rec.n_components <= min(MAX_COMPONENTS, rec.ph * rec.pw):
        raise ValueError(f"{where} has invalid n_components {rec.n_components}.")
    if not 2 <= rec.bits <= 16:
        raise ValueError(f"{where} has invalid code width of {rec.bits} bits.")
    if not (np.isfinite(rec.step) and rec.step > 0):
        raise ValueError(f"{where} has invalid quantisation step {rec.step}.")
    if rec.layers and (
        rec.layers[-1] != rec.n_components
        or any(b > a for a, b in zip(rec.layers, rec.layers[1:]))
    ):
        raise ValueError(f"{where} has inconsistent layer sizes {rec.layers}.")


def _inflate(payload: bytes, raw_size: int) -> bytes:
    decoder = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_filters(raw_size))
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
