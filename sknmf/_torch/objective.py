"""The objective of a (deep) NMF: the one place a loss or a penalty is written.

Notation of DESIGN.md §2: ``X ≈ W1 H1``, ``W(l-1) ≈ Wl Hl``. The layer-centric
objective is ``Σ_l λ_l D(W(l-1) | Wl Hl)`` (``W0 = X``), the data-centric one
``Σ_l λ_l D(X | Wl Hl ⋯ H1)``; both plus the scaled penalties of
:class:`Regularization`. Solvers read the penalty coefficients from here and
never write a penalty of their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .divergence import beta_divergence, frobenius_gram


class Regularization:
    """Scaled L1/L2 penalties per layer, scikit-learn's convention.

    ``alpha_W`` is scaled by the width of what each code approximates
    (``n_features`` for layer 1, ``r(l-1)`` deeper), ``alpha_H`` by ``n_samples``.
    The penalty is ``Σ_l l1_W[l] |Wl|_1 + l2_W[l]/2 ||Wl||² + l1_H |Hl|_1 +
    l2_H/2 ||Hl||²``.

    Parameters
    ----------
    n_samples : int
        Rows the weights' penalty is scaled by.
    widths : sequence of int
        Width of what each layer's codes approximate.
    alpha_W, alpha_H, l1_ratio : float
        As in :class:`sklearn.decomposition.NMF`.

    Examples
    --------
    >>> import torch
    >>> from sknmf._torch.objective import Regularization
    >>> reg = Regularization(10, [4], alpha_W=0.5, alpha_H=0.5, l1_ratio=1.0)
    >>> reg.l1_W, reg.l1_H
    ([2.0], 5.0)
    >>> float(reg.penalty([torch.ones(10, 2)], [torch.ones(2, 4)]))
    80.0
    """

    def __init__(self, n_samples, widths, alpha_W, alpha_H, l1_ratio):
        self.l1_W = [w * alpha_W * l1_ratio for w in widths]
        self.l2_W = [w * alpha_W * (1.0 - l1_ratio) for w in widths]
        self.l1_H = n_samples * alpha_H * l1_ratio
        self.l2_H = n_samples * alpha_H * (1.0 - l1_ratio)

    def layer(self, l: int) -> Regularization:
        """The penalties of layer ``l`` alone, as a one-layer regularisation."""
        out = Regularization.__new__(Regularization)
        out.l1_W, out.l2_W = [self.l1_W[l]], [self.l2_W[l]]
        out.l1_H, out.l2_H = self.l1_H, self.l2_H
        return out

    def scaled(self, fraction: float) -> Regularization:
        """The penalties of a mini-batch holding ``fraction`` of the rows.

        The codes' penalty is per row, so it stays; the weights' penalty is
        shared by all rows, so a batch carries its share of it.
        """
        if fraction == 1.0:
            return self
        out = Regularization.__new__(Regularization)
        out.l1_W, out.l2_W = self.l1_W, self.l2_W
        out.l1_H, out.l2_H = self.l1_H * fraction, self.l2_H * fraction
        return out

    def for_scale(self, scale: float, beta: float) -> Regularization:
        """The same problem written for ``X / scale`` (codes ``W / scale``).

        ``D_beta(X | W H) = scale**beta D_beta(X / scale | (W / scale) H)``, so
        dividing the whole objective by ``scale**beta`` leaves a problem on the
        rescaled data with the same minimisers once the penalties' coefficients
        are rescaled as here. Weights ``H`` keep their scale.
        """
        if scale == 1.0:
            return self

        def rescale(c, power):
            if c == 0:
                return 0.0
            try:
                return c * scale**power
            except OverflowError:
                raise ValueError(
                    "alpha_W/alpha_H is too large for data of this magnitude: "
                    "the penalty would outweigh the data by more than the float "
                    "range. Use a smaller alpha or rescale X."
                ) from None

        out = Regularization.__new__(Regularization)
        out.l1_W = [rescale(c, 1.0 - beta) for c in self.l1_W]
        out.l2_W = [rescale(c, 2.0 - beta) for c in self.l2_W]
        out.l1_H = rescale(self.l1_H, -beta)
        out.l2_H = rescale(self.l2_H, -beta)
        return out

    @property
    def is_zero(self) -> bool:
        return not (any(self.l1_W) or any(self.l2_W) or self.l1_H or self.l2_H)

    def penalty_W(self, Ws) -> torch.Tensor:
        """Value of the codes' penalty terms."""
        total = Ws[0].new_zeros(())
        for l, W in enumerate(Ws):
            if self.l1_W[l]:
                total = total + self.l1_W[l] * W.sum()
            if self.l2_W[l]:
                total = total + 0.5 * self.l2_W[l] * (W * W).sum()
        return total

    def penalty_H(self, Hs) -> torch.Tensor:
        """Value of the weights' penalty terms (differentiable)."""
        total = Hs[0].new_zeros(())
        for H in Hs:
            if self.l1_H:
                total = total + self.l1_H * H.sum()
            if self.l2_H:
                total = total + 0.5 * self.l2_H * (H * H).sum()
        return total

    def penalty(self, Ws, Hs) -> torch.Tensor:
        """Value of all penalty terms."""
        return self.penalty_W(Ws) + self.penalty_H(Hs)


