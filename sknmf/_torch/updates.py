"""Multiplicative updates (MM algorithms) for shallow and deep beta-NMF.

Notation (DESIGN.md §2): ``X ≈ W1 H1``, ``W(l-1) ≈ Wl Hl``. Every update here is a
majorise-minimise step (Févotte & Idier 2011), so the objective never increases:

- a factor ``M`` of ``T ≈ A M B`` (``A``/``B`` may be absent) gets the classic
  update ``M ← M ⊙ (N / P)^γ``, written exactly as scikit-learn's ``mu`` solver
  (same guards), so one layer agrees with ``sklearn.decomposition.NMF``;
- an inner code ``Wl`` of the layer-centric loss is also the *target* of the next
  term ``D(Wl | W(l+1) H(l+1))``; that term is kept exact next to the majoriser and
  each entry's 1-D convex problem is solved (closed form for beta = 2, bisection
  otherwise, cf. Leplat et al. 2023);
- in deep models every ``Hl`` has rows on the unit simplex (the normalisation
  that removes the scale degeneracy), and its majoriser is minimised on that set
  through one Lagrange multiplier per row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .divergence import EPSILON, beta_divergence, frobenius_gram
from .sparse import CSRMatrix, matmul, tmatmul

_EPS64 = float(torch.finfo(torch.float64).eps)
_BISECT_STEPS = 40
_NEWTON_STEPS = 12


def mm_exponents(beta: float) -> tuple[float, float, float]:
    """Exponents ``(a, b, γ)`` of the MM auxiliary function for ``beta``.

    The auxiliary function's derivative in ``t = m / m_old`` is ``P t**a - N t**b``,
    whose root is ``t = (N / P) ** γ`` with ``γ = 1 / (a - b)``.

    Examples
    --------
    >>> from sknmf._torch.updates import mm_exponents
    >>> mm_exponents(2.0), mm_exponents(0.0)
    ((1.0, 0.0, 1.0), (0.0, -2.0, 0.5))
    """
    if beta < 1:
        a, b = 0.0, beta - 2.0
    elif beta > 2:
        a, b = beta - 1.0, 0.0
    else:
        a, b = beta - 1.0, beta - 2.0
    return a, b, 1.0 / (a - b)


def _product(A, M, B):
    out = M if A is None else A @ M
    return out if B is None else out @ B


def mu_num_den(T, A, M, B, beta: float, cache: dict | None = None):
    """Numerator ``N`` and denominator ``P`` of the MU for ``M`` in ``T ≈ A M B``.

    ``A`` (left) or ``B`` (right) may be ``None``. ``P`` may be a broadcastable row
    or column (beta = 1). ``cache`` keeps ``T @ B.T`` across calls when ``M`` is a
    left factor and only ``M`` changes (transform with fixed ``H``).
    """
    if beta == 2.0:
        if A is None:
            if cache is not None and "TBt" in cache:
                TBt = cache["TBt"]
            else:
                TBt = matmul(T, B.T)
                if cache is not None:
                    cache["TBt"] = TBt
            num = TBt
            den = M @ (B @ B.T)
        elif B is None:
            num = tmatmul(A, T)
            den = (A.T @ A) @ M
        else:
            num = A.T @ matmul(T, B.T)
            den = (A.T @ A) @ M @ (B @ B.T)
        return num, den

    sparse = isinstance(T, CSRMatrix)
    left = M if A is None else A @ M  # T ≈ left @ B  (or T ≈ left when B is None)
    if sparse:
        right = B if B is not None else None
        WH_data = (
            T.gather_product(left, right)
            if right is not None
            else T.gather_product(A, M)
            if A is not None
            else None
        )
        WH_safe = WH_data.clamp_min(EPSILON) if beta < 2 else WH_data.clone()
        if beta == 1.0:
            G = T.with_values(T.values / WH_safe)
        else:
            G = T.with_values(T.values * WH_safe ** (beta - 2.0))
        if A is None:
            num = matmul(G, B.T)
        elif B is None:
            num = tmatmul(A, G)
        else:
            num = A.T @ matmul(G, B.T)
        WH = None if beta == 1.0 else _product(A, M, B)
    else:
        WH = left if B is None else left @ B
        WH_safe = WH.clamp_min(EPSILON) if beta < 2 else WH
        if beta == 1.0:
            G = T / WH_safe
        elif beta == 0.0:
            G = T * WH_safe.reciprocal().square()
        else:
            G = T * WH_safe ** (beta - 2.0)
        num = _product(None if A is None else A.T, G, None if B is None else B.T)

    if beta == 1.0:
        if B is None:
            A_sum = A.sum(0)
            A_sum = torch.where(A_sum == 0, torch.ones_like(A_sum), A_sum)
            den = A_sum[:, None]
        elif A is None:
            den = B.sum(1)[None, :]
        else:
            den = A.sum(0)[:, None] * B.sum(1)[None, :]
        return num, den
    if beta < 1:
        WH = WH.clamp_min(EPSILON)
    R = WH ** (beta - 1.0)
    den = _product(None if A is None else A.T, R, None if B is None else B.T)
    return num, den


def mu_apply(M, num, den, gamma: float, l1: float = 0.0, l2: float = 0.0):
    """``M ⊙ (num / (den + l1 + l2 M)) ** γ`` with scikit-learn's zero guard."""
    if l1 > 0:
        den = den + l1
    if l2 > 0:
        den = den + l2 * M
    den = torch.where(den == 0, torch.full_like(den, EPSILON), den)
    delta = num / den
    if gamma != 1.0:
        delta = delta**gamma
    return M * delta


