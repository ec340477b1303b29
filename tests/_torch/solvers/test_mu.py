"""Multiplicative updates against scikit-learn and against brute force.

- one MU step (:func:`mu_num_den` then :func:`mu_apply`) equals scikit-learn's
  ``_multiplicative_update_w`` / ``_multiplicative_update_h`` from the same
  factors, and the online fold equals its MiniBatchNMF rule;
- :func:`solve_coupled` and :func:`solve_simplex_rows` minimise the functions
  they claim to (the MM majoriser written out from its primitive, plus the
  exact next-layer term or on the simplex), compared with a numerical
  minimiser that knows nothing of their Newton steps or multipliers.
"""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.optimize import minimize, minimize_scalar
from sklearn.decomposition._nmf import (
    _multiplicative_update_h,
    _multiplicative_update_w,
)

from sknmf._torch.objective import Problem, Regularization
from sknmf._torch.solvers.mu import (
    MUSolver,
    mm_exponents,
    mu_apply,
    mu_num_den,
    solve_coupled,
    solve_simplex_rows,
)
from sknmf._torch.sparse import CSRMatrix

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support:UserWarning")

T = torch.from_numpy
BETAS = [2.0, 1.0, 0.5, 0.0, 1.5, 3.0]


def _problem(n=20, m=9, k=3, seed=0, zeros=0.2):
    rng = np.random.RandomState(seed)
    X = rng.rand(n, m) + 0.05
    X[rng.rand(n, m) < zeros] = 0.0
    return X, rng.rand(n, k) + 0.1, rng.rand(k, m) + 0.1


def _gamma(beta):
    # Févotte & Idier (2011), Table 2: the MM exponent.
    if beta < 1:
        return 1.0 / (2.0 - beta)
    if beta > 2:
        return 1.0 / (beta - 1.0)
    return 1.0


@pytest.mark.parametrize("beta", BETAS + [-0.5, 2.5])
def test_mm_exponents(beta):
    a, b, gamma = mm_exponents(beta)
    assert gamma == pytest.approx(_gamma(beta))
    assert gamma == pytest.approx(1.0 / (a - b))


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("l1, l2", [(0.0, 0.0), (0.2, 0.3)])
def test_one_step_equals_sklearn(beta, sparse, l1, l2):
    X, W, H = _problem()
    gamma = _gamma(beta)
    Xs = sp.csr_matrix(X) if sparse else X
    Xt = CSRMatrix.from_scipy(Xs) if sparse else T(X)
    W_ref, *_ = _multiplicative_update_w(Xs, W.copy(), H, beta, l1, l2, gamma)
    num, den = mu_num_den(Xt, None, T(W), T(H), beta)
    W_new = mu_apply(T(W), num, den, gamma, l1, l2)
    np.testing.assert_allclose(W_new.numpy(), W_ref, rtol=1e-10)
    H_ref = _multiplicative_update_h(Xs, W_ref, H.copy(), beta, l1, l2, gamma)
    num, den = mu_num_den(Xt, T(W_ref), T(H), None, beta)
    H_new = mu_apply(T(H), num, den, gamma, l1, l2)
    np.testing.assert_allclose(H_new.numpy(), H_ref, rtol=1e-10)


@pytest.mark.parametrize("beta", BETAS)
def test_num_den_of_a_middle_factor(beta):
    # T ≈ A M B: N = A^T [T (A M B)^(beta-2)] B^T, P = A^T (A M B)^(beta-1) B^T
    # (Févotte & Idier's gradient split), the product floored at EPSILON
    # below beta = 2 as everywhere else.
    rng = np.random.RandomState(1)
    X = rng.rand(15, 8) + 0.1
    A, M, B = rng.rand(15, 4), rng.rand(4, 3), rng.rand(3, 8)
    V = A @ M @ B
    num, den = mu_num_den(T(X), T(A), T(M), T(B), beta)
    np.testing.assert_allclose(num.numpy(), A.T @ (X * V ** (beta - 2)) @ B.T)
    den_ref = A.T @ V ** (beta - 1) @ B.T
    np.testing.assert_allclose(np.broadcast_to(den.numpy(), den_ref.shape), den_ref)


