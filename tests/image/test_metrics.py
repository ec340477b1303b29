"""psnr, ssim and bits_per_pixel against independent references."""

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from sknmf.image import bits_per_pixel, psnr, ssim


def _pair(shape, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    noise = rng.integers(-20, 21, shape)
    b = np.clip(a.astype(int) + noise, 0, 255).astype(np.uint8)
    return a, b


@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 3)])
def test_psnr_matches_scikit_image(shape):
    a, b = _pair(shape)
    expected = peak_signal_noise_ratio(a, b, data_range=255)
    assert psnr(a, b) == pytest.approx(expected, rel=1e-12)


def test_psnr_closed_form_and_identity():
    a = np.zeros((4, 4), dtype=np.uint8)
    # Every pixel off by 16: MSE 256, PSNR 10 log10(255^2 / 256).
    assert psnr(a, a + 16) == pytest.approx(10 * np.log10(255**2 / 256))
    assert psnr(a, a) == float("inf")
    # uint8 arithmetic must not wrap around.
    assert psnr(np.full((2, 2), 0, np.uint8), np.full((2, 2), 255, np.uint8)) == 0.0


@pytest.mark.parametrize("shape", [(32, 40), (32, 40, 3)])
def test_ssim_is_scikit_image(shape):
    a, b = _pair(shape, seed=1)
    channel_axis = -1 if len(shape) == 3 else None
    expected = structural_similarity(
        a.astype(float), b.astype(float), data_range=255, channel_axis=channel_axis
    )
    assert ssim(a, b) == pytest.approx(expected, rel=1e-12)
    assert ssim(a, a) == pytest.approx(1.0)


def test_bits_per_pixel():
    assert bits_per_pixel(b"\0" * 300, shape=(10, 20, 3)) == 12.0
    assert bits_per_pixel(300, shape=(10, 20)) == 12.0


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: psnr(np.zeros((4, 4)), np.zeros((4, 5))), ValueError, "same size"),
        (lambda: psnr(np.zeros(4), np.zeros(4)), ValueError, r"\(h, w\)"),
        (lambda: ssim(np.zeros((4, 4)), np.zeros((4, 4))), ValueError, "7x7"),
        (lambda: psnr(np.array([["a"]]), np.array([["b"]])), TypeError, "numbers"),
        (lambda: bits_per_pixel("abc", (2, 2)), TypeError, "bytes"),
        (lambda: bits_per_pixel(10), ValueError, "shape is required"),
        (lambda: bits_per_pixel(b"xx", (0, 3)), ValueError, "shape"),
        (lambda: bits_per_pixel(b"not an sknmf file at all"), ValueError, "sknmf"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
