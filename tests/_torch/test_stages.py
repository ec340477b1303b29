"""The stages of a deep NMF: encode, pretrain, fine_tune, online_step.

``encode`` of one layer is scikit-learn's ``transform`` (``mu``: the same
constant start, updates and stopping rule); deep encoding is deterministic and
never worse than its layer-wise start; pretraining puts the rows of every
``Hl`` on the simplex without changing ``Wl Hl``.
"""

import math

import numpy as np
import pytest
import torch
from sklearn.decomposition import non_negative_factorization
from sklearn.decomposition._nmf import _beta_divergence

from sknmf._torch.init import initialize_nmf
from sknmf._torch.nets import Stage, run_stage
from sknmf._torch.objective import Problem, Regularization
from sknmf._torch.solvers import make_solver
from sknmf._torch.stages import (
    encode,
    fine_tune,
    layer_terms_of,
    online_step,
    pretrain,
)

T = torch.from_numpy


def _deep_data(n=40, m=15, ranks=(6, 3), seed=0):
    rng = np.random.RandomState(seed)
    X = rng.rand(n, ranks[0]) @ rng.rand(ranks[0], m) + 0.05 * rng.rand(n, m)
    widths = [m, *ranks[:-1]]
    Hs = [rng.rand(r, w) + 0.05 for r, w in zip(ranks, widths)]
    Hs = [T(H / H.sum(1, keepdims=True)) for H in Hs]
    return T(X), Hs


