"""The faster coupled step of deep multiplicative updates, against brute force."""

import numpy as np
import pytest
import torch
from scipy.optimize import brentq, minimize_scalar
from scipy.special import wrightomega

from sknmf._torch.solvers.mu import solve_coupled, wright_omega


def _entry_objective(w, wt, num, den, lam, y, beta):
    """The majoriser of one entry of an inner code plus its exact next-layer term.

    Its derivative in ``w`` is ``den t**a - num t**b + lam d/dw D(w | y)`` with
    ``t = w / wt`` (``mu.mm_exponents``); for beta = 1 (a = 0, b = -1) that is
    ``den - num wt / w + lam log(w / y)``.
    """
    assert beta == 1.0
    return den * w - num * wt * np.log(w) + lam * (w * np.log(w / y) - w + y)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("lam", [0.01, 1.0, 50.0])
def test_kl_coupled_step_is_the_entrywise_minimiser(seed, lam):
    rng = np.random.default_rng(seed)
    shape = (7, 4)
    Wt = rng.random(shape) * 3 + 0.05
    num = rng.random(shape) * 2 + 0.01
    den = rng.random(shape) * 2 + 0.01
    Y = rng.random(shape) * 3 + 0.05
    got = solve_coupled(
        torch.from_numpy(Wt),
        torch.from_numpy(num),
        torch.from_numpy(den),
        lam,
        torch.from_numpy(Y),
        1.0,
    ).numpy()
    for i in np.ndindex(shape):
        args = (Wt[i], num[i], den[i], lam, Y[i], 1.0)
        res = minimize_scalar(
            _entry_objective,
            bounds=(1e-9, 1e3),
            args=args,
            method="bounded",
            options={"xatol": 1e-12},
        )
        assert _entry_objective(got[i], *args) <= res.fun + 1e-9 * abs(res.fun)
        np.testing.assert_allclose(got[i], res.x, rtol=1e-5)


def test_kl_coupled_step_never_increases_the_entry_objective():
    # From any start the step lands between the old value and the minimiser.
    rng = np.random.default_rng(5)
    shape = (50, 6)
    Wt = rng.random(shape) ** 3 * 10 + 1e-6
    num, den = rng.random(shape) * 5, rng.random(shape) + 1e-3
    Y = rng.random(shape) ** 3 * 10 + 1e-6
    got = solve_coupled(
        *(torch.from_numpy(a) for a in (Wt, num, den)), 2.0, torch.from_numpy(Y), 1.0
    ).numpy()
    before = _entry_objective(Wt, Wt, num, den, 2.0, Y, 1.0)
    after = _entry_objective(got, Wt, num, den, 2.0, Y, 1.0)
    assert np.all(after <= before + 1e-12 * np.abs(before))


def test_wright_omega_matches_scipy():
    a = np.concatenate(
        [np.linspace(-700.0, 700.0, 20001), np.logspace(-8, 300, 400), [0.0, 1.0]]
    )
    a = np.concatenate([a, -a[a <= 700]])
    got = wright_omega(torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(got, wrightomega(a), rtol=1e-13, atol=0)
    # Below log(tiny) omega(a) ~ exp(a) underflows: tiny or zero, never NaN.
    far = wright_omega(torch.tensor([-1e4, -1e300, -np.inf], dtype=torch.float64))
    assert torch.all(far >= 0) and torch.all(far <= 2 * torch.finfo(far.dtype).tiny)


def test_wright_omega_float32():
    a = np.linspace(-80.0, 80.0, 4001)
    got = wright_omega(torch.from_numpy(a).float())
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), wrightomega(a), rtol=1e-5)


def _log_space_minimiser(wt, num, den, lam, y):
    """Brute force: the root in ``s = log w`` of the entry objective's derivative
    ``den - num wt e**-s + lam (s - log y)``, increasing in ``s`` (bracketed
    root finding, not the closed form)."""

    def g(s):
        return den - num * wt * np.exp(-s) + lam * (s - np.log(y))

    with np.errstate(over="ignore"):
        s = brentq(g, -800.0, 800.0, xtol=1e-14, rtol=4 * np.finfo(float).eps)
    return np.exp(s)


def test_kl_coupled_step_at_extreme_magnitudes():
    # Small num (the data barely pulls up: w -> y exp(-den / lam)), huge num and
    # tiny y (the large-z branch), and the ordinary range between.
    Wt = np.array([1.0, 1.0, 1e-8, 5.0, 1e3, 2.0])
    num = np.array([1e-12, 1e-30, 1e-3, 1e6, 1e8, 0.5])
    den = np.array([1.0, 3.0, 1.0, 0.5, 2.0, 1.0])
    Y = np.array([2.0, 1e-3, 1e-4, 1e-6, 2e-6, 3.0])  # >= the EPSILON floor
    lam = 0.2
    got = solve_coupled(
        *(torch.from_numpy(v) for v in (Wt, num, den)), lam, torch.from_numpy(Y), 1.0
    ).numpy()
    for i in range(len(Wt)):
        ref = _log_space_minimiser(Wt[i], num[i], den[i], lam, Y[i])
        np.testing.assert_allclose(got[i], ref, rtol=1e-12)
    # num = 0 exactly: the closed form of lam KL(w | y) + den w alone.
    got = solve_coupled(
        torch.ones(3, dtype=torch.float64),
        torch.zeros(3, dtype=torch.float64),
        torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64),
        lam,
        torch.full((3,), 2.0, dtype=torch.float64),
        1.0,
    ).numpy()
    np.testing.assert_allclose(got, 2.0 * np.exp(-np.array([0.5, 1.0, 2.0]) / lam))


def test_kl_coupled_step_keeps_zeros():
    Wt = torch.tensor([[0.0, 1.0], [2.0, 0.0]], dtype=torch.float64)
    ones = torch.ones(2, 2, dtype=torch.float64)
    got = solve_coupled(Wt, ones, ones, 0.5, ones, 1.0)
    assert got[0, 0] == 0 and got[1, 1] == 0
    assert torch.all(got[Wt > 0] > 0)
