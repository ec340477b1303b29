"""Tests of ExpressionRNN: scikit-learn compatibility, ragged input, reproducibility."""

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.utils import compute_class_weight
from sklearn.utils.estimator_checks import parametrize_with_checks
from skorch.callbacks import EarlyStopping

from sknmf import ExpressionRNN


def _order_task(n=60, n_frames=6, n_features=3, seed=0):
    """Labels that only the order of the frames decides: rising vs falling feature 0."""
    rng = np.random.RandomState(seed)
    X = rng.rand(n, n_frames, n_features)
    y = np.where(X[:, -1, 0] > X[:, 0, 0], "rise", "fall")
    return X, y


def _small(**kwargs):
    params = dict(hidden_size=8, max_epochs=15, skip_n_inits=1, random_state=0)
    params.update(kwargs)
    return ExpressionRNN(**params)


def _expected_failed_checks(estimator):
    if estimator.inputs == "change":
        return {
            "check_classifiers_train": "scikit-learn's checks pass one-frame "
            "sequences (2-D X), whose change from their first frame is all zeros: "
            "nothing to learn; the inputs='frames' instance passes this check"
        }
    return {}


# One MLP in the path instead of three (the default): the checks fit dozens of
# models, and the ensemble's size changes no code path they exercise.
@parametrize_with_checks(
    [
        ExpressionRNN(hidden_size=16, max_epochs=20, skip_n_inits=1, random_state=0),
        ExpressionRNN(
            hidden_size=16,
            max_epochs=20,
            inputs="frames",
            motion=False,
            skip_n_inits=1,
            random_state=0,
        ),
    ],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def fitted():
    X, y = _order_task()
    return _small().fit(X, y), X, y


def test_learns_temporal_order():
    # Order alone decides the label: an RNN must beat chance clearly.
    X, y = _order_task(n=120)
    clf = ExpressionRNN(hidden_size=16, max_epochs=40, random_state=0).fit(X, y)
    X_test, y_test = _order_task(n=100, seed=1)
    assert clf.score(X_test, y_test) >= 0.85


def test_ragged_list_matches_each_sequence_alone(fitted):
    clf, _, _ = fitted
    rng = np.random.RandomState(1)
    ragged = [rng.rand(n, 3) for n in (1, 9, 3, 12, 5, 2, 7)]
    proba = clf.predict_proba(ragged)
    # Each sequence alone, as an unpadded 3-D array: no padding, no batch-mates.
    alone = np.vstack([clf.predict_proba(seq[None]) for seq in ragged])
    np.testing.assert_allclose(proba, alone, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(
        clf.predict(ragged), clf.classes_[alone.argmax(axis=1)]
    )
    # Batch composition and order do not matter either.
    order = rng.permutation(len(ragged))
    np.testing.assert_allclose(
        clf.predict_proba([ragged[i] for i in order]), proba[order], atol=1e-6
    )
    emb = clf.transform(ragged)
    emb_alone = np.vstack([clf.transform(seq[None]) for seq in ragged])
    np.testing.assert_allclose(emb, emb_alone, atol=1e-6)


def test_small_batches_give_same_predictions(fitted):
    clf, X, _ = fitted
    rng = np.random.RandomState(2)
    ragged = [rng.rand(n, 3) for n in (4, 11, 2, 8, 6)]
    small_batches = pickle.loads(pickle.dumps(clf)).set_params(batch_size=2)
    np.testing.assert_allclose(
        small_batches.predict_proba(ragged), clf.predict_proba(ragged), atol=1e-6
    )


def test_equal_length_list_equals_3d_array(fitted):
    clf, X, _ = fitted
    as_list = list(X[:10])
    np.testing.assert_allclose(
        clf.predict_proba(as_list), clf.predict_proba(X[:10]), atol=1e-7
    )
    np.testing.assert_array_equal(clf.predict(as_list), clf.predict(X[:10]))


def test_2d_input_is_one_frame_sequences():
    rng = np.random.RandomState(0)
    X = rng.rand(40, 4)
    y = (X[:, 0] > 0.5).astype(int)
    clf = _small().fit(X, y)
    np.testing.assert_allclose(
        clf.predict_proba(X), clf.predict_proba(X[:, None, :]), atol=1e-7
    )


def test_fit_on_ragged_list_equals_fit_on_array_when_lengths_agree():
    X, y = _order_task(n=40)
    a = _small().fit(X, y)
    b = _small().fit(list(X), y)
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), atol=1e-6)


