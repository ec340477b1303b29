"""The objective and the penalties against explicit formulas and scikit-learn.

``Regularization`` is compared with scikit-learn's own scaling
(``NMF._compute_regularization``), the penalties and layer terms with numpy
written out, each divergence term with scikit-learn's ``_beta_divergence``.
"""

import math

import numpy as np
import pytest
import torch
from sklearn.decomposition import NMF
from sklearn.decomposition._nmf import _beta_divergence

from sknmf._torch.objective import (
    Problem,
    Regularization,
    add_penalty_gradient,
    chain,
    error_of,
    layer_terms,
    normalize_rows,
    objective,
)

T = torch.from_numpy


def _deep(n=40, m=12, ranks=(5, 3), seed=0):
    rng = np.random.RandomState(seed)
    X = rng.rand(n, m) + 0.05
    widths = [m, *ranks[:-1]]
    Ws = [rng.rand(n, r) + 0.1 for r in ranks]
    Hs = [rng.rand(r, w) + 0.1 for r, w in zip(ranks, widths)]
    return X, Ws, Hs


@pytest.mark.parametrize(
    "alpha_W, alpha_H, l1_ratio",
    [(0.0, 0.0, 0.0), (0.1, 0.1, 0.5), (0.3, 0.0, 1.0), (0.2, 0.05, 0.0)],
)
def test_regularization_scales_as_sklearn(alpha_W, alpha_H, l1_ratio):
    X = np.random.RandomState(0).rand(17, 9)
    l1_W, l1_H, l2_W, l2_H = NMF(
        alpha_W=alpha_W, alpha_H=alpha_H, l1_ratio=l1_ratio
    )._compute_regularization(X)
    reg = Regularization(17, [9], alpha_W, alpha_H, l1_ratio)
    assert reg.l1_W == [pytest.approx(l1_W)]
    assert reg.l2_W == [pytest.approx(l2_W)]
    assert reg.l1_H == pytest.approx(l1_H)
    assert reg.l2_H == pytest.approx(l2_H)
    assert reg.is_zero == (alpha_W == 0 and alpha_H == 0)


def test_regularization_deep_widths():
    # alpha_W scaled by the width of what each code approximates, alpha_H by
    # the number of samples, for every layer.
    reg = Regularization(10, [12, 5, 3], alpha_W=0.2, alpha_H=0.1, l1_ratio=0.25)
    assert reg.l1_W == pytest.approx([12 * 0.05, 5 * 0.05, 3 * 0.05])
    assert reg.l2_W == pytest.approx([12 * 0.15, 5 * 0.15, 3 * 0.15])
    assert reg.l1_H == pytest.approx(10 * 0.1 * 0.25)
    assert reg.l2_H == pytest.approx(10 * 0.1 * 0.75)
    one = reg.layer(1)
    assert one.l1_W == pytest.approx([5 * 0.05]) and one.l2_W == pytest.approx([0.75])
    assert (one.l1_H, one.l2_H) == (reg.l1_H, reg.l2_H)


def test_penalty_is_the_explicit_sum():
    X, Ws, Hs = _deep()
    reg = Regularization(40, [12, 5], alpha_W=0.2, alpha_H=0.1, l1_ratio=0.3)
    expected_W = sum(
        reg.l1_W[l] * W.sum() + 0.5 * reg.l2_W[l] * (W**2).sum()
        for l, W in enumerate(Ws)
    )
    expected_H = sum(reg.l1_H * H.sum() + 0.5 * reg.l2_H * (H**2).sum() for H in Hs)
    Wt, Ht = [T(W) for W in Ws], [T(H) for H in Hs]
    assert float(reg.penalty_W(Wt)) == pytest.approx(expected_W, rel=1e-12)
    assert float(reg.penalty_H(Ht)) == pytest.approx(expected_H, rel=1e-12)
    assert float(reg.penalty(Wt, Ht)) == pytest.approx(expected_W + expected_H)


