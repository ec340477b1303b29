"""Frobenius NMF by accelerated HALS (hierarchical alternating least squares).

The ``"hals"`` solver.

The objective, with scikit-learn's orientation (samples are rows) and its
regularisation semantics, is::

    0.5 * ||X - W H||_F^2
        + l1_reg_W * ||W||_1 + 0.5 * l2_reg_W * ||W||_F^2
        + l1_reg_H * ||H||_1 + 0.5 * l2_reg_H * ||H||_F^2

where the ``l1_reg_*`` / ``l2_reg_*`` values are already scaled the way
``sklearn.decomposition.NMF`` scales ``alpha_W``, ``alpha_H`` and ``l1_ratio``.

HALS updates one component at a time in closed form (the same coordinate
updates as scikit-learn's ``cd`` solver). Its cost is dominated by the two
products that touch X, ``X @ H.T`` and ``W.T @ X``; the column updates only need
those products and the small Gram matrices. Gillis & Glineur (2012) therefore
repeat the cheap column sweeps several times per expensive product
("accelerated HALS"): at most ``1 + alpha * rho`` sweeps, where ``rho`` is the
cost of the products relative to one sweep, stopping early once a sweep changes
the factor by less than ``delta`` times what the first sweep changed it.

Layout matters more than flops here: a sweep updates one component of ``W`` at
a time, so the solver works on ``W.T`` (``k x n_samples``, each component
contiguous) and on ``H`` (each component a contiguous row). A column-major
``W`` (``W.T.is_contiguous()``) is updated with no copy at all.

:class:`HALSSolver` puts these blocks behind the solver protocol (one layer;
the joint fine-tuning of a deep model is handed to :mod:`.deep_hals`);
:func:`hals_step` is one outer iteration as a plain function and
:func:`nnls_sweeps` the bare coordinate descent on codes for a fixed
dictionary (the image codec's solver). This module is pure torch; it never
imports scikit-learn. Nothing here calls
numpy inside the loops (numpy's own BLAS threads would compete with torch's).

References
----------
N. Gillis and F. Glineur, "Accelerated multiplicative updates and hierarchical
ALS algorithms for nonnegative matrix factorization", Neural Computation 24(4),
2012.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from .. import kernels
from ..divergence import squared_norm
from ..kernels.precision import matmul as _product
from ..objective import Problem
from ..sparse import CSRMatrix
from . import Solver, cached_squared_norm

__all__ = ["HALSSolver", "frobenius_objective", "hals_step", "nnls_sweeps"]

# At most 1 + _ALPHA * rho inner sweeps per block, stopping once a sweep moves the
# factor by at most _DELTA times what the first sweep moved it. Gillis & Glineur
# recommend 0.5 and 0.1 with rho counted in flops; rho here counts time (see
# _n_inner), which is smaller, and these values gave the shortest time to
# scikit-learn cd's error +1% on image patches, a planted low-rank matrix and
# the digits (alpha 0.5 needed about twice the outer iterations).
_ALPHA = 4.0
_DELTA = 0.3
# A ceiling on inner sweeps: beyond a few dozen the block is solved far below
# what the next outer iteration will undo anyway.
_MAX_INNER = 30
# Cost weights of _n_inner, relative to one flop of the sweep's matrix-vector
# products (measured with torch 2.13 + MKL on a 2-core AVX-512 machine).
_DENSE_WEIGHT = 1.0 / 3.0
_SPARSE_WEIGHT = 1.5
_ROW_OVERHEAD = 150_000.0
# torch's grain for parallel element-wise work (at::internal::GRAIN_SIZE): smaller
# operations run on the calling thread.
_GRAIN = 32768
# The most columns (rows of the data) whose sweeps decide the count of all
# (_sample_columns).
_SAMPLE_CAP = 1024
# On a GPU without the fused kernel, the stopping test is read back once per this
# many sweeps (each read waits for the device).
_CHECK_EVERY = 4


def _is_sparse(X) -> bool:
    return isinstance(X, CSRMatrix) or X.layout in (torch.sparse_csr, torch.sparse_coo)


def _nnz(X) -> int:
    if isinstance(X, CSRMatrix):
        return X.nnz
    if X.layout == torch.sparse_csr:
        return int(X.values().numel())
    if X.layout == torch.sparse_coo:
        return int(X._nnz())
    return X.numel()


def _x_ht(X, H: Tensor) -> Tensor:
    """``X @ H.T`` as an ``(n_samples, k)`` tensor.

    Written as ``X @ H.T`` rather than ``H @ X.T``: MKL threads the transposed
    form even on tiny shapes, and a threaded call on a busy 2-core machine can
    wait a whole scheduler slice for its second thread. The transposition into
    the solver's ``(k, n_samples)`` layout is folded into the scaling pass.
    """
    return X.matmul(H.T) if isinstance(X, CSRMatrix) else _product(X, H.T)


def _wt_x(X, Wt: Tensor) -> Tensor:
    """``W.T @ X`` as a ``(k, n_features)`` tensor, from ``Wt = W.T``."""
    if isinstance(X, CSRMatrix):
        return X.tmatmul(Wt.T).T
    return _product(Wt, X) if not _is_sparse(X) else Wt @ X


def _n_inner(nnz: int, m: int, q: int, k: int, sparse: bool) -> int:
    """Gillis & Glineur's sweep budget ``1 + alpha * rho`` for a ``(k, m)`` factor.

    ``rho`` is the cost of the products that feed the block (cross term
    ``2 nnz k`` flops, Gram matrix ``2 q k^2``; ``q`` is the other factor's
    length) over the cost of one sweep (``2 m k^2`` flops in ``k`` matrix-vector
    products). Gillis & Glineur count flops; here each side is weighted by what
    it costs on a CPU: a dense matrix product runs about three times more flops
    per second than the sweep's matrix-vector products, a sparse one somewhat
    fewer, and every row update carries a fixed dispatch cost (worth about
    ``_ROW_OVERHEAD`` flops) that dominates on narrow factors. Only shapes enter,
    so the iterates do not depend on timings.
    """
    cross = 2.0 * nnz * k * (_SPARSE_WEIGHT if sparse else _DENSE_WEIGHT)
    gram = 2.0 * q * k * k * _DENSE_WEIGHT
    sweep = k * (_ROW_OVERHEAD + 2.0 * m * k)
    rho = 1.0 + (cross + gram) / sweep
    return max(1, min(_MAX_INNER, int(math.floor(1.0 + _ALPHA * rho))))


def _scaled_system(
    G: Tensor, R: Tensor, l1: float, l2: float, out: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Rows of the coordinate updates, pre-divided by the diagonal of the Gram matrix.

    A component ``t`` is updated as ``F[t] = max(0, Rs[t] - Gs[t] @ F)`` with
    ``Gs[t, t] = 0``. Where the Gram diagonal is not positive (the matching
    component of the other factor is all zero and there is no L2 term), the
    component has no defined minimiser: like scikit-learn's ``cd`` it is left
    unchanged, which ``Gs[t] = -e_t`` and ``Rs[t] = 0`` encode without a branch
    (hence without a device synchronisation).
    """
    k = G.shape[0]
    diag = G.diagonal() + l2
    safe = diag > 0
    inv = torch.where(safe, 1.0 / torch.where(safe, diag, 1.0), 0.0)
    Gs = G * inv[:, None]
    Gs.fill_diagonal_(0.0)
    eye = torch.eye(k, dtype=G.dtype, device=G.device)
    Gs = torch.where(safe[:, None], Gs, -eye)
    # One pass over the k x n cross term when there is no L1 term (each pass
    # over it is a parallel region, see _block_size).
    Rs = (
        out if out is not None else torch.empty(R.shape, dtype=R.dtype, device=R.device)
    )
    torch.mul(R, inv[:, None], out=Rs)
    if l1:
        Rs.sub_((l1 * inv)[:, None])
    return Gs, Rs


