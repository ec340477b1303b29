"""The skorch loop of every factorisation stage: fit, transform, partial_fit.

skorch owns the loop (epochs, callbacks, history, progress bar, devices); the
net's ``train_step`` is one :func:`~sknmf._torch.solvers.iterate` of a solver
on a batch of rows, and :class:`ToleranceStopping` is the one stopping rule.
:func:`run_stage` builds and runs such a net for the stages of
:mod:`sknmf._torch.stages`. No scikit-learn import.
"""

from __future__ import annotations

import math
import signal
import threading
from dataclasses import dataclass, field

import torch
from skorch import NeuralNet
from skorch.callbacks import Callback

from .divergence import squared_norm
from .modules import DeepFactorChain
from .objective import error_of, objective
from .solvers import Solver, iterate
from .sparse import CSRMatrix


class FactorDataset(torch.utils.data.Dataset):
    """Rows of a dense tensor or a ``CSRMatrix``; batches are row slices."""

    def __init__(self, X):
        self.X = X

    def __len__(self) -> int:
        return self.X.shape[0]

    def rows(self, idx: torch.Tensor):
        if isinstance(self.X, CSRMatrix):
            return self.X.row_slice(idx), idx
        return self.X[idx], idx


class RowBatchIterator:
    """Batches ``(X_rows, row_indices)`` without per-row collation.

    A ``torch.utils.data.DataLoader`` collates row by row; for a factorisation the
    batch is one slice of a tensor, so this iterator slices directly (the whole
    matrix, with indices None, when ``batch_size`` covers it). Shuffling draws
    from ``generator`` only.
    """

    def __init__(self, dataset, batch_size=-1, shuffle=False, generator=None, **_):
        self.dataset = dataset
        n = len(dataset)
        self.batch_size = n if batch_size in (None, -1) else min(int(batch_size), n)
        self.shuffle = shuffle
        self.generator = generator

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        X = self.dataset.X
        if self.batch_size >= n and not self.shuffle:
            yield X, None
            return
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator)
        else:
            order = torch.arange(n)
        order = order.to(X.device)
        for start in range(0, n, self.batch_size):
            yield self.dataset.rows(order[start : start + self.batch_size])


class Converged(Exception):
    """Raised by :class:`ToleranceStopping` to end a stage (not an interrupt)."""


class ToleranceStopping(Callback):
    """Stop like scikit-learn's NMF: every ``check_every`` epochs, when the error fell
    by less than ``tol`` times the initial error since the last check.

    The error is ``sqrt(2 Σ λ_l D_l)``, recorded by the net in the history as
    ``"error"``. ``tol=0`` never stops early.

    ``penalised=True`` (mini-batch stages) tests ``sqrt(2 F)`` instead, ``F``
    the penalised objective the solver minimises (the epoch's ``train_loss``
    summed over its batches; each batch carries its share of the weights'
    penalty), and ``error_at_init`` must then be that of ``F`` at the start.
    With penalties the unpenalised error can rise while the fit still makes
    progress (L1 shrinks the factors towards zero), which would stop it
    early; without penalties both quantities are the same, so the rule is
    unchanged. The recorded ``"error"`` stays unpenalised.
    """

    def __init__(
        self,
        tol: float,
        error_at_init: float,
        check_every: int = 10,
        penalised: bool = False,
    ):
        self.tol = tol
        self.error_at_init = error_at_init
        self.check_every = check_every
        self.penalised = penalised

    def initialize(self):
        self.previous_ = self.error_at_init
        self.converged_ = False
        return self

    def on_epoch_end(self, net, **kwargs):
        epoch = len(net.history)
        # Batch errors are sqrt(2 D_b); the epoch's is that of the sum of D_b.
        batches = [b for b in net.history[-1, "batches"] if "error" in b]
        if not batches:
            return
        error = math.sqrt(sum(b["error"] ** 2 for b in batches))
        net.history.record("error", error)
        if self.tol <= 0 or epoch % self.check_every:
            return
        if self.penalised:
            # Batch losses are F_b, blocks of F (codes' penalty per row,
            # weights' penalty shared): the epoch's F is their sum.
            error = math.sqrt(2.0 * max(sum(b["train_loss"] for b in batches), 0.0))
        scale = self.error_at_init if self.error_at_init > 0 else 1.0
        if (self.previous_ - error) / scale < self.tol:
            self.converged_ = True
            raise Converged
        self.previous_ = error


class InterruptWatch:
    """Tells a user's Ctrl-C from a callback's request to stop.

    skorch's callbacks (e.g. ``EarlyStopping``) stop training by raising
    ``KeyboardInterrupt``; so does SIGINT. While the loop runs in the main
    thread, a SIGINT handler marks the signal (and hands it to the handler it
    replaced), so the loop re-raises a real interrupt and only swallows a
    callback's. Signals reach only the main thread: elsewhere every
    ``KeyboardInterrupt`` comes from code.
    """

    def __enter__(self):
        self.signalled = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if callable(previous):
                self._previous = previous
                signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        self.signalled = True
        self._previous(signum, frame)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


