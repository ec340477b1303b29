"""Deep HALS (``sknmf._torch.solvers.deep_hals``) against brute force and properties."""

import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import minimize, nnls
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

from sknmf import DeepNMF
from sknmf._torch.objective import Problem, Regularization, objective
from sknmf._torch.solvers import iterate, make_solver
from sknmf._torch.solvers.deep_hals import (
    DeepHALSSolver,
    _simplex_rows_sweeps_device,
    _simplex_rows_sweeps_host,
    project_simplex,
    simplex_rows_sweeps,
)
from sknmf._torch.solvers.hals import HALSSolver, _scaled_system
from sknmf._torch.solvers.mu import MUSolver

F64 = torch.float64


@pytest.fixture(scope="module")
def digits():
    return load_digits().data.astype(np.float64)


def _simplex_min(f, x0):
    """Brute force: SLSQP on the simplex, to high precision."""
    res = minimize(
        f,
        x0,
        method="SLSQP",
        bounds=[(0.0, None)] * len(x0),
        constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0}],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    return res.x


def _deep_problem(X, ranks, seed=0, weights=None, alpha=0.0, l1_ratio=0.0):
    rng = np.random.default_rng(seed)
    n, p = X.shape
    Ws, Hs, width = [], [], p
    for r in ranks:
        H = rng.random((r, width))
        Hs.append(torch.from_numpy(H / H.sum(1, keepdims=True)))
        Ws.append(torch.from_numpy(rng.random((n, r))))
        width = r
    reg = Regularization(n, [p, *ranks[:-1]], alpha, alpha, l1_ratio)
    weights = weights or [1.0] * len(ranks)
    return Ws, Hs, Problem(2.0, "layer", list(weights), reg)


def _value(X, Ws, Hs, problem):
    total, _ = objective(X, Ws, Hs, problem)
    return float(total)


# -- the weights' update -------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_project_simplex_is_the_euclidean_projection(seed):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=6) * 2
    ref = _simplex_min(lambda x: 0.5 * np.sum((x - v) ** 2), np.full(6, 1 / 6))
    got = project_simplex(torch.from_numpy(v[None, :]))[0].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-7)


