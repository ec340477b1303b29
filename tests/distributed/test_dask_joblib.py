"""Scale-out on Dask: joblib's dask backend for searches, partial_fit over blocks.

sknmf ships no scheduler of its own; these tests show that the existing engine
(dask.distributed, here an in-process cluster) drives the estimators unchanged.
"""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from sknmf import DeepNMF

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
joblib = pytest.importorskip("joblib")

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning",
    "ignore::DeprecationWarning",
    "ignore::ResourceWarning",
)


@pytest.fixture(scope="module")
def client():
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    ) as c:
        yield c


def test_grid_search_on_dask_backend(client):
    X = load_digits().data[:300]
    grid = GridSearchCV(
        DeepNMF(max_iter=30, random_state=0), {"n_components": [2, 12]}, cv=2
    )
    with joblib.parallel_backend("dask"):
        grid.fit(X)
    local = GridSearchCV(
        DeepNMF(max_iter=30, random_state=0), {"n_components": [2, 12]}, cv=2
    ).fit(X)
    # Same folds, same seeds: the engine changes where it runs, not what it computes.
    np.testing.assert_allclose(
        grid.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"]
    )
    assert grid.best_params_ == {"n_components": 12}


def test_partial_fit_over_dask_blocks(client):
    X = load_digits().data
    darr = da.from_array(X, chunks=(180, X.shape[1]))
    model = DeepNMF(12, random_state=0)
    for _ in range(3):
        for block in darr.blocks:
            # Only one block is in memory at a time.
            model.partial_fit(block.compute())
    full = DeepNMF(12, random_state=0).fit(X)
    err_online = np.linalg.norm(X - model.inverse_transform(model.transform(X)))
    err_full = np.linalg.norm(X - full.inverse_transform(full.transform(X)))
    assert err_online <= 1.15 * err_full
