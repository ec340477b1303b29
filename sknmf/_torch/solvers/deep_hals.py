"""Accelerated HALS for the joint fine-tuning of a deep Frobenius NMF: ``"deep_hals"``.

The layer-centric objective (DESIGN.md §2, ``W0 = X``, rows of every ``Hl`` on
the unit simplex)::

    Σ_l λ_l / 2 ||W(l-1) - Wl Hl||² + penalties

has a closed-form block coordinate update for every factor:

- **codes** ``Wl`` meet two terms, as the approximation of ``W(l-1)`` and as
  the target of layer ``l+1``. Divided by ``λ_l`` that is one nonnegative
  least-squares problem per row, with Gram ``Hl Hlᵀ + (λ_(l+1)/λ_l) I`` and
  cross term ``W(l-1) Hlᵀ + (λ_(l+1)/λ_l) W(l+1) H(l+1)``: the W block of
  accelerated HALS (:mod:`.hals`, the same scaled system and column sweeps,
  several cheap sweeps per expensive product). The deepest code is one-layer
  HALS. Row-local but for one shared decision per layer: the number of
  sweeps, decided on the leading rows (``hals._sweeps``).
- **weights** ``Hl`` from ``C = Wlᵀ W(l-1)`` and ``D = Wlᵀ Wl`` (sums over
  rows, so they add up over blocks). Row ``t`` of ``Hl`` is minimised exactly
  with the others fixed: the minimiser of the row's quadratic on the simplex
  is the Euclidean projection of ``(C_t - Σ_(s≠t) D_ts h_s) / (D_tt + l2/λ)``
  onto it (the row's Hessian is a multiple of the identity; an L1 penalty is
  constant on the simplex). One Gauss-Seidel pass over the rows per
  iteration (``_WEIGHT_SWEEPS`` says why not more).

Every step minimises the objective exactly over its block, so without
extrapolation the objective never increases on a full batch. The loss comes
from the statistics in Gram form (``||W(l-1)||²`` is one more summable
statistic), nearly free.

**Extrapolation** (Ang & Gillis 2019, "Accelerating nonnegative matrix
factorization algorithms using extrapolation"). The layers are coupled
weakly (``λ_(l+1)/λ_l`` is often a few percent), so the exact block updates
drift towards the joint minimiser in many small, consistent steps. Each
codes step therefore starts from ``Ŵ = max(0, W_k + β (W_k - W_(k-1)))`` and
solves against ``Ĥ = P(H_k + β (H_k - H_(k-1)))`` (``P`` the projection of
rows onto the simplex). ``β`` grows by ``_GAMMA`` after every step that
lowered the objective, up to a ceiling that itself grows by ``_GAMMA_BAR``;
a step that raised it sets the ceiling to the ``β`` that failed, divides
``β`` by ``_ETA`` and runs the next step without extrapolation (a restart:
the objective may rise on that one step). The objective is read from the
summed statistics when the weights are updated, so the rule needs nothing
that is not already summed over blocks: on Dask ``β`` is decided on the client
and the codes' extrapolation is row-local, and ``W_(k-1)`` costs one copy of
the codes. On the digits (32, 16, 8) fine-tuning the extrapolated updates
reached the plain ones' 300-iteration error in 51-57 iterations; on 20000
sample-image patches (64, 32, 16), the plain 200-iteration error in 38.

Mini-batches and the data-centric objective are handed to the multiplicative
updates (:class:`~sknmf._torch.solvers.mu.MUSolver`); one-layer problems to
:class:`~sknmf._torch.solvers.hals.HALSSolver`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from ..objective import Problem, objective
from . import Solver, cached_squared_norm
from .hals import (
    _buffer,
    _codes_sweeps,
    _cross,
    _sample_columns,
    _scaled_system,
    _wt_x,
    _x_ht,
)

__all__ = ["DeepHALSSolver", "project_simplex", "simplex_rows_sweeps"]

# Weight sweeps stop once a sweep moves the rows by at most this share of what
# the first one moved them (the _DELTA of the one-layer HALS).
_DELTA = 0.3
# Projected row sweeps of the weights per iteration. Unlike the one-layer H
# block, repeating them did not pay: on the digits (32, 16, 8) fine-tuning
# after HALS pretraining converged in 170 iterations with one sweep and in 250
# with Gillis & Glineur's budget (5-8 sweeps), the final layer errors equal to
# 0.5%; a projected row also costs about four times a HALS row (sort, cumsum,
# max) and the codes' update is where the coupled layers are solved.
_WEIGHT_SWEEPS = 1
# Ang & Gillis (2019)'s extrapolation parameters (their recommended values):
# first beta, its growth after a success, the ceiling's growth, the division
# after a failure.
_BETA0 = 0.5
_GAMMA = 1.05
_GAMMA_BAR = 1.01
_ETA = 1.5


def _cross_and_gram(stats: dict, H: Tensor) -> tuple[float, float]:
    """``<Wᵀ T, H>`` and ``<Wᵀ W, H Hᵀ>`` of a layer, in float64, from its
    statistics: ``||T - W H||² = ||T||² - 2 cross + gram``."""
    H64 = H.to(torch.float64)
    D64 = stats["WtW"].to(torch.float64)
    return _cross(stats["WtT"], H64), float(
        torch.vdot(D64.flatten(), (H64 @ H64.T).flatten())
    )


def project_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of each row of ``v`` onto the unit simplex.

    ``max(v - θ, 0)`` with ``θ = max_k (Σ_(j≤k) u_j - 1) / k`` over the
    entries ``u`` sorted in decreasing order (Condat 2016): no data-dependent
    branch, hence no device synchronisation.

    Examples
    --------
    >>> import torch
    >>> from sknmf._torch.solvers.deep_hals import project_simplex
    >>> project_simplex(torch.tensor([[0.5, 2.0, -1.0]])).tolist()
    [[0.0, 1.0, 0.0]]
    """
    u = torch.sort(v, dim=-1, descending=True).values
    k = torch.arange(1, v.shape[-1] + 1, dtype=v.dtype, device=v.device)
    theta = ((u.cumsum(-1) - 1.0) / k).amax(-1, keepdim=True)
    return (v - theta).clamp_min(0.0)


