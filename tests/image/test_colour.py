"""Colour planes: YCbCr against Pillow's JPEG transform, chroma resampling."""

import numpy as np
from PIL import Image

from sknmf.image._colour import (
    downsample,
    rgb_to_ycbcr,
    round_into,
    to_uint8,
    upsample,
    ycbcr_planes_to_rgb,
    ycbcr_to_rgb,
)


def _rgb(shape=(17, 23), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def test_ycbcr_is_jpegs_transform():
    rgb = _rgb()
    reference = np.asarray(Image.fromarray(rgb).convert("YCbCr"), dtype=np.float64)
    # Pillow works in fixed point and rounds: within one level.
    assert np.abs(rgb_to_ycbcr(rgb) - reference).max() <= 1.0


def test_ycbcr_round_trip():
    rgb = _rgb(seed=1)
    back = ycbcr_to_rgb(rgb_to_ycbcr(rgb))
    assert back.dtype == np.uint8
    assert np.abs(back.astype(int) - rgb).max() <= 1


def test_to_uint8_rounds_and_clips():
    np.testing.assert_array_equal(
        to_uint8(np.array([-3.0, 0.4, 0.6, 254.5, 300.0])), [0, 0, 1, 254, 255]
    )


def test_downsample_is_block_means_with_edge_padding():
    plane = np.arange(5 * 7, dtype=np.float32).reshape(5, 7)
    small = downsample(plane, 2)
    assert small.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            rows = [min(r, 4) for r in (2 * i, 2 * i + 1)]
            cols = [min(c, 6) for c in (2 * j, 2 * j + 1)]
            assert small[i, j] == np.mean(plane[np.ix_(rows, cols)])
    assert downsample(plane, 1) is plane


def test_upsample_crops_to_the_image_and_keeps_constants():
    up = upsample(np.full((3, 4), 7.5, dtype=np.float32), 2, 5, 7)
    assert up.shape == (5, 7)
    np.testing.assert_allclose(up, 7.5, rtol=1e-6)


def test_ycbcr_planes_to_rgb_leaves_its_planes_alone():
    ycc = rgb_to_ycbcr(_rgb(seed=3))
    planes = [ycc[..., i].copy() for i in range(3)]
    out = np.zeros((*ycc.shape[:2], 3), dtype=np.uint8)
    assert ycbcr_planes_to_rgb(*planes, out=out) is out
    for i in range(3):
        np.testing.assert_array_equal(planes[i], ycc[..., i])
    # JFIF's inverse written out in float64: within one level of rounding.
    y, cb, cr = (p.astype(np.float64) for p in planes)
    cb, cr = cb - 128, cr - 128
    rgb = np.stack(
        [y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1
    )
    assert np.abs(out - np.clip(np.rint(rgb), 0, 255)).max() <= 1


def test_round_into_matches_to_uint8():
    x = np.array([[-3.0, 0.4, 0.6], [254.5, 300.0, 127.5]], dtype=np.float32)
    out = np.zeros((2, 3), dtype=np.uint8)
    round_into(x.copy(), out)
    np.testing.assert_array_equal(out, [[0, 0, 1], [254, 255, 128]])


def test_upsample_gives_a_writable_plane():
    big = upsample(np.ones((3, 4), np.float32), 2, 5, 7)
    assert big.shape == (5, 7) and big.flags.writeable