def _block_size(F: Tensor) -> int:
    """How many samples (columns of ``F``) one block of sweeps covers.

    On CPU a block of about 1 MiB stays in a core's L2 cache across the ``k``
    row updates of a sweep (each update reads the whole block), and keeps each
    row update below torch's parallelisation grain (32768 elements): the
    element-wise work is tiny, so a parallel region only adds a thread barrier,
    which costs milliseconds when another process holds the second core. The
    products that touch X stay multi-threaded. On a GPU one block covers all.
    """
    k, m = F.shape
    if F.device.type != "cpu":
        return m
    target = (1 << 20) // max(1, k * F.element_size())
    target = min(target, _GRAIN)
    b = 1 << max(10, min(14, round(math.log2(max(target, 1)))))
    return m if m <= 1.5 * b else b


def _sweep(F: Tensor, Gs: Tensor, Rs: Tensor, buf: Tensor) -> None:
    """One Gauss-Seidel pass over the rows of ``F`` (in place).

    Row ``t`` becomes ``max(0, Rs[t] - Gs[t] @ F)``; ``Gs[t, t] = 0`` so the
    row's own old value does not enter, and every later row sees it updated.
    """
    FT = F.T
    for f_t, g_t, r_t in zip(F.unbind(0), Gs.unbind(0), Rs.unbind(0)):
        torch.addmv(r_t, FT, g_t, alpha=-1.0, out=buf)
        torch.clamp(buf, min=0.0, out=f_t)