@pytest.mark.parametrize("path", ["host", "device"])
@pytest.mark.parametrize("l2", [0.0, 3.0])
def test_one_weight_sweep_is_exact_row_minimisation(l2, path):
    # Both implementations (numpy on CPU tensors, torch kernels elsewhere),
    # each run here on CPU.
    # Brute force: minimise the whole objective over each row in turn, the
    # others fixed (Gauss-Seidel done by a general-purpose solver).
    rng = np.random.default_rng(1)
    W, T = rng.random((30, 3)), rng.random((30, 5))
    C, D = W.T @ T, W.T @ W
    H0 = rng.random((3, 5))
    H0 /= H0.sum(1, keepdims=True)

    def f(H):
        return 0.5 * np.trace(H.T @ D @ H) - np.sum(C * H) + 0.5 * l2 * np.sum(H * H)

    ref = H0.copy()
    for t in range(3):

        def row(x, t=t):
            H = ref.copy()
            H[t] = x
            return f(H)

        ref[t] = _simplex_min(row, ref[t])
    got = torch.from_numpy(H0.copy())
    Gs, Rs = _scaled_system(torch.from_numpy(D), torch.from_numpy(C), 0.0, l2)
    sweeps = {"host": _simplex_rows_sweeps_host, "device": _simplex_rows_sweeps_device}
    assert sweeps[path](got, Gs, Rs, 1) == 1
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-6)
    assert f(got.numpy()) <= f(H0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_weight_sweeps_host_and_device_paths_agree(dtype):
    # Several sweeps with the early stop: the numpy and torch implementations
    # take the same passes to the same rows (up to float summation order),
    # and every pass lowers the objective (exact row minimisation).
    rng = np.random.default_rng(2)
    W, T = rng.random((40, 6)), rng.random((40, 9))
    C, D = torch.tensor(W.T @ T, dtype=dtype), torch.tensor(W.T @ W, dtype=dtype)
    H0 = rng.random((6, 9))
    H0 /= H0.sum(1, keepdims=True)
    Gs, Rs = _scaled_system(D, C, 0.0, 0.0)

    def f(H):
        H = H.astype(np.float64)
        return 0.5 * np.trace(H.T @ (W.T @ W) @ H) - np.sum((W.T @ T) * H)

    values = {}
    for name, sweeps in [
        ("host", _simplex_rows_sweeps_host),
        ("device", _simplex_rows_sweeps_device),
    ]:
        H = torch.tensor(H0, dtype=dtype)
        one = H.clone()
        sweeps(one, Gs, Rs, 1)
        n = sweeps(H, Gs, Rs, 6)
        assert 1 <= n <= 6
        assert f(H.numpy()) <= f(one.numpy()) + 1e-6 <= f(H0) + 1e-6
        np.testing.assert_allclose(H.sum(1).numpy(), 1.0, atol=1e-5)
        values[name] = (n, H)
    assert values["host"][0] == values["device"][0]
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(values["host"][1], values["device"][1], atol=tol)


def test_weight_sweeps_reach_the_constrained_minimiser():
    rng = np.random.default_rng(2)
    W, T = rng.random((40, 3)), rng.random((40, 4))
    C, D = W.T @ T, W.T @ W
    H = rng.random((3, 4))
    H /= H.sum(1, keepdims=True)

    def f(x):
        Hx = x.reshape(3, 4)
        return 0.5 * np.trace(Hx.T @ D @ Hx) - np.sum(C * Hx)

    res = minimize(
        f,
        H.ravel(),
        method="SLSQP",
        bounds=[(0.0, None)] * 12,
        constraints=[
            {"type": "eq", "fun": lambda x, t=t: x.reshape(3, 4)[t].sum() - 1.0}
            for t in range(3)
        ],
        options={"ftol": 1e-15, "maxiter": 2000},
    )
    got = torch.from_numpy(H.copy())
    for _ in range(2000):  # one pass per call: no early stop
        simplex_rows_sweeps(got, torch.from_numpy(C), torch.from_numpy(D), 0.0, 1)
    assert f(got.numpy().ravel()) <= res.fun + 1e-9
    np.testing.assert_allclose(got.numpy().ravel(), res.x, atol=1e-5)


# -- the codes' update ---------------------------------------------------------
@pytest.mark.slow
def test_codes_reach_the_joint_nnls_solution(digits):
    # With the weights fixed the layer-centric objective is a convex quadratic
    # in (W1, W2) jointly: each row is one NNLS problem, solved by scipy.
    X = torch.from_numpy(digits[:12] / 16.0)
    lam = [1.0, 0.7]
    Ws, Hs, problem = _deep_problem(X, (5, 3), weights=lam)
    solver = make_solver("hals", problem, batched=False)
    assert isinstance(solver, DeepHALSSolver)
    Ws = [solver.codes_layout(W) for W in Ws]
    state = solver.start(X, Ws, Hs, update_H=False)
    for _ in range(3000):
        iterate(solver, X, Ws, Hs, state, need_loss=False)
    H1, H2 = Hs[0].numpy(), Hs[1].numpy()
    a, b = np.sqrt(lam[0]), np.sqrt(lam[1])
    A = np.block([[a * H1.T, np.zeros((64, 3))], [b * np.eye(5), -b * H2.T]])
    for i in range(X.shape[0]):
        rhs = np.concatenate([a * X[i].numpy(), np.zeros(5)])
        ref, _ = nnls(A, rhs)
        got = np.concatenate([Ws[0][i].numpy(), Ws[1][i].numpy()])
        # Block coordinate descent between the layers approaches the joint
        # minimiser linearly; the objective itself must match it closely.
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
        value = np.sum((A @ got - rhs) ** 2)
        best = np.sum((A @ ref - rhs) ** 2)
        assert value <= best * (1 + 1e-8) + 1e-12


# -- the iteration -------------------------------------------------------------
@pytest.mark.parametrize("alpha,l1_ratio", [(0.0, 0.0), (1e-3, 0.5), (1e-3, 1.0)])
def test_every_block_update_is_monotone(digits, alpha, l1_ratio):
    X = torch.from_numpy(digits[:200])
    Ws, Hs, problem = _deep_problem(
        X, (12, 6, 3), weights=[1.0, 3.0, 10.0], alpha=alpha, l1_ratio=l1_ratio
    )
    # Each block update is exact; extrapolation (off here) moves the start.
    solver = make_solver("hals", problem, batched=False, extrapolate=False)
    Ws = [solver.codes_layout(W) for W in Ws]
    state = solver.start(X, Ws, Hs, update_H=True)
    before = _value(X, Ws, Hs, problem)
    for _ in range(30):
        state["reg"] = None
        solver.update_codes(X, Ws, Hs, state)
        after_codes = _value(X, Ws, Hs, problem)
        assert after_codes <= before * (1 + 1e-12)
        layers = list(range(3))
        stats = solver.statistics(X, Ws, Hs, layers, state)
        solver.update_weights(layers, stats, Hs, state)
        after = _value(X, Ws, Hs, problem)
        assert after <= after_codes * (1 + 1e-12)
        # The loss from the statistics is the objective itself.
        total, _ = solver.loss(X, Ws, Hs, stats, state)
        np.testing.assert_allclose(float(total), after, rtol=1e-9)
        before = after
    for W, H in zip(Ws, Hs):
        assert (W >= 0).all() and (H >= 0).all()
        np.testing.assert_allclose(H.sum(1).numpy(), 1.0, rtol=1e-12)


def test_statistics_add_up_over_row_blocks(digits):
    X = torch.from_numpy(digits[:90])
    Ws, Hs, problem = _deep_problem(X, (8, 4, 2))
    solver = DeepHALSSolver(problem)
    state = solver.start(X, Ws, Hs, update_H=True)
    full = solver.statistics(X, Ws, Hs, [0, 1, 2], state)
    parts = [
        solver.statistics(X[s], [W[s] for W in Ws], Hs, [0, 1, 2], state)
        for s in (slice(0, 25), slice(25, 60), slice(60, 90))
    ]
    for l, stats in full.items():
        assert set(stats) == set(parts[0][l])
        for name, t in stats.items():
            assert X.shape[0] not in t.shape  # never n_samples-sized
            total = sum(p[l][name] for p in parts)
            np.testing.assert_allclose(total.numpy(), t.numpy(), rtol=1e-12)


def test_which_solver_runs_which_problem():
    deep = Problem(2.0, "layer", [1.0, 1.0])
    assert isinstance(make_solver("auto", deep, batched=False), DeepHALSSolver)
    assert isinstance(make_solver("hals", deep, batched=False), DeepHALSSolver)
    assert isinstance(make_solver("deep_hals", deep, batched=False), DeepHALSSolver)
    assert isinstance(make_solver("hals", deep, batched=True), MUSolver)
    data = Problem(2.0, "data", [1.0, 1.0])
    assert isinstance(make_solver("hals", data, batched=False), MUSolver)
    shallow = Problem(2.0, "layer", [1.0])
    assert isinstance(make_solver("deep_hals", shallow, batched=False), HALSSolver)
    with pytest.raises(ValueError, match="Frobenius"):
        make_solver("deep_hals", Problem(1.0, "layer", [1.0, 1.0]), batched=False)


@pytest.mark.slow
def test_default_deep_fit_of_digits_converges(digits):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = DeepNMF((32, 16, 8), max_iter=200, random_state=0).fit(digits)
    assert model.n_iter_ < 200
    # The joint fit trades the first layer for the deeper ones: every deeper
    # layer is fitted better than layer-wise pretraining left it.
    pre, post = model.pretrain_layer_errors_, model.layer_errors_
    assert post[1] < 0.8 * pre[1] and post[2] < 0.5 * pre[2], (pre, post)


# -- extrapolation ------------------------------------------------------------
def _run(X, Ws, Hs, problem, n_iter, **options):
    solver = make_solver("hals", problem, batched=False, **options)
    Ws = [solver.codes_layout(W.clone()) for W in Ws]
    Hs = [H.clone() for H in Hs]
    state = solver.start(X, Ws, Hs, update_H=True)
    values, steps = [_value(X, Ws, Hs, problem)], []
    for _ in range(n_iter):
        total, _, _ = iterate(solver, X, Ws, Hs, state)
        values.append(_value(X, Ws, Hs, problem))
        # The loss a step reports is still the objective at the iterate.
        assert float(total) == pytest.approx(values[-1], rel=1e-8)
        steps.append(state.get("extrapolation_step"))
    return values, steps, Ws, Hs


@pytest.mark.parametrize("alpha,l1_ratio", [(0.0, 0.0), (1e-3, 0.5), (1e-3, 1.0)])
def test_extrapolation_rule_reads_the_objective(digits, alpha, l1_ratio):
    # The rule's value, from the summed statistics, is the objective minus the
    # constant ||X||²/2 (scikit-learn-free reference: objective()).
    X = torch.from_numpy(digits[:150])
    Ws, Hs, problem = _deep_problem(
        X, (10, 5, 2), weights=[1.0, 0.3, 0.1], alpha=alpha, l1_ratio=l1_ratio
    )
    solver = make_solver("hals", problem, batched=False)
    Ws = [solver.codes_layout(W) for W in Ws]
    state = solver.start(X, Ws, Hs, update_H=True)
    const = 0.5 * problem.weights[0] * float((X * X).sum())
    for _ in range(5):
        iterate(solver, X, Ws, Hs, state)
        ref = _value(X, Ws, Hs, problem) - const
        np.testing.assert_allclose(
            state["extrapolation"]["last"], ref, rtol=1e-9, atol=1e-9 * const
        )


def test_extrapolation_restarts_after_every_increase(digits):
    X = torch.from_numpy(digits[:300])
    Ws, Hs, problem = _deep_problem(X, (16, 8, 4), weights=[1.0, 0.1, 0.03])
    values, steps, Ws_e, Hs_e = _run(X, Ws, Hs, problem, 80)
    assert any(b > 0 for b in steps)
    raised = [
        k for k in range(1, len(values)) if values[k] > values[k - 1] * (1 + 1e-12)
    ]
    # This run has a restart (so the check below checks something).
    assert raised
    for k in raised:
        # Step k raised the objective: the next step is a plain one.
        assert steps[k - 1] == 0.0
    for W, H in zip(Ws_e, Hs_e):
        assert (W >= 0).all() and (H >= 0).all()
        np.testing.assert_allclose(H.sum(1).numpy(), 1.0, rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_extrapolation_gets_lower_in_the_same_iterations(digits, seed):
    # The weakly coupled layers drift: the plain block updates take many small
    # steps that extrapolation makes in few (Ang & Gillis 2019).
    X = torch.from_numpy(digits[:400])
    Ws, Hs, problem = _deep_problem(X, (16, 8, 4), seed=seed, weights=[1.0, 0.1, 0.03])
    plain, _, _, _ = _run(X, Ws, Hs, problem, 60, extrapolate=False)
    fast, _, _, _ = _run(X, Ws, Hs, problem, 60)
    assert min(fast) < min(plain)
    # It passes the plain run's 60-iteration value well before 60 iterations.
    assert next(k for k, v in enumerate(fast) if v <= plain[-1]) < 50
