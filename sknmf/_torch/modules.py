"""``nn.Module``s of the package: the deep factor chain."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .updates import objective


class DeepFactorChain(nn.Module):
    """Codes ``W1..WL`` of the training rows and weights ``H1..HL`` of a deep NMF.

    The tensors live in :class:`~torch.nn.ParameterList`s so that skorch moves them
    between devices and the ``adam`` solver can differentiate through them; the
    multiplicative solvers update ``.data`` directly.

    Parameters
    ----------
    Ws, Hs : sequence of torch.Tensor
        Initial codes (n_samples × r_l) and weights (r_l × r_(l-1)).
    beta : float
        Beta of the divergence.
    loss : {"layer", "data"}
        Layer-centric or data-centric objective (DESIGN.md §2).
    weights : sequence of float
        The λ_l of each term.

    Examples
    --------
    >>> import torch
    >>> from sknmf._torch.modules import DeepFactorChain
    >>> Ws, Hs = [torch.ones(3, 2)], [torch.ones(2, 4)]
    >>> chain = DeepFactorChain(Ws, Hs, 2.0, "layer", [1.0])
    >>> X = torch.full((3, 4), 2.0)
    >>> float(chain(X, torch.arange(3)))
    0.0
    """

    def __init__(
        self,
        Ws: Sequence[torch.Tensor],
        Hs: Sequence[torch.Tensor],
        beta: float,
        loss: str,
        weights: Sequence[float],
    ):
        super().__init__()
        self.W = nn.ParameterList([nn.Parameter(W, requires_grad=False) for W in Ws])
        self.H = nn.ParameterList([nn.Parameter(H, requires_grad=False) for H in Hs])
        self.beta = float(beta)
        self.loss = loss
        self.weights = [float(w) for w in weights]

    @property
    def n_layers(self) -> int:
        return len(self.H)

    def codes(self, idx: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Codes of the rows ``idx`` (all rows when None)."""
        if idx is None:
            return [W for W in self.W]
        return [W[idx] for W in self.W]

    def forward(self, X, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Weighted objective ``Σ λ_l D_l`` on the rows ``idx`` of the training data."""
        total, _ = objective(
            X, self.codes(idx), list(self.H), self.beta, self.loss, self.weights
        )
        return total
