"""The ``sknmf`` command through a real subprocess, as a user runs it."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_image

from sknmf.cli import main
from sknmf.image import decompress, psnr, read_header

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python(*args, cwd=None):
    """A fresh interpreter with this checkout on its path."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def sknmf(*args, cwd=None):
    return python("-m", "sknmf", *map(str, args), cwd=cwd)


@pytest.fixture(scope="module")
def photo_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "flower.png"
    image = load_sample_image("flower.jpg")[150:246, 200:328]
    Image.fromarray(image).save(path)
    return path, image


@pytest.mark.slow  # three interpreters importing torch: ~10 s on 2 busy cores
def test_compress_info_decompress(photo_png, tmp_path):
    src, image = photo_png
    packed, out = tmp_path / "flower.sknmf", tmp_path / "flower_out.png"

    res = sknmf("compress", src, packed, "--quality", "60")
    assert res.returncode == 0, res.stderr
    size = packed.stat().st_size
    assert f"{size} bytes" in res.stdout
    bpp = 8 * size / (image.shape[0] * image.shape[1])
    assert f"{bpp:.3f} bpp" in res.stdout

    res = sknmf("info", packed)
    assert res.returncode == 0, res.stderr
    assert "96x128x3" in res.stdout and f"{size} bytes" in res.stdout
    assert "plane Y" in res.stdout and "plane Cb" in res.stdout

    res = sknmf("decompress", packed, out)
    assert res.returncode == 0, res.stderr
    decoded = np.asarray(Image.open(out))
    # The PNG written holds exactly what the library decodes from the file.
    np.testing.assert_array_equal(decoded, decompress(packed.read_bytes()))
    assert decoded.shape == image.shape
    assert psnr(image, decoded) > 20


def test_explicit_settings_and_deep_layers(photo_png, tmp_path, capsys):
    src, _ = photo_png
    packed = tmp_path / "deep.sknmf"
    res = run_main(
        capsys,
        "compress",
        src,
        packed,
        "-k",
        "16,12,8",
        "--chroma-components",
        "4",
        "--patch",
        "4",
        "--bits",
        "7",
        "--color",
        "rgb",
    )
    assert res.returncode == 0, res.stderr
    header = read_header(packed.read_bytes())
    assert header["color"] == "rgb"
    plane = header["planes"][0]
    assert plane["layers"] == (16, 12, 8) and plane["patch_size"] == (4, 4)
    res = run_main(capsys, "info", packed)
    assert "layers 16,12,8" in res.stdout


