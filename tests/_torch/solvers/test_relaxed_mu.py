"""Over-relaxed multiplicative updates (``solvers/relaxed_mu.py``).

Each step is checked against what makes it safe, computed here in numpy: the
entry's (or row's) majoriser is no higher at the new point than at the old
one; the objective, from scikit-learn's ``_beta_divergence``, never increases;
at convergence a one-layer fit satisfies the KKT conditions of KL-NMF. The
protocol's properties (row-local codes, summable statistics) are checked on
blocks of rows, as for the other solvers. Other betas: the per-entry
majoriser is checked against Févotte & Idier's auxiliary function built in
numpy from its definition, and MU's step against its brute-force minimiser
(scipy).
"""

import numpy as np
import pytest
import torch
from sklearn.decomposition._nmf import _beta_divergence

from sknmf._torch.objective import Problem, Regularization
from sknmf._torch.solvers import (
    MUSolver,
    RelaxedMUSolver,
    auto_solver,
    iterate,
    make_solver,
)
from sknmf._torch.solvers.mu import solve_coupled, solve_simplex_rows
from sknmf._torch.solvers.relaxed_mu import (
    OMEGA,
    majoriser_change,
    relaxed_coupled,
    relaxed_coupled_beta,
    relaxed_simplex_rows,
    relaxed_simplex_rows_beta,
    relaxed_step,
)

T = torch.from_numpy


def _data(ranks, n=30, m=12, seed=0, zeros=True):
    rng = np.random.RandomState(seed)
    X = rng.rand(n, m) + 0.05
    if zeros:  # beta <= 0 needs X > 0
        X[rng.rand(n, m) < 0.15] = 0.0
    widths = [m, *ranks[:-1]]
    Ws = [T(rng.rand(n, r) + 0.1) for r in ranks]
    Hs = [T(rng.rand(r, w) + 0.1) for r, w in zip(ranks, widths)]
    if len(ranks) > 1:
        Hs = [H / H.sum(1, keepdim=True) for H in Hs]
    return T(X), Ws, Hs


def _problem(ranks, reg=None, n=30, m=12, loss="layer", beta=1.0):
    weights = [1.0, 0.5, 0.25][: len(ranks)] if len(ranks) > 1 else [1.0]
    r = None
    if reg is not None:
        alpha, l1_ratio = reg
        r = Regularization(
            n, [m, *ranks[:-1]], alpha_W=alpha, alpha_H=alpha, l1_ratio=l1_ratio
        )
    return Problem(beta, loss, weights, r)


def _objective(X, Ws, Hs, problem):
    """Σ λ_l KL_l + penalties, in numpy, from scikit-learn's divergence."""
    X, Ws, Hs = X.numpy(), [W.numpy() for W in Ws], [H.numpy() for H in Hs]
    total = 0.0
    for l, lam in enumerate(problem.weights):
        target = X if l == 0 else Ws[l - 1]
        total += lam * _beta_divergence(target, Ws[l], Hs[l], problem.beta)
    reg = problem.reg
    if reg is not None:
        for l, W in enumerate(Ws):
            total += reg.l1_W[l] * W.sum() + 0.5 * reg.l2_W[l] * (W**2).sum()
        for H in Hs:
            total += reg.l1_H * H.sum() + 0.5 * reg.l2_H * (H**2).sum()
    return total


# -- the steps ---------------------------------------------------------------------


def test_relaxed_step_never_raises_the_majoriser():
    rng = np.random.RandomState(0)
    M = rng.rand(400) + 0.01
    N = np.exp(rng.uniform(-8, 8, 400))
    N[:5] = 0.0
    P = np.exp(rng.uniform(-3, 3, 400))
    new = relaxed_step(T(M), T(N), T(P)).numpy()
    t = new / M
    # The majoriser's change, m_old (P (t - 1) - N log t), at the new point.
    change = M * (P * (t - 1) - np.where(N > 0, N * np.log(np.maximum(t, 1e-300)), 0))
    assert np.all(change <= 1e-12 * M * (P + N))
    # Each entry takes the relaxed point where it passes, the MU point elsewhere.
    r = N / P
    relaxed = r**OMEGA
    passes = relaxed - 1 - OMEGA * np.where(r > 0, r * np.log(np.maximum(r, 1e-300)), 0)
    np.testing.assert_allclose(t, np.where(passes <= 0, relaxed, r), rtol=1e-12)
    # Both kinds occur here, and N = 0 gives the classic zero.
    assert 0 < np.mean(passes <= 0) < 1
    assert np.all(new[:5] == 0)