class FactorizationNet(NeuralNet):
    """skorch net whose ``train_step`` is one solver iteration on a batch.

    Parameters
    ----------
    module : DeepFactorChain
        The factors (an instance).
    solver : Solver
        What one iteration does (:mod:`sknmf._torch.solvers`).
    update_H : bool
        False updates the codes only (``transform``).
    n_total : int
        Number of training rows (a mini-batch carries its share of the
        weights' penalty).
    forget_factor : float or None
        None: each batch's weight update uses its own statistics (the exact
        step on a full batch). A float: the online rule, statistics folded
        over batches with this weight of the past.
    running : dict or None
        Running statistics to continue from (``partial_fit``).
    solver_state : dict or None
        What the solver keeps between online steps (e.g. Adam's moments).
    loss_every : int
        Epochs between two loss evaluations (the stopping test's period; 1:
        every epoch); the last epoch always has one, and so has the first
        when training (the history shows where the loss started). An epoch
        without one records a NaN ``train_loss`` and no ``error``.
    **kwargs
        Passed to :class:`skorch.NeuralNet`.
    """

    def __init__(
        self,
        module,
        *args,
        solver=None,
        update_H=True,
        n_total=None,
        forget_factor=None,
        running=None,
        solver_state=None,
        loss_every=1,
        criterion=torch.nn.Identity,
        **kwargs,
    ):
        super().__init__(module, *args, criterion=criterion, **kwargs)
        self.solver = solver
        self.update_H = update_H
        self.n_total = n_total
        self.forget_factor = forget_factor
        self.running = running
        self.solver_state = solver_state
        self.loss_every = loss_every

    def initialize_optimizer(self, *args, **kwargs):
        # The solver updates the weights; a torch optimizer (Adam's) is the
        # solver's own business. Building one here would also cost a one-off
        # import of torch._dynamo that the closed-form solvers never need.
        self.optimizer_ = None
        return self

    def train_step(self, batch, **fit_params):
        Xb, idx = batch
        m = self.module_
        Ws = [W.data if idx is None else W.data[idx] for W in m.W]
        Hs = [H.data for H in m.H]
        state = self._stage_state
        reg = self.solver.problem.reg
        if reg is not None and Xb.shape[0] != self.n_total:
            reg = reg.scaled(Xb.shape[0] / self.n_total)
        need = self.needs_loss()
        with torch.no_grad():
            total, terms, self.running_ = iterate(
                self.solver,
                Xb,
                Ws,
                Hs,
                state,
                running=self.running_,
                rho=self.forget_factor,
                reg=reg,
                need_loss=need,
            )
            for l, W in enumerate(Ws):
                if idx is None:
                    m.W[l].data = W
                else:
                    m.W[l].data[idx] = W
            for l, H in enumerate(Hs):
                m.H[l].data = H
        if total is None:
            # Not evaluated this epoch (loss_every): say so rather than 0.
            total = torch.full((), math.nan, dtype=Hs[0].dtype)
        else:
            error = error_of(self.solver.problem.weights, terms)
            self.history.record_batch("error", error)
        return {"loss": total, "y_pred": total}

    def needs_loss(self) -> bool:
        """Whether this epoch evaluates the loss (``loss_every``)."""
        epoch = len(self.history)
        return (
            epoch % self.loss_every == 0
            or epoch == self.max_epochs
            or (self.update_H and epoch == 1)
        )

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        # skorch's own partial_fit turns every KeyboardInterrupt into "stop
        # training", which would swallow a user's Ctrl-C.
        if not self.initialized_:
            self.initialize()
        self.notify("on_train_begin", X=X, y=y)
        with InterruptWatch() as watch:
            try:
                self.fit_loop(X, y, **fit_params)
            except Converged:
                pass
            except KeyboardInterrupt:
                if watch.signalled:
                    raise
        self.notify("on_train_end", X=X, y=y)
        return self

    def fit(self, X, y=None, **fit_params):
        # Factor tensors are set up by the caller; never re-create the module.
        if not self.initialized_:
            self.initialize()
        self.running_ = self.running
        self._stage_state = self.solver.start(
            X.X, list(self.module_.W), list(self.module_.H), update_H=self.update_H
        )
        if self.solver_state:
            self._stage_state.update(self.solver_state)
        try:
            self.partial_fit(X, y, **fit_params)
        finally:
            # The stage's state holds data-sized buffers and a reference to
            # the data: never keep (or pickle) them past the fit.
            self.solver_state_ = self.solver.online_state(self._stage_state)
            del self._stage_state
        return self


