"""Validation of sequence data shared by the sequence estimators.

Sequences come in three forms:

- ``"2d"``: ``(n_seq, n_features)``, one-frame sequences (the form scikit-learn's checks
  use); validated by the estimators themselves with ``validate_data``;
- ``"array"``: ``(n_seq, n_frames, *frame_shape)``, every sequence as long;
- ``"list"``: a list of ``(n_frames_i, *frame_shape)`` arrays of any lengths.

The helpers here turn the last two into one ``(total_frames, *frame_shape)`` array plus
``lengths``, with errors that name the offending sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.utils import check_array


@dataclass
class Sequences:
    """Frames of every sequence, stacked, with the length of each sequence."""

    kind: str
    """``"array"`` or ``"list"``: the form the user passed (outputs mirror it)."""
    frames: np.ndarray
    """``(total_frames, *frame_shape)``."""
    lengths: np.ndarray
    """``(n_seq,)`` int64, all >= 1."""

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self.frames.shape[1:])

    @property
    def n_sequences(self) -> int:
        return len(self.lengths)

    def split(self, rows: np.ndarray) -> list[np.ndarray]:
        """Cut ``rows`` (one per frame) back into one array per sequence."""
        return np.split(rows, np.cumsum(self.lengths)[:-1])


def array_ndim(X) -> int:
    """Number of dimensions of array-like ``X``; -1 where it is not a regular array.

    Avoids ``np.ndim`` on array-likes that only offer ``__array__``; validation then
    explains what is wrong with an irregular input.
    """
    if hasattr(X, "ndim"):
        return int(X.ndim)
    try:
        return np.asarray(X).ndim
    except (ValueError, TypeError):
        return -1


def is_sequence_list(X) -> bool:
    """Whether ``X`` is a list/tuple of sequences (elements of 2 or more dims).

    A list of 1-D rows is an ordinary 2-D array-like and returns ``False``.
    """
    if not isinstance(X, list | tuple) or len(X) == 0:
        return False
    ndims = []
    for seq in X:
        try:
            ndims.append(np.ndim(seq))
        except ValueError:
            # A ragged nested list inside one sequence: treat as a sequence so
            # that check_sequences reports which one is broken.
            ndims.append(2)
    # Any element with 2+ dims makes this a list of sequences; a malformed element
    # (e.g. 1-D) is then reported by check_sequences with its index.
    return any(n >= 2 for n in ndims)


def check_sequences(
    X,
    *,
    estimator_name: str,
    dtype=(np.float64, np.float32),
    ensure_all_finite: bool | str = True,
    frame_ndim: int | None = None,
) -> Sequences:
    """Validate a 3-D+ array or a list of sequences; return stacked frames.

    Parameters
    ----------
    X : ndarray of shape (n_seq, n_frames, ...) or list of (n_frames_i, ...) arrays
        The sequences (the 2-D form is handled by the caller).
    estimator_name : str
        Used in error messages.
    dtype : dtype, tuple of dtypes or None
        Passed to :func:`sklearn.utils.check_array`.
    ensure_all_finite : bool or "allow-nan"
        Passed to :func:`sklearn.utils.check_array`.
    frame_ndim : int or None
        Required number of dimensions of one frame (1 for vectors), or None for any.

    Returns
    -------
    sequences : Sequences
    """
    if is_sequence_list(X):
        arrays = []
        for i, seq in enumerate(X):
            try:
                n_frames = len(seq)
            except TypeError:
                n_frames = None
            if n_frames == 0:
                raise ValueError(
                    f"X[{i}] is an empty sequence (0 frames); every sequence needs "
                    "at least one frame."
                )
            arr = check_array(
                seq,
                dtype=dtype,
                ensure_all_finite=ensure_all_finite,
                allow_nd=True,
                ensure_min_features=1,
                input_name=f"X[{i}]",
                estimator=estimator_name,
            )
            arrays.append(arr)
        first = arrays[0]
        for i, arr in enumerate(arrays):
            if arr.shape[1:] != first.shape[1:]:
                raise ValueError(
                    f"All sequences must have frames of the same shape: X[0] has "
                    f"frames of shape {first.shape[1:]} but X[{i}] has frames of shape "
                    f"{arr.shape[1:]} (for vector frames: a different number of "
                    "features)."
                )
        out_dtype = np.result_type(*arrays)
        frames = np.concatenate(arrays, axis=0).astype(out_dtype, copy=False)
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        seqs = Sequences("list", frames, lengths)
    else:
        if isinstance(X, list | tuple) and len(X) == 0:
            raise ValueError(
                f"{estimator_name} got an empty list of sequences; pass at least one."
            )
        arr = check_array(
            X,
            dtype=dtype,
            ensure_all_finite=ensure_all_finite,
            allow_nd=True,
            ensure_min_samples=1,
            ensure_min_features=0,
            input_name="X",
            estimator=estimator_name,
        )
        if arr.ndim < 3:
            raise ValueError(
                f"{estimator_name} expected sequences of shape (n_seq, n_frames, ...) "
                f"with at least 3 dimensions, got an array of shape {arr.shape}."
            )
        if arr.shape[1] == 0:
            raise ValueError(
                f"X has shape {arr.shape}: its sequences are empty (0 frames); every "
                "sequence needs at least one frame."
            )
        n_seq, n_frames = arr.shape[:2]
        frames = arr.reshape(n_seq * n_frames, *arr.shape[2:])
        lengths = np.full(n_seq, n_frames, dtype=np.int64)
        seqs = Sequences("array", frames, lengths)
    if any(size == 0 for size in seqs.frame_shape):
        raise ValueError(
            f"Frames of shape {seqs.frame_shape} are empty; each frame needs at least "
            "one value."
        )
    if frame_ndim is not None and len(seqs.frame_shape) != frame_ndim:
        got = seqs.frame_shape
        if frame_ndim == 1:
            raise ValueError(
                f"{estimator_name} expects frames that are feature vectors, i.e. "
                f"sequences of shape (n_seq, n_frames, n_features) or a list of "
                f"(n_frames_i, n_features) arrays; got frames of shape {got}. Encode "
                "image frames first, e.g. with sknmf.FrameEncoder(DeepNMF(...))."
            )
        raise ValueError(
            f"{estimator_name} expects frames with {frame_ndim} dimensions; got frames "
            f"of shape {got}."
        )
    return seqs


def pad_sequences(seqs: Sequences, dtype=np.float32) -> np.ndarray:
    """Zero-pad stacked frames into ``(n_seq, max_len, *frame_shape)``."""
    n_seq, max_len = seqs.n_sequences, int(seqs.lengths.max())
    padded = np.zeros((n_seq, max_len, *seqs.frame_shape), dtype=dtype)
    # Boolean mask of real frames; row-major order matches the stacked frames.
    mask = np.arange(max_len)[None, :] < seqs.lengths[:, None]
    padded[mask] = seqs.frames
    return padded