def test_string_and_integer_labels_round_trip():
    X, y = _order_task(n=40)
    labels = np.where(y == "rise", "smile-onset", "smile-offset")
    clf = _small().fit(X, labels)
    assert set(clf.predict(X)) <= set(labels)
    np.testing.assert_array_equal(clf.classes_, ["smile-offset", "smile-onset"])
    ints = np.where(y == "rise", 7, 3)
    clf_int = _small().fit(X, ints)
    np.testing.assert_array_equal(clf_int.classes_, [3, 7])
    assert clf_int.predict(X).dtype == ints.dtype
    # Same encoded targets: the integer and the string model are the same network.
    np.testing.assert_allclose(
        clf.predict_proba(X), clf_int.predict_proba(X), atol=1e-7
    )


def test_predict_proba_rows_sum_to_one_in_classes_order():
    rng = np.random.RandomState(0)
    X = rng.rand(60, 5, 3)
    y = np.array(["c", "a", "b"])[np.argmax(X[:, -1], axis=1)]
    clf = _small().fit(X, y)
    proba = clf.predict_proba(X)
    assert proba.shape == (60, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(proba >= 0)
    np.testing.assert_array_equal(clf.classes_, ["a", "b", "c"])
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(axis=1)])


def test_pickle_keeps_predictions(fitted):
    clf, X, _ = fitted
    clone = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clone.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(clone.transform(X), clf.transform(X))


def test_same_random_state_same_model_and_global_rng_untouched():
    X, y = _order_task(n=40)
    state = torch.random.get_rng_state()
    a = _small(dropout=0.3, num_layers=2).fit(X, y)
    b = _small(dropout=0.3, num_layers=2).fit(X, y)
    # Dropout, shuffling and initialisation all used private generators.
    assert torch.equal(state, torch.random.get_rng_state())
    for pa, pb in zip(a.net_.module_.parameters(), b.net_.module_.parameters()):
        assert torch.equal(pa, pb)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    c = _small(dropout=0.3, num_layers=2, random_state=1).fit(X, y)
    assert not np.allclose(a.predict_proba(X), c.predict_proba(X))


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_cells_and_embedding_shape(cell, bidirectional):
    X, y = _order_task(n=20)
    clf = _small(cell=cell, bidirectional=bidirectional, num_layers=2, max_epochs=2)
    emb = clf.fit(X, y).transform(X)
    assert emb.shape == (20, 8 * (2 if bidirectional else 1))
    assert emb.dtype == np.float64
    assert clf.transform(X.astype(np.float32)).dtype == np.float32
    names = clf.get_feature_names_out()
    assert len(names) == emb.shape[1] and names[0] == "expressionrnn0"


def test_class_weight_balanced_matches_sklearn():
    X, y = _order_task(n=50)
    y = np.where(np.arange(50) < 40, "common", "rare")
    clf = _small(class_weight="balanced", max_epochs=1).fit(X, y)
    expected = compute_class_weight("balanced", classes=np.unique(y), y=y)
    np.testing.assert_allclose(clf.net_.criterion_.weight.numpy(), expected, rtol=1e-6)
    clf = _small(class_weight={"common": 1.0, "rare": 3.0}, max_epochs=1).fit(X, y)
    np.testing.assert_allclose(clf.net_.criterion_.weight.numpy(), [1.0, 3.0])
    # A label y never shows (a typo) is a clear error, not silently ignored.
    typo = {"common": 1.0, "rare": 3.0, "raer": 2.0}
    with pytest.raises(ValueError, match=r"class_weight names labels \['raer'\]"):
        _small(class_weight=typo, max_epochs=1).fit(X, y)


