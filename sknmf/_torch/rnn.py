"""Recurrent sequence classifier over packed variable-length batches.

Pure torch (no scikit-learn): :class:`SequenceClassifier` turns a zero-padded
batch ``(batch, max_len, n_features)`` plus the true ``lengths`` into class logits,
optionally added to a fixed linear model of one vector per sequence. The
batch is packed with :func:`torch.nn.utils.rnn.pack_padded_sequence`, so padding frames
never reach the recurrence: a sequence's output does not depend on how long the other
sequences of its batch are, nor on where it sits in the batch.

Every random draw (parameter initialisation, dropout masks) comes from private
:class:`torch.Generator` objects seeded by ``seed``; torch's global random state is
never read nor advanced.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}


class PrivateDropout(nn.Module):
    """Inverted dropout whose masks come from a private, seeded generator.

    :class:`torch.nn.Dropout` draws from torch's global generator, which would make a
    fit depend on (and change) global state. Masks are drawn on the CPU and moved to the
    input's device so that one generator serves every device.

    Parameters
    ----------
    p : float
        Probability of zeroing an element, in ``[0, 1)``.
    seed : int
        Seed of the private generator.
    """

    def __init__(self, p: float, seed: int) -> None:
        super().__init__()
        self.p = float(p)
        self.generator = torch.Generator()
        self.generator.manual_seed(int(seed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty(x.shape, dtype=x.dtype).bernoulli_(
            keep, generator=self.generator
        )
        return x * mask.to(x.device) / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class SequenceClassifier(nn.Module):
    """Stacked GRU / LSTM / Elman RNN with a linear read-out of the final state.

    Parameters
    ----------
    n_features : int
        Size of each frame vector.
    n_classes : int
        Number of output logits.
    hidden_size : int
        Size of the recurrent state (per direction).
    cell : {"gru", "lstm", "rnn"}
        Recurrent cell.
    num_layers : int
        Number of stacked recurrent layers.
    bidirectional : bool
        Run a second recurrence backwards in time and concatenate both final states.
    dropout : float
        Dropout on the inputs of every layer above the first and on the embedding
        before the read-out (so it also acts when ``num_layers == 1``).
    seed : int
        Seed of the private generators for initialisation and dropout.
    skip_weight : tensor-like of shape (n_classes, n_skip) or None
        A fixed linear path added to the logits: ``forward`` then takes one extra
        vector per sequence, ``skip``, and adds ``skip @ skip_weight.T + skip_bias``
        (for instance a logistic regression fitted beforehand). Stored as buffers, so
        no optimizer changes it; the read-out of the recurrence then starts at zero,
        and the untrained network is exactly that linear model.
    skip_bias : tensor-like of shape (n_classes,) or None
        Intercepts of the linear path (zeros if ``None``).

    Notes
    -----
    Each layer is its own single-layer torch RNN so that inter-layer dropout can use a
    private generator (torch's built-in inter-layer dropout uses the global one).
    Initialisation follows torch's defaults (uniform in ``±1/sqrt(hidden_size)`` for
    the recurrences, ``±1/sqrt(fan_in)`` for the read-out), drawn from the private
    generator.
    """

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        hidden_size: int = 64,
        cell: str = "gru",
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        seed: int = 0,
        skip_weight=None,
        skip_bias=None,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell={cell!r} is not one of {sorted(CELLS)}.")
        self.cell = cell
        self.hidden_size = int(hidden_size)
        self.num_directions = 2 if bidirectional else 1
        rnn_cls = CELLS[cell]
        in_sizes = [n_features] + [hidden_size * self.num_directions] * (num_layers - 1)
        # Built on the meta device: torch's default initialisation would draw from the
        # global generator; real storage is allocated and filled in reset_parameters.
        self.layers = nn.ModuleList(
            rnn_cls(
                size,
                hidden_size,
                num_layers=1,
                batch_first=True,
                bidirectional=bidirectional,
                device="meta",
            )
            for size in in_sizes
        )
        self.head = nn.Linear(
            hidden_size * self.num_directions, n_classes, device="meta"
        )
        self.to_empty(device="cpu")
        self.dropout = PrivateDropout(dropout, seed + 1)
        if skip_weight is None:
            self.skip_weight = self.skip_bias = None
        else:
            weight = torch.as_tensor(skip_weight, dtype=torch.float32)
            if weight.ndim != 2 or weight.shape[0] != n_classes:
                raise ValueError(
                    f"skip_weight must have shape (n_classes={n_classes}, n_skip); "
                    f"got {tuple(weight.shape)}."
                )
            bias = (
                torch.zeros(n_classes)
                if skip_bias is None
                else torch.as_tensor(skip_bias, dtype=torch.float32).reshape(-1)
            )
            if bias.shape != (n_classes,):
                raise ValueError(
                    f"skip_bias must have shape ({n_classes},); "
                    f"got {tuple(bias.shape)}."
                )
            self.register_buffer("skip_weight", weight.clone())
            self.register_buffer("skip_bias", bias.clone())
        self.reset_parameters(seed)

    @property
    def embedding_size(self) -> int:
        """Size of the sequence embedding (``hidden_size * directions``)."""
        return self.hidden_size * self.num_directions

    def reset_parameters(self, seed: int) -> None:
        """Draw every parameter from a private generator seeded with ``seed``."""
        gen = torch.Generator()
        gen.manual_seed(int(seed))
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for layer in self.layers:
                for param in layer.parameters():
                    param.copy_(
                        torch.empty(param.shape).uniform_(-bound, bound, generator=gen)
                    )
                # Re-pack cuDNN's flat weight buffer after writing the parameters.
                layer.flatten_parameters()
            fan_in = self.head.in_features
            bound = 1.0 / math.sqrt(fan_in)
            for param in self.head.parameters():
                param.copy_(
                    torch.empty(param.shape).uniform_(-bound, bound, generator=gen)
                )
            if self.skip_weight is not None:
                # Start from the linear path alone: the recurrence's read-out learns
                # only what that model leaves (the first gradient steps still reach
                # the recurrence through the read-out's own updates).
                self.head.weight.zero_()
                self.head.bias.zero_()

    def embed(self, X: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Final hidden state of the last layer, ``(batch, embedding_size)``.

        Parameters
        ----------
        X : torch.Tensor of shape (batch, max_len, n_features)
            Zero-padded frames; frames past ``lengths[i]`` are ignored.
        lengths : torch.Tensor of shape (batch,)
            True number of frames of each sequence (all ``>= 1``).

        Returns
        -------
        embedding : torch.Tensor of shape (batch, embedding_size)
        """
        # pack_padded_sequence wants lengths as a CPU int64 tensor.
        lengths = lengths.detach().to("cpu", torch.int64).reshape(-1)
        packed: PackedSequence = pack_padded_sequence(
            X, lengths, batch_first=True, enforce_sorted=False
        )
        hidden = None
        for i, layer in enumerate(self.layers):
            if i > 0:
                packed = packed._replace(data=self.dropout(packed.data))
            packed, hidden = layer(packed)
        if self.cell == "lstm":
            hidden = hidden[0]
        # hidden: (directions, batch, hidden_size), already back in input order
        # (the RNN un-sorts it with the packed sequence's unsorted_indices).
        return torch.cat(list(hidden), dim=1)

    @property
    def n_skip(self) -> int:
        """Size of the per-sequence input of the linear path (0 without one)."""
        return 0 if self.skip_weight is None else int(self.skip_weight.shape[1])

    def forward(
        self,
        X: torch.Tensor,
        lengths: torch.Tensor,
        skip: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Class logits ``(batch, n_classes)``.

        ``skip`` ``(batch, n_skip)`` is the input of the linear path, required when
        the module has one and refused otherwise.
        """
        logits = self.head(self.dropout(self.embed(X, lengths)))
        if self.skip_weight is None:
            if skip is not None:
                raise ValueError("This module has no linear path: pass skip=None.")
            return logits
        if skip is None or skip.shape != (X.shape[0], self.n_skip):
            raise ValueError(
                f"skip must be a tensor of shape (batch={X.shape[0]}, {self.n_skip})."
            )
        return logits + skip.to(logits.dtype) @ self.skip_weight.T + self.skip_bias
