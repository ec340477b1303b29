"""Image quality and size measures: PSNR, SSIM and bits per pixel."""

from __future__ import annotations

import numpy as np

from sknmf.image._format import parse

__all__ = ["bits_per_pixel", "psnr", "ssim"]


def _check_pair(reference, image) -> tuple[np.ndarray, np.ndarray]:
    reference, image = np.asarray(reference), np.asarray(image)
    if reference.shape != image.shape:
        raise ValueError(
            f"reference has shape {reference.shape} but image has shape "
            f"{image.shape}; compare images of the same size and channels."
        )
    if reference.ndim not in (2, 3) or reference.size == 0:
        raise ValueError(
            "images must be non-empty (h, w) or (h, w, c) arrays; got shape "
            f"{reference.shape}."
        )
    for name, arr in (("reference", reference), ("image", image)):
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold numbers; got dtype {arr.dtype}.")
    return reference, image


def psnr(reference, image) -> float:
    """Peak signal-to-noise ratio in decibels, on the 0-255 (uint8) scale.

    ``10 * log10(255**2 / MSE)`` over every pixel and channel.

    Parameters
    ----------
    reference : array-like of shape (h, w) or (h, w, c)
        The original image, 0-255 scale (uint8 or float).
    image : array-like of the same shape
        The image to judge, same scale.

    Returns
    -------
    psnr : float
        In dB; ``inf`` when the images are identical.

    See Also
    --------
    ssim : Structural similarity, closer to what people see.
    skimage.metrics.peak_signal_noise_ratio : The same measure in scikit-image.

    Examples
    --------
    >>> import numpy as np
    >>> from sknmf.image import psnr
    >>> a = np.full((4, 4), 100, dtype=np.uint8)
    >>> round(psnr(a, a + 1), 2)
    48.13
    """
    reference, image = _check_pair(reference, image)
    mse = np.mean((reference.astype(np.float64) - image.astype(np.float64)) ** 2)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(255.0**2 / mse))


def ssim(reference, image) -> float:
    """Structural similarity index, computed by scikit-image.

    A thin call to :func:`skimage.metrics.structural_similarity` with
    ``data_range=255`` and the channel axis last for colour images (install the
    ``image`` extra: ``pip install sknmf[image]``).

    Parameters
    ----------
    reference : array-like of shape (h, w) or (h, w, c)
        The original image, 0-255 scale; both sides at least 7x7 pixels.
    image : array-like of the same shape
        The image to judge.

    Returns
    -------
    ssim : float
        Mean SSIM, 1.0 for identical images.

    Raises
    ------
    ImportError
        If scikit-image is not installed.

    See Also
    --------
    psnr : Peak signal-to-noise ratio.

    Examples
    --------
    >>> import numpy as np
    >>> from sknmf.image import ssim
    >>> a = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    >>> ssim(a, a)
    1.0
    """
    reference, image = _check_pair(reference, image)
    try:
        from skimage.metrics import structural_similarity
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ssim needs scikit-image; install it with `pip install sknmf[image]` "
            "or `pip install scikit-image`."
        ) from exc
    if min(reference.shape[:2]) < 7:
        raise ValueError(
            f"ssim needs images of at least 7x7 pixels; got {reference.shape[:2]}."
        )
    channel_axis = -1 if reference.ndim == 3 else None
    return float(
        structural_similarity(
            reference.astype(np.float64),
            image.astype(np.float64),
            data_range=255.0,
            channel_axis=channel_axis,
        )
    )


def bits_per_pixel(data, shape=None) -> float:
    """Bits per pixel of an encoded image: ``8 * len(data) / (h * w)``.

    Parameters
    ----------
    data : bytes or int
        The encoded file (any format: sknmf, JPEG, PNG...) or its length in bytes.
    shape : tuple of int, default=None
        The image shape ``(h, w[, c])``. ``None`` reads it from the header of an
        sknmf file made by :func:`sknmf.image.compress`.

    Returns
    -------
    bpp : float
        Bits per pixel (channels are not divided out, as for JPEG).

    See Also
    --------
    sknmf.image.compress : Makes the files this measures.

    Examples
    --------
    >>> from sknmf.image import bits_per_pixel
    >>> bits_per_pixel(b"x" * 100, shape=(20, 40))
    1.0
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        n_bytes = len(data)
    elif isinstance(data, (int, np.integer)) and not isinstance(data, bool):
        n_bytes = int(data)
        if n_bytes < 0:
            raise ValueError(f"data must be bytes or a byte count >= 0; got {data}.")
    else:
        raise TypeError(f"data must be bytes or a byte count; got {type(data)}.")
    if shape is None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValueError("shape is required when data is a byte count.")
        shape = parse(bytes(data))["shape"]
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or shape[0] < 1 or shape[1] < 1:
        raise ValueError(
            f"shape must be (h, w) or (h, w, c) with h, w >= 1; got {shape}."
        )
    return 8.0 * n_bytes / (shape[0] * shape[1])
