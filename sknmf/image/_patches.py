"""Images to patch rows and back: :class:`ImagePatches`."""

from __future__ import annotations

import numbers

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

__all__ = ["ImagePatches"]


def _pair(value, name: str, *, allow_none: bool) -> tuple:
    """Return ``value`` as a pair of positive ints (``None`` kept where allowed)."""
    if value is None and allow_none:
        return (None, None)
    items = (value, value) if isinstance(value, numbers.Integral) else value
    try:
        items = tuple(items)
    except TypeError:
        items = ()
    ok = len(items) == 2 and all(
        (v is None and allow_none)
        or (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1)
        for v in items
    )
    if not ok:
        extra = " (None means the whole image side)" if allow_none else ""
        raise ValueError(
            f"{name} must be a positive int or a pair of positive ints{extra}; "
            f"got {value!r}."
        )
    return tuple(None if v is None else int(v) for v in items)


def _split_shape(shape: tuple) -> tuple[int, tuple[int, int], int, bool]:
    """Read ``(n_images, (h, w), n_channels, has_channel_axis)`` from an array shape.

    2-D is one grayscale image ``(h, w)``; 3-D is one image ``(h, w, c)`` when its
    last axis has at most 4 entries (gray, RGB, RGBA), otherwise a batch ``(n, h, w)``
    of grayscale images; 4-D is a batch ``(n, h, w, c)``.
    """
    if len(shape) == 2:
        return 1, (shape[0], shape[1]), 1, False
    if len(shape) == 3:
        if shape[2] <= 4:
            return 1, (shape[0], shape[1]), shape[2], True
        return shape[0], (shape[1], shape[2]), 1, False
    if len(shape) == 4:
        return shape[0], (shape[1], shape[2]), shape[3], True
    raise ValueError(
        "images must be (h, w), (h, w, c), (n, h, w) or (n, h, w, c); got an array "
        f"with {len(shape)} dimension(s) and shape {tuple(shape)}."
    )


