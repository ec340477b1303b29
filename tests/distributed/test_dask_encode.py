"""Lazy transform and inverse_transform of Dask arrays (Dask's local scheduler)."""

import numpy as np
import pytest

from sknmf import DeepNMF

da = pytest.importorskip("dask.array")

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(0).random((120, 12))


def _boom(block):
    raise RuntimeError("computed")


@pytest.mark.parametrize("ranks", [4, (6, 3)])
def test_transform_is_lazy_and_equals_in_memory(X, ranks):
    model = DeepNMF(ranks, solver="mu", max_iter=30, tol=0, random_state=0).fit(X)
    Xd = da.from_array(X, chunks=(40, 12))
    # Nothing is computed before asked: a graph whose blocks raise builds fine.
    lazy = model.transform(Xd.map_blocks(_boom, dtype=X.dtype))
    assert isinstance(lazy, da.Array) and lazy.shape == (120, model.n_components_)
    with pytest.raises(RuntimeError, match="computed"):
        lazy.compute()
    codes = model.transform(Xd)
    assert codes.chunks == ((40, 40, 40), (model.n_components_,))
    # tol=0: a fixed number of code updates, row-local, so chunk by chunk or
    # all at once gives the same codes.
    np.testing.assert_allclose(codes.compute(), model.transform(X), rtol=1e-9)
    np.testing.assert_allclose(model.score(Xd), model.score(X), rtol=1e-9)
    back = model.inverse_transform(codes)
    assert isinstance(back, da.Array)
    np.testing.assert_allclose(
        back.compute(), model.inverse_transform(model.transform(X)), rtol=1e-9
    )


def test_transform_checks_features_and_values(X):
    model = DeepNMF(3, max_iter=20, random_state=0).fit(X)
    with pytest.raises(ValueError, match="12 features"):
        model.transform(da.from_array(X[:, :5], chunks=(40, 5)))
    with pytest.raises(ValueError, match="Negative values"):
        model.transform(da.from_array(X - 1, chunks=(40, 12))).compute()
    with pytest.raises(ValueError, match="n_samples, 3"):
        model.inverse_transform(da.ones((4, 7), chunks=2))


def test_column_chunks_are_joined_and_float32_kept(X):
    model = DeepNMF(3, max_iter=20, random_state=0).fit(X.astype(np.float32))
    Xd = da.from_array(X.astype(np.float32), chunks=(40, 5))
    codes = model.transform(Xd)
    assert codes.dtype == np.float32
    # HALS stops each chunk's codes by its own tolerance test: the reference
    # is the in-memory transform of each chunk.
    X32 = X.astype(np.float32)
    ref = np.concatenate([model.transform(X32[i : i + 40]) for i in range(0, 120, 40)])
    np.testing.assert_allclose(codes.compute(), ref, rtol=1e-6, atol=1e-7)
