"""NMF initialisations on tensors: random, NNDSVD and its variants.

The definitions follow Boutsidis & Gallopoulos (2008) as scikit-learn implements
them; randomness comes only from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import math

import torch

from .sparse import CSRMatrix, matmul, tmatmul

INIT_METHODS = ("random", "nndsvd", "nndsvda", "nndsvdar")


def _mean(X) -> torch.Tensor:
    if isinstance(X, CSRMatrix):
        return X.sum() / (X.shape[0] * X.shape[1])
    return X.mean()


def _randn(shape, X, generator) -> torch.Tensor:
    # Draw on the generator's device, then move: CPU generators are the portable kind.
    out = torch.randn(
        shape, generator=generator, dtype=X.dtype, device=generator.device
    )
    return out.to(X.device)


def truncated_svd(X, k: int, generator: torch.Generator, n_oversamples: int = 10):
    """Leading ``k`` singular triplets of ``X`` (dense tensor or CSRMatrix).

    Exact for small dense problems, otherwise the randomized range finder of
    Halko, Martinsson & Tropp (2011) with QR-normalised power iterations.

    Returns
    -------
    U : (n, k), S : (k,), Vt : (k, m)

    Examples
    --------
    >>> import torch
    >>> from sknmf._torch.init import truncated_svd
    >>> X = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    >>> U, S, Vt = truncated_svd(X, 2, torch.Generator().manual_seed(0))
    >>> S
    tensor([3., 2.], dtype=torch.float64)
    """
    n, m = X.shape
    dense = not isinstance(X, CSRMatrix)
    if min(n, m) <= 512 and (dense or n * m <= 2**24):
        # Exact and cheap here; sparse and dense inputs then start identically.
        Xd = X if dense else X.to_dense()
        U, S, Vt = torch.linalg.svd(Xd, full_matrices=False)
        return U[:, :k], S[:k], Vt[:k]
    n_random = min(k + n_oversamples, min(n, m))
    n_iter = 7 if k < 0.1 * min(n, m) else 4
    Q = matmul(X, _randn((m, n_random), X.values if not dense else X, generator))
    Q, _ = torch.linalg.qr(Q)
    for _ in range(n_iter):
        Z, _ = torch.linalg.qr(_xt(X, Q))
        Q, _ = torch.linalg.qr(matmul(X, Z))
    B = tmatmul(Q, X)  # (n_random, m)
    Ub, S, Vt = torch.linalg.svd(B, full_matrices=False)
    U = Q @ Ub
    return U[:, :k], S[:k], Vt[:k]


def _xt(X, Q):
    """``X.T @ Q``."""
    return X.tmatmul(Q) if isinstance(X, CSRMatrix) else X.T @ Q


def initialize_nmf(
    X,
    n_components: int,
    init: str | None,
    generator: torch.Generator,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial factors ``W`` (n, k) and ``H`` (k, m) for ``X ≈ W @ H``.

    Parameters
    ----------
    X : torch.Tensor or CSRMatrix
        Nonnegative data.
    n_components : int
    init : {"random", "nndsvd", "nndsvda", "nndsvdar"} or None
        None picks ``"nndsvda"`` when ``k <= min(n, m)``, else ``"random"``.
    generator : torch.Generator
        The only source of randomness.
    eps : float
        Values below it are truncated to zero (NNDSVD variants).

    Returns
    -------
    W, H : torch.Tensor

    Examples
    --------
    >>> import torch
    >>> from sknmf._torch.init import initialize_nmf
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.rand(6, 4, dtype=torch.float64, generator=g)
    >>> W, H = initialize_nmf(X, 2, "nndsvd", torch.Generator().manual_seed(0))
    >>> W.shape, H.shape, bool((W >= 0).all() and (H >= 0).all())
    (torch.Size([6, 2]), torch.Size([2, 4]), True)
    """
    n, m = X.shape
    ref = X.values if isinstance(X, CSRMatrix) else X
    if init is None:
        init = "nndsvda" if n_components <= min(n, m) else "random"
    if init == "random":
        avg = torch.sqrt(_mean(X) / n_components)
        H = avg * _randn((n_components, m), ref, generator).abs()
        W = avg * _randn((n, n_components), ref, generator).abs()
        return W, H
    if init not in INIT_METHODS:
        raise ValueError(f"Unknown init {init!r}; expected one of {INIT_METHODS}.")
    if n_components > min(n, m):
        raise ValueError(
            f"init={init!r} can only be used when n_components <= min(n_samples, "
            f"n_features) = {min(n, m)}; got {n_components}. Use init='random'."
        )

    U, S, Vt = truncated_svd(X, n_components, generator)
    W = torch.zeros_like(U)
    H = torch.zeros_like(Vt)
    # The leading singular pair of a nonnegative matrix is nonnegative up to sign.
    W[:, 0] = torch.sqrt(S[0]) * U[:, 0].abs()
    H[0] = torch.sqrt(S[0]) * Vt[0].abs()
    if n_components > 1:
        x, y = U[:, 1:], Vt[1:].T  # columns j = 1..k-1
        x_p, y_p = x.clamp_min(0), y.clamp_min(0)
        x_n, y_n = (-x).clamp_min(0), (-y).clamp_min(0)
        x_p_nrm, y_p_nrm = x_p.norm(dim=0), y_p.norm(dim=0)
        x_n_nrm, y_n_nrm = x_n.norm(dim=0), y_n.norm(dim=0)
        m_p, m_n = x_p_nrm * y_p_nrm, x_n_nrm * y_n_nrm
        use_p = m_p > m_n
        u = torch.where(use_p, x_p / x_p_nrm, x_n / x_n_nrm)
        v = torch.where(use_p, y_p / y_p_nrm, y_n / y_n_nrm)
        sigma = torch.where(use_p, m_p, m_n)
        lbd = torch.sqrt(S[1:] * sigma)
        W[:, 1:] = torch.nan_to_num(lbd * u)
        H[1:] = torch.nan_to_num((lbd * v).T)
    W[W < eps] = 0
    H[H < eps] = 0
    if init == "nndsvda":
        avg = _mean(X)
        W[W == 0] = avg
        H[H == 0] = avg
    elif init == "nndsvdar":
        avg = _mean(X)
        zw, zh = W == 0, H == 0
        W[zw] = (avg * _randn((int(zw.sum()),), ref, generator) / 100).abs()
        H[zh] = (avg * _randn((int(zh.sum()),), ref, generator) / 100).abs()
    return W, H


def constant_codes(
    n: int, k: int, mean: torch.Tensor, like: torch.Tensor
) -> torch.Tensor:
    """Constant codes ``sqrt(mean / k)``: the deterministic start of ``transform``.

    Examples
    --------
    >>> import torch
    >>> from sknmf._torch.init import constant_codes
    >>> constant_codes(2, 4, torch.tensor(4.0), torch.zeros(1))
    tensor([[1., 1., 1., 1.],
            [1., 1., 1., 1.]])
    """
    return torch.full(
        (n, k), math.sqrt(float(mean) / k), dtype=like.dtype, device=like.device
    )
