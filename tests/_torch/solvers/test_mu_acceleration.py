"""The faster coupled step of deep multiplicative updates, against brute force."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from sknmf._torch.solvers.mu import solve_coupled


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
