"""Tests of FrameEncoder against the wrapped transformer applied to stacked frames."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from sknmf import DeepNMF, FrameEncoder


@parametrize_with_checks(
    [
        FrameEncoder(PCA()),
        FrameEncoder(DeepNMF(max_iter=30, tol=0, random_state=0)),
        FrameEncoder(DeepNMF((3, 2), max_iter=20, tol=0, random_state=0)),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


class ImageRows(TransformerMixin, BaseEstimator):
    """Test transformer that takes image batches and emits one row per image row."""

    def fit(self, X, y=None):
        self.image_shape_ = np.asarray(X).shape[1:]
        return self

    def transform(self, X):
        X = np.asarray(X)
        assert X.ndim == 3, "expects a batch of images"
        return X.reshape(-1, X.shape[2])

    def inverse_transform(self, X):
        return np.asarray(X).reshape(-1, *self.image_shape_)

    def get_feature_names_out(self, input_features=None):
        return np.asarray(
            [f"col{j}" for j in range(self.image_shape_[1])], dtype=object
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags


@pytest.fixture
def videos():
    rng = np.random.RandomState(0)
    return rng.rand(5, 7, 6, 4)  # 5 sequences, 7 frames of 6x4 pixels


def test_vector_frames_match_transformer_on_stacked_frames():
    rng = np.random.RandomState(0)
    X = rng.rand(6, 5, 8)
    codes = FrameEncoder(PCA(3)).fit(X).transform(X)
    ref = PCA(3).fit(X.reshape(-1, 8)).transform(X.reshape(-1, 8))
    assert codes.shape == (6, 5, 3)
    np.testing.assert_allclose(codes, ref.reshape(6, 5, 3), atol=1e-12)


def test_image_frames_are_flattened_for_plain_transformers(videos):
    enc = FrameEncoder(PCA(4)).fit(videos)
    flat = videos.reshape(-1, 24)
    ref = PCA(4).fit(flat).transform(flat).reshape(5, 7, 4)
    np.testing.assert_allclose(enc.transform(videos), ref, atol=1e-12)
    assert enc.frame_shape_ == (6, 4) and enc.n_features_in_ == 24


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_deep_nmf_frames_match_deep_nmf_on_stacked_frames(videos):
    nmf = DeepNMF((6, 3), max_iter=40, random_state=0)
    enc = FrameEncoder(nmf)
    codes = enc.fit_transform(videos)
    ref = clone(nmf).fit_transform(videos.reshape(-1, 24))
    np.testing.assert_allclose(codes, ref.reshape(5, 7, 3), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(enc.transform(videos), codes, rtol=1e-5, atol=1e-7)
    back = enc.inverse_transform(codes)
    assert back.shape == videos.shape
    np.testing.assert_allclose(
        back.reshape(-1, 24), enc.transformer_.inverse_transform(ref), rtol=1e-5
    )
    assert nmf.__dict__ == DeepNMF((6, 3), max_iter=40, random_state=0).__dict__


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_float32_frames_stay_float32_with_deep_nmf(videos):
    codes = FrameEncoder(DeepNMF(3, max_iter=10, random_state=0)).fit_transform(
        videos.astype(np.float32)
    )
    assert codes.dtype == np.float32


def test_ragged_lists_in_ragged_lists_out(videos):
    rng = np.random.RandomState(1)
    ragged = [rng.rand(n, 6, 4) for n in (2, 9, 1)]
    enc = FrameEncoder(PCA(3)).fit(ragged)
    out = enc.transform(ragged)
    assert isinstance(out, list) and [o.shape for o in out] == [(2, 3), (9, 3), (1, 3)]
    for seq, codes in zip(ragged, out):
        np.testing.assert_allclose(
            codes, enc.transformer_.transform(seq.reshape(len(seq), -1)), atol=1e-12
        )
    back = enc.inverse_transform(out)
    assert [b.shape for b in back] == [(2, 6, 4), (9, 6, 4), (1, 6, 4)]


def test_inverse_transform_round_trip_is_exact_with_full_pca(videos):
    enc = FrameEncoder(PCA()).fit(videos)
    np.testing.assert_allclose(
        enc.inverse_transform(enc.transform(videos)), videos, atol=1e-10
    )


def test_image_transformer_gets_images_and_several_rows_per_frame(videos):
    inner = Pipeline([("rows", ImageRows()), ("pca", PCA(2))])
    enc = FrameEncoder(inner).fit(videos)
    codes = enc.transform(videos)
    # Each 6x4 frame becomes 6 rows of 2 codes, concatenated per frame.
    assert enc.rows_per_frame_ == 6 and codes.shape == (5, 7, 12)
    ref = PCA(2).fit(videos.reshape(-1, 4)).transform(videos.reshape(-1, 4))
    np.testing.assert_allclose(codes, ref.reshape(5, 7, 12), atol=1e-12)
    assert enc.get_feature_names_out()[:3].tolist() == ["pca0_r0", "pca1_r0", "pca0_r1"]
    back = enc.inverse_transform(codes)
    assert back.shape == videos.shape
    # frames="flat" overrides the tag: ImageRows then sees 2-D input and fails.
    with pytest.raises(AssertionError, match="batch of images"):
        FrameEncoder(inner, frames="flat").fit(videos)


def test_supervised_transformer_sees_labels_repeated_over_frames():
    rng = np.random.RandomState(0)
    y = np.array(["a", "b", "c"] * 4)
    X = rng.rand(12, 5, 4) + (y == "b")[:, None, None] * np.array([1.0, 0, 0, 0])
    enc = FrameEncoder(LinearDiscriminantAnalysis(n_components=2)).fit(X, y)
    ref = LinearDiscriminantAnalysis(n_components=2).fit(
        X.reshape(-1, 4), np.repeat(y, 5)
    )
    np.testing.assert_allclose(
        enc.transform(X), ref.transform(X.reshape(-1, 4)).reshape(12, 5, 2), atol=1e-10
    )


def test_set_output_pandas_only_for_2d():
    pd = pytest.importorskip("pandas")
    rng = np.random.RandomState(0)
    X2 = pd.DataFrame(rng.rand(10, 3), columns=["a", "b", "c"])
    enc = FrameEncoder(PCA(2)).set_output(transform="pandas").fit(X2)
    out = enc.transform(X2)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == ["pca0", "pca1"]
    with pytest.raises(ValueError, match="only applies to 2-D input"):
        enc.fit(rng.rand(4, 3, 3)).transform(rng.rand(4, 3, 3))


def test_bad_input_is_a_clear_error(videos):
    enc = FrameEncoder(PCA(2)).fit(videos)
    with pytest.raises(ValueError, match=r"frames of shape \(5, 4\).*\(6, 4\)"):
        enc.transform(np.zeros((2, 3, 5, 4)))
    with pytest.raises(ValueError, match="same shape"):
        enc.transform([np.zeros((2, 6, 4)), np.zeros((2, 5, 4))])
    with pytest.raises(ValueError, match="empty sequence"):
        enc.transform([np.zeros((2, 6, 4)), np.zeros((0, 6, 4))])
    with pytest.raises(ValueError, match="NaN"):
        enc.transform(np.full((2, 3, 6, 4), np.nan))
    with pytest.raises(ValueError, match="Codes have 5 features"):
        enc.inverse_transform(np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match="Negative values"):
        FrameEncoder(DeepNMF(2)).fit(videos - 1.0)


def test_feature_names_fall_back_when_the_transformer_has_none(videos):
    enc = FrameEncoder(Pipeline([("rows", ImageRows())])).fit(videos)
    names = enc.get_feature_names_out()
    assert len(names) == enc.n_features_out_ == 24
    assert names[:2].tolist() == ["col0_r0", "col1_r0"]


def test_transformer_without_feature_names():
    class Square(TransformerMixin, BaseEstimator):
        def fit(self, X, y=None):
            return self

        def transform(self, X):
            return np.asarray(X) ** 2

    enc = FrameEncoder(Square()).fit(np.ones((2, 3, 2)))
    assert enc.get_feature_names_out().tolist() == ["frameencoder0", "frameencoder1"]


@settings(max_examples=10, deadline=None)
@given(
    lengths=st.lists(st.integers(2, 4), min_size=1, max_size=4),
    frame_shape=st.sampled_from([(3,), (2, 3), (2, 2, 3)]),
    dtype=st.sampled_from([np.float32, np.float64]),
    as_list=st.booleans(),
)
def test_shapes_and_dtypes_property(lengths, frame_shape, dtype, as_list):
    rng = np.random.RandomState(0)
    if as_list:
        X = [rng.rand(n, *frame_shape).astype(dtype) for n in lengths]
    else:
        X = rng.rand(len(lengths), lengths[0], *frame_shape).astype(dtype)
    n_frames = sum(lengths) if as_list else len(lengths) * lengths[0]
    k = min(2, n_frames, int(np.prod(frame_shape)))
    enc = FrameEncoder(PCA(k))
    codes = enc.fit_transform(X)
    if as_list:
        assert [c.shape for c in codes] == [(n, k) for n in lengths]
        assert all(c.dtype == dtype for c in codes)
    else:
        assert codes.shape == (len(lengths), lengths[0], k) and codes.dtype == dtype
    back = enc.inverse_transform(codes)
    shapes = [b.shape for b in back] if as_list else [back.shape]
    expected = (
        [(n, *frame_shape) for n in lengths]
        if as_list
        else [(len(lengths), lengths[0], *frame_shape)]
    )
    assert shapes == expected
