"""Accelerated HALS against scikit-learn's coordinate descent and exact properties."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.optimize import nnls
from sklearn.datasets import load_digits
from sklearn.decomposition import NMF
from sklearn.decomposition._nmf import _initialize_nmf

from sknmf._torch.nets import Stage, run_stage
from sknmf._torch.objective import Problem, Regularization
from sknmf._torch.solvers import make_solver
from sknmf._torch.solvers.hals import frobenius_objective, hals_step
from sknmf._torch.sparse import CSRMatrix
from sknmf._torch.stages import encode

F64 = torch.float64
# torch flags its CSR tensors as beta; nothing for these tests to act on.
pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support:UserWarning")


@pytest.fixture(scope="module")
def digits():
    return load_digits().data.astype(np.float64)


def _tensors(X, W, H, dtype=F64, col_major=True):
    Xt = torch.from_numpy(np.ascontiguousarray(X)).to(dtype)
    Wt = torch.from_numpy(np.asfortranarray(W) if col_major else W.copy()).to(dtype)
    Ht = torch.from_numpy(H.copy()).to(dtype)
    return Xt, Wt, Ht


def _csr(X):
    Xs = sp.csr_matrix(X)
    return torch.sparse_csr_tensor(
        torch.from_numpy(Xs.indptr.astype(np.int64)),
        torch.from_numpy(Xs.indices.astype(np.int64)),
        torch.from_numpy(Xs.data),
        size=Xs.shape,
        check_invariants=True,
    )


def _random_problem(n=60, p=25, k=5, seed=0, density=None):
    rng = np.random.default_rng(seed)
    X = rng.random((n, p))
    if density is not None:
        X[rng.random((n, p)) > density] = 0.0
    W = rng.random((n, k))
    H = rng.random((k, p))
    return X, W, H


def _transform(X, H, max_epochs=5000, tol=1e-12, alpha_W=0.0, l1_ratio=0.0):
    """The transform problem (H fixed) through the one skorch loop.

    Returns the codes and the number of epochs run. ``encode`` gives only the
    codes, so this runs its one-layer stage itself: the HALS solver's
    deterministic start, then ``run_stage`` with the weights frozen.
    """
    n, p = X.shape
    reg = Regularization(n, [p], alpha_W=alpha_W, alpha_H=0.0, l1_ratio=l1_ratio)
    solver = make_solver("hals", Problem(2.0, reg=reg), batched=False)
    W0 = solver.initial_codes(X, H, reg)
    stage = Stage(max_epochs=max_epochs, tol=tol, check_every=solver.codes_check_every)
    res = run_stage(X, [W0], [H], solver, stage, update_H=False)
    return res.Ws[0], res.n_iter


def _sklearn_regs(X, alpha_W, l1_ratio):
    # scikit-learn's own scaling of alpha_W / alpha_H / l1_ratio
    return NMF(alpha_W=alpha_W, l1_ratio=l1_ratio)._compute_regularization(X)


@pytest.mark.parametrize("alpha_W, l1_ratio", [(0.0, 0.0), (0.05, 0.5), (0.05, 1.0)])
def test_objective_never_increases(alpha_W, l1_ratio):
    X, W, H = _random_problem()
    l1_W, l1_H, l2_W, l2_H = _sklearn_regs(X, alpha_W, l1_ratio)
    regs = dict(l1_reg_W=l1_W, l2_reg_W=l2_W, l1_reg_H=l1_H, l2_reg_H=l2_H)
    Xt, Wt, Ht = _tensors(X, W, H)
    prev = frobenius_objective(Xt, Wt, Ht, **regs)
    for _ in range(40):
        hals_step(Xt, Wt, Ht, **regs)
        cur = frobenius_objective(Xt, Wt, Ht, **regs)
        assert cur <= prev * (1 + 1e-12) + 1e-12
        prev = cur
    assert (Wt >= 0).all() and (Ht >= 0).all()


def test_matches_sklearn_cd_error_on_digits(digits):
    k = 10
    W0, H0 = _initialize_nmf(digits, k, init="nndsvda")
    ref = NMF(k, solver="cd", init="custom", max_iter=2000, tol=1e-6)
    ref.fit_transform(digits, W=W0.copy(), H=H0.copy())
    Xt, Wt, Ht = _tensors(digits, W0, H0)
    for _ in range(300):
        hals_step(Xt, Wt, Ht)
    err = np.sqrt(2 * frobenius_objective(Xt, Wt, Ht))
    assert err == pytest.approx(ref.reconstruction_err_, rel=0.01)


def test_regularised_matches_sklearn_cd(digits):
    k, alpha_W, l1_ratio = 8, 0.01, 0.5
    W0, H0 = _initialize_nmf(digits, k, init="nndsvda")
    ref = NMF(
        k,
        solver="cd",
        init="custom",
        max_iter=2000,
        tol=1e-6,
        alpha_W=alpha_W,
        l1_ratio=l1_ratio,
    )
    W_ref = ref.fit_transform(digits, W=W0.copy(), H=H0.copy())
    l1_W, l1_H, l2_W, l2_H = _sklearn_regs(digits, alpha_W, l1_ratio)
    regs = dict(l1_reg_W=l1_W, l2_reg_W=l2_W, l1_reg_H=l1_H, l2_reg_H=l2_H)
    Xt, Wt, Ht = _tensors(digits, W0, H0)
    for _ in range(300):
        hals_step(Xt, Wt, Ht, **regs)
    ours = frobenius_objective(Xt, Wt, Ht, **regs)
    theirs = frobenius_objective(
        Xt, torch.from_numpy(W_ref), torch.from_numpy(ref.components_), **regs
    )
    # Same objective, same start: at least as low as scikit-learn's (a
    # different local minimum may be a little lower).
    assert 0.97 * theirs <= ours <= 1.01 * theirs
    # The penalty really acts: the l1 term leaves exact zeros in the codes.
    assert (Wt == 0).float().mean() > 0.05


@pytest.mark.parametrize("kind", ["torch_csr", "CSRMatrix"])
def test_sparse_equals_dense(kind):
    X, W, H = _random_problem(n=80, p=40, k=4, density=0.2)
    Xd, Wd, Hd = _tensors(X, W, H)
    _, Ws, Hs = _tensors(X, W, H)
    Xs = _csr(X) if kind == "torch_csr" else CSRMatrix.from_dense(Xd)
    for _ in range(5):
        hals_step(Xd, Wd, Hd, l1_reg_W=0.1, l2_reg_H=0.2)
        hals_step(Xs, Ws, Hs, l1_reg_W=0.1, l2_reg_H=0.2)
    if kind == "torch_csr":
        assert Xs.layout == torch.sparse_csr
    assert frobenius_objective(Xs, Ws, Hs) == pytest.approx(
        frobenius_objective(Xd, Wd, Hd), rel=1e-10
    )
    torch.testing.assert_close(Ws, Wd, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(Hs, Hd, rtol=1e-10, atol=1e-12)
    # The transform problem (H fixed) through encode: sparse equals dense too.
    stage = Stage(max_epochs=200, tol=1e-10)
    (Wd2,) = encode(Xd, [Hd], Problem(2.0), "hals", stage)
    (Ws2,) = encode(Xs, [Hd], Problem(2.0), "hals", stage)
    torch.testing.assert_close(Ws2, Wd2, rtol=1e-10, atol=1e-12)


def test_layouts_give_the_same_iterates_and_x_is_untouched():
    X, W, H = _random_problem()
    Xa, Wa, Ha = _tensors(X, W, H, col_major=True)
    Xb, Wb, Hb = _tensors(X, W, H, col_major=False)
    Hb = Hb.T.contiguous().T  # a non-contiguous H too
    X_before = Xa.clone()
    for _ in range(3):
        hals_step(Xa, Wa, Ha)
        hals_step(Xb, Wb, Hb)
    torch.testing.assert_close(Wa, Wb, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(Ha, Hb, rtol=1e-12, atol=1e-12)
    assert torch.equal(Xa, X_before)


def test_precomputed_xht_with_fixed_h():
    X, W, H = _random_problem()
    Xt, W1, H1 = _tensors(X, W, H)
    _, W2, H2 = _tensors(X, W, H)
    XHt = Xt @ H1.T
    XHt_before = XHt.clone()
    for _ in range(3):
        hals_step(Xt, W1, H1, update_H=False)
        hals_step(Xt, W2, H2, update_H=False, XHt=XHt)
    torch.testing.assert_close(W1, W2, rtol=1e-12, atol=1e-12)
    assert torch.equal(H1, H2) and torch.equal(H2, torch.from_numpy(H))
    assert torch.equal(XHt, XHt_before)


def test_zero_components_stay_finite():
    X, W, H = _random_problem(k=4)
    Xt, Wt, Ht = _tensors(X, W, H)
    Ht[2] = 0.0  # a dead component: its W column has no defined update
    Wt[:, 1] = 0.0  # and a dead code: its H row has no defined update
    w2_before = Wt[:, 2].clone()
    hals_step(Xt, Wt, Ht)
    assert torch.isfinite(Wt).all() and torch.isfinite(Ht).all()
    # Like scikit-learn's cd, an undetermined component is left where it was.
    torch.testing.assert_close(Wt[:, 2], w2_before)
    # An all-zero X drives everything to zero, without NaN.
    Z = torch.zeros_like(Xt)
    hals_step(Z, Wt, Ht)
    hals_step(Z, Wt, Ht)
    assert torch.isfinite(Wt).all() and torch.isfinite(Ht).all()
    assert float(frobenius_objective(Z, Wt, Ht)) == pytest.approx(0.0, abs=1e-20)


def test_transform_codes_match_sklearn(digits):
    k = 12
    est = NMF(k, solver="cd", init="nndsvda", max_iter=400).fit(digits)
    est.set_params(tol=1e-12, max_iter=5000)
    W_ref = est.transform(digits[:300])
    X = torch.from_numpy(digits[:300])
    H = torch.from_numpy(est.components_)
    W, n_iter = _transform(X, H, max_epochs=5000, tol=1e-12)
    assert 1 < n_iter < 5000
    assert (W >= 0).all()
    rel = np.linalg.norm(W.numpy() - W_ref) / np.linalg.norm(W_ref)
    assert rel < 1e-3


def test_transform_with_l1_matches_sklearn(digits):
    k = 6
    est = NMF(
        k, solver="cd", init="nndsvda", alpha_W=0.01, l1_ratio=1.0, max_iter=400
    ).fit(digits)
    est.set_params(tol=1e-12, max_iter=5000)
    X = digits[:200]
    W_ref = est.transform(X)
    # transform regularises with n_features * alpha_W, as fit does
    # (Regularization's scaling itself is checked against scikit-learn's in
    # tests/_torch/test_objective.py.)
    reg = Regularization(200, [X.shape[1]], alpha_W=0.01, alpha_H=0.0, l1_ratio=1.0)
    stage = Stage(max_epochs=5000, tol=1e-12)
    (W,) = encode(
        torch.from_numpy(X),
        [torch.from_numpy(est.components_)],
        Problem(2.0, reg=reg),
        "hals",
        stage,
    )
    rel = np.linalg.norm(W.numpy() - W_ref) / np.linalg.norm(W_ref)
    assert rel < 1e-3


def test_transform_stops_on_tol():
    X, W, H = _random_problem(n=200)
    Xt, _, Ht = _tensors(X, W, H)
    _, loose = _transform(Xt, Ht, tol=1e-2)
    _, tight = _transform(Xt, Ht, tol=1e-10)
    assert loose < tight


def test_float32_runs_and_decreases():
    X, W, H = _random_problem()
    Xt, Wt, Ht = _tensors(X, W, H, dtype=torch.float32)
    before = frobenius_objective(Xt, Wt, Ht)
    for _ in range(10):
        hals_step(Xt, Wt, Ht)
    assert Wt.dtype == torch.float32 and Ht.dtype == torch.float32
    assert frobenius_objective(Xt, Wt, Ht) < 0.5 * before


def test_bad_inputs():
    X, W, H = _random_problem()
    Xt, Wt, Ht = _tensors(X, W, H)
    with pytest.raises(TypeError, match="dtype"):
        hals_step(Xt, Wt.float(), Ht)
    with pytest.raises(ValueError, match="shapes"):
        hals_step(Xt, Wt[:10], Ht)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    X, W, H = _random_problem(n=500, p=40, k=6)
    Xc, Wc, Hc = _tensors(X, W, H)
    Xg, Wg, Hg = (t.cuda() for t in _tensors(X, W, H))
    for _ in range(5):
        hals_step(Xc, Wc, Hc)
        hals_step(Xg, Wg, Hg)
    torch.testing.assert_close(Wg.cpu(), Wc, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(Hg.cpu(), Hc, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("update_H", [True, False])
@pytest.mark.parametrize("kind", ["dense", "CSRMatrix", "float32"])
def test_returned_loss_is_the_half_squared_error(update_H, kind):
    X, W, H = _random_problem(n=90, p=30, k=5, density=0.5)
    dtype = torch.float32 if kind == "float32" else F64
    Xt, Wt, Ht = _tensors(X, W, H, dtype=dtype)
    if kind == "CSRMatrix":
        Xt = CSRMatrix.from_dense(Xt)
    assert hals_step(Xt, Wt, Ht, update_H=update_H) is None
    sq = float((torch.from_numpy(X) ** 2).sum())
    for sq_norm in (None, sq):
        loss = hals_step(
            Xt,
            Wt,
            Ht,
            update_H=update_H,
            l1_reg_W=0.1,
            compute_loss=True,
            sq_norm_X=sq_norm,
        )
        expected = 0.5 * float(
            ((torch.from_numpy(X) - Wt.double() @ Ht.double()) ** 2).sum()
        )
        rel = 1e-5 if kind == "float32" else 1e-10
        assert loss == pytest.approx(expected, rel=rel)


@pytest.mark.parametrize("l1, l2", [(0.0, 0.0), (0.3, 0.0), (0.0, 0.5)])
def test_least_squares_start_reaches_the_nnls_solution(l1, l2):
    rng = np.random.RandomState(0)
    H = rng.rand(5, 40)
    X = rng.rand(12, 5) @ H + 0.3 * rng.rand(12, 40)
    X[:, ::3] = 0.0
    # Regularization scales alpha_W by n_features: pick alpha_W and l1_ratio
    # so that the scaled coefficients are exactly l1 and l2.
    p = X.shape[1]
    reg = Regularization(
        len(X),
        [p],
        alpha_W=(l1 + l2) / p,
        alpha_H=0.0,
        l1_ratio=l1 / (l1 + l2) if l1 + l2 else 0.0,
    )
    (W,) = encode(
        torch.from_numpy(X),
        [torch.from_numpy(H)],
        Problem(2.0, reg=reg),
        "hals",
        Stage(max_epochs=300, tol=0.0),
    )
    # Each row: min 0.5||x - H^T w||^2 + l1 sum(w) + 0.5 l2 ||w||^2, w >= 0, as
    # an NNLS problem on the augmented system.
    A = np.vstack([H.T, np.sqrt(l2) * np.eye(5)]) if l2 else H.T
    for i in range(len(X)):
        # The L1 term shifts the linear part: H x - l1 = A^T b with b below.
        rhs = np.linalg.lstsq(A.T, H @ X[i] - l1, rcond=None)[0]
        w_ref, _ = nnls(A, rhs)
        np.testing.assert_allclose(W[i].numpy(), w_ref, atol=1e-7)


def _numpy_sweeps(F, Gs, Rs, n):
    """``n`` Gauss-Seidel passes of ``F[t] = max(0, Rs[t] - Gs[t] @ F)``."""
    for _ in range(n):
        for t in range(F.shape[0]):
            F[t] = np.maximum(0.0, Rs[t] - Gs[t] @ F)


def _numpy_count(F, Gs, Rs, max_inner, delta):
    """Gillis & Glineur's count on ``F`` alone: stop after the sweep that
    moves it by at most ``delta`` times what the first sweep moved it."""
    F = F.copy()
    first = None
    for it in range(1, max_inner + 1):
        prev = F.copy()
        _numpy_sweeps(F, Gs, Rs, 1)
        change = np.linalg.norm(prev - F)
        first = change if first is None else first
        if it < max_inner and change <= delta * first:
            return it
    return max_inner


def _system_of_two_halves(k, m, n_first, seed=0):
    """A scaled system (as ``hals._scaled_system`` builds it) whose first
    ``n_first`` columns start far from their solution in every direction (the
    first sweep does most of the work: the rule stops early) and the others
    near it along the Gram's slowest direction (every sweep moves them about
    as much as the first: the rule would run to the budget)."""
    rng = np.random.default_rng(seed)
    H = rng.random((k, 3 * k)) + 2.0 * rng.random((1, 3 * k))
    G = H @ H.T
    W_true = rng.random((k, m)) + 1.0
    slowest = np.linalg.eigh(G)[1][:, :1]
    F = W_true + rng.standard_normal((k, m))
    F[:, n_first:] = W_true[:, n_first:] + 0.1 * slowest * rng.standard_normal(
        (1, m - n_first)
    )
    F = np.maximum(F, 0.0)
    d = np.diag(G).copy()
    Gs = G / d[:, None]
    np.fill_diagonal(Gs, 0.0)
    return F, Gs, (G @ W_true) / d[:, None]


@pytest.mark.parametrize("k, m", [(40, 10_000), (6, 3000)])
def test_sweeps_follow_the_count_decided_on_the_sample(k, m):
    from sknmf._torch.solvers import hals

    Ft = torch.empty((k, m), dtype=F64)
    S = min(m, hals._sample_columns(k))
    F, Gs, Rs = _system_of_two_halves(k, m, S)
    max_inner = 25
    # Brute force: the rule on the sample alone gives the count; then every
    # column is swept that many times.
    c = _numpy_count(F[:, :S], Gs, Rs[:, :S], max_inner, hals._DELTA)
    assert 1 < c < max_inner
    ref = F.copy()
    _numpy_sweeps(ref, Gs, Rs, c)
    Ft.copy_(torch.from_numpy(F))
    count = hals._sweeps(Ft, torch.from_numpy(Gs), torch.from_numpy(Rs), max_inner)
    assert count == c
    np.testing.assert_allclose(Ft.numpy(), ref, rtol=1e-12, atol=1e-12)
    # The later columns would have decided otherwise on their own.
    assert _numpy_count(F[:, S:], Gs, Rs[:, S:], max_inner, hals._DELTA) != c
    if k == 40:
        assert hals._block_size(Ft) * 1.5 < m  # several cache blocks
    # A block of later columns handed the count gets the same steps.
    part = torch.from_numpy(F[:, S + 7 :].copy())
    n = hals._sweeps(
        part, torch.from_numpy(Gs), torch.from_numpy(Rs[:, S + 7 :]), c, False
    )
    assert n == c
    np.testing.assert_allclose(part.numpy(), ref[:, S + 7 :], rtol=1e-12, atol=1e-12)
