"""Deep HALS's extrapolation on a Dask array (local scheduler).

The client decides the extrapolation's step from the summed statistics and
ships it with the weights; each chunk moves its own codes. One chunk holding
every row is one in-memory block, so the Dask fit must equal the in-memory fit
to rounding: without the step shipped the chunks would not extrapolate and the
fits would part after the first iteration.
"""

import numpy as np
import pytest

from sknmf import DeepNMF
from sknmf._torch.solvers import deep_hals

da = pytest.importorskip("dask.array")

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.mark.parametrize("alpha", [0.0, 0.01])
def test_deep_hals_extrapolation_runs_on_the_chunks(alpha):
    rng = np.random.default_rng(0)
    X = rng.random((240, 20)) @ rng.random((20, 30)) + 0.01 * rng.random((240, 30))
    # The same start (Dask's NNDSVD is a randomized SVD's).
    W = [rng.random((240, r)) + 0.1 for r in (8, 5, 3)]
    H = [rng.random((r, w)) + 0.1 for r, w in zip((8, 5, 3), (30, 8, 5))]
    params = dict(
        n_components=(8, 5, 3),
        init="custom",
        pretrain_max_iter=5,
        max_iter=40,
        tol=0,
        alpha_W=alpha,
        alpha_H=alpha,
        l1_ratio=0.5,
    )
    local = DeepNMF(**params).fit(X, W=W, H=H)
    dist = DeepNMF(**params).fit(da.from_array(X, chunks=X.shape), W=W, H=H)
    np.testing.assert_allclose(
        dist.history_[:, "error"], local.history_[:, "error"], rtol=1e-9
    )
    for a, b in zip(local.layer_components_, dist.layer_components_):
        np.testing.assert_allclose(b, a, rtol=1e-8, atol=1e-10 * np.abs(a).max())
    # The check above can fail: the plain fine-tuning from the same start (what
    # chunks that never receive the step would run) is another fit.
    saved = deep_hals._BETA0
    deep_hals._BETA0 = 0.0
    try:
        plain = DeepNMF(**params).fit(da.from_array(X, chunks=X.shape), W=W, H=H)
    finally:
        deep_hals._BETA0 = saved
    ratio = np.divide(plain.history_[:, "error"], local.history_[:, "error"])
    gap = np.abs(ratio - 1)
    assert gap.max() > 1e-4
