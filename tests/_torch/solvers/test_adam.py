"""Projected Adam on the weights: its statistics and its step, written out.

The statistics are the gradient of the block's data term in the weights
(closed forms for Frobenius and KL); the weight update is Adam's step (Kingma
& Ba, with bias correction) on the mean gradient plus the batch's penalty
gradient, projected onto ``H >= 0`` (and unit row sums when deep); the
optimizer state carried between ``partial_fit`` calls continues the same run.
"""

import numpy as np
import pytest
import torch

from sknmf._torch.objective import Problem, Regularization
from sknmf._torch.solvers import iterate
from sknmf._torch.solvers.adam import AdamSolver

T = torch.from_numpy


def _data(n=20, m=8, k=3, seed=0):
    rng = np.random.RandomState(seed)
    return rng.rand(n, m) + 0.1, rng.rand(n, k) + 0.1, rng.rand(k, m) + 0.1


@pytest.mark.parametrize("beta", [2.0, 1.0])
def test_statistics_are_the_gradient_of_the_data_term(beta):
    X, W, H = _data()
    solver = AdamSolver(Problem(beta))
    state = solver.start(T(X), [T(W)], [T(H)], update_H=True)
    stats = solver.statistics(T(X), [T(W)], [T(H)], [0], state)
    V = W @ H
    # d/dH of 0.5 ||X - WH||^2 and of KL(X | WH).
    expected = W.T @ (V - X) if beta == 2.0 else W.T @ (1 - X / V)
    np.testing.assert_allclose(stats[0]["grad"].numpy(), expected, rtol=1e-10)
    assert float(stats[0]["n_rows"]) == 20


def _adam_reference(H, grads, lr, b1=0.9, b2=0.999, eps=1e-8, deep=False):
    """Adam (bias-corrected) on each mean gradient in turn, then projected."""
    m = np.zeros_like(H)
    v = np.zeros_like(H)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        H = H - lr * m_hat / (np.sqrt(v_hat) + eps)
        H = np.maximum(H, 0.0)
        if deep:
            H = H / H.sum(1, keepdims=True)
    return H


def test_update_weights_is_a_projected_adam_step_with_the_penalty():
    X, W, H = _data()
    reg = Regularization(20, [8], alpha_W=0.0, alpha_H=0.05, l1_ratio=0.5)
    solver = AdamSolver(Problem(2.0, reg=reg), lr=0.05)
    state = solver.start(T(X), [T(W)], [T(H)], update_H=True)
    state["reg"] = reg
    Hs, grads = [T(H.copy())], []
    for _ in range(3):
        stats = solver.statistics(T(X), [T(W)], Hs, [0], state)
        Hn = Hs[0].numpy()
        # Mean data gradient plus the penalty's (l1 + l2 H), over the rows.
        grads.append((W.T @ (W @ Hn - X) + reg.l1_H + reg.l2_H * Hn) / 20)
        solver.update_weights([0], stats, Hs, state)
        expected = _adam_reference(H, grads, lr=0.05)
        np.testing.assert_allclose(Hs[0].numpy(), expected, rtol=1e-9, atol=1e-12)
    assert (Hs[0] >= 0).all()


def test_deep_weights_stay_on_the_simplex():
    rng = np.random.RandomState(1)
    X = rng.rand(20, 8) + 0.1
    Ws = [T(rng.rand(20, 4) + 0.1), T(rng.rand(20, 2) + 0.1)]
    Hs = [T(rng.rand(4, 8)), T(rng.rand(2, 4))]
    Hs = [H / H.sum(1, keepdim=True) for H in Hs]
    solver = AdamSolver(Problem(1.0, "layer", [1.0, 1.0]), lr=0.1)
    state = solver.start(T(X), Ws, Hs, update_H=True)
    for _ in range(5):
        iterate(solver, T(X), Ws, Hs, state)
    for H in Hs:
        torch.testing.assert_close(H.sum(1), torch.ones(H.shape[0], dtype=H.dtype))
        assert (H > 0).all()


def test_online_state_continues_the_same_run():
    # Three steps in one stage equal two steps, the state handed over (as
    # partial_fit does between calls), and one more step in a new stage.
    X, W, H = _data()
    problem = Problem(2.0)

    def steps(solver, Hs, n, saved=None):
        state = solver.start(T(X), [T(W)], Hs, update_H=True)
        if saved:
            state.update(saved)
        for _ in range(n):
            stats = solver.statistics(T(X), [T(W)], Hs, [0], state)
            solver.update_weights([0], stats, Hs, state, online=True)
        return solver.online_state(state)

    one = [T(H.copy())]
    steps(AdamSolver(problem, lr=0.05), one, 3)
    two = [T(H.copy())]
    saved = steps(AdamSolver(problem, lr=0.05), two, 2)
    assert "optimizer_state" in saved
    steps(AdamSolver(problem, lr=0.05), two, 1, saved)
    torch.testing.assert_close(two[0], one[0], rtol=1e-12, atol=1e-14)
    # Without the state, the third step restarts Adam's moments: different.
    three = [T(H.copy())]
    steps(AdamSolver(problem, lr=0.05), three, 2)
    steps(AdamSolver(problem, lr=0.05), three, 1)
    assert not torch.allclose(three[0], one[0], rtol=1e-6)


def test_fold_uses_each_batch_as_it_is():
    # Adam's moments are its memory: the online rule does not sum statistics.
    solver = AdamSolver(Problem(2.0))
    s = {0: {"grad": torch.ones(2, 2), "n_rows": torch.tensor(3.0)}}
    assert solver.fold({0: {"grad": torch.zeros(2, 2)}}, s, 0.5, None, None) is s