def test_relaxed_step_with_omega_one_is_mu():
    rng = np.random.RandomState(1)
    M, N, P = rng.rand(50), rng.rand(50), rng.rand(50)
    np.testing.assert_allclose(
        relaxed_step(T(M), T(N), T(P), omega=1.0).numpy(), M * N / P, rtol=1e-14
    )


def _phi(w, w_old, num, den, lam, y):
    """The coupled entry's function, up to a constant (numpy)."""
    return den * w - num * w_old * np.log(w) + lam * (w * np.log(w / y) - w)


def test_relaxed_coupled_never_raises_the_entry_function():
    rng = np.random.RandomState(2)
    shape = (60, 5)
    w_old = np.exp(rng.uniform(-6, 3, shape))
    num = np.exp(rng.uniform(-6, 4, shape))
    den = np.exp(rng.uniform(-2, 2, (1, 5)))
    y = np.exp(rng.uniform(-4, 2, shape))
    lam = 0.7
    new = relaxed_coupled(T(w_old), T(num), T(den), lam, T(y)).numpy()
    star = solve_coupled(T(w_old), T(num), T(den), lam, T(y), 1.0).numpy()
    before = _phi(w_old, w_old, num, den, lam, y)
    after = _phi(new, w_old, num, den, lam, y)
    assert np.all(after <= before + 1e-10 * np.abs(before))
    # Where it does not take the minimiser, it takes the relaxed point.
    relaxed = w_old * (star / w_old) ** OMEGA
    took = ~np.isclose(new, star, rtol=1e-9)
    assert took.any() and (~took).any()
    np.testing.assert_allclose(new[took], relaxed[took], rtol=1e-8)


def test_relaxed_coupled_keeps_zeros():
    w_old = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    out = relaxed_coupled(
        w_old,
        torch.ones_like(w_old),
        torch.ones(1, 2, dtype=torch.float64),
        1.0,
        torch.ones_like(w_old),
    )
    assert out[0, 0] == 0 and out[0, 1] > 0


def test_relaxed_simplex_rows_stay_on_the_simplex_and_lower_the_majoriser():
    rng = np.random.RandomState(3)
    H = rng.rand(6, 9) + 0.01
    H[0, 2] = 0.0
    H /= H.sum(1, keepdims=True)
    num = np.exp(rng.uniform(-3, 3, (6, 9)))
    den = rng.rand(6, 1) + 0.5
    star = solve_simplex_rows(T(H), T(num), T(den), 1.0)
    new = relaxed_simplex_rows(T(H), star, T(num)).numpy()
    np.testing.assert_allclose(new.sum(1), 1.0, rtol=1e-12)
    assert new[0, 2] == 0
    c = num * H

    # On the simplex the majoriser is -Σ c log h plus a constant.
    def maj(h):
        return -np.sum(np.where(c > 0, c * np.log(np.where(h > 0, h, 1)), 0), axis=1)

    assert np.all(maj(new) <= maj(H) + 1e-12)
    assert np.all(maj(new) <= maj(H) - 1e-6)


# -- the solver --------------------------------------------------------------------


CASES = [
    ((4,), None),
    ((4,), (0.02, 1.0)),  # L1 only: relaxed steps with the penalty
    ((4,), (0.02, 0.5)),  # with L2: plain MU steps for the factors
    ((5, 3), None),
    ((5, 3, 2), None),
    ((5, 3), (0.02, 1.0)),
    ((5, 3), (0.02, 0.5)),
]