def _coupled_phi(s, P, N, a, b, lam, Wt, Y, beta):
    """Derivative (in ``w``) of the per-entry majoriser at ``w = Wt e**s``, and its
    derivative in ``s``."""
    t = torch.exp(s)
    w = Wt * t
    Pa, Nb = P * t**a, N * t**b
    if beta == 1.0:
        g = torch.log(w / Y)
    else:
        g = (w ** (beta - 1.0) - Y ** (beta - 1.0)) / (beta - 1.0)
    return Pa - Nb + lam * g, a * Pa - b * Nb + lam * w ** (beta - 1.0)


def solve_coupled(Wt, num, den, lam: float, Y, beta: float):
    """Minimise the MM majoriser of ``Wl`` plus the exact term ``lam·D(Wl | Y)``.

    ``num``/``den`` are the MU numerator and denominator of ``Wl`` as a factor
    (weights and regularisation already included), ``Y = W(l+1) H(l+1)`` the
    approximation of ``Wl`` by the next layer. Each entry is a 1-D convex problem,
    solved by Newton's method in ``log w`` safeguarded by a bracket; the returned
    point lies between the old value and the minimiser, so the objective cannot
    increase even if the iterations stop early.
    """
    a, b, gamma = mm_exponents(beta)
    den = torch.where(den == 0, EPSILON, den).expand_as(Wt)
    num = num.expand_as(Wt)
    Y = Y.clamp_min(EPSILON)
    if beta == 2.0:
        # Wt (num + lam Y) / (den + lam Wt), in as few passes over n x k as
        # possible (this runs for every inner layer in every epoch).
        numer = torch.add(num, Y, alpha=lam).mul_(Wt)
        return numer.div_(torch.add(den, Wt, alpha=lam))
    alive = Wt > 0
    Wsafe = torch.where(alive, Wt, torch.ones_like(Wt))
    big = torch.finfo(Wt.dtype).max ** 0.25
    t1 = ((num / den) ** gamma).clamp(1.0 / big, big)
    t2 = (Y / Wsafe).clamp(1.0 / big, big)
    # Both parts of the derivative are <= 0 below min(t1, t2) and >= 0 above the max.
    lo = torch.log(torch.minimum(t1, t2))
    hi = torch.log(torch.maximum(t1, t2))
    s = torch.zeros_like(lo)
    phi0 = None
    for _ in range(_NEWTON_STEPS):
        f, fp = _coupled_phi(s, den, num, a, b, lam, Wsafe, Y, beta)
        if phi0 is None:
            phi0 = f
        lo = torch.where(f <= 0, torch.maximum(lo, s), lo)
        hi = torch.where(f >= 0, torch.minimum(hi, s), hi)
        step = s - f / fp
        inside = (step > lo) & (step < hi)
        s = torch.where(inside, step, 0.5 * (lo + hi))
    f, _ = _coupled_phi(s, den, num, a, b, lam, Wsafe, Y, beta)
    lo = torch.where(f <= 0, torch.maximum(lo, s), lo)
    hi = torch.where(f >= 0, torch.minimum(hi, s), hi)
    zero = torch.zeros_like(s)
    s = torch.where(phi0 > 0, hi.clamp_max(0), zero)
    s = torch.where(phi0 < 0, lo.clamp_min(0), s)
    return torch.where(alive, Wt * torch.exp(s), torch.zeros_like(Wt))


