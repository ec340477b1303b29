"""The one skorch loop: stopping rule, interrupts, batches, what a net keeps.

The stopping rule is checked on made-up error sequences, then end to end
against scikit-learn's own ``mu`` solver, which stops by the same rule: same
updates, same checks, so the same number of iterations and the same factors.
"""

import math
import pickle
import signal
import threading

import numpy as np
import pytest
import torch
from sklearn.decomposition import non_negative_factorization
from sklearn.decomposition._nmf import _beta_divergence
from skorch.callbacks import Callback
from skorch.history import History

from sknmf._torch.nets import (
    Converged,
    FactorDataset,
    RowBatchIterator,
    Stage,
    ToleranceStopping,
    run_stage,
)
from sknmf._torch.objective import Problem, Regularization
from sknmf._torch.solvers import make_solver
from sknmf._torch.solvers.mu import MUSolver
from sknmf._torch.sparse import CSRMatrix

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support:UserWarning")

T = torch.from_numpy


def _data(n=40, m=12, k=3, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.rand(n, k) @ rng.rand(k, m) + 0.1 * rng.rand(n, m)
    return X, rng.rand(n, k) + 0.1, rng.rand(k, m) + 0.1


class _Net:
    """What ToleranceStopping reads of a net: its history."""

    def __init__(self):
        self.history = History()


def _feed(stopper, epochs):
    """Epochs of batches through the callback; the epoch it stopped at.

    A batch is its error, or a pair ``(error, penalised loss)``.
    """
    net = _Net()
    stopper.initialize()
    for epoch, batches in enumerate(epochs, start=1):
        net.history.new_epoch()
        for batch in batches:
            error, loss = batch if isinstance(batch, tuple) else (batch, None)
            net.history.new_batch()
            net.history.record_batch("error", error)
            if loss is not None:
                net.history.record_batch("train_loss", loss)
        try:
            stopper.on_epoch_end(net)
        except Converged:
            return epoch, net
    return None, net


def test_tolerance_stopping_stops_at_the_first_small_decrease():
    # Checks every 2 epochs against the error at the previous check (the
    # initial one at first), in units of the initial error 10: the decreases
    # at epochs 2, 4, 6 are 2, 1, 0.08; tol 0.01 asks for 0.1.
    errors = [9.0, 8.0, 7.5, 7.0, 6.95, 6.92, 6.0, 5.0]
    stopper = ToleranceStopping(tol=0.01, error_at_init=10.0, check_every=2)
    epoch, net = _feed(stopper, [[e] for e in errors])
    assert epoch == 6 and stopper.converged_
    assert net.history[:, "error"] == pytest.approx(errors[:6])


def test_tolerance_stopping_decrease_equal_to_tol_continues():
    # "less than tol times the initial error": a decrease of exactly that
    # much is progress (1.0 - 0.5 = 0.5 = 0.25 * 2.0, in binary exactly).
    stopper = ToleranceStopping(tol=0.25, error_at_init=2.0, check_every=1)
    epoch, _ = _feed(stopper, [[1.5], [1.0], [0.5], [0.4]])
    assert epoch == 4


def test_tolerance_stopping_increase_stops():
    stopper = ToleranceStopping(tol=1e-6, error_at_init=1.0, check_every=1)
    assert _feed(stopper, [[0.9], [0.95]])[0] == 2


def test_tolerance_zero_never_stops():
    stopper = ToleranceStopping(tol=0.0, error_at_init=1.0, check_every=1)
    epoch, net = _feed(stopper, [[1.0]] * 5 + [[2.0]] * 5)
    assert epoch is None and not stopper.converged_
    assert len(net.history) == 10


def test_epoch_error_adds_the_batches_divergences():
    # Batch errors are sqrt(2 D_b): the epoch's is sqrt(2 Σ D_b).
    stopper = ToleranceStopping(tol=0.0, error_at_init=1.0)
    _, net = _feed(stopper, [[3.0, 4.0], [1.0, 1.0, 1.0]])
    assert net.history[:, "error"] == pytest.approx([5.0, math.sqrt(3.0)])


def test_tolerance_stopping_zero_initial_error_uses_absolute_decrease():
    stopper = ToleranceStopping(tol=0.1, error_at_init=0.0, check_every=1)
    assert _feed(stopper, [[0.0], [0.0]])[0] == 1


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("beta", [2.0, 1.0, 0.5])
@pytest.mark.parametrize("tol", [0.0, 1e-3, 1e-5])
def test_run_stage_stops_like_sklearn_mu(beta, tol):
    # scikit-learn's mu checks every 10 iterations whether the error fell by
    # less than tol times the initial error; tol = 0 runs max_iter.
    X, W0, H0 = _data()
    W_ref, H_ref, n_ref = non_negative_factorization(
        X,
        W0.copy(),
        H0.copy(),
        n_components=3,
        init="custom",
        solver="mu",
        beta_loss=beta,
        tol=tol,
        max_iter=200,
    )
    solver = make_solver("mu", Problem(beta), batched=False)
    stage = Stage(max_epochs=200, tol=tol, check_every=10)
    res = run_stage(T(X), [T(W0.copy())], [T(H0.copy())], solver, stage)
    assert res.n_iter == n_ref
    assert res.converged == (n_ref < 200)
    np.testing.assert_allclose(res.Ws[0].numpy(), W_ref, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(res.Hs[0].numpy(), H_ref, rtol=1e-7, atol=1e-10)
    # The error is recorded where the stopping rule reads it (every epoch
    # with tol = 0, when the history is all a fixed-length fit reports).
    epochs = [h["epoch"] for h in res.net.history if "error" in h]
    period = 10 if tol > 0 else 1
    expected = [e for e in range(1, res.n_iter + 1) if e % period == 0 or e == 1]
    assert epochs == expected + ([res.n_iter] if res.n_iter % period else [])
    errors = res.net.history[:, "error"]
    expected = math.sqrt(2 * _beta_divergence(X, W_ref, H_ref, beta))
    assert errors[-1] == pytest.approx(expected, rel=1e-7)
    assert res.error_at_init == pytest.approx(
        math.sqrt(2 * _beta_divergence(X, W0, H0, beta)), rel=1e-10
    )


@pytest.mark.parametrize("name", ["hals", "mu", "adam"])
def test_tol_zero_runs_max_epochs(name):
    X, W0, H0 = _data()
    solver = make_solver(name, Problem(2.0), batched=False)
    res = run_stage(T(X), [T(W0)], [T(H0)], solver, Stage(max_epochs=7, tol=0.0))
    assert res.n_iter == 7 and not res.converged


def _stage_with(callback, max_epochs=20):
    X, W0, H0 = _data()
    solver = make_solver("mu", Problem(2.0), batched=False)
    stage = Stage(max_epochs=max_epochs, tol=0.0, callbacks=[callback])
    return run_stage(T(X), [T(W0)], [T(H0)], solver, stage)


class _At(Callback):
    def __init__(self, epoch, action):
        self.epoch = epoch
        self.action = action

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == self.epoch:
            self.action()


def _raise_keyboard_interrupt():
    raise KeyboardInterrupt


def test_callback_keyboard_interrupt_stops_quietly():
    # skorch's convention: a callback stops training by raising it.
    res = _stage_with(_At(3, _raise_keyboard_interrupt))
    assert res.n_iter == 3 and not res.converged
    assert res.net.module_.W[0].shape[0] == 0


def test_real_sigint_propagates_and_the_handler_is_restored():
    assert threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        _stage_with(_At(2, lambda: signal.raise_signal(signal.SIGINT)))
    assert signal.getsignal(signal.SIGINT) is before


def test_keyboard_interrupt_outside_the_main_thread_is_a_callbacks():
    # Signals reach only the main thread: in a worker every KeyboardInterrupt
    # comes from code, and stops training quietly.
    out = {}

    def work():
        try:
            out["res"] = _stage_with(_At(4, _raise_keyboard_interrupt))
        except BaseException as exc:  # noqa: BLE001 - report it to the test
            out["exc"] = exc

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert "exc" not in out
    assert out["res"].n_iter == 4


def test_user_callbacks_see_every_epoch():
    seen = []

    class Count(Callback):
        def on_epoch_end(self, net, **kwargs):
            seen.append(net.history[-1, "error"])

    res = _stage_with(Count(), max_epochs=6)
    assert len(seen) == res.n_iter == 6
    assert seen == res.net.history[:, "error"]


@pytest.mark.parametrize("name", ["hals", "mu", "adam"])
@pytest.mark.parametrize("update_H", [True, False])
def test_run_stage_keeps_no_data_sized_tensor(name, update_H):
    rng = np.random.RandomState(0)
    n, m, k = 3000, 20, 3
    X = T(rng.rand(n, m))
    W0, H0 = T(rng.rand(n, k)), T(rng.rand(k, m))
    solver = make_solver(name, Problem(2.0), batched=False)
    res = run_stage(X, [W0], [H0], solver, Stage(max_epochs=3), update_H=update_H)
    net = res.net
    assert all(W.shape == (0, k) for W in net.module_.W)
    assert not hasattr(net, "_stage_state")
    # The pickle holds the weights and settings: nothing near the 480 kB of X
    # or the 72 kB of its codes.
    size = len(pickle.dumps(net))
    assert size < 40_000, size
    # The codes come back to the caller, not through the net.
    assert res.Ws[0].shape == (n, k)


# -- batches ---------------------------------------------------------------------


def test_full_batch_is_the_matrix_itself():
    X = torch.rand(10, 4)
    batches = list(RowBatchIterator(FactorDataset(X), batch_size=-1))
    assert len(batches) == 1 and batches[0][0] is X and batches[0][1] is None
    assert len(RowBatchIterator(FactorDataset(X), batch_size=None)) == 1
    assert len(RowBatchIterator(FactorDataset(X), batch_size=50)) == 1


def test_mini_batches_slice_rows_in_order():
    X = torch.arange(40.0).reshape(10, 4)
    it = RowBatchIterator(FactorDataset(X), batch_size=4)
    batches = list(it)
    assert len(it) == 3 and [len(b[1]) for b in batches] == [4, 4, 2]
    for Xb, idx in batches:
        assert torch.equal(Xb, X[idx])
    assert torch.equal(torch.cat([b[1] for b in batches]), torch.arange(10))


def test_shuffled_batches_come_from_the_generator():
    X = torch.arange(40.0).reshape(10, 4)

    def order(seed):
        g = torch.Generator().manual_seed(seed)
        it = RowBatchIterator(FactorDataset(X), batch_size=3, shuffle=True, generator=g)
        return torch.cat([idx for _, idx in it])

    a, b, c = order(0), order(0), order(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a.sort().values, torch.arange(10))  # each row once
    # Even a full-size batch is shuffled when asked.
    g = torch.Generator().manual_seed(0)
    it = RowBatchIterator(FactorDataset(X), batch_size=-1, shuffle=True, generator=g)
    ((Xb, idx),) = list(it)
    assert torch.equal(Xb, X[idx]) and not torch.equal(idx, torch.arange(10))


def test_sparse_rows():
    rng = np.random.RandomState(0)
    D = rng.rand(9, 5) * (rng.rand(9, 5) < 0.5)
    X = CSRMatrix.from_dense(T(D))
    ds = FactorDataset(X)
    assert len(ds) == 9
    for Xb, idx in RowBatchIterator(ds, batch_size=4):
        np.testing.assert_array_equal(Xb.to_dense().numpy(), D[idx.numpy()])


def test_mini_batch_stage_visits_every_row_each_epoch():
    # Mini-batch training updates the codes of every row once per epoch.
    X, W0, H0 = _data(n=23)
    solver = make_solver("adam", Problem(2.0), batched=True, lr=1e-2)
    stage = Stage(max_epochs=1, tol=0.0, batch_size=5)
    res = run_stage(T(X), [T(W0.copy())], [T(H0.copy())], solver, stage)
    assert len(res.net.history[-1, "batches"]) == 5
    assert (res.Ws[0] != T(W0)).all(1).all()


def test_mini_batches_carry_their_share_of_the_weights_penalty():
    # The codes' penalty is per row; the weights' penalty is shared: a batch
    # of b of the n rows carries b / n of it, so an epoch adds up to one
    # full-batch penalty.
    seen = []

    class Spy(MUSolver):
        def update_codes(self, X, Ws, Hs, state):
            reg = self.reg(state)
            seen.append((X.shape[0], reg.l1_H, reg.l2_H, reg.l1_W[0]))
            super().update_codes(X, Ws, Hs, state)

    X, W0, H0 = _data(n=23)
    reg = Regularization(23, [12], alpha_W=0.1, alpha_H=0.2, l1_ratio=0.5)
    solver = Spy(Problem(2.0, reg=reg))
    for batch_size, sizes in ((5, [5, 5, 5, 5, 3]), (None, [23])):
        seen.clear()
        stage = Stage(max_epochs=1, tol=0.0, batch_size=batch_size)
        run_stage(T(X), [T(W0.copy())], [T(H0.copy())], solver, stage)
        assert [s[0] for s in seen] == sizes
        for b, l1_H, l2_H, l1_W in seen:
            assert l1_H == pytest.approx(reg.l1_H * b / 23)
            assert l2_H == pytest.approx(reg.l2_H * b / 23)
            assert l1_W == reg.l1_W[0]
        assert sum(s[1] for s in seen) == pytest.approx(reg.l1_H)


def test_codes_only_stage_evaluates_the_loss_every_check():
    # With the weights frozen (transform) the loss is only needed by the
    # stopping test: every check_every epochs, and at the last epoch.
    X, W0, H0 = _data()
    solver = make_solver("mu", Problem(1.0), batched=False)
    stage = Stage(max_epochs=25, tol=0.0, check_every=10)
    res = run_stage(T(X), [T(W0)], [T(H0)], solver, stage, update_H=False)
    epochs = [h["epoch"] for h in res.net.history if "error" in h]
    assert res.n_iter == 25 and epochs == [10, 20, 25]
    expected = math.sqrt(2 * _beta_divergence(X, res.Ws[0].numpy(), H0, 1.0))
    assert res.net.history[-1, "error"] == pytest.approx(expected, rel=1e-10)


class _CountingLoss:
    """Wraps a solver; counts its loss evaluations."""

    def __init__(self, solver):
        self.solver, self.calls = solver, 0

    def __getattr__(self, name):
        return getattr(self.solver, name)

    def loss(self, *args, **kwargs):
        self.calls += 1
        return self.solver.loss(*args, **kwargs)


@pytest.mark.parametrize(
    "changes, period",
    [({}, 10), ({"tol": 0.0}, 1), ({"callbacks": [Callback()]}, 1)],
)
def test_training_evaluates_the_loss_only_where_it_is_read(changes, period):
    # The KL loss is a full divergence per epoch: a training stage evaluates it
    # at the stopping rule's epochs (and the last) unless someone watches every
    # epoch (callbacks, verbose) or no rule runs (tol = 0). Skipping it changes
    # no iterate: the factors equal those of a stage evaluating every epoch.
    X, W0, H0 = _data()
    settings = dict(max_epochs=25, tol=1e-12, check_every=10) | changes
    solver = _CountingLoss(make_solver("mu", Problem(1.0), batched=False))
    res = run_stage(T(X), [T(W0)], [T(H0)], solver, Stage(**settings))
    assert res.n_iter == 25
    epochs = [h["epoch"] for h in res.net.history if "error" in h]
    # The first epoch too: the history shows where the loss started.
    expected = [e for e in range(1, 26) if e % period == 0 or e == 1]
    expected += [] if 25 in expected else [25]
    assert epochs == expected and solver.calls == len(expected)
    losses = np.array(res.net.history[:, "train_loss"], dtype=float)
    assert np.isnan(losses).sum() == 25 - len(expected)  # not evaluated: NaN
    W_ref, H_ref, _ = non_negative_factorization(
        X,
        W0.copy(),
        H0.copy(),
        n_components=3,
        init="custom",
        solver="mu",
        beta_loss=1.0,
        tol=0,
        max_iter=25,
    )
    np.testing.assert_allclose(res.Hs[0].numpy(), H_ref, rtol=1e-7, atol=1e-10)
    final = math.sqrt(2 * _beta_divergence(X, W_ref, H_ref, 1.0))
    assert res.net.history[-1, "error"] == pytest.approx(final, rel=1e-7)


def test_penalised_stopping_reads_the_objective_not_the_error():
    # The error rises 1.0 -> 1.2 -> 1.3 while F = 8 -> 4.5 -> 2 ... falls: the
    # error rule stops at the first check, the penalised one goes on until
    # sqrt(2 F) = 4, 3, 2, 1.7, 1.6 falls by less than 0.05 * 4 (epoch 4).
    epochs = [[(1.2, 4.5)], [(1.3, 2.0)], [(1.3, 1.445)], [(1.3, 1.28)]]
    plain = ToleranceStopping(tol=0.05, error_at_init=1.0, check_every=1)
    assert _feed(plain, [[e for e, _ in batches] for batches in epochs])[0] == 1
    stopper = ToleranceStopping(
        tol=0.05, error_at_init=4.0, check_every=1, penalised=True
    )
    epoch, net = _feed(stopper, epochs)
    assert epoch == 4
    # The recorded error stays the unpenalised one.
    assert net.history[:, "error"] == pytest.approx([1.2, 1.3, 1.3, 1.3])


def test_penalised_stopping_adds_the_batches_losses():
    # Batches carry blocks of F: the epoch's sqrt(2 F) is sqrt(2 (2 + 2.5)) = 3,
    # a decrease of exactly 0.25 * 4 from 4, which is progress; then 3 -> 2.9.
    stopper = ToleranceStopping(
        tol=0.25, error_at_init=4.0, check_every=1, penalised=True
    )
    epochs = [[(1.0, 2.0), (1.0, 2.5)], [(1.0, 2.0), (1.0, 2.205)]]
    assert _feed(stopper, epochs)[0] == 2


def _penalised_objective(X, W, H, l1_W, l1_H):
    """0.5 ||X - W H||² + l1_W |W|_1 + l1_H |H|_1 (numpy)."""
    return 0.5 * np.sum((X - W @ H) ** 2) + l1_W * W.sum() + l1_H * H.sum()


def test_penalised_mini_batch_fit_is_not_stopped_by_its_rising_error():
    # scikit-learn's test_nmf_regularization case: an L1 penalty so strong
    # that the fit shrinks the factors and the unpenalised error rises, so a
    # rule on the error stops at its first check. The mini-batch stage stops
    # on the penalised objective F it minimises, once F has stalled: F is
    # then near its value after many more epochs, far below F at epoch 10.
    rng = np.random.RandomState(42)
    X = np.abs(rng.randn(6, 5))
    W0, H0 = rng.rand(6, 3) + 0.1, rng.rand(3, 5) + 0.1
    alpha, (n, m) = 0.5, X.shape
    l1_W, l1_H = alpha * m, alpha * n
    reg = Regularization(n, [m], alpha_W=alpha, alpha_H=alpha, l1_ratio=1.0)
    problem = Problem(2.0, reg=reg)

    def fit(max_epochs, tol):
        solver = make_solver("mu", problem, batched=True)
        stage = Stage(max_epochs=max_epochs, tol=tol, batch_size=3, forget_factor=0.7)
        res = run_stage(T(X), [T(W0)], [T(H0)], solver, stage)
        W, H = res.Ws[0].numpy(), res.Hs[0].numpy()
        return res, np.linalg.norm(X - W @ H), _penalised_objective(X, W, H, l1_W, l1_H)

    error0 = np.linalg.norm(X - W0 @ H0)
    _, error10, F10 = fit(10, 0.0)
    assert error10 > error0  # the error rule would stop at epoch 10
    _, _, F_long = fit(1000, 0.0)
    res, error, F = fit(1000, 1e-4)
    assert res.converged and 10 < res.n_iter < 1000
    assert error > error0
    assert F - F_long < 1e-3 * (F10 - F_long)
