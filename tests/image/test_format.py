"""The file format: writing, parsing, and refusing damaged or hostile bytes."""

import lzma
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from sklearn.datasets import load_sample_image

from sknmf.image import (
    DecompressionBombError,
    _format,
    compress,
    decompress,
    load,
    read_header,
)
from sknmf.image._codec import DEFAULT_MAX_PIXELS, stored_atoms
from sknmf.image._format import MAGIC


@pytest.fixture(scope="module")
def small_file():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    return compress(image, quality=20)


@pytest.fixture(scope="module")
def photo():
    return load_sample_image("china.jpg")[180:244, 240:336]


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


# --------------------------------------------------------------------------- #
# Writing: the documented layout, from arrays chosen here
# --------------------------------------------------------------------------- #


def _hand_made_file(bits=5):
    """An RGBA 10x12 file packed from arrays chosen here (no encoder involved)."""
    rng = np.random.default_rng(3)
    planes, arrays = [], []
    for sub, k in ((1, 3), (2, 2), (2, 2)):
        rec = _format.Plane(_format.KIND_NMF, sub, 4, 4, k, bits, (), 0.5)
        n = _format.n_patches(rec, 10, 12)
        q = rng.integers(0, 256, (k, 16), dtype=np.uint8)
        scale = rng.random(k).astype(np.float32)
        codes = rng.integers(0, 1 << bits, (n, k))
        planes.append((rec, (q, scale, codes)))
        arrays.append((q, scale, codes))
    alpha = rng.integers(0, 256, (10, 12), dtype=np.uint8)
    planes.append((_format.Plane(_format.KIND_RAW, 1, 1, 1, 0, 8, (), 0.0), alpha))
    arrays.append(alpha)
    return _format.pack((10, 12, 4), "ycbcr", planes), arrays


def test_pack_writes_the_documented_layout():
    data, arrays = _hand_made_file()
    assert data[:8] == MAGIC and data[8] == _format.VERSION
    (hlen,) = struct.unpack_from("<H", data, 10)
    h, w, channels, axis, color, n_planes = struct.unpack_from("<IIBBBB", data, 12)
    assert (h, w, channels, axis, n_planes) == (10, 12, 4, 1, 4)
    assert color == _format.COLORS["ycbcr"]
    (plen,) = struct.unpack_from("<I", data, 12 + hlen)
    assert 12 + hlen + 4 + plen + 4 == len(data)
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == zlib.crc32(data[:-4])
    # The payload inflates to every plane's bytes in order: uint8 atoms, float32
    # scales, codes (atom by atom unless flag bit 0 is set), then alpha.
    payload = data[12 + hlen + 4 : -4]
    raw_size = sum(q.size + 4 * len(s) + c.size for q, s, c in arrays[:3]) + 120
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9, "dict_size": 4096}]
    raw = lzma.decompress(payload, format=lzma.FORMAT_RAW, filters=filters)
    assert len(raw) == raw_size
    q, scale, codes = arrays[0]
    assert raw[: q.size] == q.tobytes()
    assert raw[q.size : q.size + 12] == scale.astype("<f4").tobytes()
    layout = codes if data[9] & 1 else codes.T
    assert raw[q.size + 12 : q.size + 12 + codes.size] == layout.astype("u1").tobytes()
    assert raw[-120:] == arrays[3].tobytes()


@pytest.mark.parametrize("bits", [5, 12])
def test_read_planes_gives_back_the_packed_arrays(bits):
    data, arrays = _hand_made_file(bits)
    info = _format.parse(data)
    assert info["shape"] == (10, 12, 4) and info["color"] == "ycbcr"
    assert [p["subsampling"] for p in info["planes"]] == [1, 2, 2, 1]
    assert [p["code_bits"] for p in info["planes"][:3]] == [bits] * 3
    got = _format.read_planes(info)
    for (q, scale, codes), (gq, gscale, gcodes) in zip(arrays[:3], got[:3]):
        np.testing.assert_array_equal(gq, q)
        np.testing.assert_array_equal(gscale, scale)
        np.testing.assert_array_equal(gcodes, codes)
    np.testing.assert_array_equal(got[3], arrays[3])


def test_plane_sizes_follow_the_geometry():
    rec = _format.Plane(_format.KIND_NMF, 2, 8, 8, 5, 12, (9, 5), 1.0)
    # A 37x50 image subsampled by 2 is 19x25: 3x4 patches of 8x8.
    assert _format.plane_shape(rec, 37, 50) == (19, 25)
    assert _format.n_patches(rec, 37, 50) == 12
    assert _format.plane_raw_size(rec, 37, 50) == 5 * 64 + 5 * 4 + 12 * 5 * 2
    raw = _format.Plane(_format.KIND_RAW, 1, 1, 1, 0, 8, (), 0.0)
    assert _format.plane_raw_size(raw, 37, 50) == 37 * 50