def _simplex_t(mu, P, N, a, b, beta):
    """Entry-wise root ``t`` of ``P t**a - N t**b + mu = 0`` (decreasing in mu)."""
    if a == 0.0:  # beta <= 1
        return ((P + mu).clamp_min(0) / N) ** (1.0 / (beta - 2.0))
    if b == 0.0:  # beta >= 2
        return ((N - mu).clamp_min(0) / P) ** (1.0 / a)
    # 1 < beta < 2: no closed form, bisection in log t.
    lo = torch.full_like(P, -60.0)
    hi = torch.full_like(P, 60.0)
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        t = torch.exp(mid)
        neg = P * t**a - N * t**b + mu <= 0
        lo = torch.where(neg, mid, lo)
        hi = torch.where(neg, hi, mid)
    return torch.exp(0.5 * (lo + hi))


def _simplex_rows_frobenius(Ht, N, P):
    """Exact row-wise solution for beta = 2, where ``t`` is piecewise linear in mu.

    Rows solve ``g(mu) = Σ_j c_j max(N_j - mu, 0) = 1`` with ``c = Ht / P``.
    Newton's method on the decreasing, piecewise-linear ``g`` from the
    all-active root, as for Euclidean projection onto the simplex (Michelot
    1986): each step solves ``g = 1`` on the entries still active, ``mu`` only
    grows and stays below the root, the active set only shrinks, and the root
    is exact once it stops changing, usually after a few steps. A sort of every
    row (the textbook method) costs more than all of them on wide ``H1``.
    """
    tiny = torch.finfo(N.dtype).tiny
    c = Ht / P
    cN = c * N
    mu = (cN.sum(1) - 1.0) / c.sum(1).clamp_min(tiny)
    active = None
    for _ in range(N.shape[1] + 1):
        now = N > mu[:, None]
        if active is not None and torch.equal(now, active):
            break
        active = now
        zero = torch.zeros((), dtype=c.dtype, device=c.device)
        mass = torch.where(active, c, zero).sum(1)
        mu = (torch.where(active, cN, zero).sum(1) - 1.0) / mass.clamp_min(tiny)
    return Ht * (N - mu[:, None]).clamp_min(0) / P


