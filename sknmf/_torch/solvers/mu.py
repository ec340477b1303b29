"""Multiplicative updates (MM algorithms) for shallow and deep beta-NMF: ``"mu"``.

Notation (DESIGN.md §2): ``X ≈ W1 H1``, ``W(l-1) ≈ Wl Hl``. Every update here is a
majorise-minimise step (Févotte & Idier 2011), so the objective never increases:

- a factor ``M`` of ``T ≈ A M B`` (``A``/``B`` may be absent) gets the classic
  update ``M ← M ⊙ (N / P)^γ``, written exactly as scikit-learn's ``mu`` solver
  (same guards), so one layer agrees with ``sklearn.decomposition.NMF``;
- an inner code ``Wl`` of the layer-centric loss is also the *target* of the next
  term ``D(Wl | W(l+1) H(l+1))``; that term is kept exact next to the majoriser and
  each entry's 1-D convex problem is solved (closed form for beta = 2 and, through
  Wright's omega function, for beta = 1; safeguarded Newton otherwise; cf.
  Leplat et al. 2023);
- in deep models every ``Hl`` has rows on the unit simplex (the normalisation
  that removes the scale degeneracy), and its majoriser is minimised on that set
  through one Lagrange multiplier per row.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from ..divergence import EPSILON
from ..objective import add_penalty_gradient, chain, objective
from ..sparse import CSRMatrix, matmul, tmatmul
from . import Solver, cached_squared_norm

_EPS64 = float(torch.finfo(torch.float64).eps)
_BISECT_STEPS = 40
# At most this many safeguarded Newton steps per root in the simplex step for
# 1 < beta < 2 (each converges in a few).
_ROOT_STEPS = 100
_NEWTON_STEPS = 12
_NEWTON_RTOL = 1e-9
_OMEGA_STEPS = 2


def mm_exponents(beta: float) -> tuple[float, float, float]:
    """Exponents ``(a, b, γ)`` of the MM auxiliary function for ``beta``.

    The auxiliary function's derivative in ``t = m / m_old`` is ``P t**a - N t**b``,
    whose root is ``t = (N / P) ** γ`` with ``γ = 1 / (a - b)``.

    Examples
    --------
    >>> from sknmf._torch.solvers.mu import mm_exponents
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


