"""DeepNMF against scikit-learn's NMF, closed-form facts and properties."""

import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits
from sklearn.decomposition import NMF
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from sknmf import DeepNMF, deep_nmf

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def digits():
    return load_digits().data.astype(np.float64)


def _planted(seed=0, n=300, m=60, r1=10, r2=4):
    """Data with an exact two-layer structure X = W2 H2 H1."""
    rng = np.random.RandomState(seed)
    H1 = rng.rand(r1, m) ** 4
    H2 = rng.rand(r2, r1) ** 4
    H2 /= H2.sum(1, keepdims=True)
    W2 = rng.rand(n, r2) ** 2 * 10
    return W2 @ H2 @ H1


# 1. scikit-learn's own estimator checks -------------------------------------------
@parametrize_with_checks(
    [
        DeepNMF(3, max_iter=10, random_state=0),
        DeepNMF((4, 3, 2), max_iter=10, random_state=0),
        DeepNMF(3, beta_loss="kullback-leibler", max_iter=10, random_state=0),
        DeepNMF(3, solver="adam", max_iter=10, random_state=0),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# 2. one layer == sklearn.decomposition.NMF ----------------------------------------
@pytest.mark.parametrize("beta", [2.0, 1.0, 0.5])
@pytest.mark.parametrize("regularised", [False, True])
def test_one_layer_matches_sklearn_mu_custom_init(digits, beta, regularised):
    rng = np.random.RandomState(0)
    k = 10
    W0 = rng.rand(digits.shape[0], k) + 0.1
    H0 = rng.rand(k, digits.shape[1]) + 0.1
    reg = dict(alpha_W=0.01, l1_ratio=0.5) if regularised else {}
    common = dict(init="custom", beta_loss=beta, max_iter=60, tol=0, **reg)
    ref = NMF(k, solver="mu", **common)
    ref.fit_transform(digits, W=W0.copy(), H=H0.copy())
    ours = DeepNMF(k, solver="mu", **common).fit(digits, W=W0.copy(), H=H0.copy())
    rel = abs(ours.reconstruction_err_ - ref.reconstruction_err_)
    assert rel / ref.reconstruction_err_ < 1e-4
    np.testing.assert_allclose(ours.components_, ref.components_, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("beta", [2.0, 1.0])
def test_one_layer_nndsvda_close_to_sklearn(digits, beta):
    ref = NMF(16, init="nndsvda", solver="mu", beta_loss=beta, max_iter=100, tol=0)
    ref.fit(digits)
    ours = DeepNMF(
        16, init="nndsvda", solver="mu", beta_loss=beta, max_iter=100, tol=0
    ).fit(digits)
    rel = abs(ours.reconstruction_err_ - ref.reconstruction_err_)
    assert rel / ref.reconstruction_err_ < 0.01


def test_transform_matches_sklearn_transform(digits):
    ref = NMF(12, solver="mu", init="nndsvda", max_iter=80, tol=0).fit(digits)
    ours = DeepNMF(12, solver="mu", init="nndsvda", max_iter=80, tol=0).fit(digits)
    # Same H in, same deterministic start: transform is the same solve.
    ours._store_weights([torch.from_numpy(ref.components_.copy())], np.float64)
    np.testing.assert_allclose(ours.transform(digits), ref.transform(digits), rtol=1e-6)


# 3. monotone multiplicative updates ---------------------------------------------
@pytest.mark.parametrize("beta", [2.0, 1.0, 0.0])
@pytest.mark.parametrize("n_components", [8, (8, 4)])
@pytest.mark.parametrize("loss", ["layer", "data"])
def test_objective_never_increases(digits, beta, n_components, loss):
    X = digits[:300] + (0.1 if beta <= 0 else 0.0)
    model = DeepNMF(
        n_components,
        beta_loss=beta,
        solver="mu",
        loss=loss,
        max_iter=40,
        tol=0,
        alpha_W=1e-4,
        l1_ratio=1.0,
        random_state=0,
    ).fit(X)
    losses = np.array(model.history_[:, "train_loss"])
    assert len(losses) == 40
    increases = np.diff(losses) / np.abs(losses[:-1])
    assert increases.max() <= 1e-12, increases.max()
    for H in model.layer_components_:
        assert (H >= 0).all()
    if isinstance(n_components, tuple):
        for H in model.layer_components_:
            np.testing.assert_allclose(H.sum(1), 1.0, rtol=1e-10)


# 4. what the deep model is for -----------------------------------------------------
def test_fine_tuning_improves_every_layer_and_data_centric_does_not():
    X = _planted()
    # Multiplicative pretraining, as in the deep NMF papers: HALS pretraining fits
    # layer 1 almost exactly with codes the second layer cannot follow, which
    # leaves fine-tuning little to trade. The fine-tuning is the default one
    # (deep HALS for the layer-centric loss, multiplicative updates for the
    # data-centric one).
    kw = dict(pretrain_solver="mu", max_iter=300, tol=0, random_state=0)
    layer = DeepNMF((10, 4), loss="layer", **kw).fit(X)
    assert all(
        post < pre
        for post, pre in zip(layer.layer_errors_, layer.pretrain_layer_errors_)
    ), (layer.pretrain_layer_errors_, layer.layer_errors_)
    # The planted two-layer structure is found: each layer's error falls by
    # more than 10x (multiplicative fine-tuning: by 1.5x and 3x).
    assert all(
        post < 0.1 * pre
        for post, pre in zip(layer.layer_errors_, layer.pretrain_layer_errors_)
    ), (layer.pretrain_layer_errors_, layer.layer_errors_)
    data = DeepNMF((10, 4), loss="data", **kw).fit(X)
    # Fitting the reconstructions only lets the deep layer drift away from W1 ≈ W2 H2.
    assert data.layer_errors_[1] > data.pretrain_layer_errors_[1]
    assert data.layer_errors_[1] > 2 * layer.layer_errors_[1]


# 5. determinism, consistency, persistence ----------------------------------------
@pytest.mark.parametrize("n_components", [6, (10, 6, 3)])
def test_fit_transform_consistent_and_reproducible(digits, n_components):
    X = digits[:200]
    a = DeepNMF(n_components, max_iter=30, random_state=3)
    Z1 = a.fit_transform(X)
    np.testing.assert_allclose(Z1, a.transform(X), rtol=1e-7, atol=1e-9)
    b = DeepNMF(n_components, max_iter=30, random_state=3).fit(X)
    for Ha, Hb in zip(a.layer_components_, b.layer_components_):
        np.testing.assert_array_equal(Ha, Hb)
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(c.transform(X[:50]), a.transform(X[:50]))


def test_random_init_depends_on_random_state(digits):
    a = DeepNMF(5, init="random", max_iter=5, random_state=0).fit(digits[:100])
    b = DeepNMF(5, init="random", max_iter=5, random_state=1).fit(digits[:100])
    assert not np.allclose(a.components_, b.components_)


# 6. online learning ----------------------------------------------------------------
def test_partial_fit_close_to_full_batch(digits):
    X = digits
    full = DeepNMF(16, max_iter=200, random_state=0).fit(X)
    full_err = np.linalg.norm(X - full.inverse_transform(full.transform(X)))
    online = DeepNMF(16, max_iter=100, random_state=0)
    batches = np.array_split(np.random.RandomState(0).permutation(len(X)), 10)
    for _ in range(3):
        for idx in batches:
            online.partial_fit(X[idx])
    online_err = np.linalg.norm(X - online.inverse_transform(online.transform(X)))
    assert online_err <= 1.10 * full_err, (online_err, full_err)


def test_minibatch_adam_learns(digits):
    X = digits[:600]
    model = DeepNMF(
        10, solver="adam", batch_size=100, max_epochs=30, lr=0.05, random_state=0
    ).fit(X)
    losses = model.history_[:, "train_loss"]
    assert losses[-1] < 0.8 * losses[0]
    assert (model.components_ >= 0).all()


# 7. sparse input ------------------------------------------------------------------
@pytest.mark.parametrize("beta", [2.0, 1.0])
@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sparse_equals_dense_one_layer(beta, fmt):
    rng = np.random.RandomState(0)
    X = rng.rand(80, 30)
    X[X < 0.7] = 0
    kw = dict(beta_loss=beta, max_iter=50, init="nndsvda", random_state=0)
    dense = DeepNMF(6, **kw).fit(X)
    sparse = DeepNMF(6, **kw).fit(sp.csr_matrix(X).asformat(fmt))
    np.testing.assert_allclose(
        sparse.components_, dense.components_, rtol=1e-6, atol=1e-9
    )
    np.testing.assert_allclose(
        sparse.transform(sp.csr_matrix(X)), dense.transform(X), rtol=1e-6, atol=1e-9
    )


@pytest.mark.parametrize("beta", [2.0, 1.0])
def test_sparse_equals_dense_deep(beta):
    rng = np.random.RandomState(1)
    X = rng.rand(80, 30)
    X[X < 0.7] = 0
    kw = dict(beta_loss=beta, max_iter=50, tol=0, init="nndsvda", random_state=0)
    dense = DeepNMF((6, 3), **kw).fit(X)
    sparse = DeepNMF((6, 3), **kw).fit(sp.csr_matrix(X))
    # Same algorithm, different summation order: agreement to rounding amplified
    # by 50 iterations of a nonconvex problem.
    assert sparse.reconstruction_err_ == pytest.approx(dense.reconstruction_err_, 1e-4)
    np.testing.assert_allclose(sparse.components_, dense.components_, atol=1e-3)
    np.testing.assert_allclose(
        sparse.transform(sp.csr_matrix(X)), dense.transform(X), rtol=0.05, atol=0.05
    )


# 8. model selection ----------------------------------------------------------------
def test_pipeline_grid_search_parallel(digits):
    X, y = digits[:400], load_digits().target[:400]
    pipe = Pipeline(
        [("nmf", DeepNMF(max_iter=30, random_state=0)), ("clf", LogisticRegression())]
    )
    grid = GridSearchCV(
        pipe, {"nmf__n_components": [8, (16, 8)]}, cv=2, n_jobs=2, error_score="raise"
    )
    grid.fit(X, y)
    assert grid.best_params_["nmf__n_components"] in (8, (16, 8))
    assert grid.score(X, y) > 0.8


def test_unsupervised_grid_search_uses_score(digits):
    X = digits[:300]
    grid = GridSearchCV(
        DeepNMF(max_iter=40, random_state=0), {"n_components": [2, 16]}, cv=2
    ).fit(X)
    # More components reconstruct held-out digits better: score is higher-is-better.
    assert grid.best_params_ == {"n_components": 16}
    assert (
        grid.cv_results_["mean_test_score"][1] > grid.cv_results_["mean_test_score"][0]
    )


# 9. bad input ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "X, match",
    [
        (-np.ones((5, 3)), "Negative values"),
        (np.array([[1.0, np.nan], [1.0, 2.0]]), "NaN"),
        (np.array([[1.0, np.inf], [1.0, 2.0]]), "infinity"),
        (np.empty((0, 3)), "0 sample"),
        (np.ones(4), "2D array"),
    ],
)
def test_bad_input(X, match):
    with pytest.raises(ValueError, match=match):
        DeepNMF(2).fit(X)


def test_increasing_ranks_rejected():
    with pytest.raises(ValueError, match="non-increasing"):
        DeepNMF((4, 8)).fit(np.ones((10, 10)))


def test_zeros_with_nonpositive_beta_rejected():
    X = np.ones((6, 4))
    X[0, 0] = 0
    with pytest.raises(ValueError, match="beta_loss <= 0"):
        DeepNMF(2, beta_loss="itakura-saito").fit(X)


def test_custom_init_shapes_checked():
    X = np.ones((6, 4))
    with pytest.raises(ValueError, match=r"wrong second dimension .*\(input W\)"):
        DeepNMF(2, init="custom").fit(X, W=np.ones((6, 3)), H=np.ones((2, 4)))
    with pytest.raises(ValueError, match="needs both W and H"):
        DeepNMF(2, init="custom").fit(X)
    with pytest.raises(ValueError, match=r"H\[1\]"):
        DeepNMF((3, 2), init="custom").fit(
            X,
            W=[np.ones((6, 3)), np.ones((6, 2))],
            H=[np.ones((3, 4)), np.ones((3, 3))],
        )


def test_cuda_absent_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="CUDA is not available"):
        DeepNMF(2, device="cuda").fit(np.ones((4, 3)))


def test_bad_parameters_named():
    with pytest.raises(ValueError, match="solver"):
        DeepNMF(2, solver="sgd").fit(np.ones((4, 3)))
    with pytest.raises(ValueError, match="layer_weights"):
        DeepNMF((3, 2), layer_weights=[1.0]).fit(np.ones((6, 4)))


def test_convergence_warning_when_max_iter_reached(digits):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        with pytest.raises(ConvergenceWarning):
            DeepNMF(8, max_iter=2, tol=1e-12).fit(digits[:100])


@pytest.mark.parametrize(
    "params",
    [
        {"n_components": 8},
        {"n_components": (8, 4)},
        {"n_components": 8, "beta_loss": "kullback-leibler"},
        {"n_components": (8, 4), "beta_loss": 0.5, "solver": "mu"},
        {"n_components": 8, "solver": "adam", "batch_size": 32, "max_epochs": 3},
    ],
)
@pytest.mark.parametrize("container", ["dense", "float32", "csr", "csc"])
def test_input_not_modified(digits, params, container):
    # The solvers read X through a tensor that shares its memory (no copy), so
    # every path must leave it untouched; read-only arrays must work unwarned.
    X = digits[:100] + 0.5
    X[:, ::7] = 0.0
    if container == "float32":
        X = X.astype(np.float32)
    elif container != "dense":
        X = sp.csr_matrix(X) if container == "csr" else sp.csc_matrix(X)
    arrays = [X] if not sp.issparse(X) else [X.data, X.indices, X.indptr]
    before = [a.copy() for a in arrays]
    for a in arrays:
        a.flags.writeable = False
    model = DeepNMF(**params, max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        model.fit_transform(X)
        model.transform(X)
        model.score(X)
        model.partial_fit(X)
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)


def test_training_error_in_gram_form_is_the_exact_error(digits):
    # Frobenius multiplicative training records its error from Gram products;
    # the exact per-layer errors of the fitted model must agree with it.
    model = DeepNMF((12, 6), solver="mu", max_iter=15, tol=0, random_state=0)
    model.fit(digits[:400])
    recorded = model.history_[-1, "error"]
    lam = model.layer_weights_
    exact = np.sqrt(np.sum(lam * np.square(model.layer_errors_)))
    assert recorded == pytest.approx(exact, rel=1e-9)


def test_float32_preserved(digits):
    X = digits[:100].astype(np.float32)
    model = DeepNMF((8, 4), max_iter=10, random_state=0)
    Z = model.fit_transform(X)
    assert Z.dtype == np.float32
    assert model.components_.dtype == np.float32
    assert model.inverse_transform(Z).dtype == np.float32


def test_deep_nmf_function(digits):
    W_list, H_list, n_iter = deep_nmf(
        digits[:100], n_components=(8, 4), max_iter=10, random_state=0
    )
    assert [W.shape for W in W_list] == [(100, 8), (100, 4)]
    assert [H.shape for H in H_list] == [(8, 64), (4, 8)]
    assert n_iter == 10
    for H in H_list:  # deep models keep unit row sums
        np.testing.assert_allclose(H.sum(1), 1.0, rtol=1e-8)
    X = digits[:100]
    # Each layer explains most of what it approximates (zero codes would give 100%).
    assert np.linalg.norm(X - W_list[0] @ H_list[0]) < 0.5 * np.linalg.norm(X)
    assert np.linalg.norm(W_list[0] - W_list[1] @ H_list[1]) < 0.5 * np.linalg.norm(
        W_list[0]
    )


def test_set_output_pandas(digits):
    pd = pytest.importorskip("pandas")
    model = DeepNMF(3, max_iter=5, random_state=0).set_output(transform="pandas")
    out = model.fit_transform(pd.DataFrame(digits[:50]))
    assert list(out.columns) == ["deepnmf0", "deepnmf1", "deepnmf2"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(2, 12),
    m=st.integers(2, 8),
    depth=st.integers(1, 3),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
    sparse_input=st.booleans(),
)
def test_property_shapes_dtypes_finite(n, m, depth, dtype, seed, sparse_input):
    rng = np.random.RandomState(seed)
    X = (rng.rand(n, m) * rng.randint(0, 2, size=(n, m))).astype(dtype)
    X[0, 0] = 1.0  # not all zeros
    ranks = tuple(range(depth + 1, 1, -1))[:depth] or (1,)
    ranks = tuple(min(r, m) for r in ranks)
    data = sp.csr_matrix(X) if sparse_input else X
    model = DeepNMF(ranks, max_iter=5, random_state=seed)
    Z = model.fit_transform(data)
    assert Z.shape == (n, ranks[-1])
    assert Z.dtype == dtype
    assert np.isfinite(Z).all() and (Z >= 0).all()
    assert np.isfinite(model.components_).all() and (model.components_ >= 0).all()
    R = model.inverse_transform(Z)
    assert R.shape == (n, m) and np.isfinite(R).all()


# skorch integration ----------------------------------------------------------------
def test_verbose_prints_progress_and_epoch_loss(digits, capsys):
    DeepNMF(4, max_iter=3, tol=0, verbose=1, random_state=0).fit(digits[:50])
    out = capsys.readouterr()
    text = out.out + out.err
    assert "train_loss" in text and "epoch" in text


def test_user_callbacks_pass_through_and_are_not_modified(digits):
    from skorch.callbacks import EarlyStopping

    stopper = EarlyStopping(monitor="train_loss", patience=2, threshold=0.5)
    state = repr(sorted(vars(stopper).items()))
    model = DeepNMF(8, max_iter=200, tol=0, callbacks=[stopper], random_state=0)
    model.fit(digits[:200])
    # A 50% relative improvement per epoch is soon out of reach: stopped early.
    assert 3 <= model.n_iter_ < 200
    assert repr(sorted(vars(stopper).items())) == state  # the user's copy is intact


def test_history_records_loss_per_epoch(digits):
    model = DeepNMF((8, 4), max_iter=7, tol=0, random_state=0).fit(digits[:100])
    assert len(model.history_) == 7 == model.n_iter_
    assert all(np.isfinite(model.history_[:, "train_loss"]))


def test_verbose_shows_progress_of_transform_and_partial_fit(digits, capsys):
    model = DeepNMF(4, max_iter=3, tol=0, random_state=0).fit(digits[:50])
    capsys.readouterr()
    model.set_params(verbose=1).transform(digits[:50])
    out = capsys.readouterr()
    assert "train_loss" in out.out + out.err
    DeepNMF(4, max_iter=3, tol=0, verbose=1, random_state=0).partial_fit(digits[:50])
    out = capsys.readouterr()
    assert "train_loss" in out.out + out.err


# 10. every parameter acts or raises, in fit and in partial_fit --------------------
class _CountEpochs:
    """A skorch callback whose effect can be seen after it was deep-copied."""

    calls = 0

    def __new__(cls):
        from skorch.callbacks import Callback

        class Counter(Callback):
            def on_epoch_end(self, net, **kwargs):
                _CountEpochs.calls += 1

        return Counter()


# parameter -> (settings where it matters, another value). device is checked
# by test_cuda_absent_is_a_clear_error and tests/test_cuda.py: it must move
# the computation, not change the result.
_PARAMETER_CASES = {
    "n_components": ({"n_components": 4}, 5),
    "beta_loss": ({}, "kullback-leibler"),
    "init": ({"init": "nndsvda"}, "random"),
    "solver": ({}, "mu"),
    "loss": ({"n_components": (6, 3)}, "data"),
    "layer_weights": ({"n_components": (6, 3)}, [1.0, 5.0]),
    "max_iter": ({"max_iter": 5, "tol": 0}, 9),
    "tol": ({"max_iter": 60}, 0.2),
    "pretrain_max_iter": ({"n_components": (6, 3), "max_iter": 20}, 3),
    "pretrain_solver": (
        {"n_components": (6, 3), "max_iter": 20, "pretrain_max_iter": 10},
        "mu",
    ),
    "alpha_W": ({}, 0.5),
    "alpha_H": ({"alpha_W": 0.5}, 0.0),
    "l1_ratio": ({"alpha_W": 0.5}, 1.0),
    "batch_size": ({}, 25),
    "max_epochs": ({"max_iter": 10, "tol": 0}, 4),
    "lr": ({"solver": "adam", "max_iter": 10}, 0.2),
    "forget_factor": ({"batch_size": 60, "solver": "mu", "max_iter": 10}, 0.1),
    "random_state": ({"init": "random"}, 7),
    "verbose": ({"max_iter": 3}, 1),
    "callbacks": ({"max_iter": 3}, "counter"),
}


def _observe(model, method, X, capsys):
    """Everything a parameter could change: factors, codes, iterations, output."""
    _CountEpochs.calls = 0
    if method == "fit":
        model.fit(X)
    else:
        model.partial_fit(X[:60]).partial_fit(X[60:])
    out = capsys.readouterr()
    return (
        [np.round(H, 10) for H in model.layer_components_],
        np.round(model.transform(X[:20]), 10).tolist(),
        getattr(model, "n_iter_", None),
        out.out + out.err,
        _CountEpochs.calls,
    )


def _same(a, b):
    (Ha, Wa, *rest_a), (Hb, Wb, *rest_b) = a, b
    same_H = len(Ha) == len(Hb) and all(
        x.shape == y.shape and np.array_equal(x, y) for x, y in zip(Ha, Hb)
    )
    return same_H and Wa == Wb and rest_a == rest_b


def test_every_parameter_is_covered():
    assert set(_PARAMETER_CASES) | {"device"} == set(DeepNMF().get_params())


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
@pytest.mark.parametrize("name", sorted(_PARAMETER_CASES))
def test_every_parameter_acts_or_raises(digits, capsys, name, method):
    X = digits[:120] / 16.0 + 0.01
    base, other = _PARAMETER_CASES[name]
    params = {"n_components": 4, "max_iter": 30, "random_state": 0, **base}
    if other == "counter":
        other = [_CountEpochs()]
    reference = _observe(DeepNMF(**params), method, X, capsys)
    changed = DeepNMF(**{**params, name: other})
    try:
        result = _observe(changed, method, X, capsys)
    except (ValueError, TypeError) as exc:
        assert name in str(exc), f"{name}: the error does not name it: {exc}"
        return
    assert not _same(reference, result), f"{name}={other!r} changed nothing"


def test_pretrain_max_iter_with_one_layer_raises(digits):
    with pytest.raises(ValueError, match="pretrain_max_iter"):
        DeepNMF(4, pretrain_max_iter=5).fit(digits[:50])


@pytest.mark.parametrize(
    "params,method",
    [
        ({"n_components": 4}, "fit"),
        ({"n_components": (6, 3), "pretrain_max_iter": 0}, "fit"),
        ({"n_components": (6, 3)}, "partial_fit"),
    ],
)
def test_pretrain_solver_where_nothing_is_pretrained_raises(digits, params, method):
    model = DeepNMF(pretrain_solver="mu", max_iter=5, **params)
    with pytest.raises(ValueError, match="pretrain_solver"):
        getattr(model, method)(digits[:50])


def test_pretrain_solver_checks_the_loss(digits):
    model = DeepNMF((6, 3), beta_loss="kullback-leibler", pretrain_solver="hals")
    with pytest.raises(ValueError, match="Frobenius"):
        model.fit(digits[:50] + 0.1)


def test_max_epochs_sets_full_batch_training(digits):
    model = DeepNMF(4, max_iter=50, max_epochs=7, tol=0, random_state=0)
    model.fit(digits[:100])
    assert model.n_iter_ == 7 == len(model.history_)


def test_partial_fit_honours_solver_layer_weights_and_custom_init(digits):
    X = digits[:200] / 16.0 + 0.01
    H0 = np.random.RandomState(0).rand(5, 64) + 0.1
    model = DeepNMF(5, init="custom", solver="mu", max_iter=20, random_state=0)
    model.partial_fit(X, H=H0)
    # One online multiplicative step from H0 on this batch, as scikit-learn's
    # MiniBatchNMF takes it (forget factor irrelevant on the first batch).
    W = model.transform(X)
    assert model._solver == "mu"
    assert not np.allclose(model.components_, H0)
    assert np.isfinite(W).all()
    with pytest.raises(ValueError, match="first call"):
        model.partial_fit(X, H=H0)
    deep = DeepNMF((6, 3), layer_weights=[1.0, 3.0], random_state=0).partial_fit(X)
    np.testing.assert_array_equal(deep.layer_weights_, [1.0, 3.0])


def test_partial_fit_encodes_batches_past_fifty_iterations(digits):
    # The batch's codes used to be capped at 50 iterations whatever max_iter said:
    # with tol=0, 50 and 300 iterations must now give different steps.
    X = digits[:100]

    def step(max_iter):
        model = DeepNMF(6, solver="mu", max_iter=max_iter, tol=0, random_state=0)
        return model.partial_fit(X).partial_fit(X).components_

    assert not np.allclose(step(50), step(300))


# 11. a lean fitted model ---------------------------------------------------------
def test_pickle_keeps_weights_not_training_codes():
    X = np.random.RandomState(0).rand(20000, 200).astype(np.float32)
    model = DeepNMF((64, 32), max_iter=5, tol=0, random_state=0).fit(X)
    size = len(pickle.dumps(model))
    weights = sum(H.nbytes for H in model.layer_components_)
    assert size <= 2 * weights + 200_000, (size, weights)
    assert all(W.shape[0] == 0 for W in model.net_.module_.W)
    assert not any(
        isinstance(v, np.ndarray) and v.shape[0] == X.shape[0]
        for v in vars(model).values()
    )


def test_partial_fit_after_fit_goes_on_from_the_fitted_weights(digits):
    X = digits / 16.0
    model = DeepNMF(8, max_iter=100, random_state=0).fit(X[:900])
    fitted = model.components_.copy()
    model.partial_fit(X[900:1000])
    step = np.linalg.norm(model.components_ - fitted) / np.linalg.norm(fitted)
    fresh = DeepNMF(8, max_iter=100, random_state=0).partial_fit(X[900:1000])
    jump = np.linalg.norm(fresh.components_ - fitted) / np.linalg.norm(fitted)
    # One online step moves the fitted weights a little, not back to an init.
    assert step < 0.5 * jump, (step, jump)
    assert model.n_steps_ == 1


# 12. bad input and failures leave clear errors and intact estimators -------------
@pytest.mark.parametrize("beta", [np.nan, np.inf, -np.inf])
def test_non_finite_beta_rejected(digits, beta):
    with pytest.raises(ValueError, match="beta_loss"):
        DeepNMF(3, beta_loss=beta).fit(digits[:20])


def test_inverse_transform_rejects_non_finite_codes(digits):
    model = DeepNMF(3, max_iter=5, random_state=0).fit(digits[:30])
    with pytest.raises(ValueError, match="NaN or infinity"):
        model.inverse_transform(np.full((2, 3), np.nan))


def test_n_components_auto_from_custom_H(digits):
    X = digits[:40]
    rng = np.random.RandomState(0)
    W, H = rng.rand(40, 5), rng.rand(5, 64)
    model = DeepNMF("auto", init="custom", max_iter=3).fit(X, W=W, H=H)
    assert model.n_components_ == 5
    assert DeepNMF("auto", max_iter=3).fit(X).n_components_ == 64


def test_failed_refit_leaves_the_previous_model(digits):
    from skorch.callbacks import Callback

    class Boom(Callback):
        def on_epoch_end(self, net, **kwargs):
            raise RuntimeError("boom")

    model = DeepNMF(3, max_iter=5, random_state=0).fit(digits[:30])
    before = model.components_.copy()
    with pytest.raises(RuntimeError, match="boom"):
        model.set_params(callbacks=[Boom()]).fit(np.ones((10, 7)))
    assert model.n_features_in_ == 64
    np.testing.assert_array_equal(model.components_, before)
    model.set_params(callbacks=None).transform(digits[:5])


def test_garbage_callback_is_a_clear_error(digits):
    with pytest.raises(TypeError, match="callbacks"):
        DeepNMF(3, callbacks=["not a callback"]).fit(digits[:20])


def test_l1_penalty_reaches_exact_zeros_with_minibatch_adam():
    X = np.random.RandomState(0).rand(200, 30)
    model = DeepNMF(
        6,
        solver="adam",
        batch_size=50,
        alpha_W=0.0,
        alpha_H=0.05,
        l1_ratio=1.0,
        lr=0.05,
        max_iter=30,
        random_state=0,
    ).fit(X)
    assert (model.components_ == 0).any()


@pytest.mark.parametrize("beta", ["frobenius", "kullback-leibler"])
@pytest.mark.parametrize("n_components", [3, (4, 3)])
@pytest.mark.parametrize("factor", [2.0**80, 2.0**-90, 1e300, 1e-300])
def test_extreme_magnitudes_are_fitted_at_a_safe_scale(beta, n_components, factor):
    # Unpenalised NMF is scale-equivariant: from codes scaled like X and the
    # same weights, the iterates keep the weights and scale the codes. Beyond
    # 2**±32 the fit runs on X / 2**k and returns the user's scale.
    rng = np.random.RandomState(0)
    X = rng.rand(40, 8) + 0.05
    ranks = (n_components,) if isinstance(n_components, int) else n_components
    widths = (8, *ranks[:-1])
    Ws = [rng.rand(40, r) + 0.1 for r in ranks]
    Hs = [rng.rand(r, w) + 0.1 for r, w in zip(ranks, widths)]
    if len(ranks) > 1:
        Hs = [H / H.sum(1, keepdims=True) for H in Hs]
    kw = dict(beta_loss=beta, init="custom", max_iter=30, tol=0)
    ref = DeepNMF(n_components, **kw).fit(X, W=Ws, H=Hs)
    model = DeepNMF(n_components, **kw).fit(
        X * factor, W=[W * factor for W in Ws], H=Hs
    )
    # Deep KL codes come near zero, where the divergences' absolute floor
    # (float32's eps, as scikit-learn's) is not scale-free: close, not equal.
    rtol = 1e-2 if beta != "frobenius" and len(ranks) > 1 else 1e-6
    np.testing.assert_allclose(model.components_, ref.components_, rtol=rtol)
    power = 1.0 if beta == "frobenius" else 0.5
    assert model.reconstruction_err_ == pytest.approx(
        ref.reconstruction_err_ * factor**power, rel=rtol
    )
    # Codes in the user's scale, as good as at the comfortable scale.
    codes = model.transform(X * factor) / factor
    assert np.isfinite(codes).all()
    err = np.linalg.norm(X - codes @ model.components_)
    ref_err = np.linalg.norm(X - ref.transform(X) @ ref.components_)
    assert err == pytest.approx(ref_err, rel=1e-3)


@pytest.mark.parametrize("factor", [1e19, 1e30, 1e-20])
def test_float32_beyond_its_comfortable_range(factor):
    X = (np.random.RandomState(0).rand(40, 8) * factor).astype(np.float32)
    model = DeepNMF((4, 3), max_iter=20, random_state=0)
    W = model.fit_transform(X)
    assert W.dtype == np.float32 and np.isfinite(W).all()
    rel = np.linalg.norm((X.astype(np.float64) - W @ model.components_) / factor)
    assert rel / np.linalg.norm(X.astype(np.float64) / factor) < 0.6


def test_float32_at_its_largest():
    X = np.random.RandomState(0).rand(20, 5).astype(np.float32)
    X *= np.finfo(np.float32).max
    model = DeepNMF(3, max_iter=5, random_state=0)
    W = model.fit_transform(X)
    assert np.isfinite(W).all() and np.isfinite(model.components_).all()


def test_deep_float32_tiny_example_does_not_overflow():
    X = np.array([[1, 0], [0, 0.4353224]], np.float32)
    W = DeepNMF((2, 2, 2), max_iter=5).fit_transform(X)
    assert np.isfinite(W).all()


def test_ctrl_c_stops_the_program_and_leaves_the_model(digits):
    import signal

    from skorch.callbacks import Callback

    class Interrupt(Callback):
        def on_epoch_end(self, net, **kwargs):
            if len(net.history) == 3:
                signal.raise_signal(signal.SIGINT)

    model = DeepNMF(4, max_iter=5, random_state=0).fit(digits[:60])
    before = model.components_.copy()
    with pytest.raises(KeyboardInterrupt):
        model.set_params(callbacks=[Interrupt()], max_iter=50).fit(digits[:80])
    np.testing.assert_array_equal(model.components_, before)


def test_small_problems_run_on_one_thread_and_restore_the_setting(digits):
    from skorch.callbacks import Callback

    seen = []

    class Threads(Callback):
        def on_epoch_end(self, net, **kwargs):
            seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        DeepNMF(4, max_iter=3, tol=0, callbacks=[Threads()]).fit(digits[:50])
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