def solve_simplex_rows(Ht, num, den, beta: float):
    """Minimise the MM majoriser of ``H`` subject to every row summing to one.

    One Lagrange multiplier per row: exact for beta = 2 (sorting) and for
    beta = 1 without an L2 penalty (the row sums of ``P`` are constant), bisection
    on the decreasing row sum otherwise.
    """
    a, b, _ = mm_exponents(beta)
    P = torch.where(den == 0, torch.full_like(den, EPSILON), den)
    N = num.expand_as(Ht).clamp_min(0)
    if beta == 2.0:
        H = _simplex_rows_frobenius(Ht, N, P.expand_as(Ht))
    elif beta == 1.0 and P.shape[1] == 1:
        # t = N / (P + mu) with P constant along the row: mu only rescales the row.
        H = Ht * N
    else:
        P = P.expand_as(Ht)
        tiny = torch.finfo(N.dtype).tiny
        Nsafe = torch.where(N > 0, N, torch.full_like(N, tiny))

        def excess(mu):
            return (Ht * _simplex_t(mu[:, None], P, Nsafe, a, b, beta)).sum(1) - 1.0

        if a == 0.0:
            lo = -P.min(1).values
            width = lo.abs().clamp_min(1.0)
            hi = lo + width
            for _ in range(200):
                up = excess(hi) > 0
                if not bool(up.any()):
                    break
                width = torch.where(up, 2 * width, width)
                hi = torch.where(up, lo + width, hi)
        else:
            hi = N.max(1).values
            width = hi.abs().clamp_min(1.0)
            lo = hi - width
            for _ in range(200):
                down = excess(lo) < 0
                if not bool(down.any()):
                    break
                width = torch.where(down, 2 * width, width)
                lo = torch.where(down, hi - width, lo)
        for _ in range(_BISECT_STEPS):
            mid = 0.5 * (lo + hi)
            pos = excess(mid) > 0
            lo = torch.where(pos, mid, lo)
            hi = torch.where(pos, hi, mid)
        H = Ht * _simplex_t((0.5 * (lo + hi))[:, None], P, Nsafe, a, b, beta)
    return H / H.sum(1, keepdim=True).clamp_min(torch.finfo(H.dtype).tiny)


class Regularization:
    """Scaled L1/L2 penalties per layer, scikit-learn's convention.

    ``alpha_W`` is scaled by the width of what each code approximates
    (``n_features`` for layer 1, ``r(l-1)`` deeper), ``alpha_H`` by ``n_samples``.
    """

    def __init__(self, n_samples, widths, alpha_W, alpha_H, l1_ratio):
        self.l1_W = [w * alpha_W * l1_ratio for w in widths]
        self.l2_W = [w * alpha_W * (1.0 - l1_ratio) for w in widths]
        self.l1_H = n_samples * alpha_H * l1_ratio
        self.l2_H = n_samples * alpha_H * (1.0 - l1_ratio)

    def penalty(self, Ws, Hs) -> torch.Tensor:
        """Value of all penalty terms."""
        total = Ws[0].new_zeros(())
        for l, (W, H) in enumerate(zip(Ws, Hs)):
            total = total + self.l1_W[l] * W.sum() + 0.5 * self.l2_W[l] * (W * W).sum()
            total = total + self.l1_H * H.sum() + 0.5 * self.l2_H * (H * H).sum()
        return total


def chain(Hs: Sequence[torch.Tensor], start: int, stop: int):
    """``H(stop) ⋯ H(start+1)`` for 0-based layer indices, or None when empty."""
    out = None
    for l in range(stop - 1, start - 1, -1):
        out = Hs[l] if out is None else out @ Hs[l]
    return out


def layer_terms(X, Ws, Hs, beta: float, loss: str, sq_norm_X=None, WtX=None):
    """Each layer's divergence ``D_l`` (a list of 0-d tensors).

    With ``sq_norm_X`` (``||X||^2``) given, a Frobenius layer-centric model takes
    its first term, the one on X, in Gram form (:func:`frobenius_gram`, with
    ``W1.T @ X`` when given): a stopping test's precision for a fraction of the
    cost, and no n x m temporary.
    """
    terms = []
    for l in range(len(Ws)):
        if loss == "layer":
            target = X if l == 0 else Ws[l - 1]
            if l == 0 and beta == 2.0 and sq_norm_X is not None:
                terms.append(frobenius_gram(X, Ws[0], Hs[0], sq_norm_X, WtX))
            else:
                terms.append(beta_divergence(target, Ws[l], Hs[l], beta))
        else:
            terms.append(beta_divergence(X, Ws[l], chain(Hs, 0, l + 1), beta))
    return terms


def objective(
    X,
    Ws,
    Hs,
    beta,
    loss,
    weights,
    reg: Regularization | None = None,
    sq_norm_X=None,
    WtX=None,
):
    """The fitted objective ``Σ λ_l D_l`` (+ penalties); returns (total, terms).

    ``sq_norm_X`` and ``WtX`` as in :func:`layer_terms`.
    """
    terms = layer_terms(X, Ws, Hs, beta, loss, sq_norm_X, WtX)
    terms = [t.to(Ws[0].dtype) for t in terms]
    total = sum(w * t for w, t in zip(weights, terms))
    if reg is not None:
        total = total + reg.penalty(Ws, Hs)
    return total, terms