@dataclass
class Stage:
    """The loop settings of a stage, as the estimator gives them."""

    max_epochs: int
    tol: float = 1e-4
    check_every: int = 10
    batch_size: int | None = None
    shuffle: bool = False
    generator: torch.Generator | None = None
    forget_factor: float | None = None
    verbose: int = 0
    callbacks: list = field(default_factory=list)


@dataclass
class StageResult:
    Ws: list
    Hs: list
    net: FactorizationNet
    n_iter: int
    converged: bool
    error_at_init: float
    running: dict | None = None
    solver_state: dict | None = None


def stops_on_objective(stage: Stage) -> bool:
    """Whether a stage's stopping rule reads the penalised objective.

    Mini-batch stages do: an online fit of a penalised problem can raise the
    unpenalised error while it still lowers what it minimises. Full-batch
    stages stop on the unpenalised error, as scikit-learn's NMF does.
    """
    return stage.batch_size is not None


def stage_callbacks(stage: Stage, error_at_init: float):
    """The stopping rule, progress bar and user callbacks of a stage's net.

    ``error_at_init`` is the rule's quantity at the start: ``sqrt(2 F)`` of
    the penalised objective where :func:`stops_on_objective`, the error
    otherwise. Returns ``(stopper, callbacks, quiet)``; ``quiet`` holds the
    net keyword that silences skorch's epoch log unless ``stage.verbose``.
    """
    stopper = ToleranceStopping(
        stage.tol, error_at_init, stage.check_every, stops_on_objective(stage)
    )
    callbacks = [("tolerance", stopper)]
    if stage.verbose:
        from skorch.callbacks import ProgressBar

        callbacks.append(("progress", ProgressBar()))
    callbacks += [(f"user_{i}", cb) for i, cb in enumerate(stage.callbacks)]
    quiet = {} if stage.verbose else {"callbacks__print_log": None}
    return stopper, callbacks, quiet


def loss_period(stage: Stage, update_H: bool) -> int:
    """Epochs between two evaluations of the loss in a stage's net.

    Only the first and last epochs and those the stopping rule reads (every
    ``check_every``-th) when nothing else reads the loss: evaluating it costs
    a full divergence per layer for beta != 2 (20-45% of a deep KL fit).
    Every epoch when the user watches (``verbose``, callbacks) or no stopping
    rule runs (``tol=0`` with ``update_H``: the history then carries the
    loss of every epoch, as a fixed-length fit promises). A transform
    (``update_H=False``) evaluates it at the rule's epochs and the last.
    """
    if not update_H:
        return stage.check_every
    if stage.tol > 0 and not stage.verbose and not stage.callbacks:
        return stage.check_every
    return 1


def run_stage(
    X,
    Ws,
    Hs,
    solver: Solver,
    stage: Stage,
    *,
    update_H: bool = True,
    running: dict | None = None,
    solver_state: dict | None = None,
) -> StageResult:
    """Run one stage (a fit, a layer's pretraining, an encoding) in a skorch net.

    Returns the factors after the stage; the net keeps the history and no
    data-sized tensor (the module's codes are emptied).
    """
    Ws = [solver.codes_layout(W) for W in Ws]
    module = DeepFactorChain(Ws, Hs)
    with torch.no_grad():
        sq = None
        if solver.problem.beta == 2.0 and solver.problem.loss == "layer":
            sq = squared_norm(X)
        total0, terms = objective(X, Ws, Hs, solver.problem, sq_norm_X=sq)
    error0 = error_of(solver.problem.weights, terms)
    start = error0
    if stops_on_objective(stage):
        start = math.sqrt(2.0 * max(float(total0), 0.0))
    stopper, callbacks, quiet = stage_callbacks(stage, start)
    net = FactorizationNet(
        module,
        solver=solver,
        update_H=update_H,
        n_total=X.shape[0],
        forget_factor=stage.forget_factor,
        running=running,
        solver_state=solver_state,
        loss_every=loss_period(stage, update_H),
        max_epochs=stage.max_epochs,
        batch_size=-1 if stage.batch_size is None else stage.batch_size,
        train_split=None,
        iterator_train=RowBatchIterator,
        iterator_train__shuffle=stage.shuffle,
        iterator_train__generator=stage.generator,
        callbacks=callbacks,
        device=X.device,
        verbose=int(stage.verbose),
        **quiet,
    )
    net.fit(FactorDataset(X))
    Ws = [W.detach() for W in net.module_.W]
    Hs = [H.detach().clone() for H in net.module_.H]
    net.module_.drop_codes()
    return StageResult(
        Ws,
        Hs,
        net,
        len(net.history),
        stopper.converged_,
        error0,
        net.running_,
        net.solver_state_,
    )
