"""Properties of the public DeepNMF / deep_nmf API under hypothesis (DESIGN.md §6).

Extreme scales (float64 and float32 from subnormal to their largest values),
both dtypes, shapes from 1 x 1 to empty, sparse and dense input, one to three
layers: the outputs are finite, nonnegative, of the right shape and dtype, the
fit is scale-equivariant and does not depend on the storage of X, and what
cannot be fitted is a clear ValueError, never a raw torch error or NaN.

Examples are small and few (the profiles are in tests/conftest.py: random with
a database on a laptop, derandomised without one in CI); counterexamples found
here live on as plain tests in test_deep_nmf_regressions.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sknmf import DeepNMF, deep_nmf

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# Multipliers of data in [0, 1): each dtype's range, its extremes included.
_F64 = np.finfo(np.float64)
_F32 = np.finfo(np.float32)
SCALES = {
    np.float64: [1e-310, 1e-300, 1e-150, 1e-9, 1.0, 1e3, 1e12, 1e150, 1e300, _F64.max],
    np.float32: [1e-40, 1e-30, 1e-20, 1e-9, 1.0, 1e3, 1e12, 1e19, 1e30, _F32.max],
}


@st.composite
def problems(draw, min_size=1, max_size=6, well_posed=False):
    """``(X, ranks, dtype, scale, seed)``: ``X = scale * base``, ``base`` in [0, 1)
    with some zeros and at least one positive entry. ``well_posed``: no rank
    above ``min(n_samples, n_features)``."""
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    n = draw(st.integers(min_size, max_size))
    m = draw(st.integers(min_size, max_size))
    depth = draw(st.integers(1, 3))
    top = min(4, n, m) if well_posed else 4
    widths = sorted((draw(st.integers(1, top)) for _ in range(depth)), reverse=True)
    scale = draw(st.sampled_from(SCALES[dtype]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.RandomState(seed)
    base = rng.rand(n, m) * (rng.rand(n, m) < 0.7)
    if n and m:
        base[rng.randint(n), rng.randint(m)] = 1.0 - rng.rand() / 2
    # In float64 first: the product is then rounded once.
    X = (base * scale).astype(dtype)
    return X, tuple(widths), dtype, float(scale), seed


def _check_factors(X, W, model, ranks):
    n, m = X.shape
    assert W.shape == (n, ranks[-1])
    assert W.dtype == X.dtype
    assert np.isfinite(W).all() and (W >= 0).all()
    C = model.components_
    assert C.shape == (ranks[-1], m) and C.dtype == X.dtype
    assert np.isfinite(C).all() and (C >= 0).all()
    for H, r, w in zip(model.layer_components_, ranks, (m, *ranks[:-1])):
        assert H.shape == (r, w) and H.dtype == X.dtype
        assert np.isfinite(H).all() and (H >= 0).all()
    # Errors are norms: finite unless the norm of X itself is beyond the dtype
    # (data at its largest values).
    with np.errstate(over="ignore"):
        norm = np.linalg.norm(X.astype(np.float64))
    if np.isfinite(norm):
        assert np.isfinite(model.reconstruction_err_)
        assert all(np.isfinite(e) for e in model.layer_errors_)


def _relative_error(X, W, C) -> float:
    """``||X - W C|| / ||X||`` computed in float64 at the data's own scale."""
    peak = float(np.max(X))
    Xs = np.asarray(X, np.float64) / peak
    R = (np.asarray(W, np.float64) / peak) @ np.asarray(C, np.float64)
    return float(np.linalg.norm(Xs - R) / np.linalg.norm(Xs))


@settings(max_examples=25)
@given(problem=problems(), beta=st.sampled_from(["frobenius", "kullback-leibler"]))
def test_fit_outputs_are_finite_nonnegative_and_typed(problem, beta):
    X, ranks, dtype, scale, seed = problem
    model = DeepNMF(ranks, beta_loss=beta, max_iter=10, random_state=seed)
    try:
        W = model.fit_transform(X)
    except ValueError as exc:
        # The one refusal allowed: codes that do not fit the dtype (data at the
        # dtype's largest values), said in words.
        assert "overflow" in str(exc) and "float64" in str(exc), exc
        assert dtype == np.float32 or scale == _F64.max
        return
    _check_factors(X, W, model, ranks)
    # Not worse than the zero codes (relative error 1), up to rounding.
    assert _relative_error(X, W, model.components_) <= 1.0 + 1e-3
    np.testing.assert_array_equal(model.transform(X), W)
    R = model.inverse_transform(W)
    assert R.shape == X.shape and R.dtype == X.dtype
    # A reconstruction rounded above the dtype's largest value is inf, as
    # X + a little is.
    assert np.isfinite(R).all() or np.max(X) > np.finfo(dtype).max / 2


