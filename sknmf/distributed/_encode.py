"""``transform`` and ``inverse_transform`` of Dask arrays: lazy, one task per chunk.

Each chunk of X is encoded by the in-memory encoder (:func:`sknmf._torch.stages.encode`)
with the fitted weights, which enter the graph once as one key that every chunk's
task depends on (shipped once to each worker that needs it). Nothing runs
until the result is computed; the result is a Dask array chunked like X by rows.
A chunk's codes are those the in-memory ``transform`` gives for that chunk's
rows: the stopping rule, like the in-memory one, looks at the rows it encodes
(here a chunk's), and so does a solver's shared decision (HALS's sweep counts,
decided on the chunk's leading rows), so they differ from the rows' codes in
a ``transform`` of the whole array at the level of the encoding's tolerance.
"""

from __future__ import annotations

import numpy as np
import torch

from .._torch.divergence import beta_divergence
from .._torch.nets import Stage
from .._torch.objective import Problem, Regularization, chain
from .._torch.stages import encode
from . import _chunks


class EncodeSpec:
    """The fitted model's encoding settings (what a chunk's task needs)."""

    def __init__(self, est, device: str):
        self.Hs = [np.asarray(H) for H in est.layer_components_]
        self.widths = [est.n_features_in_, *[H.shape[0] for H in self.Hs[:-1]]]
        self.alphas = est._alphas()
        self.l1_ratio = est.l1_ratio
        self.beta = est._beta
        self.loss = est.loss
        self.weights = list(est.layer_weights_)
        self.solver = est._solver
        self.max_iter = est.max_iter
        self.tol = est.tol
        self.callbacks = est._user_callbacks()
        self.device = device


def encode_block(block, spec: EncodeSpec) -> np.ndarray:
    """Codes ``WL`` of one chunk, in the chunk's dtype."""
    return _encode(block, spec)[0]


def divergence_block(block, spec: EncodeSpec) -> float:
    """``D(X | WL HL ⋯ H1)`` of one chunk after encoding it (summable)."""
    return _encode(block, spec)[1]


def _encode(block, spec: EncodeSpec):
    dtype = block.dtype if block.dtype in (np.float32, np.float64) else np.float64
    x = _chunks.load(block, np.dtype(dtype).name, spec.device, spec.beta <= 0)
    X = x["X"]
    ref = X.values if hasattr(X, "values") and not isinstance(X, torch.Tensor) else X
    Hs = [torch.as_tensor(H, device=ref.device).to(ref.dtype) for H in spec.Hs]
    reg = Regularization(x["n"], spec.widths, *spec.alphas, spec.l1_ratio)
    problem = Problem(spec.beta, spec.loss, list(spec.weights), reg)
    stage = Stage(max_epochs=spec.max_iter, tol=spec.tol, callbacks=spec.callbacks)
    W = encode(X, Hs, problem, spec.solver, stage)[-1]
    with torch.no_grad():
        loss = float(beta_divergence(X, W, chain(Hs, 0, len(Hs)), spec.beta))
    return W.cpu().numpy().astype(dtype, copy=False), loss


def transform(est, X):
    """Lazy codes of a Dask array (``est`` fitted)."""
    import dask.array as da
    from dask import delayed

    from .._utils import check_device
    from ._fit import check_array

    X = check_array(X, est, reset=False)
    spec = delayed(EncodeSpec(est, str(check_device(est.device))), pure=True)
    k = est.n_components_
    dtype = X.dtype
    parts = X.to_delayed().ravel()
    blocks = [
        da.from_delayed(
            delayed(encode_block, pure=True)(p, spec), shape=(n, k), dtype=dtype
        )
        for p, n in zip(parts, X.chunks[0])
    ]
    return da.concatenate(blocks, axis=0)


def score(est, X) -> float:
    """``-D(X | decode(encode(X))) / n_samples`` of a Dask array, summed over
    chunks on the cluster (computed now: a score is a number)."""
    import dask
    from dask import delayed

    from .._utils import check_device
    from ._fit import check_array

    X = check_array(X, est, reset=False)
    spec = delayed(EncodeSpec(est, str(check_device(est.device))), pure=True)
    parts = X.to_delayed().ravel()
    losses = dask.compute(*[delayed(divergence_block)(p, spec) for p in parts])
    return -float(sum(losses)) / X.shape[0]


def inverse_transform(est, X):
    """Lazy ``X @ components_`` of Dask codes."""
    if X.ndim != 2 or X.shape[1] != est.n_components_:
        raise ValueError(
            f"Codes must have shape (n_samples, {est.n_components_}); got {X.shape}."
        )
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    X = X.rechunk({1: -1})
    return X @ est.components_.astype(X.dtype, copy=False)