def simplex_rows_sweeps(H: Tensor, C: Tensor, D: Tensor, l2: float, n_sweeps: int):
    """Exact row-by-row minimisation of ``tr(HᵀDH)/2 - <C, H> + l2/2 ||H||²``
    with every row of ``H`` on the unit simplex (in place).

    Up to ``n_sweeps`` Gauss-Seidel passes over the rows, stopping once a pass
    moves ``H`` by at most ``_DELTA`` times the first pass. A row whose
    diagonal ``D_tt + l2`` is zero does not enter the objective and is left
    as it is. Returns the number of passes.

    Examples
    --------
    >>> import torch
    >>> from sknmf._torch.solvers.deep_hals import simplex_rows_sweeps
    >>> D = torch.eye(1, dtype=torch.float64)
    >>> C = torch.tensor([[3.0, 1.0, 0.0]], dtype=torch.float64)
    >>> H = torch.full((1, 3), 1 / 3, dtype=torch.float64)
    >>> simplex_rows_sweeps(H, C, D, 0.0, 1)
    1
    >>> H.tolist()  # the projection of C onto the simplex
    [[1.0, 0.0, 0.0]]
    """
    Gs, Rs = _scaled_system(D, C, 0.0, l2)
    if H.device.type == "cpu":
        return _simplex_rows_sweeps_host(H, Gs, Rs, n_sweeps)
    return _simplex_rows_sweeps_device(H, Gs, Rs, n_sweeps)