@pytest.mark.parametrize("beta", [1.0, 0.5, 0.0, 1.5, 3.0])
def test_num_den_with_a_given_product(beta):
    # The caller's product stands in for A M B (here a different matrix, so the
    # test sees that it is read): the numpy formulas of the test above with it,
    # and the given tensor is left as it was.
    X, W, H = _problem()
    V = 2.0 * (W @ H)
    product = T(V.copy())
    num, den = mu_num_den(T(X), None, T(W), T(H), beta, product=product)
    np.testing.assert_allclose(num.numpy(), (X * V ** (beta - 2)) @ H.T)
    den_ref = V ** (beta - 1) @ H.T
    if beta == 1.0:  # the KL denominator does not read the product
        den_ref = np.ones_like(V) @ H.T
    np.testing.assert_allclose(np.broadcast_to(den.numpy(), den_ref.shape), den_ref)
    np.testing.assert_array_equal(product.numpy(), V)


def test_num_den_cache_reuses_the_product_with_fixed_weights():
    X, W, H = _problem()
    cache = {}
    first = mu_num_den(T(X), None, T(W), T(H), 2.0, cache)
    assert "TBt" in cache
    W2 = T(W) * 2
    again = mu_num_den(T(X), None, W2, T(H), 2.0, cache)
    np.testing.assert_allclose(again[0].numpy(), first[0].numpy())
    np.testing.assert_allclose(again[1].numpy(), 2 * W @ H @ H.T)


@pytest.mark.parametrize("beta", [2.0, 1.0, 0.5, 0.0, 1.5, 3.0])
def test_online_fold_equals_sklearn_minibatch_rule(beta):
    # scikit-learn's MiniBatchNMF: A = rho A + N H^(1/gamma), B = rho B + P
    # (+ penalties), H = (A / B)^gamma; its running sums start at (H, 1).
    gamma = _gamma(beta)
    rng = np.random.RandomState(2)
    H = rng.rand(3, 9) + 0.1
    l1, l2, rho = 0.1, 0.2, 0.7
    solver = MUSolver(Problem(beta))
    reg = Regularization(1, [9], 0.0, 0.0, 0.0)
    reg.l1_H, reg.l2_H = l1, l2  # the batch's share, as scikit-learn passes it
    A, B = H.copy(), np.ones(H.shape)
    running = {0: {"num": T(H.copy()), "den": T(np.ones(H.shape))}}
    H_ref, H_ours = H.copy(), T(H.copy())
    for batch in range(2):
        X, W, _ = _problem(seed=10 + batch)
        H_ref = _multiplicative_update_h(X, W, H_ref, beta, l1, l2, gamma, A, B, rho)
        state = solver.start(T(X), [T(W)], [H_ours], update_H=True)
        state["reg"] = reg
        Hs = [H_ours]
        stats = solver.statistics(T(X), [T(W)], Hs, [0], state)
        running = solver.fold(running, stats, rho, Hs, reg)
        solver.update_weights([0], running, Hs, state, online=True)
        H_ours = Hs[0]
        np.testing.assert_allclose(H_ours.numpy(), H_ref, rtol=1e-10)


# -- brute force ---------------------------------------------------------------


def _primitive(t, e):
    """``∫ t^e dt``: the majoriser is ``w̃ (P F_a(t) - N F_b(t))``, t = w / w̃."""
    return np.log(t) if e == -1 else t ** (e + 1) / (e + 1)


def _majoriser(w, w_old, P, N, beta):
    # Its derivative in w is P t^a - N t^b: the MU fixed point t = (N/P)^gamma.
    a, b, _ = mm_exponents(beta)
    t = w / w_old
    return w_old * (P * _primitive(t, a) - N * _primitive(t, b))


