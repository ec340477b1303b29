"""Beta-divergences against scikit-learn's ``_beta_divergence`` and numpy.

Every path of :func:`beta_divergence` (dense in one piece, dense in row blocks,
CSR) is checked on the same factors against scikit-learn's own function, the
Gram form against the explicit residual, and ``squared_norm`` against a
float64 sum in numpy.
"""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.decomposition._nmf import _beta_divergence

import sknmf._torch.divergence as divergence
from sknmf._torch.divergence import (
    EPSILON,
    beta_divergence,
    beta_loss_to_float,
    frobenius_gram,
    squared_norm,
)
from sknmf._torch.sparse import CSRMatrix

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support:UserWarning")

BETAS = [2.0, 1.0, 0.0, 0.5, 1.5, 3.0]


def _factors(n=57, m=23, k=4, seed=0, zeros=0.3):
    rng = np.random.RandomState(seed)
    X = rng.rand(n, m) + 0.05
    X[rng.rand(n, m) < zeros] = 0.0
    W = rng.rand(n, k) + 0.1
    H = rng.rand(k, m) + 0.1
    return X, W, H


def _torch_x(X, kind, dtype):
    if kind == "csr":
        return CSRMatrix.from_scipy(sp.csr_matrix(X.astype(dtype)))
    return torch.from_numpy(X.astype(dtype))


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("kind", ["dense", "csr"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_sklearn(beta, kind, dtype):
    # X keeps exact zeros: both skip them for beta < 2 (0 * log 0 = 0 and so
    # on), so the zero handling is compared too.
    X, W, H = _factors()
    Xs = sp.csr_matrix(X) if kind == "csr" else X
    expected = _beta_divergence(Xs, W, H, beta)
    got = beta_divergence(
        _torch_x(X, kind, dtype),
        torch.from_numpy(W.astype(dtype)),
        torch.from_numpy(H.astype(dtype)),
        beta,
    )
    assert got.ndim == 0
    assert got.dtype == (torch.float64 if dtype == np.float64 else torch.float32)
    # float32: the divergence is a sum of ~1300 terms of either sign, each with
    # a relative rounding of ~1e-7.
    rel = 1e-10 if dtype == np.float64 else 2e-4
    assert float(got) == pytest.approx(expected, rel=rel)


@pytest.mark.parametrize("beta", BETAS)
def test_row_blocks_match_sklearn(beta, monkeypatch):
    X, W, H = _factors()
    expected = _beta_divergence(X, W, H, beta)
    # Blocks of 2 rows (46 entries): the blocked path with a ragged last block
    # (57 rows).
    monkeypatch.setattr(divergence, "_BLOCK", 46)
    got = beta_divergence(*(torch.from_numpy(a) for a in (X, W, H)), beta)
    assert float(got) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("block", [1, 23, 24, 10**6])
def test_block_size_does_not_change_the_value(block, monkeypatch):
    # One entry per block (more blocks than rows are needed: step is at least
    # one row), exactly one row, a row and a bit, everything in one piece.
    X, W, H = _factors(n=9, m=23)
    expected = _beta_divergence(X, W, H, 0.5)
    monkeypatch.setattr(divergence, "_BLOCK", block)
    got = beta_divergence(*(torch.from_numpy(a) for a in (X, W, H)), 0.5)
    assert float(got) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("beta", [0.5, 1.5, 3.0])
def test_sparse_wide_matrix_sums_columns_in_blocks(beta):
    # A CSR X with more than 256 columns: sum((W H) ** beta) runs over column
    # blocks of H.
    rng = np.random.RandomState(3)
    X = sp.random(6, 600, density=0.1, format="csr", random_state=rng)
    W, H = rng.rand(6, 3) + 0.1, rng.rand(3, 600) + 0.1
    got = beta_divergence(
        CSRMatrix.from_scipy(X), torch.from_numpy(W), torch.from_numpy(H), beta
    )
    assert float(got) == pytest.approx(_beta_divergence(X, W, H, beta), rel=1e-10)


@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5])
def test_zero_product_is_floored_like_sklearn(beta):
    # W H has exact zeros where X does not: both floor W H at EPSILON, so
    # the value is finite and the same.
    X, W, H = _factors(n=6, m=5, zeros=0.0)
    W[0] = 0.0
    got = beta_divergence(*(torch.from_numpy(a) for a in (X, W, H)), beta)
    assert np.isfinite(float(got))
    assert float(got) == pytest.approx(_beta_divergence(X, W, H, beta), rel=1e-12)


def test_epsilon_is_float32_eps():
    assert np.float32(EPSILON) == np.finfo(np.float32).eps


def test_beta_loss_names():
    assert beta_loss_to_float("frobenius") == 2.0
    assert beta_loss_to_float("kullback-leibler") == 1.0
    assert beta_loss_to_float("itakura-saito") == 0.0
    assert beta_loss_to_float(1.5) == 1.5


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


def test_frobenius_gram_float32_accumulates_in_float64():
    # The Gram form cancels ||X||^2 against the cross and Gram terms: in float64
    # accumulation its error is ~eps32 * ||X||^2 (the float32 products), far
    # below a float32 sum's.
    X, W, H = _factors(n=400, m=50)
    expected = 0.5 * np.sum((X - W @ H) ** 2)
    got = frobenius_gram(
        torch.from_numpy(X.astype(np.float32)),
        torch.from_numpy(W.astype(np.float32)),
        torch.from_numpy(H.astype(np.float32)),
        float(np.sum(X * X)),
    )
    assert got.dtype == torch.float64
    assert abs(float(got) - expected) <= 1e-6 * np.sum(X * X)


def test_frobenius_gram_is_never_negative():
    # An exact factorisation: rounding may leave a tiny negative residual,
    # which is clamped.
    rng = np.random.RandomState(0)
    W, H = rng.rand(30, 3), rng.rand(3, 20)
    X = W @ H
    got = frobenius_gram(*(torch.from_numpy(a) for a in (X, W, H)), np.sum(X * X))
    assert 0.0 <= float(got) <= 1e-9 * np.sum(X * X)


def test_squared_norm_in_float64_by_chunks():
    rng = np.random.default_rng(0)
    X = rng.random((1500, 1000)).astype(np.float32)  # more than one chunk
    expected = float(np.sum(X.astype(np.float64) ** 2))
    assert squared_norm(torch.from_numpy(X)) == pytest.approx(expected, rel=1e-12)
    # A non-contiguous view is read as it is.
    assert squared_norm(torch.from_numpy(X).T) == pytest.approx(expected, rel=1e-12)


def test_squared_norm_of_sparse_inputs():
    rng = np.random.RandomState(0)
    X = sp.random(40, 30, density=0.2, format="csr", random_state=rng)
    expected = float(np.sum(X.toarray() ** 2))
    assert squared_norm(CSRMatrix.from_scipy(X)) == pytest.approx(expected, rel=1e-12)
    T = torch.from_numpy(X.toarray())
    assert squared_norm(T.to_sparse_csr()) == pytest.approx(expected, rel=1e-12)
    assert squared_norm(T.to_sparse_coo()) == pytest.approx(expected, rel=1e-12)
    assert squared_norm(T.double()) == pytest.approx(expected, rel=1e-12)
