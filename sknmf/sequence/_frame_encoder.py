"""FrameEncoder: apply any 2-D transformer to every frame of a set of sequences."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.pipeline import Pipeline
from sklearn.utils import check_array, get_tags
from sklearn.utils._available_if import available_if
from sklearn.utils._param_validation import HasMethods, StrOptions
from sklearn.utils._set_output import _get_output_config
from sklearn.utils.validation import (
    _check_feature_names_in,
    check_is_fitted,
    validate_data,
)

from ._sequences import Sequences, array_ndim, check_sequences, is_sequence_list


def _first_step(transformer):
    """The estimator that receives the frames first (unwrapping pipelines)."""
    while isinstance(transformer, Pipeline) and transformer.steps:
        transformer = transformer.steps[0][1]
    return transformer


def _takes_images(transformer) -> bool:
    """Whether ``transformer`` declares that it takes batches of images.

    Image transformers (e.g. :class:`sknmf.ImagePatches`, possibly first in a
    :class:`~sklearn.pipeline.Pipeline`) set the ``input_tags.three_d_array`` tag.
    """
    first = _first_step(transformer)
    if first is None or isinstance(first, str):
        return False
    try:
        return bool(get_tags(first).input_tags.three_d_array)
    except (AttributeError, TypeError, ValueError):
        return False


def _inner_has(method: str):
    """``available_if`` condition: the wrapped transformer has ``method``."""

    def check(self) -> bool:
        target = getattr(self, "transformer_", self.transformer)
        getattr(target, method)
        return True

    return check


class FrameEncoder(TransformerMixin, BaseEstimator):
    """Encode every frame of a set of sequences with a 2-D transformer.

    A clone of ``transformer`` is fitted on all frames of all training sequences (one
    row per frame) and then encodes each frame; the codes are put back into sequences.
    The number of sequences (rows) never changes, so ``FrameEncoder`` goes in supervised
    pipelines before a sequence model such as :class:`~sknmf.ExpressionRNN`, with ``y``,
    under :class:`~sklearn.model_selection.GridSearchCV`.

    Parameters
    ----------
    transformer : estimator object
        Any scikit-learn transformer of 2-D data (e.g. :class:`~sknmf.DeepNMF`,
        :class:`~sklearn.decomposition.PCA`, or a :class:`~sklearn.pipeline.Pipeline`
        such as ``ImagePatches`` followed by ``DeepNMF``). It is cloned, never modified.
    frames : {"auto", "flat", "image"}, default="auto"
        How image frames ``(h, w[, c])`` are handed to ``transformer``: ``"flat"`` as
        vectors ``(n_frames, h*w*c)``; ``"image"`` as a batch of images
        ``(n_frames, h, w[, c])``; ``"auto"`` picks ``"image"`` when the transformer (or
        the first step of a pipeline) declares the ``input_tags.three_d_array`` tag, and
        ``"flat"`` otherwise. Vector frames are always passed as
        ``(n_frames, n_features)``.

    Attributes
    ----------
    transformer_ : estimator object
        The fitted clone of ``transformer``.
    frame_shape_ : tuple of int
        Shape of one frame seen in :meth:`fit` (``(n_features,)`` for vector frames).
    n_features_in_ : int
        Number of values in one frame (product of ``frame_shape_``).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during :meth:`fit` (2-D DataFrame input only).
    n_features_out_ : int
        Length of one encoded frame.
    rows_per_frame_ : int
        Rows ``transformer`` outputs per frame (1, or e.g. the number of patches when it
        starts with a patch extractor; those rows are concatenated into one code).

    See Also
    --------
    ExpressionRNN : Recurrent classifier of the encoded sequences.
    sklearn.preprocessing.FunctionTransformer : Stateless per-row transformations.

    Notes
    -----
    Accepted inputs, with the output of the same form:

    - ``(n_seq, n_frames, *frame_shape)`` arrays → ``(n_seq, n_frames, k)``;
    - lists of ``(n_frames_i, *frame_shape)`` arrays → lists of ``(n_frames_i, k)``;
    - ``(n_seq, n_features)`` → ``(n_seq, k)`` (one frame per sequence; the form
      scikit-learn's checks use, and the only one ``set_output`` containers apply to).

    A supervised ``transformer`` (one whose tags require ``y``) is fitted with each
    sequence's label repeated over its frames.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.decomposition import PCA
    >>> from sknmf import FrameEncoder
    >>> rng = np.random.RandomState(0)
    >>> videos = rng.rand(5, 8, 12, 12)        # 5 sequences of 8 frames of 12x12 pixels
    >>> enc = FrameEncoder(PCA(n_components=4)).fit(videos)
    >>> enc.transform(videos).shape
    (5, 8, 4)
    >>> enc.inverse_transform(enc.transform(videos)).shape
    (5, 8, 12, 12)
    >>> ragged = [rng.rand(n, 12, 12) for n in (3, 7)]
    >>> [codes.shape for codes in enc.transform(ragged)]
    [(3, 4), (7, 4)]
    """

    _parameter_constraints: dict = {
        "transformer": [HasMethods(["fit", "transform"])],
        "frames": [StrOptions({"auto", "flat", "image"})],
    }

    def __init__(self, transformer, *, frames: str = "auto") -> None:
        self.transformer = transformer
        self.frames = frames

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Fit the transformer on every frame of every sequence.

        Parameters
        ----------
        X : array-like of shape (n_seq, n_frames, ...), list of arrays of shape \
(n_frames_i, ...), or array-like of shape (n_seq, n_features)
            Sequences of frames (vectors or images).
        y : array-like of shape (n_seq,), default=None
            Sequence labels; repeated over the frames for a supervised transformer,
            ignored otherwise.

        Returns
        -------
        self : FrameEncoder
            The fitted encoder.
        """
        self._fit(X, y)
        return self

    @_fit_context(prefer_skip_nested_validation=False)
    def fit_transform(self, X, y=None):
        """Fit on every frame and return the encoded sequences.

        Equivalent to ``fit(X, y).transform(X)`` when the transformer's own
        ``fit_transform`` agrees with its ``fit`` then ``transform``, without encoding
        the frames twice.

        Parameters
        ----------
        X : array-like of shape (n_seq, n_frames, ...), list of arrays of shape \
(n_frames_i, ...), or array-like of shape (n_seq, n_features)
            Sequences of frames (vectors or images).
        y : array-like of shape (n_seq,), default=None
            Sequence labels; repeated over the frames for a supervised transformer,
            ignored otherwise.

        Returns
        -------
        codes : ndarray of shape (n_seq, n_frames, k), list of arrays of shape \
(n_frames_i, k), or ndarray of shape (n_seq, k)
            The encoded sequences, in the form of ``X``.
        """
        seqs, rows = self._fit(X, y)
        return self._to_sequences(seqs, rows)

    def transform(self, X):
        """Encode every frame of every sequence.

        Parameters
        ----------
        X : array-like of shape (n_seq, n_frames, ...), list of arrays of shape \
(n_frames_i, ...), or array-like of shape (n_seq, n_features)
            Sequences whose frames have the shape seen in :meth:`fit`.

        Returns
        -------
        codes : ndarray of shape (n_seq, n_frames, k), list of arrays of shape \
(n_frames_i, k), or ndarray of shape (n_seq, k)
            The encoded sequences, in the form of ``X``.
        """
        check_is_fitted(self)
        seqs = self._validate(X, reset=False)
        rows = self.transformer_.transform(self._frames_for_transformer(seqs))
        return self._to_sequences(seqs, rows)

    @available_if(_inner_has("inverse_transform"))
    def inverse_transform(self, X):
        """Map codes back to frames with the transformer's ``inverse_transform``.

        Parameters
        ----------
        X : array-like of shape (n_seq, n_frames, k), list of arrays of shape \
(n_frames_i, k), or array-like of shape (n_seq, k)
            Encoded sequences, as returned by :meth:`transform`.

        Returns
        -------
        frames : ndarray of shape (n_seq, n_frames, *frame_shape_), list of arrays, \
or ndarray of shape (n_seq, n_features_in_)
            The reconstructed frames, in the form of ``X``.
        """
        check_is_fitted(self)
        name = type(self).__name__
        if is_sequence_list(X) or array_ndim(X) >= 3:
            seqs = check_sequences(X, estimator_name=name, dtype=None, frame_ndim=1)
            codes = seqs.frames
        else:
            codes = check_array(X, dtype="numeric", input_name="X", estimator=self)
            seqs = Sequences("2d", codes, np.ones(len(codes), dtype=np.int64))
        if codes.shape[1] != self.n_features_out_:
            raise ValueError(
                f"Codes have {codes.shape[1]} features, but {name} encodes each frame "
                f"into {self.n_features_out_}."
            )
        # Undo the concatenation of several output rows per frame (e.g. patches).
        rows = codes.reshape(len(codes) * self.rows_per_frame_, -1)
        frames = np.asarray(self.transformer_.inverse_transform(rows))
        frames = frames.reshape(len(codes), *self.frame_shape_)
        if seqs.kind == "2d":
            return frames
        if seqs.kind == "list":
            return seqs.split(frames)
        return frames.reshape(seqs.n_sequences, -1, *self.frame_shape_)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of the code features of one frame.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Input feature names (2-D input only); checked against those seen in
            :meth:`fit`.

        Returns
        -------
        feature_names_out : ndarray of str objects
            The transformer's output names, or ``frameencoder<i>`` when it has none
            (suffixed ``_r<i>`` for its i-th output row of a frame when it outputs
            several rows per frame).
        """
        check_is_fitted(self)
        input_features = _check_feature_names_in(self, input_features)
        try:
            if self._frame_mode == "image":
                names = self.transformer_.get_feature_names_out()
            else:
                names = self.transformer_.get_feature_names_out(input_features)
        except AttributeError:
            # The transformer (or a pipeline step) does not name its outputs.
            prefix = type(self).__name__.lower()
            width = self.n_features_out_ // self.rows_per_frame_
            names = [f"{prefix}{i}" for i in range(width)]
        names = np.asarray(names, dtype=object)
        if self.rows_per_frame_ > 1:
            names = np.asarray(
                [f"{n}_r{i}" for i in range(self.rows_per_frame_) for n in names],
                dtype=object,
            )
        return names

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = get_tags(self.transformer)
        tags.input_tags.three_d_array = True
        tags.input_tags.sparse = inner.input_tags.sparse
        tags.input_tags.allow_nan = inner.input_tags.allow_nan
        tags.input_tags.positive_only = inner.input_tags.positive_only
        tags.target_tags.required = inner.target_tags.required
        tags.non_deterministic = inner.non_deterministic
        if inner.transformer_tags is not None:
            tags.transformer_tags.preserves_dtype = list(
                inner.transformer_tags.preserves_dtype
            )
        return tags

    # helpers -----------------------------------------------------------------------

    @property
    def _frame_mode(self) -> str:
        if self.frames != "auto":
            return self.frames
        return "image" if _takes_images(self.transformer) else "flat"

    def _fit(self, X, y):
        seqs = self._validate(X, reset=True)
        rows_in = self._frames_for_transformer(seqs)
        y_rows = None
        if y is not None and get_tags(self.transformer).target_tags.required:
            y = np.asarray(y)
            if len(y) != seqs.n_sequences:
                raise ValueError(
                    f"y has {len(y)} labels but X has {seqs.n_sequences} sequences."
                )
            y_rows = np.repeat(y, seqs.lengths, axis=0)
        self.transformer_ = clone(self.transformer)
        rows = self.transformer_.fit_transform(rows_in, y_rows)
        n_rows = rows.shape[0]
        n_frames = seqs.frames.shape[0]
        if n_rows % n_frames:
            raise ValueError(
                f"{type(self.transformer).__name__} turned {n_frames} frames into "
                f"{n_rows} rows; FrameEncoder needs the same number of output rows for "
                "every frame."
            )
        self.rows_per_frame_ = n_rows // n_frames
        self.n_features_out_ = rows.shape[1] * self.rows_per_frame_
        return seqs, rows

    def _validate(self, X, *, reset: bool) -> Sequences:
        """Validate any accepted form; set or check the frame shape."""
        name = type(self).__name__
        tags = get_tags(self.transformer)
        finite = "allow-nan" if tags.input_tags.allow_nan else True
        if is_sequence_list(X) or array_ndim(X) >= 3:
            seqs = check_sequences(
                X, estimator_name=name, dtype="numeric", ensure_all_finite=finite
            )
            if reset:
                self.frame_shape_ = seqs.frame_shape
                self.n_features_in_ = int(np.prod(seqs.frame_shape))
                if hasattr(self, "feature_names_in_"):
                    del self.feature_names_in_
            elif seqs.frame_shape != self.frame_shape_:
                raise ValueError(
                    f"X has frames of shape {seqs.frame_shape}, but {name} was fitted "
                    f"on frames of shape {self.frame_shape_}."
                )
            return seqs
        X2 = validate_data(
            self,
            X,
            reset=reset,
            accept_sparse=tags.input_tags.sparse and ("csr", "csc", "coo"),
            dtype="numeric",
            ensure_all_finite=finite,
        )
        if reset:
            self.frame_shape_ = (X2.shape[1],)
        return Sequences("2d", X2, np.ones(X2.shape[0], dtype=np.int64))

    def _frames_for_transformer(self, seqs: Sequences):
        frames = seqs.frames
        if frames.ndim > 2 and self._frame_mode == "flat":
            frames = frames.reshape(len(frames), -1)
        return frames

    def _to_sequences(self, seqs: Sequences, rows):
        """Put transformer rows back into the form the user passed."""
        n_frames = seqs.frames.shape[0]
        if sp.issparse(rows):
            if seqs.kind == "2d" and rows.shape[0] == n_frames:
                return rows
            rows = rows.toarray()
        rows = np.asarray(rows)
        if rows.shape[0] != n_frames * self.rows_per_frame_:
            raise ValueError(
                f"{type(self.transformer_).__name__} returned {rows.shape[0]} rows for "
                f"{n_frames} frames; at fit time it returned {self.rows_per_frame_} "
                "row(s) per frame."
            )
        rows = rows.reshape(n_frames, -1)
        if seqs.kind == "2d":
            return rows
        dense = _get_output_config("transform", self)["dense"]
        if dense != "default":
            raise ValueError(
                f"set_output(transform={dense!r}) only applies to 2-D input "
                "(n_seq, n_features); sequences of frames are returned as NumPy "
                "arrays. "
                "Use set_output(transform='default')."
            )
        if seqs.kind == "list":
            return seqs.split(rows)
        return rows.reshape(seqs.n_sequences, -1, rows.shape[1])
