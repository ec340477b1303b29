"""Tests of the expression data: the synthetic generator and the folder loader."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from sknmf.datasets import load_expression_folder, make_expression_videos
from sknmf.datasets._expressions import DEFAULT_CLASSES, HARD_CLASSES


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


# the hard setting ---------------------------------------------------------------------


def _energy(a):
    return (a.astype(np.float64) ** 2).reshape(len(a), -1).sum(axis=1).mean()


def test_hard_setting_has_few_videos_per_person_of_different_classes():
    X, y, groups = make_expression_videos(
        300, setting="hard", image_size=(16, 16), random_state=0
    )
    assert X.shape == (300, 4, 16, 16) and X.min() >= 0 and X.max() <= 1
    counts = np.bincount(groups)
    assert counts.min() >= 1 and counts.max() <= 6 and len(counts) > 50
    for person in np.unique(groups):
        labels = y[groups == person]
        assert len(set(labels.tolist())) == len(labels)
    assert set(y.tolist()) == set(HARD_CLASSES)
    # Uneven classes: contempt is the rarest, as in the real set.
    names, freq = np.unique(y, return_counts=True)
    assert names[np.argmin(freq)] == "contempt"


def test_hard_videos_start_neutral_and_hold_the_apex():
    X, y, _ = make_expression_videos(
        200, setting="hard", image_size=(24, 24), noise=0.0, random_state=0
    )
    onset = _energy(X[:, 1] - X[:, 0])
    held = _energy(X[:, 2] - X[:, 1])
    # Consecutive apex frames share a pose: they differ far less than neutral vs apex.
    assert held < 0.1 * onset
    X_off, _, _ = make_expression_videos(
        200,
        setting="hard",
        classes=["surprise-offset"],
        image_size=(24, 24),
        noise=0.0,
        random_state=0,
    )
    assert _energy(X_off[:, 1] - X_off[:, 0]) < 0.1 * _energy(X_off[:, 3] - X_off[:, 2])


@pytest.mark.parametrize("variation, low, high", [(1.0, 1.0, 3.0), (2.0, 3.0, 6.0)])
def test_person_variance_dominates_the_expression_change(variation, low, high):
    # Variance of the neutral first frames across videos over the mean energy of the
    # neutral-to-apex change: about 2 in real posed sets, 4 in the hard default.
    X, _, _ = make_expression_videos(
        300,
        setting="hard",
        subject_variation=variation,
        image_size=(24, 24),
        random_state=0,
    )
    F = X.reshape(len(X), X.shape[1], -1).astype(np.float64)
    ratio = F[:, 0].var(axis=0).sum() / _energy(X[:, -1] - X[:, 0])
    assert low <= ratio <= high


def test_subject_variation_zero_gives_everybody_the_same_face():
    X, _, groups = make_expression_videos(
        40,
        n_frames=2,
        classes=["neutral"],
        subject_variation=0.0,
        n_subjects=4,
        noise=0.0,
        random_state=0,
    )
    a, b = X[groups == 0, 0].mean(0), X[groups == 1, 0].mean(0)
    X2, _, g2 = make_expression_videos(
        40, n_frames=2, classes=["neutral"], n_subjects=4, noise=0.0, random_state=0
    )
    spread = np.abs(X2[g2 == 0, 0].mean(0) - X2[g2 == 1, 0].mean(0)).mean()
    assert np.abs(a - b).mean() < 0.5 * spread


def test_contempt_lifts_one_mouth_corner_only():
    X, y, _ = make_expression_videos(
        60,
        setting="hard",
        classes=["contempt", "happy"],
        image_size=(32, 32),
        noise=0.0,
        random_state=0,
    )
    change = np.abs(X[:, -1] - X[:, 0])[:, 20:30]  # the mouth rows
    left, right = change[..., :16].sum(axis=(1, 2)), change[..., 16:].sum(axis=(1, 2))
    # Seeds 0-2: right/left 1.33-1.47 for contempt, 0.92-1.12 for happy (both also
    # move the eyes and shift the head a little, symmetrically).
    ratio = np.mean(right[y == "contempt"]) / np.mean(left[y == "contempt"])
    ratio_happy = np.mean(right[y == "happy"]) / np.mean(left[y == "happy"])
    assert ratio > 1.2 and 0.8 < ratio_happy < 1.2


def test_sequences_per_subject_and_weights():
    _, y, groups = make_expression_videos(
        60,
        n_frames=2,
        image_size=(12, 12),
        classes=["happy", "sad", "fear"],
        n_subjects=20,
        sequences_per_subject=(2, 4),
        weights=[1, 0, 1],
        random_state=0,
    )
    counts = np.bincount(groups, minlength=20)
    assert len(counts) == 20 and counts.min() >= 2 and counts.max() <= 4
    assert counts.sum() == 60 and "sad" not in set(y.tolist())
    _, _, groups = make_expression_videos(
        30, n_frames=2, image_size=(12, 12), sequences_per_subject=3, random_state=0
    )
    assert np.all(np.bincount(groups) == 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_subjects=2, sequences_per_subject=(1, 2)), "cannot be split"),
        (dict(sequences_per_subject=(3, 1)), "sequences_per_subject"),
        (dict(sequences_per_subject=(0, 2)), "sequences_per_subject"),
        (dict(setting="medium"), "setting"),
        (dict(classes=["happy", "sad"], weights=[1.0]), "one nonnegative number"),
        (dict(classes=["happy", "sad"], weights=[-1.0, 2.0]), "nonnegative"),
        (dict(dynamics="jump"), "dynamics"),
        (dict(subject_variation=-1.0), "subject_variation"),
    ],
)
def test_bad_hard_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_expression_videos(8, **kwargs)


# load_expression_folder: 16-bit, float and oversized frames ---------------------------


def test_loader_scales_16_bit_frames_by_their_range(tmp_path):
    seq = tmp_path / "happy" / "s1"
    seq.mkdir(parents=True)
    values = np.array([[0, 1000, 30000], [40000, 65535, 257]], dtype=np.uint16)
    Image.fromarray(values).save(seq / "0.png")
    Image.fromarray(np.full((2, 3), 128, dtype=np.uint8)).save(seq / "1.png")
    with Image.open(seq / "0.png") as img:
        assert img.mode == "I;16"  # the file really is 16-bit
    X, _, _ = load_expression_folder(tmp_path)
    np.testing.assert_allclose(X[0, 0], values / 65535.0, rtol=1e-6)
    np.testing.assert_allclose(X[0, 1], 128 / 255.0, rtol=1e-6)
    X, _, _ = load_expression_folder(tmp_path, grayscale=False)
    assert X.shape == (1, 2, 2, 3, 3)
    for c in range(3):
        np.testing.assert_allclose(X[0, 0, ..., c], values / 65535.0, rtol=1e-6)


def test_loader_reads_float_frames_as_they_are(tmp_path):
    seq = tmp_path / "happy" / "s1"
    seq.mkdir(parents=True)
    values = np.array([[0.0, 0.25, 0.5], [0.75, 1.0, 0.125]], dtype=np.float32)
    Image.fromarray(values).save(seq / "0.tif")
    with Image.open(seq / "0.tif") as img:
        assert img.mode == "F"
    X, _, _ = load_expression_folder(tmp_path)
    np.testing.assert_array_equal(X[0, 0], values)
    # A constant frame resized stays that constant (bilinear weights sum to one).
    Image.fromarray(np.full((4, 6), 0.375, dtype=np.float32)).save(seq / "0.tif")
    X, _, _ = load_expression_folder(tmp_path, image_size=(2, 3))
    assert X.shape == (1, 1, 2, 3)
    np.testing.assert_allclose(X, 0.375, rtol=1e-6)


@pytest.mark.parametrize(
    "values, match",
    [
        (np.array([[0.0, 255.0]], dtype=np.float32), "outside \\[0, 1\\]"),
        (np.array([[np.nan, np.nan]], dtype=np.float32), "NaN or infinite"),
        (np.array([[-1, 70000]], dtype=np.int32), "outside 0-65535"),
    ],
)
def test_loader_refuses_wide_frames_out_of_range(tmp_path, values, match):
    seq = tmp_path / "happy" / "s1"
    seq.mkdir(parents=True)
    Image.fromarray(values).save(seq / "0.tif")
    with pytest.raises(ValueError, match=f"0.tif.*{match}"):
        load_expression_folder(tmp_path)


def _png_header_only(width, height):
    """A tiny PNG declaring ``width x height`` 8-bit gray pixels (no real data)."""

    def chunk(kind, data):
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [30000, 10000])
def test_loader_refuses_decompression_bombs_naming_the_file(tmp_path, side):
    # 30000**2 is above twice Pillow's MAX_IMAGE_PIXELS (Pillow raises), 10000**2
    # between once and twice (Pillow only warns): both are refused from the header.
    assert Image.MAX_IMAGE_PIXELS < side * side
    seq = tmp_path / "happy" / "s1"
    seq.mkdir(parents=True)
    (seq / "0.png").write_bytes(_png_header_only(side, side))
    with pytest.raises(ValueError, match="0.png.*decompression-bomb limit"):
        load_expression_folder(tmp_path)


def test_loader_reads_32_bit_integer_frames_as_16_bit(tmp_path):
    # Mode "I" (32-bit integers, where some Pillow versions read 16-bit PNGs).
    seq = tmp_path / "happy" / "s1"
    seq.mkdir(parents=True)
    values = np.array([[0, 255, 65535]], dtype=np.int32)
    Image.fromarray(values).save(seq / "0.tif")
    with Image.open(seq / "0.tif") as img:
        assert img.mode == "I"
    X, _, _ = load_expression_folder(tmp_path)
    np.testing.assert_allclose(X[0, 0], values / 65535.0, rtol=1e-6)