def _reference(X, Ws, Hs, beta, loss, weights):
    """Σ λ_l D_l from scikit-learn's divergence."""
    X, Ws, Hs = X.numpy(), [W.numpy() for W in Ws], [H.numpy() for H in Hs]
    total = 0.0
    for l, lam in enumerate(weights):
        if loss == "layer":
            D = _beta_divergence(X if l == 0 else Ws[l - 1], Ws[l], Hs[l], beta)
        else:
            B = Hs[0]
            for H in Hs[1 : l + 1]:
                B = H @ B
            D = _beta_divergence(X, Ws[l], B, beta)
        total += lam * D
    return total


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("beta", [2.0, 1.0, 0.5])
@pytest.mark.parametrize("tol", [0.0, 1e-4])
def test_encode_one_layer_mu_is_sklearns_transform(beta, tol):
    rng = np.random.RandomState(1)
    X = rng.rand(30, 10)
    H = rng.rand(4, 10) + 0.1
    W_ref, _, _ = non_negative_factorization(
        X,
        H=H,
        n_components=4,
        update_H=False,
        solver="mu",
        beta_loss=beta,
        tol=tol,
        max_iter=60,
    )
    (W,) = encode(T(X), [T(H)], Problem(beta), "mu", Stage(max_epochs=60, tol=tol))
    np.testing.assert_allclose(W.numpy(), W_ref, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("solver", ["hals", "mu"])
@pytest.mark.parametrize("loss", ["layer", "data"])
def test_encode_is_deterministic(solver, loss):
    X, Hs = _deep_data()
    problem = Problem(2.0, loss, [1.0, 0.5])
    stage = Stage(max_epochs=30, tol=1e-4)
    a = encode(X, Hs, problem, solver, stage)
    b = encode(X.clone(), [H.clone() for H in Hs], problem, solver, stage)
    assert len(a) == 2
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert all(W.shape == (40, H.shape[0]) for W, H in zip(a, Hs))


def _layerwise_codes(X, Hs, problem, solver, stage):
    """The start of encode's joint stage: each layer encoded alone."""
    Ws, target = [], X
    for l, H in enumerate(Hs):
        (W,) = encode(target, [H], problem.layer(l), solver, stage)
        Ws.append(W)
        target = W
    return Ws


@pytest.mark.parametrize("beta", [2.0, 1.0, 0.5])
@pytest.mark.parametrize("loss", ["layer", "data"])
def test_deep_joint_encoding_is_monotone(beta, loss):
    X, Hs = _deep_data()
    weights = [1.0, 0.5]
    problem = Problem(beta, loss, weights)
    stage = Stage(max_epochs=40, tol=0.0)
    start = _layerwise_codes(X, Hs, problem, "mu", stage)
    joint = encode(X, Hs, problem, "mu", stage)
    f_start = _reference(X, start, Hs, beta, loss, weights)
    f_joint = _reference(X, joint, Hs, beta, loss, weights)
    assert f_joint < f_start
    # Epoch by epoch from that start, the joint objective never goes up.
    solver = make_solver("mu", problem, batched=False)
    res = run_stage(
        X,
        [W.clone() for W in start],
        list(Hs),
        solver,
        Stage(max_epochs=40, tol=0.0, check_every=1),
        update_H=False,
    )
    errors = [res.error_at_init, *res.net.history[:, "error"]]
    for before, after in zip(errors, errors[1:]):
        assert after <= before * (1 + 1e-12)
    assert errors[-1] == pytest.approx(
        math.sqrt(2 * _reference(X, res.Ws, Hs, beta, loss, weights)), rel=1e-8
    )
    # The weights stayed as given.
    assert all(torch.equal(a, b) for a, b in zip(res.Hs, Hs))


def test_encode_from_given_starts():
    X, Hs = _deep_data()
    problem = Problem(1.0, "layer", [1.0, 1.0])
    stage = Stage(max_epochs=0, tol=0.0)
    starts = [torch.full((40, 6), 0.5, dtype=X.dtype), torch.ones(40, 3, dtype=X.dtype)]
    # No epochs: the codes are the starts, copied (the caller's are untouched).
    Ws = encode(X, Hs, problem, "mu", stage, starts=starts)
    assert all(torch.equal(W, S) for W, S in zip(Ws, starts))
    assert all(W.data_ptr() != S.data_ptr() for W, S in zip(Ws, starts))


def _init_layer(ranks):
    def init(l, target):
        return initialize_nmf(target, ranks[l], "nndsvda", torch.Generator())

    return init


@pytest.mark.parametrize("solver", ["hals", "mu"])
def test_pretrain_normalises_rows_of_H_in_deep_models(solver):
    X, _ = _deep_data()
    ranks = (6, 3)
    problem = Problem(2.0, "layer", [1.0, 1.0])
    stages = [Stage(max_epochs=20, tol=0.0)] * 2
    Ws, Hs, results = pretrain(
        X, ranks, _init_layer(ranks), problem, solver, stages, batched=False, lr=0.01
    )
    assert len(results) == 2
    for l, (W, H, res) in enumerate(zip(Ws, Hs, results)):
        torch.testing.assert_close(H.sum(1), torch.ones(ranks[l], dtype=H.dtype))
        # The scale moved into the codes: W H is the layer's own product.
        torch.testing.assert_close(W @ H, res.Ws[0] @ res.Hs[0])
    # Each layer factorises the codes of the layer above (as normalised).
    target = results[1].net.module_.W  # emptied: the net keeps no codes
    assert target[0].shape[0] == 0
    err1 = _beta_divergence(Ws[0].numpy(), Ws[1].numpy(), Hs[1].numpy(), 2.0)
    assert err1 < _beta_divergence(Ws[0].numpy(), np.zeros((40, 3)), Hs[1].numpy(), 2)


def test_pretrain_one_layer_keeps_H_as_fitted():
    X, _ = _deep_data()
    Ws, Hs, results = pretrain(
        X,
        (4,),
        _init_layer((4,)),
        Problem(2.0),
        "hals",
        [Stage(max_epochs=10, tol=0.0)],
        batched=False,
        lr=0.01,
    )
    assert torch.equal(Hs[0], results[0].Hs[0]) and torch.equal(Ws[0], results[0].Ws[0])


def test_pretrain_without_a_stage_keeps_the_initial_factors():
    X, _ = _deep_data()
    ranks = (6, 3)
    Ws, Hs, results = pretrain(
        X,
        ranks,
        _init_layer(ranks),
        Problem(2.0, "layer", [1.0, 1.0]),
        "mu",
        [None, None],
        batched=False,
        lr=0.01,
    )
    assert results == []
    W0, H0 = _init_layer(ranks)(0, X)
    torch.testing.assert_close(Ws[0] @ Hs[0], W0 @ H0)
    torch.testing.assert_close(Hs[0].sum(1), torch.ones(6, dtype=X.dtype))


@pytest.mark.parametrize("loss", ["layer", "data"])
def test_fine_tune_lowers_the_joint_objective(loss):
    X, Hs = _deep_data()
    weights = [1.0, 0.5]
    problem = Problem(1.0, loss, weights)
    Ws = encode(X, Hs, problem, "mu", Stage(max_epochs=5, tol=0.0))
    before = _reference(X, Ws, Hs, 1.0, loss, weights)
    res = fine_tune(
        X,
        Ws,
        list(Hs),
        problem,
        "mu",
        Stage(max_epochs=20, tol=0.0),
        batched=False,
        lr=0,
    )
    assert _reference(X, res.Ws, res.Hs, 1.0, loss, weights) < before
    assert res.n_iter == 20


@pytest.mark.parametrize("solver", ["mu", "hals", "adam"])
def test_online_step_keeps_small_statistics_and_lowers_the_error(solver):
    rng = np.random.RandomState(2)
    W_true, H_true = rng.rand(200, 3), rng.rand(3, 12)
    X = T(W_true @ H_true)
    H = T(rng.rand(3, 12) + 0.1)
    reg = Regularization(50, [12], 0.0, 0.0, 0.0)
    problem = Problem(2.0, reg=reg)
    enc = Stage(max_epochs=50, tol=1e-4)
    upd = Stage(max_epochs=1, tol=0.0, forget_factor=0.9)
    Hs, running, state = [H], None, None

    def error(Hs):
        (W,) = encode(X, Hs, problem, "mu", enc)
        return _beta_divergence(X.numpy(), W.numpy(), Hs[0].numpy(), 2.0)

    before = error(Hs)
    for start in range(0, 200, 50):
        res = online_step(
            X[start : start + 50],
            Hs,
            problem,
            solver,
            enc,
            upd,
            running=running,
            solver_state=state,
            lr=0.05,
        )
        Hs, running, state = res.Hs, res.running, res.solver_state
        if running is not None:
            for stats in running.values():
                assert all(t.shape[0] != 50 for t in stats.values() if t.ndim)
    assert (Hs[0] >= 0).all()
    assert error(Hs) < before


def test_layer_terms_of_matches_sklearn():
    X, Hs = _deep_data()
    Ws = encode(X, Hs, Problem(1.0, "layer", [1.0, 1.0]), "mu", Stage(max_epochs=5))
    terms = layer_terms_of(X, Ws, Hs, 1.0)
    assert all(isinstance(t, float) for t in terms)
    assert terms == pytest.approx(
        [
            _beta_divergence(X.numpy(), Ws[0].numpy(), Hs[0].numpy(), 1.0),
            _beta_divergence(Ws[0].numpy(), Ws[1].numpy(), Hs[1].numpy(), 1.0),
        ],
        rel=1e-10,
    )