def _d_beta(x, y, beta):
    """The beta-divergence d(x | y) of one entry."""
    if beta == 1:
        return x * np.log(x / y) - x + y
    if beta == 0:
        return x / y - np.log(x / y) - 1
    return (x**beta + (beta - 1) * y**beta - beta * x * y ** (beta - 1)) / (
        beta * (beta - 1)
    )


def _coupled_case(beta, lam, shape=(6, 8)):
    """Random entries, MU ratios and next-layer targets over about two decades."""
    rng = np.random.RandomState(int(10 * beta + lam))
    Wt = rng.rand(*shape) + 0.05
    num = rng.rand(*shape) * np.exp(rng.uniform(-2, 2, shape))
    den = rng.rand(*shape) + 0.1
    Y = rng.rand(*shape) * np.exp(rng.uniform(-2, 2, shape))
    got = solve_coupled(T(Wt), T(num), T(den), lam, T(Y), beta).numpy()
    for idx in np.ndindex(shape):
        w0, P, N, y = Wt[idx], den[idx], num[idx], Y[idx]

        def f(s, w0=w0, P=P, N=N, y=y):
            # Each entry: majoriser(w) + lam d(w | Y), strictly convex in w.
            w = np.exp(s)
            return _majoriser(w, w0, P, N, beta) + lam * _d_beta(w, y, beta)

        best = minimize_scalar(
            f, bounds=(-25, 25), method="bounded", options={"xatol": 1e-11}
        )
        yield got[idx], w0, f, best


@pytest.mark.parametrize("beta", [2.0, 1.0, 0.5, 0.0, 1.5])
@pytest.mark.parametrize("lam", [0.3, 2.0])
def test_solve_coupled_is_the_minimiser(beta, lam):
    for w, _, f, best in _coupled_case(beta, lam):
        assert w > 0
        assert np.log(w) == pytest.approx(best.x, abs=1e-6)
        assert f(np.log(w)) <= best.fun + 1e-10 * (1 + abs(best.fun))


@pytest.mark.parametrize("beta", [2.0, 1.0, 0.5, 0.0, 1.5])
@pytest.mark.parametrize("lam", [0.3, 2.0])
def test_solve_coupled_lies_between_the_start_and_the_minimiser(beta, lam):
    # The MM guarantee, which holds even when the solve stops early: the new
    # value is between the old one and the minimiser, so the objective (the
    # majoriser plus the exact term) is no higher than at the start.
    for w, w0, f, best in _coupled_case(beta, lam):
        s, s0 = np.log(w), np.log(w0)
        lo, hi = min(s0, best.x), max(s0, best.x)
        assert lo - 1e-6 <= s <= hi + 1e-6
        assert f(s) <= f(s0) + 1e-10 * (1 + abs(f(s0)))


def test_solve_coupled_keeps_zeros_and_broadcasts_the_kl_row():
    # A zero stays zero (multiplicative); a KL denominator may be one row.
    rng = np.random.RandomState(0)
    Wt = rng.rand(3, 4) + 0.1
    Wt[1, 2] = 0.0
    num, Y = rng.rand(3, 4) + 0.1, rng.rand(3, 4) + 0.1
    den = rng.rand(1, 4) + 0.1
    got = solve_coupled(T(Wt), T(num), T(den), 0.5, T(Y), 1.0)
    assert got[1, 2] == 0.0 and (got[Wt > 0] > 0).all()
    full = solve_coupled(T(Wt), T(num), T(np.repeat(den, 3, 0)), 0.5, T(Y), 1.0)
    torch.testing.assert_close(got, full)


