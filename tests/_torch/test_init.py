"""Initialisations against scikit-learn's ``_initialize_nmf`` and numpy's SVD.

scikit-learn's NNDSVD runs on a randomized SVD, ours on an exact one (small
inputs) or another randomized one: the two agree exactly where the truncated
SVD itself is exact, so the comparisons use matrices of rank ``k`` (whose
rank-``k`` SVD any range finder recovers to rounding).
"""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.decomposition._nmf import _initialize_nmf

from sknmf._torch.init import constant_codes, initialize_nmf, truncated_svd
from sknmf._torch.sparse import CSRMatrix

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support:UserWarning")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _low_rank(n=60, m=25, k=4, seed=0):
    # Nonnegative, rank exactly k, singular values well apart from zero: every
    # truncated SVD of rank k is exact up to rounding.
    rng = np.random.RandomState(seed)
    return rng.rand(n, k) @ rng.rand(k, m) * 3.0


@pytest.mark.parametrize("init", ["nndsvd", "nndsvda"])
@pytest.mark.parametrize("shape", [(60, 25), (25, 60)])
def test_nndsvd_matches_sklearn_on_low_rank(init, shape):
    X = _low_rank(*shape)
    W_ref, H_ref = _initialize_nmf(X, 4, init=init, random_state=0)
    W, H = initialize_nmf(torch.from_numpy(X), 4, init, _gen())
    np.testing.assert_allclose(W.numpy(), W_ref, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(H.numpy(), H_ref, rtol=1e-7, atol=1e-9)


def test_nndsvdar_matches_sklearn_up_to_the_random_fill():
    X = _low_rank()
    W_ref, H_ref = _initialize_nmf(X, 4, init="nndsvdar", random_state=0)
    W_svd, H_svd = _initialize_nmf(X, 4, init="nndsvd", random_state=0)
    W, H = initialize_nmf(torch.from_numpy(X), 4, "nndsvdar", _gen())
    avg = X.mean()
    for got, ref, base in ((W.numpy(), W_ref, W_svd), (H.numpy(), H_ref, H_svd)):
        filled = base == 0
        assert filled.any()  # NNDSVD leaves zeros for the fill to replace
        np.testing.assert_allclose(got[~filled], ref[~filled], rtol=1e-7)
        # The fill: |N(0, 1)| * mean / 100, as scikit-learn's, from our generator:
        # positive, small, and not scikit-learn's draws.
        assert (got[filled] > 0).all()
        assert got[filled].max() < avg / 100 * 6
        assert not np.allclose(got[filled], ref[filled])


def test_default_init_is_sklearns():
    # None: nndsvda when k <= min(n, m), random otherwise (as scikit-learn).
    X = _low_rank()
    W_ref, H_ref = _initialize_nmf(X, 4, init=None, random_state=0)
    W, H = initialize_nmf(torch.from_numpy(X), 4, None, _gen())
    np.testing.assert_allclose(W.numpy(), W_ref, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(H.numpy(), H_ref, rtol=1e-7, atol=1e-9)
    W, H = initialize_nmf(torch.from_numpy(X[:3]), 4, None, _gen())
    W2, H2 = initialize_nmf(torch.from_numpy(X[:3]), 4, "random", _gen())
    assert torch.equal(W, W2) and torch.equal(H, H2)


@pytest.mark.parametrize("init", ["nndsvd", "nndsvda", "nndsvdar", "random"])
def test_sparse_input_equals_dense(init):
    X = _low_rank()
    X[X < 1.0] = 0.0  # no longer low rank; same matrix both ways
    Xs = CSRMatrix.from_scipy(sp.csr_matrix(X))
    W, H = initialize_nmf(torch.from_numpy(X), 4, init, _gen(3))
    Ws, Hs = initialize_nmf(Xs, 4, init, _gen(3))
    torch.testing.assert_close(Ws, W, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(Hs, H, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("init", ["nndsvd", "nndsvda", "nndsvdar", "random"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtype_and_nonnegativity(init, dtype):
    X = torch.from_numpy(_low_rank()).to(dtype)
    W, H = initialize_nmf(X, 3, init, _gen())
    assert W.shape == (60, 3) and H.shape == (3, 25)
    assert W.dtype == dtype and H.dtype == dtype
    assert (W >= 0).all() and (H >= 0).all()
    assert torch.isfinite(W).all() and torch.isfinite(H).all()
    if init in ("nndsvda", "nndsvdar"):
        # The variants fill NNDSVD's zeros.
        assert (W > 0).all() and (H > 0).all()


def test_random_init_scale_and_distribution():
    # scikit-learn: sqrt(mean(X) / k) * |N(0, 1)|. A half-normal of scale s
    # has mean s sqrt(2 / pi) and second moment s^2.
    rng = np.random.RandomState(0)
    X = rng.rand(300, 200) * 4.0
    k = 10
    W, H = initialize_nmf(torch.from_numpy(X), k, "random", _gen())
    s = np.sqrt(X.mean() / k)
    for F in (W.numpy(), H.numpy()):
        assert (F >= 0).all()
        z = F / s
        # 2000-3000 draws: the standard errors of these moments are about 2%.
        assert z.mean() == pytest.approx(np.sqrt(2 / np.pi), rel=0.06)
        assert (z**2).mean() == pytest.approx(1.0, rel=0.1)
        # A half-normal's median is 0.674: a check on the shape, not the scale.
        assert np.median(z) == pytest.approx(0.6745, rel=0.1)
    W_ref, H_ref = _initialize_nmf(X, k, init="random", random_state=0)
    assert W.numpy().mean() == pytest.approx(W_ref.mean(), rel=0.1)
    assert H.numpy().mean() == pytest.approx(H_ref.mean(), rel=0.1)


@pytest.mark.parametrize("init", ["random", "nndsvdar"])
def test_randomness_comes_from_the_generator_only(init):
    X = torch.from_numpy(_low_rank())
    state = torch.get_rng_state()
    a = initialize_nmf(X, 4, init, _gen(5))
    torch.manual_seed(123)  # the global generator plays no part
    b = initialize_nmf(X, 4, init, _gen(5))
    c = initialize_nmf(X, 4, init, _gen(6))
    torch.set_rng_state(state)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])


def test_init_leaves_the_global_generator_alone():
    X = torch.from_numpy(_low_rank())
    before = torch.get_rng_state()
    initialize_nmf(X, 4, "random", _gen())
    initialize_nmf(X, 4, "nndsvdar", _gen())
    assert torch.equal(torch.get_rng_state(), before)


def test_bad_init_raises():
    X = torch.from_numpy(_low_rank())
    with pytest.raises(ValueError, match="Unknown init"):
        initialize_nmf(X, 4, "svd", _gen())
    with pytest.raises(ValueError, match="n_components <= min"):
        initialize_nmf(X, 26, "nndsvd", _gen())


def test_constant_codes():
    W = constant_codes(3, 4, torch.tensor(2.0), torch.zeros(1, dtype=torch.float64))
    assert W.dtype == torch.float64 and W.shape == (3, 4)
    np.testing.assert_allclose(W.numpy(), np.sqrt(2.0 / 4))


@pytest.mark.parametrize("shape", [(300, 40), (40, 300)])
def test_gram_svd_matches_lapack(shape):
    rng = np.random.RandomState(1)
    X = rng.rand(*shape) @ np.diag(np.linspace(1, 3, shape[1]))
    U, S, Vt = truncated_svd(torch.from_numpy(X), 5, _gen())
    U_ref, S_ref, Vt_ref = np.linalg.svd(X, full_matrices=False)
    np.testing.assert_allclose(S.numpy(), S_ref[:5], rtol=1e-9)
    # Same singular vectors up to sign.
    np.testing.assert_allclose(np.abs(U.numpy().T @ U_ref[:, :5]), np.eye(5), atol=1e-7)
    np.testing.assert_allclose(np.abs(Vt.numpy() @ Vt_ref[:5].T), np.eye(5), atol=1e-7)
    np.testing.assert_allclose((U * S) @ Vt, (U_ref[:, :5] * S_ref[:5]) @ Vt_ref[:5])


def test_gram_svd_rank_deficient_has_no_nan():
    X = np.outer(np.arange(1.0, 31.0), np.arange(1.0, 9.0))  # rank one
    U, S, Vt = truncated_svd(torch.from_numpy(X), 3, _gen())
    assert torch.isfinite(U).all() and torch.isfinite(Vt).all()
    np.testing.assert_allclose((U[:, :1] * S[:1]) @ Vt[:1], X, rtol=1e-10)


@pytest.mark.parametrize("sparse", [False, True])
def test_randomized_svd_on_large_low_rank_matrix(sparse):
    # min(n, m) > 512: the randomized range finder. On a rank-k matrix it is
    # exact: compare with LAPACK.
    rng = np.random.RandomState(2)
    X = (rng.rand(600, 5) * [8, 4, 2, 1, 0.5]) @ rng.rand(5, 520)
    Xt = torch.from_numpy(X)
    if sparse:
        Xt = CSRMatrix.from_scipy(sp.csr_matrix(X))
    U, S, Vt = truncated_svd(Xt, 5, _gen())
    U_ref, S_ref, Vt_ref = np.linalg.svd(X, full_matrices=False)
    np.testing.assert_allclose(S.numpy(), S_ref[:5], rtol=1e-9)
    np.testing.assert_allclose(np.abs(U.numpy().T @ U_ref[:, :5]), np.eye(5), atol=1e-7)
    np.testing.assert_allclose(np.abs(Vt.numpy() @ Vt_ref[:5].T), np.eye(5), atol=1e-7)
    np.testing.assert_allclose(((U * S) @ Vt).numpy(), X, atol=1e-9 * np.abs(X).max())


def test_randomized_svd_leading_values_on_full_rank_matrix():
    # Full rank with a decaying spectrum: the leading singular values to a
    # randomized SVD's accuracy (4 power iterations, 10 oversamples).
    rng = np.random.RandomState(3)
    Q1, _ = np.linalg.qr(rng.randn(600, 520))
    Q2, _ = np.linalg.qr(rng.randn(520, 520))
    s = 0.5 ** np.arange(520.0)
    X = (Q1 * s) @ Q2.T
    _, S, _ = truncated_svd(torch.from_numpy(X), 4, _gen())
    np.testing.assert_allclose(S.numpy(), s[:4], rtol=1e-6)


def test_resolve_init_follows_scikit_learn():
    from sknmf._torch.init import resolve_init

    assert resolve_init(None, 3, 10, 5) == "nndsvda"
    assert resolve_init(None, 6, 10, 5) == "random"
    assert resolve_init("random", 6, 10, 5) == "random"
    # scikit-learn's own words, which its tests match.
    with pytest.raises(ValueError, match="init = 'nndsvd' can only be used when"):
        resolve_init("nndsvd", 6, 10, 5)
    with pytest.raises(ValueError, match="Unknown init"):
        resolve_init("svd", 2, 10, 5)
