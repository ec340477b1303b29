"""The documentation builds, warning-free, with every gallery script executed.

These tests run in the normal suite; select or skip them with ``-m docs`` /
``-m "not docs"``. The full build takes a few minutes on two cores.
"""

from __future__ import annotations

import doctest
import importlib
import lzma
import os
import pkgutil
import re
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest

import sknmf

pytestmark = pytest.mark.docs

REPO = Path(__file__).resolve().parents[1]
DOC_EXTENSIONS = ("sphinx", "numpydoc", "sphinx_gallery", "pydata_sphinx_theme")
# What a build writes into doc/ (see doc/.gitignore); never copied into the test build.
GENERATED = (
    "_build",
    "_generated",
    "api.rst",
    "generated",
    "auto_examples",
    "gen_modules",
    "sg_execution_times.rst",
)


def _require_doc_tools():
    for module in DOC_EXTENSIONS:
        pytest.importorskip(module, reason="install the 'docs' extra to build the docs")


def _public_objects():
    """Yield ``(path, obj)`` for every public name, at the path the docs use."""
    top = {name: getattr(sknmf, name) for name in sknmf.__all__}
    for name, obj in top.items():
        if not name.startswith("_"):
            yield f"sknmf.{name}", obj
    for info in pkgutil.iter_modules(sknmf.__path__):
        if not info.ispkg or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"sknmf.{info.name}")
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if top.get(name) is not obj:
                yield f"sknmf.{info.name}.{name}", obj


def _env() -> dict:
    """Environment of the subprocesses: this checkout first, one BLAS thread.

    One BLAS/OpenMP thread: on a busy 2-core machine, two-thread OpenMP/BLAS
    pools spin against the other processes; the same fit measured 0.8 s with one
    thread and up to 125 s with two. Correctness is what these tests check.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.pop("EXAMPLES_PATTERN", None)
    env["MPLBACKEND"] = "agg"
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    return env


def _pages_with_examples() -> list[Path]:
    """The pages of doc/ (generated ones excepted) that hold doctest examples."""
    pages = []
    for page in sorted((REPO / "doc").rglob("*.rst")):
        if GENERATED_PARTS.intersection(page.relative_to(REPO / "doc").parts):
            continue
        if doctest.DocTestParser().get_examples(page.read_text("utf-8")):
            pages.append(page)
    return pages


GENERATED_PARTS = set(GENERATED)


def test_the_pages_with_examples_are_found():
    names = {p.relative_to(REPO / "doc").as_posix() for p in _pages_with_examples()}
    assert {"getting_started.rst", "user_guide/images.rst"} <= names, names
    page = REPO / "doc" / "getting_started.rst"
    # The page is plain doctest text; count its examples so an empty run fails.
    assert len(doctest.DocTestParser().get_examples(page.read_text("utf-8"))) > 5


@pytest.mark.parametrize(
    "page",
    _pages_with_examples(),
    ids=lambda p: p.relative_to(REPO / "doc").as_posix(),
)
def test_page_examples_run(page):
    """Every ``>>>`` example of the page is a doctest that passes, in a fresh
    process, with this checkout first on the path."""
    if not hasattr(sknmf, "DeepNMF"):
        pytest.skip("sknmf.DeepNMF is not in this checkout yet")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "doctest",
            "-o",
            "ELLIPSIS",
            "-o",
            "NORMALIZE_WHITESPACE",
            str(page),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=page.parent,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]


def _bash_blocks_of_readme() -> list[str]:
    text = (REPO / "README.md").read_text("utf-8")
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def test_quick_start_is_readmes():
    """Getting started shows README's quick-start commands, character for character."""
    readme = _bash_blocks_of_readme()[0].strip()
    text = (REPO / "doc" / "getting_started.rst").read_text("utf-8")
    section = text.split("Quick start\n===========\n", 1)[1]
    block = re.search(r"\.\. code-block:: bash\n\n((?:   .*\n|\n)+)", section)
    assert block, "the Quick start section has no bash code block"
    page = textwrap.dedent(block.group(1)).strip()
    assert page == readme


def test_one_install_story():
    """README and every page of doc/ install the same way: one torch pin (README's),
    no other package index, and only extras that pyproject.toml defines."""
    tomllib = pytest.importorskip("tomllib")
    extras = set(
        tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"][
            "optional-dependencies"
        ]
    )
    pinned = re.search(r'"torch==[\d.]+"', _bash_blocks_of_readme()[0]).group(0)
    sources = [REPO / "README.md", *sorted((REPO / "doc").rglob("*.rst"))]
    commands = 0
    for source in sources:
        for line in source.read_text("utf-8").splitlines():
            if "pip install" not in line:
                continue
            commands += 1
            assert "--index-url" not in line, (source.name, line)
            for pin in re.findall(r'"?torch==[\d.]+"?', line):
                assert pin == pinned, (source.name, line)
            for names in re.findall(r"\.\[([\w,]+)\]", line):
                assert set(names.split(",")) <= extras, (source.name, line)
    assert commands >= 4


