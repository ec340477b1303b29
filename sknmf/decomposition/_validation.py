"""Validation of what users hand to DeepNMF besides X: custom factors and codes.

Also the conversion of validated input to the tensors the solvers read (no copy
where the layout allows it).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.utils.validation import check_array, check_non_negative

from .._torch.sparse import CSRMatrix
from .._utils import power_of_two_scale


def check_custom_factors(W, H, X, ranks, device, online=False):
    """The factors given with ``init="custom"``, checked, as tensors of X's dtype.

    ``fit`` needs ``W`` and ``H`` (one array each for one layer, a list per layer
    for deep models); ``partial_fit`` needs ``H`` and takes ``W`` optionally
    (zeros stand in for it). Returns ``(Ws, Hs)``.
    """
    if H is None or (W is None and not online):
        raise ValueError(
            "init='custom' needs both W and H passed to fit (partial_fit: H, "
            "and optionally W)."
        )
    L = len(ranks)
    n_samples, n_features = X.shape
    widths = [n_features, *ranks[:-1]]
    H_list = list(H) if isinstance(H, (list, tuple)) else [H]
    if W is None:
        W_list = [None] * L
    else:
        W_list = list(W) if isinstance(W, (list, tuple)) else [W]
    if len(W_list) != L or len(H_list) != L:
        raise ValueError(
            f"init='custom' with {L} layer(s) needs {L} W and {L} H arrays, got "
            f"{len(W_list)} and {len(H_list)}."
        )
    out_W, out_H = [], []
    for l in range(L):
        for name, A, shape, out in (
            (f"W[{l}]" if L > 1 else "W", W_list[l], (n_samples, ranks[l]), out_W),
            (f"H[{l}]" if L > 1 else "H", H_list[l], (ranks[l], widths[l]), out_H),
        ):
            if A is None:
                out.append(None)
                continue
            dtype = getattr(A, "dtype", None)
            if dtype is not None and np.dtype(dtype) != X.dtype:
                # As scikit-learn: factors of another precision than X are the
                # caller's mistake, not something to cast silently.
                raise TypeError(
                    f"{name} should have the same dtype as X. Got {name}.dtype = "
                    f"{np.dtype(dtype)}, X.dtype = {X.dtype}."
                )
            # scikit-learn's wording, so that code (and tests) matching its
            # messages keeps working.
            whom = f"DeepNMF (input {name})"
            A = check_array(A, dtype=None, input_name=whom)
            for axis, which in ((0, "first"), (1, "second")):
                if A.shape[axis] != shape[axis]:
                    raise ValueError(
                        f"Array with wrong {which} dimension passed to {whom}. "
                        f"Expected {shape[axis]}, but got {A.shape[axis]}."
                    )
            check_non_negative(A, whom)
            if np.max(A) == 0:
                raise ValueError(
                    f"Array passed to {whom} is full of zeros: multiplicative "
                    "updates cannot leave zero."
                )
            out.append(torch.tensor(np.array(A, dtype=X.dtype), device=device))
    if W is None:
        # partial_fit without W: the first codes come from the weights.
        out_W = [
            torch.zeros((n_samples, r), dtype=out_H[0].dtype, device=device)
            for r in ranks
        ]
    return out_W, out_H


def check_codes(X, n_components):
    if sp.issparse(X):
        X = X.toarray()
    X = np.asarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if X.ndim != 2 or X.shape[1] != n_components:
        raise ValueError(
            f"Codes must have shape (n_samples, {n_components}); got {X.shape}."
        )
    if not np.all(np.isfinite(X)):
        raise ValueError(
            "Codes passed to inverse_transform contain NaN or infinity; give "
            "finite codes (e.g. from transform)."
        )
    return X


def to_tensor(X, device):
    """``X`` as a tensor (or CSRMatrix) that shares memory with it where it can.

    The solvers only read X, so on CPU a C-contiguous array (or a canonical CSR
    matrix) is wrapped without a copy: the fit's peak memory is then X plus the
    factors and the products' outputs.
    """
    if sp.issparse(X):
        X = sp.csr_matrix(X)  # shares the arrays of a CSR input
        if not X.has_canonical_format:
            # Sorting in place would reorder the caller's arrays.
            X = X.copy()
            X.sum_duplicates()
        return CSRMatrix.from_scipy(X, device)
    X = np.ascontiguousarray(X)
    if torch.device(device).type != "cpu":
        return torch.as_tensor(X, device=device)
    with warnings.catch_warnings():
        # torch warns that a read-only array could be written through the
        # tensor; these tensors are only read.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(X)


# Data whose entries reach beyond 2**±32 are fitted at an internal scale (a power
# of two, so the rescaling is exact): squares and products of such entries
# overflow float32, or underflow into its floor, long before the data do.
_SAFE_EXPONENT = 32


def safe_scale(X) -> float:
    """A power of two ``s`` such that ``X / s`` peaks near one, or 1.0 if X is tame.

    Examples
    --------
    >>> import numpy as np
    >>> from sknmf.decomposition._validation import safe_scale
    >>> safe_scale(np.array([[3.0, 255.0]])), safe_scale(np.array([[1e300]]))
    (1.0, 1.3393857589828342e+300)
    """
    data = X.data if sp.issparse(X) else X
    return power_of_two_scale(float(np.max(data, initial=0.0)), _SAFE_EXPONENT, X.dtype)


def scaled_tensor(X, scale: float, device):
    """``to_tensor(X / scale)``: no copy when ``scale`` is one."""
    if scale == 1.0:
        return to_tensor(X, device)
    if sp.issparse(X):
        X = sp.csr_matrix(X, copy=True)
        X.data *= X.dtype.type(1.0 / scale)
        return to_tensor(X, device)
    return to_tensor(np.asarray(X) * X.dtype.type(1.0 / scale), device)


def unscale_codes(W: np.ndarray, scale: float) -> np.ndarray:
    """Codes in the user's scale; a clear error where they do not fit the dtype."""
    if scale == 1.0:
        return W
    with np.errstate(over="ignore"):  # an overflow is the error raised below
        out = W.astype(np.float64) * scale
    if np.max(out, initial=0.0) > np.finfo(W.dtype).max:
        raise ValueError(
            f"The codes of this X overflow {W.dtype}: its entries are near the "
            f"largest {W.dtype} value. Convert X to float64."
        )
    return out.astype(W.dtype, copy=False)