def test_balanced_class_weight_recovers_the_minority():
    # A skewed problem with overlapping classes: unweighted training favours the
    # majority; balanced weights must find more of the minority class.
    rng = np.random.RandomState(0)
    y = np.where(rng.rand(300) < 0.1, 1, 0)
    X = rng.normal(size=(300, 3, 2)) + 0.8 * y[:, None, None]
    plain = _small(max_epochs=20).fit(X, y)
    balanced = _small(max_epochs=20, class_weight="balanced").fit(X, y)
    recall_plain = (plain.predict(X)[y == 1] == 1).mean()
    recall_balanced = (balanced.predict(X)[y == 1] == 1).mean()
    assert recall_balanced > recall_plain


def test_verbose_prints_per_epoch_table(capsys):
    X, y = _order_task(n=20)
    _small(max_epochs=2, verbose=1, early_stopping=False).fit(X, y)
    out = capsys.readouterr().out
    assert "train_loss" in out and "train_acc" in out
    # The cross-validation reports its accuracy curve and its choice.
    _small(max_epochs=2, verbose=1).fit(X, y)
    assert (
        "3-fold cross-validated accuracy after 0..2 epochs" in capsys.readouterr().out
    )


def test_history_and_early_stopping_with_validation_split():
    X, y = _order_task(n=80)
    user_cb = EarlyStopping(patience=2, threshold=10.0)
    before = dict(vars(user_cb))
    clf = _small(max_epochs=50, validation_fraction=0.25, callbacks=[user_cb])
    clf.fit(X, y)
    # A huge improvement threshold stops training after `patience` epochs.
    assert clf.n_iter_ < 50
    assert {"train_loss", "train_acc", "valid_loss", "valid_acc"} <= set(
        clf.history_[-1]
    )
    assert vars(user_cb) == before  # the user's callback was copied, not used


@pytest.mark.parametrize(
    "X, match",
    [
        (np.zeros(5), "2D array"),
        (np.zeros((4, 3, 2, 2)), "feature vectors"),
        ([np.zeros((3, 2)), np.zeros((4, 5))], "same shape"),
        ([np.zeros((3, 2)), np.zeros((0, 2))], r"X\[1\] is an empty sequence"),
        (np.zeros((4, 0, 2)), "0 frames"),
        (np.full((4, 3, 2), np.nan), "NaN"),
        ([np.zeros((3, 2)), np.array([[0.0, np.inf]])], "infinity"),
        ([np.zeros((3, 2)), np.zeros(2)], "2D array"),
    ],
)
def test_bad_input_is_a_clear_error(X, match):
    n = len(X)
    with pytest.raises(ValueError, match=match):
        _small().fit(X, np.arange(n) % 2)


def test_single_class_and_mismatched_features():
    X, _ = _order_task(n=10)
    with pytest.raises(ValueError, match="at least 2 classes"):
        _small().fit(X, np.zeros(10))
    clf = _small(max_epochs=1).fit(X, np.arange(10) % 2)
    with pytest.raises(ValueError, match="4 features per frame.*expecting 3"):
        clf.predict(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="y has 9 labels but X has 10 sequences"):
        _small().fit(X, np.arange(9) % 2)


def test_cuda_request_without_cuda_is_clear():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    X, y = _order_task(n=10)
    with pytest.raises(ValueError, match="CUDA is not available"):
        _small(device="cuda").fit(X, y)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    X, y = _order_task(n=40)
    cpu = _small().fit(X, y)
    gpu = _small(device="cuda").fit(X, y)
    np.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(X), atol=1e-3)