def test_the_test_extra_installs_what_the_tests_import():
    """``pip install -e ".[test]"`` is enough to collect every test module."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
    test_extra = " ".join(project["optional-dependencies"]["test"]).lower()
    # Third-party modules imported at the top of a test file, by distribution name.
    needed = {"skimage": "scikit-image", "hypothesis": "hypothesis", "PIL": "pillow"}
    for path in (REPO / "tests").rglob("test_*.py"):
        for module, dist in needed.items():
            if re.search(rf"^(?:from|import) {module}\b", path.read_text(), re.M):
                assert dist in test_extra or dist in " ".join(
                    project["dependencies"]
                ), (path.name, dist)


def test_documented_file_format_decodes_a_real_file():
    """The file format of the Images page is enough to decode a real file.

    The image is rebuilt from the bytes with nothing but the page's tables
    (struct, lzma, numpy): no sknmf code reads the file here.
    """
    image_module = pytest.importorskip("sknmf.image")
    if not hasattr(image_module, "compress"):
        pytest.skip("the codec (sknmf.image.compress) is not in this checkout yet")
    from sklearn.datasets import load_sample_image

    rgb = load_sample_image("china.jpg")[100:140, 200:257]  # 40 x 57: padded edges
    gray = np.rint(rgb.mean(axis=2)).astype(np.uint8)
    data = image_module.compress(gray, quality=50)

    assert data[:8] == b"\x89SKNMF\r\n"
    version, flags, hlen = struct.unpack_from("<BBH", data, 8)
    assert version == 1 and flags in (0, 1)
    header = data[12 : 12 + hlen]
    h, w, channels, axis, colour, n_planes = struct.unpack_from("<IIBBBB", header, 0)
    assert (h, w, channels, axis, colour, n_planes) == (40, 57, 1, 0, 0, 1)
    kind, sub, ph, pw, k, bits, n_layers, step = struct.unpack_from(
        "<BBBBHBBf", header, 12
    )
    assert (kind, sub) == (0, 1) and 2 <= bits <= 16
    code_bytes = 1 if bits <= 8 else 2
    assert 24 + 2 * n_layers == hlen
    (plen,) = struct.unpack_from("<I", data, 12 + hlen)
    payload = data[16 + hlen : 16 + hlen + plen]
    assert 16 + hlen + plen + 4 == len(data)
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    assert crc == zlib.crc32(data[:-4])

    gh, gw = -(-h // ph), -(-w // pw)
    n, d = gh * gw, ph * pw
    size = k * d + 4 * k + k * n * code_bytes
    filters = [{"id": lzma.FILTER_LZMA2, "dict_size": min(max(size, 1 << 12), 1 << 26)}]
    raw = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters).decompress(payload)
    assert len(raw) == size
    q = np.frombuffer(raw, np.uint8, k * d).reshape(k, d).astype(np.float64)
    sigma = np.frombuffer(raw, "<f4", k, offset=k * d).astype(np.float64)
    c = np.frombuffer(
        raw, "<u1" if code_bytes == 1 else "<u2", k * n, offset=k * (d + 4)
    )
    assert c.max() < 2**bits
    c = c.reshape(n, k) if flags & 1 else c.reshape(k, n).T  # patch by patch
    patches = (step * c.astype(np.float64)) @ (sigma[:, None] * q)
    plane = patches.reshape(gh, gw, ph, pw).transpose(0, 2, 1, 3).reshape(gh * ph, -1)
    rebuilt = np.clip(np.rint(plane[:h, :w]), 0, 255).astype(np.int16)

    decoded = image_module.decompress(data).astype(np.int16)
    assert decoded.shape == gray.shape
    # float64 here, float32 in the decoder: at most a rounding step apart.
    assert np.abs(rebuilt - decoded).max() <= 1


def test_docs_build_with_warnings_as_errors(tmp_path):
    """``sphinx-build -W`` passes on a copy of doc/ and examples/.

    The copy keeps the working tree clean (sphinx-gallery writes next to its
    sources) and starts from nothing, so no stale example output is reused.
    """
    _require_doc_tools()
    shutil.copytree(
        REPO / "doc", tmp_path / "doc", ignore=shutil.ignore_patterns(*GENERATED)
    )
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    if (REPO / "README.md").is_file():
        shutil.copy(REPO / "README.md", tmp_path / "README.md")
    out = tmp_path / "doc" / "_build" / "html"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            str(tmp_path / "doc"),
            str(out),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, (
        f"sphinx-build -W failed ({proc.returncode}):\n"
        f"{proc.stdout[-5000:]}\n{proc.stderr[-10000:]}"
    )

    # Every public name has its own page in the API reference.
    missing = [
        path
        for path, _ in _public_objects()
        if not (out / "generated" / f"{path}.html").is_file()
    ]
    assert not missing, f"public names without an API page: {missing}"

    # Every gallery script was executed and produced at least one figure.
    scripts = sorted(p.stem for p in (REPO / "examples").glob("plot_*.py"))
    assert scripts
    images = out / "_images"
    for stem in scripts:
        assert (out / "auto_examples" / f"{stem}.html").is_file(), stem
        assert (images / f"sphx_glr_{stem}_001.png").is_file(), (
            f"{stem}.py produced no figure"
        )
