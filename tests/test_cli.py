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


def sknmf(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, "-m", "sknmf", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture(scope="module")
def photo_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "flower.png"
    image = load_sample_image("flower.jpg")[150:246, 200:328]
    Image.fromarray(image).save(path)
    return path, image


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
    # Beyond the standard library: the package and two of its requirements.
    third_party = imported - set(sys.stdlib_module_names) - {"__future__", "sknmf"}
    assert third_party <= {"numpy", "PIL"}, third_party

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