def _simplex_brute(h_old, P, N, beta):
    """min Σ_j majoriser_j(h_j) over the simplex, by SLSQP from the centre."""
    m = len(h_old)

    def f(h):
        return float(np.sum(_majoriser(np.maximum(h, 1e-300), h_old, P, N, beta)))

    res = minimize(
        f,
        np.full(m, 1.0 / m),
        method="SLSQP",
        bounds=[(1e-12, 1.0)] * m,
        constraints=[{"type": "eq", "fun": lambda h: h.sum() - 1.0}],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    assert res.success, res.message
    return res.x, f


def _solve_simplex_rows_as(dtype, Ht, num, den, beta):
    """``solve_simplex_rows`` on numpy inputs converted to ``dtype``."""
    args = [torch.tensor(v, dtype=dtype) for v in (Ht, num, den)]
    return solve_simplex_rows(*args, beta).numpy()


def _simplex_problem(seed, k, m, spread):
    """Rows of ``Ht`` on the simplex, MU numerators and denominators spread
    over ``e^(±spread)``."""
    rng = np.random.RandomState(seed)
    Ht = rng.rand(k, m) + 0.05
    Ht /= Ht.sum(1, keepdims=True)
    num = (rng.rand(k, m) + 0.05) * np.exp(rng.uniform(-spread, spread, (k, m)))
    den = (rng.rand(k, m) + 0.1) * np.exp(rng.uniform(-spread, spread, (k, m)))
    return Ht, num, den


@pytest.mark.parametrize("beta", [2.0, 1.0, 0.5, 0.0, 1.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_solve_simplex_rows_is_the_minimiser(beta, seed):
    Ht, num, den = _simplex_problem(seed, 3, 4, 1)
    k = Ht.shape[0]
    got = solve_simplex_rows(T(Ht), T(num), T(den), beta).numpy()
    np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-12)
    assert (got >= 0).all()
    for i in range(k):
        h_ref, f = _simplex_brute(Ht[i], den[i], num[i], beta)
        # Ours is the exact (or bisected to 2^-40) minimiser: never worse than
        # SLSQP's, and the same point.
        assert f(got[i]) <= f(h_ref) + 1e-9 * (1 + abs(f(h_ref)))
        np.testing.assert_allclose(got[i], h_ref, atol=2e-5)
        assert f(got[i]) <= f(Ht[i]) + 1e-12 * (1 + abs(f(Ht[i])))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("beta", [2.0, 1.0, 0.5, 0.0, 1.5])
def test_solve_simplex_rows_keeps_rows_without_a_minimiser(beta, dtype):
    # Two rows have no minimiser on the simplex and stay as they are: one
    # whose component no code uses (num = den = 0, so it does not enter the
    # objective), and one a beta <= 1 pretraining zeroed (multiplicative
    # updates cannot move a zero; it gave NaN weights in an Itakura-Saito fit
    # of one tiny value). The other row is the one the brute force finds.
    Ht, num, den = _simplex_problem(3, 3, 4, 1)
    num[1], den[1] = 0.0, 0.0
    Ht[2] = 0.0
    got = _solve_simplex_rows_as(dtype, Ht, num, den, beta)
    assert np.isfinite(got).all()
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    np.testing.assert_allclose(got[1:], Ht[1:], rtol=tol, atol=0)
    h_ref, _ = _simplex_brute(Ht[0], den[0], num[0], beta)
    np.testing.assert_allclose(got[0], h_ref, atol=2e-5 if tol < 1e-9 else 1e-4)


def _simplex_row_brentq(h_old, P, N, beta):
    """The row's stationary point for 1 < beta < 2 by nested root finding in
    scipy: each t_j(mu) solves P t^(beta-1) - N t^(beta-2) + mu = 0 (for
    N = 0: t = (max(-mu, 0) / P)^(1 / (beta-1))), and mu makes the row sum
    h_old_j t_j to one."""
    from scipy.optimize import brentq

    a, b = beta - 1.0, beta - 2.0

    def t_one(p, n, mu):
        if n == 0:
            return (max(-mu, 0.0) / p) ** (1.0 / a)

        def g(s):
            return p * np.exp(a * s) - n * np.exp(b * s) + mu

        return np.exp(brentq(g, -300.0, 300.0, xtol=1e-14))

    def t_of(mu):
        return np.array([t_one(p, n, mu) for p, n in zip(P, N)])

    mu = brentq(lambda m: (h_old * t_of(m)).sum() - 1.0, -1e3, 1e3, xtol=1e-14)
    return h_old * t_of(mu)


@pytest.mark.parametrize("beta", [1.2, 1.5, 1.8])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_solve_simplex_rows_between_one_and_two_against_scipy(beta, dtype):
    # Entries over six orders of magnitude and some zero numerators: the
    # nested safeguarded Newton solve lands on scipy's nested roots.
    Ht, num, den = _simplex_problem(5, 4, 7, 3)
    k = Ht.shape[0]
    num[0, :2] = 0.0
    got = _solve_simplex_rows_as(dtype, Ht, num, den, beta)
    tol = 1e-9 if dtype == torch.float64 else 2e-5
    for i in range(k):
        ref = _simplex_row_brentq(Ht[i], den[i], num[i], beta)
        np.testing.assert_allclose(got[i], ref / ref.sum(), atol=tol)


def test_deep_itakura_saito_fit_of_a_tiny_value_stays_finite():
    # The regression the test above pins down, through the facade.
    from sknmf import DeepNMF

    X = np.array([[7e-10]], dtype=np.float32)
    for solver in ("mu", "auto"):
        model = DeepNMF((2, 1, 1), beta_loss=0.0, solver=solver, random_state=75)
        codes = model.fit_transform(X)
        assert all(np.isfinite(H).all() for H in model.layer_components_)
        assert np.isfinite(codes).all()


def test_solve_simplex_rows_kl_with_a_row_denominator():
    # beta = 1 without L2: the denominator is one value per row (W's column
    # sums) and the minimiser is h ∝ h_old * N in closed form.
    rng = np.random.RandomState(4)
    Ht = rng.rand(3, 5) + 0.1
    Ht /= Ht.sum(1, keepdims=True)
    num = rng.rand(3, 5) + 0.1
    den = rng.rand(3, 1) + 0.5
    got = solve_simplex_rows(T(Ht), T(num), T(den), 1.0).numpy()
    for i in range(3):
        h_ref, f = _simplex_brute(Ht[i], np.repeat(den[i], 5), num[i], 1.0)
        np.testing.assert_allclose(got[i], h_ref, atol=2e-5)
    np.testing.assert_allclose(got, Ht * num / (Ht * num).sum(1, keepdims=True))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_simplex_rows_frobenius_solves_the_row_problems(seed):
    # Each row: minimise sum_j P_j t_j^2 / (2 Ht_j) - N_j t_j over the simplex,
    # whose solution is t_j = c_j max(N_j - mu, 0) (c = Ht / P) with the
    # multiplier mu found here by plain bisection on the row sum. Wide rows
    # with exact zeros: the case the active-set Newton steps are for.
    rng = np.random.RandomState(seed)
    Ht = rng.rand(6, 300) * (rng.rand(6, 300) < 0.8)
    num = rng.rand(6, 300) * 3
    den = rng.rand(6, 300) + 0.1
    got = solve_simplex_rows(*(T(a) for a in (Ht, num, den)), 2.0)
    c = Ht / den
    for i in range(6):
        lo, hi = -10.0, 10.0
        for _ in range(200):
            mu = 0.5 * (lo + hi)
            if (c[i] * np.maximum(num[i] - mu, 0)).sum() > 1:
                lo = mu
            else:
                hi = mu
        expected = c[i] * np.maximum(num[i] - 0.5 * (lo + hi), 0)
        np.testing.assert_allclose(got[i].numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(got.sum(1).numpy(), 1.0, rtol=1e-12)
