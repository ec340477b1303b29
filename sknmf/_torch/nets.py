"""skorch nets that run the training loop of the factorisations.

skorch owns the loop (epochs, callbacks, history, devices); the nets only say what
one training step is: a sweep of multiplicative updates, or codes by
multiplicative updates then an Adam step on the weights. No scikit-learn import.
"""

from __future__ import annotations

import math

import torch
from skorch import NeuralNet
from skorch.callbacks import Callback

from .divergence import EPSILON
from .hals import hals_step, squared_norm
from .sparse import CSRMatrix
from .updates import (
    Regularization,
    chain,
    mu_epoch,
    normalize_rows,
    objective,
)


class FactorDataset(torch.utils.data.Dataset):
    """Rows of a dense tensor or a ``CSRMatrix``, with their indices."""

    def __init__(self, X):
        self.X = X

    def __len__(self) -> int:
        return self.X.shape[0]

    def __getitem__(self, i):
        idx = torch.as_tensor([i], device=self.X.device)
        return self.rows(idx)

    def rows(self, idx: torch.Tensor):
        if isinstance(self.X, CSRMatrix):
            return self.X.row_slice(idx), idx
        return self.X[idx], idx


class RowBatchIterator:
    """Batches ``(X_rows, row_indices)`` without per-row collation.

    A ``torch.utils.data.DataLoader`` collates row by row; for a factorisation the
    batch is one slice of a tensor, so this iterator slices directly (the whole
    matrix when ``batch_size`` covers it). Shuffling draws from ``generator`` only.
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


class ToleranceStopping(Callback):
    """Stop like scikit-learn's NMF: every ``check_every`` epochs, when the error fell
    by less than ``tol`` times the initial error since the last check.

    The error is ``sqrt(2 Σ λ_l D_l)``, recorded by the net in the history as
    ``"error"``. ``tol=0`` never stops early.
    """

    def __init__(self, tol: float, error_at_init: float, check_every: int = 10):
        self.tol = tol
        self.error_at_init = error_at_init
        self.check_every = check_every

    def initialize(self):
        self.previous_ = self.error_at_init
        self.converged_ = False
        return self

    def on_epoch_end(self, net, **kwargs):
        epoch = len(net.history)
        # Batch errors are sqrt(2 D_b); the epoch's error is that of the sum of D_b.
        batch_errors = net.history[-1, "batches", :, "error"]
        error = math.sqrt(sum(e * e for e in batch_errors))
        net.history.record("error", error)
        if self.tol <= 0 or epoch % self.check_every:
            return
        scale = self.error_at_init if self.error_at_init > 0 else 1.0
        if (self.previous_ - error) / scale < self.tol:
            self.converged_ = True
            raise KeyboardInterrupt  # skorch's way to end fit_loop cleanly
        self.previous_ = error


class FactorizationNet(NeuralNet):
    """skorch net whose ``train_step`` is one step of a factorisation solver.

    Parameters
    ----------
    module : DeepFactorChain
        The factors (an instance).
    solver : {"mu", "adam", "hals"}
        ``"mu"``: multiplicative updates (monotone on full batches);
        ``"adam"``: codes of the batch by multiplicative updates, then an Adam step
        on the weights, projected back onto the nonnegative orthant (and onto
        unit row sums in deep models); ``"hals"``: one-layer Frobenius HALS.
    reg : Regularization or None
        Scaled penalties.
    update_H : bool
        False trains the codes only (weights fixed).
    n_total : int
        Number of training rows (scales the penalties of mini-batches).
    **kwargs
        Passed to :class:`skorch.NeuralNet`.
    """

    def __init__(
        self,
        module,
        *args,
        solver="mu",
        reg=None,
        update_H=True,
        n_total=None,
        criterion=torch.nn.Identity,
        **kwargs,
    ):
        super().__init__(module, *args, criterion=criterion, **kwargs)
        self.solver = solver
        self.reg = reg
        self.update_H = update_H
        self.n_total = n_total

    def initialize_optimizer(self, *args, **kwargs):
        # Only Adam needs a torch optimizer; building one costs a one-off import of
        # torch._dynamo (over a second), which the closed-form solvers never pay.
        if self.solver != "adam":
            self.optimizer_ = None
            return self
        for H in self.module_.H:
            H.requires_grad_(True)
        return super().initialize_optimizer(*args, **kwargs)

    def get_loss(self, y_pred, y_true=None, X=None, training=False):
        return y_pred

    def sq_norm(self, X) -> float:
        """``||X||^2``, computed once per fit for the full-batch data.

        The estimator asks for it before ``fit`` (the initial error of the
        stopping test); the training steps then reuse the same value.
        """
        cached = getattr(self, "_sq_norm_cache", None)
        if cached is None or cached[0] is not X:
            self._sq_norm_cache = (X, squared_norm(X))
        return self._sq_norm_cache[1]

    def _batch_reg(self, n_batch):
        if self.reg is None or n_batch == self.n_total:
            return self.reg
        frac = n_batch / self.n_total
        scaled = Regularization.__new__(Regularization)
        scaled.l1_W, scaled.l2_W = self.reg.l1_W, self.reg.l2_W
        scaled.l1_H, scaled.l2_H = self.reg.l1_H * frac, self.reg.l2_H * frac
        return scaled

    def train_step(self, batch, **fit_params):
        Xb, idx = batch
        m = self.module_
        self.module_.train()
        n_batch = Xb.shape[0]
        reg = self._batch_reg(n_batch)
        Ws = m.codes(idx)
        Ws = [W.detach() for W in Ws]
        Hs = [H.detach() for H in m.H]
        with torch.no_grad():
            if self.solver == "hals":
                if idx is None:
                    # Full batch: the step updates the module's factors in
                    # place, with buffers kept for the whole fit.
                    W, H = m.W[0].data, m.H[0].data
                    workspace = self.__dict__.setdefault("_hals_workspace", {})
                else:
                    W, H, workspace = Ws[0].clone(), Hs[0].clone(), None
                # The step's own products give the error almost for free; the
                # generic objective (X - W H) cost as much as the step itself.
                hals_loss = hals_step(
                    Xb,
                    W,
                    H,
                    l1_reg_W=reg.l1_W[0] if reg else 0.0,
                    l2_reg_W=reg.l2_W[0] if reg else 0.0,
                    l1_reg_H=reg.l1_H if reg else 0.0,
                    l2_reg_H=reg.l2_H if reg else 0.0,
                    update_H=self.update_H,
                    compute_loss=True,
                    sq_norm_X=self.sq_norm(Xb) if idx is None else None,
                    workspace=workspace,
                )
                Ws, Hs = [W], [H]
            else:
                products = {}
                mu_epoch(
                    Xb,
                    Ws,
                    Hs,
                    beta=m.beta,
                    loss=m.loss,
                    weights=m.weights,
                    reg=reg,
                    update_H=self.update_H and self.solver == "mu",
                    products=products,
                )
            for l, W in enumerate(Ws):
                if idx is None:
                    m.W[l].data = W
                else:
                    m.W[l].data[idx] = W
            if self.solver in ("mu", "hals"):
                for l, H in enumerate(Hs):
                    m.H[l].data = H
        if self.solver == "adam" and self.update_H:
            self._adam_step(Xb, idx)
        with torch.no_grad():
            if self.solver == "hals":
                terms = [torch.as_tensor(hals_loss, dtype=Hs[0].dtype)]
                total = terms[0]
                if reg is not None:
                    total = total + reg.penalty(m.codes(idx), list(m.H))
            else:
                # Frobenius, layer-centric: the loss on X in Gram form, from the
                # H1 update's own W1.T @ X (see layer_terms).
                total, terms = objective(
                    Xb,
                    m.codes(idx),
                    list(m.H),
                    m.beta,
                    m.loss,
                    m.weights,
                    reg,
                    sq_norm_X=(
                        self.sq_norm(Xb)
                        if m.beta == 2.0 and m.loss == "layer"
                        else None
                    ),
                    WtX=products.get("WtX"),
                )
            weighted = sum(w * t for w, t in zip(m.weights, terms))
        self.history.record_batch("error", math.sqrt(2.0 * max(float(weighted), 0.0)))
        return {"loss": total, "y_pred": total}

    def _adam_step(self, Xb, idx):
        m = self.module_
        self.optimizer_.zero_grad()
        Ws = [W.detach() for W in m.codes(idx)]
        total, _ = objective(Xb, Ws, list(m.H), m.beta, m.loss, m.weights)
        if self.reg is not None:
            frac = Xb.shape[0] / self.n_total
            for H in m.H:
                total = total + frac * (
                    self.reg.l1_H * H.sum() + 0.5 * self.reg.l2_H * (H * H).sum()
                )
        # Mean over rows keeps the step size independent of the batch size.
        (total / Xb.shape[0]).backward()
        self.optimizer_.step()
        with torch.no_grad():
            for H in m.H:
                H.data.clamp_(min=EPSILON)
                if m.n_layers > 1:
                    H.data /= H.data.sum(1, keepdim=True)

    def fit(self, X, y=None, **fit_params):
        # Factor tensors are set up by the estimator; never re-create the module.
        if not self.initialized_:
            self.initialize()
        try:
            self.partial_fit(X, y, **fit_params)
        finally:
            # The cache holds the data, the workspace data-sized buffers: never
            # keep (or pickle) them past the fit.
            self.__dict__.pop("_sq_norm_cache", None)
            self.__dict__.pop("_hals_workspace", None)
        return self


__all__ = [
    "FactorDataset",
    "FactorizationNet",
    "RowBatchIterator",
    "ToleranceStopping",
    "chain",
    "normalize_rows",
]
