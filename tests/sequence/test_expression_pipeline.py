"""End to end: DeepNMF frame codes + ExpressionRNN on synthetic expression videos.

Subject-wise splits only (no face in both train and test). Data and model sizes are kept
small so each test takes seconds; the example script runs the full-size story.
"""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, GroupKFold, GroupShuffleSplit
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from sknmf import DeepNMF, ExpressionRNN, FrameEncoder
from sknmf.datasets import make_expression_videos

PAIR = ["smile-onset", "smile-offset"]

# DeepNMF's default 200 iterations are enough for these codes even where its relative
# tolerance is not met yet.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _time_average(codes):
    return codes.mean(axis=1)


@pytest.fixture(scope="module")
def split():
    # 72 subjects x 8 classes, 6 frames of 24x24 pixels; a third of the subjects held
    # out for testing.
    X, y, groups = make_expression_videos(
        576, n_frames=6, image_size=(24, 24), n_subjects=72, random_state=0
    )
    train, test = next(
        GroupShuffleSplit(1, test_size=1 / 3, random_state=0).split(X, y, groups)
    )
    assert not set(groups[train]) & set(groups[test])
    return X[train], y[train], X[test], y[test]


@pytest.fixture(scope="module")
def fitted_pipeline(split):
    X_train, y_train, _, _ = split
    pipe = Pipeline(
        [
            ("frames", FrameEncoder(DeepNMF(32, random_state=0))),
            ("rnn", ExpressionRNN(random_state=0)),
        ]
    )
    return pipe.fit(X_train, y_train)


def test_pipeline_accuracy_on_unseen_subjects(split, fitted_pipeline):
    _, _, X_test, y_test = split
    y_pred = fitted_pipeline.predict(X_test)
    # Seeds 0, 1, 2 of both models gave 0.984, 0.979, 0.990 (192 test videos; 0.979,
    # 0.979, 1.0 on the onset/offset pair) with the MLP path and the cross-validated
    # epochs; the order-blind baseline of the same codes gets 0.82-0.86.
    assert np.mean(y_pred == y_test) >= 0.96
    pair = np.isin(y_test, PAIR)
    assert np.mean(y_pred[pair] == y_test[pair]) >= 0.95


def test_order_blind_baseline_is_at_chance_on_onset_vs_offset(split, fitted_pipeline):
    # The same frame codes averaged over time cannot tell a smile that appears from
    # one that fades: the two classes have the same distribution of frames.
    X_train, y_train, X_test, y_test = split
    encoder = fitted_pipeline.named_steps["frames"]
    baseline = make_pipeline(
        FunctionTransformer(_time_average),
        StandardScaler(),
        LogisticRegression(max_iter=2000),
    )
    train_pair, test_pair = np.isin(y_train, PAIR), np.isin(y_test, PAIR)
    baseline.fit(encoder.transform(X_train[train_pair]), y_train[train_pair])
    accuracy = baseline.score(encoder.transform(X_test[test_pair]), y_test[test_pair])
    # 48 test videos: chance is 0.5 with a standard deviation of about 0.07.
    assert 0.3 <= accuracy <= 0.7
    # The same codes in order, through the fitted RNN, separate the pair.
    rnn_accuracy = np.mean(
        fitted_pipeline.predict(X_test[test_pair]) == y_test[test_pair]
    )
    assert rnn_accuracy >= 0.9


def test_grid_search_with_group_kfold_in_parallel():
    X, y, groups = make_expression_videos(
        36,
        n_frames=4,
        image_size=(12, 12),
        classes=["happy", "surprise", "sad"],
        n_subjects=6,
        random_state=0,
    )
    pipe = Pipeline(
        [
            ("frames", FrameEncoder(DeepNMF((8, 4), max_iter=20, random_state=0))),
            ("rnn", ExpressionRNN(hidden_size=8, max_epochs=5, random_state=0)),
        ]
    )
    grid = GridSearchCV(
        pipe,
        {
            "frames__transformer__n_components": [(8, 4), (6, 3)],
            "rnn__hidden_size": [8],
        },
        cv=GroupKFold(3),
        n_jobs=2,
    )
    grid.fit(X, y, groups=groups)
    assert grid.best_params_["frames__transformer__n_components"] in [(8, 4), (6, 3)]
    assert grid.predict(X).shape == (36,)


@pytest.mark.cuda
def test_pipeline_on_cuda_reaches_the_same_accuracy(split):
    X_train, y_train, X_test, y_test = split
    pipe = Pipeline(
        [
            ("frames", FrameEncoder(DeepNMF(32, device="cuda", random_state=0))),
            ("rnn", ExpressionRNN(device="cuda", random_state=0)),
        ]
    )
    y_pred = pipe.fit(X_train, y_train).predict(X_test)
    assert np.mean(y_pred == y_test) >= 0.95
    assert pipe.named_steps["rnn"].net_.module_.head.weight.is_cuda
