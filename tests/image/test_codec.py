"""The image codec: round trips, rate, quality levers and parameter checks."""

import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_sample_image
from sklearn.decomposition import NMF, PCA

from sknmf.image import (
    bits_per_pixel,
    compress,
    decompress,
    load,
    psnr,
    read_header,
    save,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def photo():
    # A textured 64x96 crop of a real photo keeps every fit well under a second.
    return load_sample_image("china.jpg")[180:244, 240:336]


@pytest.mark.parametrize(
    "shape", [(13, 17), (13, 17, 1), (13, 17, 3), (9, 30, 4), (1, 1), (1, 5, 3)]
)
def test_round_trip_shape_dtype(shape):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    out = decompress(compress(image, quality=60))
    assert out.shape == image.shape
    assert out.dtype == np.uint8
    if shape[-1] == 4 and len(shape) == 3:
        np.testing.assert_array_equal(out[..., 3], image[..., 3])  # alpha kept


def test_smooth_image_is_nearly_lossless():
    y, x = np.mgrid[0:32, 0:48]
    image = np.stack([4 * y + 20, 3 * x + 30, np.full_like(x, 128)], -1)
    image = image.astype(np.uint8)
    out = decompress(compress(image, quality=100))
    assert psnr(image, out) > 35


def test_psnr_rises_with_components(photo):
    values = [
        psnr(photo, decompress(compress(photo, n_components=k, bits=10)))
        for k in (1, 4, 16, 48)
    ]
    assert np.all(np.diff(values) > 0), values


def test_psnr_rises_with_bits(photo):
    values = [
        psnr(photo, decompress(compress(photo, n_components=16, bits=b)))
        for b in (2, 4, 6, 10)
    ]
    assert np.all(np.diff(values) > 0), values


def test_quality_orders_size_and_fidelity(photo):
    low, high = compress(photo, quality=10), compress(photo, quality=90)
    assert len(low) < len(high)
    assert psnr(photo, decompress(low)) < psnr(photo, decompress(high))


def test_rate_is_the_real_file_size(photo, tmp_path):
    path = tmp_path / "photo.sknmf"
    n_bytes = save(path, photo, quality=50)
    assert n_bytes == os.path.getsize(path)
    data = path.read_bytes()
    h, w = photo.shape[:2]
    assert bits_per_pixel(data) == 8 * os.path.getsize(path) / (h * w)
    header = read_header(data)
    assert header["n_bytes"] == n_bytes
    assert header["bits_per_pixel"] == pytest.approx(8 * n_bytes / (h * w))
    np.testing.assert_array_equal(load(path), decompress(data))


def test_decoding_in_a_fresh_process_needs_only_the_file(photo, tmp_path):
    path = tmp_path / "photo.sknmf"
    save(path, photo, quality=40)
    out = tmp_path / "decoded.npy"
    code = (
        "import sys, numpy as np; from sknmf.image import load; "
        "np.save(sys.argv[2], load(sys.argv[1]))"
    )
    env = dict(os.environ, PYTHONPATH=ROOT)
    subprocess.run(
        [sys.executable, "-c", code, str(path), str(out)],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    np.testing.assert_array_equal(np.load(out), load(path))


def test_any_nmf_estimator_and_deep_layers(photo):
    data = compress(photo, n_components=12, estimator=NMF(init="nndsvda", max_iter=300))
    assert psnr(photo, decompress(data)) > 20
    deep = compress(photo, n_components=(24, 16, 12), quality=60)
    assert read_header(deep)["planes"][0]["layers"] == (24, 16, 12)
    assert decompress(deep).shape == photo.shape


def test_header_describes_the_settings(photo):
    header = read_header(
        compress(photo, n_components=10, chroma_components=3, bits=12, patch_size=4)
    )
    y, cb, cr = header["planes"]
    assert header["shape"] == photo.shape and header["color"] == "ycbcr"
    assert (y["n_components"], cb["n_components"], cr["n_components"]) == (10, 3, 3)
    assert y["patch_size"] == (4, 4) and y["code_bits"] == 12
    assert (y["subsampling"], cb["subsampling"]) == (1, 2)
    rgb = read_header(compress(photo, color="rgb", n_components=5))
    assert rgb["color"] == "rgb"
    assert [p["subsampling"] for p in rgb["planes"]] == [1, 1, 1]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"quality": 0}, ValueError, "quality"),
        ({"quality": 101}, ValueError, "quality"),
        ({"quality": 5.5}, TypeError, "quality"),
        ({"bits": 1}, ValueError, "bits"),
        ({"n_components": 0}, ValueError, "n_components"),
        ({"n_components": (4, 8)}, ValueError, "increase"),
        ({"n_components": "many"}, TypeError, "n_components"),
        ({"patch_size": 65}, ValueError, "patch_size"),
        ({"color": "hsv"}, ValueError, "color"),
        ({"subsampling": 3}, ValueError, "subsampling"),
        ({"estimator": object()}, TypeError, "estimator"),
    ],
)
def test_bad_parameters(kwargs, error, match):
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(error, match=match):
        compress(image, **kwargs)


@pytest.mark.parametrize(
    "image, error, match",
    [
        (np.zeros((8, 8), dtype=np.float64), TypeError, "uint8"),
        (np.full((8, 8), 300), TypeError, "uint8"),
        (np.zeros((8, 8, 5), dtype=np.uint8), ValueError, "RGBA"),
        (np.zeros(8, dtype=np.uint8), ValueError, "shape"),
        (np.zeros((0, 8), dtype=np.uint8), ValueError, "empty"),
    ],
)
def test_bad_images(image, error, match):
    with pytest.raises(error, match=match):
        compress(image)


def test_save_is_atomic(tmp_path, monkeypatch):
    from sknmf.image import _codec

    path = tmp_path / "image.sknmf"
    path.write_bytes(b"previous content")
    image = np.zeros((8, 8), dtype=np.uint8)

    def interrupted(src, dst):
        raise KeyboardInterrupt  # the run stops between writing and renaming

    monkeypatch.setattr(_codec.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save(path, image)
    assert path.read_bytes() == b"previous content"
    assert os.listdir(tmp_path) == ["image.sknmf"]  # no temporary file left
    monkeypatch.undo()

    n_bytes = save(path, image)
    assert path.read_bytes() == compress(image) and n_bytes == path.stat().st_size
    assert os.listdir(tmp_path) == ["image.sknmf"]
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert path.stat().st_mode == plain.stat().st_mode  # the umask applies


class _NaNNMF(NMF):
    """An NMF whose fit leaves a NaN in its components (a broken factoriser)."""

    def fit(self, X, y=None):
        super().fit(X)
        self.components_[0, 0] = np.nan
        return self


@pytest.mark.parametrize(
    "estimator, match",
    [(PCA(), "PCA gave components_ with negative"), (_NaNNMF(max_iter=20), "NaN")],
)
def test_estimator_without_nonnegative_components_is_refused(estimator, match):
    # The file stores nonnegative atoms: signed (PCA) or NaN components would be
    # clipped into a garbage image rather than an error.
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    with pytest.raises(ValueError, match=match) as info:
        compress(image, n_components=4, estimator=estimator)
    assert "nonnegative" in str(info.value)
