"""The stages of a deep NMF, each one skorch net run (DESIGN.md §2, §3).

- :func:`pretrain`: layer-wise, each layer an NMF of the codes above it;
- :func:`fine_tune`: the joint objective over all layers;
- :func:`encode`: the codes of data for fixed weights (``transform``; ``fit``
  ends with it, so ``fit_transform`` equals ``fit(X).transform(X)``): layer by
  layer from the solver's deterministic start, then jointly;
- :func:`online_step`: one ``partial_fit``: encode the batch, then fold its
  statistics into the running ones and update the weights (the online rule).

Plain functions on tensors; the estimator turns parameters into
:class:`~sknmf._torch.nets.Stage` settings and a
:class:`~sknmf._torch.objective.Problem`. No scikit-learn import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from .nets import Stage, StageResult, run_stage
from .objective import Problem, normalize_rows, objective
from .solvers import make_solver


def pretrain(
    X,
    ranks,
    init_layer: Callable,
    problem: Problem,
    solver: str,
    stages: list,
    *,
    batched: bool,
    lr: float,
) -> tuple[list, list, list]:
    """Layer-wise pretraining; returns ``(Ws, Hs, results)``.

    ``init_layer(l, target)`` gives the initial ``(W, H)`` of layer ``l``
    (``target`` is X or the codes of the layer above); ``stages[l]`` its loop
    settings, None to keep the initial factors. In deep models the rows of
    every ``Hl`` are then scaled onto the simplex (``Wl`` absorbs the scale).
    """
    Ws, Hs, results = [], [], []
    target = X
    for l, _ in enumerate(ranks):
        W, H = init_layer(l, target)
        if stages[l] is not None:
            s = make_solver(solver, problem.layer(l), batched=batched, lr=lr)
            res = run_stage(target, [W], [H], s, stages[l])
            W, H = res.Ws[0], res.Hs[0]
            results.append(res)
        if problem.deep:
            W, H = normalize_rows(W, H)
        Ws.append(W)
        Hs.append(H)
        target = W
    return Ws, Hs, results


def fine_tune(
    X, Ws, Hs, problem: Problem, solver: str, stage: Stage, *, batched, lr
) -> StageResult:
    """Joint training of all layers on ``problem``'s objective."""
    s = make_solver(solver, problem, batched=batched, lr=lr)
    return run_stage(X, Ws, Hs, s, stage)


def encode(
    X,
    Hs,
    problem: Problem,
    solver: str,
    stage: Stage,
    starts=None,
    *,
    return_n_iter: bool = False,
) -> list:
    """Codes ``[W1, ..., WL]`` of ``X`` with every ``Hl`` fixed.

    Each layer from its solver's deterministic start (HALS: the clipped
    least-squares codes; multiplicative updates: constant codes), solved to
    ``stage.tol``; then, in deep models, all codes jointly on the fitted
    objective. ``stage.check_every`` is the solver's own period for codes.
    ``starts`` replaces the deterministic starts (a list of codes per layer).
    ``return_n_iter`` also returns the iterations of the last solve (the joint
    one in deep models).
    """
    Ws = []
    target = X
    for l, H in enumerate(Hs):
        layer = problem.layer(l)
        s = make_solver(solver, layer, batched=False)
        if starts is not None:
            W0 = starts[l].clone()
        else:
            W0 = s.initial_codes(target, H, layer.reg)
        res = run_stage(
            target,
            [W0],
            [H],
            s,
            replace(stage, check_every=s.codes_check_every),
            update_H=False,
        )
        Ws.append(res.Ws[0])
        target = res.Ws[0]
        n_iter = res.n_iter
    if len(Hs) > 1:
        s = make_solver(solver, problem, batched=False)
        res = run_stage(
            X,
            Ws,
            list(Hs),
            s,
            replace(stage, check_every=s.codes_check_every),
            update_H=False,
        )
        Ws, n_iter = res.Ws, res.n_iter
    return (Ws, n_iter) if return_n_iter else Ws


def online_step(
    X,
    Hs,
    problem: Problem,
    solver: str,
    encode_stage: Stage,
    update_stage: Stage,
    *,
    running: dict | None,
    solver_state: dict | None,
    lr: float,
    starts=None,
) -> StageResult:
    """One ``partial_fit``: the batch's codes, then the online weight update.

    ``update_stage.forget_factor`` weighs the running statistics of earlier
    batches; ``update_stage.batch_size`` splits ``X`` into several online
    steps and ``update_stage.max_epochs`` passes over it.
    """
    Ws = encode(X, Hs, problem, solver, encode_stage, starts=starts)
    s = make_solver(solver, problem, batched=True, lr=lr)
    return run_stage(
        X, Ws, list(Hs), s, update_stage, running=running, solver_state=solver_state
    )


def layer_terms_of(X, Ws, Hs, beta: float) -> list[float]:
    """Each layer's layer-centric divergence ``D_l`` (floats)."""
    with torch.no_grad():
        _, terms = objective(X, Ws, Hs, Problem(beta, "layer", [1.0] * len(Ws)))
    return [float(t) for t in terms]