def test_a_code_beyond_its_width_is_refused():
    rng = np.random.default_rng(0)
    rec = _format.Plane(_format.KIND_NMF, 1, 2, 2, 1, 3, (), 1.0)
    codes = np.array([[8]])  # needs 4 bits
    q, scale = rng.integers(0, 256, (1, 4), dtype=np.uint8), np.ones(1, np.float32)
    data = _format.pack((2, 2), "gray", [(rec, (q, scale, codes))])
    with pytest.raises(ValueError, match="3-bit range"):
        _format.read_planes(_format.parse(data))
    with pytest.raises(ValueError, match="scale"):
        bad = np.array([np.inf], np.float32)
        _format.read_planes(
            _format.parse(_format.pack((2, 2), "gray", [(rec, (q, bad, codes - 8))]))
        )


# --------------------------------------------------------------------------- #
# The decoder's budget: valid files that would cost too much
# --------------------------------------------------------------------------- #


def test_declared_pixels_beyond_the_budget_refused_before_allocating(
    small_file, tmp_path
):
    # A valid header declaring 8192x8192 (the payload no longer matches, which
    # only decoding would notice): the budget refuses it from the header.
    data = _patch_header(small_file, H_OFF, "<I", 8192)
    data = _patch_header(data, W_OFF, "<I", 8192)
    assert DEFAULT_MAX_PIXELS < 8192 * 8192
    tracemalloc.start()
    try:
        with pytest.raises(DecompressionBombError, match="8192x8192.*max_pixels"):
            decompress(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert issubclass(DecompressionBombError, ValueError)
    path = tmp_path / "bomb.sknmf"
    path.write_bytes(data)
    with pytest.raises(DecompressionBombError, match="max_pixels"):
        load(path)
    with pytest.raises(DecompressionBombError, match="max_pixels"):
        stored_atoms(data)
    # Without the guard, decoding goes on and finds the payload too short.
    with pytest.raises(ValueError, match="payload") as info:
        decompress(data, max_pixels=None)
    assert not isinstance(info.value, DecompressionBombError)


def test_the_pixel_budget_is_inclusive(small_file, tmp_path):
    h, w = read_header(small_file)["shape"][:2]
    assert decompress(small_file, max_pixels=h * w).shape == (h, w, 3)
    with pytest.raises(DecompressionBombError, match=f"{h}x{w}"):
        decompress(small_file, max_pixels=h * w - 1)
    path = tmp_path / "small.sknmf"
    path.write_bytes(small_file)
    with pytest.raises(DecompressionBombError):
        load(path, max_pixels=h * w - 1)
    assert load(path, max_pixels=None).shape == (h, w, 3)


def _one_patch_file(patch, k):
    """A 1x1 gray file of one ``patch x patch`` patch and ``k`` atoms."""
    rec = _format.Plane(_format.KIND_NMF, 1, patch, patch, k, 8, (), 1.0)
    q = np.zeros((k, patch * patch), dtype=np.uint8)
    codes = np.zeros((1, k), dtype=np.uint8)
    return _format.pack((1, 1), "gray", [(rec, (q, np.ones(k, np.float32), codes))])


def test_decoding_work_is_bounded_by_the_budget():
    # One 16x16 patch and 256 atoms: 1 x 256 x 256 multiply-adds for one pixel,
    # which a budget of 256 pixels (256 multiply-adds per pixel) just allows.
    data = _one_patch_file(16, 256)
    assert _format.decode_work(_format.parse(data)) == 256 * 256
    assert _format.WORK_PER_PIXEL == 256
    np.testing.assert_array_equal(decompress(data, max_pixels=256), [[0]])
    with pytest.raises(DecompressionBombError, match="65536 multiply-adds"):
        decompress(data, max_pixels=255)


def test_many_large_atoms_refused_from_the_header(small_file):
    # 2048x2048 pixels (within the pixel budget) cut into 64x64 patches with
    # 4096 atoms: 1024 patches x 4096 atoms x 4096 pixels to multiply.
    data = _patch_header(small_file, H_OFF, "<I", 2048)
    data = _patch_header(data, W_OFF, "<I", 2048)
    data = _patch_header(data, PLANE0 + 2, "<B", 64)
    data = _patch_header(data, PLANE0 + 3, "<B", 64)
    data = _patch_header(data, PLANE0 + 4, "<H", 4096)
    assert read_header(data)["planes"][0]["n_components"] == 4096
    # The two chroma planes: 1024x1024 after subsampling, in 8x8 patches.
    chroma = read_header(data)["planes"][1:]
    assert [p["patch_size"] for p in chroma] == [(8, 8)] * 2
    expected = 1024 * 4096 * 4096 + sum(
        128 * 128 * p["n_components"] * 64 for p in chroma
    )
    tracemalloc.start()
    try:
        with pytest.raises(DecompressionBombError, match=f"{expected} multiply-adds"):
            decompress(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize(
    "value, error",
    [(0, ValueError), (-5, ValueError), (1.5, TypeError), (True, TypeError)],
)
def test_bad_max_pixels(small_file, value, error):
    with pytest.raises(error, match="max_pixels"):
        decompress(small_file, max_pixels=value)


@pytest.mark.parametrize(
    "wrap",
    [
        bytes,
        bytearray,
        memoryview,
        lambda d: np.frombuffer(d, dtype=np.uint8),
        lambda d: np.frombuffer(d, dtype=np.uint8).copy(),
        lambda d: np.repeat(np.frombuffer(d, np.uint8), 2)[::2],  # strided
    ],
)
def test_any_bytes_like_object_decodes(small_file, wrap):
    expected = decompress(small_file)
    np.testing.assert_array_equal(decompress(wrap(small_file)), expected)
    assert read_header(wrap(small_file)) == read_header(small_file)


# --------------------------------------------------------------------------- #
# Decoding: against a plain reference, in bounded memory
# --------------------------------------------------------------------------- #


def _random_file(shape, color, subs, patch=4, k=3, bits=8, seed=0):
    rng = np.random.default_rng(seed)
    h, w = shape[:2]
    planes = []
    for sub in subs:
        rec = _format.Plane(_format.KIND_NMF, sub, patch, patch, k, bits, (), 0.25)
        n = _format.n_patches(rec, h, w)
        q = rng.integers(0, 256, (k, patch * patch), dtype=np.uint8)
        scale = (rng.random(k) / 40).astype(np.float32)
        planes.append((rec, (q, scale, rng.integers(0, 1 << bits, (n, k)))))
    return _format.pack(shape, color, planes)


def _reference_planes(data):
    """Every plane's float pixels: W @ D, rebuilt by ImagePatches, upsampled."""
    from PIL import Image

    from sknmf.image import ImagePatches

    info = _format.parse(data)
    h, w = info["shape"][:2]
    out = []
    for rec, (q, scale, codes) in zip(info["_planes"], _format.read_planes(info)):
        atoms = q.astype(np.float32) * scale[:, None]
        rows = (codes.astype(np.float32) * np.float32(rec.step)) @ atoms
        sh, sw = _format.plane_shape(rec, h, w)
        patches = ImagePatches((rec.ph, rec.pw)).fit(np.zeros((sh, sw), np.float32))
        plane = patches.inverse_transform(rows, image_shape=(sh, sw))
        if rec.sub == 2:
            big = Image.fromarray(plane).resize((2 * sw, 2 * sh), Image.BILINEAR)
            plane = np.asarray(big)[:h, :w]
        out.append(plane.astype(np.float64))
    return out


@pytest.mark.parametrize("band", [1, 3, 4096])
@pytest.mark.parametrize(
    "shape, color, subs",
    [
        ((13, 22), "gray", (1,)),
        ((13, 22, 3), "rgb", (1, 1, 1)),
        ((13, 22, 3), "rgb", (1, 2, 2)),  # legal, though the encoder never does it
        ((13, 22, 3), "ycbcr", (1, 2, 2)),
    ],
)
def test_decoding_matches_a_plain_reference(monkeypatch, band, shape, color, subs):
    from sknmf.image import _codec

    # Bands of 1 or 3 patches cut the plane mid-row of the patch grid too.
    monkeypatch.setattr(_codec, "_DECODE_PATCHES", band)
    data = _random_file(shape, color, subs)
    planes = _reference_planes(data)
    if color == "ycbcr":
        y, cb, cr = planes[0], planes[1] - 128, planes[2] - 128
        rgb = [y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb]
        expected = np.clip(np.rint(np.stack(rgb, -1)), 0, 255)
        tolerance = 1  # float32 against float64 arithmetic
    else:
        expected = np.clip(np.rint(np.stack(planes, -1)), 0, 255).reshape(shape)
        tolerance = 0
    got = decompress(data)
    assert got.shape == shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - expected).max() <= tolerance
    assert np.mean(got == expected) > 0.99


def test_decoding_memory_is_a_few_bytes_per_pixel():
    # A 1024x1024 YCbCr image: the decoder holds its three float32 planes, two
    # float32 temporaries and the uint8 result (about 23 bytes per pixel; the
    # previous decoder took 65). Pillow's own buffers are not traced.
    data = _random_file((1024, 1024, 3), "ycbcr", (1, 2, 2), patch=8, k=8)
    tracemalloc.start()
    try:
        decompress(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 30 * 1024 * 1024, peak / 1024**2


@pytest.mark.parametrize(
    "data", ["text", [1, 2, 3], None, np.zeros((4, 4)), np.array([b"x"], object)]
)
def test_what_is_not_bytes_like_is_a_type_error(data):
    with pytest.raises(TypeError, match="bytes-like"):
        decompress(data)