def _simplex_rows_sweeps_device(H: Tensor, Gs: Tensor, Rs: Tensor, n_sweeps: int):
    """:func:`simplex_rows_sweeps` in torch kernels (GPU), from the scaled system."""
    HT = H.T
    m = H.shape[1]
    # project_simplex unrolled on preallocated buffers: a row update is a
    # handful of small kernels, and their dispatch is the cost on narrow H.
    steps = torch.arange(1, m + 1, dtype=H.dtype, device=H.device)
    v = torch.empty(m, dtype=H.dtype, device=H.device)
    u = torch.empty(m, dtype=H.dtype, device=H.device)
    idx = torch.empty(m, dtype=torch.long, device=H.device)
    theta = torch.empty((), dtype=H.dtype, device=H.device)
    prev = torch.empty_like(H)
    first = None
    it = 0
    for it in range(1, n_sweeps + 1):
        if n_sweeps > 1:
            prev.copy_(H)
        for h_t, g_t, r_t in zip(H.unbind(0), Gs.unbind(0), Rs.unbind(0)):
            torch.addmv(r_t, HT, g_t, alpha=-1.0, out=v)
            torch.sort(v, descending=True, out=(u, idx))
            torch.cumsum(u, 0, out=u)
            u.sub_(1.0).div_(steps)
            torch.amax(u, 0, out=theta)
            torch.sub(v, theta, out=h_t).clamp_min_(0.0)
        if it == n_sweeps:
            break
        change = float(torch.linalg.vector_norm(prev.sub_(H)))
        if first is None:
            first = change
        if change <= _DELTA * first:
            break
    return it


def _simplex_rows_sweeps_host(H: Tensor, Gs: Tensor, Rs: Tensor, n_sweeps: int):
    """:func:`simplex_rows_sweeps` on CPU tensors, through numpy views of them.

    The rows are few and short (``H`` is ``r_l x r_(l-1)``), so a row update
    costs its calls' dispatch, not their arithmetic: numpy's is about a
    quarter of torch's (0.34 against 0.64 ms per sweep of a 32 x 64 ``H``;
    a third of a deep HALS digits iteration was these sweeps). Same
    arithmetic, in place on ``H``'s memory.
    """
    Hn = H.detach().numpy()
    Gn, Rn = Gs.detach().numpy(), Rs.detach().numpy()
    HT = Hn.T
    m = Hn.shape[1]
    steps = np.arange(1, m + 1, dtype=Hn.dtype)
    prev = np.empty_like(Hn) if n_sweeps > 1 else None
    first = None
    it = 0
    for it in range(1, n_sweeps + 1):
        if prev is not None:
            np.copyto(prev, Hn)
        for t in range(Hn.shape[0]):
            v = Rn[t] - HT @ Gn[t]
            u = np.sort(v)[::-1]
            theta = ((np.cumsum(u) - 1.0) / steps).max()
            np.maximum(v - theta, 0.0, out=Hn[t])
        if it == n_sweeps:
            break
        change = float(np.linalg.norm(prev - Hn))
        if first is None:
            first = change
        if change <= _DELTA * first:
            break
    return it


