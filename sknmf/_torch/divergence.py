"""Beta-divergences between a nonnegative matrix and a product of factors.

This module owns the data-fitting terms: ``D_beta(X | W H)`` (dense, CSR,
row-blocked), its Gram form for Frobenius and ``||X||^2``. Same definitions
and the same numerical guards as scikit-learn's NMF (``EPSILON`` floor, zeros
of ``X`` skipped for beta < 2), so the two agree to rounding on the same
factors.
"""

from __future__ import annotations

import torch

from .sparse import CSRMatrix, matmul

#: Floor applied to ``W @ H`` where a negative power or a division needs it
#: (the float32 machine epsilon, as in scikit-learn).
EPSILON = float(torch.finfo(torch.float32).eps)

_NAMED = {"frobenius": 2.0, "kullback-leibler": 1.0, "itakura-saito": 0.0}


def beta_loss_to_float(beta_loss) -> float:
    """Map a ``beta_loss`` name (``"frobenius"``, ...) or number to beta.

    Examples
    --------
    >>> from sknmf._torch.divergence import beta_loss_to_float
    >>> beta_loss_to_float("kullback-leibler")
    1.0
    """
    if isinstance(beta_loss, str):
        return _NAMED[beta_loss]
    return float(beta_loss)


def beta_divergence(X, W: torch.Tensor, H: torch.Tensor, beta: float) -> torch.Tensor:
    """Return ``D_beta(X | W @ H)`` summed over all entries, as a 0-d tensor.

    For beta = 2 this is half the squared Frobenius norm, beta = 1 the generalised
    Kullback-Leibler divergence and beta = 0 Itakura-Saito.

    Parameters
    ----------
    X : torch.Tensor or CSRMatrix of shape (n, m)
        Nonnegative target.
    W : torch.Tensor of shape (n, k)
    H : torch.Tensor of shape (k, m)
    beta : float

    Returns
    -------
    loss : torch.Tensor
        A 0-d tensor (float64 accumulation is left to the input dtype).

    Examples
    --------
    >>> import torch
    >>> from sknmf._torch.divergence import beta_divergence
    >>> X = torch.tensor([[1.0, 2.0]])
    >>> beta_divergence(X, torch.ones(1, 1), torch.tensor([[1.0, 1.0]]), 2.0)
    tensor(0.5000)
    """
    if isinstance(X, CSRMatrix):
        return _sparse_divergence(X, W, H, beta)
    n, m = X.shape
    # Row blocks bound the n x m temporaries (W @ H and what is built from it)
    # to about 2**21 entries, whatever the size of X.
    step = max(1, _BLOCK // max(1, m))
    if step >= n:
        return _dense_divergence(X, W, H, beta)
    total = None
    for start in range(0, n, step):
        part = _dense_divergence(
            X[start : start + step], W[start : start + step], H, beta
        )
        total = part if total is None else total + part
    return total


# Entries of one block of W @ H in a dense divergence (8 MiB in float32).
_BLOCK = 1 << 21


def _dense_divergence(X, W, H, beta):
    WH = W @ H
    if beta == 2.0:
        # In place: the block's only n x m temporary is W @ H itself.
        return WH.sub_(X).square_().sum() / 2.0
    X_data = X.reshape(-1)
    WH_data = WH.reshape(-1)
    return _from_entries(X_data, WH_data, W, H, beta, X.numel(), WH_data)


def _sparse_divergence(X, W, H, beta):
    if beta == 2.0:
        sq_norm_X = float(torch.sum(X.values.square(), dtype=torch.float64))
        return frobenius_gram(X, W, H, sq_norm_X).to(W.dtype)
    X_data = X.values
    WH_data = X.gather_product(W, H)
    return _from_entries(X_data, WH_data, W, H, beta, X.shape[0] * X.shape[1], None)


def _from_entries(X_data, WH_data, W, H, beta, n_entries, WH_all):
    """The divergence from the entries of X and of ``W @ H`` at the same places.

    ``WH_all`` holds every entry of ``W @ H`` (dense X); for a sparse X it is
    None and the sum of ``(W @ H) ** beta`` is taken in column blocks.
    """
    # Zeros of X do not contribute (0 ** (beta - 1) is taken as 0, not inf).
    keep = X_data > EPSILON
    X_data = X_data[keep]
    WH_data = WH_data[keep].clamp_min(EPSILON)

    if beta == 1.0:
        sum_WH = W.sum(0) @ H.sum(1)
        return (X_data * torch.log(X_data / WH_data)).sum() + sum_WH - X_data.sum()
    if beta == 0.0:
        div = X_data / WH_data
        return div.sum() - n_entries - torch.log(div).sum()
    if WH_all is None:
        sum_WH_beta = sum(
            ((W @ H[:, j : j + 256]) ** beta).sum() for j in range(0, H.shape[1], 256)
        )
    else:
        sum_WH_beta = (WH_all**beta).sum()
    sum_X_WH = (X_data * WH_data ** (beta - 1.0)).sum()
    res = (X_data**beta).sum() - beta * sum_X_WH + sum_WH_beta * (beta - 1.0)
    return res / (beta * (beta - 1.0))


def frobenius_gram(X, W, H, sq_norm_X: float, WtX=None) -> torch.Tensor:
    """``0.5 ||X - W H||_F^2`` in Gram form, without any n x m temporary.

    ``0.5 (||X||^2 - 2 <W^T X, H> + <W^T W, H H^T>)``, the inner products
    accumulated in float64. It costs one product with X, or none when the
    caller passes ``W.T @ X`` (a multiplicative update of ``H`` computes it), where
    ``X - W H`` costs a product and three passes over an n x m array. Rounding:
    about ``eps * ||X||^2`` absolute, fine for a stopping test, which is what it
    serves; exact reports use :func:`beta_divergence`.

    Parameters
    ----------
    X : torch.Tensor or CSRMatrix of shape (n, m)
    W : torch.Tensor of shape (n, k)
    H : torch.Tensor of shape (k, m)
    sq_norm_X : float
        ``||X||_F^2``.
    WtX : torch.Tensor of shape (k, m), default=None
        ``W.T @ X`` for this ``W``, when the caller has it.

    Returns
    -------
    loss : torch.Tensor
        A float64 0-d tensor.

    Examples
    --------
    >>> import torch
    >>> from sknmf._torch.divergence import frobenius_gram
    >>> X = torch.tensor([[1.0, 2.0]])
    >>> frobenius_gram(X, torch.ones(1, 1), torch.tensor([[1.0, 1.0]]), 5.0)
    tensor(0.5000, dtype=torch.float64)
    """
    f64 = torch.float64
    if WtX is None:
        cross = torch.sum(matmul(X, H.T).mul_(W), dtype=f64)
    else:
        cross = torch.sum(WtX * H, dtype=f64)
    H64 = H.to(f64)
    gram = torch.vdot((W.T @ W).to(f64).flatten(), (H64 @ H64.T).flatten())
    return (sq_norm_X - 2.0 * cross + gram).clamp_min(0.0) / 2.0


def squared_norm(X) -> float:
    """``||X||_F^2`` accumulated in float64, without a float64 copy of X.

    ``torch.linalg.vector_norm(X, dtype=torch.float64)`` would first cast all of
    a float32 X (twice its size in memory); this casts a block at a time.

    Parameters
    ----------
    X : Tensor or CSRMatrix of shape (n_samples, n_features)
        Dense, ``torch.sparse_csr`` or :class:`~sknmf._torch.sparse.CSRMatrix`.

    Returns
    -------
    value : float
        The sum of the squared entries.

    Examples
    --------
    >>> import torch
    >>> from sknmf._torch.divergence import squared_norm
    >>> squared_norm(torch.tensor([[3.0, 4.0]]))
    25.0
    """
    if isinstance(X, CSRMatrix):
        vals = X.values
    elif X.layout in (torch.sparse_csr, torch.sparse_coo):
        vals = X.values()
    else:
        vals = X
    vals = vals.reshape(-1) if vals.is_contiguous() else vals.flatten()
    if vals.dtype == torch.float64:
        return float(torch.linalg.vector_norm(vals)) ** 2
    step = 1 << 20
    total = 0.0
    for start in range(0, vals.numel(), step):
        chunk = vals[start : start + step]
        total += float(torch.linalg.vector_norm(chunk, dtype=torch.float64)) ** 2
    return total