@settings(max_examples=8, deadline=None)
@given(
    n_seq=st.integers(2, 6),
    lengths=st.lists(st.integers(1, 5), min_size=6, max_size=6),
    n_features=st.integers(1, 3),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_shapes_and_dtypes_property(n_seq, lengths, n_features, dtype):
    rng = np.random.RandomState(0)
    X = [rng.rand(lengths[i], n_features).astype(dtype) for i in range(n_seq)]
    y = np.arange(n_seq) % 2
    clf = ExpressionRNN(hidden_size=4, max_epochs=1, random_state=0).fit(X, y)
    assert clf.predict(X).shape == (n_seq,)
    assert clf.predict_proba(X).shape == (n_seq, 2)
    emb = clf.transform(X)
    assert emb.shape == (n_seq, 4) and emb.dtype == dtype
    assert clf.n_features_in_ == n_features


# inputs relative to the first frame, standardisation, regularisation ------------------


def _jump_task(n=160, n_features=8, seed=0):
    """A jump in a random direction appears after frame 0 (onset) or frame 2 (offset).

    Each sequence starts from its own random level (a "person"), much larger than the
    jump; only when the jump happens tells the classes apart.
    """
    rng = np.random.RandomState(seed)
    person = 5.0 * rng.rand(n, 1, n_features)
    jump = rng.normal(size=(n, 1, n_features))
    onset = rng.rand(n) < 0.5
    steps = np.where(onset[:, None], [0, 1, 1, 1], [0, 0, 0, 1])[:, :, None]
    noise = 0.05 * rng.normal(size=(n, 4, n_features))
    X = person + steps * jump + noise
    return X, np.where(onset, "onset", "offset")


def test_change_inputs_ignore_each_sequence_own_offset(fitted):
    # inputs="change" (with motion) reads differences only: adding a constant
    # vector to every frame of a sequence leaves its prediction unchanged.
    clf, X, _ = fitted
    shifted = X + np.random.RandomState(3).normal(size=(len(X), 1, X.shape[2]))
    np.testing.assert_allclose(
        clf.predict_proba(shifted), clf.predict_proba(X), atol=1e-5
    )
    frames = _small(inputs="frames", skip=False).fit(*_order_task())
    assert not np.allclose(frames.predict_proba(shifted), frames.predict_proba(X))


def test_motion_features_find_when_the_jump_happens():
    X, y = _jump_task()
    X_test, y_test = _jump_task(seed=1)
    # Seeds 0-2 of the model: 1.0 with the defaults, 0.97 without motion, and
    # 0.52-0.55 with inputs="frames", motion=False (the per-sequence levels hide it).
    clf = ExpressionRNN(hidden_size=16, max_epochs=30, random_state=0).fit(X, y)
    assert clf.score(X_test, y_test) >= 0.9
    # The path (last minus first: the jump, in a random direction) cannot tell the
    # classes apart; the cross-validation sees it and trains the recurrence.
    assert clf.cv_accuracy_[0] < 0.7 and clf.n_iter_ > 0
    assert clf.cv_accuracy_[clf.n_iter_] >= 0.9
    assert len(clf.history_) == len(clf.cv_accuracy_) - 1
    np.testing.assert_allclose(clf.history_[:, "valid_acc"], clf.cv_accuracy_[1:])
    # The final network is a plain fit for the chosen number of epochs.
    plain = ExpressionRNN(
        hidden_size=16, max_epochs=clf.n_iter_, early_stopping=False, random_state=0
    ).fit(X, y)
    np.testing.assert_allclose(
        clf.predict_proba(X_test), plain.predict_proba(X_test), rtol=0, atol=1e-6
    )


def test_feature_standardisation_matches_the_change_statistics():
    X, y = _order_task(n=40)
    clf = _small(max_epochs=1, motion=False).fit(X, y)
    change = (X - X[:, :1]).reshape(-1, X.shape[2])
    std = change.std(axis=0)
    std = np.maximum(std, 0.1 * np.sqrt(np.mean(std**2)))
    np.testing.assert_allclose(clf.input_mean_, change.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(clf.input_scale_, 1.0 / std, rtol=1e-10)
    # The legacy boolean: True is one global scalar, False no scaling.
    glob = _small(max_epochs=1, inputs="frames", motion=False, scale_inputs=True)
    glob.fit(X, y)
    np.testing.assert_allclose(glob.input_scale_, 1.0 / X.std())
    none = _small(max_epochs=1, scale_inputs=False).fit(X, y)
    assert np.all(none.input_scale_ == 1.0) and np.all(none.input_mean_ == 0.0)
    both = _small(max_epochs=1, inputs="both").fit(X, y)
    assert both.input_scale_.shape == (2 * X.shape[2] + 2,)


def test_weight_decay_and_early_stopping():
    X, y = _order_task(n=80)
    clf = _small(weight_decay=0.01, optimizer="adamw", max_epochs=2).fit(X, y)
    assert clf.net_.optimizer_.param_groups[0]["weight_decay"] == 0.01
    stopped = _small(early_stopping=True, n_iter_no_change=2, max_epochs=200, cv=None)
    stopped.fit(X, y)
    losses = stopped.history_[:, "valid_loss"]
    # The choosing run stopped `patience` epochs after its best epoch ...
    best = int(np.argmin(losses))
    assert len(losses) < 200 and len(losses) - 1 - best == 2
    # ... and the final network trained on every sequence for that many epochs.
    assert stopped.n_iter_ == best + 1 == len(stopped.net_.history)
    refit = _small(early_stopping=False, max_epochs=best + 1).fit(X, y)
    np.testing.assert_allclose(
        stopped.predict_proba(X), refit.predict_proba(X), rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(stopped.skip_mean_, refit.skip_mean_)


def test_small_nets_leave_the_callers_thread_setting_alone():
    X, y = _order_task(n=20)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        clf = _small(max_epochs=1).fit(X, y)
        assert torch.get_num_threads() == 2
        clf.predict(X)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def _sigint_at_epoch(epoch):
    import signal

    from skorch.callbacks import Callback

    class Interrupt(Callback):
        def on_epoch_end(self, net, **kwargs):
            if len(net.history) == epoch:
                signal.raise_signal(signal.SIGINT)

    return Interrupt()


def test_ctrl_c_stops_the_program_not_just_training():
    # skorch turns every KeyboardInterrupt into "stop training"; a user's Ctrl-C
    # must still reach the program.
    X, y = _order_task(n=20)
    with pytest.raises(KeyboardInterrupt):
        _small(
            max_epochs=50, early_stopping=False, callbacks=[_sigint_at_epoch(2)]
        ).fit(X, y)
    # A callback's own stop (skorch's convention) is not an interrupt.
    model = _small(
        max_epochs=50,
        early_stopping=False,
        callbacks=[EarlyStopping(monitor="train_loss", patience=1, threshold=10.0)],
    ).fit(X, y)
    assert model.n_iter_ < 50


def test_concurrent_predictions_agree_with_sequential_ones(fitted):
    from concurrent.futures import ThreadPoolExecutor

    model, X, _ = fitted
    expected = model.predict_proba(X)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: model.predict_proba(X), range(40)))
    for result in results:
        np.testing.assert_array_equal(result, expected)
    assert not model.net_.module_.training


def test_linear_path_is_scikit_learns_last_minus_first_logistic_regression():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.RandomState(0)
    X = rng.rand(60, 4, 3)
    change = X[:, -1] - X[:, 0]
    y3 = np.array(["c", "a", "b"])[np.argmax(change, axis=1)]
    for y in (y3, np.where(change[:, 0] > 0, "up", "down")):
        clf = _small(max_epochs=1, skip_C=0.5, skip_hidden=None).fit(X, y)
        ref = make_pipeline(StandardScaler(), LogisticRegression(C=0.5)).fit(change, y)
        scaler, logistic = ref[0], ref[1]
        np.testing.assert_allclose(clf.skip_mean_, scaler.mean_, rtol=1e-10)
        np.testing.assert_allclose(clf.skip_scale_, 1 / scaler.scale_, rtol=1e-10)
        coef, intercept = logistic.coef_, logistic.intercept_
        if len(logistic.classes_) == 2:
            coef = np.vstack([np.zeros(3), coef])
            intercept = np.r_[0.0, intercept]
        np.testing.assert_allclose(clf.skip_coef_, coef, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(clf.skip_intercept_, intercept, atol=1e-6)
        # The network adds the path's logits through a fixed identity.
        buffers = clf.net_.module_.state_dict()
        np.testing.assert_array_equal(buffers["skip_weight"], np.eye(len(coef)))
    # Ragged sequences: the linear path reads each one's own last and first frame.
    ragged = [rng.rand(n, 3) for n in (2, 5, 3, 4) * 10]
    labels = np.array([("a", "b")[int(s[-1, 1] > s[0, 1])] for s in ragged])
    clf = _small(max_epochs=1, skip_hidden=None).fit(ragged, labels)
    ragged_change = np.array([s[-1] - s[0] for s in ragged])
    np.testing.assert_allclose(clf.skip_mean_, ragged_change.mean(axis=0))


def test_skip_false_has_no_linear_path():
    X, y = _order_task(n=30)
    clf = _small(skip=False, max_epochs=2).fit(X, y)
    assert clf.net_.module_.n_skip == 0 and not hasattr(clf, "skip_coef_")


def test_mixed_string_and_number_labels_are_a_clear_type_error():
    X, _ = _order_task(n=20)
    y = np.array(["a", 1] * 10, dtype=object)
    with pytest.raises(TypeError, match=r"Mix of label input types \(string and"):
        _small(max_epochs=1).fit(X, y)
    # Objects of one kind are fine, as in scikit-learn.
    clf = _small(max_epochs=1).fit(X, np.array(["a", "b"] * 10, dtype=object))
    assert list(clf.classes_) == ["a", "b"]


@pytest.mark.parametrize("bad", [-1.0, np.nan, np.inf, "heavy"])
def test_bad_class_weight_values_are_a_clear_error(bad):
    X, _ = _order_task(n=20)
    y = np.array(["a", "b"] * 10)
    with pytest.raises(ValueError, match="class_weight must map labels to finite"):
        _small(max_epochs=1, class_weight={"a": bad, "b": 1.0}).fit(X, y)


def test_float64_beyond_float32_range_gives_finite_scale_free_results():
    X, y = _order_task(n=40)
    X_test, _ = _order_task(n=20, seed=1)
    # Peak magnitude 1, so that a factor can take the data to float64's largest
    # values, where the power of two bringing them back near 1 is one past
    # float64's range (2**1024) unless clamped.
    peak = max(np.abs(X).max(), np.abs(X_test).max())
    X, X_test = X / peak, X_test / peak
    reference = _small().fit(X, y)
    for factor in (1e300, 1e-300, 2.0**100, 0.99 * np.finfo(np.float64).max):
        huge = _small().fit(X * factor, y)
        proba = huge.predict_proba(X_test * factor)
        assert np.all(np.isfinite(proba))
        # Standardised inputs do not depend on the units: same model, same answers.
        np.testing.assert_allclose(
            proba, reference.predict_proba(X_test), rtol=0, atol=1e-5
        )
        assert np.all(np.isfinite(huge.transform(X_test * factor)))
    # A model fitted at scale 1 cannot read 1e300 in float32: a clear error.
    with pytest.raises(ValueError, match="exceed float32's range"):
        reference.predict_proba(X_test * 1e300)
    with pytest.raises(ValueError, match="exceed float32's range"):
        _small(scale_inputs="none", skip=False).fit(X * 1e300, y)


def _boom():
    """A skorch callback that fails at the end of the first training epoch."""
    from skorch.callbacks import Callback

    class Boom(Callback):
        def on_epoch_end(self, net, **kwargs):
            raise RuntimeError("boom")

    return Boom()


def test_failed_refit_leaves_the_previous_model_intact():
    X, y = _order_task(n=30)
    clf = _small(max_epochs=3, early_stopping=False).fit(X, y)
    before = {k: v for k, v in vars(clf).items() if k.endswith("_")}
    proba = clf.predict_proba(X)
    rng = np.random.RandomState(1)
    X5 = rng.rand(30, 4, 5)
    clf.set_params(callbacks=[_boom()])
    with pytest.raises(RuntimeError, match="boom"):
        clf.fit(X5, np.array(["x", "y", "z"] * 10))
    after = {k: v for k, v in vars(clf).items() if k.endswith("_")}
    assert set(after) == set(before)
    assert all(after[k] is before[k] for k in before)
    assert clf.n_features_in_ == 3
    np.testing.assert_array_equal(clf.predict_proba(X), proba)
    with pytest.raises(ValueError, match="expecting 3 features"):
        clf.predict(X5)
    # A failed first fit leaves the estimator unfitted.
    from sklearn.exceptions import NotFittedError

    fresh = _small(early_stopping=False, callbacks=[_boom()])
    with pytest.raises(RuntimeError, match="boom"):
        fresh.fit(X, y)
    assert not [k for k in vars(fresh) if k.endswith("_")]
    with pytest.raises(NotFittedError):
        fresh.predict(X)


def test_one_standard_error_rule_by_hand():
    from sknmf.sequence._expression_rnn import fewest_epochs_within_one_se

    n = 100
    correct = np.zeros((4, n))
    correct[0, :80] = 1  # 0.80
    correct[1, :90] = 1  # 0.90
    correct[2, :88] = correct[2, 90:94] = 1  # 0.92, the best: 4 won, 2 lost over 1
    correct[3, :85] = 1
    ones = np.ones(n)
    # Over epoch 0 the best gains 0.12 per sequence, se = std(d, ddof=1) / 10 = 0.033:
    # a real gain. Over epoch 1 it gains 0.02, se 0.025: within the noise.
    epochs, accuracy = fewest_epochs_within_one_se(correct, ones)
    assert epochs == 1
    np.testing.assert_allclose(accuracy, [0.80, 0.90, 0.92, 0.85])
    # By hand: the paired standard error of epoch 2 over epoch 1.
    d = correct[2] - correct[1]
    np.testing.assert_allclose(
        [d.mean(), d.std(ddof=1) / 10], [0.02, 0.0245], atol=5e-4
    )
    # A clear gain is kept; equal accuracies keep the fewest epochs.
    assert fewest_epochs_within_one_se(correct[[0, 2]], ones)[0] == 1
    assert fewest_epochs_within_one_se(correct[[1, 1, 1]], ones)[0] == 0
    assert fewest_epochs_within_one_se(correct[[0, 0, 2]], ones, first=1)[0] == 2
    # Weights: only the sequences of weight 0 differ, so epoch 0 is as good.
    w = np.r_[np.ones(80), np.zeros(20)]
    assert fewest_epochs_within_one_se(correct, w)[0] == 0


def _separable_task(n=60, seed=0):
    """The last-minus-first change of feature 0 is +-(0.5..1.5): the path alone."""
    rng = np.random.RandomState(seed)
    X = rng.rand(n, 4, 3)
    up = rng.rand(n) < 0.5
    X[:, -1, 0] = X[:, 0, 0] + np.where(up, 1, -1) * (0.5 + rng.rand(n))
    return X, np.where(up, "up", "down")


def test_path_alone_is_scikit_learns_mlp_ensemble():
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    X, y = _separable_task()
    X_test, _ = _separable_task(seed=1)
    clf = _small(skip_C=0.5, skip_n_inits=2).fit(X, y)
    # The path is perfect on every held-out fold: no epoch can beat it.
    assert clf.cv_accuracy_[0] == 1.0 and clf.n_iter_ == 0
    change = X[:, -1] - X[:, 0]
    scaler = StandardScaler().fit(change)
    np.testing.assert_allclose(clf.skip_mean_, scaler.mean_, rtol=1e-10)
    proba = 0.0
    for model in clf.skip_estimators_:
        ref = MLPClassifier(
            (64,), alpha=2.0, max_iter=2000, random_state=model.random_state
        ).fit(scaler.transform(change), np.searchsorted(clf.classes_, y))
        proba = proba + ref.predict_proba(
            scaler.transform(X_test[:, -1] - X_test[:, 0])
        )
    # Zero epochs: the untrained read-out adds nothing to the path's log-probabilities.
    np.testing.assert_allclose(clf.predict_proba(X_test), proba / 2, rtol=0, atol=1e-6)
    assert len({m.random_state for m in clf.skip_estimators_}) == 2
    # Class weights reach the MLPs as sample weights.
    weighted = _small(skip_n_inits=1, class_weight={"up": 3.0, "down": 1.0}).fit(X, y)
    (model,) = weighted.skip_estimators_
    ref = MLPClassifier(
        (64,), alpha=1.0, max_iter=2000, random_state=model.random_state
    ).fit(
        scaler.transform(change),
        np.searchsorted(clf.classes_, y),
        sample_weight=np.where(y == "up", 3.0, 1.0),
    )
    for a, b in zip(model.coefs_, ref.coefs_, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"skip_hidden": 0}, "skip_hidden"),
        ({"skip_hidden": 2.5}, "skip_hidden"),
        ({"skip_n_inits": 0}, "skip_n_inits"),
        ({"cv": 1}, "'cv'"),
        ({"skip_C": 0.0}, "skip_C"),
    ],
)
def test_bad_path_and_cv_parameters_are_clear_errors(params, match):
    X, y = _order_task(n=20)
    with pytest.raises(ValueError, match=match):
        _small(**params).fit(X, y)