def add_penalty_gradient(den, l1: float, l2: float, M):
    """``den + l1 + l2 * M``: a majoriser's denominator with the penalties' terms.

    Every MM or coordinate update of a factor ``M`` penalised by
    ``l1 |M|_1 + l2/2 ||M||²`` adds exactly this to the data term's denominator.
    """
    if l2:
        den = torch.add(den, M, alpha=l2)
    return den + l1 if l1 else den


@dataclass
class Problem:
    """What is minimised: the divergence, the form of the objective, the penalties.

    Parameters
    ----------
    beta : float
        Beta of the divergence (2 Frobenius, 1 KL, 0 Itakura-Saito).
    loss : {"layer", "data"}
        Layer-centric or data-centric objective (deep models).
    weights : list of float
        The ``λ_l``.
    reg : Regularization
        Scaled penalties.
    """

    beta: float
    loss: str = "layer"
    weights: list = field(default_factory=lambda: [1.0])
    reg: Regularization | None = None

    @property
    def n_layers(self) -> int:
        return len(self.weights)

    @property
    def deep(self) -> bool:
        """Deep models keep the rows of every ``Hl`` on the unit simplex."""
        return self.n_layers > 1

    def with_reg(self, reg: Regularization | None) -> Problem:
        return Problem(self.beta, self.loss, list(self.weights), reg)

    def layer(self, l: int) -> Problem:
        """Layer ``l``'s own one-layer problem (its pretraining and encoding)."""
        reg = None if self.reg is None else self.reg.layer(l)
        return Problem(self.beta, "layer", [1.0], reg)


def chain(Hs: Sequence[torch.Tensor], start: int, stop: int):
    """``H(stop) ⋯ H(start+1)`` for 0-based layer indices, or None when empty."""
    out = None
    for l in range(stop - 1, start - 1, -1):
        out = Hs[l] if out is None else out @ Hs[l]
    return out


def layer_terms(X, Ws, Hs, beta: float, loss: str, sq_norm_X=None, WtX=None):
    """Each layer's divergence ``D_l`` (a list of 0-d tensors).

    With ``sq_norm_X`` (``||X||^2``) given, a Frobenius layer-centric model takes
    its first term, the one on X, in Gram form (:func:`frobenius_gram`, with
    ``W1.T @ X`` when given): a stopping test's precision for a fraction of the
    cost, and no n x m temporary.
    """
    terms = []
    for l in range(len(Ws)):
        if loss == "layer":
            target = X if l == 0 else Ws[l - 1]
            if l == 0 and beta == 2.0 and sq_norm_X is not None:
                terms.append(frobenius_gram(X, Ws[0], Hs[0], sq_norm_X, WtX))
            else:
                terms.append(beta_divergence(target, Ws[l], Hs[l], beta))
        else:
            terms.append(beta_divergence(X, Ws[l], chain(Hs, 0, l + 1), beta))
    return terms


def objective(X, Ws, Hs, problem: Problem, sq_norm_X=None, WtX=None):
    """The fitted objective ``Σ λ_l D_l`` (+ penalties); returns (total, terms).

    ``sq_norm_X`` and ``WtX`` as in :func:`layer_terms`.

    Examples
    --------
    >>> import torch
    >>> from sknmf._torch.objective import Problem, objective
    >>> X = torch.tensor([[1.0, 2.0]])
    >>> total, terms = objective(X, [torch.ones(1, 1)], [torch.ones(1, 2)],
    ...                          Problem(2.0))
    >>> float(total)
    0.5
    """
    terms = layer_terms(X, Ws, Hs, problem.beta, problem.loss, sq_norm_X, WtX)
    terms = [t.to(Ws[0].dtype) for t in terms]
    total = sum(w * t for w, t in zip(problem.weights, terms))
    if problem.reg is not None:
        total = total + problem.reg.penalty(Ws, Hs)
    return total, terms


def error_of(weights, terms) -> float:
    """``sqrt(2 Σ λ_l D_l)``: scikit-learn's ``reconstruction_err_`` scale."""
    value = sum(float(w) * float(t) for w, t in zip(weights, terms))
    return math.sqrt(2.0 * max(value, 0.0))


def normalize_rows(W: torch.Tensor, H: torch.Tensor):
    """Rescale rows of ``H`` to sum to one; ``W`` absorbs the scale (``W H`` kept)."""
    s = H.sum(1)
    s = torch.where(s > 0, s, torch.ones_like(s))
    return W * s[None, :], H / s[:, None]
