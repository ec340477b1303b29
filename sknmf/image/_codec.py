"""The sknmf image codec: NMF of image patches, quantised and entropy coded.

This module is the orchestration and the public API (:func:`compress`,
:func:`decompress`, :func:`save`, :func:`load`, :func:`read_header`): the
settings that ``quality`` picks, the factoriser of each plane, and the path of
a plane from pixels to stored arrays and back. The bytes are
:mod:`sknmf.image._format`'s, the quantisation and code fitting
:mod:`sknmf.image._quantise`'s, the colour planes :mod:`sknmf.image._colour`'s.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import secrets
import warnings
from typing import NamedTuple

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from sknmf._utils import seed_from_random_state
from sknmf.decomposition import DeepNMF, check_ranks
from sknmf.image._colour import (
    downsample,
    rgb_to_ycbcr,
    round_into,
    upsample,
    ycbcr_planes_to_rgb,
)
from sknmf.image._format import (
    DEFAULT_MAX_PIXELS,
    KIND_NMF,
    KIND_RAW,
    MAGIC,
    MAX_COMPONENTS,
    MAX_LAYERS,
    MAX_PATCH,
    MAX_PIXELS,
    MAX_SIDE,
    WORK_PER_PIXEL,
    DecompressionBombError,
    Plane,
    check_budget,
    pack,
    parse,
    plane_shape,
    read_header,
    read_planes,
)
from sknmf.image._patches import ImagePatches
from sknmf.image._quantise import (
    code_grid,
    dictionary_atoms,
    fit_codes,
    quantise_codes,
    quantise_dictionary,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FIT_ITER",
    "MAGIC",
    "WORK_PER_PIXEL",
    "CodecSettings",
    "DecompressionBombError",
    "codec_settings",
    "compress",
    "decompress",
    "load",
    "read_header",
    "save",
    "stored_atoms",
    "write_atomically",
]

# Encoder budget: dictionary iterations, patches it is fitted on (at least
# _ROWS_PER_ATOM per atom). With DeepNMF's HALS solver, 200 iterations on 2048
# patches of a photo come within about 0.1 dB (after the code re-fit) of 200
# iterations on twice as many, in about 60% of the time.
FIT_ITER = 200
_MIN_FIT_ROWS = 2048
_ROWS_PER_ATOM = 32
# Patches the decoder turns into pixels per matrix product (a band of the plane).
_DECODE_PATCHES = 4096

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


class CodecSettings(NamedTuple):
    """What :func:`compress` uses: components of luma and chroma, bits, patch side."""

    n_components: int | tuple
    chroma_components: int | tuple
    bits: int
    patch_size: int


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
        ``fit`` and nonnegative, finite ``components_``, e.g. a configured
        :class:`sknmf.DeepNMF` or :class:`sklearn.decomposition.NMF` (PCA's
        signed components are refused). It is cloned per plane with
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
    luma_k, chroma_k, bits, patch = codec_settings(
        quality, n_components, chroma_components, bits, patch_size
    )
    if color not in ("ycbcr", "rgb"):
        raise ValueError(f"color must be 'ycbcr' or 'rgb'; got {color!r}.")
    if subsampling not in (1, 2) or isinstance(subsampling, bool):
        raise ValueError(f"subsampling must be 1 or 2; got {subsampling!r}.")

    h, w = image.shape[:2]
    n_channels = image.shape[2] if image.ndim == 3 else 1
    if n_channels == 1:
        color = "gray"
        planes = [(image.reshape(h, w).astype(np.float32), luma_k, 1)]
    elif color == "ycbcr":
        ycc = rgb_to_ycbcr(image[..., :3])
        planes = [(ycc[..., 0], luma_k, 1)] + [
            (ycc[..., i], chroma_k, subsampling) for i in (1, 2)
        ]
    else:
        planes = [(image[..., i].astype(np.float32), luma_k, 1) for i in range(3)]

    stored = [
        _encode_plane(plane, k, sub, patch, bits, estimator, random_state)
        for plane, k, sub in planes
    ]
    if n_channels == 4:
        stored.append((Plane(KIND_RAW, 1, 1, 1, 0, 8, (), 0.0), image[..., 3]))
    return pack(image.shape, color, stored)


def decompress(data, *, max_pixels=DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode bytes made by :func:`compress` into a uint8 image.

    Parameters
    ----------
    data : bytes-like
        A compressed image: bytes, bytearray, memoryview, a numpy uint8 array or
        any other object of the buffer protocol. Nothing else is needed to
        decode it.
    max_pixels : int or None, default=2**25
        Decompression-bomb guard, like Pillow's ``Image.MAX_IMAGE_PIXELS``: a
        file declaring more pixels than this, or more decoding work (patches x
        atoms x patch pixels) than ``WORK_PER_PIXEL`` (256) per pixel of it, is
        refused from its header, before anything is allocated. The default,
        ``2**25`` (33,554,432 pixels: an 8K UHD frame fits), bounds a decode to
        about 0.8 GB of memory. ``None`` disables the guard: use it, or a
        larger value, for files you trust.

    Returns
    -------
    image : ndarray of uint8
        The image, in the shape it was compressed from.

    Raises
    ------
    DecompressionBombError
        A ``ValueError``: the file is valid but exceeds ``max_pixels``.
    ValueError
        If ``data`` is truncated, damaged (checksum), foreign (magic), from a
        newer format version, or describes impossible dimensions.
    TypeError
        If ``data`` is not bytes-like.

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
    info = parse(data)
    check_budget(info, max_pixels)
    h, w = info["shape"][:2]
    records, stored = info["_planes"], read_planes(info)
    out = np.empty((h, w, info["n_channels"]), dtype=np.uint8)
    # Plane by plane into the uint8 result: gray and RGB planes are rounded as
    # soon as they are decoded; YCbCr needs its three planes at once.
    if info["color"] == "ycbcr":
        y, cb, cr = (_decode_plane(records[i], stored[i], h, w) for i in range(3))
        ycbcr_planes_to_rgb(y, cb, cr, out=out[..., :3])
        del y, cb, cr
    else:
        for i in range(min(3, info["n_channels"])):
            round_into(_decode_plane(records[i], stored[i], h, w), out[..., i])
    if info["n_channels"] == 4:
        out[..., 3] = stored[3]
    return out.reshape(info["shape"])


def save(path, image, **params) -> int:
    """Compress ``image`` into the file ``path``; return the number of bytes.

    The file is written atomically: an interrupted or failed save leaves
    whatever was at ``path`` before, never a partial file.

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
    write_atomically(path, lambda f: f.write(data))
    return len(data)


