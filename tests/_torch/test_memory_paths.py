"""The memory-lean code paths against independent references.

Row-blocked divergences against scikit-learn's ``_beta_divergence``, the Gram
forms against ``numpy`` on the full residual, the Gram-matrix SVD against
LAPACK's, the zero-copy CSR wrapper against scipy's own products, and the
HALS transform (``stages.encode``, from its least-squares start) against
``scipy.optimize.nnls``.
"""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.optimize import nnls
from sklearn.decomposition._nmf import _beta_divergence

import sknmf._torch.divergence as divergence
from sknmf._torch.divergence import beta_divergence, frobenius_gram
from sknmf._torch.init import truncated_svd
from sknmf._torch.nets import Stage
from sknmf._torch.objective import Problem, Regularization, layer_terms
from sknmf._torch.solvers.mu import solve_simplex_rows
from sknmf._torch.sparse import CSRMatrix
from sknmf._torch.stages import encode

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support:UserWarning")


def _factors(n=57, m=23, k=4, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.rand(n, m) + 0.05
    X[rng.rand(n, m) < 0.3] = 0.0
    W = rng.rand(n, k) + 0.1
    H = rng.rand(k, m) + 0.1
    return X, W, H


@pytest.mark.parametrize("beta", [2.0, 1.0, 0.0, 0.5, 3.0])
def test_row_blocks_match_sklearn(beta, monkeypatch):
    X, W, H = _factors()
    if beta <= 0:
        X = X + 0.1
    expected = _beta_divergence(X, W, H, beta)
    # Blocks of 2 rows (46 entries): the blocked path with a ragged last block.
    monkeypatch.setattr(divergence, "_BLOCK", 46)
    got = beta_divergence(*(torch.from_numpy(a) for a in (X, W, H)), beta)
    assert float(got) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("given_wtx", [False, True])
def test_frobenius_gram_is_the_half_squared_residual(sparse, given_wtx):
    X, W, H = _factors()
    expected = 0.5 * np.sum((X - W @ H) ** 2)
    Wt, Ht = torch.from_numpy(W), torch.from_numpy(H)
    Xt = CSRMatrix.from_scipy(sp.csr_matrix(X)) if sparse else torch.from_numpy(X)
    WtX = torch.from_numpy(W.T @ X) if given_wtx else None
    got = frobenius_gram(Xt, Wt, Ht, float(np.sum(X * X)), WtX)
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(expected, rel=1e-10)


def test_layer_terms_gram_form_only_on_request():
    X, W, H = _factors()
    Xt, Wt, Ht = (torch.from_numpy(a) for a in (X, W, H))
    exact = layer_terms(Xt, [Wt], [Ht], 2.0, "layer")
    gram = layer_terms(Xt, [Wt], [Ht], 2.0, "layer", sq_norm_X=float(np.sum(X * X)))
    assert float(gram[0]) == pytest.approx(float(exact[0]), rel=1e-10)
    assert float(exact[0]) == pytest.approx(0.5 * np.sum((X - W @ H) ** 2), rel=1e-12)


@pytest.mark.parametrize("shape", [(300, 40), (40, 300)])
def test_gram_svd_matches_lapack(shape):
    rng = np.random.RandomState(1)
    X = rng.rand(*shape) @ np.diag(np.linspace(1, 3, shape[1]))
    U, S, Vt = truncated_svd(torch.from_numpy(X), 5, torch.Generator().manual_seed(0))
    U_ref, S_ref, Vt_ref = np.linalg.svd(X, full_matrices=False)
    np.testing.assert_allclose(S.numpy(), S_ref[:5], rtol=1e-9)
    # Same singular vectors up to sign.
    np.testing.assert_allclose(np.abs(U.numpy().T @ U_ref[:, :5]), np.eye(5), atol=1e-7)
    np.testing.assert_allclose(np.abs(Vt.numpy() @ Vt_ref[:5].T), np.eye(5), atol=1e-7)
    np.testing.assert_allclose((U * S) @ Vt, (U_ref[:, :5] * S_ref[:5]) @ Vt_ref[:5])


def test_gram_svd_rank_deficient_has_no_nan():
    X = np.outer(np.arange(1.0, 31.0), np.arange(1.0, 9.0))  # rank one
    U, S, Vt = truncated_svd(torch.from_numpy(X), 3, torch.Generator().manual_seed(0))
    assert torch.isfinite(U).all() and torch.isfinite(Vt).all()
    np.testing.assert_allclose((U[:, :1] * S[:1]) @ Vt[:1], X, rtol=1e-10)


def test_csr_from_scipy_shares_memory_and_multiplies_like_scipy():
    X = sp.random(50, 30, density=0.2, format="csr", dtype=np.float32, random_state=0)
    T = CSRMatrix.from_scipy(X)
    assert T.col.dtype == torch.int32
    assert np.shares_memory(T.values.numpy(), X.data)
    assert np.shares_memory(T.col.numpy(), X.indices)
    rng = np.random.RandomState(0)
    B = rng.rand(30, 4).astype(np.float32)
    A = rng.rand(50, 4).astype(np.float32)
    np.testing.assert_allclose(T.matmul(torch.from_numpy(B)).numpy(), X @ B, rtol=1e-5)
    np.testing.assert_allclose(
        T.tmatmul(torch.from_numpy(A)).numpy(), X.T @ A, rtol=1e-5
    )
    # New values on the same pattern: the transpose follows them.
    V = T.with_values(T.values * 2)
    np.testing.assert_allclose(
        V.tmatmul(torch.from_numpy(A)).numpy(), 2 * (X.T @ A), rtol=1e-5
    )
    np.testing.assert_allclose(
        T.tmatmul(torch.from_numpy(A)).numpy(), X.T @ A, rtol=1e-5
    )
    W, H = torch.from_numpy(A), torch.from_numpy(B.T.copy())
    rows, cols = X.nonzero()
    np.testing.assert_allclose(
        T.gather_product(W, H).numpy(), (A @ B.T)[rows, cols], rtol=1e-5
    )
    lean = T.without_transpose()
    np.testing.assert_allclose(
        lean.matmul(torch.from_numpy(B)).numpy(), X @ B, rtol=1e-5
    )
    assert "t_crow" not in lean._s


def test_csr_from_dense_builds_its_transpose_itself():
    rng = np.random.RandomState(0)
    X = rng.rand(20, 9) * (rng.rand(20, 9) < 0.4)
    T = CSRMatrix.from_dense(torch.from_numpy(X))
    A = rng.rand(20, 3)
    np.testing.assert_allclose(T.tmatmul(torch.from_numpy(A)).numpy(), X.T @ A)


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


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_simplex_rows_frobenius_solves_the_row_problems(seed):
    # Each row: minimise sum_j P_j t_j^2 / (2 Ht_j) - N_j t_j over the simplex,
    # whose solution is t_j = c_j max(N_j - mu, 0) (c = Ht / P) with the
    # multiplier mu found here by plain bisection on the row sum.
    rng = np.random.RandomState(seed)
    Ht = rng.rand(6, 300) * (rng.rand(6, 300) < 0.8)
    num = rng.rand(6, 300) * 3
    den = rng.rand(6, 300) + 0.1
    got = solve_simplex_rows(*(torch.from_numpy(a) for a in (Ht, num, den)), 2.0)
    c = Ht / den
    for i in range(6):
        lo, hi = -10.0, 10.0
        for _ in range(200):
            mu = 0.5 * (lo + hi)
            if (c[i] * np.maximum(num[i] - mu, 0)).sum() > 1:
                lo = mu
            else:
                hi = mu
        expected = c[i] * np.maximum(num[i] - 0.5 * (lo + hi), 0)
        np.testing.assert_allclose(got[i].numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(got.sum(1).numpy(), 1.0, rtol=1e-12)
