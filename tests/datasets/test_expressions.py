"""Tests of the expression data: the synthetic generator and the folder loader."""

import numpy as np
import pytest
from PIL import Image

from sknmf.datasets import load_expression_folder, make_expression_videos
from sknmf.datasets._expressions import DEFAULT_CLASSES


def test_shapes_range_and_determinism():
    X, y, groups = make_expression_videos(
        24, n_frames=5, image_size=(20, 16), random_state=0
    )
    assert X.shape == (24, 5, 20, 16) and X.dtype == np.float32
    assert X.min() >= 0.0 and X.max() <= 1.0
    assert y.shape == (24,) and groups.shape == (24,)
    X2, y2, g2 = make_expression_videos(
        24, n_frames=5, image_size=(20, 16), random_state=0
    )
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(groups, g2)
    X3, _, _ = make_expression_videos(
        24, n_frames=5, image_size=(20, 16), random_state=1
    )
    assert not np.allclose(X, X3)


def test_classes_balanced_within_every_subject():
    n_subjects = 4
    X, y, groups = make_expression_videos(
        2 * len(DEFAULT_CLASSES) * n_subjects,
        n_frames=3,
        image_size=(12, 12),
        n_subjects=n_subjects,
        random_state=0,
    )
    assert set(y.tolist()) == set(DEFAULT_CLASSES)
    assert {"happy", "sad", "surprise", "anger", "disgust", "fear"} <= set(y.tolist())
    for subject in range(n_subjects):
        labels, counts = np.unique(y[groups == subject], return_counts=True)
        assert len(labels) == len(DEFAULT_CLASSES) and np.all(counts == 2)


def test_subjects_have_distinct_faces():
    # Neutral faces averaged over videos (lighting and jitter average out): two halves
    # of one subject's videos agree much better than two subjects.
    X, y, groups = make_expression_videos(
        32, n_frames=3, classes=["neutral"], n_subjects=2, noise=0.0, random_state=0
    )
    a, b = X[groups == 0, 0], X[groups == 1, 0]
    within = np.abs(a[::2].mean(0) - a[1::2].mean(0)).mean()
    between = np.abs(a.mean(0) - b.mean(0)).mean()
    assert between > 2 * within


def test_onsets_change_more_than_neutral_videos():
    X, y, _ = make_expression_videos(
        40, n_frames=6, classes=["neutral", "surprise"], noise=0.0, random_state=0
    )
    change = np.abs(X[:, -1] - X[:, 0]).mean(axis=(1, 2))
    # Neutral videos still move a little (head jitter, flicker).
    assert change[y == "surprise"].mean() > 1.5 * change[y == "neutral"].mean()


def test_offset_is_onset_reversed_in_time():
    # Order-blind statistics agree between onset and offset videos (same frame
    # distribution, up to sampling noise); order-aware ones are mirrored.
    X, y, _ = make_expression_videos(
        400,
        n_frames=6,
        image_size=(16, 16),
        classes=["surprise-onset", "surprise-offset"],
        random_state=0,
    )
    on, off = X[y == "surprise-onset"], X[y == "surprise-offset"]
    expression = np.abs(on[:, -1].mean(0) - on[:, 0].mean(0)).mean()
    order_blind = np.abs(on.mean(axis=(0, 1)) - off.mean(axis=(0, 1))).mean()
    mirrored = np.abs(on[:, -1].mean(0) - off[:, 0].mean(0)).mean()
    assert order_blind < 0.25 * expression
    assert mirrored < 0.25 * expression


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(classes=["joy"]), "Unknown class 'joy'"),
        (dict(classes=["smile-backwards"]), "Unknown class"),
        (dict(classes=["smile", "smile-onset"]), "same videos twice"),
        (dict(classes=["neutral-offset"]), "no onset or offset"),
        (dict(classes="happy"), "classes"),
        (dict(image_size=(8, 8)), "image_size"),
        (dict(image_size=(48,)), "image_size"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_expression_videos(4, **kwargs)


def test_invalid_counts_are_rejected():
    with pytest.raises(ValueError, match="n_frames"):
        make_expression_videos(4, n_frames=1)
    with pytest.raises(ValueError, match="n_sequences"):
        make_expression_videos(0)


# load_expression_folder --------------------------------------------------------------


def _write_sequence(folder, values, size=(6, 5), ext="png", mode="L"):
    folder.mkdir(parents=True)
    for name, value in values.items():
        img = np.full((*size, 3) if mode == "RGB" else size, value, dtype=np.uint8)
        Image.fromarray(img, mode=mode).save(folder / f"{name}.{ext}")


def test_loader_reads_labels_subjects_and_natural_frame_order(tmp_path):
    # Frame names sort naturally: 2 before 10; values record the true order.
    frames = {"1": 10, "2": 20, "10": 100, "3": 30}
    _write_sequence(tmp_path / "happy" / "S01_001", frames)
    _write_sequence(tmp_path / "happy" / "S02_001", frames, ext="bmp")
    _write_sequence(tmp_path / "sad" / "S01_002", frames, ext="tiff")
    X, y, groups = load_expression_folder(tmp_path)
    assert X.shape == (3, 4, 6, 5) and X.dtype == np.float32
    np.testing.assert_allclose(X[0, :, 0, 0] * 255, [10, 20, 30, 100], atol=1e-4)
    assert y.tolist() == ["happy", "happy", "sad"]
    assert groups.tolist() == ["S01", "S02", "S01"]
    _, _, whole = load_expression_folder(tmp_path, subject_separator=None)
    assert whole.tolist() == ["S01_001", "S02_001", "S01_002"]


def test_loader_rgb_resize_and_ragged(tmp_path):
    _write_sequence(tmp_path / "a" / "s1", {"1": 50, "2": 60}, mode="RGB")
    _write_sequence(tmp_path / "b" / "s2", {"1": 50, "2": 60, "3": 70}, size=(9, 7))
    X, y, _ = load_expression_folder(tmp_path, grayscale=False, image_size=(4, 3))
    assert isinstance(X, list) and [x.shape for x in X] == [(2, 4, 3, 3), (3, 4, 3, 3)]
    X, _, _ = load_expression_folder(tmp_path)
    assert [x.shape for x in X] == [(2, 6, 5), (3, 9, 7)]


def test_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an existing folder"):
        load_expression_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no label folders"):
        load_expression_folder(tmp_path)
    (tmp_path / "happy").mkdir()
    with pytest.raises(ValueError, match="no sequence folders"):
        load_expression_folder(tmp_path)
    (tmp_path / "happy" / "s1").mkdir()
    with pytest.raises(ValueError, match="holds no frames"):
        load_expression_folder(tmp_path)
    (tmp_path / "happy" / "s1" / "1.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="Cannot read .*1.png"):
        load_expression_folder(tmp_path)


def test_loader_frames_of_different_sizes(tmp_path):
    seq = tmp_path / "happy" / "s1"
    _write_sequence(seq, {"1": 10})
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(seq / "2.png")
    with pytest.raises(ValueError, match="different sizes.*image_size"):
        load_expression_folder(tmp_path)
    X, _, _ = load_expression_folder(tmp_path, image_size=(6, 5))
    assert X.shape == (1, 2, 6, 5)
