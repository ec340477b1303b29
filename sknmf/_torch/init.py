"""NMF initialisations on tensors: random, NNDSVD and its variants.

The definitions follow Boutsidis & Gallopoulos (2008) as scikit-learn implements
them; randomness comes only from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import math

import torch

from .sparse import CSRMatrix, matmul, tmatmul

INIT_METHODS = ("random", "nndsvd", "nndsvda", "nndsvdar")


def data_mean(X) -> torch.Tensor:
    """Mean of all entries of a dense tensor or a ``CSRMatrix`` (zeros included)."""
    if isinstance(X, CSRMatrix):
        return X.sum() / (X.shape[0] * X.shape[1])
    return X.mean()


def _randn(shape, X, generator) -> torch.Tensor:
    # Draw on the generator's device, then move: CPU generators are the portable kind.
    out = torch.randn(
        shape, generator=generator, dtype=X.dtype, device=generator.device
    )
    return out.to(X.device)


_POWER_ITERATIONS = 4


def truncated_svd(X, k: int, generator: torch.Generator, n_oversamples: int = 10):
    """Leading ``k`` singular triplets of ``X`` (dense tensor or CSRMatrix).

    Exact (through the Gram matrix of the short side) when that side has at
    most 512 entries, otherwise the randomized range finder of Halko,
    Martinsson & Tropp (2011) with QR-normalised power iterations.

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
    if min(n, m) <= 512 and (dense or n * m <= 2**22):
        # Exact and cheap here; small sparse inputs start as dense ones do.
        return _gram_svd(X if dense else X.to_dense(), k)
    n_random = min(k + n_oversamples, min(n, m))
    # scikit-learn's randomized_svd takes 7 power iterations when k < min(n, m)
    # / 10: an NMF start needs the leading subspace only roughly, and with 4
    # HALS reached scikit-learn cd's error +1% in as many iterations on the
    # benchmark sets (benchmarks/), for 6 fewer passes over X.
    n_iter = _POWER_ITERATIONS
    Q = matmul(X, _randn((m, n_random), X.values if not dense else X, generator))
    Q, _ = torch.linalg.qr(Q)
    for _ in range(n_iter):
        Z, _ = torch.linalg.qr(_xt(X, Q))
        Q, _ = torch.linalg.qr(matmul(X, Z))
    B = tmatmul(Q, X)  # (n_random, m)
    Ub, S, Vt = torch.linalg.svd(B, full_matrices=False)
    U = Q @ Ub
    return U[:, :k], S[:k], Vt[:k]


def _gram_svd(X: torch.Tensor, k: int):
    """Leading singular triplets from the eigenvectors of the short side's Gram
    matrix: memory of ``(n + m) k`` beyond X, where a LAPACK SVD of a tall X
    copies X and returns a factor as large as it. Singular values below about
    ``sqrt(eps)`` of the largest lose relative accuracy, which an
    initialisation does not feel."""
    n, m = X.shape
    tall = m <= n
    G = X.T @ X if tall else X @ X.T
    evals, evecs = torch.linalg.eigh(G.to(torch.float64))
    evals, evecs = evals.flip(0)[:k], evecs.flip(1)[:, :k]
    S = evals.clamp_min(0.0).sqrt()
    cutoff = S[0] * max(n, m) * torch.finfo(X.dtype).eps
    inv = torch.where(S > cutoff, 1.0 / S.clamp_min(1e-300), 0.0).to(X.dtype)
    V = evecs.to(X.dtype)
    S = S.to(X.dtype)
    if tall:
        return (X @ V) * inv, S, V.T
    return V, S, (V.T @ X) * inv[:, None]


def _xt(X, Q):
    """``X.T @ Q``."""
    return X.tmatmul(Q) if isinstance(X, CSRMatrix) else X.T @ Q


def resolve_init(init: str | None, n_components: int, n: int, m: int) -> str:
    """The init to run: None picks ``"nndsvda"`` when the rank allows, else
    ``"random"``; an SVD-based init above ``min(n, m)`` is an error.

    Examples
    --------
    >>> from sknmf._torch.init import resolve_init
    >>> resolve_init(None, 3, 10, 5), resolve_init(None, 8, 10, 5)
    ('nndsvda', 'random')
    """
    if init is None:
        return "nndsvda" if n_components <= min(n, m) else "random"
    if init != "random" and init not in INIT_METHODS:
        raise ValueError(f"Unknown init {init!r}; expected one of {INIT_METHODS}.")
    if init != "random" and n_components > min(n, m):
        raise ValueError(
            f"init = '{init}' can only be used when n_components <= "
            f"min(n_samples, n_features) = {min(n, m)}; got {n_components}. "
            "Use init='random'."
        )
    return init


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
    init = resolve_init(init, n_components, n, m)
    if init == "random":
        avg = torch.sqrt(data_mean(X) / n_components)
        H = avg * _randn((n_components, m), ref, generator).abs()
        W = avg * _randn((n, n_components), ref, generator).abs()
        return W, H

    U, S, Vt = truncated_svd(X, n_components, generator)
    W = torch.zeros_like(U)
    H = torch.zeros_like(Vt)
    # The leading singular pair of a nonnegative matrix is nonnegative up to sign.
    W[:, 0] = torch.sqrt(S[0]) * U[:, 0].abs()
    H[0] = torch.sqrt(S[0]) * Vt[0].abs()
    # Column by column, as scikit-learn does: whole-matrix versions of these
    # steps hold about eight n x k temporaries at once.
    for j in range(1, n_components):
        x, y = U[:, j], Vt[j]
        x_p, y_p = x.clamp_min(0), y.clamp_min(0)
        x_n, y_n = (-x).clamp_min_(0), (-y).clamp_min_(0)
        x_p_nrm, y_p_nrm = x_p.norm(), y_p.norm()
        x_n_nrm, y_n_nrm = x_n.norm(), y_n.norm()
        m_p, m_n = x_p_nrm * y_p_nrm, x_n_nrm * y_n_nrm
        if m_p > m_n:
            u, v, sigma = x_p.div_(x_p_nrm), y_p.div_(y_p_nrm), m_p
        else:
            u, v, sigma = x_n.div_(x_n_nrm), y_n.div_(y_n_nrm), m_n
        lbd = torch.sqrt(S[j] * sigma)
        W[:, j] = torch.nan_to_num(u.mul_(lbd))
        H[j] = torch.nan_to_num(v.mul_(lbd))
    W[W < eps] = 0
    H[H < eps] = 0
    if init == "nndsvda":
        avg = data_mean(X)
        W[W == 0] = avg
        H[H == 0] = avg
    elif init == "nndsvdar":
        avg = data_mean(X)
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