def mu_num_den(T, A, M, B, beta: float, cache: dict | None = None, product=None):
    """Numerator ``N`` and denominator ``P`` of the MU for ``M`` in ``T ≈ A M B``.

    ``A`` (left) or ``B`` (right) may be ``None``. ``P`` may be a broadcastable row
    or column (beta = 1). ``cache`` keeps ``T @ B.T`` across calls when ``M`` is a
    left factor and only ``M`` changes (transform with fixed ``H``). ``product``
    is ``A M B`` when the caller already has it (dense ``T``, beta != 2; it is
    not modified).
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
    if product is not None and not sparse:
        left = None
    else:
        left = M if A is None else A @ M  # T ≈ left @ B  (or T ≈ left if B is None)
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
        if product is not None:
            WH = product
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
            # No guard for zero column sums here (scikit-learn's sets them to
            # one): statistics must add up over row blocks, and the numerator's
            # row is zero there, which the weight updates' own guards handle.
            den = A.sum(0)[:, None]
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


def wright_omega(a: torch.Tensor) -> torch.Tensor:
    """Wright's omega function: the real ``z > 0`` with ``z + log z = a``.

    ``z = W0(exp(a))`` (Lambert's W), computed without the exponential that
    overflows: the piecewise starts of Lawrence, Corless & Jeffrey (2012,
    ACM TOMS Algorithm 917) for real arguments (relative error below 4 %),
    then Halley steps on ``f(z) = z + log z - a``: cubic convergence, so two
    reach float64 rounding (5e-15 against SciPy's ``wrightomega`` on
    ``|a| <= 800``; float32: 2e-6, from the rounding of ``f``).
    ``a = -inf`` gives 0.

    Examples
    --------
    >>> import torch
    >>> from sknmf._torch.solvers.mu import wright_omega
    >>> z = wright_omega(torch.tensor([1.0, 0.0], dtype=torch.float64))
    >>> [round(float(v), 12) for v in z]
    [1.0, 0.567143290410]
    """
    tiny = torch.finfo(a.dtype).tiny
    # Below log(tiny) omega is exp(a) to every digit a float holds (or 0).
    a = a.clamp_min(math.log(tiny))
    # Starts (relative error below 4 %): e^a / (1 + e^a) for a < -1 (omega's
    # series in e^a), the Taylor series about a = 1 up to 3, the asymptotic
    # a - log a + log a / a above.
    # (In-place arithmetic throughout: this runs on every inner code entry in
    # every epoch, and its cost is passes over memory.)
    x = a - 1.0
    series = x * (-1.0 / 3072)
    series.add_(-1.0 / 192).mul_(x).add_(1.0 / 16).mul_(x).add_(0.5).mul_(x).add_(1.0)
    big = a.clamp_min(3.0)
    la = big.log()
    asymptotic = la.div(big).add_(big).sub_(la)
    z = torch.where(a < -1.0, torch.sigmoid(a), series)
    z = torch.where(a > 3.0, asymptotic, z)
    for _ in range(_OMEGA_STEPS):
        # Halley: z - 2 f f' / (2 f'^2 - f f''), with f' = (1 + z) / z and
        # f'' = -1 / z^2, is z (1 - 2 q / (2 + q / (1 + z))), q = f / (1 + z):
        # no product overflows for large z.
        z1 = z + 1.0
        q = z.log().add_(z).sub_(a).div_(z1)
        d = q.div(z1).add_(2.0)
        q.mul_(2.0).div_(d)
        z = z.addcmul_(z, q, value=-1.0).clamp_min_(tiny)
    return z


def _solve_coupled_kl(Wt, num, den, lam: float, Y):
    """The coupled step for KL in closed form (Wright's omega).

    Per entry, with ``c = num · Wt``, the stationarity condition
    ``den - c / w + lam log(w / Y) = 0`` becomes, for ``z = c / (lam w)``,
    ``z + log z = den / lam + log(c / (lam Y))``: ``z`` is Wright's omega of
    the right-hand side, and ``w = c / (lam z) = Y exp(z - den / lam)`` (the
    second form for small ``z``, where ``c`` underflows the first; the first
    for large ``z``, where the exponential overflows).
    """
    c = num * Wt
    ratio = den / lam  # a row when den is one: broadcast below, never expanded
    a = c.log().sub_(Y.log().add_(math.log(lam))).add_(ratio)
    z = wright_omega(a)
    small = (z - ratio).exp_().mul_(Y)
    large = c.div_(z).div_(lam)
    w = torch.where(z > 1.0, large, small)
    # Multiplicative updates never leave a zero.
    return torch.where(Wt > 0, w, 0.0)


def solve_coupled(Wt, num, den, lam: float, Y, beta: float):
    """Minimise the MM majoriser of ``Wl`` plus the exact term ``lam·D(Wl | Y)``.

    ``num``/``den`` are the MU numerator and denominator of ``Wl`` as a factor
    (weights and regularisation already included), ``Y = W(l+1) H(l+1)`` the
    approximation of ``Wl`` by the next layer. Each entry is a 1-D convex
    problem: closed form for beta = 2 and for beta = 1 (Wright's omega,
    :func:`wright_omega`); otherwise Newton's method in ``log w`` safeguarded
    by a bracket, whose returned point lies between the old value and the
    minimiser, so the objective cannot increase even if the iterations stop
    early.
    """
    a, b, gamma = mm_exponents(beta)
    den = torch.where(den == 0, EPSILON, den)
    Y = Y.clamp_min(EPSILON)
    if beta == 1.0 and lam > 0:
        return _solve_coupled_kl(Wt, num.expand_as(Wt), den, lam, Y)
    den = den.expand_as(Wt)
    num = num.expand_as(Wt)
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
    if beta == 1.0:
        # KL without the next-layer term (lam = 0): Newton on the majoriser alone.
        offset = torch.log(Wsafe / Y)

        def phi(s):
            Nb = torch.exp(-s).mul_(num)
            f = torch.add(s, offset).mul_(lam).add_(den).sub_(Nb)
            return f, Nb.add_(lam)
    else:

        def phi(s):
            return _coupled_phi(s, den, num, a, b, lam, Wsafe, Y, beta)

    phi0 = None
    for it in range(_NEWTON_STEPS):
        f, fp = phi(s)
        if phi0 is None:
            phi0 = f
        lo = torch.where(f <= 0, torch.maximum(lo, s), lo)
        hi = torch.where(f >= 0, torch.minimum(hi, s), hi)
        step = s - f / fp
        # Closed bounds: at the root the step stays put on a bound that the
        # root itself set; an open test threw converged entries back to the
        # bracket's midpoint (up to 1% off the minimiser after 12 steps).
        inside = (step >= lo) & (step <= hi)
        s_new = torch.where(inside, step, 0.5 * (lo + hi))
        # Newton converges quadratically: once no entry moves by a relative
        # _NEWTON_RTOL, further steps change nothing a float can hold. Any
        # stopping point is safe (see below), so this only saves time.
        done = it % 2 == 1 and float((s_new - s).abs().max()) <= _NEWTON_RTOL
        s = s_new
        if done:
            break
    f, fp = phi(s)
    lo = torch.where(f <= 0, torch.maximum(lo, s), lo)
    hi = torch.where(f >= 0, torch.minimum(hi, s), hi)
    # An entry whose Newton iterate has converged takes it (within a relative
    # _NEWTON_RTOL of the minimiser, approached from either side); the others
    # take the bracket's end on the old value's side, which lies between the
    # old value and the minimiser.
    root = (f / fp).abs() <= _NEWTON_RTOL
    zero = torch.zeros_like(s)
    s_down = torch.where(root, s, hi).clamp_max(0)
    s_up = torch.where(root, s, lo).clamp_min(0)
    s = torch.where(phi0 > 0, s_down, zero)
    s = torch.where(phi0 < 0, s_up, s)
    return torch.where(alive, Wt * torch.exp(s), torch.zeros_like(Wt))


def _simplex_t(mu, P, N, a, b, beta):
    """Entry-wise root ``t`` of ``P t**a - N t**b + mu = 0`` (decreasing in mu),
    in closed form where one exponent is zero (``1 < beta < 2`` has none:
    :func:`_simplex_rows_newton`)."""
    if a == 0.0:  # beta <= 1
        return ((P + mu).clamp_min(0) / N) ** (1.0 / (beta - 2.0))
    return ((N - mu).clamp_min(0) / P) ** (1.0 / a)  # beta >= 2: b == 0


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


def _simplex_rows_newton(Ht, N, P, a: float, b: float):
    """The simplex step for ``1 < beta < 2``: safeguarded Newton, twice nested.

    Each entry's ``t`` solves ``g(s) = P e^(a s) - N e^(b s) + mu = 0`` in
    ``s = log t``, increasing in ``s`` (``a > 0 > b``); each row's multiplier
    ``mu`` solves ``Σ_j Ht_j t_j(mu) = 1``, decreasing in ``mu``. Both by
    Newton's method inside a bracket that every evaluation shrinks, bisecting
    where a Newton step would leave it, so each converges whatever its start.
    The entries start from the previous multiplier's solution, so they take a
    few steps each. Nested bisections (40 x 40 passes) cost 200 ms per deep
    iteration of the digits; this takes a few dozen passes.
    """
    dtype = Ht.dtype
    tiny = torch.finfo(dtype).tiny
    N = torch.where(N > 0, N, torch.full_like(N, tiny))
    tol = 8.0 * torch.finfo(dtype).eps
    s = (N / P).log().clamp(-60.0, 60.0)

    def entries(mu, s):
        lo = torch.full_like(P, -60.0)
        hi = torch.full_like(P, 60.0)
        moved = torch.full_like(P, torch.inf)
        active = torch.ones_like(P, dtype=torch.bool)
        for _ in range(_ROOT_STEPS):
            ea, eb = torch.exp(a * s), torch.exp(b * s)
            g = P * ea - N * eb + mu
            up = g > 0
            hi = torch.where(up, s, hi)
            lo = torch.where(up, lo, s)
            step = s - g / (a * P * ea - b * N * eb)
            # Newton where it stays in the bracket (inclusive: a converged
            # entry's step is s itself, an end) and at least halves the last
            # move, else bisection (as Numerical Recipes' rtsafe). A converged
            # entry stays: at rounding level a Newton step need not halve.
            newton = (step >= lo) & (step <= hi) & ((step - s).abs() <= 0.5 * moved)
            new = torch.where(active, torch.where(newton, step, 0.5 * (lo + hi)), s)
            moved = (new - s).abs()
            active &= moved > tol * (1.0 + s.abs())
            s = new
            if not bool(active.any()):
                break
        t = torch.exp(s)
        # dt/dmu = -t / g'(s): the rows' derivative for the outer Newton step.
        slope = -t / (a * P * t**a - b * N * t**b)
        return s, t, slope

    mu = torch.zeros(Ht.shape[0], 1, dtype=dtype, device=Ht.device)
    lo = torch.full_like(mu, -torch.inf)
    hi = torch.full_like(mu, torch.inf)
    moved = torch.full_like(mu, torch.inf)
    converged = torch.zeros_like(mu, dtype=torch.bool)
    # A row sum of m terms is exact to about m roundings; the final
    # normalisation removes what is left.
    row_tol = tol * Ht.shape[1]
    for _ in range(_ROOT_STEPS):
        s, t, slope = entries(mu, s)
        excess = (Ht * t).sum(1, keepdim=True) - 1.0
        converged |= excess.abs() <= row_tol
        if bool(converged.all()):
            break
        pos = excess > 0
        lo = torch.where(pos, mu, lo)
        hi = torch.where(pos, hi, mu)
        step = mu - excess / (Ht * slope).sum(1, keepdim=True)
        small = (step - mu).abs() <= torch.minimum(0.5 * moved, hi - lo)
        newton = (step >= lo) & (step <= hi) & small
        # Unbounded side: double the distance from the known end instead.
        width = (mu.abs() + 1.0).where(~torch.isfinite(hi - lo), hi - lo)
        fallback = torch.where(
            torch.isfinite(lo) & torch.isfinite(hi),
            0.5 * (lo + hi),
            torch.where(pos, mu + width, mu - width),
        )
        new = torch.where(converged, mu, torch.where(newton, step, fallback))
        moved = (new - mu).abs()
        mu = new
    return Ht * t


def solve_simplex_rows(Ht, num, den, beta: float):
    """Minimise the MM majoriser of ``H`` subject to every row summing to one.

    One Lagrange multiplier per row: exact for beta = 2 (Newton on the
    piecewise-linear row sum, :func:`_simplex_rows_frobenius`) and for
    beta = 1 without an L2 penalty (the row sums of ``P`` are constant), bisection
    on the decreasing row sum otherwise.
    """
    a, b, _ = mm_exponents(beta)
    P = torch.where(den == 0, torch.full_like(den, EPSILON), den)
    N = num.expand_as(Ht).clamp_min(0)
    if beta == 2.0:
        H = _simplex_rows_frobenius(Ht, N, P.expand_as(Ht))
    elif a != 0.0 and b != 0.0:
        H = _simplex_rows_newton(Ht, N, P.expand_as(Ht), a, b)
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
    total = H.sum(1, keepdim=True)
    # A row with no minimiser, its component unused by every code (num = den
    # = 0) or zeroed by a beta <= 1 pretraining (scikit-learn's MU zeroes tiny
    # weights, and no multiplicative step moves a zero), comes out 0 or
    # inf/inf. Like a HALS component with a zero Gram diagonal
    # (hals._scaled_system), it stays as it is.
    kept = ~(torch.isfinite(total) & (total > 0))
    return torch.where(kept, Ht, H / torch.where(kept, 1.0, total))


class MUSolver(Solver):
    """Multiplicative updates for any beta, one layer or deep (``"mu"``).

    One layer: exactly scikit-learn's ``mu`` iteration (``W`` then ``H``).
    Deep: the codes ``W1..WL`` in turn (an inner code is solved with the exact
    next-layer term, :func:`solve_coupled`), then every ``Hl`` on the simplex
    (:func:`solve_simplex_rows`). In the layer-centric objective ``Hl`` only
    meets ``W(l-1)`` and ``Wl``, so updating all codes before all weights
    gives the same iterates as alternating ``W1, H1, W2, H2, …``; the
    data-centric objective updates its weights layer by layer, each with
    statistics taken after the earlier layers moved. Every step is a
    majorise-minimise step: the objective never increases on a full batch.
    """

    name: ClassVar[str] = "mu"

    def start(self, X, Ws, Hs, *, update_H):
        state = super().start(X, Ws, Hs, update_H=update_H)
        # Products of fixed weights, kept across the epochs of a transform.
        state["caches"] = [{} for _ in Hs] if not update_H else None
        return state

    def initial_codes(self, X, H, reg):
        # Multiplicative updates never leave a zero: start from constant codes.
        return super().initial_codes(X, H, reg)

    def update_codes(self, X, Ws, Hs, state):
        p = self.problem
        L = len(Ws)
        _, _, gamma = mm_exponents(p.beta)
        reg = self.reg(state)
        caches = state.get("caches")
        # Wl Hl of an inner layer, computed as the target term of layer l - 1's
        # coupled step; layer l's own update needs the same product (only
        # W(l-1) moved in between).
        Y = None
        for l in range(L):
            lam = p.weights[l]
            l1 = reg.l1_W[l] if reg is not None else 0.0
            l2 = reg.l2_W[l] if reg is not None else 0.0
            # Fixed weights: X's product with them is the same every epoch
            # (for the layer-centric codes, only the first layer's target is X).
            keep = caches is not None and (l == 0 or p.loss == "data")
            cache = caches[l] if keep else None
            if p.loss == "layer":
                target = X if l == 0 else Ws[l - 1]
                num, den = mu_num_den(
                    target, None, Ws[l], Hs[l], p.beta, cache, product=Y
                )
            else:
                B = chain(Hs, 0, l + 1)
                num, den = mu_num_den(X, None, Ws[l], B, p.beta, cache)
            if lam != 1.0:
                num, den = lam * num, lam * den
            if p.loss == "layer" and l < L - 1:
                den = add_penalty_gradient(den, l1, l2, Ws[l])
                Y = Ws[l + 1] @ Hs[l + 1]
                Ws[l] = solve_coupled(Ws[l], num, den, p.weights[l + 1], Y, p.beta)
            else:
                Ws[l] = mu_apply(Ws[l], num, den, gamma, l1, l2)
            if p.beta < 1:
                Ws[l] = torch.where(Ws[l] < _EPS64, torch.zeros_like(Ws[l]), Ws[l])

    def weight_phases(self):
        L = self.problem.n_layers
        if self.problem.loss == "layer":
            return [list(range(L))]
        return [[l] for l in range(L)]

    def statistics(self, X, Ws, Hs, layers, state):
        p = self.problem
        out = {}
        for l in layers:
            if p.loss == "layer":
                target = X if l == 0 else Ws[l - 1]
                num, den = mu_num_den(target, Ws[l], Hs[l], None, p.beta)
                s = {}
                if l == 0 and p.beta == 2.0:
                    # W1.T @ X also gives the loss on X in Gram form.
                    s["WtX"] = num
                lam = p.weights[l]
                if lam != 1.0:
                    num, den = lam * num, lam * den
                s.update(num=num, den=den)
            else:
                num = den = 0
                B = chain(Hs, 0, l)
                for j in range(l, len(Ws)):
                    A = Ws[j] if j == l else Ws[j] @ chain(Hs, l + 1, j + 1)
                    n_j, d_j = mu_num_den(X, A, Hs[l], B, p.beta)
                    num = num + p.weights[j] * n_j
                    den = den + p.weights[j] * d_j
                s = {"num": num, "den": den}
            out[l] = s
        return out

    def fold(self, running, stats, rho, Hs, reg):
        # scikit-learn's MiniBatchNMF rule (Lefèvre et al. 2011): the batch's
        # numerator absorbs H ** (1 / gamma), the penalties join the
        # denominator, and H = (A / B) ** gamma from the running sums.
        _, _, gamma = mm_exponents(self.problem.beta)
        folded = {}
        for l, s in stats.items():
            H = Hs[l]
            den = s["den"].expand_as(H)
            if reg is not None:
                den = add_penalty_gradient(den, reg.l1_H, reg.l2_H, H)
            num = s["num"] * (H ** (1.0 / gamma) if gamma != 1.0 else H)
            folded[l] = {"num": num, "den": den}
        # The running sums start at (H, 1), as MiniBatchNMF's: started at zero,
        # a first batch without some feature would set its weights to zero, where
        # multiplicative updates stay for good.
        running = dict(running or {})
        for l in folded:
            if l not in running:
                running[l] = {"num": Hs[l].clone(), "den": torch.ones_like(Hs[l])}
        return super().fold(running, folded, rho, Hs, reg)

    def update_weights(self, layers, stats, Hs, state, *, online=False):
        p = self.problem
        _, _, gamma = mm_exponents(p.beta)
        reg = self.reg(state)
        l1 = reg.l1_H if reg is not None else 0.0
        l2 = reg.l2_H if reg is not None else 0.0
        for l in layers:
            num, den = stats[l]["num"], stats[l]["den"]
            if online:
                H = num / den.clamp_min(1e-30)
                if gamma != 1.0:
                    H = H**gamma
                if p.deep:
                    H = H / H.sum(1, keepdim=True).clamp_min(1e-30)
            elif p.deep:
                den = add_penalty_gradient(den, l1, l2, Hs[l])
                H = solve_simplex_rows(Hs[l], num, den, p.beta)
            else:
                H = mu_apply(Hs[l], num, den, gamma, l1, l2)
                if p.beta <= 1:
                    H = torch.where(H < _EPS64, torch.zeros_like(H), H)
            Hs[l] = H

    def loss(self, X, Ws, Hs, stats, state):
        p = self.problem
        sq = None
        if p.beta == 2.0 and p.loss == "layer":
            # The loss on X in Gram form, from the H1 update's own W1.T @ X.
            sq = cached_squared_norm(X, state)
        WtX = stats.get(0, {}).get("WtX")
        return objective(X, Ws, Hs, self.block_problem(state), sq_norm_X=sq, WtX=WtX)