def load(path, *, max_pixels=DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read and decode a file written by :func:`save`.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    max_pixels : int or None, default=2**25
        The decompression-bomb guard of :func:`decompress` (``2**25`` pixels;
        ``None`` disables it).

    Returns
    -------
    image : ndarray of uint8
        The decoded image.

    Raises
    ------
    OSError
        If the file cannot be read.
    ValueError
        As :func:`decompress` (including its ``DecompressionBombError``).

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
        # The parser checks the length against the header anyway.
        data = f.read()
    return decompress(data, max_pixels=max_pixels)


def stored_atoms(data, *, max_pixels=DEFAULT_MAX_PIXELS) -> list:
    """The atoms stored in a compressed image, one ``(K, ph, pw)`` array per plane.

    Parameters
    ----------
    data : bytes-like
        A compressed image.
    max_pixels : int or None, default=2**25
        The decompression-bomb guard of :func:`decompress`.

    Returns
    -------
    atoms : list
        Per plane, the float32 atoms of its dictionary as the decoder uses them,
        shape ``(n_components, ph, pw)``; ``None`` for a lossless plane (alpha).

    Raises
    ------
    ValueError
        As :func:`decompress`, for anything that is not a valid file.

    Examples
    --------
    >>> import numpy as np
    >>> from sknmf.image._codec import compress, stored_atoms
    >>> image = np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8)
    >>> [a.shape for a in stored_atoms(compress(image, n_components=3))]
    [(3, 8, 8)]
    """
    info = parse(data)
    check_budget(info, max_pixels)
    out = []
    for rec, arrays in zip(info["_planes"], read_planes(info)):
        if rec.kind == KIND_RAW:
            out.append(None)
        else:
            q, scale, _ = arrays
            out.append(dictionary_atoms(q, scale).reshape(-1, rec.ph, rec.pw))
    return out


def write_atomically(path, write) -> None:
    """Write a file through a temporary file beside it, renamed over ``path``.

    An interrupted run never leaves a half-written file at ``path``: it holds
    either what it held before or the whole new content. The temporary file is
    created like ``open(path, "xb")`` would (the umask applies) and removed if
    ``write`` fails.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write.
    write : callable
        Called with the binary file object to write into.

    Raises
    ------
    OSError
        If the folder does not exist or is not writable, or ``path`` is a folder.

    Examples
    --------
    >>> import os, tempfile
    >>> from sknmf.image._codec import write_atomically
    >>> path = os.path.join(tempfile.mkdtemp(), "out.bin")
    >>> write_atomically(path, lambda f: f.write(b"abc"))
    >>> open(path, "rb").read()
    b'abc'
    """
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "xb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def codec_settings(
    quality=75, n_components=None, chroma_components=None, bits=None, patch_size=None
) -> CodecSettings:
    """The settings :func:`compress` uses for these arguments, checked.

    ``quality`` picks the components of the luma and chroma planes and the code
    width from a table; explicit values override it. An explicit
    ``n_components`` without ``chroma_components`` gives the chroma planes a
    quarter of its last layer.

    Parameters
    ----------
    quality : int, default=75
        1-100.
    n_components, chroma_components : int or tuple of int, default=None
        As for :func:`compress`: one rank or non-increasing layer sizes, each
        at most 4096, at most 16 layers.
    bits : int, default=None
        Bits per code, 2-16.
    patch_size : int, default=None
        Square patch side, 1-64; ``None`` means 8.

    Returns
    -------
    settings : CodecSettings
        ``(n_components, chroma_components, bits, patch_size)``; a
        component count is an int for one layer, a tuple for several.

    Raises
    ------
    TypeError, ValueError
        For an argument of the wrong type or out of range, naming it.

    Examples
    --------
    >>> from sknmf.image._codec import codec_settings
    >>> codec_settings(75)
    CodecSettings(n_components=32, chroma_components=10, bits=6, patch_size=8)
    >>> codec_settings(75, n_components=(48, 24))
    CodecSettings(n_components=(48, 24), chroma_components=6, bits=6, patch_size=8)
    """
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
    return CodecSettings(luma, chroma, qbits, patch)