def _grid(size: int, patch: int, step: int) -> int:
    """Number of patch positions along one side once the side is padded."""
    return -(-max(size - patch, 0) // step) + 1


class ImagePatches(TransformerMixin, BaseEstimator):
    """Cut images into patch rows and rebuild images from patch rows.

    ``transform`` turns one image ``(h, w)`` or ``(h, w, c)``, or a batch
    ``(n, h, w)`` / ``(n, h, w, c)``, into a 2-D array whose rows are the
    flattened patches ``(ph, pw, c)`` in C order: image after image, row-major over
    the patch grid. Images whose size is not covered exactly by the grid are
    padded (edge mode); ``inverse_transform`` drops the padding again and
    averages overlapping patches, so without overlap the round trip is exact.

    This transformer **changes the number of rows** (one image gives many patch
    rows), like :class:`sklearn.feature_extraction.image.PatchExtractor`. It
    belongs at the head of *unsupervised* pipelines (compression, dictionary
    learning); ``pipe.inverse_transform(pipe.transform(img))`` returns the rebuilt
    image. Supervised pipelines whose samples are images or frames need one row
    per sample: use :class:`sknmf.FrameEncoder` there.

    Read more in :ref:`the image compression example
    <sphx_glr_auto_examples_plot_compress_color_image.py>`.

    Parameters
    ----------
    patch_size : int or tuple of (int or None, int or None), default=(8, 8)
        Patch height and width in pixels. ``None`` for a side means the whole
        image side as seen by ``fit`` (``(1, None)`` makes every image row a patch).
    step : int, tuple of int or None, default=None
        Distance between neighbouring patches; ``None`` means ``patch_size`` (no
        overlap). A smaller step gives overlapping patches, averaged on the way
        back. It may not exceed the patch size (every pixel must be covered).

    Attributes
    ----------
    patch_size_ : tuple of (int, int)
        The patch size with every ``None`` resolved.
    step_ : tuple of (int, int)
        The step with ``None`` resolved.
    n_channels_ : int
        Channels per pixel (1 for grayscale).
    image_shape_ : tuple of int
        Shape of the array last seen by ``fit`` or ``transform``; the default
        shape ``inverse_transform`` rebuilds.
    n_features_in_ : int
        Width of the fitted images (for a 2-D input, its number of columns, as
        in every scikit-learn estimator).
    feature_names_in_ : ndarray of str
        Column names, set only when ``fit`` saw a 2-D DataFrame.

    See Also
    --------
    sklearn.feature_extraction.image.PatchExtractor : Random or all patches,
        with a step of one pixel and no way back.
    sknmf.image.compress : The NMF image codec built on these patches.

    Notes
    -----
    A 3-D array is read as one ``(h, w, c)`` image when its last axis has at most
    4 entries (gray, RGB, RGBA) and as a batch ``(n, h, w)`` of grayscale images
    otherwise; write a batch of very narrow grayscale images as ``(n, h, w, 1)``.
    For a 2-D input the width plays the role of ``n_features``: ``transform`` of a
    2-D image requires the fitted width (pass ``image[None]`` for other sizes).

    Examples
    --------
    >>> import numpy as np
    >>> from sknmf import ImagePatches
    >>> image = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    >>> patches = ImagePatches(patch_size=(4, 4)).fit(image)
    >>> rows = patches.transform(image)
    >>> rows.shape
    (9, 48)
    >>> np.array_equal(patches.inverse_transform(rows), image)
    True
    """

    _parameter_constraints: dict = {
        "patch_size": [tuple, list, numbers.Integral],
        "step": [tuple, list, numbers.Integral, None],
    }

    def __init__(self, patch_size=(8, 8), step=None):
        self.patch_size = patch_size
        self.step = step

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check the images and resolve the patch geometry.

        Parameters
        ----------
        X : array-like of shape (h, w), (h, w, c), (n, h, w) or (n, h, w, c)
            Images.
        y : None
            Ignored.

        Returns
        -------
        self : ImagePatches
            This transformer.
        """
        X = self._check_images(X, reset=True)
        n, (h, w), c, _ = _split_shape(X.shape)
        size = _pair(self.patch_size, "patch_size", allow_none=True)
        self.patch_size_ = (size[0] or h, size[1] or w)
        step = _pair(self.step, "step", allow_none=True)
        self.step_ = (step[0] or self.patch_size_[0], step[1] or self.patch_size_[1])
        if any(s > p for s, p in zip(self.step_, self.patch_size_)):
            raise ValueError(
                f"step={self.step!r} is larger than patch_size={self.patch_size!r}: "
                "pixels between patches would be lost; use a step <= patch_size."
            )
        self.n_channels_ = c
        self.image_shape_ = tuple(X.shape)
        return self

    def transform(self, X):
        """Cut images into patch rows.

        Parameters
        ----------
        X : array-like of shape (h, w), (h, w, c), (n, h, w) or (n, h, w, c)
            Images with the fitted number of channels.

        Returns
        -------
        patches : ndarray of shape (n_images * n_patches, ph * pw * c)
            One flattened patch per row, in the dtype of ``X``.
        """
        check_is_fitted(self)
        X = self._check_images(X, reset=False)
        n, (h, w), c, _ = _split_shape(X.shape)
        self._check_channels(c, "X")
        (ph, pw), (sh, sw) = self.patch_size_, self.step_
        gh, gw = _grid(h, ph, sh), _grid(w, pw, sw)
        images = X.reshape(n, h, w, c)
        pad_h, pad_w = (gh - 1) * sh + ph - h, (gw - 1) * sw + pw - w
        if pad_h or pad_w:
            images = np.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), "edge")
        if (sh, sw) == (ph, pw):
            # Without overlap the patches are a pure reshape: no copy of the windows.
            out = images.reshape(n, gh, ph, gw, pw, c).transpose(0, 1, 3, 2, 4, 5)
        else:
            windows = sliding_window_view(images, (ph, pw), axis=(1, 2))
            out = windows[:, ::sh, ::sw].transpose(0, 1, 2, 4, 5, 3)
        # Recorded so that inverse_transform rebuilds the image just cut, as a
        # Pipeline's inverse_transform expects.
        self.image_shape_ = tuple(X.shape)
        return np.ascontiguousarray(out).reshape(n * gh * gw, ph * pw * c)

    def inverse_transform(self, X, image_shape=None):
        """Rebuild images from patch rows, averaging overlaps.

        Parameters
        ----------
        X : array-like of shape (n_images * n_patches, ph * pw * c)
            Patch rows, e.g. from :meth:`transform` or a reconstruction.
        image_shape : tuple of int, default=None
            Shape of the image (or batch) to rebuild; ``None`` means the shape
            last seen by :meth:`fit` or :meth:`transform`. A single-image shape with
            several images' worth of rows rebuilds a batch.

        Returns
        -------
        images : ndarray
            The images, with the padding dropped, in the dtype of ``X`` (integer
            patches with overlap are averaged and rounded).
        """
        check_is_fitted(self)
        X = check_array(X, dtype=None, input_name="X")
        shape = self.image_shape_ if image_shape is None else tuple(image_shape)
        n, (h, w), c, has_c = _split_shape(shape)
        self._check_channels(c, "image_shape")
        (ph, pw), (sh, sw) = self.patch_size_, self.step_
        if X.shape[1] != ph * pw * c:
            raise ValueError(
                f"X has {X.shape[1]} features per row, but patches of "
                f"{ph}x{pw}x{c} have {ph * pw * c}; pass the rows transform made."
            )
        gh, gw = _grid(h, ph, sh), _grid(w, pw, sw)
        per_image = gh * gw
        if X.shape[0] % per_image:
            raise ValueError(
                f"X has {X.shape[0]} rows, which is not a multiple of the "
                f"{per_image} patches of one {h}x{w} image; pass image_shape="
                "the shape of the images that were cut."
            )
        n_rows = X.shape[0] // per_image
        if n_rows != n and not (n == 1 and len(shape) in (2, 3)):
            raise ValueError(
                f"X holds the patches of {n_rows} image(s) but image_shape={shape} "
                f"describes {n}."
            )
        batch = len(shape) == 4 or (len(shape) == 3 and not has_c) or n_rows != n
        n = n_rows
        Hp, Wp = (gh - 1) * sh + ph, (gw - 1) * sw + pw
        patches = X.reshape(n, gh, gw, ph, pw, c)
        if (sh, sw) == (ph, pw):
            images = patches.transpose(0, 1, 3, 2, 4, 5).reshape(n, Hp, Wp, c)
        else:
            work = np.float32 if X.dtype == np.float32 else np.float64
            total = np.zeros((n, Hp, Wp, c), dtype=work)
            count = np.zeros((Hp, Wp), dtype=work)
            # One vectorised add per offset inside the patch: ph * pw array
            # operations, however many patches there are.
            for i in range(ph):
                rows = slice(i, i + (gh - 1) * sh + 1, sh)
                for j in range(pw):
                    cols = slice(j, j + (gw - 1) * sw + 1, sw)
                    total[:, rows, cols] += patches[:, :, :, i, j]
                    count[rows, cols] += 1
            images = total / count[None, :, :, None]
            if not np.issubdtype(X.dtype, np.floating):
                info = np.iinfo(X.dtype) if np.issubdtype(X.dtype, np.integer) else None
                images = np.rint(images)
                if info is not None:
                    images = np.clip(images, info.min, info.max)
            images = images.astype(X.dtype, copy=False)
        images = images[:, :h, :w]
        if not has_c:
            images = images[..., 0]
        return np.ascontiguousarray(images if batch else images[0])

    def get_feature_names_out(self, input_features=None):
        """Names of the patch features: ``imagepatches0``, ``imagepatches1``, ...

        Parameters
        ----------
        input_features : None
            Ignored; patch features do not map one-to-one to input columns.

        Returns
        -------
        feature_names_out : ndarray of str
            One name per pixel-channel of a patch.
        """
        check_is_fitted(self)
        n_out = self.patch_size_[0] * self.patch_size_[1] * self.n_channels_
        prefix = type(self).__name__.lower()
        return np.asarray([f"{prefix}{i}" for i in range(n_out)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def _check_images(self, X, *, reset: bool):
        """Validate images; 2-D input also goes through ``validate_data``."""
        if _ndim(X) == 2:
            X = validate_data(self, X, reset=reset, dtype="numeric")
        else:
            X = check_array(X, dtype="numeric", allow_nd=True, input_name="X")
            if reset:
                self.n_features_in_ = _split_shape(X.shape)[1][1]
                if hasattr(self, "feature_names_in_"):
                    del self.feature_names_in_
        if X.dtype.kind not in "biuf":
            raise TypeError(
                f"images must hold numbers (bool, int, uint or float); got {X.dtype}."
            )
        n, (h, w), _, _ = _split_shape(X.shape)
        if min(n, h, w) < 1:
            raise ValueError(f"images must not be empty; got shape {X.shape}.")
        return X

    def _check_channels(self, c: int, name: str) -> None:
        if c != self.n_channels_:
            raise ValueError(
                f"{name} has {c} channel(s) per pixel, but ImagePatches was fitted "
                f"on images with {self.n_channels_}."
            )


def _ndim(X) -> int:
    """Number of dimensions of ``X``, which may be a list or not quite an array."""
    shape = getattr(X, "shape", None)
    if shape is not None:
        return len(shape)
    try:
        return np.asarray(X).ndim
    except ValueError:
        return -1
