"""Beta-divergences between a nonnegative matrix and a product of factors.

Same definitions and the same numerical guards as scikit-learn's NMF
(``EPSILON`` floor, zeros of ``X`` skipped for beta < 2), so the two agree to
rounding on the same factors.
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
    sparse = isinstance(X, CSRMatrix)
    if beta == 2.0:
        if sparse:
            norm_X = (X.values * X.values).sum()
            norm_WH = ((W.T @ W) * (H @ H.T)).sum()
            cross = (matmul(X, H.T) * W).sum()
            return (norm_X + norm_WH - 2.0 * cross).clamp_min(0.0) / 2.0
        diff = X - W @ H
        return (diff * diff).sum() / 2.0

    if sparse:
        X_data = X.values
        WH_data = X.gather_product(W, H)
        n_entries = X.shape[0] * X.shape[1]
    else:
        WH = W @ H
        X_data = X.reshape(-1)
        WH_data = WH.reshape(-1)
        n_entries = X.numel()

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
    if sparse:
        sum_WH_beta = sum(
            ((W @ H[:, j : j + 256]) ** beta).sum() for j in range(0, H.shape[1], 256)
        )
    else:
        sum_WH_beta = (WH**beta).sum()
    sum_X_WH = (X_data * WH_data ** (beta - 1.0)).sum()
    res = (X_data**beta).sum() - beta * sum_X_WH + sum_WH_beta * (beta - 1.0)
    return res / (beta * (beta - 1.0))


def divergence_to_error(loss: torch.Tensor) -> float:
    """``sqrt(2 * loss)``: scikit-learn's ``reconstruction_err_`` scale.

    Examples
    --------
    >>> import torch
    >>> from sknmf._torch.divergence import divergence_to_error
    >>> divergence_to_error(torch.tensor(2.0))
    2.0
    """
    return float(torch.sqrt(2.0 * loss.clamp_min(0.0)))
