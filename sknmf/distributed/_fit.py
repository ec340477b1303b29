"""Fit a ``DeepNMF`` on a Dask array whose row chunks stay on the workers.

One distributed iteration (DESIGN.md §3a, §8), written with the solver
protocol only: on every chunk, ``update_codes`` then ``statistics``; the
statistics added up on the workers (:func:`~._cluster.tree_sum`);
``update_weights`` on the client; the new weights broadcast; every chunk's
``loss`` (its regularisation carrying its share of the weights' penalty)
added up. :class:`DistributedNet` runs one such iteration per epoch in the
package's one skorch loop, so the history, progress bar, callbacks and the
tolerance stop work as in memory. The client holds the weights and
statistics (``O(k · n_features)``), never anything ``n_samples``-sized.

A solver whose codes step makes a shared decision (HALS's sweep counts:
:meth:`~sknmf._torch.solvers.Solver.codes_sample_rows`) makes it on chunk 0,
which holds exactly the leading rows it is made on (:func:`sample_first`), with
the whole target's size; every other chunk's codes task takes that decision
as an argument (a dependency between tasks on the cluster). So each chunk
takes the steps of the in-memory fit, and a fit from the same factors equals
it up to the summation order of the statistics.

A worker lost mid-fit loses the codes of its chunks; they are recomputed from
X's chunk (which the cluster recomputes from X's graph) and the current
weights (:func:`~._chunks.rebuild`), and the iteration is run again.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._torch.divergence import beta_loss_to_float
from .._torch.modules import DeepFactorChain
from .._torch.nets import (
    FactorDataset,
    FactorizationNet,
    RowBatchIterator,
    StageResult,
    loss_period,
    stage_callbacks,
)
from .._torch.objective import Problem, Regularization, error_of
from .._torch.solvers import make_solver
from .._utils import (
    check_device,
    make_generator,
    seed_from_random_state,
    warn_unused_factors,
)
from . import _chunks
from ._cluster import Cluster, current_client, lost_errors, tree_sum

#: Row-local code updates that refine a lost chunk's recomputed codes.
REBUILD_SWEEPS = 50
#: Times an iteration is run again after losing a worker, before giving up.
MAX_RETRIES = 5


class ChunkedRows:
    """The client's handle on a Dask array's row chunks living on the cluster.

    ``xs[i]`` is the future of chunk ``i``'s data, ``codes[i]`` that of its
    codes; ``shape`` is the array's. ``len`` is the number of rows (skorch
    counts a batch by it). ``sample_rows``: chunk 0 holds exactly the
    first ``sample_rows`` rows (all rows when there are fewer), on which the
    solvers' shared decisions are made (:func:`sample_first`).
    """

    device = torch.device("cpu")

    def __init__(
        self, cluster: Cluster, xs: list, shape: tuple, dtype, sample_rows: int = 0
    ):
        self.cluster = cluster
        self.xs = xs
        self.codes = [None] * len(xs)
        self.shape = shape
        self.dtype = dtype
        self.sample_rows = sample_rows

    def __len__(self) -> int:
        return self.shape[0]

    def map(self, fn, *args) -> list:
        """``fn(x_i, codes_i, *args)`` on every chunk (futures)."""
        return [
            self.cluster.submit(fn, x, c, *args) for x, c in zip(self.xs, self.codes)
        ]

    def total(self, fn, *args):
        """The sum over chunks of ``fn(x_i, codes_i, *args)`` (small results)."""
        parts = self.cluster.gather(self.map(fn, *args))
        return _chunks.add_all(*parts)


class StageDriver:
    """One training stage over the chunks: the client's side of the iteration.

    ``known`` gives the weights of every layer the chunks hold codes for, in
    the order of the chunk's codes, with the stage's current ones: a lost
    chunk's codes are recomputed from them.
    """

    def __init__(self, rows: ChunkedRows, spec, Hs: list, known, layer_solvers):
        self.rows = rows
        self.spec = spec
        self.Hs = [H.clone() for H in Hs]
        self.known = known
        self.layer_solvers = layer_solvers
        self.retries = 0

    def start(self) -> float:
        """Set the chunks up for the stage; the error at the start."""
        rows, spec = self.rows, self.spec
        w = rows.cluster.broadcast(self.Hs)
        info = rows.total(_chunks.shape_info, spec.layers[0])
        self.client_state = spec.solver.start(None, [], list(self.Hs), update_H=True)
        self.client_state["products_shape"] = (info["nnz"], info["n"], info["sparse"])
        self.client_state["reg"] = spec.reg
        # A codes step with a shared decision (HALS's sweep counts) decides it
        # on the sample chunk, chunk 0 (load_rows), with the budget of the
        # whole target; the other chunks follow (_submit_codes).
        self.facts = {"data_shape": (info["nnz"], info["n"])}
        ranks = [H.shape[0] for H in self.Hs]
        self.shared = (
            len(rows.xs) > 1
            and 0 < spec.solver.codes_sample_rows(ranks) <= rows.sample_rows
        )
        rows.codes = rows.map(_chunks.start, spec, w, self.facts)
        self.w, self.ahead = w, None
        _, terms = rows.total(_chunks.objective_of, spec, w)
        return error_of(spec.solver.problem.weights, terms)

    def iterate(self, need_loss: bool = True):
        """One distributed iteration; ``(total, terms)`` of the objective after
        it, or ``(None, None)`` when ``need_loss`` is False (the chunks then
        skip their divergences)."""
        saved = [H.clone() for H in self.Hs]
        for attempt in range(MAX_RETRIES + 1):
            try:
                return self._iterate(need_loss)
            except lost_errors():
                if attempt == MAX_RETRIES:
                    raise
                self.Hs = [H.clone() for H in saved]
                self.ahead = None
                self._recover()
        raise AssertionError("unreachable")  # pragma: no cover

    def _iterate(self, need_loss: bool = True):
        rows, spec, solver = self.rows, self.spec, self.spec.solver
        cluster = rows.cluster
        phases = solver.weight_phases()
        w = self.w
        for i, layers in enumerate(phases):
            if i == 0 and self.ahead is not None:
                codes, stats = self.ahead
            elif i == 0:
                codes = self._submit_codes(
                    _chunks.codes_and_statistics, spec, w, layers, True
                )
                stats = tree_sum(cluster, codes).result()
            else:
                codes = rows.map(_chunks.codes_and_statistics, spec, w, layers, False)
                stats = tree_sum(cluster, codes).result()
            rows.codes = codes
            solver.update_weights(layers, stats, self.Hs, self.client_state)
            sent = {
                k: self.client_state[k]
                for k in solver.client_state_keys
                if k in self.client_state
            }
            w = self.w = cluster.broadcast(self.Hs, sent)
        # The loss of this iteration and the next one's first phase in one
        # trip, both summed by one reduction: one wait per iteration.
        codes = self._submit_codes(_chunks.loss_and_next, spec, w, phases[0], need_loss)
        self.ahead = None
        rows.codes = codes
        both = tree_sum(cluster, codes).result()
        self.ahead = (codes, both["stats"])
        return both["loss"] if need_loss else (None, None)

    def _submit_codes(self, fn, *args) -> list:
        """``fn(x_i, codes_i, *args, given)`` on every chunk, a codes step.

        With a shared decision, the sample chunk's task decides it and every
        other chunk's task takes it as an argument: a dependency between
        tasks on the cluster, not a wait on the client.
        """
        rows, cluster = self.rows, self.rows.cluster
        if not self.shared:
            return rows.map(fn, *args)
        first = cluster.submit(fn, rows.xs[0], rows.codes[0], *args, None)
        given = cluster.submit(_chunks.pick, first, "decision")
        return [first] + [
            cluster.submit(fn, x, c, *args, given)
            for x, c in zip(rows.xs[1:], rows.codes[1:])
        ]

    def _recover(self) -> None:
        """Recompute the codes of the chunks a lost worker held."""
        rows = self.rows
        self.retries += 1
        Hs = self.known(self.Hs)
        w_all = rows.cluster.broadcast(Hs)
        w = self.w = rows.cluster.broadcast(self.Hs)
        for i, c in enumerate(rows.codes):
            if c is not None and c.status == "finished":
                continue
            fresh = rows.cluster.submit(
                _chunks.rebuild, rows.xs[i], w_all, self.layer_solvers, REBUILD_SWEEPS
            )
            rows.codes[i] = rows.cluster.submit(
                _chunks.start, rows.xs[i], fresh, self.spec, w, self.facts
            )


class DistributedNet(FactorizationNet):
    """The skorch loop of :class:`~sknmf._torch.nets.FactorizationNet` whose
    batch is the whole chunked array: one distributed iteration per epoch.

    Parameters
    ----------
    module : DeepFactorChain
        The weights (the codes stay on the workers: empty here).
    driver : StageDriver
        The client's side of the iteration; dropped after the fit.
    **kwargs
        As :class:`~sknmf._torch.nets.FactorizationNet`.
    """

    def __init__(self, module, *args, driver=None, **kwargs):
        super().__init__(module, *args, **kwargs)
        self.driver = driver

    def train_step(self, batch, **fit_params):
        total, terms = self.driver.iterate(self.needs_loss())
        with torch.no_grad():
            for l, H in enumerate(self.driver.Hs):
                self.module_.H[l].data = H
        dtype = self.driver.Hs[0].dtype
        if total is None:
            loss = torch.full((), math.nan, dtype=dtype)
        else:
            error = error_of(self.solver.problem.weights, terms)
            self.history.record_batch("error", error)
            loss = torch.tensor(total, dtype=dtype)
        return {"loss": loss, "y_pred": loss}

    def fit(self, X, y=None, **fit_params):
        if not self.initialized_:
            self.initialize()
        self.running_ = None
        try:
            self.partial_fit(X, y, **fit_params)
        finally:
            # The driver holds the client and the futures: never keep or pickle them.
            self.solver_state_ = None
            self.driver = None
        return self


def run_stage(rows: ChunkedRows, spec, Hs: list, stage, *, known, layer_solvers):
    """Run one stage on the chunks in a :class:`DistributedNet`.

    Returns a :class:`~sknmf._torch.nets.StageResult` whose ``Ws`` are empty
    (the codes are on the workers, in ``rows.codes``).
    """
    driver = StageDriver(rows, spec, Hs, known, layer_solvers)
    error0 = driver.start()
    stopper, callbacks, quiet = stage_callbacks(stage, error0)
    empty = [torch.empty((0, H.shape[0]), dtype=H.dtype) for H in Hs]
    net = DistributedNet(
        DeepFactorChain(empty, [H.clone() for H in Hs]),
        driver=driver,
        solver=spec.solver,
        update_H=True,
        n_total=rows.shape[0],
        max_epochs=stage.max_epochs,
        batch_size=-1,
        train_split=None,
        iterator_train=RowBatchIterator,
        callbacks=callbacks,
        device="cpu",
        verbose=int(stage.verbose),
        loss_every=loss_period(stage, True),
        **quiet,
    )
    net.fit(FactorDataset(rows))
    Hs = [H.detach().clone() for H in net.module_.H]
    res = StageResult([], Hs, net, len(net.history), stopper.converged_, error0)
    res.retries = driver.retries
    return res


# --------------------------------------------------------------------- fit
def check_array(X, est, *, reset: bool):
    """``X`` as a float Dask array chunked by rows only; its features checked."""
    if X.ndim != 2:
        raise ValueError(
            f"Expected a 2D Dask array, got {X.ndim} dimension(s); reshape it "
            "(rows are samples, columns features)."
        )
    if any(math.isnan(c) for c in X.chunks[0]) or any(
        math.isnan(c) for c in X.chunks[1]
    ):
        raise ValueError(
            "The Dask array has unknown chunk sizes; call X.compute_chunk_sizes() "
            "before fitting (the rows of each chunk must be known)."
        )
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if len(X.chunks[1]) > 1:
        # Each chunk must hold whole rows: the codes of a row need all its features.
        X = X.rechunk({0: X.chunks[0], 1: -1})
    n_features = X.shape[1]
    if reset:
        est.n_features_in_ = n_features
        est.__dict__.pop("feature_names_in_", None)
    elif n_features != est.n_features_in_:
        raise ValueError(
            f"X has {n_features} features, but {type(est).__name__} is expecting "
            f"{est.n_features_in_} features as input."
        )
    return X


def sample_first(X, rows: int):
    """``X`` whose first chunk holds exactly its first ``rows`` rows.

    The chunk that holds them is split, or the leading chunks merged (lazily:
    Dask's rechunk, computed on the workers); the other chunks are the
    user's. ``rows=0`` leaves ``X`` as it is.
    """
    n = X.shape[0]
    rows = min(rows, n)
    if rows <= 0 or X.chunks[0][0] == rows:
        return X
    new, start = [rows], 0
    for size in X.chunks[0]:
        end = start + size
        if end > max(start, rows):
            new.append(end - max(start, rows))
        start = end
    return X.rechunk({0: tuple(new)})


def sample_rows_of(est, problem: Problem, ranks, pre: int) -> int:
    """The most leading rows any stage's codes step decides on (0: none)."""
    rows, L = 0, len(ranks)
    if pre > 0:
        name = est._pretrain_solver(est.solver, pre, problem, False)
        for l in range(L):
            solver = make_solver(name, problem.layer(l), batched=False, lr=est.lr)
            rows = max(rows, solver.codes_sample_rows([ranks[l]]))
    if L > 1:
        solver = make_solver(est.solver, problem, batched=False, lr=est.lr)
        rows = max(rows, solver.codes_sample_rows(list(ranks)))
    return rows


def load_rows(
    X, cluster: Cluster, device, check_zeros: bool, sample_rows: int = 0
) -> ChunkedRows:
    """Load every chunk onto the cluster (checked there); the client reads nothing.

    ``X`` must already start with its sample chunk (:func:`sample_first`).
    """
    from dask import delayed

    parts = X.to_delayed().ravel()
    tasks = [
        delayed(_chunks.load, pure=True)(p, X.dtype.name, str(device), check_zeros)
        for p in parts
    ]
    xs = cluster.compute(tasks)
    return ChunkedRows(cluster, xs, X.shape, X.dtype, sample_rows)


def fit(est, X, W=None, H=None):
    """``DeepNMF.fit`` on a Dask array: the estimator's attributes, as in memory."""
    from ._init import custom_codes, initialize_layer

    if est.batch_size is not None:
        raise ValueError(
            "batch_size must be None to fit a Dask array: every epoch is one pass "
            "over all its chunks (set the chunk size instead, e.g. "
            "X.rechunk({0: rows})), or fit mini-batches with partial_fit."
        )
    X = check_array(X, est, reset=True)
    ranks = est._check_ranks(X.shape)
    beta = beta_loss_to_float(est.beta_loss)
    device = check_device(est.device)
    seed = seed_from_random_state(est.random_state)
    gen = make_generator(seed)
    n_samples, n_features = X.shape
    L = len(ranks)
    reg = Regularization(
        n_samples, [n_features, *ranks[:-1]], *est._alphas(), est.l1_ratio
    )
    problem = Problem(beta, est.loss, [1.0] * L, reg)
    est._check_solver_options(problem, False)
    epochs = est.max_epochs if est.max_epochs is not None else est.max_iter
    pre = est.pretrain_max_iter if L > 1 else None
    pre = epochs if pre is None else pre
    cluster = Cluster(current_client())
    # The rows on which a codes step's shared decision is made form chunk 0.
    sample = sample_rows_of(est, problem, ranks, pre)
    Xs = sample_first(X, sample)
    rows = load_rows(Xs, cluster, device, beta <= 0, min(sample, n_samples))
    custom = None
    if est.init == "custom":
        custom = custom_codes(W, H, Xs, ranks, rows, str(device))
    else:
        warn_unused_factors(W, H, stacklevel=3)

    layer_solvers = [
        make_solver(est.solver, problem.layer(l), batched=False) for l in range(L)
    ]
    Hs, results = [], []
    for l in range(L):
        if custom is not None:
            H_l = custom[l]
        else:
            width = n_features if l == 0 else ranks[l - 1]
            H_l = initialize_layer(rows, l, ranks[l], width, est.init, gen, seed)
        if pre > 0:
            name = est._pretrain_solver(est.solver, pre, problem, False)
            solver = make_solver(name, problem.layer(l), batched=False, lr=est.lr)
            spec = _chunks.StageSpec(solver, [l], n_samples, str(device))
            done = list(Hs)
            res = run_stage(
                rows,
                spec,
                [H_l],
                est._stage(pre, seed + l),
                known=lambda cur, done=done: done + cur,
                layer_solvers=layer_solvers,
            )
            H_l = res.Hs[0]
            results.append(res)
        rows.codes = rows.map(_chunks.finish)
        if problem.deep:
            rows.codes = [
                cluster.submit(_chunks.rescale, c, l, cluster.broadcast([H_l]))
                for c in rows.codes
            ]
            s = H_l.sum(1)
            s = torch.where(s > 0, s, torch.ones_like(s))
            H_l = H_l / s[:, None]
        Hs.append(H_l)
    est.pretrain_histories_ = [r.net.history for r in results]
    for r in results:
        est._warn_unconverged(r)
    if L > 1:
        terms = rows.total(_chunks.layer_terms, cluster.broadcast(Hs), beta)
        est.pretrain_layer_errors_ = [_sqrt2(t) for t in terms]
        problem.weights = est._weights(terms)
        solver = make_solver(est.solver, problem, batched=False, lr=est.lr)
        spec = _chunks.StageSpec(solver, list(range(L)), n_samples, str(device))
        res = run_stage(
            rows,
            spec,
            Hs,
            est._stage(epochs, seed + L),
            known=lambda cur: cur,
            layer_solvers=layer_solvers,
        )
        est._warn_unconverged(res)
        Hs = res.Hs
        rows.codes = rows.map(_chunks.finish)
        results = [res]
    last = results[-1] if results else None
    est.net_ = last.net if last is not None else None
    est.history_ = est.net_.history if last is not None else None
    est.n_iter_ = last.n_iter if last is not None else 0
    est.n_worker_losses_ = sum(getattr(r, "retries", 0) for r in results)
    est.layer_weights_ = np.asarray(problem.weights, dtype=np.float64)
    est._beta = beta
    # Dask chunks are fitted as they are: no internal rescaling of extreme
    # magnitudes (the in-memory fit's safe scale) yet.
    est._scale = 1.0
    est._solver = est.solver
    est._seed = seed
    est._running, est._solver_state, est.n_steps_ = None, None, 0
    est._store_weights(Hs, X.dtype)
    w = cluster.broadcast(Hs)
    err = _sqrt2(rows.total(_chunks.reconstruction, w, beta))
    est.reconstruction_err_ = err
    if L == 1:
        est.layer_errors_ = [err]
        est.pretrain_layer_errors_ = [err]
    else:
        est.layer_errors_ = [
            _sqrt2(t) for t in rows.total(_chunks.layer_terms, w, beta)
        ]
    return X


def _sqrt2(loss: float) -> float:
    return math.sqrt(2.0 * max(float(loss), 0.0))