@pytest.mark.parametrize("ranks, reg", CASES, ids=str)
def test_objective_never_increases(ranks, reg):
    X, Ws, Hs = _data(ranks)
    problem = _problem(ranks, reg)
    solver = make_solver("relaxed_mu", problem, batched=False)
    assert type(solver) is RelaxedMUSolver
    state = solver.start(X, Ws, Hs, update_H=True)
    values = [_objective(X, Ws, Hs, problem)]
    for _ in range(40):
        total, _, _ = iterate(solver, X, Ws, Hs, state)
        values.append(_objective(X, Ws, Hs, problem))
        np.testing.assert_allclose(float(total), values[-1], rtol=1e-9)
    for before, after in zip(values, values[1:]):
        assert after <= before * (1 + 1e-12), values
    if len(ranks) > 1:
        for H in Hs:
            torch.testing.assert_close(H.sum(1), torch.ones(H.shape[0], dtype=H.dtype))


@pytest.mark.parametrize("ranks", [(4,), (5, 3)])
def test_codes_alone_never_increase_the_objective(ranks):
    X, Ws, Hs = _data(ranks, seed=4)
    problem = _problem(ranks)
    solver = make_solver("relaxed_mu", problem, batched=False)
    state = solver.start(X, Ws, Hs, update_H=False)
    values = [_objective(X, Ws, Hs, problem)]
    H0 = [H.clone() for H in Hs]
    for _ in range(30):
        iterate(solver, X, Ws, Hs, state)
        values.append(_objective(X, Ws, Hs, problem))
    assert all(b <= a * (1 + 1e-12) for a, b in zip(values, values[1:]))
    assert all(torch.equal(a, b) for a, b in zip(H0, Hs))


def test_one_layer_fit_reaches_a_kkt_point():
    # KKT of min KL(X | W H), W, H >= 0: gradients nonnegative, and zero
    # where the factor is positive.
    rng = np.random.RandomState(5)
    X = T(rng.rand(20, 8) @ rng.rand(8, 10) + 0.01 * rng.rand(20, 10))
    W, H = T(rng.rand(20, 3) + 0.1), T(rng.rand(3, 10) + 0.1)
    Ws, Hs = [W], [H]
    solver = make_solver("relaxed_mu", _problem((3,), n=20, m=10), batched=False)
    state = solver.start(X, Ws, Hs, update_H=True)
    for _ in range(4000):
        iterate(solver, X, Ws, Hs, state, need_loss=False)
    W, H, X = Ws[0].numpy(), Hs[0].numpy(), X.numpy()
    R = X / (W @ H)
    gW = (1 - R) @ H.T
    gH = W.T @ (1 - R)
    scale = np.abs(X).sum() / X.size
    for M, g in ((W, gW), (H, gH)):
        assert g.min() >= -1e-6 * scale * X.shape[1]
        assert np.abs(M * g).max() <= 1e-6 * np.abs(M).max() * scale * X.shape[1]


# -- the protocol ------------------------------------------------------------------


