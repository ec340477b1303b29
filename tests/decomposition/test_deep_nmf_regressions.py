"""Plain regression tests for what the property suite and the conformance file found,
and for the deterministic Hypothesis setup of tests/conftest.py (DESIGN.md §6)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import settings

from sknmf import DeepNMF, deep_nmf

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

_TESTS = Path(__file__).resolve().parent.parent


# Hypothesis profiles ----------------------------------------------------------------
def _profile_in(extra_env: dict, cwd: Path) -> tuple:
    """The default settings once tests/conftest.py is imported under ``extra_env``."""
    code = (
        f"import sys; sys.path.insert(0, {str(_TESTS)!r}); import conftest; "
        "from hypothesis import settings; d = settings.default; "
        "print(d.derandomize, d.database is None, d.print_blob)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "HYPOTHESIS_PROFILE")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**env, **extra_env},
        capture_output=True,
        text=True,
        check=True,
    )
    return tuple(out.stdout.split())


@pytest.mark.parametrize(
    "ci, expected",
    [
        ({"CI": "true"}, ("True", "True", "True")),
        ({"CI": "1"}, ("True", "True", "True")),
        ({}, ("False", "False", "True")),
        ({"CI": "false"}, ("False", "False", "True")),
    ],
)
def test_hypothesis_is_derandomised_without_database_in_ci(ci, expected, tmp_path):
    # In CI nothing found once can replay forever, and a run is reproducible.
    assert _profile_in(ci, tmp_path) == expected
    assert not (tmp_path / ".hypothesis").exists()


def test_the_loaded_profile_follows_the_environment():
    in_ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    if os.environ.get("HYPOTHESIS_PROFILE"):
        pytest.skip("HYPOTHESIS_PROFILE chooses the profile explicitly")
    assert settings.default.derandomize == in_ci
    assert (settings.default.database is None) == in_ci


# Issue 16, item 6 -------------------------------------------------------------------
def test_issue16_deep_float32_tiny_example():
    # Hypothesis found it: a layer weight of 1.78e285 overflowed float32 in the
    # coupled MU solve ("value cannot be converted to type float").
    X = np.array([[1, 0], [0, 0.4353224]], np.float32)
    model = DeepNMF((2, 2, 2), max_iter=5, random_state=0)
    W = model.fit_transform(X)
    assert W.dtype == np.float32 and W.shape == (2, 2)
    assert np.isfinite(W).all() and (W >= 0).all()
    C = model.components_
    assert np.isfinite(C).all() and (C >= 0).all()
    assert np.isfinite(model.layer_weights_).all()
    # X has rank two: every layer fits it exactly, up to float32 rounding.
    np.testing.assert_allclose(W @ C, X, atol=1e-5)


# Online multiplicative updates (found by scikit-learn's test_nmf_true_reconstruction)
def test_online_mu_keeps_the_weights_of_features_a_batch_lacks():
    # MiniBatchNMF starts its running sums at (H, 1): a feature absent from the
    # first batch keeps (shrunk) weights. Started at zero they were set to zero,
    # where multiplicative updates stay: the fit stalled at 100x sklearn's error.
    rng = np.random.RandomState(0)
    H0 = rng.rand(2, 4) + 0.5
    X = rng.rand(6, 4)
    X[:, 3] = 0.0
    model = DeepNMF(
        2, beta_loss="kullback-leibler", solver="mu", init="custom", max_iter=5
    )
    model.partial_fit(X, H=H0)
    assert (model.components_[:, 3] > 0).all()
    assert (model.components_[:, 3] < H0[:, 3]).all()


def test_online_mu_fits_a_planted_sparse_structure():
    # scikit-learn's test_nmf_true_reconstruction, mini-batch half: one
    # component per row and per feature.
    rng = np.random.RandomState(42)
    W_true = np.zeros((15, 5))
    W_true[np.arange(5), np.arange(5)] = np.abs(rng.randn(15))[:5]
    H_true = np.zeros((5, 10))
    H_true[np.arange(10) % 5, np.arange(10)] = np.abs(rng.randn(5))[np.arange(10) % 5]
    X = W_true @ H_true
    model = DeepNMF(
        5, beta_loss=1, solver="mu", batch_size=3, max_iter=1000, random_state=0
    )
    W = model.fit_transform(X)
    assert model.reconstruction_err_ < 0.1
    np.testing.assert_allclose(X, W @ model.components_, atol=1e-2)


# deep_nmf as non_negative_factorization's peer ------------------------------------
def test_deep_nmf_old_positional_ranks_are_a_clear_error():
    X = np.random.RandomState(0).rand(6, 4)
    with pytest.raises(TypeError, match=r"n_components=\(3, 2\)"):
        deep_nmf(X, (3, 2))
    with pytest.raises(TypeError, match="n_components=3"):
        deep_nmf(X, 3)


def test_deep_nmf_update_H_false_deep():
    X = np.random.RandomState(0).rand(12, 6)
    model = DeepNMF((4, 2), max_iter=20, random_state=0).fit(X)
    H = model.layer_components_
    with pytest.warns(RuntimeWarning, match="initial W is not used"):
        W, H_out, n_iter = deep_nmf(
            X,
            W=[np.ones((12, 4)), np.ones((12, 2))],
            H=H,
            update_H=False,
            layer_weights=model.layer_weights_,
            max_iter=20,
        )
    assert [w.shape for w in W] == [(12, 4), (12, 2)]
    for a, b in zip(H_out, H):
        np.testing.assert_array_equal(a, b)
    # The codes for fixed weights are transform's.
    np.testing.assert_allclose(W[-1], model.transform(X), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="pass H"):
        deep_nmf(X, n_components=(4, 2), update_H=False)


# Found by the property suite -------------------------------------------------------
def test_one_by_one_float32_three_layers_does_not_overflow():
    # The first layer fits a 1 x 1 X exactly: the deeper layers' weights were
    # D_1 / D_l = 1e-284, rounding noise whose ratios overflowed float32 in the
    # deep HALS solve ("value cannot be converted to type float").
    X = np.array([[6.986183e-21]], np.float32)
    W, H, _ = deep_nmf(X, n_components=(2, 1, 1), max_iter=10, random_state=0)
    for A in [*W, *H]:
        assert A.dtype == np.float32 and np.isfinite(A).all() and (A >= 0).all()
    rel = abs(float(X[0, 0]) - float((W[-1] @ H[2] @ H[1] @ H[0])[0, 0])) / X[0, 0]
    assert rel < 0.1


def test_layer_weights_of_an_exact_first_layer_do_not_depend_on_the_scale():
    # An exact first layer left D_1 at rounding level, so lambda_2 = D_1 / D_2
    # was noise (2.9e-32 here) and X and X / 2 gave fits 44% apart.
    X = np.array([[0.91049577, 0.85965512], [1.0, 0.0]])
    kw = dict(init="random", max_iter=8, tol=0, random_state=0)
    ref = DeepNMF((2, 1), **kw)
    R = ref.fit_transform(X) @ ref.components_
    for c in (0.5, 1e-290):
        model = DeepNMF((2, 1), **kw)
        Rc = model.fit_transform(X * c) @ model.components_
        np.testing.assert_allclose(model.layer_weights_, ref.layer_weights_, rtol=1e-9)
        np.testing.assert_allclose(Rc / c, R, rtol=1e-8, atol=1e-12)


def test_layer_weights_agree_for_sparse_and_dense_exact_fits():
    # The sparse loss (Gram form) computes an exact layer's D_1 as 0 or
    # 1e-16 * ||X||^2, the dense one as 1e-28: weights 0.06 against 326.
    X = np.array(
        [[8.50172663e-301, 2.59262318e-302], [5.49662478e-301, 4.35322393e-301]]
    )
    kw = dict(max_iter=8, tol=0, random_state=2)
    dense = DeepNMF((3, 2), **kw)
    W = dense.fit_transform(X)
    sparse = DeepNMF((3, 2), **kw)
    Ws = sparse.fit_transform(sp.csr_matrix(X))
    np.testing.assert_allclose(sparse.layer_weights_, dense.layer_weights_, rtol=1e-9)
    np.testing.assert_allclose(
        (Ws / 1e-300) @ sparse.components_, (W / 1e-300) @ dense.components_, rtol=1e-6
    )


@pytest.mark.parametrize(
    "X",
    [
        np.array([[1.25590134e308]]),  # exponent 1024: the scale 2.0 ** 1024 was inf
        np.array([[1e-320, 3e-321]]),  # subnormal: the inverse scale was inf
        np.array([[1e-45, 3e-44]], np.float32),
    ],
    ids=["float64-largest", "float64-subnormal", "float32-subnormal"],
)
def test_data_at_the_ends_of_the_dtype_range(X):
    model = DeepNMF(1, max_iter=10, random_state=0)
    W = model.fit_transform(X)
    assert W.dtype == X.dtype
    assert np.isfinite(W).all() and np.isfinite(model.components_).all()
    assert np.isfinite(model.reconstruction_err_)
    R = W.astype(np.float64) @ model.components_.astype(np.float64)
    peak = float(np.max(X))
    assert np.linalg.norm((X - R) / peak) <= np.linalg.norm(X / peak)