def _sample_columns(k: int) -> int:
    """How many leading columns of a ``(k, m)`` factor decide its sweep count.

    The first ``min(m, _sample_columns(k))`` columns are the sample that the
    early stop of :func:`_sweeps` watches: a deterministic set that keeps the
    stopping test's copy and norm below torch's parallelisation grain (see
    :func:`_block_size`), and at most ``_SAMPLE_CAP`` columns, so that the rows
    that decide are a small leading part of a large data set (a Dask fit runs
    them as their own chunk, before the others: :mod:`sknmf.distributed`).
    """
    return max(1, min(_SAMPLE_CAP, _GRAIN // max(k, 1)))


def _sweeps(
    F: Tensor, Gs: Tensor, Rs: Tensor, max_inner: int, early_stop: bool = True
) -> int:
    """Up to ``max_inner`` sweeps, stopping early as Gillis & Glineur do.

    One count for all columns, decided on a sample: the first
    :func:`_sample_columns` columns are swept with the stopping rule, which
    gives the count ``c``; every other column is swept exactly ``c`` times, with
    no test. The columns of ``F`` are independent given ``Gs`` and ``Rs`` (rows
    of W are separate least-squares problems), so the result does not depend on
    how the columns are split into blocks as long as the sample comes first:
    a block of rows that follows a count decided elsewhere (``early_stop=False``
    with ``max_inner=c``) gets the steps it would get inside the whole data.
    The sweeps run block by block, each block through its ``c`` sweeps while it
    sits in cache; the sample is the start of the first block. Returns ``c``
    (``max_inner`` without the early stop).

    On CUDA the sweeps are the fused kernel of :mod:`sknmf._torch.kernels` where it
    applies (one launch per sweep, the stopping test on the whole block on the
    device; returns the sweeps launched), else the torch sweeps reading the
    test every few sweeps.
    """
    if F.device.type == "cuda":
        if kernels.usable(F, Gs, Rs):
            return kernels.fused_sweeps(
                F, Gs, Rs, max_inner, delta=_DELTA, early_stop=early_stop
            )
        return _sweeps_checked_every(F, Gs, Rs, max_inner, early_stop)
    k, m = F.shape
    b = _block_size(F)
    n_watch = m if F.device.type != "cpu" else min(m, _sample_columns(k))
    # The first block holds the whole sample (b >= the sample for every k and
    # dtype; max() keeps that true whatever the constants).
    first_width = min(m, max(b, n_watch))
    buf = torch.empty(max(first_width, min(b, m)), dtype=F.dtype, device=F.device)
    count = max_inner
    if early_stop and max_inner > 1:
        F0, R0 = F[:, :first_width], Rs[:, :first_width]
        watched = F0[:, :n_watch]
        prev = torch.empty((k, n_watch), dtype=F.dtype, device=F.device)
        first = None
        for count in range(1, max_inner + 1):
            if count < max_inner:
                prev.copy_(watched)
            _sweep(F0, Gs, R0, buf[:first_width])
            if count == max_inner:
                break
            prev.sub_(watched)
            change = float(torch.linalg.vector_norm(prev))
            if first is None:
                first = change
            if change <= _DELTA * first:
                break
        done = first_width
    else:
        done = 0
    for start in range(done, m, b):
        Fb = F[:, start : start + b]
        width = Fb.shape[1]
        for _ in range(count):
            _sweep(Fb, Gs, Rs[:, start : start + b], buf[:width])
    return count


def _sweeps_checked_every(
    F: Tensor, Gs: Tensor, Rs: Tensor, max_inner: int, early_stop: bool
) -> int:
    """The torch sweeps on a GPU without the fused kernel: no host wait per sweep.

    Each sweep's change stays on the device; the host reads them every
    ``_CHECK_EVERY`` sweeps and stops at the end of the window in which the
    stopping rule held (up to ``_CHECK_EVERY - 1`` extra sweeps, which never
    increase the objective, for one synchronisation per window).
    """
    buf = torch.empty(F.shape[1], dtype=F.dtype, device=F.device)
    if not early_stop or max_inner == 1:
        for _ in range(max_inner):
            _sweep(F, Gs, Rs, buf)
        return max_inner
    changes = torch.zeros(max_inner, dtype=F.dtype, device=F.device)
    prev = torch.empty_like(F)
    it = 0
    for it in range(1, max_inner + 1):
        prev.copy_(F)
        _sweep(F, Gs, Rs, buf)
        torch.linalg.vector_norm(prev.sub_(F), out=changes[it - 1])
        if it % _CHECK_EVERY == 0 or it == max_inner:
            window = changes[:it]
            if bool((window[1:] <= _DELTA * window[0]).any() | (window[0] == 0)):
                break
    return it


def _rows_of(W: Tensor) -> tuple[Tensor, bool]:
    """``W.T`` as a contiguous tensor; True when it had to be copied."""
    Wt = W.T
    if Wt.is_contiguous():
        return Wt, False
    return Wt.contiguous(), True


def _check(X: Tensor, W: Tensor | None, H: Tensor) -> None:
    if (W is not None and W.dtype != X.dtype) or H.dtype != X.dtype:
        raise TypeError(
            f"X, W and H must share one dtype; got {X.dtype}, "
            f"{None if W is None else W.dtype}, {H.dtype}."
        )
    n, p = X.shape
    k = H.shape[0]
    if (W is not None and W.shape != (n, k)) or H.shape != (k, p):
        raise ValueError(
            f"shapes do not match: X {tuple(X.shape)}, "
            f"W {None if W is None else tuple(W.shape)}, "
            f"H {tuple(H.shape)}; expected W (n_samples, k) and H (k, n_features)."
        )


def hals_step(
    X: Tensor,
    W: Tensor,
    H: Tensor,
    *,
    XHt: Tensor | None = None,
    l1_reg_W: float = 0.0,
    l2_reg_W: float = 0.0,
    l1_reg_H: float = 0.0,
    l2_reg_H: float = 0.0,
    update_H: bool = True,
    compute_loss: bool = False,
    sq_norm_X: float | None = None,
    workspace: dict | None = None,
) -> float | None:
    """One outer iteration of accelerated HALS: the W block, then the H block.

    ``W`` and ``H`` are updated in place; ``X`` is only read, through
    ``X @ H.T`` and ``W.T @ X`` (a sparse CSR ``X`` stays sparse). Each block
    computes its cross term and Gram matrix once and reuses them over several
    column sweeps (Gillis & Glineur 2012), so the objective never increases.

    Parameters
    ----------
    X : Tensor or CSRMatrix of shape (n_samples, n_features)
        Nonnegative data: dense (strided), ``torch.sparse_csr``, or
        :class:`~sknmf._torch.sparse.CSRMatrix`.
    W : Tensor of shape (n_samples, k)
        Nonnegative codes, updated in place. A column-major ``W``
        (``W.T.is_contiguous()``) avoids one copy per call.
    H : Tensor of shape (k, n_features)
        Nonnegative components, updated in place.
    XHt : Tensor of shape (n_samples, k), default=None
        ``X @ H.T`` when the caller already has it (``H`` fixed); computed
        otherwise. Only meaningful with ``update_H=False``.
    l1_reg_W, l2_reg_W, l1_reg_H, l2_reg_H : float, default=0.0
        Regularisation strengths, scaled as scikit-learn scales them.
    update_H : bool, default=True
        Whether to update ``H`` after ``W``.
    compute_loss : bool, default=False
        Also return ``0.5 * ||X - W H||^2`` (no penalties) for the updated
        factors, from the block's own products in Gram form
        (``||X||^2 - 2 <W^T X, H> + <W^T W, H H^T>``, small inner products in
        float64): nearly free, where evaluating ``X - W H`` costs about as
        much as the step itself. Its relative error is ~1e-6 in float32.
    sq_norm_X : float, default=None
        ``||X||_F^2``, to spare one pass over X per call when
        ``compute_loss`` is set; computed when None.
    workspace : dict, default=None
        Buffers kept by the caller across calls with the same shapes: the
        ``n_samples x k`` arrays of a dense step are then allocated once per
        fit rather than once per step (glibc's heaps grew by tens of MiB over
        a few hundred steps of fresh allocations).

    Returns
    -------
    loss : float or None
        The half squared error after the step when ``compute_loss``, else None.

    Examples
    --------
    >>> import torch
    >>> from sknmf._torch.solvers.hals import hals_step, frobenius_objective
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.rand(30, 12, generator=g, dtype=torch.float64)
    >>> W = torch.rand(30, 4, generator=g, dtype=torch.float64)
    >>> H = torch.rand(4, 12, generator=g, dtype=torch.float64)
    >>> before = frobenius_objective(X, W, H)
    >>> hals_step(X, W, H)
    >>> frobenius_objective(X, W, H) < before
    True
    """
    _check(X, W, H)
    Wt, copied = _rows_of(W)
    H_rows = H if H.is_contiguous() else H.contiguous()
    R, G, _ = _update_codes(X, Wt, H_rows, l1_reg_W, l2_reg_W, workspace, XHt)
    if copied:
        W.copy_(Wt.T)
    if not update_H:
        if not compute_loss:
            return None
        # Gram form with the final W and the W block's own cross term X H^T.
        cross = float(torch.sum(R * Wt, dtype=torch.float64))
        return _half_sq_error(X, sq_norm_X, cross, Wt @ Wt.T, G)
    del R
    C, D = _wt_x(X, Wt), Wt @ Wt.T
    n_inner = _n_inner(_nnz(X), X.shape[1], X.shape[0], H.shape[0], _is_sparse(X))
    _update_weights(H_rows, C, D, l1_reg_H, l2_reg_H, n_inner)
    if H_rows is not H:
        H.copy_(H_rows)
    if not compute_loss:
        return None
    return _half_sq_error(X, sq_norm_X, _cross(C, H_rows), D, H_rows @ H_rows.T)


def _update_codes(
    X, Wt, H_rows, l1, l2, workspace, XHt=None, system=None, given=None, shape=None
):
    """The W block: sweeps of ``Wt`` (k x n, updated in place) for fixed ``H``.

    Returns the cross term ``R = H X^T`` (k x n view), ``G = H H^T`` (which
    the loss of a codes-only step reuses) and the number of sweeps. ``system``
    caches ``(G, R, Gs, Rs)`` across calls with the same ``H`` (transform).
    ``given`` is a sweep count decided elsewhere, followed without a test;
    ``shape`` the ``(nnz, n_rows)`` of the whole data when ``X`` is one block
    of it (the sweep budget reads them; default: ``X``'s own).
    """
    n, k = X.shape[0], H_rows.shape[0]
    sparse = _is_sparse(X)
    if system is not None and "Gs" in system:
        G, R, Gs, Rs = system["G"], system["R"], system["Gs"], system["Rs"]
    else:
        if XHt is not None:
            R = XHt.T
        elif workspace is not None and not sparse:
            R = _product(X, H_rows.T, out=_buffer(workspace, "XHt", (n, k), X)).T
        else:
            R = _x_ht(X, H_rows).T
        G = H_rows @ H_rows.T
        Rs = None if workspace is None else _buffer(workspace, "Rs", (k, n), X)
        Gs, Rs = _scaled_system(G, R, l1, l2, out=Rs)
        if system is not None:
            system.update(G=G, R=R, Gs=Gs, Rs=Rs)
    return R, G, _codes_sweeps(Wt, Gs, Rs, X, given, shape)


def _codes_sweeps(Wt, Gs, Rs, X, given=None, shape=None) -> int:
    """The sweeps of the codes ``Wt`` of ``X``; returns their number.

    ``given``: a count decided on another block, followed without a test.
    Otherwise the stopping rule decides, within the budget of the whole data:
    ``shape = (nnz, n_rows)`` when ``X`` is one block of it (default: ``X``'s
    own).
    """
    if given is not None:
        return _sweeps(Wt, Gs, Rs, given, early_stop=False)
    nnz, rows = (_nnz(X), X.shape[0]) if shape is None else shape
    budget = _n_inner(nnz, rows, X.shape[1], Wt.shape[0], _is_sparse(X))
    return _sweeps(Wt, Gs, Rs, budget)


def _update_weights(H_rows, C, D, l1, l2, n_inner) -> None:
    """The H block: sweeps of ``H`` (in place) from ``C = W^T X``, ``D = W^T W``."""
    Gs, Rs = _scaled_system(D, C, l1, l2)
    _sweeps(H_rows, Gs, Rs, n_inner)


def _cross(C: Tensor, H: Tensor) -> float:
    """``<W^T X, H>`` in float64."""
    return float(
        torch.vdot(C.to(torch.float64).flatten(), H.to(torch.float64).flatten())
    )


def _buffer(ws: dict, name: str, shape: tuple, like) -> Tensor:
    """``ws[name]``, (re)allocated when missing or of another shape."""
    buf = ws.get(name)
    dtype, device = like.dtype, like.device
    if buf is None or buf.shape != shape or buf.dtype != dtype or buf.device != device:
        buf = ws[name] = torch.empty(shape, dtype=dtype, device=device)
    return buf


def _half_sq_error(X, sq_norm_X, cross: float, WtW: Tensor, HHt: Tensor) -> float:
    """``0.5 ||X - W H||^2 = 0.5 (||X||^2 - 2 <X, W H> + <W^T W, H H^T>)``."""
    sq = squared_norm(X) if sq_norm_X is None else float(sq_norm_X)
    gram = float(
        torch.vdot(WtW.to(torch.float64).flatten(), HHt.to(torch.float64).flatten())
    )
    return 0.5 * max(sq - 2.0 * cross + gram, 0.0)


def _least_squares_start(G: Tensor, R: Tensor, l2: float) -> Tensor:
    """``max(0, (G + l2 I)^+ R)`` as a column-major ``(n_samples, k)`` tensor.

    ``R`` is ``H X^T - l1`` (k x n); the pseudo-inverse drops eigenvalues below
    ``k * eps`` of the largest, so collinear or empty components get codes of
    zero weight rather than huge ones of opposite signs.
    """
    k = G.shape[0]
    G64 = G.to(torch.float64) + l2 * torch.eye(k, dtype=torch.float64, device=G.device)
    evals, evecs = torch.linalg.eigh(G64)
    cutoff = evals.max().clamp_min(0.0) * k * torch.finfo(G.dtype).eps
    inv = torch.where(evals > cutoff, 1.0 / evals.clamp_min(1e-300), 0.0)
    pinv = ((evecs * inv) @ evecs.T).to(R.dtype)
    return (pinv @ R).clamp_min_(0.0).T


def frobenius_objective(
    X: Tensor,
    W: Tensor,
    H: Tensor,
    *,
    l1_reg_W: float = 0.0,
    l2_reg_W: float = 0.0,
    l1_reg_H: float = 0.0,
    l2_reg_H: float = 0.0,
) -> float:
    """The regularised objective that :func:`hals_step` decreases, as a float.

    Computed exactly as ``0.5 * ||X - W H||^2`` plus the penalties, in float64;
    a sparse ``X`` is expanded only through ``W.T @ X`` (Gram form).

    Parameters
    ----------
    X : Tensor or CSRMatrix of shape (n_samples, n_features)
        Data, dense or sparse CSR.
    W : Tensor of shape (n_samples, k)
        Codes.
    H : Tensor of shape (k, n_features)
        Components.
    l1_reg_W, l2_reg_W, l1_reg_H, l2_reg_H : float, default=0.0
        Regularisation strengths.

    Returns
    -------
    value : float
        The objective.

    Examples
    --------
    >>> import torch
    >>> from sknmf._torch.solvers.hals import frobenius_objective
    >>> X = torch.ones(2, 2, dtype=torch.float64)
    >>> frobenius_objective(X, torch.ones(2, 1, dtype=torch.float64),
    ...                     torch.ones(1, 2, dtype=torch.float64))
    0.0
    """
    W64, H64 = W.double(), H.double()
    if _is_sparse(X):
        X64 = (
            X.with_values(X.values.double())
            if isinstance(X, CSRMatrix)
            else X.to(torch.float64)
        )
        sq = (
            squared_norm(X64)
            - 2.0 * float(torch.vdot(_wt_x(X64, W64.T).flatten(), H64.flatten()))
            + float(torch.vdot((W64.T @ W64).flatten(), (H64 @ H64.T).flatten()))
        )
        sq = max(sq, 0.0)
    else:
        sq = float(torch.linalg.vector_norm(X.double() - W64 @ H64)) ** 2
    value = 0.5 * sq
    value += l1_reg_W * float(W64.sum()) + 0.5 * l2_reg_W * float(W64.square().sum())
    value += l1_reg_H * float(H64.sum()) + 0.5 * l2_reg_H * float(H64.square().sum())
    return value


def nnls_sweeps(
    W: Tensor,
    G: Tensor,
    R: Tensor,
    n_sweeps: int,
    components=None,
) -> Tensor:
    """Coordinate-descent sweeps on the codes of a fixed dictionary, in place.

    Minimises ``0.5 ||X - W D||² `` over ``W >= 0`` given only ``G = D D^T``
    and ``R = X D^T``: each sweep updates the listed components in turn in
    closed form (scikit-learn's ``cd`` updates), exactly ``n_sweeps`` times.
    Components not listed stay as they are (the image codec freezes the codes
    it has already quantised this way). Components whose Gram diagonal is zero
    are left unchanged.

    Parameters
    ----------
    W : Tensor of shape (n_samples, k)
        Nonnegative codes, updated in place.
    G : Tensor of shape (k, k)
        Gram matrix of the dictionary.
    R : Tensor of shape (n_samples, k)
        ``X @ D.T``.
    n_sweeps : int
        Number of sweeps.
    components : sequence of int, default=None
        Components to update, in this order; None updates all in index order.

    Returns
    -------
    W : Tensor
        The codes (the tensor passed in).

    Examples
    --------
    >>> import torch
    >>> from sknmf._torch.solvers.hals import nnls_sweeps
    >>> D = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    >>> X = torch.tensor([[2.0, 3.0, 5.0]], dtype=torch.float64)
    >>> W = nnls_sweeps(torch.zeros(1, 2, dtype=torch.float64), D @ D.T, X @ D.T, 50)
    >>> [round(v, 6) for v in W[0].tolist()]
    [2.0, 3.0]
    """
    Wt, copied = _rows_of(W)
    Gs, Rs = _scaled_system(G, R.T, 0.0, 0.0)
    if components is None:
        _sweeps(Wt, Gs, Rs, n_sweeps, early_stop=False)
    else:
        idx = [int(t) for t in components]
        if idx:
            buf = torch.empty(Wt.shape[1], dtype=Wt.dtype, device=Wt.device)
            FT = Wt.T
            for _ in range(n_sweeps):
                for t in idx:
                    torch.addmv(Rs[t], FT, Gs[t], alpha=-1.0, out=buf)
                    torch.clamp(buf, min=0.0, out=Wt[t])
    if copied:
        W.copy_(Wt.T)
    return W


class HALSSolver(Solver):
    """Accelerated HALS behind the solver protocol (``"hals"``), Frobenius only.

    Codes: the W block of :func:`hals_step` (each row of ``W`` is its own
    least-squares problem; the number of sweeps, one for all rows, is decided
    on the first :meth:`codes_sample_rows` rows: a shared decision in the
    sense of :class:`~sknmf._torch.solvers.Solver`); statistics: ``W^T X``
    and ``W^T W``; weights: the H block's sweeps on them (summed over blocks,
    or folded over mini-batches: Mairal et al. 2010's online rule); loss: the
    Gram form from those statistics, nearly free. A deep model's joint
    fine-tuning is handed to
    :class:`~sknmf._torch.solvers.deep_hals.DeepHALSSolver` (which hands
    mini-batches and the data-centric loss on to the multiplicative updates);
    each layer's pretraining is one-layer HALS.
    """

    name: ClassVar[str] = "hals"
    # The loss of a codes-only step is free: check it every iteration, so a
    # transform stops as soon as the codes stop improving.
    codes_check_every: ClassVar[int] = 1

    @classmethod
    def for_problem(cls, problem: Problem, *, batched: bool, **options) -> Solver:
        if problem.beta != 2.0:
            # scikit-learn's wording first (its tests match it, and so may
            # users' code); then what to do.
            raise ValueError(
                "Invalid beta_loss parameter: solver 'hals' does not handle "
                f"beta_loss = {problem.beta!r}. solver='hals' minimises the "
                "Frobenius loss; use solver='mu' (any beta) or solver='adam'."
            )
        if problem.deep:
            from .deep_hals import DeepHALSSolver

            return DeepHALSSolver.for_problem(problem, batched=batched, **options)
        return cls(problem, **options)

    def start(self, X, Ws, Hs, *, update_H):
        state = super().start(X, Ws, Hs, update_H=update_H)
        state["workspace"] = {}
        # With H fixed the W block's system is the same every epoch.
        state["system"] = None if update_H else {}
        return state

    def codes_sample_rows(self, ranks) -> int:
        # The codes step's sweep count is decided on these rows (_sweeps).
        return _sample_columns(ranks[0])

    def codes_layout(self, W):
        # A sweep updates one component (column of W) at a time: column-major
        # W makes each one contiguous, with no copy per step.
        return W.T.contiguous().T

    def initial_codes(self, X, H, reg):
        # The clipped least-squares codes: about half the sweeps of a
        # constant start, for one k x k eigendecomposition.
        H_rows = H if H.is_contiguous() else H.contiguous()
        R = _x_ht(X, H_rows).T.contiguous()
        l1 = reg.l1_W[0] if reg is not None else 0.0
        l2 = reg.l2_W[0] if reg is not None else 0.0
        if l1:
            R.sub_(l1)
        return _least_squares_start(H_rows @ H_rows.T, R, l2)

    def update_codes(self, X, Ws, Hs, state):
        reg = self.reg(state)
        W = Ws[0]
        Wt, copied = _rows_of(W)
        H_rows = Hs[0] if Hs[0].is_contiguous() else Hs[0].contiguous()
        given = state.get("given_decision")
        R, G, count = _update_codes(
            X,
            Wt,
            H_rows,
            reg.l1_W[0] if reg is not None else 0.0,
            reg.l2_W[0] if reg is not None else 0.0,
            state["workspace"],
            system=state["system"],
            given=None if given is None else given[0],
            shape=state.get("data_shape"),
        )
        state["codes_decision"] = [count]
        if copied:
            W.copy_(Wt.T)
        if not state["update_H"]:
            state["codes_products"] = (R, G, Wt)

    def statistics(self, X, Ws, Hs, layers, state):
        Wt = Ws[0].T
        # The H block's sweep budget weighs the cost of these products.
        state["products_shape"] = (_nnz(X), X.shape[0], _is_sparse(X))
        return {0: {"WtX": _wt_x(X, Wt), "WtW": Wt @ Wt.T}}

    def update_weights(self, layers, stats, Hs, state, *, online=False):
        reg = self.reg(state)
        C, D = stats[0]["WtX"], stats[0]["WtW"]
        H_rows = Hs[0] if Hs[0].is_contiguous() else Hs[0].contiguous()
        nnz, n, sparse = state["products_shape"]
        p, k = H_rows.shape[1], H_rows.shape[0]
        _update_weights(
            H_rows,
            C,
            D,
            reg.l1_H if reg is not None else 0.0,
            reg.l2_H if reg is not None else 0.0,
            _n_inner(nnz, p, n, k, sparse),
        )
        Hs[0] = H_rows

    def loss(self, X, Ws, Hs, stats, state):
        reg = self.reg(state)
        sq = cached_squared_norm(X, state)
        H = Hs[0]
        if stats:
            C, D = stats[0]["WtX"], stats[0]["WtW"]
            value = _half_sq_error(X, sq, _cross(C, H), D, H @ H.T)
        else:
            R, G, Wt = state.pop("codes_products")
            cross = float(torch.sum(R * Wt, dtype=torch.float64))
            value = _half_sq_error(X, sq, cross, Wt @ Wt.T, G)
        term = torch.tensor(value, dtype=H.dtype, device=H.device)
        total = term if reg is None else term + reg.penalty(Ws, Hs)
        return total, [term]