# --------------------------------------------------------------------------- #
# Validation
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
    """One rank as an int, several layers as a tuple, within the format's limits."""
    ranks = check_ranks(value, name, max_rank=MAX_COMPONENTS, max_layers=MAX_LAYERS)
    return ranks[0] if len(ranks) == 1 else ranks


# --------------------------------------------------------------------------- #
# Planes
# --------------------------------------------------------------------------- #


def _default_estimator(n_components, random_state):
    # tol=0: the scikit-learn stopping rule halts multiplicative updates on image
    # patches after a few dozen iterations, far from a useful dictionary. A deep
    # model splits the same budget between the pretraining of its layers and the
    # joint fine-tuning.
    if isinstance(n_components, tuple):
        share = FIT_ITER // (len(n_components) + 1)
        max_iter, pretrain = share, share
    else:
        max_iter, pretrain = FIT_ITER, None
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
    # The file stores nonnegative 8-bit atoms: negative entries would be clipped
    # and NaN ones zeroed, and the image decoded from them is garbage.
    if not np.all(np.isfinite(H)):
        raise ValueError(
            f"estimator {type(est).__name__} gave components_ with NaN or infinite "
            "entries; the codec needs a nonnegative factoriser that converges on "
            "the patches (e.g. sknmf.DeepNMF or sklearn.decomposition.NMF)."
        )
    if np.any(H < 0):
        raise ValueError(
            f"estimator {type(est).__name__} gave components_ with negative entries "
            f"(min {H.min():.3g}); the codec stores nonnegative atoms: use a "
            "nonnegative factoriser such as sknmf.DeepNMF or "
            "sklearn.decomposition.NMF."
        )
    return H


def _encode_plane(plane, k, sub, patch, bits, estimator, random_state):
    """The record and stored arrays ``(q, scale, codes)`` of one plane."""
    small = downsample(plane, sub)
    patches = ImagePatches((patch, patch)).fit(small)
    X = patches.transform(small).astype(np.float32, copy=False)
    layers = k if isinstance(k, tuple) else (k,)
    # Never more atoms than pixels in a patch or patches in the plane.
    cap = min(X.shape)
    layers = tuple(min(r, cap) for r in layers)
    n_components = layers if len(layers) > 1 else layers[0]
    H = _fit_dictionary(X, n_components, estimator, random_state)
    q, scale = quantise_dictionary(H)
    D = dictionary_atoms(q, scale)
    W = fit_codes(X, D)
    step, levels = code_grid(W, bits)
    codes = quantise_codes(X, D, W, step, levels)
    rec = Plane(
        KIND_NMF,
        sub,
        patch,
        patch,
        D.shape[0],
        bits,
        layers if len(layers) > 1 else (),
        step,
    )
    return rec, (q, scale, codes)


def _decode_plane(rec: Plane, arrays, h: int, w: int) -> np.ndarray:
    """The float32 pixels of an NMF plane from its stored arrays (a new array)."""
    q, scale, codes = arrays
    D = dictionary_atoms(q, scale)
    step = np.float32(rec.step)
    sh, sw = plane_shape(rec, h, w)
    ph, pw = rec.ph, rec.pw
    gh, gw = -(-sh // ph), -(-sw // pw)
    # The codes cover the padded plane patch by patch, row-major over the patch
    # grid, without overlap (ImagePatches' layout): a band of grid rows at a
    # time goes from codes to pixels, so the float codes and patch rows never
    # exist for the whole plane at once.
    padded = np.empty((gh * ph, gw * pw), dtype=np.float32)
    band = max(1, _DECODE_PATCHES // gw)
    for top in range(0, gh, band):
        b = min(band, gh - top)
        W = codes[top * gw : (top + b) * gw].astype(np.float32) * step
        rows = W @ D
        padded[top * ph : (top + b) * ph] = (
            rows.reshape(b, gw, ph, pw).transpose(0, 2, 1, 3).reshape(b * ph, gw * pw)
        )
    return upsample(padded[:sh, :sw], rec.sub, h, w)