@settings(max_examples=15)
@given(problem=problems(), update_H=st.booleans())
def test_deep_nmf_function_outputs(problem, update_H):
    X, ranks, dtype, scale, seed = problem
    assume(scale < np.finfo(dtype).max)  # the overflow refusal is tested above
    layered = len(ranks) > 1
    n_components = ranks if layered else ranks[0]
    W, H, n_iter = deep_nmf(
        X, n_components=n_components, max_iter=10, random_state=seed
    )
    if not update_H:
        W_fixed, H_fixed, n_iter = deep_nmf(X, H=H, update_H=False, max_iter=10)
        assert (H_fixed is H) or all(
            np.array_equal(a, b)
            for a, b in zip(H_fixed if layered else [H_fixed], H if layered else [H])
        )
        W = W_fixed
    assert isinstance(n_iter, int) and 0 <= n_iter <= 10
    W_list = W if layered else [W]
    H_list = H if layered else [H]
    assert isinstance(W, list) == layered == isinstance(H, list)
    for W_l, H_l, r, w in zip(W_list, H_list, ranks, (X.shape[1], *ranks[:-1])):
        assert W_l.shape == (X.shape[0], r) and H_l.shape == (r, w)
        assert W_l.dtype == H_l.dtype == X.dtype
        for A in (W_l, H_l):
            assert np.isfinite(A).all() and (A >= 0).all()


@settings(max_examples=15)
@given(
    problem=problems(min_size=2, well_posed=True),
    factor_exp=st.sampled_from([-290, -100, -40, -9, 9, 40, 100, 290]),
)
def test_fit_is_scale_equivariant(problem, factor_exp):
    # Unpenalised NMF is equivariant: the fit of c X is c times the fit of X
    # (the same weights, codes times c), whatever c, within rounding. From the
    # random start: the SVD starts are scikit-learn's, which are not (nndsvd
    # zeroes factor entries below an absolute 1e-6, nndsvda fills zeros with
    # mean(X), which scales as c where the factors scale as sqrt(c):
    # scikit-learn's NMF fits X and X * 1e-290 0.87 apart); DeepNMF keeps
    # scikit-learn's definitions, so they hold only beyond 2**±32, where the
    # fit runs at an internal scale. Nor where a layer has more components
    # than X has rows or columns: its factors are then far from unique, and 8
    # iterations amplify the rounding of the start's sqrt(c) to 1e-3.
    X, ranks, dtype, _, seed = problem
    info = np.finfo(dtype)
    c = 10.0**factor_exp
    X = (np.asarray(X, np.float64) / np.max(X)).astype(dtype)  # peak 1
    assume(float(info.tiny) * 1e6 < c < float(info.max) / 1e6)
    kw = dict(init="random", max_iter=8, tol=0, random_state=seed)
    ref = DeepNMF(ranks, **kw)
    W = ref.fit_transform(X)
    Xc = (np.asarray(X, np.float64) * c).astype(dtype)
    model = DeepNMF(ranks, **kw)
    Wc = model.fit_transform(Xc)
    _check_factors(Xc, Wc, model, ranks)
    rtol = 2e-2 if dtype == np.float32 else 1e-6
    R = np.asarray(W, np.float64) @ np.asarray(ref.components_, np.float64)
    Rc = (np.asarray(Wc, np.float64) / c) @ np.asarray(model.components_, np.float64)
    assert np.linalg.norm(Rc - R) <= rtol * np.linalg.norm(np.asarray(X, np.float64))


@settings(max_examples=12)
@given(problem=problems(min_size=2, well_posed=True))
def test_sparse_and_dense_input_agree(problem):
    # Same algorithm, other summation order: agreement to rounding, amplified
    # by the iterations (over-parametrised layers excluded, as above).
    X, ranks, dtype, scale, seed = problem
    assume(scale < np.finfo(dtype).max)
    kw = dict(max_iter=8, tol=0, random_state=seed)
    dense = DeepNMF(ranks, **kw)
    W = dense.fit_transform(X)
    sparse = DeepNMF(ranks, **kw)
    Ws = sparse.fit_transform(sp.csr_matrix(X))
    _check_factors(X, Ws, sparse, ranks)
    rtol = 1e-4 if dtype == np.float64 else 2e-2
    norm = np.linalg.norm(np.asarray(X, np.float64) / scale)
    R = (np.asarray(W, np.float64) / scale) @ dense.components_.astype(np.float64)
    Rs = (np.asarray(Ws, np.float64) / scale) @ sparse.components_.astype(np.float64)
    assert np.linalg.norm(Rs - R) <= rtol * norm


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 0)])
@pytest.mark.parametrize("sparse_input", [False, True])
def test_empty_data_is_a_clear_error(shape, sparse_input):
    X = np.zeros(shape)
    data = sp.csr_matrix(X) if sparse_input else X
    with pytest.raises(ValueError, match=r"0 (sample|feature)\(s\)"):
        DeepNMF(1).fit(data)
    with pytest.raises(ValueError, match=r"0 (sample|feature)\(s\)"):
        deep_nmf(data, n_components=1)


def test_one_by_one():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning either: it converges at once
        W = DeepNMF(1, random_state=0).fit_transform(np.array([[3.0]]))
    assert W.shape == (1, 1) and np.isfinite(W).all()
