"""The image codec: round trips, rate, quality levers, file format, fuzzing."""

import os
import struct
import subprocess
import sys
import tracemalloc
import zlib

import numpy as np
import pytest
from sklearn.datasets import load_sample_image
from sklearn.decomposition import NMF

from sknmf.image import (
    bits_per_pixel,
    compress,
    decompress,
    load,
    psnr,
    read_header,
    save,
)
from sknmf.image._format import MAGIC

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def photo():
    # A textured 64x96 crop of a real photo keeps every fit well under a second.
    return load_sample_image("china.jpg")[180:244, 240:336]


@pytest.fixture(scope="module")
def small_file():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    return compress(image, quality=20)


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


# --------------------------------------------------------------------------- #
# Damaged, foreign and hostile bytes
# --------------------------------------------------------------------------- #


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def _patch_header(data: bytes, offset: int, fmt: str, value) -> bytes:
    """Rewrite one header field and fix the checksum (a crafted file)."""
    body = bytearray(data[:-4])
    struct.pack_into(fmt, body, offset, value)
    return _with_crc(bytes(body))


# Offsets in the file: prefix 12 bytes (magic, version, flags, header length),
# then h u32, w u32, channels, channel axis, colour, n_planes, then the planes.
H_OFF, W_OFF, C_OFF, COLOR_OFF = 12, 16, 20, 22
PLANE0 = 12 + 12


@pytest.mark.parametrize(
    "offset, fmt, value, match",
    [
        (H_OFF, "<I", 70000, "claims"),
        (W_OFF, "<I", 2**31, "claims"),
        (H_OFF, "<I", 0, "claims"),
        (C_OFF, "<B", 2, "channels"),
        (COLOR_OFF, "<B", 9, "colour"),
        (8, "<B", 2, "version"),
        (9, "<B", 2, "flags"),
        (PLANE0 + 2, "<B", 0, "patch size"),
        (PLANE0 + 4, "<H", 4000, "n_components"),
        (PLANE0 + 6, "<B", 1, "code width"),
        (PLANE0 + 8, "<f", float("nan"), "step"),
        (PLANE0 + 1, "<B", 2, "subsampling"),
    ],
)
def test_crafted_headers_are_refused(small_file, offset, fmt, value, match):
    data = _patch_header(small_file, offset, fmt, value)
    with pytest.raises(ValueError, match=match):
        decompress(data)


def test_absurd_dimensions_refused_before_allocating(small_file):
    data = _patch_header(small_file, H_OFF, "<I", 65535)
    data = _patch_header(data, W_OFF, "<I", 65535)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="claims"):
            decompress(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_foreign_and_truncated_files_name_the_problem(small_file):
    with pytest.raises(ValueError, match="magic"):
        decompress(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ValueError, match="shorter"):
        decompress(MAGIC)
    with pytest.raises(ValueError, match="checksum"):
        decompress(small_file[:-1])
    with pytest.raises(TypeError, match="bytes"):
        decompress("not bytes")


def _mutations(data: bytes, rng):
    """Yield 1,300+ damaged versions of ``data`` (every one must be refused)."""
    for n in range(len(data)):  # every truncation
        yield data[:n]
    for _ in range(400):  # random bit flips, one to eight of them
        b = bytearray(data)
        for pos in rng.integers(0, len(b), rng.integers(1, 9)):
            b[pos] ^= 1 << int(rng.integers(0, 8))
        yield bytes(b)
    for _ in range(150):  # bytes inserted or deleted
        pos = int(rng.integers(0, len(data)))
        if rng.random() < 0.5:
            yield (
                data[:pos] + bytes(rng.integers(0, 256, 3, dtype=np.uint8)) + data[pos:]
            )
        else:
            yield data[:pos] + data[pos + 1 + int(rng.integers(0, 4)) :]
    for _ in range(150):  # random bytes, some behind the right magic
        junk = bytes(rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8))
        yield junk
        yield MAGIC + bytes([1]) + junk
        yield _with_crc(MAGIC + bytes([1, 0]) + junk)  # valid checksum, junk inside


def test_fuzz_every_damaged_input_is_a_value_error(small_file):
    rng = np.random.default_rng(2024)
    count = 0
    for bad in _mutations(small_file, rng):
        if bad == small_file:
            continue
        with pytest.raises(ValueError):
            decompress(bad)
        count += 1
    assert count >= 1000


def test_fuzz_crafted_checksums_decode_or_refuse(small_file):
    # A hostile file can carry a correct checksum: header or payload bytes
    # changed and the CRC recomputed. Decoding either refuses with ValueError or
    # returns a uint8 image of the shape the header states; nothing else.
    rng = np.random.default_rng(7)
    body = small_file[:-4]
    refused = 0
    for _ in range(300):
        b = bytearray(body)
        for pos in rng.integers(8, len(b), rng.integers(1, 4)):
            b[pos] = int(rng.integers(0, 256))
        data = _with_crc(bytes(b))
        try:
            image = decompress(data)
        except ValueError:
            refused += 1
            continue
        assert image.dtype == np.uint8
        assert image.shape == read_header(data)["shape"]
    assert refused > 0


def test_code_layout_flag_is_honoured(photo):
    # The encoder stores the codes atom by atom or patch by patch, whichever
    # LZMA packs smaller, and says which in the flags byte. Re-encoding the
    # payload in the other layout, with the flag flipped, decodes identically.
    import lzma

    from sknmf.image import _format

    data = compress(photo, quality=50)
    info = _format.parse(data)
    raw = _format.inflate(info["_payload"], info["_raw_size"])
    h, w = photo.shape[:2]
    out, offset = b"", 0
    for rec in info["_planes"]:
        size = _format.plane_raw_size(rec, h, w)
        chunk = raw[offset : offset + size]
        offset += size
        head = rec.n_components * (rec.ph * rec.pw + 4)
        n = _format.n_patches(rec, h, w)
        codes = np.frombuffer(chunk[head:], dtype=np.uint8)
        shape = (n, rec.n_components) if info["_flags"] & 1 else (rec.n_components, n)
        out += chunk[:head] + codes.reshape(shape).T.tobytes()
    filters = _format.lzma_filters(len(out))
    payload = lzma.compress(out, format=lzma.FORMAT_RAW, filters=filters)
    body = bytearray(data[: data.index(info["_payload"]) - 4])
    body[9] = info["_flags"] ^ 1
    body += struct.pack("<I", len(payload)) + payload
    np.testing.assert_array_equal(decompress(_with_crc(bytes(body))), decompress(data))