def test_penalty_H_is_differentiable():
    # Adam takes the penalty's gradient in H through autograd: l1 + l2 H.
    reg = Regularization(10, [4], alpha_W=0.0, alpha_H=0.3, l1_ratio=0.4)
    H = torch.rand(2, 4, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(reg.penalty_H([H]), [H])
    expected = reg.l1_H + reg.l2_H * H.detach()
    torch.testing.assert_close(g, expected)


def test_scaled_keeps_codes_and_shares_the_weights_penalty():
    reg = Regularization(100, [8, 4], alpha_W=0.2, alpha_H=0.1, l1_ratio=0.5)
    part = reg.scaled(0.25)
    # Codes: a per-row penalty, the same in any batch.
    assert part.l1_W == reg.l1_W and part.l2_W == reg.l2_W
    # Weights: a batch of a quarter of the rows carries a quarter of it, so
    # the batches of an epoch add up to the full-batch penalty.
    assert part.l1_H == pytest.approx(reg.l1_H / 4)
    assert part.l2_H == pytest.approx(reg.l2_H / 4)
    H = torch.rand(3, 8, dtype=torch.float64)
    assert 4 * float(part.penalty_H([H])) == pytest.approx(float(reg.penalty_H([H])))
    # The original is untouched and a full batch is the problem's own.
    assert reg.l1_H == pytest.approx(100 * 0.05)
    same = reg.scaled(1.0)
    assert (same.l1_H, same.l2_H, same.l1_W) == (reg.l1_H, reg.l2_H, reg.l1_W)


def test_add_penalty_gradient():
    rng = np.random.RandomState(0)
    den, M = rng.rand(3, 4), rng.rand(3, 4)
    got = add_penalty_gradient(T(den), 0.3, 0.7, T(M))
    np.testing.assert_allclose(got.numpy(), den + 0.3 + 0.7 * M)
    np.testing.assert_allclose(add_penalty_gradient(T(den), 0.0, 0.0, T(M)), den)
    # A broadcast denominator (a KL row) widens to M's shape with L2.
    row = rng.rand(1, 4)
    got = add_penalty_gradient(T(row), 0.0, 2.0, T(M))
    np.testing.assert_allclose(got.numpy(), row + 2.0 * M)


def test_chain():
    _, _, Hs = _deep(ranks=(6, 4, 2))
    Ht = [T(H) for H in Hs]
    assert chain(Ht, 0, 0) is None
    np.testing.assert_allclose(chain(Ht, 0, 1).numpy(), Hs[0])
    np.testing.assert_allclose(chain(Ht, 0, 3).numpy(), Hs[2] @ Hs[1] @ Hs[0])
    np.testing.assert_allclose(chain(Ht, 1, 3).numpy(), Hs[2] @ Hs[1])


@pytest.mark.parametrize("beta", [2.0, 1.0, 0.5, 0.0, 1.5])
def test_layer_terms_layer_centric(beta):
    X, Ws, Hs = _deep()
    terms = layer_terms(T(X), [T(W) for W in Ws], [T(H) for H in Hs], beta, "layer")
    expected = [
        _beta_divergence(X, Ws[0], Hs[0], beta),
        _beta_divergence(Ws[0], Ws[1], Hs[1], beta),
    ]
    assert [float(t) for t in terms] == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("beta", [2.0, 1.0, 0.5, 0.0, 1.5])
def test_layer_terms_data_centric(beta):
    X, Ws, Hs = _deep()
    terms = layer_terms(T(X), [T(W) for W in Ws], [T(H) for H in Hs], beta, "data")
    expected = [
        _beta_divergence(X, Ws[0], Hs[0], beta),
        _beta_divergence(X, Ws[1], Hs[1] @ Hs[0], beta),
    ]
    assert [float(t) for t in terms] == pytest.approx(expected, rel=1e-10)


def test_layer_terms_gram_form_only_on_request():
    X, Ws, Hs = _deep()
    Xt, Wt, Ht = T(X), [T(W) for W in Ws], [T(H) for H in Hs]
    exact = layer_terms(Xt, Wt, Ht, 2.0, "layer")
    gram = layer_terms(Xt, Wt, Ht, 2.0, "layer", sq_norm_X=float(np.sum(X * X)))
    assert [float(t) for t in gram] == pytest.approx([float(t) for t in exact])
    half_sq = 0.5 * np.sum((X - Ws[0] @ Hs[0]) ** 2)
    assert float(exact[0]) == pytest.approx(half_sq, rel=1e-12)
    # W1.T @ X given: the same value.
    WtX = T(Ws[0].T @ X)
    given = layer_terms(Xt, Wt, Ht, 2.0, "layer", np.sum(X * X), WtX)
    assert float(given[0]) == pytest.approx(half_sq, rel=1e-10)


@pytest.mark.parametrize("loss", ["layer", "data"])
@pytest.mark.parametrize("beta", [2.0, 1.0])
def test_objective_is_weighted_terms_plus_penalties(loss, beta):
    X, Ws, Hs = _deep()
    reg = Regularization(40, [12, 5], alpha_W=0.01, alpha_H=0.02, l1_ratio=0.5)
    problem = Problem(beta, loss, [1.0, 0.3], reg)
    total, terms = objective(T(X), [T(W) for W in Ws], [T(H) for H in Hs], problem)
    if loss == "layer":
        D = [
            _beta_divergence(X, Ws[0], Hs[0], beta),
            _beta_divergence(Ws[0], Ws[1], Hs[1], beta),
        ]
    else:
        D = [
            _beta_divergence(X, Ws[0], Hs[0], beta),
            _beta_divergence(X, Ws[1], Hs[1] @ Hs[0], beta),
        ]
    pen = sum(
        reg.l1_W[l] * Ws[l].sum() + 0.5 * reg.l2_W[l] * (Ws[l] ** 2).sum()
        for l in range(2)
    ) + sum(reg.l1_H * H.sum() + 0.5 * reg.l2_H * (H**2).sum() for H in Hs)
    assert [float(t) for t in terms] == pytest.approx(D, rel=1e-10)
    assert float(total) == pytest.approx(D[0] + 0.3 * D[1] + pen, rel=1e-10)
    # Without penalties: the weighted sum alone.
    total0, _ = objective(
        T(X), [T(W) for W in Ws], [T(H) for H in Hs], problem.with_reg(None)
    )
    assert float(total0) == pytest.approx(D[0] + 0.3 * D[1], rel=1e-10)


def test_objective_keeps_the_codes_dtype():
    X, Ws, Hs = _deep()
    f = torch.float32
    total, terms = objective(
        T(X).to(f),
        [T(W).to(f) for W in Ws],
        [T(H).to(f) for H in Hs],
        Problem(2.0, "layer", [1.0, 1.0]),
        sq_norm_X=float(np.sum(X * X)),
    )
    assert total.dtype == f and all(t.dtype == f for t in terms)


def test_error_of_is_sklearns_reconstruction_err_scale():
    # sqrt(2 * 0.5 ||X - WH||^2) = ||X - WH||_F, scikit-learn's reconstruction_err_.
    X, Ws, Hs = _deep()
    D = 0.5 * np.sum((X - Ws[0] @ Hs[0]) ** 2)
    assert error_of([1.0], [D]) == pytest.approx(np.linalg.norm(X - Ws[0] @ Hs[0]))
    assert error_of([2.0, 0.5], [torch.tensor(3.0), 4.0]) == pytest.approx(
        math.sqrt(2 * (6.0 + 2.0))
    )
    # Rounding may leave a tiny negative sum: never a NaN.
    assert error_of([1.0], [-1e-18]) == 0.0


def test_normalize_rows_keeps_the_product():
    rng = np.random.RandomState(0)
    W, H = rng.rand(7, 3), rng.rand(3, 5)
    H[1] = 0.0  # a zero row has no scale to take: left as it is
    W2, H2 = normalize_rows(T(W), T(H))
    np.testing.assert_allclose((W2 @ H2).numpy(), W @ H, rtol=1e-12)
    np.testing.assert_allclose(H2.sum(1).numpy()[[0, 2]], 1.0, rtol=1e-12)
    np.testing.assert_array_equal(H2[1].numpy(), 0.0)
    np.testing.assert_array_equal(W2[:, 1].numpy(), W[:, 1])


def test_problem_properties():
    reg = Regularization(10, [6, 3], alpha_W=0.1, alpha_H=0.2, l1_ratio=0.5)
    p = Problem(1.0, "data", [1.0, 0.5], reg)
    assert p.n_layers == 2 and p.deep
    assert not Problem(2.0).deep and Problem(2.0).n_layers == 1
    one = p.layer(1)
    # A layer's own problem: one layer-centric term of weight 1, its penalties.
    assert (one.beta, one.loss, one.weights) == (1.0, "layer", [1.0])
    assert one.reg.l1_W == [reg.l1_W[1]] and one.reg.l1_H == reg.l1_H
    assert p.layer(0).reg.l1_W == [reg.l1_W[0]]
    assert Problem(2.0).layer(0).reg is None
    q = p.with_reg(None)
    assert q.reg is None and q.weights == p.weights and q.weights is not p.weights
