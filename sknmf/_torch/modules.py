"""``nn.Module``s of the package: the deep factor chain."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class DeepFactorChain(nn.Module):
    """Codes ``W1..WL`` of the rows being fitted and weights ``H1..HL`` of a deep NMF.

    The tensors live in :class:`~torch.nn.ParameterList`s so that skorch moves them
    between devices, saves and restores them with the net; the solvers update
    ``.data`` directly (no autograd graph). Once a stage has run, its codes are
    dropped (:meth:`drop_codes`) so that a fitted net keeps the weights only.

    Parameters
    ----------
    Ws, Hs : sequence of torch.Tensor
        Initial codes (n_samples × r_l) and weights (r_l × r_(l-1)).

    Examples
    --------
    >>> import torch
    >>> from sknmf._torch.modules import DeepFactorChain
    >>> chain = DeepFactorChain([torch.ones(3, 2)], [torch.ones(2, 4)])
    >>> chain.n_layers, tuple(chain.W[0].shape)
    (1, (3, 2))
    >>> chain.drop_codes()
    >>> tuple(chain.W[0].shape)
    (0, 2)
    """

    def __init__(self, Ws: Sequence[torch.Tensor], Hs: Sequence[torch.Tensor]):
        super().__init__()
        self.W = nn.ParameterList([nn.Parameter(W, requires_grad=False) for W in Ws])
        self.H = nn.ParameterList([nn.Parameter(H, requires_grad=False) for H in Hs])

    @property
    def n_layers(self) -> int:
        return len(self.H)

    def drop_codes(self) -> None:
        """Replace the codes by empty tensors (the weights stay)."""
        for l, W in enumerate(self.W):
            empty = torch.empty((0, W.shape[1]), dtype=W.dtype, device=W.device)
            self.W[l] = nn.Parameter(empty, requires_grad=False)
