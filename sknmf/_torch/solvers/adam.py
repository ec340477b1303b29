"""Projected Adam on the weights, multiplicative updates on the codes: ``"adam"``.

Made for mini-batches: the codes of a batch are row-local multiplicative
updates (as :class:`~sknmf._torch.solvers.mu.MUSolver`), the statistics are
the gradient of the batch's objective in the weights (a sum over rows), and the
weight update is one Adam step, projected back onto the nonnegative orthant
(and onto unit row sums in deep models). The penalty on the weights enters the
gradient with the batch's share of it.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..objective import objective
from .mu import MUSolver


class AdamSolver(MUSolver):
    """Codes by multiplicative updates, weights by projected Adam (``"adam"``).

    Parameters
    ----------
    problem : Problem
    lr : float, default=1e-2
        Adam's learning rate (relative: the weights' rows sum to one in deep
        models).
    """

    name: ClassVar[str] = "adam"

    def __init__(self, problem, lr: float = 1e-2, **options):
        super().__init__(problem, **options)
        self.lr = float(lr)

    def start(self, X, Ws, Hs, *, update_H):
        state = super().start(X, Ws, Hs, update_H=update_H)
        state["optimizer"] = None
        return state

    def weight_phases(self):
        # One gradient step moves every layer's weights at once.
        return [list(range(self.problem.n_layers))]

    def statistics(self, X, Ws, Hs, layers, state):
        params = [H.detach().requires_grad_(True) for H in Hs]
        codes = [W.detach() for W in Ws]
        data = self.problem.with_reg(None)
        with torch.enable_grad():
            total, _ = objective(X, codes, params, data)
            grads = torch.autograd.grad(total, params)
        n_rows = torch.tensor(float(X.shape[0]), dtype=Hs[0].dtype)
        return {l: {"grad": grads[l], "n_rows": n_rows} for l in layers}

    def fold(self, running, stats, rho, Hs, reg):
        # Adam's moments are its memory across batches: each batch's gradient
        # is used as it is.
        return stats

    def update_weights(self, layers, stats, Hs, state, *, online=False):
        opt = state.get("optimizer")
        if opt is None:
            params = [torch.nn.Parameter(H.detach().clone()) for H in Hs]
            opt = state["optimizer"] = torch.optim.Adam(params, lr=self.lr)
            saved = state.get("optimizer_state")
            if saved is not None:
                opt.load_state_dict(saved)
        params = opt.param_groups[0]["params"]
        reg = self.reg(state)
        with torch.no_grad():
            for l in layers:
                params[l].copy_(Hs[l])
        with torch.enable_grad():
            penalty = reg.penalty_H(params) if reg is not None else None
            pen_grads = (
                torch.autograd.grad(penalty, params)
                if penalty is not None and penalty.requires_grad
                else [None] * len(params)
            )
        for l in layers:
            n_rows = float(stats[l]["n_rows"])
            g = stats[l]["grad"]
            if pen_grads[l] is not None:
                g = g + pen_grads[l]
            # Mean over rows keeps the step size independent of the batch size.
            params[l].grad = g / n_rows
        opt.step()
        with torch.no_grad():
            for l in layers:
                # The projection onto the nonnegative orthant reaches exact
                # zeros (an L1 penalty sparsifies, in any precision).
                H = params[l].detach().clamp_min(0.0)
                if self.problem.deep:
                    tiny = torch.finfo(H.dtype).tiny
                    H = H / H.sum(1, keepdim=True).clamp_min(tiny)
                params[l].copy_(H)
                Hs[l] = H.clone()

    def online_state(self, state):
        opt = state.get("optimizer")
        return None if opt is None else {"optimizer_state": opt.state_dict()}