def mu_epoch(
    X,
    Ws: list,
    Hs: list,
    *,
    beta: float,
    loss: str = "layer",
    weights: Sequence[float] = (1.0,),
    reg: Regularization | None = None,
    update_H: bool = True,
    caches: list | None = None,
    products: dict | None = None,
) -> None:
    """One sweep of multiplicative updates over all blocks, in place on the lists.

    For one layer this is exactly one iteration of scikit-learn's ``mu`` solver
    (``W`` then ``H``). Deep models update ``W1, H1, W2, H2, …`` in turn. When
    ``products`` is a dict and the model is Frobenius and layer-centric, it
    receives ``"WtX"``: ``W1.T @ X`` for the final ``W1``, from the update of
    ``H1``, so the caller can evaluate the loss on X in Gram form for free.
    """
    L = len(Ws)
    _, _, gamma = mm_exponents(beta)
    deep = L > 1
    for l in range(L):
        lam = weights[l]
        l1_W = reg.l1_W[l] if reg is not None else 0.0
        l2_W = reg.l2_W[l] if reg is not None else 0.0
        cache = caches[l] if caches is not None else None
        # -- codes W_l
        if loss == "layer":
            target = X if l == 0 else Ws[l - 1]
            num, den = mu_num_den(
                target, None, Ws[l], Hs[l], beta, cache if l == 0 else None
            )
        else:
            num, den = mu_num_den(X, None, Ws[l], chain(Hs, 0, l + 1), beta, cache)
        if lam != 1.0:
            num, den = lam * num, lam * den
        if loss == "layer" and l < L - 1:
            den = _penalised(den, l1_W, l2_W, Ws[l])
            Y = Ws[l + 1] @ Hs[l + 1]
            Ws[l] = solve_coupled(Ws[l], num, den, weights[l + 1], Y, beta)
        else:
            Ws[l] = mu_apply(Ws[l], num, den, gamma, l1_W, l2_W)
        if beta < 1:
            Ws[l] = torch.where(Ws[l] < _EPS64, torch.zeros_like(Ws[l]), Ws[l])
        if not update_H:
            continue
        # -- weights H_l
        if loss == "layer":
            target = X if l == 0 else Ws[l - 1]
            num, den = mu_num_den(target, Ws[l], Hs[l], None, beta)
            if l == 0 and beta == 2.0 and products is not None:
                products["WtX"] = num
            if lam != 1.0:
                num, den = lam * num, lam * den
        else:
            num = den = 0
            B = chain(Hs, 0, l)
            for j in range(l, L):
                A = Ws[j] if j == l else Ws[j] @ chain(Hs, l + 1, j + 1)
                n_j, d_j = mu_num_den(X, A, Hs[l], B, beta)
                num, den = num + weights[j] * n_j, den + weights[j] * d_j
        l1_H = reg.l1_H if reg is not None else 0.0
        l2_H = reg.l2_H if reg is not None else 0.0
        if deep:
            den = _penalised(den, l1_H, l2_H, Hs[l])
            Hs[l] = solve_simplex_rows(Hs[l], num, den, beta)
        else:
            Hs[l] = mu_apply(Hs[l], num, den, gamma, l1_H, l2_H)
            if beta <= 1:
                Hs[l] = torch.where(Hs[l] < _EPS64, torch.zeros_like(Hs[l]), Hs[l])


def _penalised(den, l1: float, l2: float, M):
    """``den + l1 + l2 * M``, skipping the terms that are zero."""
    if l2:
        den = torch.add(den, M, alpha=l2)
    return den + l1 if l1 else den


def normalize_rows(W: torch.Tensor, H: torch.Tensor):
    """Rescale rows of ``H`` to sum to one; ``W`` absorbs the scale (``W H`` kept)."""
    s = H.sum(1)
    s = torch.where(s > 0, s, torch.ones_like(s))
    return W * s[None, :], H / s[:, None]
