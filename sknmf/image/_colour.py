"""Colour planes of the image codec: the YCbCr transform and chroma resampling.

This module owns the pixel-domain steps around the factorisation: JFIF
full-range YCbCr (the transform JPEG files use) and back, rounding to uint8,
and the chroma subsampling (block means down, bilinear up).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = [
    "downsample",
    "rgb_to_ycbcr",
    "round_into",
    "to_uint8",
    "upsample",
    "ycbcr_planes_to_rgb",
    "ycbcr_to_rgb",
]

# JFIF full-range RGB -> YCbCr; Cb and Cr are offset by 128 afterwards.
_RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ],
    dtype=np.float32,
)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """JFIF YCbCr planes (float32, ``(..., 3)``) of an RGB image."""
    ycc = rgb.astype(np.float32) @ _RGB_TO_YCBCR.T
    ycc[..., 1:] += 128.0
    return ycc


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """The uint8 RGB image of JFIF YCbCr planes (inverse of :func:`rgb_to_ycbcr`)."""
    return ycbcr_planes_to_rgb(ycc[..., 0], ycc[..., 1], ycc[..., 2])


def ycbcr_planes_to_rgb(y, cb, cr, out=None) -> np.ndarray:
    """:func:`ycbcr_to_rgb` of three separate float32 planes, into ``out``.

    One output channel at a time through two plane-sized temporaries, so that
    decoding holds the planes and the uint8 result, not several float copies of
    the whole colour image. The planes are not modified.
    """
    if out is None:
        out = np.empty((*np.shape(y), 3), dtype=np.uint8)
    tmp = np.empty(np.shape(y), dtype=np.float32)
    tmp2 = np.empty_like(tmp)
    # R = y + 1.402 (cr - 128), in the operation order of the float32 formula.
    np.subtract(cr, 128.0, out=tmp)
    tmp *= 1.402
    tmp += y
    round_into(tmp, out[..., 0])
    # G = y - 0.344136 (cb - 128) - 0.714136 (cr - 128)
    np.subtract(cb, 128.0, out=tmp)
    tmp *= 0.344136
    np.subtract(y, tmp, out=tmp)
    np.subtract(cr, 128.0, out=tmp2)
    tmp2 *= 0.714136
    tmp -= tmp2
    round_into(tmp, out[..., 1])
    # B = y + 1.772 (cb - 128)
    np.subtract(cb, 128.0, out=tmp)
    tmp *= 1.772
    tmp += y
    round_into(tmp, out[..., 2])
    return out


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Round and clip to uint8."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def round_into(work: np.ndarray, out: np.ndarray) -> np.ndarray:
    """:func:`to_uint8` of the float array ``work`` into the uint8 array ``out``.

    ``work`` is overwritten (rounded and clipped in place): pass only an array
    the caller owns; the saving is a float copy of it.
    """
    np.rint(work, out=work)
    np.clip(work, 0, 255, out=work)
    out[...] = work
    return out


def downsample(plane: np.ndarray, factor: int) -> np.ndarray:
    """Means of ``factor x factor`` blocks; the edges are padded by repetition."""
    if factor == 1:
        return plane
    h, w = plane.shape
    ph, pw = -h % factor, -w % factor
    padded = np.pad(plane, ((0, ph), (0, pw)), mode="edge")
    hh, ww = padded.shape
    return padded.reshape(hh // factor, factor, ww // factor, factor).mean(axis=(1, 3))


def upsample(plane: np.ndarray, factor: int, h: int, w: int) -> np.ndarray:
    """Bilinear enlargement by ``factor``, cropped to ``h x w`` (a writable array)."""
    if factor == 1:
        return plane
    big = Image.fromarray(plane.astype(np.float32), mode="F").resize(
        (plane.shape[1] * factor, plane.shape[0] * factor), Image.Resampling.BILINEAR
    )
    # Writable, like the factor-1 result: the decoder rounds planes in place.
    return np.array(big)[:h, :w]