@pytest.mark.parametrize("beta", [1.0, 0.0, 1.5])
@pytest.mark.parametrize("update_H", [True, False])
@pytest.mark.parametrize("ranks", [(4,), (5, 3)])
def test_update_codes_is_row_local(ranks, update_H, beta):
    X, Ws, Hs = _data(ranks, seed=7, zeros=beta > 0)
    solver = make_solver("relaxed_mu", _problem(ranks, beta=beta), batched=False)

    def codes(X, Ws):
        Ws = [W.clone() for W in Ws]
        state = solver.start(X, Ws, Hs, update_H=update_H)
        state["reg"] = None
        for _ in range(3):
            solver.update_codes(X, Ws, Hs, state)
        return Ws

    whole = codes(X, Ws)
    for idx in ([0], [3, 17, 29], list(range(5, 20))):
        part = codes(X[idx], [W[idx] for W in Ws])
        for Wp, Ww in zip(part, whole):
            torch.testing.assert_close(Wp, Ww[idx], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("beta", [1.0, 0.0, 1.5])
@pytest.mark.parametrize("ranks", [(4,), (5, 3)])
def test_statistics_are_summable_and_the_weights_follow_them(ranks, beta):
    X, Ws, Hs = _data(ranks, seed=8, zeros=beta > 0)
    solver = make_solver("relaxed_mu", _problem(ranks, beta=beta), batched=False)
    state = solver.start(X, Ws, Hs, update_H=True)
    layers = list(range(len(ranks)))
    whole = solver.statistics(X, Ws, Hs, layers, state)
    blocks = [slice(0, 7), slice(7, 19), slice(19, 30)]
    parts = [
        solver.statistics(X[b], [W[b] for W in Ws], Hs, layers, state) for b in blocks
    ]
    summed = {l: {k: sum(p[l][k] for p in parts) for k in whole[l]} for l in layers}
    for l in layers:
        for k, v in whole[l].items():
            torch.testing.assert_close(
                torch.broadcast_to(summed[l][k], v.shape), v, rtol=1e-10, atol=1e-12
            )
    a, b = list(Hs), list(Hs)
    solver.update_weights(layers, whole, a, state)
    solver.update_weights(layers, summed, b, state)
    for Ha, Hb in zip(a, b):
        torch.testing.assert_close(Ha, Hb, rtol=1e-9, atol=1e-12)


def test_for_problem():
    for beta in (0.0, 0.5, 1.5, 2.0, 3.0):
        problem = Problem(beta, "layer", [1.0])
        assert (
            type(make_solver("relaxed_mu", problem, batched=False)) is RelaxedMUSolver
        )
    # Mini-batches (the online rule) and the data-centric objective: plain MU.
    assert type(make_solver("relaxed_mu", _problem((4,)), batched=True)) is MUSolver
    data = _problem((5, 3), loss="data")
    assert type(make_solver("relaxed_mu", data, batched=False)) is MUSolver


@pytest.mark.parametrize(
    "ranks, loss, batched, expected",
    [
        ((4,), "layer", False, "mu"),  # one layer: scikit-learn's iteration
        ((5, 3), "layer", False, "relaxed_mu"),
        ((5, 3), "data", False, "mu"),
        ((5, 3), "layer", True, "adam"),
    ],
)
@pytest.mark.parametrize("beta", [1.0, 0.0, 0.5, 1.5])
def test_auto_picks_relaxed_mu_for_deep_layer_centric_fits(
    ranks, loss, batched, expected, beta
):
    problem = _problem(ranks, loss=loss, beta=beta)
    assert auto_solver(problem, batched=batched) == expected


@pytest.mark.parametrize("beta", [-0.5, 2.0, 3.0])
def test_auto_keeps_other_betas_off_relaxed_mu(beta):
    # Not measured (beta < 0, beta > 2) or HALS's (Frobenius).
    assert auto_solver(_problem((5, 3), beta=beta), batched=False) != "relaxed_mu"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_steps_in_both_precisions_on_degenerate_shapes(dtype):
    # One-entry rows (a width-1 layer), a dead row, tiny and huge scales: the
    # steps stay finite, nonnegative, on the simplex where rows are alive.
    H = torch.tensor([[1.0], [0.0]], dtype=dtype)
    num = torch.tensor([[0.0119], [0.5]], dtype=dtype)
    star = torch.tensor([[1.0], [0.0]], dtype=dtype)
    out = relaxed_simplex_rows(H, star, num)
    assert torch.equal(out, star)
    W = torch.tensor([[1e-30, 1e15, 0.0, 1.0]], dtype=dtype)
    num = torch.tensor([[1e-20, 1e10, 1.0, 0.0]], dtype=dtype)
    den = torch.ones(1, 4, dtype=dtype)
    for out in (
        relaxed_step(W, num, den),
        relaxed_coupled(W, num, den, 0.5, torch.full_like(W, 1e-3)),
    ):
        assert out.dtype == dtype
        assert torch.isfinite(out).all() and (out >= 0).all()
        assert out[0, 2] == 0


# -- other betas -------------------------------------------------------------------
#
# The references below are built in numpy from Févotte & Idier (2011): the
# auxiliary function of D_β(X | W H) in H takes Jensen's inequality on the
# convex part of d_β(x | y) in y and the tangent on the concave part.

BETAS = [0.0, 0.5, 1.5, 3.0]


def _exponents(beta):
    # Févotte & Idier (2011), derivative of the auxiliary in t = h/h_old:
    # P t^a - N t^b; MU's exponent is 1 / (a - b).
    if beta < 1:
        return 0.0, beta - 2.0, 1.0 / (2.0 - beta)
    if beta > 2:
        return beta - 1.0, 0.0, 1.0 / (beta - 1.0)
    return beta - 1.0, beta - 2.0, 1.0


def _F(e, t):
    """∫_1^t u^e du."""
    return np.log(t) if e == -1.0 else (t ** (e + 1.0) - 1.0) / (e + 1.0)


def _parts(beta):
    """(convex, concave, d concave/dy, constant in x) parts of d_β(x | y) in y."""
    if beta == 0.0:
        return (
            lambda x, y: x / y,
            lambda x, y: np.log(y),
            lambda x, y: 1 / y,
            lambda x: -np.log(x) - 1,
        )
    const = lambda x: x**beta / (beta * (beta - 1))  # noqa: E731
    pos = lambda x, y: y**beta / beta  # noqa: E731
    neg = lambda x, y: -x * y ** (beta - 1) / (beta - 1)  # noqa: E731
    if beta < 1:
        return neg, lambda x, y: y**beta / beta, lambda x, y: y ** (beta - 1), const
    if beta <= 2:
        return lambda x, y: pos(x, y) + neg(x, y), None, None, const
    return pos, neg, lambda x, y: -x * y ** (beta - 2), const


def _auxiliary(X, W, H, Ht, beta):
    """G(H | Ht) ≥ D_β(X | W H), equal at H = Ht (numpy, from the definition)."""
    convex, concave, dconcave, const = _parts(beta)
    Yt = W @ Ht
    lam = W[:, :, None] * Ht[None] / Yt[:, None, :]  # Jensen weights (i, k, j)
    x = X[:, None, :]
    G = (lam * convex(x, Yt[:, None, :] * (H / Ht)[None])).sum(1)
    if concave is not None:
        Y = W @ H
        G = G + concave(X, Yt) + dconcave(X, Yt) * (Y - Yt)
    return float((G + const(X)).sum())


def _mu_num_den(X, W, Ht, beta):
    Yt = W @ Ht
    return W.T @ (X * Yt ** (beta - 2)), W.T @ Yt ** (beta - 1)


@pytest.mark.parametrize("beta", BETAS)
def test_majoriser_change_is_the_auxiliary_functions(beta):
    rng = np.random.RandomState(10)
    X = rng.rand(7, 6) + 0.1
    W = rng.rand(7, 3) + 0.1
    Ht = rng.rand(3, 6) + 0.1
    D = lambda H: _beta_divergence(X, W, H, beta)  # noqa: E731
    np.testing.assert_allclose(_auxiliary(X, W, Ht, Ht, beta), D(Ht), rtol=1e-12)
    N, P = _mu_num_den(X, W, Ht, beta)
    a, b, _ = _exponents(beta)
    for _ in range(20):
        H = Ht * np.exp(rng.uniform(-2, 2, Ht.shape))
        G = _auxiliary(X, W, H, Ht, beta)
        assert G >= D(H) - 1e-10 * abs(D(H))
        # The code's per-entry change, times m_old P, sums to G's change.
        s = T(np.log(H / Ht))
        change = majoriser_change(s, T(N / P), a, b).numpy() * Ht * P
        np.testing.assert_allclose(
            change.sum(), G - D(Ht), rtol=1e-9, atol=1e-10 * abs(D(Ht))
        )


@pytest.mark.parametrize("beta", BETAS)
def test_mu_step_minimises_the_auxiliary_function_brute_force(beta):
    from scipy.optimize import minimize_scalar

    rng = np.random.RandomState(11)
    X = rng.rand(6, 5) + 0.1
    W = rng.rand(6, 2) + 0.1
    Ht = rng.rand(2, 5) + 0.1
    N, P = _mu_num_den(X, W, Ht, beta)
    mu = relaxed_step(T(Ht), T(N), T(P), omega=1.0, beta=beta).numpy()
    for k, j in [(0, 0), (1, 3), (0, 4)]:

        def G(s, k=k, j=j):
            H = Ht.copy()
            H[k, j] *= np.exp(s)
            return _auxiliary(X, W, H, Ht, beta)

        s = minimize_scalar(
            G, bounds=(-8, 8), method="bounded", options={"xatol": 1e-10}
        ).x
        np.testing.assert_allclose(Ht[k, j] * np.exp(s), mu[k, j], rtol=1e-6)


@pytest.mark.parametrize("beta", BETAS)
def test_relaxed_step_never_raises_the_majoriser_any_beta(beta):
    rng = np.random.RandomState(12)
    M = rng.rand(400) + 0.01
    N = np.exp(rng.uniform(-6, 6, 400))
    N[:5] = 0.0
    P = np.exp(rng.uniform(-3, 3, 400))
    a, b, gamma = _exponents(beta)
    new = relaxed_step(T(M), T(N), T(P), beta=beta).numpy()
    t = new / M
    r = N / P
    with np.errstate(divide="ignore", invalid="ignore"):
        change = np.where(t > 0, _F(a, t) - np.where(N > 0, r * _F(b, t), 0), -1)
        cand = r ** (gamma * OMEGA)
        passes = _F(a, cand) - np.where(N > 0, r * _F(b, cand), 0) <= 0
    assert np.all(change[5:] <= 1e-12 * (1 + r[5:]))
    np.testing.assert_allclose(t, np.where(passes, cand, r**gamma), rtol=1e-10)
    if beta == 0.0:
        # Itakura-Saito: in s = log t the majoriser, e^s - 1 + r (e^-s - 1),
        # is symmetric about its minimiser, so every ω ≤ 2 passes.
        assert np.all(passes)
    else:
        assert 0 < np.mean(passes) < 1
    assert np.all(new[:5] == 0)


def _d(x, y, beta):
    if beta == 0.0:
        return x / y - np.log(x / y) - 1
    return (x**beta + (beta - 1) * y**beta - beta * x * y ** (beta - 1)) / (
        beta * (beta - 1)
    )


@pytest.mark.parametrize("beta", BETAS)
def test_relaxed_coupled_beta_never_raises_the_entry_function(beta):
    rng = np.random.RandomState(13)
    shape = (80, 5)
    w_old = np.exp(rng.uniform(-3, 2, shape))
    num = np.exp(rng.uniform(-3, 3, shape))
    den = np.exp(rng.uniform(-2, 2, shape))
    y = np.exp(rng.uniform(-3, 2, shape))
    lam = 0.7
    a, b, _ = _exponents(beta)

    def phi(w):
        t = w / w_old
        return w_old * (den * _F(a, t) - num * _F(b, t)) + lam * _d(w, y, beta)

    new = relaxed_coupled_beta(T(w_old), T(num), T(den), lam, T(y), beta).numpy()
    star = solve_coupled(T(w_old), T(num), T(den), lam, T(y), beta).numpy()
    assert np.all(phi(new) <= phi(w_old) + 1e-10 * np.abs(phi(w_old)) + 1e-12)
    relaxed = w_old * (star / w_old) ** OMEGA
    took = ~np.isclose(new, star, rtol=1e-9)
    assert took.any() and (~took).any()
    np.testing.assert_allclose(new[took], relaxed[took], rtol=1e-8)


@pytest.mark.parametrize("beta", BETAS)
def test_relaxed_simplex_rows_beta_lower_the_majoriser(beta):
    rng = np.random.RandomState(14)
    H = rng.rand(8, 9) + 0.01
    H[0, 2] = 0.0
    H /= H.sum(1, keepdims=True)
    num = np.exp(rng.uniform(-2, 2, (8, 9)))
    den = np.exp(rng.uniform(-1, 1, (8, 9)))
    a, b, _ = _exponents(beta)
    star = solve_simplex_rows(T(H), T(num), T(den), beta)
    new = relaxed_simplex_rows_beta(T(H), star, T(num), T(den), beta).numpy()
    np.testing.assert_allclose(new.sum(1), 1.0, rtol=1e-12)
    assert new[0, 2] == 0

    def change(h):
        t = np.where(H > 0, h / np.where(H > 0, H, 1), 1)
        return np.sum(H * (den * _F(a, t) - num * _F(b, t)), axis=1)

    assert np.all(change(new) <= 1e-12)
    # Rows not at the minimiser are at the normalised relaxed point.
    star = star.numpy()
    relaxed = np.where(H > 0, H * (star / np.where(H > 0, H, 1)) ** OMEGA, 0)
    relaxed /= relaxed.sum(1, keepdims=True)
    took = ~np.all(np.isclose(new, star, rtol=1e-9), axis=1)
    assert took.any()
    np.testing.assert_allclose(new[took], relaxed[took], rtol=1e-8)


BETA_CASES = [
    ((4,), None),
    ((4,), (0.02, 1.0)),
    ((5, 3), None),
    ((5, 3, 2), None),
    ((5, 3), (0.02, 1.0)),
    ((5, 3), (0.02, 0.5)),
]


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("ranks, reg", BETA_CASES, ids=str)
def test_objective_never_increases_any_beta(ranks, reg, beta):
    X, Ws, Hs = _data(ranks, zeros=beta > 0)
    problem = _problem(ranks, reg, beta=beta)
    solver = make_solver("relaxed_mu", problem, batched=False)
    state = solver.start(X, Ws, Hs, update_H=True)
    values = [_objective(X, Ws, Hs, problem)]
    for _ in range(25):
        total, _, _ = iterate(solver, X, Ws, Hs, state)
        values.append(_objective(X, Ws, Hs, problem))
        np.testing.assert_allclose(float(total), values[-1], rtol=1e-9)
    for before, after in zip(values, values[1:]):
        assert after <= before * (1 + 1e-12), values


@pytest.mark.parametrize("beta", [1.0, *BETAS])
def test_relaxed_ends_below_mu_any_beta(beta):
    # Not a guarantee of the method, a check that the relaxation does act:
    # on this problem 60 relaxed iterations end below 60 of plain MU.
    X, Ws, Hs = _data((5, 3), n=80, m=20, seed=6, zeros=beta > 0)
    problem = _problem((5, 3), n=80, m=20, beta=beta)
    out = []
    for name in ("mu", "relaxed_mu"):
        W_, H_ = [W.clone() for W in Ws], [H.clone() for H in Hs]
        solver = make_solver(name, problem, batched=False)
        state = solver.start(X, W_, H_, update_H=True)
        for _ in range(60):
            iterate(solver, X, W_, H_, state, need_loss=False)
        out.append(_objective(X, W_, H_, problem))
    assert out[1] < out[0]


@pytest.mark.slow
@pytest.mark.parametrize("beta", [0.5, 1.5])
def test_one_layer_fit_reaches_a_kkt_point_any_beta(beta):
    rng = np.random.RandomState(5)
    X = T(rng.rand(20, 8) @ rng.rand(8, 10) + 0.01 * rng.rand(20, 10) + 0.01)
    Ws, Hs = [T(rng.rand(20, 3) + 0.1)], [T(rng.rand(3, 10) + 0.1)]
    problem = _problem((3,), n=20, m=10, beta=beta)
    solver = make_solver("relaxed_mu", problem, batched=False)
    state = solver.start(X, Ws, Hs, update_H=True)
    for _ in range(4000):
        iterate(solver, X, Ws, Hs, state, need_loss=False)
    W, H, X = Ws[0].numpy(), Hs[0].numpy(), X.numpy()
    Y = W @ H
    G = Y ** (beta - 1) - X * Y ** (beta - 2)  # d/dY of D_β
    scale = np.abs(G).sum(0).max()
    for M, g in ((W, G @ H.T), (H, W.T @ G)):
        assert g.min() >= -1e-6 * scale
        assert np.abs(M * g).max() <= 1e-6 * np.abs(M).max() * scale


@pytest.mark.parametrize("beta", [0.0, 1.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_beta_steps_in_both_precisions_on_degenerate_shapes(dtype, beta):
    W = torch.tensor([[1e-30, 1e15, 0.0, 1.0]], dtype=dtype)
    num = torch.tensor([[1e-20, 1e10, 1.0, 0.0]], dtype=dtype)
    den = torch.ones(1, 4, dtype=dtype)
    for out in (
        relaxed_step(W, num, den, beta=beta),
        relaxed_coupled_beta(W, num, den, 0.5, torch.full_like(W, 1e-3), beta),
    ):
        assert out.dtype == dtype
        assert torch.isfinite(out).all() and (out >= 0).all()
        assert out[0, 2] == 0
    H = torch.tensor([[1.0], [0.0]], dtype=dtype)
    star = torch.tensor([[1.0], [0.0]], dtype=dtype)
    num = torch.tensor([[0.0119], [0.5]], dtype=dtype)
    out = relaxed_simplex_rows_beta(H, star, num, torch.ones_like(H), beta)
    assert torch.equal(out, star)
