"""Quantisation of the codec's factors, against closed forms and scipy's NNLS."""

import numpy as np
import pytest
from scipy.optimize import nnls

from sknmf.image._quantise import (
    CODE_RANGE_PCT,
    code_grid,
    dictionary_atoms,
    fit_codes,
    quantise_codes,
    quantise_dictionary,
)


def _problem(n=300, k=6, d=16, seed=0):
    rng = np.random.default_rng(seed)
    D = rng.random((k, d)).astype(np.float32)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    W = rng.random((n, k)).astype(np.float32) * (rng.random((n, k)) < 0.6)
    X = W @ D + 0.05 * rng.random((n, d)).astype(np.float32)
    return X.astype(np.float32), D, W


def test_dictionary_is_8_bit_with_unit_norm_atoms():
    rng = np.random.default_rng(1)
    H = rng.random((5, 12)) * np.array([[1], [10], [1e-3], [0], [3]])
    H[4, 0] = -1.0  # negative entries are clipped
    q, scale = quantise_dictionary(H)
    assert q.dtype == np.uint8 and scale.dtype == np.float32
    live = [0, 1, 2, 4]
    np.testing.assert_array_equal(q[live].max(axis=1), 255)
    np.testing.assert_array_equal(q[3], 0)
    assert scale[3] == 0
    atoms = dictionary_atoms(q, scale)
    np.testing.assert_allclose(np.linalg.norm(atoms[live], axis=1), 1, rtol=1e-6)
    # Each atom is its row of H on 255 levels of the row's peak.
    Hc = np.maximum(H, 0)
    expected = Hc[live] / Hc[live].max(axis=1, keepdims=True) * 255
    assert np.abs(q[live] - expected).max() <= 0.5 + 1e-9


def test_fit_codes_solves_nonnegative_least_squares():
    X, D, _ = _problem(n=40)
    W = fit_codes(X, D)
    reference = np.array(
        [nnls(D.T.astype(np.float64), x.astype(np.float64))[0] for x in X]
    )
    assert W.shape == reference.shape and W.min() >= 0
    np.testing.assert_allclose(W, reference, atol=2e-4)


def test_fit_codes_gives_an_empty_atom_no_weight():
    X, D, _ = _problem(n=40)
    D = D.copy()
    D[2] = 0
    W = fit_codes(X, D)
    np.testing.assert_array_equal(W[:, 2], 0)
    keep = [0, 1, 3, 4, 5]
    np.testing.assert_allclose(W[:, keep], fit_codes(X, D[keep]), atol=1e-5)


def test_code_grid_spans_all_but_the_largest_codes():
    W = np.random.default_rng(2).exponential(size=(500, 8)).astype(np.float32)
    step, levels = code_grid(W, 6)
    assert levels == 63
    assert step == float(np.float32(step))  # what the decoder reads back
    top = np.percentile(W, CODE_RANGE_PCT)
    assert step * levels == pytest.approx(top, rel=1e-6)
    assert code_grid(np.zeros((3, 2), np.float32), 4) == (1.0, 15)


def test_quantised_codes_beat_plain_rounding():
    X, D, _ = _problem()
    W = fit_codes(X, D)
    W_before = W.copy()
    step, levels = code_grid(W, 4)
    Q = quantise_codes(X, D, W, step, levels)
    np.testing.assert_array_equal(W, W_before)  # the caller's codes untouched
    assert Q.dtype.kind == "i" and Q.min() >= 0 and Q.max() <= levels
    rounded = np.clip(np.rint(W / step), 0, levels)
    err_q = np.linalg.norm(X - (Q * step) @ D)
    err_round = np.linalg.norm(X - (rounded * step) @ D)
    assert err_q < err_round


def test_fine_grid_keeps_the_unquantised_fit():
    X, D, _ = _problem(n=60)
    W = fit_codes(X, D)
    step, levels = code_grid(W, 16)
    Q = quantise_codes(X, D, W, step, levels)
    # On a 16-bit grid, quantising (with the free atoms re-fitted) costs next
    # to nothing over the least-squares fit.
    err_q = np.linalg.norm(X - (Q * step) @ D)
    assert err_q <= 1.001 * np.linalg.norm(X - W @ D)
