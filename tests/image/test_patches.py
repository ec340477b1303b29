"""ImagePatches: scikit-learn's checks, exact round trips, overlap averaging."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_sample_image
from sklearn.decomposition import PCA
from sklearn.feature_extraction.image import extract_patches_2d
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from sknmf import ImagePatches


# Row patches (1, None): each row of a 2-D input is its own patch, so the 2-D
# path keeps one output row per input row, as scikit-learn's checks require.
# With the default (8, 8) patches the number of rows changes by design.
@parametrize_with_checks([ImagePatches(patch_size=(1, None))])
def test_sklearn_compatible(estimator, check):
    check(estimator)


SHAPES = [(13, 17), (13, 17, 1), (13, 17, 3), (13, 17, 4), (2, 13, 17), (2, 9, 11, 3)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
@pytest.mark.parametrize("patch_size", [(8, 8), (4, 5), 3, (1, 1), (20, 20)])
def test_round_trip_exact_without_overlap(shape, dtype, patch_size):
    rng = np.random.default_rng(0)
    images = (rng.random(shape) * 255).astype(dtype)
    patches = ImagePatches(patch_size)
    rows = patches.fit_transform(images)
    assert rows.dtype == images.dtype
    back = patches.inverse_transform(rows)
    assert back.dtype == images.dtype
    assert back.shape == images.shape
    np.testing.assert_array_equal(back, images)


def test_patch_rows_match_independent_extraction():
    # Without padding and with step 1 the rows are exactly scikit-learn's
    # extract_patches_2d, in the same row-major order.
    rng = np.random.default_rng(1)
    image = rng.random((9, 10, 3))
    rows = ImagePatches((4, 3), step=1).fit_transform(image)
    expected = extract_patches_2d(image, (4, 3)).reshape(len(rows), -1)
    np.testing.assert_array_equal(rows, expected)


def test_padding_is_edge_mode_and_dropped():
    image = np.arange(5 * 7, dtype=np.float64).reshape(5, 7)
    patches = ImagePatches((4, 4)).fit(image)
    rows = patches.transform(image)
    assert rows.shape == (4, 16)
    padded = np.pad(image, ((0, 3), (0, 1)), mode="edge")
    np.testing.assert_array_equal(rows[3].reshape(4, 4), padded[4:8, 4:8])
    np.testing.assert_array_equal(patches.inverse_transform(rows), image)


@pytest.mark.parametrize("step", [1, 2, (3, 1)])
def test_overlap_is_averaged(step):
    rng = np.random.default_rng(2)
    image = rng.random((11, 12, 3))
    patches = ImagePatches((4, 4), step=step).fit(image)
    rows = patches.transform(image)
    # Identical overlapping copies average back to the image itself.
    np.testing.assert_allclose(patches.inverse_transform(rows), image, rtol=1e-12)
    # Adding 1 to the first patch adds 1 / (number of patches covering a pixel)
    # there; the coverage is counted here by brute force over the padded grid.
    sh, sw = (step, step) if isinstance(step, int) else step
    cover = np.zeros((16, 16))
    for i in range(0, 11 - 4 + sh, sh):
        for j in range(0, 12 - 4 + sw, sw):
            cover[i : i + 4, j : j + 4] += 1
    shifted = rows.copy()
    shifted[0] += 1.0
    delta = patches.inverse_transform(shifted) - image
    expected = np.zeros((11, 12))
    expected[:4, :4] = 1.0 / cover[:4, :4]
    for ch in range(3):
        np.testing.assert_allclose(delta[..., ch], expected, atol=1e-12)


def test_integer_overlap_rounds_to_dtype():
    image = np.full((6, 6), 10, dtype=np.uint8)
    patches = ImagePatches((4, 4), step=2).fit(image)
    rows = patches.transform(image)
    rows[0] = 255
    back = patches.inverse_transform(rows)
    assert back.dtype == np.uint8
    assert back[0, 0] == 255 and back[5, 5] == 10


def test_pipeline_inverse_rebuilds_image():
    image = load_sample_image("flower.jpg")[100:164, 200:280].astype(np.float64)
    pipe = Pipeline([("patches", ImagePatches()), ("pca", PCA())])
    rebuilt = pipe.inverse_transform(pipe.fit_transform(image))
    assert rebuilt.shape == image.shape
    np.testing.assert_allclose(rebuilt, image, atol=1e-6)


def test_transform_other_image_size_and_explicit_shape():
    rng = np.random.default_rng(3)
    patches = ImagePatches((4, 4)).fit(rng.random((16, 16, 3)))
    other = rng.random((10, 21, 3))
    rows = patches.transform(other)
    np.testing.assert_array_equal(patches.inverse_transform(rows), other)
    batch = rng.random((3, 10, 21, 3))
    rows = patches.transform(batch)
    # A single-image shape with three images' worth of rows rebuilds the batch.
    np.testing.assert_array_equal(
        patches.inverse_transform(rows, image_shape=(10, 21, 3)), batch
    )


def test_large_photo_is_vectorised():
    # A 3000x4000 RGB photo: 187,500 patches; must not loop in Python per patch.
    image = np.zeros((3000, 4000, 3), dtype=np.uint8)
    patches = ImagePatches().fit(image)
    rows = patches.transform(image)
    assert rows.shape == (375 * 500, 192)
    assert patches.inverse_transform(rows).shape == image.shape


@pytest.mark.parametrize(
    "params, match",
    [
        ({"patch_size": 0}, "patch_size"),
        ({"patch_size": (8, 8, 8)}, "patch_size"),
        ({"step": (0, 1)}, "step"),
        ({"patch_size": 4, "step": 5}, "larger than patch_size"),
    ],
)
def test_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        ImagePatches(**params).fit(np.zeros((8, 8)))


def test_bad_input():
    patches = ImagePatches().fit(np.zeros((16, 16, 3)))
    with pytest.raises(ValueError, match="channel"):
        patches.transform(np.zeros((8, 8, 4)))
    with pytest.raises(ValueError, match="dimension"):
        ImagePatches().fit(np.zeros((2, 2, 2, 2, 2)))
    with pytest.raises(ValueError, match="rows"):
        patches.inverse_transform(np.zeros((5, 192)))
    with pytest.raises(ValueError, match="features per row"):
        patches.inverse_transform(np.zeros((1, 64)))
    with pytest.raises(ValueError):
        ImagePatches().fit(np.full((8, 8), np.nan))


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 20),
    w=st.integers(1, 20),
    c=st.sampled_from([None, 1, 3, 4]),
    ph=st.integers(1, 9),
    pw=st.integers(1, 9),
    data=st.data(),
)
def test_round_trip_property(h, w, c, ph, pw, data):
    sh = data.draw(st.integers(1, ph))
    sw = data.draw(st.integers(1, pw))
    shape = (h, w) if c is None else (h, w, c)
    image = np.random.default_rng(h * 31 + w).random(shape)
    patches = ImagePatches((ph, pw), step=(sh, sw)).fit(image)
    rows = patches.transform(image)
    assert rows.shape[1] == ph * pw * (c or 1)
    np.testing.assert_allclose(patches.inverse_transform(rows), image, rtol=1e-12)