def run_main(capsys, *args):
    """The same ``main`` in-process: exit code, stdout, stderr (options errors too)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's own exit for bad options and --help
        code = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def test_grayscale_and_alpha_images(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    res = run_main(capsys, "compress", tmp_path / "rgba.png", tmp_path / "a.sknmf")
    assert res.returncode == 0, res.stderr
    res = run_main(capsys, "decompress", tmp_path / "a.sknmf", tmp_path / "a.png")
    assert res.returncode == 0, res.stderr
    back = np.asarray(Image.open(tmp_path / "a.png"))
    np.testing.assert_array_equal(back[..., 3], rgba[..., 3])

    Image.fromarray(rgba[..., 0]).save(tmp_path / "gray.bmp")
    res = run_main(capsys, "compress", tmp_path / "gray.bmp", tmp_path / "g.sknmf")
    assert res.returncode == 0, res.stderr
    res = run_main(capsys, "decompress", tmp_path / "g.sknmf", tmp_path / "g.tif")
    assert res.returncode == 0, res.stderr
    assert np.asarray(Image.open(tmp_path / "g.tif")).shape == (20, 30)


@pytest.mark.parametrize("command", ["compress", "decompress", "info", "demo"])
def test_help(command, capsys):
    res = run_main(capsys, command, "--help")
    assert res.returncode == 0
    assert "usage: sknmf " + command in res.stdout


def test_benchmarks_are_not_a_subcommand(capsys):
    # The suite lives in the source repository (python benchmarks/run.py); the
    # installed command says so instead of reaching into the checkout.
    res = run_main(capsys, "--help")
    assert res.returncode == 0 and "benchmarks/run.py" in res.stdout
    res = run_main(capsys, "bench", "--quick")
    assert res.returncode == 2 and "invalid choice" in res.stderr


def test_the_command_imports_only_sknmf_and_its_dependencies(capsys):
    import ast

    from sknmf import cli

    with open(cli.__file__) as f:
        tree = ast.parse(f.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    # Beyond the standard library: the package and its requirements (the
    # progress bar is tqdm's, a requirement of skorch declared by sknmf too).
    third_party = imported - set(sys.stdlib_module_names) - {"__future__", "sknmf"}
    assert third_party <= {"numpy", "PIL", "sklearn", "skorch", "tqdm"}, third_party

    # Running it leaves sys.path alone and imports nothing from the checkout.
    path, modules = list(sys.path), set(sys.modules)
    for command in ("compress", "decompress", "info", "demo"):
        run_main(capsys, command, "--help")
    run_main(capsys, "info", "no-such-file.sknmf")
    assert sys.path == path
    assert not {m for m in set(sys.modules) - modules if m.startswith("benchmarks")}


def _one_line_error(res, code, *fragments):
    assert res.returncode == code, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert "Traceback" not in res.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines
    return lines


@pytest.mark.slow  # a real interpreter importing torch
def test_exit_codes_through_the_console(tmp_path):
    # The exit status reaches the shell: 1 for errors, 2 for bad options.
    lines = _one_line_error(sknmf("info", tmp_path / "missing.sknmf"), 1, "no such")
    assert lines == [f"sknmf info: error: {tmp_path / 'missing.sknmf'}: no such file"]
    _one_line_error(sknmf("compress", "a.png", "b", "--quality", "0"), 2, "[1, 100]")


@pytest.fixture
def tiny_png(tmp_path):
    path = tmp_path / "tiny.png"
    image = load_sample_image("china.jpg")[200:232, 300:340]
    Image.fromarray(image).save(path)
    return path


def test_error_paths(tiny_png, tmp_path, capsys):
    src = tiny_png
    missing = tmp_path / "missing.png"
    run = lambda *a: run_main(capsys, *a)  # noqa: E731
    _one_line_error(run("compress", missing, tmp_path / "x"), 1, "no such file")
    _one_line_error(run("decompress", missing, tmp_path / "x.png"), 1, "no such file")
    _one_line_error(run("info", missing), 1, "no such file")

    text = tmp_path / "notes.png"
    text.write_text("not an image")
    _one_line_error(run("compress", text, tmp_path / "x"), 1, "cannot read image")

    _one_line_error(run("decompress", src, tmp_path / "x.png"), 1, "magic")
    _one_line_error(run("info", src), 1, "not an sknmf image")

    packed = tmp_path / "ok.sknmf"
    assert run("compress", src, packed, "-q", "10").returncode == 0
    damaged = tmp_path / "damaged.sknmf"
    data = bytearray(packed.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    _one_line_error(run("decompress", damaged, tmp_path / "x.png"), 1, "checksum")
    _one_line_error(
        run("decompress", packed, tmp_path / "x.unknownext"), 1, "cannot write"
    )
    assert not (tmp_path / "x.unknownext").exists()
    lines = _one_line_error(
        run("compress", src, tmp_path / "no-such-dir" / "x.sknmf"), 1, "cannot write"
    )
    assert ".tmp" not in lines[-1]  # the message names the user's path only
    before = set(os.listdir(tmp_path))
    assert run("decompress", packed, tmp_path / "x.png").returncode == 0
    assert set(os.listdir(tmp_path)) == before | {"x.png"}  # no temporary file

    sixteen = tmp_path / "deep.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint16)).save(sixteen)
    _one_line_error(run("compress", sixteen, tmp_path / "x"), 1, "8-bit")
    # Above the format's limit: the library's ValueError, as one line.
    _one_line_error(run("compress", src, tmp_path / "x", "-k", "5000"), 1, "4096")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["compress", "a.png", "b", "--quality", "0"], "not in [1, 100]"),
        (["compress", "a.png", "b", "--components", "x"], "comma-separated"),
        (["compress", "a.png", "b", "--components", "0"], "positive integers"),
        (["compress", "a.png", "b", "-k", "8,16"], "non-increasing"),
        (["compress", "a.png", "b", "--chroma-components", "4,0"], "positive"),
        (["compress", "a.png", "b", "--bits", "40"], "not in [2, 16]"),
        (["compress", "a.png", "b", "--color", "hsv"], "invalid choice"),
        (["compress", "a.png"], "required"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_options_exit_2(args, fragment, capsys):
    res = run_main(capsys, *args)
    assert res.returncode == 2
    assert fragment in res.stderr


def test_output_over_the_input_is_refused(tiny_png, tmp_path, capsys):
    before = tiny_png.read_bytes()
    res = run_main(capsys, "compress", tiny_png, tiny_png)
    _one_line_error(res, 1, "is the input file")
    assert tiny_png.read_bytes() == before
    packed = tmp_path / "a.sknmf"
    assert run_main(capsys, "compress", tiny_png, packed).returncode == 0
    data = packed.read_bytes()
    # The same file by another spelling of its path.
    other = tmp_path / "." / "a.sknmf"
    _one_line_error(run_main(capsys, "decompress", packed, other), 1, "input file")
    assert packed.read_bytes() == data


# --------------------------------------------------------------------------- #
# Start-up cost, progress, wall time (issue 16)
# --------------------------------------------------------------------------- #


def test_help_and_version_import_no_torch():
    # What keeps `sknmf --help` instant: neither the command nor the package's
    # __init__ imports torch (or numpy) until a subcommand needs it.
    code = (
        "import sys\n"
        "import sknmf.cli\n"
        "heavy = {'torch', 'numpy', 'sklearn', 'skorch'}\n"
        "assert not heavy & set(sys.modules), heavy & set(sys.modules)\n"
        "for argv in (['--help'], ['--version'], ['compress', '--help']):\n"
        "    try:\n"
        "        sknmf.cli.main(argv)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, exc.code\n"
        "assert not heavy & set(sys.modules), heavy & set(sys.modules)\n"
        "import sknmf\n"
        "assert 'DeepNMF' in dir(sknmf) and 'torch' not in sys.modules\n"
    )
    res = python("-c", code)
    assert res.returncode == 0, res.stderr
    assert "usage: sknmf compress" in res.stdout

    res = sknmf("--version")
    import sknmf as package

    assert res.returncode == 0 and res.stdout.strip() == f"sknmf {package.__version__}"


def test_lazy_package_names():
    # The names of __all__ and the subpackages, as when they were eager.
    import sknmf as package

    namespace = {}
    exec("from sknmf import *", namespace)
    assert set(package.__all__) <= set(namespace)
    from sknmf.decomposition import DeepNMF

    assert namespace["DeepNMF"] is DeepNMF is package.DeepNMF
    assert package.image.ImagePatches is package.ImagePatches
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        package.nope  # noqa: B018


@pytest.fixture
def quick_codec(monkeypatch):
    """A smaller fitting budget: these tests check the command, not the codec."""
    from sknmf.image import _codec

    monkeypatch.setattr(_codec, "FIT_ITER", 20)


def test_compress_progress_only_on_a_terminal(
    tiny_png, tmp_path, capsys, monkeypatch, quick_codec
):
    from sknmf import cli
    from sknmf.image import compress

    # Not a terminal (capsys): silent.
    res = run_main(capsys, "compress", tiny_png, tmp_path / "a.sknmf")
    assert res.returncode == 0 and res.stderr == ""

    monkeypatch.setattr(cli, "_stderr_is_terminal", lambda: True)
    res = run_main(capsys, "compress", tiny_png, tmp_path / "b.sknmf")
    assert res.returncode == 0
    for fragment in ("compressing", "Y: fitting", "iterations)", "Cr: encoding"):
        assert fragment in res.stderr, res.stderr
    # The file is the library's own, progress or not (an independent call).
    image = np.asarray(Image.open(tiny_png))
    assert (tmp_path / "b.sknmf").read_bytes() == compress(image)

    res = run_main(capsys, "compress", "--quiet", tiny_png, tmp_path / "c.sknmf")
    assert res.returncode == 0 and res.stderr == ""


def test_compress_reports_the_wall_time_of_the_whole_command(
    tiny_png, tmp_path, capsys, monkeypatch, quick_codec
):
    # Reading the input is part of what the user waits for: a slow read shows
    # in the reported time (the old line reported the encoding alone).
    import re
    import time

    from sknmf import cli

    read = cli._read_image

    def slow_read(*args):
        time.sleep(0.5)
        return read(*args)

    monkeypatch.setattr(cli, "_read_image", slow_read)
    res = run_main(capsys, "compress", tiny_png, tmp_path / "a.sknmf")
    assert res.returncode == 0, res.stderr
    seconds = float(re.search(r"bpp, ([0-9.]+) s$", res.stdout.strip()).group(1))
    assert seconds >= 0.5


# --------------------------------------------------------------------------- #
# Lossy outputs, budgets, folders, atomic writes (issues 11 and 16)
# --------------------------------------------------------------------------- #


@pytest.fixture
def packed(tiny_png, tmp_path, capsys, quick_codec):
    path = tmp_path / "tiny.sknmf"
    assert run_main(capsys, "compress", tiny_png, path).returncode == 0
    return path


def test_info_reads_the_header_without_torch(packed):
    # `sknmf info` only parses the header: no estimator, so no torch.
    code = (
        "import sys\n"
        "import sknmf.cli\n"
        f"assert sknmf.cli.main(['info', {str(packed)!r}]) == 0\n"
        "heavy = {'torch', 'sklearn', 'skorch'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    res = python("-c", code)
    assert res.returncode == 0, res.stderr
    assert read_header(packed.read_bytes())["color"] in res.stdout


def test_decompress_to_a_lossy_format_needs_a_flag(packed, tmp_path, capsys):
    old = tmp_path / "old.jpg"
    old.write_bytes(b"an existing file")
    lines = _one_line_error(
        run_main(capsys, "decompress", packed, old), 1, "JPEG", "--allow-lossy"
    )
    assert len(lines) == 1
    assert old.read_bytes() == b"an existing file"
    res = run_main(capsys, "decompress", packed, tmp_path / "new.webp")
    _one_line_error(res, 1, "WEBP", "--allow-lossy")
    assert not (tmp_path / "new.webp").exists()

    # Any format that would change the pixels, found by reading its bytes
    # back: a GIF of a photo keeps at most 256 colours.
    _one_line_error(
        run_main(capsys, "decompress", packed, tmp_path / "x.gif"),
        1,
        "does not store this image exactly",
    )
    assert not (tmp_path / "x.gif").exists()

    res = run_main(capsys, "decompress", "--allow-lossy", packed, old)
    assert res.returncode == 0, res.stderr
    with Image.open(old) as im:
        assert im.format == "JPEG" and im.size == (40, 32)
    # Lossless formats need no flag and keep the pixels.
    for name in ("x.png", "x.bmp", "x.tif"):
        assert run_main(capsys, "decompress", packed, tmp_path / name).returncode == 0
        back = np.asarray(Image.open(tmp_path / name))
        np.testing.assert_array_equal(back, decompress(packed.read_bytes()))


def test_decompression_bomb_is_one_line_and_immediate(tmp_path, capsys):
    # 65 bytes declaring 10000 x 10000: refused from the header, before any
    # pixel is decoded (Pillow's own check would only warn below 2x its limit).
    import struct
    import zlib

    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 10000, 10000, 8, 0, 0, 0, 0)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    out = tmp_path / "bomb.sknmf"
    lines = _one_line_error(
        run_main(capsys, "compress", bomb, out), 1, "100000000 pixels", "budget"
    )
    assert len(lines) == 1 and not out.exists()
    # The budget is the user's: a small one refuses a small image too, and the
    # same option guards decompress (checked from the .sknmf header).
    _one_line_error(
        run_main(capsys, "compress", "--max-pixels", "100", bomb, out), 1, "budget"
    )


def test_decompress_pixel_budget(packed, tmp_path, capsys):
    out = tmp_path / "x.png"
    _one_line_error(
        run_main(capsys, "decompress", "--max-pixels", "1000", packed, out),
        1,
        "1280 pixels",
    )
    assert not out.exists()
    res = run_main(capsys, "decompress", "--max-pixels", "1280", packed, out)
    assert res.returncode == 0, res.stderr


def test_decompress_work_budget_is_the_commands(tmp_path, capsys):
    # One pixel, but one 16x16 patch of 256 atoms: 65536 multiply-adds, which the
    # decoder allows for a budget of 256 pixels and refuses below.
    from sknmf.image import _format

    rec = _format.Plane(_format.KIND_NMF, 1, 16, 16, 256, 8, (), 1.0)
    planes = [
        (
            rec,
            (
                np.zeros((256, 256), np.uint8),
                np.ones(256, np.float32),
                np.zeros((1, 256), np.uint8),
            ),
        )
    ]
    packed = tmp_path / "heavy.sknmf"
    packed.write_bytes(_format.pack((1, 1), "gray", planes))
    out = tmp_path / "x.png"
    lines = _one_line_error(
        run_main(capsys, "decompress", "--max-pixels", "255", packed, out),
        1,
        "multiply-adds",
        "--max-pixels",
    )
    assert len(lines) == 1 and not out.exists()
    res = run_main(capsys, "decompress", "--max-pixels", "256", packed, out)
    assert res.returncode == 0, res.stderr


def test_a_directory_as_input_is_named_so(tmp_path, capsys):
    for args in (
        ("compress", tmp_path, tmp_path / "x.sknmf"),
        ("decompress", tmp_path, tmp_path / "x.png"),
        ("info", tmp_path),
    ):
        _one_line_error(run_main(capsys, *args), 1, "is a directory")


def test_demo_checks_its_output_folder_before_any_work(tmp_path, capsys, monkeypatch):
    from sknmf.image import _demo

    ran = []
    monkeypatch.setattr(_demo, "run", lambda *a, **k: ran.append(a) or 0)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    _one_line_error(
        run_main(capsys, "demo", "--out", blocker / "figures"), 1, "cannot write"
    )
    _one_line_error(run_main(capsys, "demo", "--out", blocker), 1, "not a directory")
    assert ran == []
    if hasattr(os, "geteuid") and os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        _one_line_error(run_main(capsys, "demo", "--out", locked), 1, "cannot write")
        assert ran == []
    assert run_main(capsys, "demo", "--out", tmp_path / "new").returncode == 0
    assert (tmp_path / "new").is_dir() and len(ran) == 1


def test_failing_decompress_leaves_an_existing_output_intact(
    packed, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "keep.png"
    out.write_bytes(b"precious")
    damaged = tmp_path / "damaged.sknmf"
    data = bytearray(packed.read_bytes())
    data[-5] ^= 0xFF
    damaged.write_bytes(bytes(data))
    _one_line_error(run_main(capsys, "decompress", damaged, out), 1, "checksum")
    assert out.read_bytes() == b"precious"

    # The disk fails after the new bytes are written, before the rename: the
    # old file stays and no temporary file is left behind.
    import errno

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    before = set(os.listdir(tmp_path))
    monkeypatch.setattr(os, "replace", no_space)
    _one_line_error(run_main(capsys, "decompress", packed, out), 1, "cannot write")
    assert out.read_bytes() == b"precious"
    assert set(os.listdir(tmp_path)) == before
