"""``CSRMatrix`` against scipy's CSR matrices: products, slices, new values."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sknmf._torch.sparse import CSRMatrix, matmul, tmatmul

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support:UserWarning")


def _scipy(n=50, m=30, density=0.2, seed=0, dtype=np.float64):
    X = sp.random(n, m, density=density, format="csr", dtype=dtype, random_state=seed)
    X = X.tolil()
    X[3, :] = 0.0  # an empty row and an empty column: zero-length slices
    X[:, 7] = 0.0
    X = X.tocsr()
    X.eliminate_zeros()
    X.sort_indices()
    return X


def _both(X):
    """The same matrix wrapped from scipy and built from a dense tensor."""
    return [
        CSRMatrix.from_scipy(X),
        CSRMatrix.from_dense(torch.from_numpy(X.toarray())),
    ]


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


@pytest.mark.parametrize("which", [0, 1])
def test_products_match_scipy(which):
    X = _scipy()
    T = _both(X)[which]
    rng = np.random.RandomState(1)
    A, B = rng.rand(50, 4), rng.rand(30, 4)
    np.testing.assert_allclose(T.matmul(torch.from_numpy(B)).numpy(), X @ B)
    np.testing.assert_allclose(T.tmatmul(torch.from_numpy(A)).numpy(), X.T @ A)
    # The module-level helpers: same products for a CSRMatrix and a dense X.
    D = torch.from_numpy(X.toarray())
    for Xt in (T, D):
        np.testing.assert_allclose(matmul(Xt, torch.from_numpy(B)).numpy(), X @ B)
        np.testing.assert_allclose(tmatmul(torch.from_numpy(A), Xt).numpy(), A.T @ X)
    rows, cols = X.nonzero()
    W, H = torch.from_numpy(A), torch.from_numpy(B.T.copy())
    np.testing.assert_allclose(
        T.gather_product(W, H).numpy(), (A @ B.T)[rows, cols], rtol=1e-12
    )
    np.testing.assert_array_equal(T.to_dense().numpy(), X.toarray())
    assert float(T.sum()) == pytest.approx(X.sum(), rel=1e-12)
    assert T.shape == X.shape and len(T) == X.shape[0] and T.nnz == X.nnz
    assert T.dtype == torch.float64 and T.device.type == "cpu"


def test_row_of_every_nonzero():
    X = _scipy()
    rows, _ = X.nonzero()
    np.testing.assert_array_equal(CSRMatrix.from_scipy(X).row.numpy(), rows)


@pytest.mark.parametrize("which", [0, 1])
def test_with_values_before_and_after_the_transpose_is_built(which):
    X = _scipy()
    rng = np.random.RandomState(2)
    A = rng.rand(50, 3)
    new = rng.rand(X.nnz)
    X2 = X.copy()
    X2.data = new
    T = _both(X)[which]
    # Before any product with X.T, then after (the transpose's structure is
    # shared by both matrices; each keeps its own values).
    V = T.with_values(torch.from_numpy(new))
    np.testing.assert_allclose(V.tmatmul(torch.from_numpy(A)).numpy(), X2.T @ A)
    np.testing.assert_allclose(T.tmatmul(torch.from_numpy(A)).numpy(), X.T @ A)
    V2 = T.with_values(torch.from_numpy(2 * new))
    np.testing.assert_allclose(V2.tmatmul(torch.from_numpy(A)).numpy(), 2 * X2.T @ A)
    np.testing.assert_allclose(
        V2.matmul(torch.from_numpy(A[:30])).numpy(), 2 * X2 @ A[:30]
    )


@pytest.mark.parametrize("which", [0, 1])
def test_row_slice_matches_scipy_fancy_indexing(which):
    X = _scipy()
    T = _both(X)[which]
    rng = np.random.RandomState(3)
    idx = np.array([5, 3, 3, 49, 0, 17])  # unsorted, repeated, the empty row
    S = T.row_slice(torch.from_numpy(idx))
    ref = X[idx]
    np.testing.assert_array_equal(S.to_dense().numpy(), ref.toarray())
    A, B = rng.rand(len(idx), 2), rng.rand(30, 2)
    np.testing.assert_allclose(S.tmatmul(torch.from_numpy(A)).numpy(), ref.T @ A)
    np.testing.assert_allclose(S.matmul(torch.from_numpy(B)).numpy(), ref @ B)
    empty = T.row_slice(torch.tensor([3]))
    assert empty.nnz == 0
    np.testing.assert_array_equal(empty.to_dense().numpy(), np.zeros((1, 30)))


def test_to_device_keeps_values_and_products():
    X = _scipy()
    T = CSRMatrix.from_scipy(X)
    A = np.random.RandomState(4).rand(50, 2)
    T.tmatmul(torch.from_numpy(A))  # the transpose exists before the move
    U = T.to("cpu")
    np.testing.assert_allclose(U.tmatmul(torch.from_numpy(A)).numpy(), X.T @ A)
    np.testing.assert_array_equal(U.to_dense().numpy(), X.toarray())


def test_without_transpose_drops_only_the_transpose():
    X = _scipy()
    T = CSRMatrix.from_dense(torch.from_numpy(X.toarray()))
    A = np.random.RandomState(5).rand(50, 2)
    T.tmatmul(torch.from_numpy(A))
    assert "t_crow" in T._s
    lean = T.without_transpose()
    assert "t_crow" not in lean._s and "perm" not in lean._s
    np.testing.assert_allclose(
        lean.matmul(torch.from_numpy(A[:30])).numpy(), X @ A[:30]
    )
    # It can still build the transpose again when asked.
    np.testing.assert_allclose(lean.tmatmul(torch.from_numpy(A)).numpy(), X.T @ A)