class DeepHALSSolver(Solver):
    """Block coordinate descent on a deep layer-centric Frobenius NMF.

    See the module docstring for the updates. ``"hals"`` (and ``"auto"``)
    resolve to this solver for the full-batch fine-tuning of a deep Frobenius
    model.

    Examples
    --------
    >>> import torch
    >>> from sknmf._torch.objective import Problem
    >>> from sknmf._torch.solvers import iterate, make_solver
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.rand(20, 6, generator=g, dtype=torch.float64)
    >>> Ws = [torch.rand(20, k, generator=g, dtype=torch.float64) for k in (4, 2)]
    >>> Hs = [torch.full((4, 6), 1 / 6, dtype=torch.float64),
    ...       torch.full((2, 4), 1 / 4, dtype=torch.float64)]
    >>> solver = make_solver("hals", Problem(2.0, "layer", [1.0, 1.0]), batched=False)
    >>> type(solver).__name__
    'DeepHALSSolver'
    >>> state = solver.start(X, Ws, Hs, update_H=True)
    >>> first, _, _ = iterate(solver, X, Ws, Hs, state)
    >>> second, _, _ = iterate(solver, X, Ws, Hs, state)
    >>> bool(second <= first)
    True
    """

    name: ClassVar[str] = "deep_hals"
    client_state_keys: ClassVar[tuple[str, ...]] = ("extrapolation_step",)

    @classmethod
    def for_problem(cls, problem: Problem, *, batched: bool, **options) -> Solver:
        if problem.beta != 2.0:
            raise ValueError(
                f"solver={cls.name!r} minimises the Frobenius loss; got beta_loss="
                f"{problem.beta!r}. Use solver='mu' (any beta) or solver='adam'."
            )
        if not problem.deep:
            from .hals import HALSSolver

            return HALSSolver(problem, **options)
        if batched or problem.loss != "layer":
            # The online rule and the data-centric coupling of every H are
            # the multiplicative updates' (module docstring).
            from .mu import MUSolver

            return MUSolver(problem, **options)
        return cls(problem, **options)

    def start(self, X, Ws, Hs, *, update_H):
        state = super().start(X, Ws, Hs, update_H=update_H)
        state["workspace"] = [{} for _ in Hs]
        if update_H and self.options.get("extrapolate", True):
            # Client side: the rule's memory. Block side: the step's beta
            # (set by update_weights; on Dask shipped to every block) and the
            # previous iterate.
            state["extrapolation"] = {"beta": _BETA0, "ceiling": 1.0, "last": None}
            state["extrapolation_step"] = 0.0
            state["previous_iterate"] = None
        return state

    def codes_sample_rows(self, ranks) -> int:
        # Every layer's sweep count is decided on its own sample (hals._sweeps).
        return max(_sample_columns(r) for r in ranks)

    def codes_layout(self, W):
        # Column-major codes: each component a contiguous row of W.T (hals.py).
        return W.T.contiguous().T

    def update_codes(self, X, Ws, Hs, state):
        p = self.problem
        reg = self.reg(state)
        L = len(Ws)
        Hs = self._extrapolate(Ws, Hs, state)
        # Layer by layer, each layer's sweep count is decided on the sample
        # rows (hals._sweeps) after the layers before it have moved, or given.
        given = state.get("given_decision")
        shape = state.get("data_shape")
        counts = []
        for l in range(L):
            lam = p.weights[l]
            target = X if l == 0 else Ws[l - 1]
            H = Hs[l] if Hs[l].is_contiguous() else Hs[l].contiguous()
            Wt = Ws[l].T
            copied = not Wt.is_contiguous()
            if copied:
                Wt = Wt.contiguous()
            n, k = Wt.shape[1], Wt.shape[0]
            R = _x_ht(target, H).T  # k x n view
            G = H @ H.T
            if l < L - 1:
                # The next layer's term λ_(l+1)/2 ||Wl - W(l+1) H(l+1)||², over λ_l.
                c = p.weights[l + 1] / lam
                Y_t = Hs[l + 1].T @ Ws[l + 1].T  # (W(l+1) H(l+1))ᵀ, k x n
                R = torch.add(R, Y_t, alpha=c)
                G = G + c * torch.eye(k, dtype=G.dtype, device=G.device)
            l1 = reg.l1_W[l] / lam if reg is not None else 0.0
            l2 = reg.l2_W[l] / lam if reg is not None else 0.0
            Rs = _buffer(state["workspace"][l], "Rs", (k, n), Wt)
            Gs, Rs = _scaled_system(G, R, l1, l2, out=Rs)
            del R
            shape_l = shape
            if l > 0 and shape is not None:
                # The codes above are dense: every entry is stored.
                shape_l = (shape[1] * target.shape[1], shape[1])
            given_l = None if given is None else given[l]
            counts.append(_codes_sweeps(Wt, Gs, Rs, target, given_l, shape_l))
            if copied:
                Ws[l].copy_(Wt.T)
        state["codes_decision"] = counts

    def _extrapolate(self, Ws, Hs, state) -> list:
        """Move the codes (in place) and the weights (returned) along the last
        step by the ``β`` that :meth:`update_weights` chose (module docstring).

        Only in a fit (``update_H``); ``W_(k-1)`` and ``H_(k-1)`` are the
        block's own copies, so the move is row-local.
        """
        if "previous_iterate" not in state:
            return Hs
        beta = state["extrapolation_step"]
        previous = state["previous_iterate"]
        state["previous_iterate"] = (
            [W.clone() for W in Ws],
            [H.clone() for H in Hs],
        )
        if not beta or previous is None:
            return Hs
        for W, W_old in zip(Ws, previous[0]):
            # W + beta (W - W_old), clipped at zero; in place keeps the layout.
            W.mul_(1.0 + beta).sub_(W_old, alpha=beta).clamp_(min=0.0)
        return [
            project_simplex(torch.add(H, H - H_old, alpha=beta)).contiguous()
            for H, H_old in zip(Hs, previous[1])
        ]

    def statistics(self, X, Ws, Hs, layers, state):
        reg = self.reg(state)
        out = {}
        for l in layers:
            target = X if l == 0 else Ws[l - 1]
            Wt = Ws[l].T
            s = {"WtT": _wt_x(target, Wt), "WtW": Wt @ Wt.T}
            if l > 0:
                # ||W(l-1)||² for the loss in Gram form (||X||² is cached).
                s["sq"] = (target * target).sum()
            if reg is not None and reg.l1_W[l]:
                # The codes' L1 penalty, for the extrapolation's objective.
                s["sum"] = Wt.sum()
            out[l] = s
        return out

    def update_weights(self, layers, stats, Hs, state, *, online=False):
        p = self.problem
        reg = self.reg(state)
        for l in layers:
            lam = p.weights[l]
            C, D = stats[l]["WtT"], stats[l]["WtW"]
            H = Hs[l] if Hs[l].is_contiguous() else Hs[l].contiguous()
            l2 = reg.l2_H / lam if reg is not None else 0.0
            simplex_rows_sweeps(H, C, D, l2, _WEIGHT_SWEEPS)
            Hs[l] = H
        rule = state.get("extrapolation")
        if rule is not None:
            # One phase updates every layer (mini-batches, hence the online
            # rule, go to MU): the statistics of all layers are here.
            self._choose_step(rule, stats, Hs, state)

    def _choose_step(self, rule: dict, stats: dict, Hs: list, state: dict) -> None:
        """Ang & Gillis's rule for the next step's ``β``, from the objective
        after this step (read from the summed statistics, up to the constant
        ``||X||²/2``: only its changes matter)."""
        p = self.problem
        reg = self.reg(state)
        value = 0.0
        for l, H in enumerate(Hs):
            s = stats[l]
            cross, gram = _cross_and_gram(s, H)
            sq = float(s["sq"]) if l > 0 else 0.0
            value += p.weights[l] * 0.5 * (sq - 2.0 * cross + gram)
            if reg is not None:
                if reg.l1_W[l]:
                    value += reg.l1_W[l] * float(s["sum"])
                if reg.l2_W[l]:
                    value += 0.5 * reg.l2_W[l] * float(s["WtW"].diagonal().sum())
        if reg is not None:
            value += float(reg.penalty_H(Hs))
        last = rule["last"]
        rule["last"] = value
        if last is None:
            state["extrapolation_step"] = rule["beta"]
        elif value > last + 1e-12 * abs(last):
            # A restart: the next step is a plain one, and beta shrinks.
            rule["ceiling"] = rule["beta"]
            rule["beta"] /= _ETA
            state["extrapolation_step"] = 0.0
        else:
            state["extrapolation_step"] = rule["beta"]
            rule["beta"] = min(rule["ceiling"], _GAMMA * rule["beta"])
            rule["ceiling"] = min(1.0, _GAMMA_BAR * rule["ceiling"])

    def loss(self, X, Ws, Hs, stats, state):
        p = self.problem
        reg = self.reg(state)
        sq = cached_squared_norm(X, state)
        if not stats:
            return objective(X, Ws, Hs, self.block_problem(state), sq_norm_X=sq)
        terms = []
        for l, H in enumerate(Hs):
            s = stats[l]
            sq_l = sq if l == 0 else float(s["sq"])
            cross, gram = _cross_and_gram(s, H)
            value = 0.5 * max(sq_l - 2.0 * cross + gram, 0.0)
            terms.append(torch.tensor(value, dtype=H.dtype, device=H.device))
        total = sum(w * t for w, t in zip(p.weights, terms))
        if reg is not None:
            total = total + reg.penalty(Ws, Hs)
        return total, terms
