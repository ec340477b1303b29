"""Colour planes of the image codec: the YCbCr transform and chroma resampling.

This module owns the pixel-domain steps around the factorisation: JFIF
full-range YCbCr (the transform JPEG files use) and back, rounding to uint8,
and the chroma subsampling (block means down, bilinear up).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["downsample", "rgb_to_ycbcr", "to_uint8", "upsample", "ycbcr_to_rgb"]

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
    y = ycc[..., 0]
    cb = ycc[..., 1] - 128.0
    cr = ycc[..., 2] - 128.0
    rgb = np.stack(
        [y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1
    )
    return to_uint8(rgb)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Round and clip to uint8."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


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
    """Bilinear enlargement by ``factor``, cropped to ``h x w``."""
    if factor == 1:
        return plane
    big = Image.fromarray(plane.astype(np.float32), mode="F").resize(
        (plane.shape[1] * factor, plane.shape[0] * factor), Image.Resampling.BILINEAR
    )
    return np.asarray(big)[:h, :w]
