"""The documentation builds, warning-free, with every gallery script executed.

These tests run in the normal suite; select or skip them with ``-m docs`` /
``-m "not docs"``. The full build takes a few minutes on two cores.
"""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

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


def test_getting_started_example_runs():
    """The first example of the Getting started page is a doctest that passes."""
    pytest.importorskip("sknmf.decomposition")
    if not hasattr(sknmf, "DeepNMF"):
        pytest.skip("sknmf.DeepNMF is not in this checkout yet")
    result = doctest.testfile(
        str(REPO / "doc" / "getting_started.rst"),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        verbose=False,
    )
    assert result.attempted > 5
    assert result.failed == 0


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
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.pop("EXAMPLES_PATTERN", None)
    env["MPLBACKEND"] = "agg"
    # One BLAS/OpenMP thread: the gallery alternates scikit-learn (OpenBLAS) and
    # torch, and on a busy 2-core machine spinning BLAS threads slowed the build
    # several times over. Correctness is what this test checks, not speed.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
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
        env=env,
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
